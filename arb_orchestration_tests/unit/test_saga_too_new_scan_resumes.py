"""The sweep's daily scan for too-new sagas past its lookback stops at its time limit and resumes on the next tick.

Before, one scan read up to 500 old failed runs per saga job in a single tick (on SQLite ~50-100 ms a saga the first
time in a process): past Dagster's 60 s sensor timeout the tick failed, taking that tick's relaunch requests with
it, and the scan was marked done for the day. Now the round stops once the tick is
`TOO_NEW_SCAN_TICK_DEADLINE_SECONDS` old (always after at least one saga), records the sagas it checked (kvs), and
the next tick goes on from there whatever the interval says; when the round ends the record is cleared.

Real SQLite instance, the too-new saga fixtures of test_saga_too_new.py, runs aged 4 days (past the 3-day lookback).
"""

from __future__ import annotations

import pytest
from dagster import Definitions

from arb_orchestration.saga import sensors as saga_sensors
from arb_orchestration.saga.sensors import TOO_NEW_SCAN_PROGRESS_KEY_PREFIX, ScanProgress, scan_too_new_past_lookback
from arb_orchestration_tests.unit.test_saga_too_new import TOO_NEW_SAGA, Ledger, Mailbox, _tick, failed_run
from arb_orchestration_tests.unit.test_saga_too_new_past_lookback import DAYS_AGO, _age
from arb_orchestration_tests.unit.test_saga_too_new_past_lookback import instance  # noqa: F401 - a fixture


def _old_too_new_sagas(instance, count: int) -> list[str]:
    sagas = [failed_run(instance, too_new=True) for _ in range(count)]
    for saga_id in sagas:
        _age(instance, saga_id, DAYS_AGO)
    return sagas


def _mailed(mailbox: Mailbox, saga_id: str) -> int:
    return len([m for m in mailbox.sent if saga_id in m[0] + m[1]])


def test_the_scan_stops_at_its_deadline_and_the_next_call_goes_on_from_there(instance):
    sagas = _old_too_new_sagas(instance, 3)
    mailbox = Mailbox()
    resources = {"ledger": Ledger(), "smtp": mailbox}
    by_job = {TOO_NEW_SAGA.job.name: TOO_NEW_SAGA.definition}
    progress = ScanProgress()
    ticks = iter(range(0, 1000, 10))

    lines = scan_too_new_past_lookback(instance, by_job, resources, lookback_seconds=3 * 86400, progress=progress,
                                       deadline=5.0, clock=lambda: float(next(ticks)))
    # The clock is read from the second saga on (one saga a call at least): 0 s, go on; 10 s, past the deadline.
    assert not progress.finished and len(progress.checked) == 2
    assert lines[-1] == ("scan for too-new sagas past the lookback: stopped at its time limit after 2 saga(s); "
                         "it goes on next tick")
    assert sum(_mailed(mailbox, s) for s in sagas) == 2

    lines = scan_too_new_past_lookback(instance, by_job, resources, lookback_seconds=3 * 86400, progress=progress,
                                       deadline=None)
    assert progress.finished and progress.checked == set(sagas)
    assert [_mailed(mailbox, s) for s in sagas] == [1, 1, 1]  # each reported once, across the two calls
    assert not any("time limit" in line for line in lines)


def test_a_round_cut_short_resumes_on_the_next_tick_even_within_the_interval(instance, monkeypatch):
    sagas = _old_too_new_sagas(instance, 2)
    mailbox = Mailbox()
    resources = {"ledger": Ledger(), "smtp": mailbox}
    _, sweep = TOO_NEW_SAGA.recovery_sensors(grace_seconds=0)
    repo = Definitions(jobs=[TOO_NEW_SAGA.job], sensors=[sweep], resources=resources).get_repository_def()
    sweep = repo.get_sensor_def(sweep.name)
    monkeypatch.setattr(saga_sensors, "TOO_NEW_SCAN_TICK_DEADLINE_SECONDS", -1.0)  # always late: one saga a tick
    key = f"{TOO_NEW_SCAN_PROGRESS_KEY_PREFIX}{sweep.name}"

    with pytest.raises(Exception, match="older than the sweep's lookback"):
        _tick(sweep, instance, repo, resources, None)
    assert sum(_mailed(mailbox, s) for s in sagas) == 1
    assert instance.run_storage.get_cursor_values({key})[key]  # the round is recorded as unfinished

    with pytest.raises(Exception, match="older than the sweep's lookback"):
        _tick(sweep, instance, repo, resources, None)  # within the day: only the unfinished round brings it back
    assert [_mailed(mailbox, s) for s in sagas] == [1, 1]
    assert not instance.run_storage.get_cursor_values({key}).get(key)  # the round ended

    result, _ = _tick(sweep, instance, repo, resources, None)
    assert result.skip_message == "no failed saga runs needing recovery"  # no round until the interval has passed
    assert len(mailbox.sent) == 2


def test_an_unreadable_progress_record_starts_the_round_afresh(instance):
    instance.run_storage.set_cursor_values({f"{TOO_NEW_SCAN_PROGRESS_KEY_PREFIX}s": "{oops"})
    progress = ScanProgress.load(instance, "s")
    assert progress is not None and not progress.finished and progress.checked == set()
    assert ScanProgress.load(instance, "other") is None
