"""The pivot's Wise legs: fund them through the API, or park for a person and wait with a deadline.

With an EU/UK personal token Wise refuses to fund a transfer through the API
(PSD2 strong customer authentication): `fund_transfer` raises
`FundingRequiresHumanError` and the transfer stays unfunded and cancellable.
The saga does not fail then. It *parks* the leg at the pivot:

1. records it in the saga log (`ctx.note(parked=..., wise_transfer_id=..., amount=..., deadline=...)`);
2. shows it in the run: a WARNING log line and a `commit_transfers` engine event
   "waiting for a human to approve Wise transfer X … until T", and the run tag
   `arb/waiting_for_human`;
3. mails the risk team what to approve in the Wise app, and by when;
4. waits (`wait_until_funded`, polling every `human_funding_poll_seconds`, and
   reading at once when the instance's Wise webhook board says it was funded) until
   the deadline (`human_funding_timeout_seconds`; a retried pivot keeps the
   deadline it announced; never past the run's `dagster/max_runtime`);
5. funded → the leg is committed and the saga goes on (mail "funded");
   still unfunded at the deadline → the transfer is cancelled, the risk team
   mailed, and the step fails with a `BusinessError` (`human_funding_timeout`),
   so the engine compensates the legs that can still be undone. A transfer a
   person funded while it was being cancelled is taken as funded (one Wise
   already refunded or charged back by then is closed: `human_funding_closed`).

The decisions (order, deadline, what to do with a leg) are pure and live in
`domain/rebalance.py`; this module does the I/O.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

from dagster import MetadataValue

from arb_orchestration.domain.rebalance import (
    ParkAction,
    ParkedFunding,
    PlannedTransfer,
    earlier_park_deadlines,
    park_action,
    park_deadline,
)
from arb_orchestration.resources.errors import BusinessError, TransientError
from arb_orchestration.resources.wise import FUNDED_STATUSES, WAITING
from arb_orchestration.resources.wise_production import FundingRequiresHumanError
from arb_orchestration.resources.wise_webhooks import WebhookBoard, wait_for_transfer_state

COMMIT = "commit_transfers"
WAITING_FOR_HUMAN_TAG = "arb/waiting_for_human"
HUMAN_FUNDING_TIMEOUT = "human_funding_timeout"
HUMAN_FUNDING_CLOSED = "human_funding_closed"
# A "still waiting" line in the run's log this often while parked.
REMINDER_SECONDS = 900.0
# What the run needs after the park besides `arrival_timeout_seconds`: withdrawals, verification.
AFTER_PARK_RESERVE_SECONDS = 300.0


def funding_may_need_human(wise: Any) -> bool:
    """A Wise resource on a personal token: in the EU/UK, Wise refuses to fund through the API (SCA).

    `ProductionWiseResource` says how it authenticates (`auth`); the plain
    `WiseResource` (the local simulator) never needs a person.
    """
    return getattr(wise, "auth", None) == "personal_token"


def _mask(iban: str | None) -> str:
    if not iban:
        return ""
    return iban if len(iban) <= 10 else f"{iban[:4]}…{iban[-4:]}"


def wise_leg_committed(leg: PlannedTransfer, target: Mapping[str, Any], *, funded_by: str) -> dict[str, Any]:
    """The pivot's record of a funded Wise leg (what await_arrival and verify_balances read)."""
    return {
        "kind": "wise", "wise_transfer_id": target["wise_transfer_id"],
        "customer_transaction_id": target["customer_transaction_id"], "amount": target["target_value"],
        "fee": target["wise_fee"], "status": "funded", "funded_by": funded_by, "eta_seconds": leg.eta_seconds,
        "committed_at": time.time(),
    }


