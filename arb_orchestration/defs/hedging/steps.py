"""The four steps of `funding_rate_hedge` and the compensation of its pivot.

    plan_hedge ─▶ place_hedge_orders (PIVOT; compensation: unwind_hedge_orders) ─▶ maintain_protective_stops ─▶ record_hedge

1. `plan_hedge` observes every venue afresh (positions, balances, funding,
   marks), normalises funding to 8 h and plans the delta orders with
   `domain.hedging.plan_hedges`. The plan is recorded once: every later
   attempt, re-execution and compensation works from the same legs.
2. `place_hedge_orders` places the legs in plan order as market orders, each
   with a client order id derived from the saga id and the leg. After an
   ambiguous timeout the venue client looks the order up by that id before
   any resend; the step then verifies each order by its id. A leg the venue
   refuses fails the step (business error, not retried); a transient error is
   retried by the op's RetryPolicy with the same ids (nothing is placed twice).
   If the step fails for good, the compensation unwinds every *opening* leg
   that filled, newest first, with a reduce-only market order the other way
   (its own idempotency key). Reduce-only legs that filled are kept: they only
   took exposure off, and re-opening it is not what an undo should do; the
   stops they leave oversized are clamped by the venue on trigger.
   The kill switch is read again before every leg (the engine checks it only
   before the first step): trading paused mid-way stops the step and unwinds.
   This step is the pivot: once every leg is placed, the saga only goes forward.
3. `maintain_protective_stops` keeps one exchange-native reduce-only stop on
   every open position (`stops.py`): create, keep, replace (new first, then
   cancel the old), cancel for closed positions, decided from what the venues
   report now. Every venue is worked even when one fails; a refused stop is a
   business error (a position without its safety net needs a human), a
   transient one a retry, and so is a position whose mark price is unusable
   (no stop can be computed for it; reported, the others still worked). While trading is paused the step leaves the venues
   to the emergency stop-loss.
4. `record_hedge` records the normalised rates this hedge ran at for the funding
   sensor (`baselines.py`) and posts the run's markdown summary.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

from dagster import MetadataValue

from arb_orchestration.defs.hedging.config import HedgeConfig
from arb_orchestration.defs.hedging.legs import (
    best_markets,
    describe_leg,
    fill_notional_usd,
    leg_client_order_id,
    leg_record,
    opposite,
    rate_rows,
    stop_client_order_id,
    unwind_client_order_id,
)
from arb_orchestration.defs.hedging.baselines import baseline_points
from arb_orchestration.defs.hedging.report import (
    DELTA_COLUMNS,
    FILL_COLUMNS,
    LEG_COLUMNS,
    RATE_COLUMNS,
    STOP_COLUMNS,
    summary_markdown,
    table,
)
from arb_orchestration.defs.hedging.stops import StopAction, plan_stop_maintenance
from arb_orchestration.defs.market_data.snapshot import fetch_market_snapshot
from arb_orchestration.domain.hedging import HedgeOrder, plan_hedges
from arb_orchestration.domain.models import Order, Position
from arb_orchestration.resources.errors import BusinessError, NotFoundError, TransientError
from arb_orchestration.resources.venue import ExchangeResource, VenueClient
from arb_orchestration.saga import CompensationContext, CompensationDeferred, StepContext

PLAN = "plan_hedge"
PLACE = "place_hedge_orders"
STOPS = "maintain_protective_stops"
RECORD = "record_hedge"

# How many fresh stop ids one (venue, symbol, side, size) may use inside one saga (see _place_stop).
_STOP_GENERATIONS = 3


class IncompleteBook(TransientError):
    """Not every venue answered: a plan (or a stop decision) from part of the book would be wrong. Retried."""


class HedgeLegRejected(BusinessError):
    """A venue refused a leg (margin, limits, reduce-only...): not retried; the filled opening legs are unwound."""


class TradingPausedMidHedge(BusinessError):
    """The kill switch was engaged while legs were being placed: stop, and unwind what was opened."""


class InvalidHedgeConfig(BusinessError):
    """The run config makes no sense (negative band, stop distance out of range...): not retried."""


class StopsNotPlaced(BusinessError):
    """A venue refused a protective stop: that position has no safety net until someone looks."""


class StopsIncomplete(TransientError):
    """Some stop could not be worked for a transient reason; the others were. Retried (same ids)."""


class StopsUncomputable(StopsIncomplete):
    """A position's mark is unusable (<= 0, not finite), so no stop can be computed for it; the others were
    worked. Retried like any incomplete stops step: a re-read may bring a usable mark; the last attempt fails."""


def _config(ctx: Any) -> HedgeConfig:
    return ctx.config if ctx.config is not None else HedgeConfig()


def _r(value: float | None, digits: int = 8) -> float | None:
    return None if value is None else round(float(value), digits)


# --------------------------------------------------------------------------- 1. plan


def plan_hedge(ctx: StepContext, exchange: ExchangeResource, hedge_journal) -> dict:
    """Observe every venue afresh, normalise funding to 8 h, and plan the delta orders (plan_hedges)."""
    cfg = _config(ctx)
    try:
        policy, _ = cfg.policy(), cfg.stop_settings()
    except ValueError as exc:
        raise InvalidHedgeConfig(f"invalid run config: {exc}") from exc
    names = exchange.venue_names()
    unknown = sorted(set(cfg.order_venues) - set(names))
    if unknown:  # a typo would leave no eligible market: no order at all, and a run that looks successful
        raise InvalidHedgeConfig(f"invalid run config: order_venues names venues the exchange does not have: "
                                 f"{', '.join(unknown)} (configured: {', '.join(names)})")
    snapshot = fetch_market_snapshot(exchange, names, deadline_seconds=cfg.fetch_deadline_seconds)
    if not snapshot.complete:
        failed = "; ".join(f"{venue}: {why}" for venue, why in sorted(snapshot.errors.items()))
        raise IncompleteBook(f"not every venue answered, refusing to plan from a partial book ({failed})")
    prices = snapshot.reference_prices()
    plan = plan_hedges(snapshot.positions(), snapshot.balances(), snapshot.funding_rates(), prices, policy)
    rates = rate_rows(snapshot.funding_rates())
    legs = [leg_record(i, order) for i, order in enumerate(plan.orders)]
    deltas = [
        {
            "asset": d.asset, "spot": _r(d.spot), "perp": _r(d.perp), "net_delta": _r(d.net_delta),
            "target": _r(d.target), "drift": _r(d.drift), "price_usd": _r(d.price_usd, 6),
            "drift_usd": _r(d.drift_usd, 2), "band_usd": _r(d.tolerance_usd, 2), "status": d.status,
            "after_plan": _r(d.residual_after_plan),
        }
        for d in plan.deltas
    ]
    trigger = cfg.trigger.describe() if cfg.trigger is not None and cfg.trigger.event_id else None
    if trigger is None and ctx.run_tags.get("arb/event_id"):
        trigger = f"event {ctx.run_tags['arb/event_id']} ({ctx.run_tags.get('arb/source', 'unknown source')})"
    result = {
        "dry_run": cfg.dry_run,
        "venues": names,
        "trigger": trigger,
        "rates": rates,
        "best_markets": best_markets(rates),
        "deltas": deltas,
        "legs": legs,
        "prices": {d["asset"]: d["price_usd"] for d in deltas if d["price_usd"] is not None},
    }
    for leg in legs:
        ctx.log.info(f"planned {describe_leg(leg)}: {leg['reason']}")
    hedge_journal.report(
        ctx.step,
        f"hedge plan: {len(legs)} leg(s); " + ", ".join(f"{d['asset']} {d['status']}" for d in deltas),
        {
            "normalised_funding_rates": table(rates, RATE_COLUMNS),
            "net_delta": table(deltas, DELTA_COLUMNS),
            "planned_legs": table(
                [{**leg, "funding_8h_bps": None if leg["funding_rate_8h"] is None else round(leg["funding_rate_8h"] * 1e4, 4)}
                 for leg in legs],
                LEG_COLUMNS,
            ),
            "legs_planned": len(legs),
            "dry_run": cfg.dry_run,
        },
    )
    return result


# --------------------------------------------------------------------------- 2. place (pivot)


def _paused(ctx: StepContext) -> str | None:
    """The kill switch's reason when engaged (the engine checks it only before the first step)."""
    if ctx.trading_switch is None:
        return None
    state = ctx.trading_switch.get()
    return f"{state.reason}; by {state.changed_by or 'unknown'}" if state.paused else None


