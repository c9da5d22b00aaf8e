"""The steps of `auto_rebalance_saga`: actions, compensations and the keys they send.

    plan_rebalance ──▶ prepare_transfers ──▶ commit_transfers (PIVOT) ──▶ await_arrival ──▶ verify_balances ──▶ sweep_to_trading
    release_reservations  cancel_prepared      cancel_uncommitted           (forward only)    (forward only)     (forward only)

The plan has a variable number of legs, the saga a fixed list of steps: each
step loops over the plan's legs (in the planner's executable order) and
records every leg's sub-step in the saga log (`ctx.note`) as soon as it
happened, so a compensation or a recovery run knows exactly what exists.

Idempotency keys are derived from the step's key (saga name + saga id + step)
plus the leg's index and rail, so retries, re-executions and recovery runs of
the same saga send the same keys:

* withdrawal key: `ctx.key("withdraw", index, rail)` of `commit_transfers`;
* Wise customerTransactionId: `ctx.key("wise", index, rail)` of `prepare_transfers`.

Before the pivot every side effect can be undone (an unfunded Wise transfer is
cancelled; a withdrawal is cancellable while `pending`). The pivot commits
withdrawals first, Wise fundings last (irreversible once Wise converts the
funds, often within seconds) — unless funding may need a person (a personal
token: EU/UK SCA), then the Wise legs go first and a refused one is parked until
a person funds it or its deadline passes (`funding.py`). If the pivot fails part
way, its compensation cancels what is still cancellable (a pending withdrawal; a
funded Wise transfer before `funds_converted`, which Wise refunds to the balance)
and reports (and mails) any leg already on its way and any refunded one. After the pivot only forward recovery:
await_arrival / verify_balances / sweep_to_trading retry, then the engine's hook
mails the risk team and the recovery sensor relaunches the saga with the same keys.

`sweep_to_trading` moves what arrived at a destination whose exchange credits
deposits outside the margin account (Binance spot, OKX funding) into its trading
account, at most what this saga's legs credited there (the wallet may hold an
operator's own money); `cancel_uncommitted` does the same at the sources, best
effort, for the top-up `commit_transfers` recorded for a failed or cancelled
withdrawal, and no more.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Mapping

from dagster import Failure, MetadataValue

from arb_orchestration.defs.rebalance.funding import fund_wise_legs, funding_may_need_human, journal_webhook_board
from arb_orchestration.defs.rebalance.journal import ACKNOWLEDGED_IN_FLIGHT, PLANNED_MOVES_TAG, SagaInFlight
from arb_orchestration.defs.rebalance.planning import Proposal, check_config, propose, withdraws_idempotently
from arb_orchestration.defs.rebalance.report import (
    legs_markdown,
    proposal_metadata,
    summary_markdown,
)
from arb_orchestration.domain.rebalance import (
    FIAT_SOURCE,
    PlannedTransfer,
    format_amount,
    wise_funds_first,
    wise_reference,
)
from arb_orchestration.resources.errors import BusinessError, TransientError
from arb_orchestration.resources.wise import (
    CANCELLABLE_STATUSES,
    CANCELLED,
    FAILED_STATUSES,
    FUNDED_STATUSES,
    SENT,
    WAITING,
    Transfer,
    customer_transaction_id_for,
)
from arb_orchestration.resources.wise_webhooks import BoardWatch
from arb_orchestration.saga.claim import ClaimLostError

PLAN = "plan_rebalance"
PREPARE = "prepare_transfers"
COMMIT = "commit_transfers"
AWAIT = "await_arrival"
VERIFY = "verify_balances"
SWEEP = "sweep_to_trading"

GUARDRAIL_METADATA_KEY = "arb/guardrail"
RULE_INFEASIBLE = "plan_infeasible"
RULE_LEGS_IN_FLIGHT = "legs_in_flight"

REFUNDED = "funds_refunded"
# How long a compensation waits, after cancelling a funded Wise transfer, for Wise to refund it
# (`cancelled → funds_refunded`). The simulator refunds at once; Wise states no delay. A transfer
# still `cancelled` at the deadline is not moving either: recorded as refund pending, not in flight.
REFUND_WAIT_SECONDS = 10.0


class InvalidRebalanceConfig(BusinessError):
    """The run config makes no sense (a NaN limit, a percent typed for a fraction, a target for an unknown venue):
    fix it and launch again; not retried."""


# --------------------------------------------------------------------------- helpers


def _legs(plan: Mapping[str, Any] | None) -> list[PlannedTransfer]:
    return [PlannedTransfer.from_dict(t) for t in (plan or {}).get("transfers", [])]


def _skip_reason(plan: Mapping[str, Any]) -> str | None:
    if plan.get("dry_run"):
        return "dry run: nothing moves"
    if not plan.get("transfers"):
        return "nothing to move"
    return None


def _mask(address: str | None) -> str:
    if not address:
        return ""
    return address if len(address) <= 10 else f"{address[:6]}…{address[-4:]}"


def _by_source(legs: list[PlannedTransfer]) -> dict[str, list[PlannedTransfer]]:
    out: dict[str, list[PlannedTransfer]] = {}
    for leg in legs:
        out.setdefault(leg.from_venue, []).append(leg)
    return out


# --------------------------------------------------------------------------- 1. plan


def plan_rebalance(ctx, exchange, wise, rebalance_journal) -> dict[str, Any]:
    """Observe fresh balances, plan the cheapest transfers (exact MILP), check the guardrails.

    Fails (not retried, nothing moved) when the plan is infeasible or breaks a
    guardrail; the Failure's metadata `arb/guardrail` names the rule. The plan
    it records is the reservation the per-day limit counts.

    First of all (before balances are even read): an earlier saga whose legs
    left but were never verified as arrived fails the run (`legs_in_flight`),
    since balances do not show money in transit; a dry run reports it, and
    `allow_legs_in_flight` plans anyway and records the acknowledgement.

    Before even that, the whole run config is checked, including the fields
    only later steps read (after the pivot would be too late): a bad value
    fails the run here (`InvalidRebalanceConfig`, not retried), naming the key.
    """
    cfg = ctx.config
    try:
        check_config(cfg, exchange.venue_names())  # every field, including those first read after the pivot
    except ValueError as exc:
        raise InvalidRebalanceConfig(f"invalid run config: {exc}") from exc
    trigger = cfg.trigger.model_dump() if cfg.trigger is not None else None
    if cfg.trigger is not None:
        ctx.log.info(f"rebalance [{ctx.saga_id}] triggered by {cfg.trigger.describe()}")
    in_flight = rebalance_journal.legs_in_flight(exclude_saga=ctx.saga_id,
                                                 lookback_seconds=cfg.in_flight_lookback_seconds)
    if in_flight and not cfg.dry_run and not cfg.allow_legs_in_flight:
        _refuse_legs_in_flight(ctx, rebalance_journal, in_flight)
    used = rebalance_journal.used_today(exclude_saga=ctx.saga_id)
    proposal = propose(exchange, wise, cfg, used, logger=ctx.log)
    title = f"Rebalance plan{' (DRY RUN)' if cfg.dry_run else ''} [{ctx.saga_id}]"
    metadata: dict[str, Any] = proposal_metadata(proposal, title=title)
    metadata["dry_run"] = MetadataValue.bool(cfg.dry_run)
    if trigger is not None:
        metadata["trigger"] = MetadataValue.json(trigger)
    if in_flight:
        metadata["legs_in_flight"] = MetadataValue.md(_in_flight_markdown(in_flight))
    rebalance_journal.report(PLAN, f"{title}: {len(proposal.run_now)} transfer(s)", metadata)

    if proposal.infeasible and not cfg.dry_run:
        reasons = "; ".join(f"{a}: {why}" for a, why in sorted(proposal.infeasible.items()))
        raise Failure(
            description=f"rebalance plan is infeasible, nothing moved: {reasons}",
            metadata={GUARDRAIL_METADATA_KEY: RULE_INFEASIBLE, "infeasible": MetadataValue.json(proposal.infeasible)},
            allow_retries=False,
        )
    if proposal.breaches and not cfg.dry_run:
        rules = sorted({b.rule for b in proposal.breaches})
        raise Failure(
            description="rebalance guardrail breached, nothing moved: "
            + "; ".join(f"{b.rule}: {b.message}" for b in proposal.breaches),
            metadata={
                GUARDRAIL_METADATA_KEY: rules[0],
                "arb/guardrails_breached": MetadataValue.json(rules),
                "breaches": MetadataValue.json([b.to_dict() for b in proposal.breaches]),
            },
            allow_retries=False,
        )
    stops = [*proposal.infeasible.values(), *(b.message for b in proposal.breaches)]
    if in_flight and cfg.dry_run and not cfg.allow_legs_in_flight:
        stops.append(f"{RULE_LEGS_IN_FLIGHT}: " + "; ".join(s.describe() for s in in_flight))
    for line in stops:
        ctx.log.warning(f"dry run: a real run would stop here: {line}")
    result = _plan_result(proposal, dry_run=cfg.dry_run, trigger=trigger)
    result["legs_in_flight"] = [s.to_dict() for s in in_flight]
    if in_flight and cfg.allow_legs_in_flight and not cfg.dry_run:
        # Recorded with the plan: later runs no longer block on these sagas (unless they write to their log again).
        result[ACKNOWLEDGED_IN_FLIGHT] = {s.saga_id: s.last_activity for s in in_flight}
        ctx.log.warning(
            "allow_legs_in_flight: planning although earlier sagas have legs in flight (acknowledged): "
            + "; ".join(s.describe() for s in in_flight)
        )
    # Before the plan is recorded (when this returns): a tag saying "0" lets later plans skip this saga's log.
    rebalance_journal.tag_run({PLANNED_MOVES_TAG: str(0 if cfg.dry_run else len(result["transfers"]))})
    return result


def _in_flight_markdown(in_flight: list[SagaInFlight]) -> str:
    lines = ["| saga | state | leg | amount | from → to | network | status |", "|---|---|---|---|---|---|---|"]
    for saga in in_flight:
        for leg in saga.legs:
            lines.append(f"| {saga.saga_id} | {saga.why} | #{leg.index} | {format_amount(leg.asset, leg.amount)} {leg.asset} | "
                         f"{leg.from_venue} → {leg.to_venue} | {leg.network} | {leg.status} |")
    return "\n".join(lines)


def _refuse_legs_in_flight(ctx, rebalance_journal, in_flight: list[SagaInFlight]) -> None:
    """Guardrail `legs_in_flight`: fail before observing or moving anything (see docs/rebalance.md)."""
    cfg = ctx.config
    until = max(s.last_activity for s in in_flight) + cfg.in_flight_lookback_seconds
    until_utc = datetime.fromtimestamp(until, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    message = (
        f"{len(in_flight)} earlier rebalance saga(s) have legs that left and were never verified as arrived; "
        "balances do not show money in transit, so a plan now could send it again: "
        + "; ".join(s.describe() for s in in_flight)
        + f". Once it has arrived, run with allow_legs_in_flight: true; otherwise this blocks until {until_utc} "
        f"(in_flight_lookback_seconds={cfg.in_flight_lookback_seconds:g} after the last activity)"
    )
    details = [s.to_dict() for s in in_flight]
    rebalance_journal.report(
        PLAN, f"rebalance [{ctx.saga_id}] refused: {RULE_LEGS_IN_FLIGHT}",
        {"legs_in_flight": MetadataValue.md(_in_flight_markdown(in_flight)), "sagas": details,
         "blocks_until": until_utc},
    )
    raise Failure(
        description=f"rebalance guardrail breached, nothing moved: {RULE_LEGS_IN_FLIGHT}: {message}",
        metadata={
            GUARDRAIL_METADATA_KEY: RULE_LEGS_IN_FLIGHT,
            "arb/guardrails_breached": MetadataValue.json([RULE_LEGS_IN_FLIGHT]),
            "breaches": MetadataValue.json([{"rule": RULE_LEGS_IN_FLIGHT, "message": message, "asset": None,
                                             "transfer": None}]),
            "legs_in_flight": MetadataValue.json(details),
            "blocks_until": until_utc,
        },
        allow_retries=False,
    )


def _plan_result(proposal: Proposal, *, dry_run: bool, trigger: dict | None) -> dict[str, Any]:
    touched = {(t.to_venue, t.asset) for t in proposal.run_now} | {
        (t.from_venue, t.asset) for t in proposal.run_now if t.from_venue != FIAT_SOURCE
    }
    before: dict[str, dict[str, dict[str, float]]] = {}
    for venue, asset in sorted(touched):
        balance = proposal.balances.get(venue, {}).get(asset)
        before.setdefault(venue, {})[asset] = {
            "free": balance.free if balance else 0.0,
            "total": balance.total if balance else 0.0,
        }
    return {
        "dry_run": dry_run,
        "transfers": [t.to_dict() for t in proposal.run_now],
        "deferred": [t.to_dict() for t in proposal.deferred],
        "skipped": dict(proposal.skipped),
        "deficits": proposal.needs,
        "fee": proposal.fee_of(proposal.run_now),
        "naive_fee": dict(proposal.naive_fee),
        "used_today": dict(proposal.used_today),
        "breaches": [b.to_dict() for b in proposal.breaches],
        "infeasible": dict(proposal.infeasible),
        "allowlist_excluded": list(proposal.allowlist_excluded),
        "withdrawal_excluded": list(proposal.withdrawal_excluded),
        "before": before,
        "observed_at": proposal.observed_at,
        "trigger": trigger,
    }


def release_reservations(ctx) -> dict[str, Any]:
    """Release the plan's reservation of the per-day limit (recording this is the release).

    Legs that had already left and could not be cancelled stay counted: the
    daily usage reads them from `commit_transfers`' compensation.
    """
    reserved: dict[str, float] = {}
    for leg in _legs(ctx.result):
        reserved[leg.asset] = reserved.get(leg.asset, 0.0) + leg.amount
    return {"released": reserved}


# --------------------------------------------------------------------------- 2. prepare


def prepare_transfers(ctx, exchange, wise, rebalance_journal) -> dict[str, Any]:
    """Per leg: the destination's deposit address (checked); for Wise legs also quote → recipient → transfer.

    Wise legs go first, so a failure on a later leg finds the Wise transfers
    to cancel. Every Wise transfer carries the customerTransactionId derived
    from this step's key, so a retry finds the same transfer.
    """
    plan = ctx.results[PLAN]
    skip = _skip_reason(plan)
    if skip:
        return {"skipped": skip}
    cfg = ctx.config
    prepared: dict[str, dict[str, Any]] = {}
    for leg in sorted(_legs(plan), key=lambda t: (t.kind != "wise", t.index)):
        address = exchange.venue(leg.to_venue).fetch_deposit_address(leg.asset, leg.network)
        if (address.venue, address.asset, address.network) != (leg.to_venue, leg.asset, leg.network):
            raise BusinessError(
                f"leg #{leg.index}: {leg.to_venue} gave a deposit address for {address.venue} "
                f"{address.asset}/{address.network}, not {leg.to_venue} {leg.asset}/{leg.network}",
                code="address_mismatch",
            )
        entry: dict[str, Any] = {"address": address.address, "tag": address.tag}
        if leg.kind == "wise":
            entry.update(_prepare_wise_leg(ctx, wise, leg, address.address, cfg, venue_reference=address.tag))
        prepared[str(leg.index)] = entry
    rows = {
        int(i): {"destination": _mask(p["address"]), "Wise transfer": p.get("wise_transfer_id", "")}
        for i, p in prepared.items()
    }
    rebalance_journal.report(
        PREPARE,
        f"prepared {len(prepared)} leg(s)",
        {"legs": MetadataValue.md(legs_markdown(_legs(plan), rows, ("destination", "Wise transfer"))),
         "wise_transfer_ids": [p["wise_transfer_id"] for p in prepared.values() if "wise_transfer_id" in p]},
    )
    return {"legs": prepared}


def _prepare_wise_leg(ctx, wise, leg: PlannedTransfer, iban: str, cfg, *, venue_reference: str | None = None) -> dict[str, Any]:
    # Quoted by what must *arrive*: Wise deducts its fee from a source amount, so a source-amount quote
    # delivers less than planned whenever Wise now charges more than the plan's fitted fee (or the amount
    # rounds down to the cent). A fee above the allowed increase is refused below; within it, the Wise
    # balance pays the difference (checked again at the pivot) and the venue gets its target.
    # The venue's own deposit reference when it needs one (else the deposit is not credited to us), else
    # ours, fitted to what Wise takes for the currency. Checked before anything is created at Wise.
    try:
        reference = wise_reference(ctx.saga_id, leg.index, leg.asset, venue_reference)
    except ValueError as exc:
        raise BusinessError(f"leg #{leg.index}: {leg.to_venue} {leg.asset}/{leg.network}: {exc}",
                            code="bad_reference") from None
    quote = wise.create_quote(leg.asset, leg.asset, target_amount=leg.credited)
    allowed = leg.fee * (1 + cfg.max_fee_increase) + 0.01
    if quote.fee_total > allowed:
        raise BusinessError(
            f"leg #{leg.index}: Wise now charges {format_amount(leg.asset, quote.fee_total)} {leg.asset}, planned "
            f"{format_amount(leg.asset, leg.fee)} (max {format_amount(leg.asset, allowed)}); not sending",
            code="fee_increase",
        )
    recipient = wise.create_recipient(leg.asset, iban, cfg.wise_recipient_holder)
    key = ctx.key("wise", leg.index, leg.rail)
    transfer = wise.create_transfer(quote.id, recipient.id, key, reference=reference)
    if transfer.status == CANCELLED or transfer.is_failed:
        raise BusinessError(f"leg #{leg.index}: Wise transfer {transfer.id} for this saga is {transfer.status}",
                            code="transfer_closed")
    ctx.note(index=leg.index, wise_transfer_id=transfer.id, status=transfer.status)
    return {
        "wise_transfer_id": transfer.id,
        "customer_transaction_id": customer_transaction_id_for(key),
        "quote_id": transfer.quote_uuid or quote.id,
        "recipient_id": recipient.id,
        "source_value": transfer.source_value,
        "target_value": transfer.target_value,
        "wise_fee": quote.fee_total,
        "reference": reference,
    }


def _recorded_transfer_ids(ctx) -> dict[int, int]:
    """Leg index -> Wise transfer id this step durably recorded (its progress notes, its result)."""
    known = {int(n["index"]): int(n["wise_transfer_id"]) for n in ctx.progress
             if n.get("index") is not None and n.get("wise_transfer_id") is not None}
    for index, entry in ((ctx.result or {}).get("legs") or {}).items():
        if entry.get("wise_transfer_id") is not None:
            known[int(index)] = int(entry["wise_transfer_id"])
    return known


def cancel_prepared(ctx, wise) -> dict[str, Any]:
    """Cancel every Wise transfer of this saga that Wise still lets us cancel (looked up by its customerTransactionId).

    Safe when the action never ran or ran half way. Wise cancels until the funds are converted: an unfunded
    transfer, and a funded one still `processing` (a person funded it in the app; the pivot's compensation
    could not stop it), whose money Wise refunds to the balance (`refunded`, see `_stop_wise_transfer`).
    A transfer past that point is reported as in flight.
    """
    out: dict[str, list] = {"cancelled": [], "absent": [], "in_flight": []}
    refunded: list[dict[str, Any]] = []
    known = _recorded_transfer_ids(ctx)
    for leg in _legs(ctx.results.get(PLAN)):
        if leg.kind != "wise":
            continue
        transfer = wise.find_transfer(ctx.key("wise", leg.index, leg.rail))
        if transfer is None and leg.index in known:
            # The customerTransactionId search only looks through recent transfers; the step noted
            # this transfer's id the moment it existed, so it is not "absent": read it by id.
            transfer = wise.get_transfer(known[leg.index])
        if transfer is None:
            out["absent"].append(leg.index)
            continue
        transfer, funded = _stop_wise_transfer(ctx, wise, transfer)
        if transfer.is_failed:  # cancelled, or funded and refunded/charged back: nothing in flight
            out["cancelled"].append(leg.index)
            if funded or transfer.status == REFUNDED:  # funded, and back (or on its way back) to the balance
                refunded.append(_refund_entry(leg.index, transfer))
        else:
            out["in_flight"].append(leg.index)
    if refunded:  # present only when a funded transfer was stopped: the exact shape of older results stays
        out["refunded"] = refunded
    return out


def _stop_wise_transfer(ctx, wise, transfer: Transfer) -> tuple[Transfer, bool]:
    """Cancel `transfer` if Wise still lets us; return it as last read, and whether a cancel was sent while it
    was funded (so Wise owes a refund).

    Wise cancels until the funds are converted (`CANCELLABLE_STATUSES`): unfunded, and funded but still
    `processing` (or `incoming_payment_initiated`), which Wise then refunds to the balance; a cancel of a
    funded transfer waits (bounded, `REFUND_WAIT_SECONDS`) for `funds_refunded`. Every outcome other than a
    clean cancel is decided on a fresh read, never on the error alone:

    * refused (4xx): moved on meanwhile (converted, sent: in flight; cancelled: done; funded by a person a
      moment ago and still cancellable: one more cancel). A funded transfer Wise refuses to cancel in the
      same state is in flight (its cancel window may be narrower than documented). An unfunded transfer
      refused without having moved is raised: nothing explains it, the compensation fails loudly.
    * unknown outcome (timeout, 5xx after retries, breaker open): read back; if it is still cancellable the
      cancel did not take, and the original error is raised (a failed compensation, retried, sends it again).
    A failing read is raised too.
    """
    funded = False
    for _ in range(3):  # a transfer can move forward only so often; bounded anyway
        if transfer.status not in CANCELLABLE_STATUSES:
            break
        tried = transfer.status
        funded = funded or tried in FUNDED_STATUSES
        try:
            transfer = wise.cancel_transfer(transfer.id)
        except BusinessError:
            fresh = wise.get_transfer(transfer.id)
            if fresh.status == tried:
                if tried == WAITING:
                    raise  # unfunded, refused, unchanged: no reason we can see
                ctx.log.warning(f"Wise refused to cancel transfer {fresh.id} ({fresh.status}); it stays in flight")
                return fresh, funded
            transfer = fresh  # moved on meanwhile: decide again on what it is now
            continue
        except TransientError:
            fresh = wise.get_transfer(transfer.id)
            if fresh.status in CANCELLABLE_STATUSES:
                raise  # the cancel did not take (yet) and still could: loud, a retry sends it again
            transfer = fresh
            break
        break
    if funded and transfer.status == CANCELLED:
        transfer = _await_refund(ctx, wise, transfer)
    if funded and transfer.is_failed:
        ctx.log.warning(f"funded Wise transfer {transfer.id} cancelled, {transfer.status}: "
                        f"{format_amount(transfer.source_currency, transfer.source_value)} "
                        f"{transfer.source_currency} back to the Wise balance"
                        + ("" if transfer.status == REFUNDED else " once Wise refunds it"))
    return transfer, funded


def _await_refund(ctx, wise, transfer: Transfer) -> Transfer:
    """Poll a cancelled funded transfer until `funds_refunded`, at most `REFUND_WAIT_SECONDS`; return the last read."""
    cfg = ctx.config
    pause = float(getattr(cfg, "poll_interval_seconds", None) or 0.5)
    deadline = time.monotonic() + REFUND_WAIT_SECONDS
    while transfer.status == CANCELLED and time.monotonic() < deadline:
        time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
        transfer = wise.get_transfer(transfer.id)
    return transfer


def _refund_entry(index: int, transfer: Transfer) -> dict[str, Any]:
    return {"index": index, "wise_transfer_id": transfer.id, "amount": transfer.source_value,
            "currency": transfer.source_currency, "status": transfer.status,
            "refunded": transfer.status == REFUNDED}


# --------------------------------------------------------------------------- 3. commit (pivot)


def commit_transfers(ctx, exchange, wise, smtp, rebalance_journal) -> dict[str, Any]:
    """PIVOT: create the withdrawals and fund the Wise transfers. Past this, money is on its way.

    Funds are checked for every leg not yet committed before the first one
    moves; a leg an earlier attempt already committed is found by its key and
    not sent again. Order (`commit_order`): withdrawals first (cancellable while
    pending) when Wise funds through the API; Wise first when funding may need
    a person (personal token), so a person who never approves leaves nothing
    moved. A Wise leg Wise refuses to fund through the API (SCA) is parked:
    noted, mailed, waited for until `human_funding_timeout_seconds`, then
    cancelled (business failure → compensation) — see `funding.py`.
    """
    plan = ctx.results[PLAN]
    skip = _skip_reason(plan)
    if skip:
        return {"skipped": skip}
    cfg = ctx.config
    prepared = ctx.results[PREPARE]["legs"]
    legs = _legs(plan)
    withdrawals = [t for t in legs if t.kind == "withdrawal"]
    fiat = [t for t in legs if t.kind == "wise"]
    # Defence in depth behind the planner's filter: refuse before any lookup or send, so the compensation
    # knows nothing left (`cancel_uncommitted` records such legs as never created).
    refused = [t for t in withdrawals if not withdraws_idempotently(exchange.venue(t.from_venue))]
    if refused:
        raise BusinessError("no idempotent withdrawal (no client withdrawal id) out of "
                            + ", ".join(sorted({t.from_venue for t in refused})) + " for "
                            + ", ".join(f"leg #{t.index} ({t.rail})" for t in refused)
                            + "; refused before anything was sent", code="withdrawal_not_idempotent")

    needed: dict[tuple[str, str], float] = {}
    for leg in withdrawals:
        if exchange.venue(leg.from_venue).fetch_withdrawal(ctx.key("withdraw", leg.index, leg.rail)) is None:
            needed[(leg.from_venue, leg.asset)] = needed.get((leg.from_venue, leg.asset), 0.0) + leg.amount
    wise_needed: dict[str, float] = {}
    funded: set[int] = set()
    for leg in fiat:
        transfer = wise.get_transfer(prepared[str(leg.index)]["wise_transfer_id"])
        if transfer.is_failed:  # cancelled, or funded and then refunded/charged back: this leg cannot arrive
            raise BusinessError(f"leg #{leg.index}: Wise transfer {transfer.id} is {transfer.status}; not committing "
                                "the plan around it", code="transfer_closed")
        if transfer.is_funded:
            funded.add(transfer.id)
        else:
            wise_needed[leg.asset] = wise_needed.get(leg.asset, 0.0) + transfer.source_value
    for venue in sorted({v for v, _ in needed}):
        balances = exchange.venue(venue).fetch_balance()
        for (v, asset), amount in sorted(needed.items()):
            free = balances[asset].free if v == venue and asset in balances else None
            if v == venue and (free is None or amount > free + 1e-9):
                raise BusinessError(f"{venue} has {format_amount(asset, free or 0.0)} {asset} free, the plan sends "
                                    f"{format_amount(asset, amount)}; not sending",
                                    code="insufficient_funds")
    if wise_needed:
        available = wise.balances()
        for asset, amount in sorted(wise_needed.items()):
            if amount > available.get(asset, 0.0) + 1e-9:
                raise BusinessError(f"the Wise balance holds {format_amount(asset, available.get(asset, 0.0))} {asset}, "
                                    f"the plan pays {format_amount(asset, amount)}; not funding",
                                    code="insufficient_funds")

    wise_first = bool(fiat) and wise_funds_first(cfg.commit_order, funding_may_need_human=funding_may_need_human(wise))
    committed: dict[str, dict[str, Any]] = {}
    if wise_first:
        ctx.log.info("funding the Wise legs before the withdrawals (funding may need a person)")
        committed.update(fund_wise_legs(ctx, wise, smtp, rebalance_journal, fiat, prepared,
                                        already_funded=funded, withdrawals_sent=False))
    committed.update(_create_withdrawals(ctx, exchange, withdrawals, prepared))
    if not wise_first:
        committed.update(fund_wise_legs(ctx, wise, smtp, rebalance_journal, fiat, prepared,
                                        already_funded=funded, withdrawals_sent=bool(withdrawals)))
    committed = {i: committed[i] for i in sorted(committed, key=int)}
    rows = {int(i): {"id": c.get("withdrawal_id") or c.get("wise_transfer_id"), "status": c["status"]}
            for i, c in committed.items()}
    rebalance_journal.report(
        COMMIT,
        f"committed {len(committed)} leg(s): money is on its way",
        {"legs": MetadataValue.md(legs_markdown(legs, rows, ("id", "status"))),
         "withdrawal_ids": [c["withdrawal_id"] for c in committed.values() if "withdrawal_id" in c],
         "wise_transfer_ids": [c["wise_transfer_id"] for c in committed.values() if "wise_transfer_id" in c],
         "order": "wise first" if wise_first else "withdrawals first"},
    )
    return {"committed": committed}


def _create_withdrawals(ctx, exchange, withdrawals: list[PlannedTransfer], prepared) -> dict[str, dict[str, Any]]:
    """Send each withdrawal leg, noting its top-ups (a Binance/OKX venue first moves what leaves from the trading
    account into its withdrawal wallet) in the saga log as they happen.

    A venue that reports its top-ups (`reports_withdrawal_top_ups`) gets `on_top_up`: each transfer is noted
    `top_up_sending` before it is sent (amount, transfer id: OKX's clientId, and the wallet's balance before),
    then `top_up` once it moved or `top_up_not_moved` once it was not applied. On a retry (another process: the
    client remembers nothing) the venue is told what earlier attempts moved (`restore_withdrawal_top_up`, from
    the `top_up` notes) and of a top-up whose outcome stayed unknown (`restore_pending_top_up`, a
    `top_up_sending` with nothing after it): the venue resolves that one before moving anything, and while it
    cannot, neither tops up again nor withdraws (`TransientError`: retried, then the step fails and the engine
    escalates). Other venues are called as before; what `take_withdrawal_top_up` reports is noted `top_up`.
    """
    committed: dict[str, dict[str, Any]] = {}
    for leg in withdrawals:
        key = ctx.key("withdraw", leg.index, leg.rail)
        target = prepared[str(leg.index)]
        venue = exchange.venue(leg.from_venue)
        recorded = top_ups_recorded(ctx.progress).get(leg.index)
        if recorded is not None and recorded[2] > 0:
            # An earlier attempt (maybe in another process) topped the withdrawal wallet up for this key and did
            # not send: the venue moves only the rest, never the same amount twice.
            venue.restore_withdrawal_top_up(key, recorded[2])
        pending = top_ups_pending(ctx.progress).get(leg.index, [])
        if len(pending) > 1:  # one top-up at a time per key: never expected; a person must look at the notes
            raise TransientError(
                f"leg #{leg.index}: {len(pending)} top-ups at {leg.from_venue} with an unknown outcome ("
                + ", ".join(str(p["transfer_id"]) for p in pending) + "); nothing topped up or withdrawn")
        for p in pending:
            ctx.log.warning(f"leg #{leg.index}: an earlier attempt's {format_amount(leg.asset, p['amount'])} "
                            f"{leg.asset} top-up at {leg.from_venue} (transfer {p['transfer_id']}) has an unknown "
                            "outcome; the venue resolves it before moving anything")
            venue.restore_pending_top_up(key, float(p["amount"]), str(p["transfer_id"]),
                                         wallet_before=p.get("wallet_before"))
        reported: list[float] = []
        extra: dict[str, Any] = {}
        if getattr(venue, "reports_withdrawal_top_ups", False):
            extra["on_top_up"] = _top_up_recorder(ctx, leg, reported)
        try:
            w = venue.withdraw(
                leg.asset, leg.credited, address=target["address"], network=leg.network, idempotency_key=key,
                tag=target.get("tag"), **extra,
            )
        finally:
            # Sent or not: what the venue moved into its withdrawal wallet for this leg is recorded now, the
            # only bound the compensation may sweep back there (`_sweep_sources`). A reporting venue's moves are
            # noted already (`top_up`); anything it confirmed without reporting is noted here.
            topped_up = float(venue.take_withdrawal_top_up(key))
            unreported = round(topped_up - sum(reported), 12)
            if unreported > 1e-9:
                ctx.note(top_up=leg.index, venue=leg.from_venue, asset=leg.asset, amount=unreported)
        if w.status in ("canceled", "failed"):
            raise BusinessError(f"leg #{leg.index}: withdrawal {w.id} under this saga's key is {w.status}",
                                code="withdrawal_closed")
        ctx.note(committed=leg.index, withdrawal_id=w.id, status=w.status)
        committed[str(leg.index)] = {
            "kind": "withdrawal", "venue": leg.from_venue, "withdrawal_id": w.id, "idempotency_key": key,
            "amount": w.amount, "fee": w.fee, "status": w.status, "eta_seconds": leg.eta_seconds,
            "committed_at": time.time(),
        }
    return committed


def _top_up_recorder(ctx, leg: PlannedTransfer, reported: list[float]):
    """The `on_top_up` callback of one leg's withdrawal: every event is a durable note before the venue goes on
    (`sending` before the transfer is requested: a run killed after it leaves the record a retry resolves)."""

    def record(event: str, amount: float, transfer_id: str, wallet_before: float | None = None) -> None:
        fields = {"venue": leg.from_venue, "asset": leg.asset, "amount": float(amount), "transfer_id": transfer_id}
        if event == "sending":
            ctx.note(top_up_sending=leg.index, **fields, wallet_before=wallet_before)
        elif event == "moved":
            ctx.note(top_up=leg.index, **fields)
            reported.append(float(amount))
        elif event == "not_moved":
            ctx.note(top_up_not_moved=leg.index, **fields)
        else:
            raise ValueError(f"leg #{leg.index}: unknown top-up event {event!r}")

    return record


def cancel_uncommitted(ctx, exchange, wise, smtp) -> dict[str, Any]:
    """Undo a pivot that failed part way: cancel withdrawals still `pending` and funded Wise transfers Wise
    still cancels; report legs already gone.

    Unfunded Wise transfers are left to `cancel_prepared` (it runs next). A funded Wise transfer still
    before `funds_converted` is cancelled and Wise refunds it to the balance: listed under `cancelled` and,
    with its amount and status, under `refunded` (present only then). A leg that can no longer be stopped
    (broadcast withdrawal, Wise transfer converted or sent) is listed as `in_flight`. Both are mailed to
    the risk team: an in-flight leg will arrive at the destination venue although the saga did not run to
    its end; a refunded one is back on the Wise balance.
    """
    prepared = (ctx.results.get(PREPARE) or {}).get("legs", {})
    out: dict[str, list] = {"cancelled": [], "not_created": [], "in_flight": []}
    refunded: list[dict[str, Any]] = []
    for leg in _legs(ctx.results.get(PLAN)):
        if leg.kind == "withdrawal":
            venue = exchange.venue(leg.from_venue)
            if not withdraws_idempotently(venue):  # its client refuses every withdrawal locally: none was sent
                out["not_created"].append(leg.index)
                continue
            key = ctx.key("withdraw", leg.index, leg.rail)
            w = venue.fetch_withdrawal(key)
            if w is not None and w.status == "pending":
                try:
                    w = venue.cancel_withdrawal(w.id)
                except BusinessError:  # broadcast in the meantime: look again
                    w = venue.fetch_withdrawal(key)
            if w is None:
                out["not_created"].append(leg.index)
            elif w.status in ("canceled", "failed"):
                out["cancelled"].append(leg.index)
            else:
                out["in_flight"].append(leg.index)
        else:
            transfer_id = prepared.get(str(leg.index), {}).get("wise_transfer_id")
            transfer = wise.get_transfer(transfer_id) if transfer_id is not None else None
            funded = False
            if transfer is not None and transfer.is_funded and not transfer.is_failed:
                transfer, funded = _stop_wise_transfer(ctx, wise, transfer)
            if transfer is not None and transfer.is_failed:  # cancelled, refunded or charged back: not moving
                out["cancelled"].append(leg.index)
                if funded or transfer.status == REFUNDED:  # also when an earlier try of this compensation cancelled it
                    refunded.append(_refund_entry(leg.index, transfer))
            elif transfer is not None and transfer.is_funded:
                out["in_flight"].append(leg.index)
            else:
                out["not_created"].append(leg.index)
    if refunded:  # present only when a funded transfer was stopped: the exact shape of older results stays
        out["refunded"] = refunded
    swept, sweep_failed = _sweep_sources(ctx, exchange, stayed={*out["cancelled"], *out["not_created"]})
    if swept:  # only when something moved or failed to: a one-wallet venue adds nothing to the record
        out["swept"] = swept
    if sweep_failed:
        out["sweep_failed"] = sweep_failed
    if out["in_flight"] or refunded:
        _mail_pivot_rollback(ctx, smtp, out, refunded)
    return out


def _mail_pivot_rollback(ctx, smtp, out: Mapping[str, Any], refunded: list[dict[str, Any]]) -> None:
    """Tell the risk team which legs of a rolled-back pivot are still on their way and which funded Wise
    transfers were cancelled and refunded (the saga log holds the facts; the mail is the courtesy copy)."""
    legs = {t.index: t for t in _legs(ctx.results.get(PLAN))}
    lines = [f"Rebalance saga {ctx.saga_id} failed during its pivot ({COMMIT})."]
    if out["in_flight"]:
        lines += (["These legs had already left and could not be cancelled; they will arrive, but the saga was "
                   "rolled back around them (no arrival check, no balance verification):"]
                  + [f"  #{i}: {legs[i].rail} {format_amount(legs[i].asset, legs[i].amount)} {legs[i].asset}"
                     for i in out["in_flight"] if i in legs])
    if refunded:
        lines += ["These Wise legs had been funded and are cancelled (Wise had not converted them yet); nothing "
                  "reaches the destination, the money goes back to the Wise balance:"]
        for r in refunded:
            rail = legs[r["index"]].rail if r["index"] in legs else "wise"
            state = ("refunded to the Wise balance" if r["refunded"]
                     else f"refund pending (Wise shows it {r['status']})")
            lines.append(f"  #{r['index']}: {rail} Wise transfer {r['wise_transfer_id']} "
                         f"{format_amount(r['currency'], r['amount'])} {r['currency']}: cancelled, {state}")
    lines.append(f"Cancelled: {out['cancelled'] or 'none'}; never created: {out['not_created'] or 'none'}.")
    if out["in_flight"]:
        subject = f"[rebalance] partially committed: {len(out['in_flight'])} leg(s) in flight"
        if refunded:
            subject += f", {len(refunded)} funded Wise transfer(s) cancelled and refunded"
    elif all(r["refunded"] for r in refunded):
        subject = (f"[rebalance] pivot rolled back: {len(refunded)} funded Wise transfer(s) cancelled, "
                   "refunded to the Wise balance")
    else:
        subject = (f"[rebalance] pivot rolled back: {len(refunded)} funded Wise transfer(s) cancelled, "
                   "refund pending")
    try:
        smtp.send(f"{subject} [{ctx.saga_id}]", "\n".join(lines))
    except Exception as exc:  # the saga log holds the facts; the mail is the courtesy copy
        ctx.log.error(f"could not mail the rollback of saga {ctx.saga_id}'s pivot: {type(exc).__name__}: {exc}")


def top_ups_recorded(progress) -> dict[int, tuple[str, str, float]]:
    """leg index -> (source venue, asset, what its withdrawal's top-ups moved into the withdrawal wallet), from
    `commit_transfers`' notes (every attempt's, summed)."""
    out: dict[int, tuple[str, str, float]] = {}
    for note in progress:
        if "top_up" in note:
            index = int(note["top_up"])
            _, _, before = out.get(index, (note["venue"], note["asset"], 0.0))
            out[index] = (note["venue"], note["asset"], before + float(note["amount"]))
    return out


def top_ups_pending(progress) -> dict[int, list[dict[str, Any]]]:
    """leg index -> the `top_up_sending` notes of `commit_transfers` whose transfer nothing resolved afterwards
    (no `top_up` or `top_up_not_moved` with the same transfer id, and no later `top_up_sending` of it): top-ups
    whose outcome is unknown, oldest first. A transfer sent again with its id (OKX) counts by its last note."""
    last: dict[tuple[int, str], tuple[str, Mapping[str, Any]]] = {}
    for note in progress:
        for kind in ("top_up_sending", "top_up", "top_up_not_moved"):
            if kind in note and note.get("transfer_id"):
                last[(int(note[kind]), str(note["transfer_id"]))] = (kind, note)
    out: dict[int, list[dict[str, Any]]] = {}
    for (index, _transfer_id), (kind, note) in last.items():
        if kind == "top_up_sending":
            out.setdefault(index, []).append(dict(note))
    return out


def _sweep_sources(ctx, exchange, *, stayed: set[int]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Move the top-ups of withdrawals that did not leave (failed send, cancelled) back into the trading account.

    At most what those withdrawals' top-ups moved into the withdrawal wallet, as `commit_transfers` recorded it
    (`top_ups_recorded`): the wallet may hold an operator's own money, which stays; a top-up nobody recorded
    (the run died between the top-up and the note) is not swept (it stays counted in the venue's balance until a
    person moves it). A leg that left took its top-up with it: nothing to sweep for it.

    Every transfer is noted in the saga log as the compensation's own progress (`ctx.note`: `sending` before it
    is requested, `moved` / `not_moved` once known, the notes `sweep_ledger` reads), and each venue/asset is
    bounded by its top-ups less what earlier attempts of this compensation moved or may have moved
    (`ctx.compensation_progress`). So a compensation killed after its sweep and before its result was recorded
    moves nothing more when it runs again (another actor, another run): what it would move the second time is
    the operator's own money. A transfer whose outcome stayed unknown counts as moved and is never resent.

    Best effort, and the only thing here that is: the money is not lost if this fails (the venue's balances count the
    withdrawal wallet), while a failed compensation would leave the pivot's
    outcome "unknown" and block every rebalance for the in-flight lookback. What moved, over every attempt, is
    recorded under `swept` (with `unconfirmed` when a transfer's outcome stayed unknown: counted, not resent); a
    failure is logged at ERROR and recorded under `sweep_failed`. A lost claim (`ClaimLostError` from a note) is
    not a failure of the sweep: it stops the compensation before anything more is sent.
    """
    bounds: dict[tuple[str, str], float] = {}
    for index, (venue, asset, amount) in top_ups_recorded(ctx.progress).items():
        if index in stayed:
            bounds[(venue, asset)] = bounds.get((venue, asset), 0.0) + amount
    earlier = [dict(n) for n in (getattr(ctx, "compensation_progress", None) or []) if "sweep" in n]
    swept: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for (venue, asset), bound in sorted(bounds.items()):
        seen: list[dict[str, Any]] = []
        moved, unknown = sweep_ledger(earlier, venue, asset)
        remaining = round(bound - moved - unknown, 12)
        if remaining > 1e-9:
            try:
                _sweep_noted(ctx, exchange.venue(venue), venue, asset, remaining, earlier, seen)
            except ClaimLostError:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded and logged: see the docstring
                failed.append({"venue": venue, "asset": asset, "top_up": bound,
                               "error": f"{type(exc).__name__}: {exc}"})
                ctx.log.error(f"could not move the {format_amount(asset, remaining)} {asset} top-up left in {venue}'s "
                              f"withdrawal wallet back into its trading account ({type(exc).__name__}: {exc}); it "
                              f"stays counted in {venue}'s balance until a person moves it")
            moved, unknown = sweep_ledger([*earlier, *seen], venue, asset)
        if moved > 0 or unknown > 0:
            entry: dict[str, Any] = {"venue": venue, "asset": asset, "moved": moved}
            if unknown > 0:
                entry["unconfirmed"] = unknown
                ctx.log.warning(f"{venue}: a transfer of {format_amount(asset, unknown)} {asset} back into the trading "
                                "account has an unknown outcome; not resent (check the withdrawal wallet)")
            swept.append(entry)
    return swept, failed


