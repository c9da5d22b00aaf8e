"""Liquidation planning for the emergency stop-loss (pure: no Dagster, no I/O).

Which reduce-only market orders close which positions, under which client
order ids, and how to summarise what happened for the risk team. The stop-loss
runner (`defs/stop_loss/liquidator.py`) does the I/O around these functions.

Client order ids are derived from the stop-loss step's idempotency key (itself
derived from the saga id), the venue, the symbol, the position side and an
attempt number. A resubmit after an ambiguous outcome reuses the id, so the
venue returns the first order instead of placing a second; the attempt only
moves on once the previous order is known to be final (filled, cancelled or
refused) and the position is still open. Every round is planned from a fresh
position snapshot and every order is reduce-only, so even a venue that forgets
old ids cannot be pushed past flat.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from arb_orchestration.domain.models import Order, Position, PositionSide, Side

# Positions smaller than this (in base units) count as flat: venues leave dust below their lot size.
DEFAULT_DUST = 1e-9

PositionKey = tuple[str, str, str]  # (venue, symbol, position side)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class CloseOrder(_Model):
    """One reduce-only market order that closes (part of) a position."""

    venue: str
    symbol: str
    side: Side
    amount: float = Field(gt=0)
    client_order_id: str
    position_side: PositionSide
    attempt: int = 0
    type: Literal["market"] = "market"
    reduce_only: Literal[True] = True

    @property
    def key(self) -> PositionKey:
        return (self.venue, self.symbol, self.position_side)


def close_side(position_side: PositionSide) -> Side:
    return "sell" if position_side == "long" else "buy"


def close_order_id(base_key: str, venue: str, symbol: str, position_side: PositionSide, attempt: int) -> str:
    """32 hex chars, stable for the same inputs (fits OKX/Binance/Bybit limits; a UUID for Kraken)."""
    raw = "\x1f".join(("close", base_key, venue, symbol, position_side, str(attempt)))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def position_key(position: Position) -> PositionKey:
    return (position.venue, position.symbol, position.side)


def open_positions(positions: Iterable[Position], dust: float = DEFAULT_DUST) -> list[Position]:
    return [p for p in positions if p.size > dust]


def is_flat(positions: Iterable[Position], dust: float = DEFAULT_DUST) -> bool:
    return not open_positions(positions, dust)


def plan_close_orders(
    positions: Iterable[Position],
    *,
    base_key: str,
    attempts: Mapping[PositionKey, int] | None = None,
    skip: Iterable[PositionKey] = (),
    dust: float = DEFAULT_DUST,
) -> list[CloseOrder]:
    """One reduce-only market order per open position, largest notional first.

    `attempts` holds the attempt number per position (default 0); `skip` the
    positions the runner has given up on (refused too often).
    """
    attempts = attempts or {}
    skipped = set(skip)
    orders = []
    for p in sorted(open_positions(positions, dust), key=lambda p: -p.notional):
        key = position_key(p)
        if key in skipped:
            continue
        attempt = attempts.get(key, 0)
        orders.append(
            CloseOrder(
                venue=p.venue,
                symbol=p.symbol,
                side=close_side(p.side),
                amount=p.size,
                client_order_id=close_order_id(base_key, p.venue, p.symbol, p.side, attempt),
                position_side=p.side,
                attempt=attempt,
            )
        )
    return orders


# ----------------------------------------------------------------------------- reporting


class ClosedPosition(_Model):
    """What the stop-loss sold or bought on one market, and at what average price."""

    venue: str
    symbol: str
    side: Side
    amount: float
    average_price: float | None
    orders: list[str]  # venue order ids


class VenueOutcome(_Model):
    """One venue's liquidation: fills, what is still open after a fresh look, and what went wrong."""

    venue: str
    flat: bool
    orders: list[Order] = []
    remaining: list[Position] = []
    open_orders: list[Order] = []
    canceled_orders: int = 0
    planned: list[CloseOrder] = []  # dry run: what would have been sent
    errors: list[str] = []
    business_errors: list[str] = []  # refusals: retrying will not help
    rounds: int = 0
    first_order_after_seconds: float | None = None

    @property
    def closed(self) -> list[ClosedPosition]:
        return summarize_fills(self.orders)


class LiquidationReport(_Model):
    """The whole stop-loss, as recorded in the saga log and mailed to the risk team."""

    saga_id: str
    dry_run: bool
    reason: str = ""
    venues: list[VenueOutcome]

    @property
    def flat(self) -> bool:
        return all(v.flat for v in self.venues)

    @property
    def only_business_errors(self) -> bool:
        """Every venue left open was refused (not flaky): retrying will not flatten it."""
        stuck = [v for v in self.venues if not v.flat]
        return bool(stuck) and all(v.business_errors and len(v.business_errors) == len(v.errors) for v in stuck)


