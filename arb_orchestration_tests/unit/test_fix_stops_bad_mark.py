"""Fix: one position with an unusable mark price (<= 0, not finite) no longer stops every venue's protective stops.

`plan_stop_maintenance` turns it into a `problem` action for that (venue,
symbol) only (its resting stops are left alone); `maintain_protective_stops`
still works every other position, reports the broken one in the journal, and
then fails (retried like an incomplete stops step).
"""

from __future__ import annotations

import math

import pytest

from arb_orchestration.defs.hedging import HedgeConfig
from arb_orchestration.defs.hedging.journal import InMemoryHedgeJournal
from arb_orchestration.defs.hedging.steps import PLACE, PLAN, STOPS, StopsIncomplete, StopsUncomputable
from arb_orchestration.defs.hedging.stops import StopSettings, plan_stop_maintenance
from arb_orchestration.domain.models import Order, Position
from arb_orchestration.saga import InMemorySagaLog, execute_step
from arb_orchestration_tests.unit.test_hedge_job import SAGA, book_world, run_steps, runtime
from arb_orchestration_tests.unit.test_hedge_job_fakes import BTC, ETH

PRICE = 60_000.0


def _pos(venue: str, mark: float, symbol: str = BTC) -> Position:
    return Position(venue=venue, symbol=symbol, side="short", size=1.0, entry_price=PRICE, mark_price=mark)


@pytest.mark.parametrize("bad_mark", [0.0, -1.0, math.nan, math.inf])
def test_a_bad_mark_is_a_problem_for_its_own_symbol_only(bad_mark):
    resting = Order(id="s9", venue="alpha", symbol=BTC, type="stop_market", side="buy", amount=1.0,
                    stop_price=PRICE * 1.05, status="open", reduce_only=True)
    actions = plan_stop_maintenance([_pos("alpha", bad_mark), _pos("beta", PRICE)], [resting], StopSettings())
    by_venue = {a.venue: a for a in actions}
    assert by_venue["beta"].kind == "create" and by_venue["beta"].wanted is not None
    problem = by_venue["alpha"]
    assert problem.kind == "problem" and "mark price" in problem.reason
    assert problem.cancels == () and not problem.changes_anything  # the resting stop stays


def test_the_stops_step_works_the_other_venues_then_fails_naming_the_broken_position():
    world, journal = book_world(), InMemoryHedgeJournal()
    alpha = world.venue("alpha")
    real_fetch = alpha.fetch_positions
    alpha.fetch_positions = lambda: [p.model_copy(update={"mark_price": 0.0}) for p in real_fetch()]
    rt = runtime(world, InMemorySagaLog(), journal, config=HedgeConfig(hedge_assets=["ETH"]))
    run_steps(rt, PLAN, PLACE)
    with pytest.raises(StopsUncomputable, match=r"alpha BTC/USDT:USDT: no stop can be computed") as info:
        execute_step(SAGA, STOPS, rt)
    assert isinstance(info.value, StopsIncomplete)  # retried like an incomplete stops step, not swallowed
    (beta_stop,) = world.venue("beta").orders(type="stop_market", status="open")
    assert (beta_stop.symbol, beta_stop.side, beta_stop.amount) == (ETH, "buy", 10.0)
    assert alpha.orders(type="stop_market") == []
    meta = journal.metadata(STOPS)
    assert "alpha BTC/USDT:USDT" in meta["unprotected"] and meta["stops_maintained"] == 1
