"""Review of what the market-state observations show, where the numbers or labels misled:

- `liq_distance_pct` was |mark - liquidation| / mark: a position whose mark had already
  crossed its liquidation price (a long marked below it) showed a healthy positive
  distance, and `closest_liquidation_pct` hid it. It is now signed: negative past it.
- Funding of two perps on the same base asset (BTC/USDT:USDT and BTC/USDC:USDC, as on
  USDC-margined venues) was charted as two groups both labelled "BTC", and both wrote
  the one `spread_8h_bps/BTC` series, the later symbol silently overwriting the other.
"""

from __future__ import annotations

import pytest

from arb_orchestration.defs.market_data import observations, plots
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


def test_two_perps_on_one_base_asset_keep_their_own_label_and_spread_series(monkeypatch):
    usdt, usdc = "BTC/USDT:USDT", "BTC/USDC:USDC"
    rates = snapshot(
        state("binance", funding=[FundingRate(venue="binance", symbol=usdt, rate=0.0001, interval_hours=8),
                                  FundingRate(venue="binance", symbol=usdc, rate=0.0002, interval_hours=8),
                                  FundingRate(venue="binance", symbol="ETH/USDT:USDT", rate=0.0001, interval_hours=8)]),
        state("okx", funding=[FundingRate(venue="okx", symbol=usdt, rate=0.0003, interval_hours=8)]),
        state("hyperliquid", funding=[FundingRate(venue="hyperliquid", symbol=usdc, rate=0.0001, interval_hours=1)]),
    )
    drawn = {}
    monkeypatch.setattr(plots, "grouped_bars_chart",
                        lambda title, groups, series, ylabel: drawn.update(groups=list(groups)) or "chart")
    metadata = observations.funding_observation(rates, with_plot=True).metadata

    assert len(set(drawn["groups"])) == len(drawn["groups"]) == 3, drawn["groups"]
    assert "ETH" in drawn["groups"]  # an unambiguous base keeps its short label
    # USDT perp: okx 3 bp vs binance 1 bp; USDC perp: hyperliquid 8 bp/8h vs binance 2 bp.
    assert metadata[f"spread_8h_bps/{usdt}"].value == pytest.approx(2.0)
    assert metadata[f"spread_8h_bps/{usdc}"].value == pytest.approx(6.0)
    assert "spread_8h_bps/BTC" not in metadata  # no series that silently means one symbol or the other
    assert metadata["spread_8h_bps/ETH"].value == pytest.approx(0.0)
