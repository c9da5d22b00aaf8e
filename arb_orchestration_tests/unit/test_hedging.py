"""Hedge maths: net delta per base asset, the tolerance band, venue choice by funding, reduce-only, stops."""

from __future__ import annotations

import pytest

from arb_orchestration.domain.hedging import (
    HedgeOrder,
    HedgePolicy,
    base_asset,
    hedge_orders,
    plan_hedges,
    protective_stop,
    reference_price,
)
from arb_orchestration.domain.models import Balance, FundingRate, Position

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
PRICES = {"BTC": 60_000.0, "ETH": 3_000.0}


def pos(venue: str, symbol: str, side: str, size: float, mark: float = 60_000.0, liq: float | None = None) -> Position:
    return Position(
        venue=venue, symbol=symbol, side=side, size=size, entry_price=mark, mark_price=mark, liquidation_price=liq
    )


def fr(venue: str, symbol: str, rate: float, hours: float = 8.0) -> FundingRate:
    return FundingRate(venue=venue, symbol=symbol, rate=rate, interval_hours=hours)


def spot(**per_venue: dict[str, float]) -> dict[str, dict[str, Balance]]:
    return {
        venue: {asset: Balance(asset=asset, free=total, used=0.0, total=total) for asset, total in assets.items()}
        for venue, assets in per_venue.items()
    }


FUNDING = [
    fr("binance", BTC, 0.00010),
    fr("okx", BTC, 0.00008),
    fr("hyperliquid", BTC, 0.00005, hours=1),  # 4 bp/8h: the highest once normalised
    fr("binance", ETH, 0.00010),
    fr("okx", ETH, -0.00005),
]


def test_symbol_helpers_and_reference_prices():
    assert base_asset(BTC) == "BTC"
    marks = {"BTC/USDT": 60_100.0, "ETH/USDT:USDT": 3_010.0, "EUR/USDT": 1.08}
    assert reference_price("BTC", marks) == 60_100.0
    assert reference_price("ETH", marks) == 3_010.0  # falls back to the perp mark
    assert reference_price("USDT", {}) == 1.0
    assert reference_price("USDC", {}) == 1.0
    assert reference_price("USDC", {"USDC/USDT": 0.999}) == 0.999
    assert reference_price("EUR", marks) == 1.08
    assert reference_price("DOGE", marks) is None


def test_net_delta_adds_spot_and_signed_perps():
    plan = plan_hedges(
        positions=[pos("binance", BTC, "long", 1.5), pos("okx", BTC, "short", 2.0)],
        spot_balances=spot(binance={"BTC": 0.3, "USDT": 1000}, okx={"BTC": 0.2}),
        funding_rates=FUNDING,
        prices=PRICES,
    )
    btc = plan.delta("BTC")
    assert btc.spot == pytest.approx(0.5)
    assert btc.perp == pytest.approx(-0.5)
    assert btc.net_delta == pytest.approx(0.0)
    assert btc.within_tolerance
    assert plan.orders_for("BTC") == []
    assert "USDT" not in {d.asset for d in plan.deltas}  # quote assets are not hedged


def test_long_drift_is_shorted_where_normalised_funding_is_highest():
    plan = plan_hedges(
        positions=[],
        spot_balances=spot(binance={"BTC": 2.0}),
        funding_rates=FUNDING,
        prices=PRICES,
    )
    (order,) = plan.orders_for("BTC")
    # hyperliquid pays 0.5 bp/h = 4 bp/8h... binance 1 bp/8h, okx 0.8: hyperliquid wins only after normalising.
    assert (order.venue, order.symbol, order.side, order.amount, order.reduce_only) == (
        "hyperliquid",
        BTC,
        "sell",
        2.0,
        False,
    )
    assert order.funding_rate_8h == pytest.approx(0.0004)
    assert order.reason == "hedge BTC drift (funding +4.00 bp/8h)"  # 0.5 bp/h, per 8 h, in bp
    assert order.notional_usd == pytest.approx(120_000.0)
    assert plan.delta("BTC").status == "hedge"
    assert plan.delta("BTC").residual_after_plan == pytest.approx(0.0)


def test_short_drift_is_bought_where_funding_is_lowest():
    plan = plan_hedges(
        positions=[pos("binance", ETH, "short", 10.0, mark=3_000.0)],
        spot_balances=spot(binance={"ETH": 4.0}),
        funding_rates=FUNDING,
        prices=PRICES,
    )
    (order,) = plan.orders_for("ETH")
    assert (order.venue, order.side, order.amount, order.reduce_only) == ("okx", "buy", 6.0, False)