def fund_wise_legs(
    ctx, wise, smtp, rebalance_journal, legs: Sequence[PlannedTransfer], prepared: Mapping[str, Mapping[str, Any]],
    *, already_funded: set[int], withdrawals_sent: bool,
) -> dict[str, dict[str, Any]]:
    """Fund every Wise leg; park those Wise refuses to fund through the API until a person funds them.

    `already_funded`: transfer ids an earlier attempt (or a person) funded — not
    funded again. `withdrawals_sent`: whether this pivot already created its
    withdrawals (said in the mail: what a cancellation would leave behind).
    Returns the committed legs by index; raises `BusinessError` when a parked
    leg was not funded in time (its transfer cancelled) or was closed meanwhile.
    """
    committed: dict[str, dict[str, Any]] = {}
    refused: list[PlannedTransfer] = []
    for leg in legs:
        target = prepared[str(leg.index)]
        transfer_id = int(target["wise_transfer_id"])
        if transfer_id not in already_funded:
            try:
                wise.fund_transfer(transfer_id)
            except FundingRequiresHumanError as exc:
                ctx.log.warning(f"leg #{leg.index}: {exc}")
                refused.append(leg)
                continue
        ctx.note(committed=leg.index, wise_transfer_id=transfer_id)
        committed[str(leg.index)] = wise_leg_committed(leg, target, funded_by="api")
    if refused:
        committed.update(_park(ctx, wise, smtp, rebalance_journal, refused, prepared, withdrawals_sent=withdrawals_sent))
    return committed


# --------------------------------------------------------------------------- parking


def _park(ctx, wise, smtp, journal, refused: Sequence[PlannedTransfer], prepared, *, withdrawals_sent: bool):
    cfg = ctx.config
    now = time.time()
    earlier = earlier_park_deadlines(journal.step_progress(ctx.saga_id, COMMIT))
    run_ends_at = journal.run_ends_at()
    reserve = cfg.arrival_timeout_seconds + AFTER_PARK_RESERVE_SECONDS
    parked: list[ParkedFunding] = []
    for leg in refused:
        target = prepared[str(leg.index)]
        transfer_id = int(target["wise_transfer_id"])
        deadline, why = park_deadline(now, cfg.human_funding_timeout_seconds, earlier=earlier.get(transfer_id),
                                      run_ends_at=run_ends_at, reserve=reserve)
        if why:
            ctx.log.warning(f"leg #{leg.index}: the wait for a human is {why}")
        p = ParkedFunding(index=leg.index, transfer_id=transfer_id, amount=float(target["source_value"]),
                          currency=leg.asset, to_venue=leg.to_venue, credited=float(target["target_value"]),
                          parked_at=now, deadline=deadline, reference=str(target.get("reference") or f"rebalance {ctx.saga_id[:8]}-{leg.index}"),
                          recipient=_mask(target.get("address")))
        ctx.note(**p.to_note())
        ctx.log.warning(p.describe())
        parked.append(p)

    headline = "; ".join(p.describe() for p in parked)
    journal.report(COMMIT, headline, {
        "parked": MetadataValue.md(_parked_markdown(parked)),
        "waiting_for_human": [p.to_note() for p in parked],
        "deadline_utc": min(parked, key=lambda p: p.deadline).deadline_utc,
    })
    _tag(ctx, journal, "; ".join(f"wise transfer {p.transfer_id} until {p.deadline_utc}" for p in parked))
    _mail(ctx, smtp, *_request_mail(ctx, wise, parked, reminder=bool(earlier), withdrawals_sent=withdrawals_sent))

    board = journal_webhook_board(journal)
    outcomes = {p.index: _wait_for_person(ctx, wise, p, board) for p in parked}
    funded = [p for p in parked if outcomes[p.index] is ParkAction.PROCEED]
    missed = [p for p in parked if outcomes[p.index] is not ParkAction.PROCEED]
    committed: dict[str, dict[str, Any]] = {}
    for p in funded:
        ctx.note(committed=p.index, wise_transfer_id=p.transfer_id, funded_by="human")
        leg = next(leg for leg in refused if leg.index == p.index)
        committed[str(p.index)] = wise_leg_committed(leg, prepared[str(p.index)], funded_by="human")
    if missed:
        for p in missed:
            ctx.note(expired=p.index, wise_transfer_id=p.transfer_id, outcome=outcomes[p.index].value)
        _tag(ctx, journal, "; ".join(f"wise transfer {p.transfer_id}: {_missed_word(outcomes[p.index])}" for p in missed))
        message = _missed_message(ctx, missed, outcomes)
        journal.report(COMMIT, message, {"missed": [{**p.to_note(), "outcome": outcomes[p.index].value} for p in missed],
                                         "funded_by_hand": [p.transfer_id for p in funded]})
        _mail(ctx, smtp, f"[rebalance] Wise funding not approved in time: rolling back [{ctx.saga_id}]",
              _missed_mail(ctx, missed, funded, outcomes, withdrawals_sent=withdrawals_sent))
        closed_only = all(outcomes[p.index] is ParkAction.CLOSED for p in missed)
        raise BusinessError(message, code=HUMAN_FUNDING_CLOSED if closed_only else HUMAN_FUNDING_TIMEOUT)
    _tag(ctx, journal, "no (funded by hand)")
    journal.report(COMMIT, f"funded by hand in the Wise app: {', '.join(str(p.transfer_id) for p in funded)}",
                   {"funded_by_hand": [p.transfer_id for p in funded]})
    _mail(ctx, smtp, f"[rebalance] Wise transfer(s) funded by hand: saga continues [{ctx.saga_id}]",
          "\n".join([f"Rebalance saga {ctx.saga_id}: thank you, these transfers were funded in the Wise app; "
                     "the saga goes on by itself:"]
                    + [f"  transfer {p.transfer_id}: {p.amount:,.2f} {p.currency} → {p.to_venue}" for p in funded]))
    return committed