def _verify(venue: VenueClient, client_order_id: str, symbol: str, placed: Order) -> Order:
    """The venue's own record of the order just placed, looked up by its client order id."""
    seen = venue.fetch_order_by_client_id(client_order_id, symbol)
    if seen is None:
        raise TransientError(f"{venue.name}: order {client_order_id} was acknowledged but cannot be looked up yet")
    if seen.id != placed.id:
        raise BusinessError(
            f"{venue.name}: client order id {client_order_id} maps to {seen.id}, not to the acknowledged {placed.id}"
        )
    return seen


def _fill_row(leg: dict, cid: str, order: Order) -> dict:
    notional, priced_by = fill_notional_usd(order, leg)
    return {
        "leg": leg["leg"], "venue": leg["venue"], "symbol": leg["symbol"], "side": leg["side"],
        "amount": leg["amount"], "reduce_only": leg["reduce_only"], "filled": order.filled,
        "average": order.average, "status": order.status, "order_id": order.id, "client_order_id": cid,
        "notional_usd": notional, "priced_by": priced_by,
    }


def place_hedge_orders(ctx: StepContext, exchange: ExchangeResource, hedge_journal) -> dict:
    """Place every planned leg (market orders, client order id per saga + leg), verify each fill by its id."""
    plan = ctx.results[PLAN]
    legs = plan["legs"]
    if plan["dry_run"] or not legs:
        why = "dry run" if plan["dry_run"] else "nothing to hedge"
        hedge_journal.report(ctx.step, f"no orders placed: {why}", {"orders_placed": 0, "fills": 0})
        return {"legs": [], "skipped": why}
    fills: list[dict] = []
    for leg in legs:
        pause = _paused(ctx)
        if pause:
            _report_fills(hedge_journal, ctx.step, fills, failed=f"trading paused before {describe_leg(leg)}")
            raise TradingPausedMidHedge(
                f"trading was paused ({pause}) before {describe_leg(leg)}; the filled opening legs are unwound"
            )
        cid = leg_client_order_id(ctx.idempotency_key, leg)
        venue = exchange.venue(leg["venue"])
        ctx.note(placing=leg["leg"], client_order_id=cid)  # durable before the order exists
        try:
            order = venue.create_order(
                leg["symbol"], "market", leg["side"], leg["amount"], client_order_id=cid, reduce_only=leg["reduce_only"]
            )
            order = _verify(venue, cid, leg["symbol"], order)
        except BusinessError as exc:
            _report_fills(hedge_journal, ctx.step, fills, failed=f"{describe_leg(leg)} refused: {exc}")
            done = ", ".join(f"leg {f['leg']}" for f in fills) or "none"
            raise HedgeLegRejected(
                f"{describe_leg(leg)} refused by {leg['venue']}: {exc} (filled before it: {done}); "
                "the filled opening legs are unwound"
            ) from exc
        if order.status != "closed" or not order.filled > 0:
            _report_fills(hedge_journal, ctx.step, fills, failed=f"{describe_leg(leg)} ended {order.status}")
            raise HedgeLegRejected(
                f"{describe_leg(leg)}: order {order.id} ended {order.status} with {order.filled:g} filled"
            )
        row = _fill_row(leg, cid, order)
        ctx.note(filled=leg["leg"], order_id=order.id, amount=order.filled, average=order.average)
        ctx.log.info(f"filled {describe_leg(leg)}: {order.filled:g} @ {order.average} ({order.id}, {cid})")
        fills.append(row)
    _report_fills(hedge_journal, ctx.step, fills)
    return {"legs": fills}


