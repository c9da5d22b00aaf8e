"""`arb-orchestration refunds list|close` on a real SQLite Dagster instance in a temp DAGSTER_HOME.

The watches are created by the real sensor (a rebalance run's compensation record, one tick); closing one by
hand must keep the next tick of the real sensor from reading it at Wise or mailing about it.
"""

from __future__ import annotations

import json

import pytest
from dagster import DagsterInstance, build_sensor_context
from dagster._core.test_utils import create_run_for_test

from arb_orchestration import cli
from arb_orchestration.defs.rebalance.refunds import (
    CLOSED_BY_HAND_FIELD,
    OPEN_KEY,
    RefundWatchStore,
    build_wise_refund_followup_sensor,
    watch_key,
)
from arb_orchestration.saga import SAGA_ID_TAG, InstanceSagaLog

DAY = 86_400.0
T1, T2 = 50_000_001, 50_000_002


class FakeTransfer:
    def __init__(self, status):
        self.status = status


class FakeWise:
    """Answers for the ids it knows; any other id read fails the test."""

    def __init__(self, statuses):
        self.statuses = dict(statuses)
        self.reads: list[int] = []

    def get_transfer(self, transfer_id):
        self.reads.append(int(transfer_id))
        assert int(transfer_id) in self.statuses, f"Wise asked for transfer {transfer_id}, closed by hand"
        return FakeTransfer(self.statuses[int(transfer_id)])


class FakeSmtp:
    def __init__(self):
        self.sent: list[tuple[str, str]] = []

    def send(self, subject, body, *, message_id=None, **_):
        self.sent.append((subject, body))
        return message_id


def _entry(transfer_id, amount):
    return {"index": 0, "wise_transfer_id": transfer_id, "amount": amount, "currency": "EUR",
            "status": "cancelled", "refunded": False}


