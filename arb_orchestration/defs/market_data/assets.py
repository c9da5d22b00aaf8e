"""Market-state assets: observed venue state (AssetSpecs) and the materialised `hedge_targets`.

Balances, positions and funding rates are owned by the venues: Dagster only
observes them, so they are `AssetSpec`s (external assets) that receive
`AssetObservation`s from the observation sensor and job. `hedge_targets` is
computed here, from a fresh fetch of every venue, and depends on all of them,
so the lineage shows which observed state a hedge plan rests on.
"""


from dataclasses import asdict

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetSpec,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from arb_orchestration.defs.market_data import plots
from arb_orchestration.defs.market_data.checks import hedge_drift_outcome
from arb_orchestration.defs.market_data.keys import (
    FUNDING_RATES_KEY,
    GROUP_NAME,
    HEDGE_DRIFT_CHECK,
    HEDGE_TARGETS_KEY,
    balances_key,
    positions_key,
)
from arb_orchestration.defs.market_data.observations import LAST_UPDATED
from arb_orchestration.defs.market_data.policy import MarketDataPolicy
from arb_orchestration.defs.market_data.snapshot import MarketSnapshot, fetch_market_snapshot
from arb_orchestration.domain.hedging import HedgePlan, plan_hedges
from arb_orchestration.resources.venue import ExchangeResource

DELTAS_SCHEMA = TableSchema(
    columns=[
        TableColumn("asset", "string"),
        TableColumn("spot", "float", description="held on venues, base units"),
        TableColumn("perp", "float", description="signed perp sizes, base units"),
        TableColumn("net_delta", "float", description="spot + perp, base units"),
        TableColumn("target", "float", description="base units"),
        TableColumn("drift", "float", description="net_delta - target, base units (positive: too long)"),
        TableColumn("price_usd", "float"),
        TableColumn("drift_usd", "float", description="|drift| x price, USD (unsigned: the sign is in drift)"),
        TableColumn("band_usd", "float", description="no order while drift_usd is within this, USD"),
        TableColumn("status", "string", description="within_tolerance | hedge | partial | no_market | unpriced"),
        TableColumn("after_plan", "float", description="drift left once the planned orders fill, base units"),
    ]
)
ORDERS_SCHEMA = TableSchema(
    columns=[
        TableColumn("venue", "string"),
        TableColumn("symbol", "string"),
        TableColumn("side", "string"),
        TableColumn("amount", "float", description="base units"),
        TableColumn("reduce_only", "bool"),
        TableColumn("notional_usd", "float"),
        TableColumn("funding_8h_bps", "float"),
        TableColumn("reason", "string"),
    ]
)


def build_observable_specs(venues: list[str]) -> list[AssetSpec]:
    specs: list[AssetSpec] = []
    for venue in venues:
        specs.append(
            AssetSpec(
                balances_key(venue),
                group_name=GROUP_NAME,
                description=f"Balances on {venue} (free/used/total per asset, USD value), observed from the venue.",
                metadata={"venue": venue},
                tags={"venue": venue},
                kinds={"exchange"},
            )
        )
        specs.append(
            AssetSpec(
                positions_key(venue),
                group_name=GROUP_NAME,
                description=f"Open perpetual positions on {venue}, observed from the venue.",
                metadata={"venue": venue},
                tags={"venue": venue},
                kinds={"exchange"},
            )
        )
    specs.append(
        AssetSpec(
            FUNDING_RATES_KEY,
            group_name=GROUP_NAME,
            description="Funding rates of every venue's perps, as published and normalised to 8 h, with APR.",
            kinds={"exchange"},
        )
    )
    return specs


def _r(value: float | None, digits: int = 8) -> float | None:
    # + 0.0 turns -0.0 (a tiny negative residual rounded away) into 0.0: the UI showed "-0".
    return None if value is None else round(float(value), digits) + 0.0


