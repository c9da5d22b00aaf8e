"""The hedge's "best venue" table compares perps by base asset, as `plan_hedges` does.

`plan_hedges` puts a BTC hedge on any BTC perp, USDT- or USDC-margined. The
summary's best-markets table used to compare exact symbols, so a USDC perp
paying more than every USDT one was never shown as the best short. It now
groups by base asset, names the symbol chosen on each side, and says when the
two sides settle in different assets (the spread then also carries the
USDT/USDC basis).
"""

from __future__ import annotations

from arb_orchestration.defs.hedging.legs import best_markets, rate_rows
from arb_orchestration.defs.hedging.report import summary_markdown
from arb_orchestration.domain.hedging import HedgePolicy, plan_hedges
from arb_orchestration.domain.models import Balance, FundingRate

RATES = [
    FundingRate(venue="binance", symbol="BTC/USDT:USDT", rate=0.0001, interval_hours=8, observed_at=1.0),
    FundingRate(venue="okx", symbol="BTC/USDT:USDT", rate=0.0002, interval_hours=8, observed_at=1.0),
    FundingRate(venue="hyperliquid", symbol="BTC/USDC:USDC", rate=0.0001, interval_hours=1, observed_at=1.0),  # 8 bp/8 h
]


def test_usdt_and_usdc_perps_of_one_base_are_compared():
    best = best_markets(rate_rows(RATES))
    assert set(best) == {"BTC"}
    btc = best["BTC"]
    assert (btc["short_venue"], btc["short_symbol"]) == ("hyperliquid", "BTC/USDC:USDC")
    assert (btc["long_venue"], btc["long_symbol"]) == ("binance", "BTC/USDT:USDT")
    assert btc["settles"] == ["USDC", "USDT"]
    assert btc["mixed_settle"] is True


def test_one_settle_asset_is_not_flagged():
    best = best_markets(rate_rows(RATES[:2]))
    assert best["BTC"]["mixed_settle"] is False
    assert best["BTC"]["short_venue"] == "okx"


def test_best_short_agrees_with_where_plan_hedges_sells():
    # 1 BTC of spot, no perps: the plan sells 1 BTC on the richest BTC perp, whatever it settles in.
    spot = {"binance": {"BTC": Balance(asset="BTC", free=1.0, used=0.0, total=1.0)}}
    plan = plan_hedges([], spot, RATES, {"BTC": 60_000.0}, HedgePolicy(hedge_assets=("BTC",)))
    (order,) = plan.orders
    best = best_markets(rate_rows(RATES))["BTC"]
    assert (order.side, order.venue, order.symbol) == ("sell", best["short_venue"], best["short_symbol"])


def test_summary_names_the_symbol_on_each_side():
    text = summary_markdown({"best_markets": best_markets(rate_rows(RATES))}, {}, {"skipped": "dry run"})
    assert "hyperliquid BTC/USDC:USDC" in text and "binance BTC/USDT:USDT" in text
