"""Unwinding a filled hedge leg when the venue refuses the reduce-only order.

Venues word "this reduce-only order would reduce nothing" differently (the
simulator: `reduce_only_would_increase`; Binance -2022 through ccxt:
`reduce_only_rejected`). The unwind believes "already closed" only when a
fresh position read agrees; any other refusal, or a refusal while the leg's
exposure is still open, fails the compensation loudly.
"""

from __future__ import annotations

import pytest

from arb_orchestration.defs.hedging import HEDGE_SAGA, HedgeConfig
from arb_orchestration.defs.hedging.journal import InMemoryHedgeJournal
from arb_orchestration.defs.hedging.steps import PLACE, PLAN, HedgeLegRejected
from arb_orchestration.resources.errors import BusinessError
from arb_orchestration.saga import Action, CompensationFailedError, InMemorySagaLog, InMemoryTradingSwitch, StepRuntime, execute_step, on_step_failure
from arb_orchestration_tests.unit.test_hedge_job_fakes import BTC, World, venue_spec

SAGA = HEDGE_SAGA.definition
PAIR = HedgeConfig(max_notional_per_market_usd=40_000.0, hedge_assets=["BTC"])


def _failed_pair():
    """Leg 0 (alpha, sell 2/3 BTC) filled, leg 1 (beta) refused: the place step failed for good."""
    world = World([
        venue_spec("alpha", btc_funding=0.0005, balances={"USDT": 500_000.0, "BTC": 1.0}),
        venue_spec("beta", btc_funding=0.0004),
        venue_spec("gamma", btc_funding=0.0001),
    ])
    world.venue("beta").fail_on("create_order", BusinessError("insufficient margin", code="insufficient_margin"))
    log = InMemorySagaLog()
    rt = StepRuntime(saga_id="saga-1", log=log, resources={"exchange": world, "hedge_journal": InMemoryHedgeJournal()},
                     config=PAIR, run_id=log.run_id, attempt=0, trading_switch=InMemoryTradingSwitch())
    execute_step(SAGA, PLAN, rt)
    with pytest.raises(HedgeLegRejected) as failed:
        execute_step(SAGA, PLACE, rt)
    assert world.venue("alpha").position(BTC) == pytest.approx(-2 / 3)
    return world, log, failed.value


def _compensate(world, log, error):
    return on_step_failure(SAGA, "saga-1", PLACE, error, log=log, resources={"exchange": world}, alert=None, config=PAIR)


def _refuse_reduce_only(world, code: str) -> None:
    world.venue("alpha").fail_on("create_order", BusinessError("ReduceOnly Order is rejected.", code=code),
                                 match=lambda kwargs: kwargs.get("reduce_only") is True)


@pytest.mark.parametrize("code", ["reduce_only_rejected", "reduce_only_would_increase"])
def test_a_refusal_with_the_position_already_closed_leaves_the_leg_untouched(code):
    world, log, error = _failed_pair()
    alpha = world.venue("alpha")
    # A stop fired before the compensation ran: nothing is left to unwind.
    alpha.create_order(BTC, "market", "buy", -alpha.position(BTC), client_order_id="stop-fired", reduce_only=True)
    assert alpha.position(BTC) == 0.0
    _refuse_reduce_only(world, code)

    outcome = _compensate(world, log, error)

    assert outcome.action is Action.COMPENSATED
    details = log.load("saga-1").step(PLACE).compensation
    assert details["unwound"] == []
    assert [(u["leg"], u["why"].startswith("position already closed")) for u in details["untouched"]] == [
        (1, False), (0, True)]
    assert alpha.position(BTC) == 0.0


@pytest.mark.parametrize("code", ["reduce_only_rejected", "reduce_only_would_increase"])
def test_a_reduce_only_refusal_while_the_exposure_is_still_open_fails_the_compensation(code):
    world, log, error = _failed_pair()
    _refuse_reduce_only(world, code)  # but alpha still holds the 2/3 BTC short

    with pytest.raises(CompensationFailedError) as failed:
        _compensate(world, log, error)

    assert failed.value.__cause__.code == code
    assert world.venue("alpha").position(BTC) == pytest.approx(-2 / 3)  # not silently called closed
    assert log.load("saga-1").step(PLACE).compensation is None


def test_another_refusal_is_never_taken_for_a_closed_position():
    world, log, error = _failed_pair()
    alpha = world.venue("alpha")
    alpha.create_order(BTC, "market", "buy", -alpha.position(BTC), client_order_id="stop-fired", reduce_only=True)
    _refuse_reduce_only(world, "insufficient_margin")

    with pytest.raises(CompensationFailedError) as failed:
        _compensate(world, log, error)

    assert failed.value.__cause__.code == "insufficient_margin"
    assert log.load("saga-1").step(PLACE).compensation is None