# --------------------------------------------------------------------------- 4. await (forward only)


def await_arrival(ctx, exchange, wise, rebalance_journal) -> dict[str, Any]:
    """Poll every committed leg until it has arrived (withdrawal `completed`, Wise `outgoing_payment_sent`).

    Transient read errors are waited out; past `arrival_timeout_seconds` the
    step fails (retried, then the recovery sensor relaunches it). A leg that
    ends cancelled or refunded after commit is a business error: escalated.
    Between polls the instance's Wise webhook board is looked at every 0.5 s:
    a webhook saying a Wise leg was sent (or failed) starts the next poll at
    once, which then decides as always.
    """
    plan = ctx.results[PLAN]
    skip = _skip_reason(plan)
    if skip:
        return {"skipped": skip}
    cfg = ctx.config
    committed: Mapping[str, Mapping[str, Any]] = ctx.results[COMMIT]["committed"]
    started = time.monotonic()
    deadline = started + cfg.arrival_timeout_seconds
    waiting = sorted(committed, key=int)
    arrived: dict[str, dict[str, Any]] = {}
    status: dict[str, str] = {}
    watch = BoardWatch(journal_webhook_board(rebalance_journal), _wise_leg_settled, poll_interval=cfg.poll_interval_seconds)

    def wise_waiting() -> list[int]:
        return [int(committed[i]["wise_transfer_id"]) for i in waiting if committed[i]["kind"] == "wise"]

    while waiting:
        watch.reading(wise_waiting())
        for index in list(waiting):
            leg = committed[index]
            try:
                done, status[index] = _arrival_status(exchange, wise, index, leg)
            except TransientError as exc:
                status[index] = f"unknown ({type(exc).__name__})"
                continue
            if done:
                waiting.remove(index)
                arrived[index] = {"status": status[index], "after_seconds": round(time.time() - leg["committed_at"], 3)}
        if not waiting:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TransientError(
                f"{len(waiting)} leg(s) not arrived after {cfg.arrival_timeout_seconds:g}s: "
                + ", ".join(f"#{i} {status.get(i)}" for i in waiting)
            )
        watch.pause(wise_waiting(), min(cfg.poll_interval_seconds, remaining))
    rebalance_journal.report(
        AWAIT, f"{len(arrived)} leg(s) arrived",
        {"arrivals": {i: a for i, a in arrived.items()}, "waited_seconds": round(time.monotonic() - started, 3)},
    )
    return {"arrived": arrived}


