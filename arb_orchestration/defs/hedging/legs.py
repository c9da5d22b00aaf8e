"""Hedge legs, their idempotency keys, and the normalised funding table. Pure: no Dagster, no I/O.

A *leg* is one planned order (`domain.hedging.HedgeOrder`) with its position
in the plan. The plan is recorded once per saga, so `(saga id, step, leg
index)` names a leg for good: every retry, re-execution and compensation of
the saga derives the same client order ids from it.

Keys are 32 hex characters (`saga.keys.derive_key`), within every venue's
client-order-id limit:

* leg order      derive_key(<place step key>, "leg", index, venue, symbol, side)
* its unwind     derive_key(<place step key>, "unwind", index, venue, symbol)
* a stop         derive_key(<stops step key>, "stop", venue, symbol, side, amount, trigger, generation)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from arb_orchestration.domain.funding import DEFAULT_BASIS_HOURS, apr, normalised, to_bps
from arb_orchestration.domain.hedging import HedgeOrder, base_asset, is_perp, settle_asset
from arb_orchestration.domain.models import FundingRate, Order, Side
from arb_orchestration.saga.keys import derive_key


def opposite(side: str) -> Side:
    return "sell" if side == "buy" else "buy"


def leg_record(index: int, order: HedgeOrder) -> dict[str, Any]:
    """A planned order as the plan step records it (JSON)."""
    record = {k: v for k, v in asdict(order).items() if k not in ("type", "stop_price")}
    return {"leg": index, **record}


def leg_client_order_id(step_key: str, leg: Mapping[str, Any]) -> str:
    return derive_key(step_key, "leg", leg["leg"], leg["venue"], leg["symbol"], leg["side"])


def unwind_client_order_id(step_key: str, leg: Mapping[str, Any]) -> str:
    return derive_key(step_key, "unwind", leg["leg"], leg["venue"], leg["symbol"])


def stop_client_order_id(step_key: str, order: HedgeOrder, generation: int = 0) -> str:
    # Size and trigger are part of the key: a resized position or a moved trigger gets a new stop, the
    # same stop a replay. Without the trigger, a stop replaced for "too near/too far" on a retry of the
    # same saga would get the id of the stop it replaces: the venue answers with the old order and the
    # step then cancels it, leaving the position without a stop.
    trigger = "" if order.stop_price is None else f"{order.stop_price:.8f}"
    return derive_key(step_key, "stop", order.venue, order.symbol, order.side, f"{order.amount:.8f}", trigger, generation)


def describe_leg(leg: Mapping[str, Any]) -> str:
    ro = " reduce-only" if leg.get("reduce_only") else ""
    return f"leg {leg['leg']}: {leg['side']} {leg['amount']:g} {leg['symbol']} on {leg['venue']}{ro}"


def fill_notional_usd(order: Order, leg: Mapping[str, Any]) -> tuple[float | None, str]:
    """USD notional of a leg's fill and what priced it; never 0 for a fill without an average.

    The venue's average fill price when it reports one; else the order's own
    price; else the price the leg was planned at (its notional over its amount:
    the reference mark when planned). With none of them it is unknown (None):
    counting such a fill as 0 USD would understate what the hedge moved.
    """
    if order.average:
        return order.filled * order.average, "average"
    if order.price:
        return order.filled * order.price, "order_price"
    notional, amount = leg.get("notional_usd"), leg.get("amount")
    if notional and amount:
        return order.filled * float(notional) / float(amount), "planned_price"
    return None, "unknown"


def rate_rows(rates: Iterable[FundingRate]) -> list[dict[str, Any]]:
    """Every perp's funding as published and normalised to 8 h (the basis `plan_hedges` compares on)."""
    rows = []
    for r in sorted(rates, key=lambda r: (r.symbol, r.venue)):
        if not is_perp(r.symbol):
            continue
        rows.append(
            {
                "venue": r.venue,
                "symbol": r.symbol,
                "rate": r.rate,
                "interval_hours": r.interval_hours,
                "rate_bps": round(to_bps(r.rate), 6),
                "rate_8h": normalised(r, DEFAULT_BASIS_HOURS),
                "rate_8h_bps": round(to_bps(normalised(r, DEFAULT_BASIS_HOURS)), 6),
                "apr_pct": round(apr(r.rate, r.interval_hours) * 100, 4),
                "observed_at": r.observed_at,
            }
        )
    return rows


def best_markets(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per base asset: where a short collects the most (highest 8 h rate) and where a long pays the least.

    Grouped by base asset, as `plan_hedges` groups markets: a BTC hedge may go
    to any BTC perp, USDT- or USDC-margined, so the table compares them all
    and names the symbol chosen on each side. Funding is a fraction of the
    position's notional either way, so the normalised rates compare directly;
    `mixed_settle` says when the two sides settle in different assets (a
    short/long pair across them also carries the USDT/USDC basis, which the
    rates do not show).
    """
    by_asset: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_asset.setdefault(base_asset(row["symbol"]), []).append(row)
    out = {}
    for asset, group in by_asset.items():
        hi = max(group, key=lambda r: (r["rate_8h"], r["venue"], r["symbol"]))
        lo = min(group, key=lambda r: (r["rate_8h"], r["venue"], r["symbol"]))
        settles = sorted({s for s in (settle_asset(r["symbol"]) for r in group) if s})
        out[asset] = {
            "asset": asset,
            "short_venue": hi["venue"],
            "short_symbol": hi["symbol"],
            "short_bps": hi["rate_8h_bps"],
            "long_venue": lo["venue"],
            "long_symbol": lo["symbol"],
            "long_bps": lo["rate_8h_bps"],
            "settles": settles,
            "mixed_settle": settle_asset(hi["symbol"]) != settle_asset(lo["symbol"]),
        }
    return out
