"""The README's `dagster asset materialize --select hedge_targets` failed after its own stop-loss demo.

Once every venue is flat (and no venue holds the base asset as spot), `plan_hedges` summed
nothing: `sum([])` is the int 0, and `MetadataValue.float(0)` raises ParameterCheckError
("Param "value" is not a float. Got 0 which is type <class 'int'>"), so the asset failed to
materialise exactly when the desk most wants to see its (zero) exposure.
"""

from __future__ import annotations

from arb_orchestration.defs.market_data import assets
from arb_orchestration.defs.market_data.snapshot import MarketSnapshot, VenueState
from arb_orchestration.domain.hedging import HedgePolicy, plan_hedges
from arb_orchestration.domain.models import Balance, FundingRate

BTC = "BTC/USDT:USDT"


def flat_snapshot() -> MarketSnapshot:
    state = VenueState(
        venue="binance",
        balances={"USDT": Balance(asset="USDT", free=1000.0, used=0.0, total=1000.0)},
        positions=[],  # what the stop-loss leaves behind
        funding_rates=[FundingRate(venue="binance", symbol=BTC, rate=0.0001, interval_hours=8.0)],
        marks={BTC: 60_000.0},
        fetched_at=1_800_000_000.0,
    )
    return MarketSnapshot(venues=["binance"], states={"binance": state}, started_at=1_800_000_000.0)


def test_flat_book_gives_float_deltas():
    snap = flat_snapshot()
    plan = plan_hedges(positions=snap.positions(), spot_balances=snap.balances(),
                       funding_rates=snap.funding_rates(), prices=snap.reference_prices(), policy=HedgePolicy())
    assert {d.asset for d in plan.deltas} >= {"BTC", "ETH"}
    for d in plan.deltas:
        assert isinstance(d.spot, float) and isinstance(d.perp, float), d
        assert isinstance(d.net_delta, float) and d.net_delta == 0.0


def test_hedge_targets_metadata_of_a_flat_book_is_built():
    snap = flat_snapshot()
    prices = snap.reference_prices()
    plan = plan_hedges(positions=snap.positions(), spot_balances=snap.balances(),
                       funding_rates=snap.funding_rates(), prices=prices, policy=HedgePolicy())
    metadata = assets.hedge_targets_metadata(plan, snap, prices, plots_on=False)  # raised ParameterCheckError
    assert metadata["net_delta/BTC"].value == 0.0
    assert metadata["order_count"] == 0
