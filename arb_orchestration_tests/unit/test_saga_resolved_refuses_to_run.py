"""A saga an operator resolved by hand (`arb-orchestration sagas resolve`) does not run again.

Recovery already leaves it alone; a re-execution of one of its runs (from the UI, `dagster job execute` with
its saga id) must not act on it either: the operator settled it by hand (closed a leg, cancelled a transfer),
and a step moving money again on top of that is exactly what resolving was meant to stop. The step fails as a
business error before it records anything or calls its action, naming who resolved it and why.
"""

from __future__ import annotations

import pytest

from arb_orchestration.resources.errors import BusinessError, TransientError
from arb_orchestration.saga import InMemorySagaLog, SagaClosedError, execute_step
from arb_orchestration_tests.unit.test_saga_engine import World, _hook, _rt, _run, _saga


def _escalated_then_resolved():
    saga, log, world = _saga(pivot="b", compensable=("a", "b")), InMemorySagaLog(), World()
    world.fail_action["c"] = TransientError("venue down")  # after the pivot: forward recovery only
    step, err = _run(saga, log, world)
    assert step == "c"
    _hook(saga, log, world, step, err)
    log.record_operator_resolved("saga-1", saga.name, by="ops-anna", reason="closed the leg by hand",
                                 forced=True, state_before="escalated")
    return saga, log, world


def test_a_resolved_saga_refuses_a_re_execution_before_recording_or_acting():
    saga, log, world = _escalated_then_resolved()
    del world.fail_action["c"]  # the venue is back: without the resolution the step would run now
    effects, records = list(world.effects), len(log.load("saga-1").records)

    with pytest.raises(SagaClosedError, match="resolved by hand by ops-anna \\(closed the leg by hand\\)") as caught:
        execute_step(saga, "c", _rt(log, world, run_id="run-2"))

    assert isinstance(caught.value, BusinessError)  # not retried
    assert world.effects == effects, "no action called"
    assert len(log.load("saga-1").records) == records, "nothing recorded"


def test_a_done_step_of_a_resolved_saga_is_refused_too():
    saga, log, world = _escalated_then_resolved()
    with pytest.raises(SagaClosedError):
        execute_step(saga, "a", _rt(log, world, run_id="run-2"))
