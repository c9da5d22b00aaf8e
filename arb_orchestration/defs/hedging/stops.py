"""Which exchange-native protective stops to create, keep, replace or cancel. Pure: no Dagster, no I/O.

Every open perp position carries one reduce-only `stop_market` order on the
venue, for the full size, `distance_pct` % from the mark on the losing side
(`domain.hedging.protective_stop`, moved inside the liquidation price when
that would come first). It is the safety net that fires when nothing of ours
is running. Per (venue, symbol) the rules are:

* no position (or dust) and stops resting → cancel them (the position closed);
* a position and no stop → create one;
* a position and a stop that fits → keep it (the closest fit, if several; the
  others are duplicates and are cancelled);
* a position and stops that do not fit → replace: create the new stop first,
  then cancel the old ones, so the position is never unprotected (both are
  reduce-only: the venue clamps a stop to what is left, so two can never
  over-close);
* a position no stop can be computed for (its mark price is <= 0 or not
  finite) → a `problem`: nothing is sent for that (venue, symbol), its resting
  stops stay as they are, and the step reports it and fails after working the
  others (one bad quote must not leave every other venue's stops unmaintained).

A stop *fits* when it closes the position's side, its size equals the
position's within `size_tolerance_pct` (a size change means a replacement),
and its trigger is no more than `replace_band_pct` percentage points of the mark
further from the mark than a new stop would go (otherwise it is "too far" and
trails the mark). A stop nearer than wanted is kept: the mark moved against the
position, and a protective stop only ever tightens.

Protective stops are recognised as reduce-only `stop_market` orders: the
hedge job is the only writer of those on the desk's accounts (the stop-loss
cancels everything anyway). Deciding from what the venue reports, not from
what an earlier run remembers, is what makes the step idempotent: a retry
finds the stops the first attempt created and keeps them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from arb_orchestration.domain.hedging import HedgeOrder, protective_stop
from arb_orchestration.domain.models import Order, Position

StopActionKind = Literal["keep", "create", "replace", "cancel", "problem"]


@dataclass(frozen=True)
class StopSettings:
    """How far stops sit and how much they may wander before they are replaced."""

    distance_pct: float = 5.0  # % of mark, on the losing side
    replace_band_pct: float = 1.5  # percentage points of mark around the wanted trigger
    size_tolerance_pct: float = 0.1  # % of the position size
    liquidation_buffer_pct: float = 0.5
    dust: float = 1e-9  # base units; a smaller position counts as closed

    def __post_init__(self) -> None:
        if not 0 < self.distance_pct < 100:
            raise ValueError(f"distance_pct must be in (0, 100), got {self.distance_pct!r}")
        if not 0 <= self.replace_band_pct < self.distance_pct:
            raise ValueError("replace_band_pct must be >= 0 and smaller than distance_pct")
        if self.size_tolerance_pct < 0 or self.liquidation_buffer_pct < 0 or self.dust < 0:
            raise ValueError("size_tolerance_pct, liquidation_buffer_pct and dust must be >= 0")


@dataclass(frozen=True)
class StopAction:
    """One decision for one (venue, symbol).

    `keep`: `existing` stays. `create`: place `wanted`. `replace`: place
    `wanted`, then cancel `existing` (and `also_cancel`). `cancel`: cancel
    `existing` (and `also_cancel`). `problem`: no stop can be computed for
    `position` (`reason` says why); nothing is sent, resting stops stay.
    """

    kind: StopActionKind
    venue: str
    symbol: str
    reason: str
    position: Position | None = None
    wanted: HedgeOrder | None = None
    existing: Order | None = None
    also_cancel: tuple[Order, ...] = field(default=())

    @property
    def cancels(self) -> tuple[Order, ...]:
        if self.kind in ("replace", "cancel") and self.existing is not None:
            return (self.existing, *self.also_cancel)
        return self.also_cancel

    @property
    def changes_anything(self) -> bool:
        return self.kind not in ("keep", "problem") or bool(self.also_cancel)


def is_protective_stop(order: Order) -> bool:
    return order.type == "stop_market" and order.reduce_only and order.status == "open"


def _distance_pct(stop_price: float, mark: float) -> float:
    return abs(stop_price - mark) / mark * 100.0


def misfit(stop: Order, wanted: HedgeOrder, position: Position, settings: StopSettings) -> str | None:
    """Why `stop` does not protect `position` as `wanted` would (None: it fits)."""
    if stop.side != wanted.side:
        return f"wrong side ({stop.side} stop on a {position.side} position)"
    tolerance = max(settings.dust, position.size * settings.size_tolerance_pct / 100.0)
    if abs(stop.amount - position.size) > tolerance:
        return f"size changed: stop for {stop.amount:g}, position {position.size:g}"
    if stop.stop_price is None or not math.isfinite(stop.stop_price):
        return "no trigger price"
    mark = position.mark_price
    assert wanted.stop_price is not None
    off = abs(stop.stop_price - wanted.stop_price) / mark * 100.0
    have, want = _distance_pct(stop.stop_price, mark), _distance_pct(wanted.stop_price, mark)
    if off > settings.replace_band_pct and have > want:
        # The mark moved the position's way: the stop trails it (tightens).
        return f"too far: trigger {stop.stop_price:g} is {have:.2f}% from mark {mark:g}, wanted {want:.2f}%"
    # Nearer than wanted means the mark moved against the position: the stop stays where it is.
    # Moving it away would loosen the protection run after run while the position keeps losing.
    return None


def plan_stop_maintenance(
    positions: Iterable[Position], open_orders: Iterable[Order], settings: StopSettings | None = None
) -> list[StopAction]:
    """One action per (venue, symbol) that has a position or a protective stop, sorted by venue and symbol."""
    settings = settings or StopSettings()
    held: dict[tuple[str, str], Position] = {}
    for p in positions:
        if p.size > settings.dust:
            held[(p.venue, p.symbol)] = p
    stops: dict[tuple[str, str], list[Order]] = {}
    for o in open_orders:
        if is_protective_stop(o):
            stops.setdefault((o.venue, o.symbol), []).append(o)

    actions: list[StopAction] = []
    for venue, symbol in sorted(set(held) | set(stops)):
        position = held.get((venue, symbol))
        resting = sorted(stops.get((venue, symbol), []), key=lambda o: o.id)
        if position is None:
            actions.append(
                StopAction("cancel", venue, symbol, "no open position: stop no longer needed",
                           existing=resting[0], also_cancel=tuple(resting[1:]))
            )
            continue
        try:
            wanted = protective_stop(position, settings.distance_pct,
                                     liquidation_buffer_pct=settings.liquidation_buffer_pct)
        except ValueError as exc:
            # Settings are validated in StopSettings and the size is above dust here, so this is the
            # position's own data (a mark <= 0 or not finite). Leave its resting stops alone: one that
            # rests still protects better than none.
            actions.append(StopAction("problem", venue, symbol, f"no stop can be computed: {exc}",
                                      position=position, existing=resting[0] if resting else None))
            continue
        if not resting:
            actions.append(StopAction("create", venue, symbol, f"no stop on the position; {wanted.reason}",
                                      position=position, wanted=wanted))
            continue
        fitting = [s for s in resting if misfit(s, wanted, position, settings) is None]
        if fitting:
            best = min(fitting, key=lambda s: (abs((s.stop_price or 0.0) - (wanted.stop_price or 0.0)), s.id))
            others = tuple(s for s in resting if s is not best)
            reason = "stop fits the position" + (f"; {len(others)} duplicate(s) cancelled" if others else "")
            actions.append(StopAction("keep", venue, symbol, reason, position=position, wanted=wanted,
                                      existing=best, also_cancel=others))
            continue
        first = resting[0]
        actions.append(
            StopAction("replace", venue, symbol, misfit(first, wanted, position, settings) or "does not fit",
                       position=position, wanted=wanted, existing=first, also_cancel=tuple(resting[1:]))
        )
    return actions
