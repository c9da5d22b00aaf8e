"""Defects found by walking through the README as a newcomer.

README "Operations" -> "CLI exit codes": 1 means *the outside world failed*. `arb-orchestration`
itself (cli.py) turns a reader that went away (`... | head`) into a quiet exit 141, with no
traceback and no error line. `sagas`, `refunds` and `replay-dlq` caught the `BrokenPipeError` in their
own catch-all handlers first and reported it as "the Dagster instance failed: BrokenPipeError" (or
"replay-dlq: [Errno 32] Broken pipe") with exit 1, which tells an operator the database or broker is
broken when only their pager closed. Seen live: `arb-orchestration sagas list --all | head -1`.

Unit tests: a throwaway SQLite Dagster instance in tmp_path, a fake broker for replay-dlq, and a
stdout whose every write raises BrokenPipeError (what a closed pipe does).
"""

from __future__ import annotations

import io
import json
import sys

import pytest

from arb_orchestration import cli
from arb_orchestration.commands import replay_dlq
from arb_orchestration.domain.events import dlq_envelope
from arb_orchestration_tests.unit.test_ux_topics import ExistingTopicsKafka
from arb_orchestration_tests.unit.test_event_sensor_reading import FakeMessage

SIGPIPE_EXIT = 141


class ClosedPipe(io.TextIOBase):
    """A stdout whose reader has gone away: every write and flush raises, as on a closed pipe."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self) -> int:
        # cli.main points fd 1 at /dev/null after a broken pipe; give it a real, harmless fd to redirect.
        return self._fd

    def __init__(self, fd: int):
        super().__init__()
        self._fd = fd


def run_into_closed_pipe(argv, tmp_path, monkeypatch) -> int:
    """cli.main(argv) with sys.stdout a closed pipe. Patched in the test body: pytest's capture
    re-installs its own sys.stdout between fixture setup and the test call."""
    with open(tmp_path / "stdout-sink", "w") as sink:
        with monkeypatch.context() as patch:
            patch.setattr(sys, "stdout", ClosedPipe(sink.fileno()))
            return cli.main(argv)


@pytest.fixture
def sqlite_home(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_sagas_list_into_a_closed_pipe_is_not_reported_as_a_failed_instance(sqlite_home, tmp_path, monkeypatch, capsys):
    code = run_into_closed_pipe(["sagas", "list"], tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert "the Dagster instance failed" not in err
    assert code == SIGPIPE_EXIT


def test_refunds_list_into_a_closed_pipe_is_not_reported_as_a_failed_instance(sqlite_home, tmp_path, monkeypatch, capsys):
    code = run_into_closed_pipe(["refunds", "list", "--all"], tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert "the Dagster instance failed" not in err
    assert code == SIGPIPE_EXIT


class _Kafka(ExistingTopicsKafka):
    def partitions_for(self, topic, timeout=10.0):
        return [0]

    def producer(self, **overrides):
        raise AssertionError("a dry run produces nothing")


def test_replay_dlq_dry_run_into_a_closed_pipe_is_not_reported_as_a_broker_failure(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ARB_EVENT_TOPIC_PREFIX", raising=False)
    monkeypatch.setattr(replay_dlq.KafkaResource, "from_env", classmethod(lambda cls, **kw: _Kafka()))
    envelope = dlq_envelope(value=b"{not json", reason="not JSON", topic="market-events", partition=2,
                            offset=7, timestamp_ms=None)
    parked = [FakeMessage("market-events.dlq", 0, n, json.dumps(envelope).encode()) for n in range(3)]
    monkeypatch.setattr(replay_dlq, "read_messages", lambda kafka, topic, wanted: iter(parked))
    code = run_into_closed_pipe(["replay-dlq", "market-events.dlq", "--all", "--dry-run"], tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert "Broken pipe" not in err
    assert code == SIGPIPE_EXIT