def journal_webhook_board(journal) -> WebhookBoard | None:
    """The instance's Wise webhook board, when the journal has one (a journal fake in a unit test may not)."""
    get = getattr(journal, "webhook_board", None)
    return get() if get is not None else None


def _wait_funded(wise, transfer_id: int, *, timeout: float, poll_interval: float, board: WebhookBoard | None):
    """`ProductionWiseResource.wait_until_funded`; for the plain `WiseResource` the same wait on its states.

    Both look at the webhook board (when there is one) between their polls of Wise.
    """
    wait = getattr(wise, "wait_until_funded", None)
    if wait is not None:
        extra = {"board": board} if board is not None else {}
        return wait(transfer_id, timeout=timeout, poll_interval=poll_interval, **extra)
    return wait_for_transfer_state(wise, transfer_id, FUNDED_STATUSES, board=board, timeout=timeout,
                                   poll_interval=poll_interval)


def _wait_for_person(ctx, wise, p: ParkedFunding, board: WebhookBoard | None = None) -> ParkAction:
    """Wait until the transfer is funded, closed, or the deadline passed (then cancel it)."""
    poll = ctx.config.human_funding_poll_seconds
    while True:
        remaining = p.deadline - time.time()
        if remaining > 0:
            try:
                _wait_funded(wise, p.transfer_id, timeout=min(remaining, REMINDER_SECONDS), poll_interval=poll,
                             board=board)
            except TransientError:  # this slice ran out (or reads failed throughout): still waiting
                if p.deadline - time.time() > 0:
                    ctx.log.info(f"still {p.describe()} ({(p.deadline - time.time()) / 60:.0f} min left)")
                continue
            except BusinessError:  # closed meanwhile: the read below decides
                pass
        transfer = wise.get_transfer(p.transfer_id)
        action = park_action(waiting=transfer.status == WAITING, failed=transfer.is_failed, now=time.time(),
                             deadline=p.deadline)
        if action is ParkAction.WAIT:
            continue
        if action is ParkAction.CANCEL:
            return _cancel_unfunded(ctx, wise, p)
        ctx.log.info(f"leg #{p.index}: Wise transfer {p.transfer_id} is {transfer.status}")
        return action


def _cancel_unfunded(ctx, wise, p: ParkedFunding) -> ParkAction:
    try:
        wise.cancel_transfer(p.transfer_id)
    except BusinessError:
        # Refused: a person funded it at the last moment (it can no longer be cancelled).
        transfer = wise.get_transfer(p.transfer_id)
        if transfer.is_failed:  # funded, then refunded/charged back (both also count as "funded" statuses)
            ctx.log.warning(f"leg #{p.index}: Wise transfer {p.transfer_id} is {transfer.status}: closed")
            return ParkAction.CLOSED
        if transfer.is_funded:
            ctx.log.warning(f"leg #{p.index}: Wise transfer {p.transfer_id} was funded as the deadline passed; "
                            "taking it as funded")
            return ParkAction.PROCEED
        raise
    ctx.log.warning(f"leg #{p.index}: nobody funded Wise transfer {p.transfer_id} by {p.deadline_utc}: cancelled")
    return ParkAction.CANCEL


# --------------------------------------------------------------------------- what people see


def _tag(ctx, journal, value: str) -> None:
    try:
        journal.tag_run({WAITING_FOR_HUMAN_TAG: value[:255]})
    except Exception as exc:  # a cosmetic tag: the log line and the engine event carry the same facts
        ctx.log.warning(f"could not tag the run {WAITING_FOR_HUMAN_TAG}={value!r}: {type(exc).__name__}: {exc}")