@pytest.fixture
def instance(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    inst = DagsterInstance.get()
    try:
        yield inst
    finally:
        inst.dispose()


def _kvs(instance):
    prefix_keys = {OPEN_KEY, watch_key(T1), watch_key(T2), watch_key(999)}
    return instance.run_storage.get_cursor_values(prefix_keys)


@pytest.fixture
def two_open(instance):
    """Two pending refund legs of one saga, discovered by one tick of the real sensor."""
    run = create_run_for_test(instance, job_name="auto_rebalance_saga", tags={SAGA_ID_TAG: "saga-cli"})
    InstanceSagaLog(instance, run).record_compensated(
        "saga-cli", "auto_rebalance_saga", "commit_transfers", key="k",
        details={"cancelled": [0, 1], "refunded": [_entry(T1, 3000.0), _entry(T2, 1250.5)]})
    sensor = build_wise_refund_followup_sensor(alert_after_seconds=DAY)
    result = sensor(build_sensor_context(instance=instance, resources={
        "wise": FakeWise({T1: "cancelled", T2: "cancelled"}), "smtp": FakeSmtp()}))
    assert RefundWatchStore(instance).open_ids() == [T1, T2]
    return sensor, result.cursor


def test_list_shows_the_open_watches(instance, two_open, capsys):
    assert cli.main(["refunds", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["transfer", "amount", "currency"]
    row = next(line for line in lines if line.startswith(str(T2)))
    assert "1250.5" in row and "EUR" in row and "saga-cli" in row and "cancelled" in row and row.endswith("open")
    assert "mails" in lines[0] and " none " in row  # the pivot's compensation mailed; nothing sent by the sensor yet


def test_close_takes_it_off_the_open_list_and_the_sensor_never_reads_or_mails_it(instance, two_open, capsys):
    sensor, cursor = two_open
    assert cli.main(["refunds", "close", str(T1), "--reason", "settled with Wise support, ticket 42",
                     "--by", "alice"]) == 0
    assert f"Wise transfer {T1}" in capsys.readouterr().out

    assert RefundWatchStore(instance).open_ids() == [T2]
    stored = json.loads(_kvs(instance)[watch_key(T1)])
    closure = stored[CLOSED_BY_HAND_FIELD]
    assert closure["by"] == "alice" and closure["reason"] == "settled with Wise support, ticket 42"
    assert isinstance(closure["at"], float)

    # T1 is refunded now, and past any deadline: a tick that still watched it would read it and mail.
    wise, smtp = FakeWise({T2: "funds_refunded"}), FakeSmtp()
    result = sensor(build_sensor_context(instance=instance, cursor=None, resources={"wise": wise, "smtp": smtp}))
    assert wise.reads == [T2]
    assert len(smtp.sent) == 1 and str(T2) in smtp.sent[0][0] and str(T1) not in smtp.sent[0][0]
    assert "0 new refund leg(s)" in result.skip_reason.skip_message  # re-discovery (no cursor) does not reopen it
    assert RefundWatchStore(instance).open_ids() == []

    assert cli.main(["refunds", "list"]) == 0
    assert capsys.readouterr().out.strip() == "no open refund watches"
    assert cli.main(["refunds", "list", "--all"]) == 0
    out = capsys.readouterr().out
    assert f"{T1} " in out and "closed by alice" in out and "settled with Wise support, ticket 42" in out
    t2_row = next(line for line in out.splitlines() if line.startswith(str(T2)))
    assert t2_row.endswith("closed") and "refunded" in t2_row


@pytest.mark.parametrize("transfer_id", ["999", str(T1)])
def test_closing_an_unknown_or_closed_id_is_exit_2_and_changes_nothing(instance, two_open, capsys, transfer_id):
    if transfer_id == str(T1):
        assert cli.main(["refunds", "close", str(T1), "--reason", "first"]) == 0
        capsys.readouterr()
    before = _kvs(instance)
    assert cli.main(["refunds", "close", transfer_id, "--reason", "again"]) == 2
    err = capsys.readouterr().err
    assert "TRANSFER_ID" in err and transfer_id in err and "nothing changed" in err
    assert _kvs(instance) == before


def test_closing_a_watch_the_sensor_closed_is_exit_2(instance, two_open, capsys):
    sensor, cursor = two_open
    sensor(build_sensor_context(instance=instance, cursor=cursor, resources={
        "wise": FakeWise({T1: "funds_refunded", T2: "cancelled"}), "smtp": FakeSmtp()}))
    before = _kvs(instance)
    assert cli.main(["refunds", "close", str(T1), "--reason", "x"]) == 2
    assert "already closed" in capsys.readouterr().err and _kvs(instance) == before


@pytest.mark.parametrize("argv, named", [
    (["close", str(T1)], "--reason"),
    (["close", str(T1), "--reason", "  "], "--reason"),
    (["close", "abc", "--reason", "r"], "TRANSFER_ID"),
])
def test_bad_input_is_exit_2_naming_it(instance, two_open, capsys, argv, named):
    before = _kvs(instance)
    assert cli.main(["refunds", *argv]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert _kvs(instance) == before


def test_without_dagster_home_it_is_exit_2(monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert cli.main(["refunds", "list"]) == 2
    assert "DAGSTER_HOME" in capsys.readouterr().err


def test_a_hand_closed_id_put_back_on_the_open_list_is_still_never_checked(instance, two_open):
    """The race of a tick's open-list write with `close`: the entry's record still keeps the sensor off it."""
    sensor, cursor = two_open
    assert cli.main(["refunds", "close", str(T1), "--reason", "written off"]) == 0
    instance.run_storage.set_cursor_values({OPEN_KEY: json.dumps([T1, T2])})
    wise, smtp = FakeWise({T2: "cancelled"}), FakeSmtp()
    sensor(build_sensor_context(instance=instance, cursor=cursor, resources={"wise": wise, "smtp": smtp}))
    assert wise.reads == [T2] and smtp.sent == []
