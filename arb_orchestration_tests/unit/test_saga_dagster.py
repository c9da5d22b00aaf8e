"""Saga jobs on a real (temporary SQLite) Dagster instance: a failing step ends fully compensated,
a transient failure that a RetryPolicy absorbs fires no hook, the log is readable from the instance,
re-executing a finished run moves nothing, and the recovery sensors on a run that left work behind.

The fake side-effect ledger is a JSON-lines file, so the crash test's child process can share it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import pytest
from dagster import (
    Backoff,
    Config,
    ConfigurableResource,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    Jitter,
    ReexecutionOptions,
    RetryPolicy,
    build_reconstructable_job,
    build_run_status_sensor_context,
    build_sensor_context,
    execute_job,
    instance_for_test,
)

from arb_orchestration.resources.errors import BusinessError, TransientError
from arb_orchestration.saga import (
    Action,
    InstanceSagaLog,
    RecordKind,
    SagaStep,
    Verdict,
    build_saga,
    decide,
    pause_trading,
    recover_run,
    resume_trading,
)


class LedgerResource(ConfigurableResource):
    """Fake venue: appends every effect to a file; fails or blocks where its config says."""

    path: str
    fail_action: list[str] = []  # business error (not retried)
    transient: dict[str, int] = {}  # step -> TransientErrors before it succeeds
    fail_compensation: list[str] = []
    block_in: str = ""  # write <path>.<step>.entered, then wait forever (the crash test kills us)

    def _write(self, **entry) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def entries(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        return [json.loads(line) for line in Path(self.path).read_text().splitlines()]

    def act(self, ctx) -> dict:
        self._write(kind="attempt", step=ctx.step, key=ctx.idempotency_key)
        attempts = sum(1 for e in self.entries() if e["kind"] == "attempt" and e["step"] == ctx.step)
        if attempts <= self.transient.get(ctx.step, 0):
            raise TransientError(f"{ctx.step}: 503 (attempt {attempts})")
        if ctx.step in self.fail_action:
            raise BusinessError(f"{ctx.step}: rejected")
        if self.block_in == ctx.step:
            Path(f"{self.path}.{ctx.step}.entered").touch()
            import time

            while True:
                time.sleep(0.05)
        self._write(kind="do", step=ctx.step, key=ctx.idempotency_key)
        return {"moved": ctx.step, "amount": ctx.config.amount if ctx.config else None}

    def undo(self, ctx) -> dict:
        if ctx.step in self.fail_compensation:
            raise TransientError(f"{ctx.step}: cancel endpoint down")
        self._write(kind="undo", step=ctx.step, key=ctx.idempotency_key)
        return {"undone": ctx.step}


class MailboxResource(ConfigurableResource):
    """Fake SMTP: `send(subject, body)` appends to a file."""

    path: str

    def send(self, subject: str, body: str) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"subject": subject, "body": body}) + "\n")

    def messages(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        return [json.loads(line) for line in Path(self.path).read_text().splitlines()]


class TransferConfig(Config):
    amount: float = 1.0


def _act(ctx, ledger: LedgerResource):
    return ledger.act(ctx)


def _undo(ctx, ledger: LedgerResource):
    return ledger.undo(ctx)


FAST_RETRY = RetryPolicy(max_retries=2, delay=0.01, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)

# reserve → withdraw → deposit (pivot) → settle: the shape of a rebalance.
TRANSFER_SAGA = build_saga(
    "transfer_saga",
    [
        SagaStep("reserve", _act, _undo),
        SagaStep("withdraw", _act, _undo),
        SagaStep("deposit", _act, _undo, pivot=True),
        SagaStep("settle", _act),
    ],
    config=TransferConfig,
    retry_policy=FAST_RETRY,
)


def resources_from_env() -> dict:
    return {
        "ledger": LedgerResource(
            path=os.environ["SAGA_TEST_LEDGER"],
            fail_action=json.loads(os.environ.get("SAGA_TEST_FAIL", "[]")),
            block_in=os.environ.get("SAGA_TEST_BLOCK", ""),
        ),
        "smtp": MailboxResource(path=os.environ["SAGA_TEST_MAILBOX"]),
    }


def transfer_job_with_resources():
    """Reconstructable target (re-execution needs to load the job by name in a fresh context)."""
    return Definitions(jobs=[TRANSFER_SAGA.job], resources=resources_from_env()).get_job_def("transfer_saga")


@contextlib.contextmanager
def temp_instance():
    """A real SQLite instance; on tmpfs when there is one (commits on a shared CI disk dominate otherwise)."""
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp, instance_for_test(temp_dir=tmp) as inst:
        yield inst


@pytest.fixture(scope="module")
def _shared_instance():
    # One instance per module: creating one costs seconds; each test works on its own runs/sagas.
    with temp_instance() as inst:
        yield inst


@pytest.fixture
def instance(_shared_instance):
    yield _shared_instance
    resume_trading(_shared_instance, "test teardown", by="test")


@pytest.fixture
def files(tmp_path, monkeypatch):
    ledger, mailbox = tmp_path / "ledger.jsonl", tmp_path / "mail.jsonl"
    monkeypatch.setenv("SAGA_TEST_LEDGER", str(ledger))
    monkeypatch.setenv("SAGA_TEST_MAILBOX", str(mailbox))
    return ledger, mailbox


def _execute(instance, ledger: LedgerResource, mailbox: MailboxResource, **kw):
    return TRANSFER_SAGA.job.execute_in_process(
        instance=instance,
        run_config={"amount": 2.5},
        resources={"ledger": ledger, "smtp": mailbox},
        raise_on_error=False,
        **kw,
    )


def _effects(ledger: LedgerResource, kind: str) -> list[str]:
    return [e["step"] for e in ledger.entries() if e["kind"] == kind]


@pytest.mark.parametrize("failing", ["reserve", "withdraw", "deposit"])
def test_step_failing_before_commit_ends_fully_compensated(instance, files, failing):
    ledger = LedgerResource(path=str(files[0]), fail_action=[failing])
    mailbox = MailboxResource(path=str(files[1]))
    result = _execute(instance, ledger, mailbox)
    assert not result.success
    steps = ["reserve", "withdraw", "deposit"]
    done = steps[: steps.index(failing)]
    assert _effects(ledger, "do") == done
    assert _effects(ledger, "undo") == list(reversed(steps[: steps.index(failing) + 1]))
    state = InstanceSagaLog(instance).load(result.run_id)
    assert decide(TRANSFER_SAGA.definition, state).verdict is Verdict.COMPENSATED
    assert state.step(failing).failed_business
    # A business error is not retried: exactly one attempt of the failing step.
    assert [e["step"] for e in ledger.entries() if e["kind"] == "attempt"].count(failing) == 1
    assert any("rolled back" in m["subject"] for m in mailbox.messages())


def test_transient_failure_absorbed_by_retry_policy_fires_no_hook(instance, files):
    ledger = LedgerResource(path=str(files[0]), transient={"withdraw": 1})
    mailbox = MailboxResource(path=str(files[1]))
    result = _execute(instance, ledger, mailbox)
    assert result.success
    assert _effects(ledger, "do") == ["reserve", "withdraw", "deposit", "settle"]
    assert _effects(ledger, "undo") == [] and mailbox.messages() == []
    hook_events = [e for e in instance.all_logs(result.run_id)
                   if e.dagster_event and e.dagster_event.event_type == DagsterEventType.HOOK_COMPLETED]
    assert hook_events == []
    # Both attempts used the same idempotency key.
    keys = {e["key"] for e in ledger.entries() if e["step"] == "withdraw"}
    assert len(keys) == 1


def test_transient_failure_outlasting_retries_fires_the_hook_once(instance, files):
    ledger = LedgerResource(path=str(files[0]), transient={"withdraw": 10})
    mailbox = MailboxResource(path=str(files[1]))
    result = _execute(instance, ledger, mailbox)
    assert not result.success
    assert [e["step"] for e in ledger.entries() if e["kind"] == "attempt"].count("withdraw") == 3  # 1 + 2 retries
    assert _effects(ledger, "undo") == ["withdraw", "reserve"]  # once, newest first
    assert sum("rolled back" in m["subject"] for m in mailbox.messages()) == 1


def test_failure_after_pivot_is_not_compensated_and_recovery_relaunches_forward(instance, files):
    ledger = LedgerResource(path=str(files[0]), transient={"settle": 10})
    mailbox = MailboxResource(path=str(files[1]))
    result = _execute(instance, ledger, mailbox)
    assert not result.success and _effects(ledger, "undo") == []
    assert any("stuck after its pivot" in m["subject"] for m in mailbox.messages())
    run = instance.get_run_by_id(result.run_id)
    outcome = recover_run(instance, TRANSFER_SAGA.definition, run, {"ledger": ledger, "smtp": mailbox})
    assert outcome.action is Action.RELAUNCH
    # The relaunch continues the same saga: done steps are skipped, the same keys are used.
    healthy = LedgerResource(path=str(files[0]))
    relaunch = TRANSFER_SAGA.job.execute_in_process(
        instance=instance, run_config=outcome.relaunch.run_config, tags=outcome.relaunch.tags,
        resources={"ledger": healthy, "smtp": mailbox},
    )
    assert relaunch.success
    assert _effects(ledger, "do") == ["reserve", "withdraw", "deposit", "settle"]
    state = InstanceSagaLog(instance).load(result.run_id)
    assert decide(TRANSFER_SAGA.definition, state).verdict is Verdict.COMPLETED
    assert recover_run(instance, TRANSFER_SAGA.definition, run, {"ledger": ledger, "smtp": mailbox}).action \
        is Action.NONE


def test_failed_compensation_is_loud_in_the_run_and_the_mailbox(instance, files):
    ledger = LedgerResource(path=str(files[0]), fail_action=["deposit"], fail_compensation=["withdraw"])
    mailbox = MailboxResource(path=str(files[1]))
    result = _execute(instance, ledger, mailbox)
    logs = instance.all_logs(result.run_id)
    errored_hooks = [e for e in logs if e.dagster_event and e.dagster_event.event_type == DagsterEventType.HOOK_ERRORED]
    assert errored_hooks and "compensation of step 'withdraw' failed" in str(errored_hooks[0].dagster_event.event_specific_data.error)
    error_events = [e for e in logs if e.dagster_event and e.dagster_event.event_type == DagsterEventType.ENGINE_EVENT
                    and e.dagster_event.engine_event_data.error is not None]
    assert any("compensation_failed" in e.dagster_event.message for e in error_events)
    assert any("COMPENSATION FAILED" in m["subject"] for m in mailbox.messages())
    assert _effects(ledger, "undo") == ["deposit"]  # reserve waits until withdraw is undone
    state = InstanceSagaLog(instance).load(result.run_id)
    assert state.step("withdraw").compensation_failures == 1


def test_saga_log_is_in_the_run_event_log_with_what_each_step_did(instance, files):
    ledger = LedgerResource(path=str(files[0]))
    result = _execute(instance, ledger, MailboxResource(path=str(files[1])))
    state = InstanceSagaLog(instance).load(result.run_id)
    assert state.saga_id == result.run_id  # a fresh run starts a saga named by its run id
    assert state.step("withdraw").result == {"moved": "withdraw", "amount": 2.5}
    kinds = [r.kind for r in state.records]
    assert kinds.count(RecordKind.STEP_STARTED) == 4 and kinds.count(RecordKind.STEP_DONE) == 4


def test_reexecuting_a_finished_run_moves_nothing(instance, files):
    ledger = LedgerResource(path=str(files[0]))
    mailbox = MailboxResource(path=str(files[1]))
    first = _execute(instance, ledger, mailbox)
    assert first.success
    before = ledger.entries()
    job = build_reconstructable_job("arb_orchestration_tests.unit.test_saga_dagster", "transfer_job_with_resources")
    with execute_job(job, instance, reexecution_options=ReexecutionOptions(parent_run_id=first.run_id)) as again:
        assert again.success
        assert instance.get_run_by_id(again.run_id).root_run_id == first.run_id
    assert ledger.entries() == before


def test_kill_switch_stops_a_money_moving_saga_before_it_moves_anything(instance, files):
    ledger = LedgerResource(path=str(files[0]))
    mailbox = MailboxResource(path=str(files[1]))
    pause_trading(instance, "stop-loss ran", by="test")
    result = _execute(instance, ledger, mailbox)
    assert not result.success and ledger.entries() == []
    failure = result.failure_data_for_node("reserve")
    assert "trading is paused" in failure.error.message


def test_recovery_sensors_compensate_a_run_that_died_mid_step(files):
    """Simulates the SIGKILL outcome in-process: `withdraw` started, no hook, the run marked failed.
    Own instance: the sweep would rightly also finish other tests' sagas."""
    with temp_instance() as instance:
        _died_mid_step(instance, files)


