"""The stop-loss runner: every venue in parallel, cancel and close concurrently, retry until flat.

Dagster-free (it takes `VenueClient`s), so it is tested with fake venues and
with the exchange simulator alike. Latency is the point: per venue, the
cancel-all is fired off and the positions are fetched at the same time, and
the reduce-only orders for all of that venue's positions go out concurrently
as soon as the positions are known. Nothing else is read first.

Each venue loops until a fresh position snapshot shows it flat with no open
orders, or its deadline passes: transient errors back off exponentially (full
jitter) and retry with the same client order id; an order known to be final
moves that position to its next attempt id; a position refused too often is
given up on and reported.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from arb_orchestration.domain.liquidation import (
    DEFAULT_DUST,
    CloseOrder,
    LiquidationReport,
    PositionKey,
    VenueOutcome,
    open_positions,
    plan_close_orders,
)
from arb_orchestration.domain.models import Order, Position
from arb_orchestration.resources.errors import BusinessError, TransientError
from arb_orchestration.resources.venue import VenueClient

log = logging.getLogger("arb_orchestration.stop_loss")


@dataclass(frozen=True)
class LiquidationSettings:
    deadline_seconds: float = 120.0
    dust: float = DEFAULT_DUST
    base_delay: float = 0.2
    max_delay: float = 5.0
    max_refusals_per_position: int = 3
    dry_run: bool = False


class _Clock:
    def __init__(self, settings: LiquidationSettings, sleep: Callable[[float], None], rng: random.Random):
        self.start = time.monotonic()
        self.deadline = self.start + settings.deadline_seconds
        self.settings = settings
        self._sleep = sleep
        self._rng = rng

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def backoff(self, failures: int) -> None:
        cap = min(self.settings.max_delay, self.settings.base_delay * (2 ** max(0, failures - 1)))
        self._sleep(min(self._rng.uniform(0, cap), max(0.0, self.deadline - time.monotonic())))


def liquidate_venue(
    client: VenueClient,
    *,
    base_key: str,
    settings: LiquidationSettings,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> VenueOutcome:
    """Cancel everything and close every position on one venue, until flat or out of time."""
    clock = _Clock(settings, sleep, rng or random.Random())
    venue = client.name
    orders: dict[str, Order] = {}  # latest view per client order id
    attempts: dict[PositionKey, int] = {}
    refusals: dict[PositionKey, int] = {}
    errors: list[str] = []
    business: list[str] = []
    canceled = 0
    rounds = 0
    first_order_at: float | None = None
    failures = 0  # consecutive rounds that made no progress

    def note(exc: Exception, what: str) -> None:
        text = f"{what}: {type(exc).__name__}: {exc}"
        errors.append(text)
        if isinstance(exc, BusinessError):
            business.append(text)
        log.warning("stop-loss %s: %s", venue, text)

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"stop-loss-{venue}") as io:
        cancel = None if settings.dry_run else io.submit(client.cancel_all_orders)
        positions: list[Position] | None = None
        open_orders: list[Order] = []
        orders_known = False
        while positions is None:
            try:
                positions = client.fetch_positions()
            except TransientError as exc:
                note(exc, "fetch_positions")
                if clock.expired():
                    break
                failures += 1
                clock.backoff(failures)
            except BusinessError as exc:
                note(exc, "fetch_positions")
                break
        if positions is None:
            _drain(cancel)
            return VenueOutcome(venue=venue, flat=False, errors=errors, business_errors=business)

        if settings.dry_run:
            planned = plan_close_orders(positions, base_key=base_key, dust=settings.dust)
            try:
                open_orders = client.fetch_open_orders()
                orders_known = True
            except Exception as exc:  # dry run: report it, nothing moves either way
                note(exc, "fetch_open_orders")
            return VenueOutcome(
                # Unread orders are unknown, not absent: never claim flat on a guess (as below).
                venue=venue, flat=not planned and not open_orders and orders_known, planned=planned,
                remaining=open_positions(positions, settings.dust), open_orders=open_orders,
                errors=errors, business_errors=business,
            )

        while True:
            gave_up = {k for k, n in refusals.items() if n >= settings.max_refusals_per_position}
            plan = plan_close_orders(positions, base_key=base_key, attempts=attempts, skip=gave_up, dust=settings.dust)
            if plan:
                rounds += 1
                if first_order_at is None:
                    first_order_at = time.monotonic() - clock.start
                progressed = _send_round(client, io, plan, orders, attempts, refusals, note)
            else:
                progressed = True
                # Collect the first cancel-all (it ran alongside the orders), then make sure nothing is left.
                if cancel is not None:
                    try:
                        canceled += len(cancel.result())
                    except Exception as exc:
                        note(exc, "cancel_all_orders")
                    cancel = None
                try:
                    open_orders = client.fetch_open_orders()
                    orders_known = True
                except (TransientError, BusinessError) as exc:
                    note(exc, "fetch_open_orders")
                    orders_known = False  # unknown: never claim flat on a guess
                else:
                    if open_orders:
                        cancel = io.submit(client.cancel_all_orders)
                if orders_known and not open_orders:
                    if not open_positions(positions, settings.dust) or gave_up:
                        break  # flat, or only positions we gave up on remain
            if clock.expired():
                break
            failures = 0 if progressed else failures + 1
            if failures:
                clock.backoff(failures)
            try:
                positions = client.fetch_positions()  # fresh: never trust our own arithmetic
            except (TransientError, BusinessError) as exc:
                note(exc, "fetch_positions")
                if isinstance(exc, BusinessError) or clock.expired():
                    break
                failures += 1
                clock.backoff(failures)
        _drain(cancel)
        _read_back_fills(client, io, orders)

    remaining = open_positions(positions, settings.dust)
    return VenueOutcome(
        venue=venue,
        flat=not remaining and not open_orders and orders_known,
        orders=list(orders.values()),
        remaining=remaining,
        open_orders=open_orders,
        canceled_orders=canceled,
        errors=errors,
        business_errors=business,
        rounds=rounds,
        first_order_after_seconds=first_order_at,
    )


# Business-error codes that refuse every order of the venue's account alike: retrying cannot help.
ACCOUNT_REFUSALS = frozenset({"hedge_mode_unsupported"})


def _send_round(client, io, plan: list[CloseOrder], orders, attempts, refusals, note) -> bool:
    """Send one round of close orders concurrently; True if any order reached a final state."""
    progressed = False
    futures = {
        io.submit(
            client.create_order, o.symbol, "market", o.side, o.amount,
            client_order_id=o.client_order_id, reduce_only=True,
        ): o
        for o in plan
    }
    for future in as_completed(futures):
        o = futures[future]
        try:
            order = future.result()
        except BusinessError as exc:
            if exc.code == "duplicate_client_order_id":
                # An earlier attempt of this saga used the id and the venue no longer finds its order:
                # the id is spent, the position was not refused. Next id; a fresh read sizes it.
                attempts[o.key] = o.attempt + 1
                log.info("stop-loss %s: %s %s id %s already used; moving to the next id",
                         client.name, o.symbol, o.position_side, o.client_order_id)
                progressed = True
                continue
            # Refused (e.g. reduce-only would increase: already flat). That id is spent. A refusal that is
            # about the account, not the order (hedge position mode), is given up on at once: every retry
            # would be refused the same way until an operator changes the setting the message names.
            refusals[o.key] = math.inf if exc.code in ACCOUNT_REFUSALS else refusals.get(o.key, 0) + 1
            attempts[o.key] = o.attempt + 1
            note(exc, f"close {o.symbol} {o.position_side} ({o.client_order_id})")
            progressed = True
        except TransientError as exc:
            # Outcome unknown or not sent: the next round resubmits the *same* id.
            note(exc, f"close {o.symbol} {o.position_side} ({o.client_order_id})")
        else:
            orders[o.client_order_id] = order
            if order.status != "open":
                attempts[o.key] = o.attempt + 1
                progressed = True
    return progressed


def _read_back_fills(client, io, orders: dict[str, Order]) -> None:
    """Replace acknowledgements (OKX/Bybit answer an id, no fill, no status) by the orders as they are now.

    The mail reports fills and average prices from these: an "open, filled 0" acknowledgement of a close
    that did fill would be reported as nothing closed. Best effort, concurrent: a failed read keeps what
    we had (logged); flatness is decided from positions, never from these.
    """
    stale = {cid: o for cid, o in orders.items() if o.status == "open" or (o.filled > 0 and o.average is None)}
    futures = {io.submit(client.fetch_order_by_client_id, cid, o.symbol): cid for cid, o in stale.items()}
    for future in as_completed(futures):
        cid = futures[future]
        try:
            fresh = future.result()
        except Exception as exc:  # reporting only: never let it hide the outcome
            log.warning("stop-loss %s: reading back close %s failed: %s", client.name, cid, exc)
            continue
        if fresh is not None:
            orders[cid] = fresh


def _drain(future) -> None:
    if future is not None:
        try:
            future.result()
        except Exception as exc:  # already reported through the open-orders check
            log.warning("cancel_all_orders: %s", exc)


def liquidate_all(
    venue_names: Sequence[str],
    get_venue: Callable[[str], VenueClient],
    *,
    saga_id: str,
    base_key: str,
    settings: LiquidationSettings,
    reason: str = "",
    while_running: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> LiquidationReport:
    """Liquidate every venue in parallel (one thread each); `while_running` runs once they are dispatched."""
    outcomes: dict[str, VenueOutcome] = {}
    lock = threading.Lock()

    def one(name: str) -> None:
        try:
            outcome = liquidate_venue(get_venue(name), base_key=base_key, settings=settings, sleep=sleep)
        except Exception as exc:  # a bug or an unknown venue must not stop the other venues
            log.exception("stop-loss %s crashed", name)
            text = f"{type(exc).__name__}: {exc}"
            outcome = VenueOutcome(venue=name, flat=False, errors=[text],
                                   business_errors=[text] if isinstance(exc, (BusinessError, LookupError)) else [])
        with lock:
            outcomes[name] = outcome

    with ThreadPoolExecutor(max_workers=max(1, len(venue_names)), thread_name_prefix="stop-loss") as pool:
        futures = [pool.submit(one, name) for name in venue_names]
        if while_running is not None:
            while_running()
        for f in futures:
            f.result()
    return LiquidationReport(
        saga_id=saga_id, dry_run=settings.dry_run, reason=reason,
        venues=[outcomes[name] for name in venue_names],
    )


def observe_all(
    venue_names: Sequence[str], get_venue: Callable[[str], VenueClient]
) -> tuple[dict[str, tuple[list[Position], list[Order]]], dict[str, str]]:
    """Fresh (positions, open orders) per venue, fetched in parallel; errors per venue."""
    seen: dict[str, tuple[list[Position], list[Order]]] = {}
    errors: dict[str, str] = {}

    def one(name: str):
        client = get_venue(name)
        return client.fetch_positions(), client.fetch_open_orders()

    with ThreadPoolExecutor(max_workers=max(1, len(venue_names) * 1)) as pool:
        futures = {pool.submit(one, name): name for name in venue_names}
        for future in as_completed(futures):
            name = futures[future]
            try:
                seen[name] = future.result()
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
    return seen, errors
