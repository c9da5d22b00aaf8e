"""Review: a protective stop replaced inside the same saga must not reuse the id of the stop it replaces.

The stops step decides from what the venues report now and replaces a stop
whose trigger drifted too far from the mark ("create the new one, then cancel
the old"). When the step runs again in the same saga (the op's retry after a
transient failure on another venue, or the recovery sensor's relaunch), the
stop it created on its first attempt has the same venue, symbol, side and size
as the one it now wants. If the client order id does not depend on the trigger,
the venue answers the "new" stop with the old one (client-order-id replay),
and the step then cancels that very order: the position is left without a
stop while the step reports success.
"""

from __future__ import annotations

import pytest

from arb_orchestration.defs.hedging.legs import stop_client_order_id
from arb_orchestration.defs.hedging.steps import PLACE, PLAN, STOPS, StopsIncomplete
from arb_orchestration.defs.hedging.journal import InMemoryHedgeJournal
from arb_orchestration.domain.hedging import protective_stop
from arb_orchestration.domain.models import Position
from arb_orchestration.resources.errors import TransientError
from arb_orchestration.saga import InMemorySagaLog, execute_step, idempotency_key
from arb_orchestration_tests.unit.test_hedge_job import SAGA, book_world, run_steps, runtime
from arb_orchestration_tests.unit.test_hedge_job_fakes import BTC

PRICE = 60_000.0


def test_a_stop_replaced_on_a_retry_of_the_same_saga_leaves_the_position_protected():
    world, journal, log = book_world(), InMemoryHedgeJournal(), InMemorySagaLog()
    alpha = world.venue("alpha")
    # First attempt: alpha's stop is created, beta's create fails transiently -> the step is retried.
    world.venue("beta").fail_on("create_order", TransientError("503 from beta"))
    rt = runtime(world, log, journal)
    run_steps(rt, PLAN, PLACE)
    with pytest.raises(StopsIncomplete):
        execute_step(SAGA, STOPS, rt)
    (first,) = alpha.orders(type="stop_market", status="open")
    assert first.stop_price == pytest.approx(PRICE * 1.05)

    # Before the retry the market falls 3 %: alpha's stop (short, buy stop above) is now "too far".
    world.state.shock(-0.03)
    result = execute_step(SAGA, STOPS, runtime(world, log, journal, attempt=1))

    alpha_row = next(row for row in result["stops"] if row["venue"] == "alpha")
    assert alpha_row["action"] == "replace"
    open_stops = alpha.orders(type="stop_market", status="open")
    assert len(open_stops) == 1, f"alpha's 1 BTC short has {len(open_stops)} open stops ({alpha_row['outcome']})"
    (stop,) = open_stops
    assert stop.id != first.id and stop.amount == pytest.approx(1.0)
    assert stop.stop_price == pytest.approx(PRICE * 0.97 * 1.05)


def test_stop_ids_differ_by_trigger_and_repeat_for_the_same_stop():
    key = idempotency_key(SAGA.name, "saga-1", STOPS)
    position = Position(venue="okx", symbol=BTC, side="short", size=2.0, entry_price=PRICE, mark_price=PRICE)
    stop = protective_stop(position, 5.0)
    moved = protective_stop(position.model_copy(update={"mark_price": PRICE * 0.97}), 5.0)
    assert stop.amount == moved.amount and stop.side == moved.side and stop.stop_price != moved.stop_price
    assert stop_client_order_id(key, stop) == stop_client_order_id(key, protective_stop(position, 5.0))
    assert stop_client_order_id(key, stop) != stop_client_order_id(key, moved)