def _died_mid_step(instance, files):
    ledger = LedgerResource(path=str(files[0]))
    mailbox = MailboxResource(path=str(files[1]))
    only_reserve = TRANSFER_SAGA.job.execute_in_process(
        instance=instance, run_config={"amount": 1.0}, resources={"ledger": ledger, "smtp": mailbox},
        op_selection=["reserve"],
    )
    run = instance.get_run_by_id(only_reserve.run_id)
    log = InstanceSagaLog(instance, run)
    log.record_started(run.run_id, "transfer_saga", "withdraw", key="k")
    instance.report_run_failed(run, "run worker died")
    run = instance.get_run_by_id(run.run_id)
    failure_sensor, sweep = TRANSFER_SAGA.recovery_sensors(grace_seconds=0)
    event = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)[-1].dagster_event
    ctx = build_run_status_sensor_context(
        sensor_name=failure_sensor.name, dagster_event=event, dagster_instance=instance, dagster_run=run,
        resources={"ledger": ledger, "smtp": mailbox},
    )
    assert failure_sensor(ctx) is None
    assert _effects(ledger, "undo") == ["withdraw", "reserve"]
    with build_sensor_context(instance=instance, resources={"ledger": ledger, "smtp": mailbox}) as sctx:
        skip = sweep(sctx)
    assert _effects(ledger, "undo") == ["withdraw", "reserve"]  # second pass: nothing
    assert "no failed saga runs needing recovery" in skip.skip_message