def _report_fills(hedge_journal, step: str, fills: list[dict], failed: str | None = None) -> None:
    message = f"{len(fills)} order(s) placed and filled" + (f"; then {failed}" if failed else "")
    metadata: dict[str, Any] = {
        "orders": table(fills, FILL_COLUMNS),
        "orders_placed": len(fills),
        "fills": sum(1 for f in fills if f["filled"] > 0),
    }
    # A fill without any price is unknown, not 0 USD: a 0 would understate what the hedge moved.
    unpriced = sum(1 for f in fills if f.get("notional_usd") is None)
    priced = round(sum(f["notional_usd"] for f in fills if f.get("notional_usd") is not None), 2)
    if unpriced:
        metadata["filled_notional_usd"] = f"unknown ({unpriced} fill(s) without a price; {priced:,.2f} USD priced)"
        metadata["fills_without_price"] = unpriced
    else:
        metadata["filled_notional_usd"] = priced
    if failed:
        metadata["failed_leg"] = failed
    hedge_journal.report(step, message, metadata)


# How venues say "a reduce-only order would not reduce anything" (see unwind_hedge_orders).
REDUCE_ONLY_REFUSALS = frozenset({"reduce_only_would_increase", "reduce_only_rejected"})

# The compensation's own notes (ctx.note / ctx.compensation_progress), one ledger per unwind order, keyed by its
# client order id. `sending` is written before the order is sent; an outcome after it.
UNWIND_SENDING = "sending"
UNWIND_PLACED = "placed"            # the venue acknowledged the order (its id); the fill is read back next
UNWIND_FILLED = "filled"            # the venue has the order: its id and filled amount (found after a kill, too)
UNWIND_ALREADY_CLOSED = "already_closed"  # refused as reduce-only while a fresh read showed nothing left: not placed
UNWIND_REFUSED = "refused"          # any other refusal (a business error: nothing applied); the compensation failed
UNWIND_NOT_PLACED = "not_placed"    # a `sending` shown never to have reached the venue (see _find_unwind_order)
UNWIND_OUTCOMES = frozenset({UNWIND_PLACED, UNWIND_FILLED, UNWIND_ALREADY_CLOSED, UNWIND_REFUSED, UNWIND_NOT_PLACED})
# An order sent moments ago may not show in a venue's lookups yet (Bybit's history lags; the ccxt client waits 5 s
# before calling an OKX transfer absent): an unwind is judged absent only this long after its `sending` note.
UNWIND_ABSENT_GRACE_SECONDS = 5.0