def _mail(ctx, smtp, subject: str, body: str) -> None:
    try:
        smtp.send(subject, body)
    except Exception as exc:  # the run shows the park (log, event, tag); a broken mailer must not hide it
        ctx.log.error(f"could not mail the risk team ({subject}): {type(exc).__name__}: {exc}")


def _parked_markdown(parked: Sequence[ParkedFunding]) -> str:
    rows = ["| leg | Wise transfer | amount | to | recipient | approve by |", "|---|---|---|---|---|---|"]
    rows += [f"| #{p.index} | {p.transfer_id} | {p.amount:,.2f} {p.currency} | {p.to_venue} | {p.recipient} | "
             f"{p.deadline_utc} |" for p in parked]
    return "\n".join(["**Waiting for a human to approve in the Wise app**", "", *rows])


def _request_mail(ctx, wise, parked: Sequence[ParkedFunding], *, reminder: bool, withdrawals_sent: bool):
    first = min(parked, key=lambda p: p.deadline)
    ids = ", ".join(str(p.transfer_id) for p in parked)
    subject = (f"[rebalance] {'REMINDER: ' if reminder else ''}ACTION NEEDED: approve Wise transfer {ids} "
               f"in the Wise app by {first.deadline_utc} [{ctx.saga_id}]")
    profile = getattr(wise, "profile_id", "?")
    lines = [
        f"Rebalance saga {ctx.saga_id} (run {ctx.run_id}) is waiting for a person.",
        "",
        "Wise refused to fund these transfers through the API: strong customer authentication is required",
        "(PSD2: a personal API token in the EU/UK cannot fund transfers). Please fund each one from the",
        f"Wise balance in the Wise app or at https://wise.com (profile {profile}) before its deadline:",
        "",
    ]
    lines += [f"  transfer {p.transfer_id}: {p.amount:,.2f} {p.currency} to {p.to_venue} ({p.recipient}), "
              f"reference \"{p.reference}\", arrives {p.credited:,.2f} {p.currency} -- approve by {p.deadline_utc}"
              for p in parked]
    lines += [
        "",
        "The saga notices the funding by itself and goes on (arrival, balance check).",
        "If a transfer is not funded by its deadline, the saga cancels it and rolls the rebalance back.",
        ("The crypto withdrawals of this rebalance were already sent: they are not undone by a rollback."
         if withdrawals_sent else
         "Nothing else of this rebalance has moved yet: its crypto withdrawals wait for this funding."),
    ]
    return subject, "\n".join(lines)


def _missed_word(action: ParkAction) -> str:
    return "closed in Wise" if action is ParkAction.CLOSED else "not funded in time, cancelled"


def _missed_message(ctx, missed: Sequence[ParkedFunding], outcomes: Mapping[int, ParkAction]) -> str:
    parts = [f"Wise transfer {p.transfer_id} (leg #{p.index}, {p.amount:,.2f} {p.currency} → {p.to_venue}) "
             f"{'was closed in Wise before anyone funded it' if outcomes[p.index] is ParkAction.CLOSED else f'was not funded by a person by {p.deadline_utc}: cancelled'}"
             for p in missed]
    return "rebalance needs a human to fund Wise transfers and none did: " + "; ".join(parts) + \
        ". The saga rolls back what can still be undone."


def _missed_mail(ctx, missed, funded, outcomes, *, withdrawals_sent: bool) -> str:
    lines = [f"Rebalance saga {ctx.saga_id} (run {ctx.run_id}) gave up waiting for the Wise funding:", ""]
    lines += [f"  transfer {p.transfer_id}: {p.amount:,.2f} {p.currency} to {p.to_venue} -- {_missed_word(outcomes[p.index])}"
              for p in missed]
    if funded:
        lines += ["", "Funded by hand (these left and will arrive; the rollback reports them as in flight):"]
        lines += [f"  transfer {p.transfer_id}: {p.amount:,.2f} {p.currency} to {p.to_venue}" for p in funded]
    lines += ["", "The saga now rolls back the rest (a separate mail confirms).",
              ("Its crypto withdrawals had already been sent; pending ones are cancelled, the others reported."
               if withdrawals_sent else "None of its crypto withdrawals had been sent."),
              "The next rebalance plans again from fresh balances."]
    return "\n".join(lines)
