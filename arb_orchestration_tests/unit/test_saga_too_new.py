"""A saga whose log is too new for this code (`SagaLogTooNewError`) is reported once, loudly, and blocks nothing.

On a real SQLite instance:
* inside a run, the step that meets it fails once (no retries) with a Failure naming the kinds and "upgrade
  this code location"; the failure hook logs one ERROR and compensates nothing (no HOOK_ERRORED);
* a real tick of the run-failure recovery sensor over two failed runs (the too-new one first) recovers the
  normal one and reports the other; the risk team is mailed once for it across that tick and two sweeps.
"""

from __future__ import annotations

import time

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    Backoff,
    Definitions,
    RetryPolicy,
    build_sensor_context,
)

from arb_orchestration.saga import (
    SAGA_ID_TAG,
    InstanceSagaLog,
    SagaLogTooNewError,
    SagaRecord,
    SagaStep,
    build_saga,
    idempotency_key,
)
from arb_orchestration.saga.sensors import too_new_mail_key
from arb_orchestration_tests.unit.test_saga_dagster import temp_instance

FUTURE = "compensation_checkpoint_v9"  # a made-up must-understand kind from a newer version


class Ledger:
    def __init__(self) -> None:
        self.actions: list[tuple[str, str]] = []
        self.undone: list[tuple[str, str]] = []

    def act(self, ctx) -> dict:
        self.actions.append((ctx.saga_id, ctx.step))
        return {"step": ctx.step}

    def undo(self, ctx) -> dict:
        self.undone.append((ctx.saga_id, ctx.step))
        return {"undone": ctx.step}


class Mailbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, subject: str, body: str) -> None:
        self.sent.append((subject, body))


def _act(ctx, ledger):
    return ledger.act(ctx)


def _undo(ctx, ledger):
    return ledger.undo(ctx)


TOO_NEW_SAGA = build_saga(
    "too_new_saga",
    [SagaStep("reserve", _act, _undo), SagaStep("transfer", _act, _undo, pivot=True), SagaStep("settle", _act)],
    retry_policy=RetryPolicy(max_retries=2, delay=0.01, backoff=Backoff.LINEAR),
)
SAGA = TOO_NEW_SAGA.definition


def _future_record(saga_id: str, run_id: str) -> SagaRecord:
    return SagaRecord.from_json({"kind": FUTURE, "saga_id": saga_id, "saga_name": SAGA.name, "step": "transfer",
                                 "run_id": run_id, "data": {"checkpoint": 3}, "timestamp": time.time()})


def failed_run(instance: DagsterInstance, *, too_new: bool):
    """A run that died after `reserve` finished and `transfer` started (before the pivot finished)."""
    run = instance.create_run_for_job(TOO_NEW_SAGA.job, status=DagsterRunStatus.STARTED)
    log = InstanceSagaLog(instance, run)
    saga_id = run.run_id
    for step in ("reserve", "transfer"):
        key = idempotency_key(SAGA.name, saga_id, step)
        log.record_started(saga_id, SAGA.name, step, key=key)
        if step == "reserve":
            log.record_done(saga_id, SAGA.name, step, key=key, result={"step": step})
    if too_new:
        log.append(_future_record(saga_id, run.run_id))
    instance.report_run_failed(run, "run worker exited unexpectedly (SIGKILL)")
    return saga_id


@pytest.fixture(scope="module")
def instance():
    with temp_instance() as inst:
        yield inst