class UnwindOutcomeUnknown(Exception):
    """An earlier attempt sent an unwind order and died before its outcome was recorded, and the venue no longer
    finds it (by client order id, nor in its order history where it has one). It is NOT sent again: if it
    filled, a second one would close part of a position this hedge did not open. The compensation fails (mailed,
    retried by the sweep, escalated after its attempts) until a person has checked the venue."""


def _exposure_left(venue: Any, leg: dict) -> float:
    """Size still open on the side `leg` opened (a buy opens long, a sell short), from a fresh read."""
    side = "long" if leg["side"] == "buy" else "short"
    return sum(p.size for p in venue.fetch_positions() if p.symbol == leg["symbol"] and p.side == side)


def unwind_ledger(notes: Any) -> dict[str, dict[str, Any]]:
    """Per unwind client order id: its `sending` note and its last outcome note (None while unknown).

    Reads the compensation's notes from every earlier attempt (oldest first). An outcome after the last
    `sending` settles it; a `refused` one means nothing was placed, so a later attempt may send again (and
    notes `sending` again first).
    """
    ledger: dict[str, dict[str, Any]] = {}
    for note in notes or []:
        event, ucid = note.get("unwind"), note.get("client_order_id")
        if not ucid or event is None:
            continue
        entry = ledger.setdefault(str(ucid), {"sending": None, "outcome": None})
        if event == UNWIND_SENDING:
            entry["sending"], entry["outcome"] = dict(note), None
        elif event in UNWIND_OUTCOMES:
            entry["outcome"] = dict(note)
    return ledger


def _find_unwind_order(venue: Any, ucid: str, leg_cid: str, symbol: str,
                       sent_at: float | None = None) -> tuple[Order | None, str, bool]:
    """`_look_for_unwind` without the wait: (order or None, how it was looked for, absent for sure)."""
    found, how, absent, _wait = _look_for_unwind(venue, ucid, leg_cid, symbol, sent_at)
    return found, how, absent


def _look_for_unwind(venue: Any, ucid: str, leg_cid: str, symbol: str,
                     sent_at: float | None = None) -> tuple[Order | None, str, bool, float | None]:
    """The unwind order an earlier attempt sent: (order or None, how it was looked for, absent for sure, seconds
    until a lagging history can tell: None unless that is the only reason it is not shown absent).

    Looked up by its client order id, then in the venue's order history if the client offers one
    (`fetch_orders(symbol)`: every order of the venue, the simulator's client). Absent *for sure* only when
    neither finds it while that history does show the leg's own order, which was sent before the unwind: the
    history reaches back far enough, so the unwind never reached the venue; on a venue whose history lags behind
    its orders (`order_history_lag_seconds`, Bybit), only once the unwind was sent longer ago than that. A venue that merely forgot the id
    (Kraken Futures' lookup covers recent orders only) and has no history on its client never proves absence.
    Looked at no sooner than `UNWIND_ABSENT_GRACE_SECONDS` after the `sending` note (waits the rest).
    """
    if sent_at is not None:
        wait = float(sent_at) + UNWIND_ABSENT_GRACE_SECONDS - time.time()
        if wait > 0:
            time.sleep(min(wait, UNWIND_ABSENT_GRACE_SECONDS))
    found = venue.fetch_order_by_client_id(ucid, symbol)
    if found is not None:
        return found, "by client order id", False, None
    history = getattr(venue, "fetch_orders", None)
    if not callable(history):
        return None, "by client order id (not found); this venue client has no order history", False, None
    orders = list(history(symbol))
    found = next((o for o in orders if o.client_order_id == ucid), None)
    if found is not None:
        return found, "in the order history", False, None
    if any(o.client_order_id == leg_cid for o in orders):
        lag = float(getattr(venue, "order_history_lag_seconds", 0.0) or 0.0)
        if lag > 0 and (sent_at is None or time.time() - float(sent_at) < lag):
            # This venue's history can lag behind its orders (Bybit): too soon for "not in it" to mean "never
            # arrived". A later attempt (the recovery sweep's, a minute or more on) decides.
            ago = "at an unknown time" if sent_at is None else f"{time.time() - float(sent_at):.0f}s ago"
            wait = None if sent_at is None else float(sent_at) + lag - time.time()
            return None, (f"by client order id and in the order history, which shows the leg's own earlier order "
                          f"but not this one; the unwind was sent {ago} and this venue's history may lag up to "
                          f"{lag:g}s behind its orders, so that proves nothing yet"), False, wait
        return None, ("by client order id and in the order history, which shows the leg's own earlier order but "
                      "not this one"), True, None
    return None, ("by client order id and in the order history (in neither, and the history does not reach "
                  "back to the leg's own order)"), False, None


