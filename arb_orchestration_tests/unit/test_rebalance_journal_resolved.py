"""A rebalance saga an operator resolved by hand (`arb-orchestration sagas resolve`) still blocks new rebalances while
its legs were never verified as arrived (the `legs_in_flight` guardrail), and says who resolved it and why.

Recovery leaves a resolved saga alone; the journal must not take that as "its money arrived": a withdrawal an
operator checked may still be on its way, and planning without it could send the same money twice.
"""

from __future__ import annotations

from arb_orchestration.defs.rebalance.journal import legs_in_flight
from arb_orchestration_tests.unit.test_rebalance_cancel_funded_wise import (  # noqa: F401 - the fixture
    CONVERTED,
    _compensate,
    _pivot_funds_wise_then_the_withdrawal_fails,
    world,
)


def test_a_resolved_saga_with_legs_never_verified_still_blocks_and_names_the_resolution(world):
    log, transfer = _pivot_funds_wise_then_the_withdrawal_fails(world)
    transfer["status"] = CONVERTED  # past the point Wise cancels: leg 0 stays in flight
    _compensate(world, log)
    before = legs_in_flight(log.load("saga-1"))
    assert before is not None and [leg.index for leg in before.legs] == [0]

    log.record_operator_resolved("saga-1", "auto_rebalance_saga", by="ops-anna", reason="checked the Wise transfer",
                                 forced=False, state_before="compensated")
    after = legs_in_flight(log.load("saga-1"))

    assert after is not None and [leg.index for leg in after.legs] == [0]
    assert after.why.startswith("resolved by hand by ops-anna (checked the Wise transfer)")
    assert "never verified as arrived" in after.why
