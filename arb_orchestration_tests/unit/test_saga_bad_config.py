"""A saga run whose config passes Dagster's schema but not the config class's own checks.

Dagster checks run config against the schema at launch; constraints the config class
adds (pydantic `Field(gt=...)`, validators) are only checked when a step builds it.
Such a value is a business error: the step fails once, not retried (a retry cannot fix
the config), with a message naming the field, and the failure hook does not crash
re-parsing it (there is nothing to compensate: no step ran).
"""

from __future__ import annotations

from dagster import Config, DagsterEventType, RetryPolicy
from pydantic import Field

from arb_orchestration.saga import SagaStep, build_saga
from arb_orchestration_tests.unit.test_saga_dagster import (  # noqa: F401 (fixtures)
    LedgerResource,
    MailboxResource,
    _act,
    _effects,
    _shared_instance,
    _undo,
    files,
    instance,
)


class BoundedConfig(Config):
    amount: float = Field(default=1.0, gt=0)


BOUNDED_SAGA = build_saga(
    "bounded_saga",
    [SagaStep("reserve", _act, _undo), SagaStep("deposit", _act, _undo, pivot=True)],
    config=BoundedConfig,
    retry_policy=RetryPolicy(max_retries=3, delay=0.01),
)


def test_a_config_the_class_refuses_fails_once_naming_the_field_and_the_hook_survives(instance, files):
    ledger = LedgerResource(path=str(files[0]))
    result = BOUNDED_SAGA.job.execute_in_process(
        instance=instance,
        run_config={"amount": -5.0},
        resources={"ledger": ledger, "smtp": MailboxResource(path=str(files[1]))},
        raise_on_error=False,
    )

    assert not result.success
    events = instance.all_logs(result.run_id)
    kinds = [e.dagster_event.event_type for e in events if e.dagster_event is not None]
    assert DagsterEventType.STEP_UP_FOR_RETRY not in kinds  # not retried
    assert DagsterEventType.HOOK_ERRORED not in kinds  # the hook did not crash on the config
    failure = next(e.dagster_event for e in events if e.dagster_event and e.dagster_event.event_type == DagsterEventType.STEP_FAILURE)
    message = failure.step_failure_data.error.message
    assert "amount" in message and "not retried" in message
    assert _effects(ledger, "attempt") == []  # nothing was tried