def _noted_fill(ctx: CompensationContext, leg: dict, cid: str) -> Order | None:
    """The leg's fill as `place_hedge_orders` noted it (`filled=<leg>`), for a venue that no longer finds the
    leg by its client order id (Kraken Futures: recent orders only): without it the leg would read as never
    placed and stay open, unhedged."""
    note = next((p for p in reversed(list(ctx.progress or [])) if p.get("filled") == leg["leg"]), None)
    if note is None or not float(note.get("amount") or 0) > 0:
        return None
    ctx.log.warning(f"{describe_leg(leg)}: {leg['venue']} no longer finds order {cid}; unwinding the fill the step "
                    f"noted ({note.get('amount')} as order {note.get('order_id')})")
    return Order(id=str(note.get("order_id")), client_order_id=cid, venue=leg["venue"], symbol=leg["symbol"],
                 type="market", side=leg["side"], amount=float(leg["amount"]), filled=float(note["amount"]),
                 average=note.get("average"), status="closed", reduce_only=bool(leg["reduce_only"]))


def _unwind_row(leg: dict, ucid: str, order_id: Any, side: Any, filled: Any, average: Any, **extra: Any) -> dict:
    return {"leg": leg["leg"], "venue": leg["venue"], "symbol": leg["symbol"], "side": side, "amount": filled,
            "average": average, "order_id": order_id, "client_order_id": ucid, **extra}


