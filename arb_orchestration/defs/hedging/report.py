"""What the hedge steps show in the UI: metadata tables and the run's markdown summary.

Rows are plain dicts (what the steps record in the saga log); this module only
shapes them into Dagster metadata and markdown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

RATE_COLUMNS = [
    ("venue", "string"), ("symbol", "string"), ("rate_bps", "float"), ("interval_hours", "float"),
    ("rate_8h_bps", "float"), ("apr_pct", "float"),
]
DELTA_COLUMNS = [
    ("asset", "string"), ("spot", "float"), ("perp", "float"), ("net_delta", "float"), ("target", "float"),
    ("drift", "float"), ("drift_usd", "float"), ("band_usd", "float"), ("status", "string"), ("after_plan", "float"),
]
LEG_COLUMNS = [
    ("leg", "int"), ("venue", "string"), ("symbol", "string"), ("side", "string"), ("amount", "float"),
    ("reduce_only", "bool"), ("notional_usd", "float"), ("funding_8h_bps", "float"), ("reason", "string"),
]
FILL_COLUMNS = [
    ("leg", "int"), ("venue", "string"), ("symbol", "string"), ("side", "string"), ("amount", "float"),
    ("filled", "float"), ("average", "float"), ("notional_usd", "float"), ("priced_by", "string"),
    ("status", "string"), ("order_id", "string"), ("client_order_id", "string"),
]
STOP_COLUMNS = [
    ("venue", "string"), ("symbol", "string"), ("action", "string"), ("position", "string"), ("mark", "float"),
    ("stop_price", "float"), ("amount", "float"), ("order_id", "string"), ("cancelled", "string"),
    ("outcome", "string"), ("reason", "string"),
]


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> MetadataValue:
    schema = TableSchema(columns=[TableColumn(name, kind) for name, kind in columns])
    names = [name for name, _ in columns]
    return MetadataValue.table(
        records=[TableRecord({n: _cell(row.get(n)) for n in names}) for row in rows], schema=schema
    )


def _cell(value: Any) -> str | int | float | bool | None:
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def _bps(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def summary_markdown(plan: Mapping[str, Any], placed: Mapping[str, Any], stops: Mapping[str, Any]) -> str:
    """The run in one page: drift per asset, orders and fills, stops, best funding per base asset."""
    lines = ["# funding_rate_hedge" + (" (DRY RUN: nothing placed or cancelled)" if plan.get("dry_run") else "")]
    if plan.get("trigger"):
        lines.append(f"Triggered by {plan['trigger']}.")
    lines += ["", "## Net delta", "", "| asset | net delta | drift (USD) | band (USD) | status | after plan |",
              "|---|---:|---:|---:|---|---:|"]
    for d in plan.get("deltas", []):
        usd = "-" if d.get("drift_usd") is None else f"{d['drift_usd']:,.0f}"
        lines.append(f"| {d['asset']} | {d['net_delta']:+.6g} | {usd} | {d['band_usd']:,.0f} | {d['status']} "
                     f"| {d['after_plan']:+.6g} |")
    legs = placed.get("legs") or []
    lines += ["", f"## Orders ({len(legs)} placed)" if legs else "## Orders", ""]
    if legs:
        lines += ["| leg | venue | symbol | side | filled | avg | reduce-only |", "|---:|---|---|---|---:|---:|---|"]
        for f in legs:
            avg = "-" if f.get("average") is None else f"{f['average']:,.2f}"
            lines.append(f"| {f['leg']} | {f['venue']} | {f['symbol']} | {f['side']} | {f['filled']:g} | {avg} "
                         f"| {'yes' if f.get('reduce_only') else 'no'} |")
    elif plan.get("legs"):
        lines.append(f"{len(plan['legs'])} planned, none placed (dry run).")
    else:
        lines.append("None needed: every asset is inside its band.")
    lines += ["", "## Protective stops", ""]
    if stops.get("skipped"):
        lines.append(f"Not maintained: {stops['skipped']}.")
    else:
        counts = stops.get("counts") or {}
        lines.append(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "no open positions")
        changed = [s for s in stops.get("stops", []) if s.get("action") != "keep" or s.get("cancelled")]
        if changed:
            lines += ["", "| venue | symbol | action | stop | outcome |", "|---|---|---|---:|---|"]
            for s in changed:
                price = "-" if s.get("stop_price") is None else f"{s['stop_price']:,.2f}"
                lines.append(f"| {s['venue']} | {s['symbol']} | {s['action']} | {price} | {s.get('outcome', '')} |")
    best = plan.get("best_markets") or {}
    if best:
        lines += ["", "## Funding (normalised to 8 h)", "", "| asset | best for shorts | best for longs |",
                  "|---|---|---|"]
        for asset, b in sorted(best.items()):
            # Plans from before best_markets grouped by asset have no symbol per side.
            short = " ".join(filter(None, (b["short_venue"], b.get("short_symbol"))))
            long_ = " ".join(filter(None, (b["long_venue"], b.get("long_symbol"))))
            mixed = " (different settle assets)" if b.get("mixed_settle") else ""
            lines.append(f"| {asset} | {short} ({_bps(b['short_bps'])} bp) | {long_} ({_bps(b['long_bps'])} bp){mixed} |")
    return "\n".join(lines)
