"""What the Dagster UI shows for the market-state assets, where it misled an operator:

- the funding chart drew a 0 bar for a venue that does not list the symbol (reads as a zero rate);
- a venue's balances chart drew a "0" bar for every asset held at zero;
- tables showed "-0" for a residual rounded to nothing;
- a balance-floor breach read "USDT 9500 < 1e+04" (`,.4g`), and the floors table an unrounded free;
- the hedge check's "BTC drift +0.04" had no unit, and the net-delta table's columns had none either.
"""

from __future__ import annotations

import math

from dagster import AssetCheckSeverity

from arb_orchestration.defs.market_data import assets, observations, plots
from arb_orchestration.defs.market_data.checks import balance_floors_outcome, hedge_drift_outcome
from arb_orchestration.defs.market_data.policy import BalanceFloors, MarketDataPolicy
from arb_orchestration.defs.market_data.snapshot import MarketSnapshot, VenueState
from arb_orchestration.domain.hedging import AssetDelta, HedgePlan
from arb_orchestration.domain.models import Balance, FundingRate

BTC, SOL = "BTC/USDT:USDT", "SOL/USDT:USDT"


def venue_state(venue: str, balances: dict[str, float], funding: dict[str, float]) -> VenueState:
    return VenueState(
        venue=venue,
        balances={a: Balance(asset=a, free=v, used=0.0, total=v) for a, v in balances.items()},
        positions=[],
        funding_rates=[FundingRate(venue=venue, symbol=s, rate=r, interval_hours=8.0) for s, r in funding.items()],
        marks={BTC: 60_000.0, SOL: 150.0},
        fetched_at=1_800_000_000.0,
    )


def snapshot() -> MarketSnapshot:
    states = {
        "binance": venue_state("binance", {"USDT": 1000.0, "BTC": 0.0}, {BTC: 0.0001, SOL: 0.0002}),
        "okx": venue_state("okx", {"USDT": 500.0}, {BTC: 0.00005}),  # no SOL perp on okx
    }
    return MarketSnapshot(venues=list(states), states=states, started_at=1_800_000_000.0)


def test_funding_chart_leaves_out_markets_a_venue_does_not_list(monkeypatch):
    drawn = {}
    draw = plots.grouped_bars_chart

    def capture(title, groups, series, ylabel):
        drawn.update(groups=list(groups), series={k: list(v) for k, v in series.items()})
        return draw(title, groups, series, ylabel)  # and a NaN bar must still draw

    monkeypatch.setattr(plots, "grouped_bars_chart", capture)
    event = observations.funding_observation(snapshot(), with_plot=True)
    assert drawn["groups"] == ["BTC", "SOL"]
    okx_btc, okx_sol = drawn["series"]["okx"]
    assert okx_btc == 0.5  # 0.00005 per 8 h = 0.5 bp
    assert math.isnan(okx_sol), "okx lists no SOL perp: no bar, not a zero rate"
    assert drawn["series"]["binance"] == [1.0, 2.0]
    assert event.metadata["chart"].md_str.startswith("![Funding rate per venue")


def test_balances_chart_has_no_bars_for_assets_held_at_zero(monkeypatch):
    drawn = {}
    monkeypatch.setattr(plots, "venue_balances_chart", lambda venue, usd: drawn.setdefault(venue, dict(usd)))
    snap = snapshot()
    event = observations.balances_observation(snap, "binance", snap.reference_prices(), with_plot=True)
    assert drawn["binance"] == {"USDT": 1000.0}
    table_assets = [row.data["asset"] for row in event.metadata["balances"].records]
    assert sorted(table_assets) == ["BTC", "USDT"]  # the table still lists the empty balance


def test_rounding_never_shows_negative_zero():
    for rounder in (assets._r, observations._r):
        value = rounder(-1e-12)
        assert value == 0.0 and math.copysign(1.0, value) == 1.0
        assert rounder(-0.5) == -0.5 and rounder(None) is None


def test_hedge_metadata_table_has_no_negative_zero_and_units_on_every_delta_column():
    delta = AssetDelta(asset="ETH", spot=90.0, perp=-90.45, target=0.0, price_usd=3000.0, tolerance_usd=1000.0,
                       status="hedge", planned=0.45 - 1e-12)
    plan = HedgePlan(orders=[], deltas=[delta])
    metadata = assets.hedge_targets_metadata(plan, snapshot(), {"ETH": 3000.0}, plots_on=False)
    row = metadata["net_delta"].records[0].data
    assert row["after_plan"] == 0.0 and math.copysign(1.0, row["after_plan"]) == 1.0  # was -0.0: "-0"
    columns = {c.name: c.description or "" for c in metadata["net_delta"].schema.columns}
    for name in ("net_delta", "target", "drift", "after_plan"):
        assert "base units" in columns[name], name
    assert "USD" in columns["drift_usd"] and "unsigned" in columns["drift_usd"]


def test_floor_breach_and_warning_read_as_amounts_not_scientific_notation():
    floors = BalanceFloors(default={"USDT": 10_000.0}, per_venue={}, warn_headroom_pct=20.0)
    below = balance_floors_outcome("okx", {"USDT": 9_500.0}, floors)
    assert below.severity == AssetCheckSeverity.ERROR and not below.passed
    assert "USDT 9,500 < 10,000" in below.description
    warn = balance_floors_outcome("okx", {"USDT": 100_000.0 / 9}, floors)
    assert warn.severity == AssetCheckSeverity.WARN
    assert "USDT 11,111 within 20% of 10,000" in warn.description
    assert "e+" not in below.description + warn.description
    free = warn.metadata["floors"].records[0].data["free"]
    assert free == round(100_000.0 / 9, 8)


def test_hedge_drift_check_names_the_unit_of_the_drift():
    delta = AssetDelta(asset="BTC", spot=5.5, perp=-5.46, target=0.0, price_usd=65_000.0, tolerance_usd=1000.0,
                       status="hedge")
    outcome = hedge_drift_outcome(HedgePlan(orders=[], deltas=[delta]), MarketDataPolicy(plots=False))
    assert "BTC drift +0.04 BTC ($2,600, band $1,000, hedge)" in outcome.description