def unwind_hedge_orders(ctx: CompensationContext, exchange: ExchangeResource) -> dict:
    """Undo the step: unwind each filled opening leg (newest first) with a reduce-only order the other way.

    Works from the recorded plan and looks every leg up by its client order id,
    so it is right whether the step finished, failed mid-way or never ran.

    Every unwind order is noted before it is sent (`sending`: client order id, venue, symbol, side, amount) and
    its outcome after (`filled` with order id and amount; `already_closed`; `refused`). A rerun of this
    compensation (its actor died, recovery compensates again) never sends an unwind twice, even on a venue that
    forgot the client order id or with the client's lookup off: an unwind with a recorded outcome is reported
    from the notes without any request; one noted as `sending` with no outcome is looked up (by client order id,
    then in the order history): found, it is recorded; shown absent (`_find_unwind_order`: the history reaches
    back to the leg's own order and lacks the unwind), it is sent (`not_placed`, then `sending` again);
    otherwise it is not resent and the compensation fails naming it (`UnwindOutcomeUnknown`), after the other
    legs were worked. The one exception: when only the venue's lagging order history keeps it from telling (Bybit:
    the history shows the leg's own order, and the unwind was sent less than `order_history_lag_seconds` ago), the
    compensation defers (`CompensationDeferred`: no failure recorded, nobody mailed) and a later sweep tick decides.
    """
    plan = ctx.results.get(PLAN) or {}
    ledger = unwind_ledger(ctx.compensation_progress)
    unwound, kept, untouched, unknown = [], [], [], []
    deferred: list[tuple[float, str]] = []  # (seconds until it can be told, what) for lagging order histories
    for leg in reversed(plan.get("legs", [])):
        ucid = unwind_client_order_id(ctx.idempotency_key, leg)
        earlier = ledger.get(ucid)
        outcome = earlier["outcome"] if earlier else None
        if outcome is not None and outcome["unwind"] == UNWIND_FILLED:
            unwound.append(_unwind_row(leg, ucid, outcome.get("order_id"), outcome.get("side"), outcome.get("filled"),
                                       outcome.get("average"), earlier_attempt=True))
            continue
        if outcome is not None and outcome["unwind"] == UNWIND_ALREADY_CLOSED:
            untouched.append({"leg": leg["leg"], "why": outcome.get("why", "position already closed"),
                              "earlier_attempt": True})
            continue
        venue = exchange.venue(leg["venue"])
        if earlier is not None and earlier["sending"] is not None and outcome is not None \
                and outcome["unwind"] == UNWIND_PLACED:
            # Acknowledged, but the attempt ended before its fill was read back: read it now, never resend.
            found, how, _ = _find_unwind_order(venue, ucid, leg_client_order_id(ctx.idempotency_key, leg), leg["symbol"])
            if found is None:
                ctx.log.warning(f"unwind of {describe_leg(leg)}: order {outcome.get('order_id')} ({ucid}) was "
                                f"acknowledged by {leg['venue']} but is no longer found ({how}); reported as "
                                "acknowledged, not sent again")
                unwound.append(_unwind_row(leg, ucid, outcome.get("order_id"), outcome.get("side"),
                                           outcome.get("filled"), outcome.get("average"), earlier_attempt=True,
                                           status=f"acknowledged ({outcome.get('status')}); fill not read back"))
                continue
            ctx.note(unwind=UNWIND_FILLED, leg=leg["leg"], client_order_id=ucid, venue=leg["venue"],
                     symbol=leg["symbol"], side=found.side, order_id=found.id, filled=found.filled,
                     average=found.average, status=found.status, resolved=how)
            unwound.append(_unwind_row(leg, ucid, found.id, found.side, found.filled, found.average,
                                       earlier_attempt=True, status=found.status))
            continue
        if earlier is not None and earlier["sending"] is not None and outcome is None:
            # Sent by an attempt that died before its outcome was recorded: resolve it, never resend it blindly.
            sent = earlier["sending"]
            found, how, absent, wait = _look_for_unwind(venue, ucid, leg_client_order_id(ctx.idempotency_key, leg),
                                                        leg["symbol"], sent.get("sent_at"))
            if found is not None:
                ctx.note(unwind=UNWIND_FILLED, leg=leg["leg"], client_order_id=ucid, venue=leg["venue"],
                         symbol=leg["symbol"], side=found.side, order_id=found.id, filled=found.filled,
                         average=found.average, status=found.status, resolved=how)
                ctx.log.warning(f"unwind of {describe_leg(leg)} sent by an earlier attempt found {how}: {found.side} "
                                f"{found.filled:g} ({found.id}, {found.status}); not sent again")
                unwound.append(_unwind_row(leg, ucid, found.id, found.side, found.filled, found.average,
                                           earlier_attempt=True, status=found.status))
                continue
            if not absent and wait is not None:
                # Only the venue's lagging history keeps it from telling: a later attempt decides, nobody is mailed.
                deferred.append((max(wait, 0.0), f"unwind of {describe_leg(leg)}: order {ucid} not found yet ({how})"))
                continue
            if not absent:
                message = (f"unwind of {describe_leg(leg)}: order {ucid} ({sent.get('side')} {sent.get('amount')} "
                           f"{leg['symbol']} reduce-only on {leg['venue']}) was sent by an earlier attempt whose "
                           f"outcome was never recorded, and {leg['venue']} cannot say what became of it (looked "
                           f"up {how}). NOT sent again: if it filled, a second one would close a position this "
                           f"hedge did not open. Check {leg['venue']} for client order id {ucid}")
                ctx.log.error(message)
                unknown.append(message)
                continue
            # Shown never to have reached the venue: what follows is its first send (noted `sending` again).
            ctx.note(unwind=UNWIND_NOT_PLACED, leg=leg["leg"], client_order_id=ucid, resolved=how)
            ctx.log.warning(f"unwind of {describe_leg(leg)} sent by an earlier attempt never reached "
                            f"{leg['venue']} (looked up {how}); sending it now")
        cid = leg_client_order_id(ctx.idempotency_key, leg)
        order = venue.fetch_order_by_client_id(cid, leg["symbol"])
        if order is None:
            order = _noted_fill(ctx, leg, cid)  # the venue forgot the leg's id, but the step noted its fill
        if order is None or not order.filled > 0:
            untouched.append({"leg": leg["leg"], "why": "never placed" if order is None else f"{order.status}, nothing filled"})
            continue
        if leg["reduce_only"]:
            kept.append({"leg": leg["leg"], "filled": order.filled, "why": "reduce-only: it only took exposure off"})
            continue
        side, amount = opposite(leg["side"]), order.filled
        ctx.note(unwind=UNWIND_SENDING, leg=leg["leg"], client_order_id=ucid, venue=leg["venue"],
                 symbol=leg["symbol"], side=side, amount=amount, sent_at=time.time())  # durable before the order exists
        try:
            undo = venue.create_order(leg["symbol"], "market", side, amount, client_order_id=ucid, reduce_only=True)
        except BusinessError as exc:
            # The venue refused the reduce-only order. Believe "already closed" (a stop fired, someone
            # closed it) only when a fresh read shows nothing left on the side the leg opened: venues
            # word this refusal differently (the simulator: reduce_only_would_increase; Binance -2022
            # through ccxt: reduce_only_rejected), and any other refusal must stay loud.
            if exc.code not in REDUCE_ONLY_REFUSALS or _exposure_left(venue, leg) > 0:
                ctx.note(unwind=UNWIND_REFUSED, leg=leg["leg"], client_order_id=ucid, code=exc.code,
                         error=f"{type(exc).__name__}: {exc}")
                raise
            why = f"position already closed ({exc})"
            ctx.note(unwind=UNWIND_ALREADY_CLOSED, leg=leg["leg"], client_order_id=ucid, why=why)
            untouched.append({"leg": leg["leg"], "why": why})
            continue
        # Any other error (ambiguous, transient after retries) leaves the `sending` note without an outcome:
        # the next attempt looks the order up and never resends it blindly.
        ctx.note(unwind=UNWIND_PLACED, leg=leg["leg"], client_order_id=ucid, venue=leg["venue"],
                 symbol=leg["symbol"], side=undo.side, order_id=undo.id, filled=undo.filled, average=undo.average,
                 status=undo.status)
        undo = _verify(venue, ucid, leg["symbol"], undo)
        ctx.note(unwind=UNWIND_FILLED, leg=leg["leg"], client_order_id=ucid, venue=leg["venue"], symbol=leg["symbol"],
                 side=undo.side, order_id=undo.id, filled=undo.filled, average=undo.average, status=undo.status)
        ctx.log.warning(
            f"unwound {describe_leg(leg)}: {undo.side} {undo.filled:g} reduce-only @ {undo.average} ({undo.id}, {ucid})"
        )
        unwound.append(_unwind_row(leg, ucid, undo.id, undo.side, undo.filled, undo.average))
    if unknown:
        raise UnwindOutcomeUnknown(
            f"{len(unknown)} unwind order(s) with an unknown outcome, not resent (the other legs were worked: "
            f"{len(unwound)} unwound, {len(kept)} kept, {len(untouched)} untouched): " + " | ".join(unknown)
        )
    if deferred:
        raise CompensationDeferred(
            f"{len(deferred)} unwind order(s) not in the venue's order history yet, which may lag its orders; looked "
            f"at again once it can tell (the other legs were worked: {len(unwound)} unwound, {len(kept)} kept, "
            f"{len(untouched)} untouched): " + " | ".join(what for _wait, what in deferred),
            retry_after_seconds=max(wait for wait, _what in deferred),
        )
    return {"unwound": unwound, "kept": kept, "untouched": untouched}