def _wise_leg_settled(event) -> bool:
    """A webhook that would end a Wise leg's wait: sent, or failed (the poll it triggers decides)."""
    return event.current_state == SENT or event.current_state in FAILED_STATUSES


def _arrival_status(exchange, wise, index: str, leg: Mapping[str, Any]) -> tuple[bool, str]:
    if leg["kind"] == "withdrawal":
        w = exchange.venue(leg["venue"]).fetch_withdrawal(leg["idempotency_key"])
        if w is None:
            raise BusinessError(f"leg #{index}: withdrawal {leg['withdrawal_id']} is gone from {leg['venue']}")
        if w.status in ("canceled", "failed"):
            raise BusinessError(f"leg #{index}: withdrawal {w.id} ended {w.status} after it was committed")
        return w.status == "completed", w.status
    transfer = wise.get_transfer(leg["wise_transfer_id"])
    if transfer.is_failed:
        raise BusinessError(f"leg #{index}: Wise transfer {transfer.id} ended {transfer.status} after funding")
    return transfer.is_sent, transfer.status


# --------------------------------------------------------------------------- 5. verify (forward only)


def verify_balances(ctx, exchange, rebalance_journal) -> dict[str, Any]:
    """Re-read every destination: its total must have grown by what arrived (less `verify_tolerance`).

    Reports the markdown summary of the executed plan. A shortfall fails the
    step (retried; balances can lag the transfer status), then escalates.
    """
    plan = ctx.results[PLAN]
    skip = _skip_reason(plan)
    if skip:
        summary = f"### Rebalance {ctx.saga_id}: {skip}"
        rebalance_journal.report(VERIFY, skip, {"summary": MetadataValue.md(summary)})
        return {"skipped": skip}
    cfg = ctx.config
    legs = _legs(plan)
    committed = ctx.results[COMMIT]["committed"]
    arrived = ctx.results[AWAIT]["arrived"]
    prepared = ctx.results[PREPARE]["legs"]
    change: dict[tuple[str, str], float] = {}
    inbound: dict[tuple[str, str], float] = {}
    smallest_fee: dict[tuple[str, str], float] = {}  # of the withdrawals into a destination
    for leg in legs:
        if str(leg.index) not in arrived:
            continue
        credited = float(prepared[str(leg.index)].get("target_value", leg.credited))
        inbound[(leg.to_venue, leg.asset)] = inbound.get((leg.to_venue, leg.asset), 0.0) + credited
        if leg.kind == "withdrawal" and leg.fee > 0:
            key = (leg.to_venue, leg.asset)
            smallest_fee[key] = min(smallest_fee.get(key, leg.fee), leg.fee)
        change[(leg.to_venue, leg.asset)] = change.get((leg.to_venue, leg.asset), 0.0) + credited
        if leg.from_venue != FIAT_SOURCE:
            change[(leg.from_venue, leg.asset)] = change.get((leg.from_venue, leg.asset), 0.0) - leg.amount
    rows = []
    for venue in sorted({v for v, _ in inbound}):
        now = exchange.venue(venue).fetch_balance()
        for (v, asset), received in sorted(inbound.items()):
            if v != venue:
                continue
            before = float(plan["before"].get(venue, {}).get(asset, {}).get("total", 0.0))
            # The tolerance absorbs noise on the destination (trading during the transfer), but stays below half a
            # network fee: a 1 % band is above any fee the plan may pay (max_fee_ratio), so it would hide a leg
            # that arrives one fee short (a venue deducting the fee while configured as adding it on top).
            slack = cfg.verify_tolerance * received
            if cfg.verify_fee_share is not None and (venue, asset) in smallest_fee:
                slack = min(slack, cfg.verify_fee_share * smallest_fee[(venue, asset)])
            expected = before + change[(venue, asset)] - slack - 1e-6
            current = now[asset].total if asset in now else 0.0
            rows.append({"venue": venue, "asset": asset, "before": before, "expected": expected,
                         "now": current, "ok": current >= expected})
    ids = {int(i): {"id": c.get("withdrawal_id") or c.get("wise_transfer_id"),
                    "status": arrived.get(i, {}).get("status", c["status"]),
                    "arrived after": f"{arrived[i]['after_seconds']:.1f} s" if i in arrived else ""}
           for i, c in committed.items()}
    summary = summary_markdown(legs, ids, rows, saga_id=ctx.saga_id, fee_by_asset=plan.get("fee", {}),
                               naive_fee=plan.get("naive_fee", {}))
    bad = [r for r in rows if not r["ok"]]
    rebalance_journal.report(
        VERIFY, "balances verified" if not bad else f"{len(bad)} balance(s) short",
        {"summary": MetadataValue.md(summary), "verification": rows},
    )
    if bad:
        raise TransientError("balances short after arrival: " + ", ".join(
            f"{r['venue']} {r['asset']} {format_amount(r['asset'], r['now'])} < "
            f"{format_amount(r['asset'], r['expected'])}" for r in bad))
    return {"verified": rows}  # the markdown summary is in the step's report event (the engine logs this dict)