def test_reducing_an_opposite_position_is_reduce_only_and_flips_are_split():
    # Too long by 1 BTC; hyperliquid (best for shorts) holds a 0.4 BTC long: close it, open 0.6 short.
    plan = plan_hedges(
        positions=[pos("hyperliquid", BTC, "long", 0.4)],
        spot_balances=spot(binance={"BTC": 0.6}),
        funding_rates=FUNDING,
        prices=PRICES,
    )
    orders = plan.orders_for("BTC")
    assert [(o.venue, o.side, o.amount, o.reduce_only) for o in orders] == [
        ("hyperliquid", "sell", 0.4, True),
        ("hyperliquid", "sell", 0.6, False),
    ]
    # Fully inside the opposite position: one reduce-only order.
    plan = plan_hedges(
        positions=[pos("hyperliquid", BTC, "long", 3.0), pos("okx", BTC, "short", 2.0)],
        spot_balances={},
        funding_rates=FUNDING,
        prices=PRICES,
    )
    assert [(o.venue, o.side, o.amount, o.reduce_only) for o in plan.orders] == [("hyperliquid", "sell", 1.0, True)]


def test_split_piece_below_min_notional_is_merged():
    plan = plan_hedges(
        positions=[pos("hyperliquid", BTC, "long", 0.001)],  # $60 to close: below the $100 minimum
        spot_balances=spot(binance={"BTC": 0.999}),
        funding_rates=FUNDING,
        prices=PRICES,
    )
    assert [(o.amount, o.reduce_only) for o in plan.orders] == [(1.0, False)]


def test_tolerance_band_edges():
    policy = HedgePolicy(min_notional_usd=100, drift_tolerance_usd=600)
    inside = plan_hedges([], spot(binance={"BTC": 0.01}), FUNDING, PRICES, policy)  # exactly $600
    assert inside.orders == () and inside.delta("BTC").within_tolerance
    outside = plan_hedges([], spot(binance={"BTC": 0.0101}), FUNDING, PRICES, policy)  # $606
    assert len(outside.orders) == 1 and not outside.delta("BTC").within_tolerance
    # The band is never narrower than the minimum notional.
    tight = HedgePolicy(min_notional_usd=1_000, drift_tolerance_usd=10)
    assert plan_hedges([], spot(binance={"BTC": 0.015}), FUNDING, PRICES, tight).orders == ()  # $900


def test_per_market_cap_spills_to_the_next_best_market():
    policy = HedgePolicy(max_notional_per_market_usd=60_000)
    plan = plan_hedges([], spot(binance={"BTC": 2.5}), FUNDING, PRICES, policy)
    assert [(o.venue, o.amount) for o in plan.orders] == [("hyperliquid", 1.0), ("binance", 1.0), ("okx", 0.5)]
    assert plan.delta("BTC").status == "hedge"
    # Not enough markets to absorb it: partial, and the residual is visible.
    plan = plan_hedges([], spot(binance={"BTC": 4.0}), FUNDING, PRICES, policy)
    assert plan.delta("BTC").status == "partial"
    assert plan.delta("BTC").residual_after_plan == pytest.approx(1.0)
    assert not plan.all_within_tolerance


def test_unhedgeable_assets_are_reported_not_dropped():
    plan = plan_hedges([], spot(kraken={"ETH": 5.0, "BTC": 1.0}), [fr("okx", BTC, 0.0001)], {"BTC": 60_000.0})
    assert plan.delta("ETH").status == "unpriced"
    plan = plan_hedges([], spot(kraken={"ETH": 5.0}), [fr("okx", BTC, 0.0001)], PRICES)
    assert plan.delta("ETH").status == "no_market"
    assert plan.orders == ()
    assert not plan.all_within_tolerance


def test_policy_target_venue_filter_and_spot_exclusion():
    policy = HedgePolicy(target_delta={"BTC": 1.0}, venues=("okx",))
    plan = plan_hedges([], spot(binance={"BTC": 3.0}), FUNDING, PRICES, policy)
    assert [(o.venue, o.amount) for o in plan.orders] == [("okx", 2.0)]
    # What the plan reports measures from the target: 3 held - 1 wanted = 2 BTC too long ($120,000), all sold.
    btc = plan.delta("BTC")
    assert (btc.net_delta, btc.target, btc.drift) == (3.0, 1.0, 2.0)
    assert btc.drift_usd == pytest.approx(120_000.0) and btc.residual_after_plan == pytest.approx(0.0)
    no_spot = plan_hedges([], spot(binance={"BTC": 3.0}), FUNDING, PRICES, HedgePolicy(include_spot=False))
    assert no_spot.orders == ()
    assert hedge_orders([], spot(binance={"BTC": 3.0}), FUNDING, PRICES) == list(
        plan_hedges([], spot(binance={"BTC": 3.0}), FUNDING, PRICES).orders
    )