# --------------------------------------------------------------------------- 3. stops (forward only)


def _positions_and_stops(exchange: ExchangeResource, names: list[str], deadline: float):
    def fetch(name: str) -> tuple[list[Position], list[Order]]:
        venue = exchange.venue(name)
        return venue.fetch_positions(), venue.fetch_open_orders()

    positions: list[Position] = []
    orders: list[Order] = []
    errors: dict[str, str] = {}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(8, max(1, len(names))), thread_name_prefix="hedge-stops")
    try:
        futures = {pool.submit(fetch, name): name for name in names}
        done, not_done = concurrent.futures.wait(futures, timeout=deadline)
        for future in done:
            exc = future.exception()
            if exc is not None:
                errors[futures[future]] = f"{type(exc).__name__}: {exc}"
            else:
                p, o = future.result()
                positions += p
                orders += o
        for future in not_done:
            errors[futures[future]] = f"no answer within {deadline:g} s"
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return positions, orders, errors


def _place_stop(ctx: StepContext, venue: VenueClient, wanted: HedgeOrder) -> tuple[Order, str]:
    """Create `wanted` and return the open stop with its client order id.

    The id repeats on a retry (the venue returns the first order). If that
    order is no longer open (this saga replaced it earlier, or it fired), the
    next generation's id is used, so the sequence stays deterministic.
    """
    for generation in range(_STOP_GENERATIONS):
        cid = stop_client_order_id(ctx.idempotency_key, wanted, generation)
        order = venue.create_order(
            wanted.symbol, "stop_market", wanted.side, wanted.amount,
            client_order_id=cid, reduce_only=True, stop_price=wanted.stop_price,
        )
        order = _verify(venue, cid, wanted.symbol, order)
        if order.status == "open":
            return order, cid
    raise StopsNotPlaced(f"{venue.name} {wanted.symbol}: no open stop after {_STOP_GENERATIONS} ids")


def _cancel(venue: VenueClient, order: Order) -> str:
    try:
        venue.cancel_order(order.id, order.symbol)
        return f"cancelled {order.id}"
    except NotFoundError:
        return f"{order.id} already gone"
    except BusinessError as exc:
        if exc.code == "order_not_open":
            return f"{order.id} no longer open"
        raise


def _apply(ctx: StepContext, venue: VenueClient, action: StopAction) -> dict:
    row = {
        "venue": action.venue, "symbol": action.symbol, "action": action.kind, "reason": action.reason,
        "position": f"{action.position.side} {action.position.size:g}" if action.position else "none",
        "mark": action.position.mark_price if action.position else None,
    }
    outcome = []
    if action.kind == "keep":
        assert action.existing is not None
        row.update(stop_price=action.existing.stop_price, amount=action.existing.amount, order_id=action.existing.id)
        outcome.append("kept")
    if action.kind in ("create", "replace"):
        assert action.wanted is not None
        order, cid = _place_stop(ctx, venue, action.wanted)
        row.update(stop_price=order.stop_price, amount=order.amount, order_id=order.id, client_order_id=cid)
        outcome.append(f"placed {order.id}")
    cancelled = [_cancel(venue, order) for order in action.cancels]
    if action.kind == "cancel":
        row.update(stop_price=action.existing.stop_price if action.existing else None)
    row["cancelled"] = ", ".join(o.id for o in action.cancels)
    row["outcome"] = "; ".join(outcome + cancelled)
    return row