# --------------------------------------------------------------------------- 6. sweep (forward only)


def sweep_to_trading(ctx, exchange, rebalance_journal) -> dict[str, Any]:
    """Move what arrived into each destination's trading account (where it is margin), and no more; record what moved.

    Binance credits deposits to spot (or funding), OKX to its funding account: the arrival check and the
    verification count them (the venue's balances include that wallet), but they are no margin until moved.
    For every destination venue and asset of a crypto leg that arrived, the venue client moves at most what this
    rebalance's legs credited there (`sweep_bounds`), never the wallet's whole balance: an operator's own money
    there stays. A venue with one wallet, or with `sweep_deposits_to_trading` off, moves nothing.

    Every transfer is noted in the saga log before it is sent and again once its outcome is known
    (`sweep_ledger`), so a retry, a re-execution or a relaunch moves at most the bound less what already moved
    or may have moved: a transfer whose outcome stayed unknown (or that a killed run sent and never saw
    answered) counts as moved and is not resent; it is reported as `unconfirmed` for a person to check. A
    transient failure is retried, then escalated like any step after the pivot; a refusal (read-only venue)
    escalates at once.
    """
    plan = ctx.results[PLAN]
    skip = _skip_reason(plan)
    if skip:
        return {"skipped": skip}
    bounds = sweep_bounds(_legs(plan), ctx.results[AWAIT]["arrived"])
    swept: list[dict[str, Any]] = []
    for (venue, asset), bound in sorted(bounds.items()):
        moved, unknown = sweep_ledger(ctx.progress, venue, asset)
        remaining = round(bound - moved - unknown, 12)
        if remaining > 1e-9:
            seen: list[dict[str, Any]] = []
            _sweep_noted(ctx, exchange.venue(venue), venue, asset, remaining, ctx.progress, seen)
            moved, unknown = sweep_ledger([*ctx.progress, *seen], venue, asset)
        entry: dict[str, Any] = {"venue": venue, "asset": asset, "arrived": bound, "moved": moved}
        if unknown > 0:
            entry["unconfirmed"] = unknown
            ctx.log.warning(f"{venue}: {format_amount(asset, unknown)} {asset} were sent into the trading account "
                            "with an unknown outcome; counted as moved, not resent: check the withdrawal wallet")
        swept.append(entry)
    moved_any = [r for r in swept if r["moved"] > 0]
    message = ("moved into the trading account: " + ", ".join(
        f"{r['venue']} {format_amount(r['asset'], r['moved'])} {r['asset']}" for r in moved_any)
        if moved_any else "nothing to move into a trading account")
    unconfirmed = [r for r in swept if r.get("unconfirmed")]
    if unconfirmed:
        message += "; outcome unknown (not resent, check the wallet): " + ", ".join(
            f"{r['venue']} {format_amount(r['asset'], r['unconfirmed'])} {r['asset']}" for r in unconfirmed)
    rebalance_journal.report(SWEEP, message, {"swept": swept})
    return {"swept": swept}