def with_earlier_attempts(report: LiquidationReport, earlier: Iterable[LiquidationReport]) -> LiquidationReport:
    """`report` with the orders, rounds and cancels of earlier attempts of the same liquidation folded in.

    A retry finds a venue the earlier attempt flattened already flat and sends nothing there: without
    this, the risk mail would not say what was closed on it, nor at what prices. The latest view of an
    order (by venue order id) wins: a retry may have read a partly filled order again after it filled.
    """
    earlier = list(earlier)
    venues = []
    for v in report.venues:
        before = [e for r in earlier for e in r.venues if e.venue == v.venue]
        latest: dict[str, Order] = {}
        for o in [o for e in before for o in e.orders] + list(v.orders):
            latest.pop(o.id, None)
            latest[o.id] = o
        venues.append(v.model_copy(update={
            "orders": list(latest.values()),
            "rounds": v.rounds + sum(e.rounds for e in before),
            "canceled_orders": v.canceled_orders + sum(e.canceled_orders for e in before),
        }))
    return report.model_copy(update={"venues": venues})


def summarize_fills(orders: Iterable[Order]) -> list[ClosedPosition]:
    """Filled amount and volume-weighted average price per (venue, symbol, side)."""
    groups: dict[tuple[str, str, str], list[Order]] = {}
    seen: set[str] = set()
    for o in orders:
        if o.filled <= 0 or o.id in seen:  # a replayed client order id returns the same order
            continue
        seen.add(o.id)
        groups.setdefault((o.venue, o.symbol, o.side), []).append(o)
    closed = []
    for (venue, symbol, side), group in sorted(groups.items()):
        amount = sum(o.filled for o in group)
        priced = [(o.filled, o.average) for o in group if o.average is not None]
        vwap = sum(f * a for f, a in priced) / sum(f for f, _ in priced) if priced else None
        closed.append(ClosedPosition(venue=venue, symbol=symbol, side=side, amount=amount,
                                     average_price=vwap, orders=[o.id for o in group]))
    return closed


def render_report(
    report: LiquidationReport,
    *,
    verification: Mapping[str, tuple[list[Position], list[Order]]] | None = None,
    verification_errors: Mapping[str, str] | None = None,
    dust: float = DEFAULT_DUST,
) -> tuple[str, str]:
    """(subject, body) of the risk team's mail. `verification`: fresh (positions, open orders) per venue.

    `dust`: the run's, the same the caller judges flatness by (a mail must not say otherwise).
    """
    checked = verification is not None or verification_errors is not None
    verification = verification or {}
    verification_errors = verification_errors or {}
    still_open = {
        venue: (open_positions(positions, dust), orders)
        for venue, (positions, orders) in verification.items()
        if open_positions(positions, dust) or orders
    }
    unverified = (
        sorted(set(verification_errors) | ({v.venue for v in report.venues} - set(verification))) if checked else []
    )
    flat = report.flat and not still_open and not unverified
    if report.dry_run:
        subject = f"[stop-loss] DRY RUN: would close {sum(len(v.planned) for v in report.venues)} position(s)"
    elif flat:
        subject = f"[stop-loss] FLAT on {len(report.venues)} venue(s) — saga {report.saga_id}"
    else:
        subject = f"[stop-loss] NOT FLAT — manual action needed — saga {report.saga_id}"

    lines = [f"Emergency stop-loss, saga {report.saga_id}" + (" (dry run: nothing was sent)" if report.dry_run else "")]
    if report.reason:
        lines.append(f"Reason: {report.reason}")
    lines.append("")
    for v in report.venues:
        lines.append(f"== {v.venue}: {'flat' if v.flat else 'NOT FLAT'}"
                     f" ({v.rounds} round(s), {v.canceled_orders} open order(s) cancelled)")
        if report.dry_run:
            for o in v.planned:
                lines.append(f"  would {o.side} {o.amount:g} {o.symbol} (close {o.position_side}, reduce-only market)")
        for c in v.closed:
            price = f"{c.average_price:,.2f}" if c.average_price is not None else "n/a"
            lines.append(f"  closed: {c.side} {c.amount:g} {c.symbol} @ avg {price} (orders {', '.join(c.orders)})")
        for p in v.remaining:
            lines.append(f"  LEFT OPEN: {p.side} {p.size:g} {p.symbol} (mark {p.mark_price:,.2f})")
        for o in v.open_orders:
            lines.append(f"  OPEN ORDER: {o.side} {o.amount:g} {o.symbol} ({o.id})")
        for e in v.errors:
            lines.append(f"  error: {e}")
    if verification or verification_errors:
        lines.append("")
        lines.append("Fresh check after liquidation:")
        for venue in sorted(set(verification) | set(verification_errors)):
            if venue in verification_errors:
                lines.append(f"  {venue}: COULD NOT VERIFY ({verification_errors[venue]})")
            elif venue in still_open:
                positions, orders = still_open[venue]
                held = ", ".join(f"{p.side} {p.size:g} {p.symbol}" for p in positions) or "no positions"
                lines.append(f"  {venue}: STILL OPEN: {held}; {len(orders)} open order(s)")
            else:
                lines.append(f"  {venue}: flat, no open orders")
    if not report.dry_run:
        lines.append("")
        lines.append("Trading and rebalancing are PAUSED (kill switch engaged). "
                     "Run resume_trading_job once the desk has reviewed this.")
    return subject, "\n".join(lines)