def maintain_protective_stops(ctx: StepContext, exchange: ExchangeResource, hedge_journal) -> dict:
    """Keep one reduce-only stop on every open position: create, keep, replace, cancel (from what venues report)."""
    cfg = _config(ctx)
    if not cfg.maintain_stops:
        hedge_journal.report(ctx.step, "protective stops not maintained (maintain_stops: false)", {"stops_maintained": 0})
        return {"skipped": "maintain_stops is false", "stops": []}
    pause = _paused(ctx)
    if pause:
        # The emergency stop-loss owns the book now: it cancels every order and closes every position.
        hedge_journal.report(ctx.step, f"protective stops left alone: trading is paused ({pause})", {"stops_maintained": 0})
        return {"skipped": f"trading is paused ({pause})", "stops": []}
    names = exchange.venue_names()
    positions, orders, errors = _positions_and_stops(exchange, names, cfg.fetch_deadline_seconds)
    if errors:
        failed = "; ".join(f"{venue}: {why}" for venue, why in sorted(errors.items()))
        raise IncompleteBook(f"cannot see every venue's positions and orders ({failed})")
    actions = plan_stop_maintenance(positions, orders, cfg.stop_settings())
    rows: list[dict] = []
    refused: list[str] = []
    transient: list[str] = []
    problems: list[str] = []
    for action in actions:
        if action.kind == "problem":
            # Nothing is sent for this (venue, symbol); the others are still worked, and the step fails below.
            problems.append(f"{action.venue} {action.symbol}: {action.reason}")
            rows.append({"venue": action.venue, "symbol": action.symbol, "action": action.kind,
                         "reason": action.reason,
                         "position": f"{action.position.side} {action.position.size:g}" if action.position else "none",
                         "mark": action.position.mark_price if action.position else None,
                         "order_id": action.existing.id if action.existing else None,
                         "outcome": "NOT PROTECTED: no stop computed; resting stops left as they are"})
            ctx.log.error(f"stop {action.venue} {action.symbol}: {action.reason}")
            continue
        if cfg.dry_run:
            wanted = action.wanted
            rows.append({"venue": action.venue, "symbol": action.symbol, "action": action.kind, "reason": action.reason,
                         "stop_price": wanted.stop_price if wanted else None, "amount": wanted.amount if wanted else None,
                         "outcome": "dry run: nothing sent" if action.changes_anything else "kept"})
            continue
        try:
            rows.append(_apply(ctx, exchange.venue(action.venue), action))
        except BusinessError as exc:
            refused.append(f"{action.venue} {action.symbol} ({action.kind}): {exc}")
            rows.append({"venue": action.venue, "symbol": action.symbol, "action": action.kind,
                         "reason": action.reason, "outcome": f"REFUSED: {exc}"})
        except TransientError as exc:
            transient.append(f"{action.venue} {action.symbol} ({action.kind}): {exc}")
            rows.append({"venue": action.venue, "symbol": action.symbol, "action": action.kind,
                         "reason": action.reason, "outcome": f"failed (will retry): {exc}"})
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["action"]] = counts.get(row["action"], 0) + 1
    protected = sum(1 for a in actions if a.position is not None and a.kind != "problem")
    for row in rows:
        if row["action"] != "keep" or row.get("cancelled"):
            ctx.log.info(f"stop {row['venue']} {row['symbol']}: {row['action']} — {row.get('outcome')} ({row['reason']})")
    hedge_journal.report(
        ctx.step,
        f"protective stops on {protected} position(s): " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
        {
            "stops": table(rows, STOP_COLUMNS),
            "stops_maintained": protected,
            **{f"stops_{kind}": n for kind, n in sorted(counts.items())},
            **({"refused": "\n".join(refused)} if refused else {}),
            **({"unprotected": "\n".join(problems)} if problems else {}),
        },
    )
    uncomputable = ("; no stop computed for " + "; ".join(problems)) if problems else ""
    if refused:
        raise StopsNotPlaced("protective stop(s) refused: " + "; ".join(refused) + uncomputable)
    if transient:
        raise StopsIncomplete("protective stop(s) not worked yet: " + "; ".join(transient) + uncomputable)
    if problems:
        raise StopsUncomputable("no protective stop computed for " + "; ".join(problems))
    return {"stops": rows, "counts": counts, "positions_protected": protected, "dry_run": cfg.dry_run}


# --------------------------------------------------------------------------- 4. record


def record_hedge(ctx: StepContext, hedge_journal) -> dict:
    """Record the normalised rates this hedge ran at (the funding sensor's baseline) and post the summary."""
    plan, placed, stops = ctx.results[PLAN], ctx.results[PLACE], ctx.results[STOPS]
    points = {} if plan["dry_run"] else baseline_points(plan["rates"], run_id=ctx.run_id, saga_id=ctx.saga_id)
    if points:
        hedge_journal.record_baselines(points)
    summary = summary_markdown(plan, placed, stops)
    hedge_journal.report(
        ctx.step,
        "hedge summary" + (f"; funding baselines recorded for {len(points)} market(s)" if points else ""),
        {"summary": MetadataValue.md(summary), "baselines_recorded": len(points)},
    )
    return {"baselines_recorded": sorted(points), "orders_placed": len(placed.get("legs") or [])}