def _sweep_noted(ctx, client, venue: str, asset: str, at_most: float, earlier, seen: list[dict[str, Any]]) -> None:
    """Sweep at most `at_most` of `asset` at `venue` into its trading account, noting every transfer in the saga log.

    Each `on_transfer` event becomes a `ctx.note` (`sending` durable before the transfer is requested; a lost claim
    raises there, before anything is sent) and is appended to `seen`, so the caller can read the ledger of
    `earlier` + `seen` (`sweep_ledger`) even when the sweep raises half-way. A client whose return exceeds what it
    reported is noted `moved_unreported` (counted against the bound). Venues whose transfers carry client ids
    (OKX) get a `transfer_key` counting the transfers `earlier` already records, so no later call reuses an id.
    """
    def record(event: str, amount: float) -> None:
        note = {"venue": venue, "asset": asset, "sweep": event, "amount": float(amount)}
        ctx.note(**note)
        seen.append(note)

    extra = {}
    if getattr(client, "internal_transfer_ids", False):
        extra["transfer_key"] = sweep_transfer_key(ctx, earlier, venue, asset)
    returned = float(client.sweep_to_trading(asset, at_most=at_most, on_transfer=record, **extra))
    reported = sum(n["amount"] for n in seen if n["sweep"] == "moved")
    if returned > reported + 1e-9:
        record("moved_unreported", returned - reported)


