"""A too-new saga whose run failed before the sweep's lookback is still reported: mailed once, listed by the CLI.

On a real SQLite instance, with the runs' `update_timestamp` set 4 days back (the code location was down, or
on the old version, over a long weekend):
* the first sweep tick looks past its 3-day lookback, reports the too-new saga (ERROR line, red tick naming it
  and "older than the sweep's lookback") and mails the risk team once; it recovers nothing there (an old
  ordinary failed saga is left alone: past the lookback recovery is by hand);
* the next tick (within the scan interval) neither scans nor mails again; once the interval has passed it
  scans again, and does not mail (or redden the tick) again for a saga already mailed about;
* `arb-orchestration sagas list` lists the old too-new saga (its scan is bounded by a number of runs, not time).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from dagster import DagsterInstance, Definitions
from dagster._core.storage.runs.schema import RunsTable

from arb_orchestration.commands import sagas as sagas_cmd
from arb_orchestration.saga.sensors import TOO_NEW_SCAN_KEY_PREFIX, too_new_mail_key
from arb_orchestration_tests.unit.test_saga_dagster import temp_instance
from arb_orchestration_tests.unit.test_saga_too_new import TOO_NEW_SAGA, Ledger, Mailbox, _tick, failed_run

DAYS_AGO = 4


def _age(instance: DagsterInstance, run_id: str, days: float) -> None:
    """Set the run's last update `days` back, as if it had failed then (naive UTC, as Dagster stores it)."""
    when = (datetime.now(timezone.utc) - timedelta(days=days)).replace(tzinfo=None)
    with instance.run_storage.connect() as conn:
        conn.execute(RunsTable.update().where(RunsTable.c.run_id == run_id).values(update_timestamp=when))


def _tag_like_a_launched_run(instance: DagsterInstance, run_id: str) -> None:
    """Runs Dagster launches of a saga job carry the job's tags (arb/saga=<name>), which `sagas list` looks for."""
    instance.add_run_tags(run_id, dict(TOO_NEW_SAGA.job.tags))


@pytest.fixture()
def instance():
    with temp_instance() as inst:
        yield inst


def test_a_too_new_saga_past_the_lookback_is_mailed_once_and_listed(instance, capfd):
    old_too_new = failed_run(instance, too_new=True)
    old_plain = failed_run(instance, too_new=False)
    for saga_id in (old_too_new, old_plain):
        _tag_like_a_launched_run(instance, saga_id)
        _age(instance, saga_id, DAYS_AGO)

    ledger, mailbox = Ledger(), Mailbox()
    resources = {"ledger": ledger, "smtp": mailbox}
    _, sweep = TOO_NEW_SAGA.recovery_sensors(grace_seconds=0)
    repo = Definitions(jobs=[TOO_NEW_SAGA.job], sensors=[sweep], resources=resources).get_repository_def()
    sweep = repo.get_sensor_def(sweep.name)

    capfd.readouterr()
    with pytest.raises(Exception, match="older than the sweep's lookback") as red:
        _tick(sweep, instance, repo, resources, None)
    assert old_too_new in str(red.value) and old_plain not in str(red.value)
    errors = [line for line in capfd.readouterr().err.splitlines() if " - ERROR - " in line]
    assert [line for line in errors if old_too_new in line and "not recovered" in line]
    assert len([m for m in mailbox.sent if old_too_new in m[0] + m[1]]) == 1
    assert json.loads(instance.run_storage.get_cursor_values({too_new_mail_key(old_too_new)})
                      [too_new_mail_key(old_too_new)])["state"] == "sent"
    assert ledger.undone == [] and ledger.actions == []  # nothing recovered past the lookback

    # Within the interval: no scan, nothing to say (both runs are outside the lookback).
    result, _ = _tick(sweep, instance, repo, resources, None)
    assert result.skip_message == "no failed saga runs needing recovery"
    # Interval over (the last scan set a day back): scans again; the saga was reported, so no mail, no red tick.
    key = f"{TOO_NEW_SCAN_KEY_PREFIX}{sweep.name}"
    day_ago = time.time() - 25 * 3600
    instance.run_storage.set_cursor_values({key: repr(day_ago)})
    result, _ = _tick(sweep, instance, repo, resources, None)
    assert result.skip_message == "no failed saga runs needing recovery"
    assert float(instance.run_storage.get_cursor_values({key})[key]) > day_ago + 3600  # it did scan
    assert len([m for m in mailbox.sent if old_too_new in m[0] + m[1]]) == 1
    assert len(mailbox.sent) == 1

    # The operator finds it too.
    capfd.readouterr()
    assert sagas_cmd._list(sagas_cmd.SagaReader(instance), show_all=False, as_json=True, limit=50, scan_runs=500,
                           redactor=sagas_cmd.Redactor()) == 0
    listed = {s["saga_id"]: s["state"] for s in json.loads(capfd.readouterr().out)["sagas"]}
    assert listed.get(old_too_new) == sagas_cmd.TOO_NEW


def test_the_scan_can_be_turned_off(instance):
    old_too_new = failed_run(instance, too_new=True)
    _age(instance, old_too_new, DAYS_AGO)
    ledger, mailbox = Ledger(), Mailbox()
    resources = {"ledger": ledger, "smtp": mailbox}
    _, sweep = TOO_NEW_SAGA.recovery_sensors(grace_seconds=0, too_new_scan_interval_seconds=None)
    repo = Definitions(jobs=[TOO_NEW_SAGA.job], sensors=[sweep], resources=resources).get_repository_def()
    result, _ = _tick(repo.get_sensor_def(sweep.name), instance, repo, resources, None)
    assert result.skip_message == "no failed saga runs needing recovery" and mailbox.sent == []
