"""`arb-orchestration replay-dlq` where operators trip: documented exit codes, an --offset looked up in
the wrong partition (the default 0) says which partition holds the parked messages, and --all on an
empty DLQ says there is nothing to replay. The broker is a fake with fixed watermarks (no messages
are read in these paths); replaying real messages is covered on a real broker in
integration/test_kafka_commands.py."""

from __future__ import annotations

import pytest

from arb_orchestration.commands import replay_dlq


class AnsweringAdmin:
    """The reachability probe's client: the cluster answers."""

    def list_topics(self, timeout=None):
        return {}

    def poll(self, timeout=None):
        return 0


class FakeConsumer:
    def close(self):
        pass


class FakeKafka:
    """Watermarks per partition of one DLQ; nothing else is reachable."""

    bootstrap_servers = "fake:9092"

    def __init__(self, marks: dict[int, tuple[int, int]]):
        self.marks = marks

    def client_config(self):
        return {"bootstrap.servers": self.bootstrap_servers}

    def admin(self, **overrides):
        return AnsweringAdmin()

    def partitions_for(self, topic, timeout=10.0):
        return sorted(self.marks)

    def watermarks(self, topic, partition, timeout=10.0, consumer=None):
        return self.marks[partition]

    def consumer(self, **overrides):
        return FakeConsumer()

    def producer(self, **overrides):
        raise AssertionError("nothing may be produced in these paths")


@pytest.fixture
def broker(monkeypatch):
    monkeypatch.delenv("ARB_EVENT_TOPIC_PREFIX", raising=False)

    def install(marks):
        monkeypatch.setattr(replay_dlq.KafkaResource, "from_env", classmethod(lambda cls, **kw: FakeKafka(marks)))

    return install


def test_help_documents_the_exit_codes_and_the_partition_of_an_offset(capsys):
    with pytest.raises(SystemExit):
        replay_dlq.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit codes: 0 every selected message replayed" in text
    assert "1 some were skipped" in text and "2 bad input" in text
    assert "<dlq>:<partition>:<offset>" in text


def test_offset_in_the_default_partition_points_at_the_partition_that_holds_it(broker, capsys):
    broker({0: (0, 0), 1: (0, 0), 2: (0, 0), 3: (0, 1)})
    assert replay_dlq.main(["market-events.dlq", "--offset", "0", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "market-events.dlq partition 0 is empty" in err
    assert "parked messages are on partition 3 (offsets 0..0): add --partition 3" in err


def test_several_partitions_holding_messages_are_all_named(broker, capsys):
    broker({0: (0, 0), 1: (2, 5), 2: (0, 0), 3: (0, 1)})
    assert replay_dlq.main(["market-events.dlq", "--offset", "0", "--dry-run"]) == 2
    assert "on partitions 1 (offsets 2..4), 3 (offsets 0..0): add --partition P" in capsys.readouterr().err


def test_an_offset_outside_the_right_partition_adds_no_misleading_hint(broker, capsys):
    broker({0: (0, 0), 3: (0, 1)})
    assert replay_dlq.main(["market-events.dlq", "--offset", "7", "--partition", "3", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "offset(s) [7] not on market-events.dlq partition 3 (it holds offsets 0..0)" in err
    assert "parked messages are on" not in err


def test_an_empty_dlq_says_so(broker, capsys):
    broker({0: (0, 0), 1: (4, 4)})
    assert replay_dlq.main(["capital-events.dlq", "--offset", "0", "--dry-run"]) == 2
    assert "no partition of capital-events.dlq holds a message" in capsys.readouterr().err
    assert replay_dlq.main(["capital-events.dlq", "--all", "--dry-run"]) == 0
    assert "capital-events.dlq holds no messages: nothing to replay" in capsys.readouterr().out