def sweep_bounds(legs: list[PlannedTransfer], arrived: Mapping[str, Any]) -> dict[tuple[str, str], float]:
    """(destination venue, asset) -> what this rebalance's crypto legs that arrived credited there: the most the
    forward sweep may move out of that venue's deposit wallet."""
    out: dict[tuple[str, str], float] = {}
    for leg in legs:
        if leg.kind == "withdrawal" and str(leg.index) in arrived:
            out[(leg.to_venue, leg.asset)] = out.get((leg.to_venue, leg.asset), 0.0) + float(leg.credited)
    return out


def sweep_transfer_key(ctx, progress, venue: str, asset: str) -> str:
    """The key a venue whose transfers carry client ids (OKX) derives this sweep call's transfer ids from: the saga's
    key for `venue`/`asset`, plus how many transfers the step's notes already record as `sending` there. Each
    transfer is noted before it is sent, so a later call (a retry, a re-execution, a relaunch) never reuses the id of
    a transfer that may have been sent. Every call gets the same key for the same notes."""
    sent = sum(1 for note in progress
               if note.get("venue") == venue and note.get("asset") == asset and note.get("sweep") == "sending")
    return ctx.key("sweep", venue, asset, sent)


def sweep_ledger(progress, venue: str, asset: str) -> tuple[float, float]:
    """(moved, outcome unknown) of `venue`/`asset` from the sweep step's notes across every attempt and run.

    Notes are `sending` (before a transfer is requested), then `moved` / `not_moved` once known;
    `moved_unreported` is a client's return above what it reported. A `sending` never resolved (an unknown
    outcome, or a run killed mid-transfer) counts as unknown. Notes of the older shape (`moved` only) count
    as moved."""
    sent = resolved = moved = 0.0
    for note in progress:
        if note.get("venue") != venue or note.get("asset") != asset:
            continue
        event = note.get("sweep")
        if event is None:
            moved += float(note.get("moved", 0.0))
            continue
        amount = float(note["amount"])
        if event == "sending":
            sent += amount
        elif event == "moved":
            moved += amount
            resolved += amount
        elif event == "not_moved":
            resolved += amount
        elif event == "moved_unreported":
            moved += amount
    return round(moved, 12), round(max(0.0, sent - resolved), 12)
