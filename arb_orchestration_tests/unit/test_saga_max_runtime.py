"""A saga run that run monitoring stopped for exceeding its maximum runtime is recovered by the sweep, late.

Dagster's run monitoring asks the launcher to terminate such a run and marks it FAILURE at
once, while the worker may still be shutting down (on Kubernetes: the pod's 60 s termination
grace period, its own failure hook included). The failure sensor therefore leaves it alone, and
the sweep compensates only `stopping_grace_seconds` after that failure. A run that died any
other way is still recovered at once (test_saga_crash.py).
"""

from __future__ import annotations

from dagster import DagsterEventType

from arb_orchestration.saga import InstanceSagaLog
from arb_orchestration.saga.sensors import STOPPING_GRACE_SECONDS, stopped_for_max_runtime, sweep_failed_sagas
from arb_orchestration_tests.unit.test_saga_crash import _steps, failure_sensor_tick, home, run_and_kill  # noqa: F401
from arb_orchestration_tests.unit.test_saga_dagster import TRANSFER_SAGA, resources_from_env

MONITORING_MESSAGE = "Exceeded maximum runtime of 600 seconds."


def _resources(ledger, mailbox):
    return {"ledger": ledger, "smtp": mailbox}


def test_a_run_stopped_for_max_runtime_is_compensated_by_the_sweep_after_the_grace(home):  # noqa: F811
    instance, ledger, mailbox, run_id = run_and_kill(home, block_in="withdraw", failure_message=MONITORING_MESSAGE)
    try:
        failed_at = stopped_for_max_runtime(instance, run_id)
        assert failed_at == instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)[-1].timestamp
        resources = _resources(ledger, mailbox)

        # The failure sensor leaves it alone: the worker may still be stopping.
        assert failure_sensor_tick(instance, run_id, resources) is None
        assert _steps(ledger, "undo") == [] and InstanceSagaLog(instance).load(run_id).step("reserve").compensation is None

        by_job = {TRANSFER_SAGA.job.name: TRANSFER_SAGA.definition}
        early = failed_at + STOPPING_GRACE_SECONDS - 5
        requests, lines = sweep_failed_sagas(instance, by_job, resources, lookback_seconds=3600, grace_seconds=0,
                                             now=early)
        assert requests == [] and len(lines) == 1 and "maximum runtime" in lines[0] and "waiting" in lines[0]
        assert _steps(ledger, "undo") == []

        requests, lines = sweep_failed_sagas(instance, by_job, resources, lookback_seconds=3600, grace_seconds=0,
                                             now=failed_at + STOPPING_GRACE_SECONDS + 1)
        assert requests == [] and len(lines) == 1 and "compensated" in lines[0]
        assert _steps(ledger, "undo") == ["withdraw", "reserve"]
    finally:
        instance.dispose()


def test_another_failure_is_not_mistaken_for_a_max_runtime_stop(home):  # noqa: F811
    instance, ledger, mailbox, run_id = run_and_kill(home, block_in="withdraw")
    try:
        assert stopped_for_max_runtime(instance, run_id) is None
        failure_sensor_tick(instance, run_id, _resources(ledger, mailbox))
        assert _steps(ledger, "undo") == ["withdraw", "reserve"]  # compensated at once, as before
    finally:
        instance.dispose()