def test_protective_stop_is_reduce_only_on_the_closing_side():
    long_stop = protective_stop(pos("binance", BTC, "long", 1.5, mark=60_000.0, liq=40_000.0), 5.0)
    assert (long_stop.side, long_stop.type, long_stop.reduce_only, long_stop.amount) == ("sell", "stop_market", True, 1.5)
    assert long_stop.stop_price == pytest.approx(57_000.0)
    short_stop = protective_stop(pos("okx", BTC, "short", 2.0, mark=60_000.0, liq=80_000.0), 5.0)
    assert (short_stop.side, short_stop.reduce_only) == ("buy", True)
    assert short_stop.stop_price == pytest.approx(63_000.0)


def test_protective_stop_moves_inside_the_liquidation_price():
    stop = protective_stop(pos("binance", BTC, "long", 1.0, mark=60_000.0, liq=58_000.0), 10.0)
    assert stop.stop_price == pytest.approx(58_000.0 * 1.005)
    assert "inside liquidation" in stop.reason
    stop = protective_stop(pos("okx", BTC, "short", 1.0, mark=60_000.0, liq=61_000.0), 10.0)
    assert stop.stop_price == pytest.approx(61_000.0 * 0.995)


@pytest.mark.parametrize("distance", [0, -1, 100, 150])
def test_protective_stop_rejects_nonsense_distances(distance):
    with pytest.raises(ValueError):
        protective_stop(pos("binance", BTC, "long", 1.0), distance)


def test_orders_validate_themselves():
    with pytest.raises(ValueError):
        HedgeOrder(venue="x", symbol=BTC, side="buy", amount=0)
    with pytest.raises(ValueError):
        HedgeOrder(venue="x", symbol=BTC, side="buy", amount=1, type="stop_market")


def test_no_protective_stop_for_an_empty_position():
    with pytest.raises(ValueError, match="no stop for an empty position on binance BTC/USDT:USDT"):
        protective_stop(pos("binance", BTC, "long", 0.0, liq=40_000.0), 5.0)


@pytest.mark.parametrize("bad", [0.0, -60_000.0, float("inf"), float("nan")])
def test_a_bad_reference_price_leaves_the_asset_unpriced_and_unhedged(bad):
    plan = plan_hedges([], spot(binance={"BTC": 2.0}), FUNDING, {"BTC": bad})
    assert plan.delta("BTC").status == "unpriced" and plan.delta("BTC").price_usd is None
    assert plan.orders == ()


def test_policy_caps_must_be_positive():
    with pytest.raises(ValueError, match="max_notional_per_market_usd must be > 0"):
        HedgePolicy(max_notional_per_market_usd=0)
    assert HedgePolicy(max_notional_per_market_usd=0.5).max_notional_per_market_usd == 0.5
    with pytest.raises(ValueError, match="must be >= 0"):
        HedgePolicy(min_notional_usd=-1)


def test_equal_funding_prefers_the_market_that_can_reduce_a_position_over_the_name_order():
    tied = [fr("alpha", BTC, 0.0001), fr("beta", BTC, 0.0001)]
    plan = plan_hedges([pos("beta", BTC, "long", 0.5)], spot(kraken={"BTC": 2.5}), tied, PRICES)
    # 3 BTC too long: beta closes its 0.5 long first (reduce-only), the rest goes there too.
    assert [(o.venue, o.amount, o.reduce_only) for o in plan.orders] == [("beta", 0.5, True), ("beta", 2.5, False)]


@pytest.mark.parametrize("side, stop_side_mark, liq, clamped_to", [
    ("long", 60_000.0, 58_000.0, 58_000.0 * 1.005),  # 3 % below the mark is 58,200: inside the 0.5 % band (58,290)
    ("short", 60_000.0, 62_000.0, 62_000.0 * 0.995),  # 3 % above is 61,800: inside the band (61,690)
])
def test_a_stop_inside_the_liquidation_buffer_is_moved_out_of_it(side, stop_side_mark, liq, clamped_to):
    stop = protective_stop(pos("binance", BTC, side, 1.0, mark=stop_side_mark, liq=liq), 3.0)
    assert stop.stop_price == pytest.approx(clamped_to) and "moved inside liquidation" in stop.reason
