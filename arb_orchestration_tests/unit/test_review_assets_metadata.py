"""Review of what the market-state observations show, where the numbers or labels misled:

- `liq_distance_pct` was |mark - liquidation| / mark: a position whose mark had already
  crossed its liquidation price (a long marked below it) showed a healthy positive
  distance, and `closest_liquidation_pct` hid it. It is now signed: negative past it.
"""

from __future__ import annotations

import pytest

from arb_orchestration.defs.market_data import observations
from arb_orchestration.defs.market_data.snapshot import MarketSnapshot, VenueState
from arb_orchestration.domain.models import FundingRate, Position

AT = 1_800_000_000.0


def state(venue: str, positions=(), funding=()) -> VenueState:
    return VenueState(venue=venue, balances={}, positions=list(positions), funding_rates=list(funding),
                      marks={}, fetched_at=AT)


def snapshot(*states: VenueState) -> MarketSnapshot:
    return MarketSnapshot(venues=[s.venue for s in states], states={s.venue: s for s in states}, started_at=AT)


def position(side: str, mark: float, liq: float, symbol: str = "BTC/USDT:USDT") -> Position:
    return Position(venue="binance", symbol=symbol, side=side, size=1.0, entry_price=mark, mark_price=mark,
                    liquidation_price=liq)


def test_liquidation_distance_is_negative_once_the_mark_is_past_liquidation():
    book = state("binance", positions=[
        position("long", 50_000.0, 51_000.0),                     # marked 2 % below its liquidation price
        position("short", 3_000.0, 3_600.0, "ETH/USDT:USDT"),     # 20 % of room
    ])
    event = observations.positions_observation(snapshot(book), "binance")
    rows = {r.data["symbol"]: r.data for r in event.metadata["positions"].records}
    assert rows["BTC/USDT:USDT"]["liq_distance_pct"] == pytest.approx(-2.0)
    assert rows["ETH/USDT:USDT"]["liq_distance_pct"] == pytest.approx(20.0)
    assert event.metadata["closest_liquidation_pct"].value == pytest.approx(-2.0)


def test_a_long_and_a_short_with_room_have_positive_distances():
    book = state("binance", positions=[position("long", 60_000.0, 48_000.0),
                                       position("short", 3_000.0, 3_300.0, "ETH/USDT:USDT")])
    event = observations.positions_observation(snapshot(book), "binance")
    rows = {r.data["symbol"]: r.data["liq_distance_pct"] for r in event.metadata["positions"].records}
    assert rows == {"BTC/USDT:USDT": pytest.approx(20.0), "ETH/USDT:USDT": pytest.approx(10.0)}
