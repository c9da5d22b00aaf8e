"""Review: protective stops and stop-loss close orders, as properties (sides, distances, sizes, dust).

* `protective_stop`: a long gets a sell stop below the mark, a short a buy stop
  above it, `distance_pct` % away, reduce-only, for the full size; when the
  liquidation price comes first the stop sits inside it (never beyond it).
* `plan_stop_maintenance`: a stop placed as wanted is kept; a resized position
  gets a replacement for the new size; a closed (or dust) position's stop is
  cancelled; a kept stop is on the losing side of the current mark.
* `plan_close_orders`: one reduce-only market order per open position, the
  opposite side, exactly the position's size; dust and skipped positions get none.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from arb_orchestration.defs.hedging.stops import StopSettings, plan_stop_maintenance
from arb_orchestration.domain.hedging import protective_stop
from arb_orchestration.domain.liquidation import DEFAULT_DUST, plan_close_orders, position_key
from arb_orchestration.domain.models import Order, Position

BTC = "BTC/USDT:USDT"
FAST = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
sides = st.sampled_from(["long", "short"])


def _position(side: str, size: float, mark: float, liq: float | None = None, venue: str = "alpha") -> Position:
    return Position(venue=venue, symbol=BTC, side=side, size=size, entry_price=mark, mark_price=mark,
                    liquidation_price=liq)


def _resting(wanted, order_id: str = "s1") -> Order:
    return Order(id=order_id, venue=wanted.venue, symbol=wanted.symbol, type="stop_market", side=wanted.side,
                 amount=wanted.amount, stop_price=wanted.stop_price, status="open", reduce_only=True)


@FAST
@given(side=sides, size=st.floats(1e-6, 100.0), mark=st.floats(1.0, 1e6), distance=st.floats(0.1, 50.0))
def test_a_stop_without_liquidation_price_is_on_the_losing_side_at_the_configured_distance(side, size, mark, distance):
    stop = protective_stop(_position(side, size, mark), distance)
    assert stop.type == "stop_market" and stop.reduce_only and stop.amount == size
    assert stop.side == ("sell" if side == "long" else "buy")
    assert (stop.stop_price < mark) if side == "long" else (stop.stop_price > mark)
    assert abs(stop.stop_price - mark) / mark * 100 == pytest.approx(distance, rel=1e-6, abs=1e-6)


@FAST
@given(side=sides, mark=st.floats(1.0, 1e6), distance=st.floats(0.1, 50.0), liq_off=st.floats(0.01, 0.9),
       buffer=st.floats(0.0, 0.9))
def test_a_stop_never_sits_beyond_the_liquidation_price(side, mark, distance, liq_off, buffer):
    assume(liq_off > buffer / 100 + 1e-3)  # liquidation further from the mark than the buffer (see the report)
    liq = mark * (1 - liq_off) if side == "long" else mark * (1 + liq_off)
    stop = protective_stop(_position(side, 1.0, mark, liq), distance, liquidation_buffer_pct=buffer).stop_price
    if side == "long":
        assert liq - 1e-8 <= stop < mark  # the stop price is rounded to 8 decimals
    else:
        assert mark < stop <= liq + 1e-8


@FAST
@given(side=sides, size=st.floats(1e-4, 100.0), mark=st.floats(1.0, 1e5), move=st.floats(-0.2, 0.2),
       resize=st.floats(0.0, 3.0))
def test_stops_are_kept_resized_and_cancelled_with_the_position(side, size, mark, move, resize):
    settings_ = StopSettings()
    position = _position(side, size, mark)
    stop = _resting(protective_stop(position, settings_.distance_pct))
    assert [a.kind for a in plan_stop_maintenance([position], [stop], settings_)] == ["keep"]
    assert [a.kind for a in plan_stop_maintenance([], [stop], settings_)] == ["cancel"]

    new_mark, new_size = mark * (1 + move), size * resize
    (action,) = plan_stop_maintenance([_position(side, new_size, new_mark)], [stop], settings_)
    if new_size <= settings_.dust:
        assert action.kind == "cancel"
        return
    if abs(new_size - size) > max(settings_.dust, new_size * settings_.size_tolerance_pct / 100):
        assert action.kind == "replace" and action.wanted.amount == new_size
    if action.kind == "keep":
        assert (stop.stop_price < new_mark) if side == "long" else (stop.stop_price > new_mark)


@FAST
@given(st.lists(st.tuples(st.sampled_from(["alpha", "beta"]), sides, st.floats(0.0, 50.0)), max_size=6, unique_by=lambda t: t[:2]))
def test_close_orders_close_exactly_each_open_position_on_the_opposite_side(book):
    positions = [_position(side, size, 60_000.0, venue=venue) for venue, side, size in book]
    orders = plan_close_orders(positions, base_key="k")
    open_ = {position_key(p): p for p in positions if p.size > DEFAULT_DUST}
    assert {o.key for o in orders} == set(open_)
    for order in orders:
        position = open_[order.key]
        assert order.amount == position.size and order.reduce_only and order.type == "market"
        assert order.side == ("sell" if position.side == "long" else "buy")
    skipped = next(iter(open_), None)
    if skipped is not None:
        assert skipped not in {o.key for o in plan_close_orders(positions, base_key="k", skip=[skipped])}