def test_a_step_on_a_too_new_saga_fails_once_without_retries_and_the_hook_does_not_compensate(instance):
    saga_id = "too-new-in-run"
    # An earlier run of the saga (written by a newer version) holds the must-understand record.
    earlier = instance.create_run_for_job(TOO_NEW_SAGA.job, tags={SAGA_ID_TAG: saga_id},
                                          status=DagsterRunStatus.FAILURE)
    InstanceSagaLog(instance, earlier).append(_future_record(saga_id, earlier.run_id))
    ledger, mailbox = Ledger(), Mailbox()

    result = TOO_NEW_SAGA.job.execute_in_process(instance=instance, tags={SAGA_ID_TAG: saga_id},
                                                  resources={"ledger": ledger, "smtp": mailbox},
                                                  raise_on_error=False)

    assert not result.success
    events = result.all_events
    failures = [e for e in events if e.event_type is DagsterEventType.STEP_FAILURE]
    assert [e.step_key for e in failures] == ["reserve"]
    assert not [e for e in events if e.event_type is DagsterEventType.STEP_UP_FOR_RETRY]  # no retries
    description = failures[0].step_failure_data.user_failure_data.description
    assert FUTURE in description and "upgrade this code location" in description and saga_id in description
    # The hook ran, did not error, compensated nothing, mailed nothing, and said why in one ERROR line.
    assert not [e for e in events if e.event_type is DagsterEventType.HOOK_ERRORED]
    assert [e for e in events if e.event_type is DagsterEventType.HOOK_COMPLETED]
    assert ledger.actions == [] and ledger.undone == [] and mailbox.sent == []
    logs = instance.all_logs(result.run_id)
    hook_errors = [e for e in logs if e.level >= 40 and "not compensating" in (e.user_message or "")]
    assert len(hook_errors) == 1 and FUTURE in hook_errors[0].user_message


def _tick(sensor_def, instance, repo, resources, cursor):
    with build_sensor_context(instance=instance, cursor=cursor, repository_def=repo, resources=resources) as ctx:
        result = sensor_def.evaluate_tick(ctx)
        return result, ctx.cursor


def test_the_failure_sensor_recovers_the_normal_run_reports_the_too_new_one_and_mails_once(instance, capfd):
    ledger, mailbox = Ledger(), Mailbox()
    resources = {"ledger": ledger, "smtp": mailbox}
    failure_sensor, sweep = TOO_NEW_SAGA.recovery_sensors(grace_seconds=0)
    repo = Definitions(jobs=[TOO_NEW_SAGA.job], sensors=[failure_sensor, sweep], resources=resources
                       ).get_repository_def()
    failure_sensor, sweep = repo.get_sensor_def(failure_sensor.name), repo.get_sensor_def(sweep.name)

    _, cursor = _tick(failure_sensor, instance, repo, resources, None)  # the first tick only sets the cursor
    too_new = failed_run(instance, too_new=True)
    plain = failed_run(instance, too_new=False)

    capfd.readouterr()
    result, cursor = _tick(failure_sensor, instance, repo, resources, cursor)
    errors = [line for line in capfd.readouterr().err.splitlines() if " - ERROR - " in line]
    assert result.run_requests == []
    assert sorted(ledger.undone) == sorted([(plain, "transfer"), (plain, "reserve")])  # the other saga recovered
    assert all(saga != too_new for saga, _ in ledger.undone)
    # One clear ERROR line (the sensor's log) naming the saga and the kind.
    assert len([line for line in errors if too_new in line and FUTURE in line]) == 1
    assert not [e for e in instance.all_logs(too_new) if "Error occurred during the execution" in
                (e.user_message or "")]  # reported by us, not as a crashed sensor evaluation
    too_new_mail = [(s, b) for s, b in mailbox.sent if too_new in s + b]
    assert len(too_new_mail) == 1
    subject, body = too_new_mail[0]
    assert FUTURE in body and too_new in body and "upgrade" in body.lower()
    assert instance.run_storage.get_cursor_values({too_new_mail_key(too_new)})

    # Two sweeps later it is still refused (red tick naming it) but not mailed again.
    for _ in range(2):
        with pytest.raises(Exception, match="SagaLogTooNewError"):
            _tick(sweep, instance, repo, resources, None)
    assert len([m for m in mailbox.sent if too_new in m[0] + m[1]]) == 1
    with pytest.raises(SagaLogTooNewError):
        InstanceSagaLog(instance).load(too_new)
