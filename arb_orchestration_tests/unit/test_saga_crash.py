"""Crash recovery for real: a saga run in a child process is SIGKILLed inside a step (no hook can
run), the run is marked failed as run monitoring would, and the recovery sensors bring the saga to a
consistent state — compensated before the pivot, finished forward after it — and do nothing the
second time. The child is this module run with `python -m ... child`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, build_run_status_sensor_context, build_sensor_context

from arb_orchestration.saga import InstanceSagaLog, RecordKind, Verdict, decide
from arb_orchestration_tests.unit.test_saga_dagster import (
    TRANSFER_SAGA,
    LedgerResource,
    MailboxResource,
    resources_from_env,
)

CHILD_DEADLINE = 90.0


def open_instance(home: str) -> DagsterInstance:
    """SQLite under `home`, or PostgreSQL when SAGA_TEST_PG_URL is set (the integration variant)."""
    url = os.environ.get("SAGA_TEST_PG_URL")
    overrides = {"storage": {"postgres": {"postgres_url": url}}} if url else None
    return DagsterInstance.local_temp(home, overrides=overrides)


def _child() -> int:
    instance = open_instance(os.environ["DAGSTER_HOME"])
    TRANSFER_SAGA.job.execute_in_process(
        instance=instance, run_config={"amount": 3.0}, resources=resources_from_env(), raise_on_error=False
    )
    return 0


@pytest.fixture
def home():
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        yield Path(tmp)


def run_and_kill(home: Path, block_in: str, extra_env: dict | None = None,
                 failure_message: str = "run worker exited unexpectedly (SIGKILL)"):
    """Run TRANSFER_SAGA in a child process, SIGKILL it inside `block_in`, mark the run failed."""
    ledger = LedgerResource(path=str(home / "ledger.jsonl"))
    mailbox = MailboxResource(path=str(home / "mail.jsonl"))
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home / "dagster"),
        "SAGA_TEST_LEDGER": ledger.path,
        "SAGA_TEST_MAILBOX": mailbox.path,
        "SAGA_TEST_BLOCK": block_in,
        **(extra_env or {}),
    }
    (home / "dagster").mkdir()
    child = subprocess.Popen(
        [sys.executable, "-m", "arb_orchestration_tests.unit.test_saga_crash", "child"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    marker = Path(f"{ledger.path}.{block_in}.entered")
    deadline = time.monotonic() + CHILD_DEADLINE
    try:
        while not marker.exists():
            if child.poll() is not None:
                raise AssertionError(f"child exited early: {child.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("child never reached the blocking step")
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
        child.stderr.close()

    instance = open_instance(str(home / "dagster"))  # the same storage the child wrote to
    [run] = instance.get_runs()
    assert run.status == DagsterRunStatus.STARTED  # nobody noticed: no hook ran, nothing marked it
    # What the code server (locally) or run monitoring (Kubernetes) does for a dead run worker:
    instance.report_run_failed(run, failure_message)
    return instance, ledger, mailbox, run.run_id


def failure_sensor_tick(instance, run_id, resources):
    failure_sensor, _ = TRANSFER_SAGA.recovery_sensors(grace_seconds=0)
    run = instance.get_run_by_id(run_id)
    event = instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)[-1].dagster_event
    ctx = build_run_status_sensor_context(
        sensor_name=failure_sensor.name, dagster_event=event, dagster_instance=instance, dagster_run=run,
        resources=resources,
    )
    return failure_sensor(ctx)


def sweep_tick(instance, resources):
    _, sweep = TRANSFER_SAGA.recovery_sensors(grace_seconds=0)
    with build_sensor_context(instance=instance, resources=resources) as ctx:
        return sweep(ctx)


def _steps(ledger, kind):
    return [e["step"] for e in ledger.entries() if e["kind"] == kind]


def test_sigkill_before_the_pivot_is_compensated_and_a_second_pass_does_nothing(home):
    instance, ledger, mailbox, run_id = run_and_kill(home, block_in="withdraw")
    try:
        check_compensated_after_kill(instance, ledger, mailbox, run_id)
    finally:
        instance.dispose()


def check_compensated_after_kill(instance, ledger, mailbox, run_id):
    """Recovery of a saga killed before its pivot: compensated once, then nothing."""
    state = InstanceSagaLog(instance).load(run_id)
    # The start of the killed step was durable before its side effect.
    assert state.step("withdraw").started and not state.step("withdraw").done
    assert _steps(ledger, "do") == ["reserve"]
    resources = {"ledger": ledger, "smtp": mailbox}

    assert failure_sensor_tick(instance, run_id, resources) is None
    assert _steps(ledger, "undo") == ["withdraw", "reserve"]
    state = InstanceSagaLog(instance).load(run_id)
    assert decide(TRANSFER_SAGA.definition, state).verdict is Verdict.COMPENSATED
    records = len(state.records)

    skip = sweep_tick(instance, resources)  # second pass
    assert "no failed saga runs needing recovery" in skip.skip_message
    assert _steps(ledger, "undo") == ["withdraw", "reserve"]
    assert len(InstanceSagaLog(instance).load(run_id).records) == records


def test_sigkill_after_the_pivot_is_finished_forward_once(home):
    instance, ledger, mailbox, run_id = run_and_kill(home, block_in="settle")
    try:
        resources = {"ledger": ledger, "smtp": mailbox}
        request = sweep_tick(instance, resources).run_requests[0]  # the sweep finds it too
        assert request.tags["arb/saga_id"] == run_id and request.tags["arb/saga_recovery_of"] == run_id

        # The daemon would launch this; run it in-process against the same instance.
        relaunch = TRANSFER_SAGA.job.execute_in_process(
            instance=instance, run_config=request.run_config, tags=request.tags,
            resources={"ledger": LedgerResource(path=ledger.path), "smtp": mailbox},
        )
        assert relaunch.success
        assert _steps(ledger, "do") == ["reserve", "withdraw", "deposit", "settle"]  # each exactly once
        assert _steps(ledger, "undo") == []
        state = InstanceSagaLog(instance).load(run_id)
        assert decide(TRANSFER_SAGA.definition, state).verdict is Verdict.COMPLETED
        assert [r.kind for r in state.records].count(RecordKind.FORWARD_REQUESTED) == 1

        # Second pass, both sensors: nothing.
        assert failure_sensor_tick(instance, run_id, resources) is None
        assert "no failed saga runs needing recovery" in sweep_tick(instance, resources).skip_message
        assert _steps(ledger, "do") == ["reserve", "withdraw", "deposit", "settle"]
    finally:
        instance.dispose()


if __name__ == "__main__" and sys.argv[1:] == ["child"]:
    sys.exit(_child())
