"""Turn a `MarketSnapshot` into `AssetObservation`s with the metadata a person wants to read.

Per venue: a balances table (asset, free, used, total, price, USD value) with
USD totals, and a positions table (symbol, side, size, entry, mark, liquidation
price and distance, uPnL, notional). For all venues: funding rates as
published and normalised to 8 h, with APR, and the best venue per base asset
for each side (compared as `plan_hedges` does, by `defs/hedging/legs.best_markets`).
Charts are optional per call (they are the heavy part).

Every observation carries `dagster/last_updated_timestamp` (when the venue
answered) and a `DataVersion` hashed from its content, so an unchanged
balance sheet keeps its version across observations.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Callable

from dagster import (
    AssetKey,
    AssetObservation,
    DataVersion,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
)

from arb_orchestration.defs.hedging.legs import best_markets, rate_rows
from arb_orchestration.defs.market_data import plots
from arb_orchestration.defs.market_data.keys import FUNDING_RATES_KEY, balances_key, positions_key
from arb_orchestration.defs.market_data.snapshot import MarketSnapshot
from arb_orchestration.domain.funding import apr, normalised, to_bps
from arb_orchestration.domain.hedging import base_asset

LAST_UPDATED = "dagster/last_updated_timestamp"
# Dagster reads an observation's data version from this tag (AssetObservation has no argument for it).
DATA_VERSION_TAG = "dagster/data_version"

BALANCES_SCHEMA = TableSchema(
    columns=[
        TableColumn("asset", "string"),
        TableColumn("free", "float"),
        TableColumn("used", "float"),
        TableColumn("total", "float"),
        TableColumn("price_usd", "float", description="empty when nothing prices the asset"),
        TableColumn("usd_value", "float"),
    ]
)
POSITIONS_SCHEMA = TableSchema(
    columns=[
        TableColumn("symbol", "string"),
        TableColumn("side", "string"),
        TableColumn("size", "float", description="base units"),
        TableColumn("entry_price", "float"),
        TableColumn("mark_price", "float"),
        TableColumn("liquidation_price", "float"),
        TableColumn(
            "liq_distance_pct", "float",
            description="how far the mark may move against the position before liquidation, % of mark; "
            "negative: already past it",
        ),
        TableColumn("unrealized_pnl", "float"),
        TableColumn("notional_usd", "float"),
    ]
)
FUNDING_SCHEMA = TableSchema(
    columns=[
        TableColumn("venue", "string"),
        TableColumn("symbol", "string"),
        TableColumn("rate_bps", "float", description="as published, per the venue's own interval"),
        TableColumn("interval_hours", "float"),
        TableColumn("rate_8h_bps", "float", description="normalised to 8 h"),
        TableColumn("apr_pct", "float", description="simple annualised, percent"),
        TableColumn("next_funding_time", "string"),
        TableColumn("mark_price", "float"),
    ]
)
BEST_VENUE_SCHEMA = TableSchema(
    columns=[
        TableColumn("asset", "string", description="base asset: every perp on it is compared, whatever it settles in"),
        TableColumn("short_on", "string", description="highest 8 h rate: shorts collect it"),
        TableColumn("short_symbol", "string"),
        TableColumn("short_rate_8h_bps", "float"),
        TableColumn("long_on", "string", description="lowest 8 h rate"),
        TableColumn("long_symbol", "string"),
        TableColumn("long_rate_8h_bps", "float"),
        TableColumn("spread_8h_bps", "float"),
        TableColumn(
            "mixed_settle", "bool",
            description="the two sides settle in different assets (e.g. USDT and USDC): the pair also carries their basis",
        ),
    ]
)


def _r(value: float | None, digits: int = 8) -> float | None:
    # + 0.0 turns -0.0 (a tiny negative residual rounded away) into 0.0: the UI showed "-0".
    return None if value is None else round(float(value), digits) + 0.0


def _version(payload: object) -> DataVersion:
    canonical = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return DataVersion(hashlib.sha256(canonical.encode()).hexdigest()[:16])


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _label(symbol: str, symbols) -> str:
    """The base asset ("BTC"), or the whole symbol when another listed perp shares that base
    (BTC/USDT:USDT and BTC/USDC:USDC): two chart groups or spread series must not share one name."""
    base = base_asset(symbol)
    return base if sum(1 for s in symbols if base_asset(s) == base) == 1 else symbol


def balances_observation(snapshot: MarketSnapshot, venue: str, prices: dict[str, float], *, with_plot: bool):
    state = snapshot.states[venue]
    rows, usd_by_asset, unpriced = [], {}, []
    total_usd = free_usd = 0.0
    for asset, balance in state.balances.items():
        price = snapshot.price_on(venue, asset, prices)
        usd = None if price is None else balance.total * price
        if price is None:
            unpriced.append(asset)
        else:
            total_usd += usd
            free_usd += balance.free * price
            if usd:  # the chart skips empty balances (a "0" bar per unused asset); the table keeps them
                usd_by_asset[asset] = usd
        rows.append(
            {
                "asset": asset,
                "free": _r(balance.free),
                "used": _r(balance.used),
                "total": _r(balance.total),
                "price_usd": _r(price, 6),
                "usd_value": _r(usd, 2),
            }
        )
    rows.sort(key=lambda row: -(row["usd_value"] or 0.0))
    metadata = {
        "venue": venue,
        "balances": MetadataValue.table(records=[TableRecord(row) for row in rows], schema=BALANCES_SCHEMA),
        "total_usd": MetadataValue.float(round(total_usd, 2)),
        "free_usd": MetadataValue.float(round(free_usd, 2)),
        "asset_count": len(rows),
        LAST_UPDATED: MetadataValue.timestamp(state.fetched_at),
    }
    if unpriced:
        metadata["unpriced_assets"] = ", ".join(sorted(unpriced))
    if with_plot and usd_by_asset:
        metadata["chart"] = plots.venue_balances_chart(venue, usd_by_asset)
    version = _version({a: [b.free, b.used, b.total] for a, b in sorted(state.balances.items())})
    return AssetObservation(asset_key=balances_key(venue), metadata=metadata, tags={DATA_VERSION_TAG: version.value})


def positions_observation(snapshot: MarketSnapshot, venue: str, *, with_plot: bool = False):
    del with_plot  # a table reads better than a chart for a handful of positions
    state = snapshot.states[venue]
    rows = []
    gross = net = upnl = 0.0
    for p in sorted(state.positions, key=lambda p: (p.symbol, p.side)):
        distance = None
        if p.liquidation_price and p.mark_price:
            # Signed: room left before liquidation; negative once the mark is past it (abs() hid that).
            room = p.mark_price - p.liquidation_price if p.side == "long" else p.liquidation_price - p.mark_price
            distance = room / p.mark_price * 100
        rows.append(
            {
                "symbol": p.symbol,
                "side": p.side,
                "size": _r(p.size),
                "entry_price": _r(p.entry_price, 6),
                "mark_price": _r(p.mark_price, 6),
                "liquidation_price": _r(p.liquidation_price, 6),
                "liq_distance_pct": _r(distance, 3),
                "unrealized_pnl": _r(p.unrealized_pnl, 2),
                "notional_usd": _r(p.notional, 2),
            }
        )
        gross += p.notional
        net += p.notional if p.side == "long" else -p.notional
        upnl += p.unrealized_pnl
    closest = min((row["liq_distance_pct"] for row in rows if row["liq_distance_pct"] is not None), default=None)
    metadata = {
        "venue": venue,
        "positions": MetadataValue.table(records=[TableRecord(row) for row in rows], schema=POSITIONS_SCHEMA),
        "position_count": len(rows),
        "gross_notional_usd": MetadataValue.float(round(gross, 2)),
        "net_notional_usd": MetadataValue.float(round(net, 2)),
        "unrealized_pnl_usd": MetadataValue.float(round(upnl, 2)),
        LAST_UPDATED: MetadataValue.timestamp(state.fetched_at),
    }
    if closest is not None:
        metadata["closest_liquidation_pct"] = MetadataValue.float(closest)
    # Sizes and sides only: marks move every tick, the book does not.
    version = _version(sorted((p.symbol, p.side, p.size) for p in state.positions))
    return AssetObservation(asset_key=positions_key(venue), metadata=metadata, tags={DATA_VERSION_TAG: version.value})


def funding_observation(snapshot: MarketSnapshot, *, with_plot: bool, all_venues: list[str] | None = None):
    """Funding rates of `all_venues` (default: the snapshot's); None unless every one answered.

    `funding_rates` is one asset covering every venue: a partial picture is not observed.
    """
    required = set(snapshot.venues if all_venues is None else all_venues)
    if snapshot.errors or not required <= set(snapshot.states):
        return None
    rates = sorted(snapshot.funding_rates(), key=lambda r: (r.symbol, r.venue))
    rows = [
        {
            "venue": r.venue,
            "symbol": r.symbol,
            "rate_bps": _r(to_bps(r.rate), 4),
            "interval_hours": r.interval_hours,
            "rate_8h_bps": _r(to_bps(normalised(r)), 4),
            "apr_pct": _r(apr(r.rate, r.interval_hours) * 100, 3),
            "next_funding_time": _iso(r.next_funding_time),
            "mark_price": _r(r.mark_price, 6),
        }
        for r in rates
    ]
    by_symbol: dict[str, list[tuple[float, str]]] = {}
    for r in rates:
        by_symbol.setdefault(r.symbol, []).append((to_bps(normalised(r)), r.venue))
    # Per base asset, as plan_hedges and the hedge summary compare markets (one function for both).
    best_rows = [
        {
            "asset": asset,
            "short_on": b["short_venue"],
            "short_symbol": b["short_symbol"],
            "short_rate_8h_bps": _r(b["short_bps"], 4),
            "long_on": b["long_venue"],
            "long_symbol": b["long_symbol"],
            "long_rate_8h_bps": _r(b["long_bps"], 4),
            "spread_8h_bps": _r(b["short_bps"] - b["long_bps"], 4),
            "mixed_settle": b["mixed_settle"],
        }
        for asset, b in sorted(best_markets(rate_rows(rates)).items())
    ]
    fetched_at = min((s.fetched_at for s in snapshot.states.values()), default=snapshot.started_at)
    metadata = {
        "funding_rates": MetadataValue.table(records=[TableRecord(row) for row in rows], schema=FUNDING_SCHEMA),
        "best_venue_per_asset": MetadataValue.table(
            records=[TableRecord(row) for row in best_rows], schema=BEST_VENUE_SCHEMA
        ),
        "market_count": len(rows),
        "venues": ", ".join(sorted(snapshot.states)),
        LAST_UPDATED: MetadataValue.timestamp(fetched_at),
    }
    # The series stay per symbol (one per listed perp, named by _label), as before: the table's spread is per asset.
    for symbol, entries in sorted(by_symbol.items()):
        spread = max(entries)[0] - min(entries)[0]
        metadata[f"spread_8h_bps/{_label(symbol, by_symbol)}"] = MetadataValue.float(_r(spread, 4))
    if with_plot and rows:
        venues = sorted(snapshot.states)
        symbols = sorted(by_symbol)
        # A venue that does not list a symbol gets no bar (NaN), not a 0 bar that reads as a zero rate.
        series = {
            venue: [next((bps for bps, v in by_symbol[s] if v == venue), math.nan) for s in symbols]
            for venue in venues
        }
        metadata["chart"] = plots.grouped_bars_chart(
            "Funding rate per venue, normalised to 8 h", [_label(s, by_symbol) for s in symbols], series, "bps per 8 h"
        )
    version = _version([(r.venue, r.symbol, r.rate, r.interval_hours) for r in rates])
    return AssetObservation(asset_key=FUNDING_RATES_KEY, metadata=metadata, tags={DATA_VERSION_TAG: version.value})


def market_observations(
    snapshot: MarketSnapshot,
    *,
    with_plot: Callable[[AssetKey], bool] = lambda key: False,
    all_venues: list[str] | None = None,
) -> list[AssetObservation]:
    """Observations for every venue that answered, plus funding_rates when all of `all_venues` did."""
    prices = snapshot.reference_prices()
    events: list[AssetObservation] = []
    for venue in snapshot.venues:
        if venue not in snapshot.states:
            continue
        events.append(balances_observation(snapshot, venue, prices, with_plot=with_plot(balances_key(venue))))
        events.append(positions_observation(snapshot, venue, with_plot=with_plot(positions_key(venue))))
    funding = funding_observation(snapshot, with_plot=with_plot(FUNDING_RATES_KEY), all_venues=all_venues)
    if funding is not None:
        events.append(funding)
    return events