def hedge_targets_metadata(
    plan: HedgePlan, snapshot: MarketSnapshot, prices: dict[str, float], *, plots_on: bool = True
) -> dict:
    delta_rows = [
        {
            "asset": d.asset,
            "spot": _r(d.spot),
            "perp": _r(d.perp),
            "net_delta": _r(d.net_delta),
            "target": _r(d.target),
            "drift": _r(d.drift),
            "price_usd": _r(d.price_usd, 6),
            "drift_usd": _r(d.drift_usd, 2),
            "band_usd": _r(d.tolerance_usd, 2),
            "status": d.status,
            "after_plan": _r(d.residual_after_plan),
        }
        for d in plan.deltas
    ]
    order_rows = [
        {
            "venue": o.venue,
            "symbol": o.symbol,
            "side": o.side,
            "amount": o.amount,
            "reduce_only": o.reduce_only,
            "notional_usd": _r(o.notional_usd, 2),
            "funding_8h_bps": _r(None if o.funding_rate_8h is None else o.funding_rate_8h * 1e4, 4),
            "reason": o.reason,
        }
        for o in plan.orders
    ]
    metadata: dict = {
        "net_delta": MetadataValue.table(records=[TableRecord(r) for r in delta_rows], schema=DELTAS_SCHEMA),
        "orders": MetadataValue.table(records=[TableRecord(r) for r in order_rows], schema=ORDERS_SCHEMA),
        "order_count": len(order_rows),
        "gross_order_notional_usd": MetadataValue.float(round(float(sum(o.notional_usd or 0.0 for o in plan.orders)), 2)),
        # Machine-readable copy for the hedge job and scripts.
        "plan": MetadataValue.json(
            {"orders": [asdict(o) for o in plan.orders], "deltas": [asdict(d) for d in plan.deltas]}
        ),
        "venues": ", ".join(sorted(snapshot.states)),
        LAST_UPDATED: MetadataValue.timestamp(min(s.fetched_at for s in snapshot.states.values())),
    }
    for d in plan.deltas:
        metadata[f"net_delta/{d.asset}"] = MetadataValue.float(round(d.net_delta, 8))
    if not plots_on:
        return metadata
    priced = [d for d in plan.deltas if d.price_usd is not None]
    if priced:
        metadata["delta_chart"] = plots.grouped_bars_chart(
            "Exposure per base asset (USD)",
            [d.asset for d in priced],
            {
                "spot": [d.spot * d.price_usd for d in priced],
                "perp": [d.perp * d.price_usd for d in priced],
                "net": [d.net_delta * d.price_usd for d in priced],
            },
            "USD",
        )
    usd_by_venue = {
        venue: {
            asset: b.total * price
            for asset, b in state.balances.items()
            if (price := snapshot.price_on(venue, asset, prices)) is not None and b.total
        }
        for venue, state in sorted(snapshot.states.items())
    }
    if any(usd_by_venue.values()):
        metadata["balances_chart"] = plots.balances_by_venue_chart(usd_by_venue)
    return metadata


def build_hedge_targets(venues: list[str], policy: MarketDataPolicy):
    upstream = [positions_key(v) for v in venues] + [balances_key(v) for v in venues] + [FUNDING_RATES_KEY]

    @asset(
        key=HEDGE_TARGETS_KEY,
        group_name=GROUP_NAME,
        deps=upstream,
        kinds={"python"},
        description=(
            "Per base asset: net delta (spot + signed perps over every venue) against target, and the "
            "perp orders that bring it back inside the band, placed where funding favours the side. "
            "Computed from a fresh fetch of every venue; fails rather than plan from a partial book."
        ),
        check_specs=[
            AssetCheckSpec(
                HEDGE_DRIFT_CHECK,
                asset=HEDGE_TARGETS_KEY,
                description="Every base asset's |net delta - target| is within the hedge band.",
            )
        ],
    )
    def hedge_targets(context: AssetExecutionContext, exchange: ExchangeResource) -> MaterializeResult:
        names = exchange.venue_names()
        if set(names) != set(venues):
            context.log.warning(f"exchange resource venues {sorted(names)} differ from the asset specs {sorted(venues)}")
        snapshot = fetch_market_snapshot(exchange, names, deadline_seconds=policy.fetch_deadline_seconds)
        if not snapshot.complete:
            # A plan without one venue's positions would hedge exposure that is not there.
            raise Failure(
                description="not every venue answered; refusing to plan hedges from a partial book",
                metadata={f"error/{venue}": reason for venue, reason in sorted(snapshot.errors.items())},
            )
        prices = snapshot.reference_prices()
        plan = plan_hedges(
            positions=snapshot.positions(),
            spot_balances=snapshot.balances(),
            funding_rates=snapshot.funding_rates(),
            prices=prices,
            policy=policy.hedge,
        )
        for order in plan.orders:
            context.log.info(
                f"target: {order.side} {order.amount:g} {order.symbol} on {order.venue}"
                f"{' (reduce-only)' if order.reduce_only else ''}: {order.reason}"
            )
        return MaterializeResult(
            metadata=hedge_targets_metadata(plan, snapshot, prices, plots_on=policy.plots),
            check_results=[hedge_drift_outcome(plan, policy).as_result()],
        )

    return hedge_targets
