"""`topics create` and `replay-dlq` against a broker that is not there (nothing listens on
127.0.0.1:1): one line naming the broker and the reason, exit 1, within seconds; before, a dozen raw
librdkafka ``%3|...|FAIL|`` lines, then ``KafkaError{code=_TRANSPORT,...}``, after up to 31 s."""

from __future__ import annotations

import time

import pytest

from arb_orchestration.commands import replay_dlq, topics


@pytest.fixture(autouse=True)
def nothing_listens(monkeypatch):
    for name in ("ARB_EVENT_TOPIC_PREFIX", "KAFKA_SECURITY_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")


@pytest.mark.parametrize(
    "command, argv, prefix",
    [
        (topics, ["create"], "arb-orchestration topics: "),
        (replay_dlq, ["market-events.dlq", "--all"], "arb-orchestration replay-dlq: "),
    ],
)
def test_unreachable_broker_is_one_line_and_exit_1(capfd, command, argv, prefix):
    started = time.monotonic()
    assert command.main(argv) == 1
    elapsed = time.monotonic() - started
    captured = capfd.readouterr()  # capfd: librdkafka writes to file descriptor 2 from C
    assert "%3|" not in captured.err and "KafkaError{" not in captured.err, captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(prefix + "cannot reach the Kafka broker at 127.0.0.1:1 within 5s")
    assert "Connection refused" in lines[0]
    assert "ensuring" not in captured.out  # nothing claimed before the broker answered
    assert elapsed < 20
