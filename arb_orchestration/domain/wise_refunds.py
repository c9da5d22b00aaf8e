"""Following up Wise refunds the rebalance saga left pending: which legs to watch, what to mail, when.

Pure Python (no Dagster, no I/O); `defs/rebalance/refunds.py` feeds it the saga log, Wise's answers and
the clock, stores what it returns, and sends the mails it asks for.

Where the legs come from: a compensation that cancels a *funded* Wise transfer (still before
`funds_converted`) records it under `refunded` in its saga-log details, `{"index", "wise_transfer_id",
"amount", "currency", "status", "refunded"}`: `cancel_uncommitted` (the pivot's compensation, key
`commit_transfers`) and `cancel_prepared` (key `prepare_transfers`). `"refunded": false` is "refund
pending": Wise had not refunded it within the saga's short wait.

What is owed per transfer (`RefundWatch`):

* **notice** — a leg only `cancel_prepared` recorded was never mailed by the saga (the pivot's
  compensation mails its own): one mail, saying what Wise shows when it is sent (refunded, or pending);
* **refunded** — a leg someone was told is pending gets one mail once Wise shows `funds_refunded`
  (a notice sent when it was already refunded counts as this one);
* **escalation** — a leg still not refunded `alert_after_seconds` after its compensation recorded it
  gets one escalation; it stays watched, and its refund is still mailed when it comes.

A leg the pivot's compensation already mailed as refunded owes nothing and is not watched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Mapping

from arb_orchestration.domain.rebalance import format_amount

REFUNDED_STATUS = "funds_refunded"

# Which compensation recorded a leg (the saga-log step whose compensation it was).
PIVOT_COMPENSATION = "cancel_uncommitted"
PREPARE_COMPENSATION = "cancel_prepared"

NOTICE = "notice"
REFUNDED = "refunded"
ESCALATION = "escalation"


@dataclass(frozen=True)
class RecordedRefund:
    """One `refunded` entry of one compensation record in a saga's log."""

    saga_id: str
    run_id: str | None
    compensation: str  # PIVOT_COMPENSATION | PREPARE_COMPENSATION
    recorded_at: float  # epoch seconds of the compensation record
    entry: Mapping[str, Any]


@dataclass(frozen=True)
class RefundWatch:
    """The follow-up of one cancelled funded Wise transfer: the facts the log recorded, and what was done.

    Stored as JSON (`to_json`/`from_json`); `*_mailed_at` are set only after the mail server took the mail.
    """

    transfer_id: int
    saga_id: str
    run_id: str | None
    index: int
    amount: float
    currency: str
    recorded_status: str
    recorded_at: float
    compensations: tuple[str, ...]
    last_status: str
    checked_at: float | None = None
    refunded_seen_at: float | None = None
    notice_mailed_at: float | None = None
    refunded_mailed_at: float | None = None
    escalated_at: float | None = None

    @property
    def notice_owed(self) -> bool:
        """Recorded by `cancel_prepared` only: the saga mailed nothing about it."""
        return PIVOT_COMPENSATION not in self.compensations and self.notice_mailed_at is None

    @property
    def refunded(self) -> bool:
        return self.last_status == REFUNDED_STATUS

    @property
    def closed(self) -> bool:
        """Nothing more to check or mail: refunded, and everyone told so."""
        return self.refunded and not self.notice_owed and (self.refunded_mailed_at is not None
                                                            or self.recorded_status == REFUNDED_STATUS)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["compensations"] = list(self.compensations)
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "RefundWatch":
        data = dict(raw)
        data["compensations"] = tuple(data.get("compensations") or ())
        return cls(**data)


def watches_from_records(records: Iterable[RecordedRefund]) -> dict[int, RefundWatch]:
    """One watch per transfer id that still owes something, from a saga's compensation records.

    A transfer both compensations recorded is one watch (the pivot's compensation mailed it). A later
    record of the same transfer updates what is known of it now (`last_status`), not what was said then.
    Legs the pivot's compensation recorded as refunded owe nothing: left out.
    """
    merged: dict[int, RefundWatch] = {}
    for rec in sorted(records, key=lambda r: r.recorded_at):
        e = rec.entry
        transfer_id = int(e["wise_transfer_id"])
        status = str(e.get("status") or "")
        if bool(e.get("refunded")) and status != REFUNDED_STATUS:
            status = REFUNDED_STATUS
        known = merged.get(transfer_id)
        if known is None:
            merged[transfer_id] = RefundWatch(
                transfer_id=transfer_id, saga_id=rec.saga_id, run_id=rec.run_id, index=int(e["index"]),
                amount=float(e["amount"]), currency=str(e["currency"]), recorded_status=status,
                recorded_at=rec.recorded_at, compensations=(rec.compensation,), last_status=status,
            )
        else:
            # `recorded_status` stays what the first record (and its mail, if the pivot's) said; the newest
            # knowledge goes to `last_status` (refunded stays refunded).
            comps = known.compensations + (() if rec.compensation in known.compensations else (rec.compensation,))
            last = REFUNDED_STATUS if REFUNDED_STATUS in (status, known.last_status) else status
            merged[transfer_id] = replace(known, compensations=comps, last_status=last)
    return {i: w for i, w in merged.items() if not w.closed}


def needs_check(watch: RefundWatch) -> bool:
    """Ask Wise again: the refund has not been seen yet."""
    return not watch.refunded


@dataclass(frozen=True)
class Mail:
    kind: str  # NOTICE | REFUNDED | ESCALATION
    transfer_id: int
    subject: str
    body: str

    @property
    def message_id(self) -> str:
        """The same for every attempt of this mail: a duplicate (lost acknowledgement, crash) is recognisable."""
        return f"<arb-wise-refund-{self.kind}-{self.transfer_id}@arb-orchestration>"


@dataclass(frozen=True)
class Decision:
    watch: RefundWatch  # with what was seen now (mail marks are the caller's, after each send)
    mails: tuple[Mail, ...] = field(default_factory=tuple)


def decide(watch: RefundWatch, status: str | None, *, now: float, alert_after_seconds: float) -> Decision:
    """What to mail about `watch`, given the status Wise shows now (None: not asked this tick)."""
    if status is not None:
        watch = replace(watch, last_status=status, checked_at=now)
    if watch.refunded and watch.refunded_seen_at is None:
        watch = replace(watch, refunded_seen_at=now)
    mails: list[Mail] = []
    if watch.notice_owed:
        mails.append(_notice(watch))
    elif watch.refunded and watch.refunded_mailed_at is None and watch.recorded_status != REFUNDED_STATUS:
        mails.append(_refunded(watch))
    if (not watch.refunded and watch.escalated_at is None
            and now - watch.recorded_at >= alert_after_seconds):
        mails.append(_escalation(watch, now, alert_after_seconds))
    return Decision(watch, tuple(mails))


def mailed(watch: RefundWatch, mail: Mail, *, now: float) -> RefundWatch:
    """`watch` after the mail server took `mail`."""
    if mail.kind == NOTICE:
        # A notice that said "refunded" is the refund mail too.
        return replace(watch, notice_mailed_at=now,
                       refunded_mailed_at=now if watch.refunded and watch.refunded_mailed_at is None
                       else watch.refunded_mailed_at)
    if mail.kind == REFUNDED:
        return replace(watch, refunded_mailed_at=now)
    return replace(watch, escalated_at=now)


# --------------------------------------------------------------------------- mail texts


def _what(w: RefundWatch) -> str:
    return (f"Wise transfer {w.transfer_id} ({format_amount(w.currency, w.amount)} {w.currency}, "
            f"leg #{w.index} of rebalance saga {w.saga_id}, run {w.run_id or 'unknown'})")


def _notice(w: RefundWatch) -> Mail:
    state = ("refunded to the Wise balance" if w.refunded
             else f"refund pending (Wise shows it {w.last_status})")
    lines = [f"{_what(w)} had been funded and was cancelled when the saga rolled back its prepared transfers "
             f"({PREPARE_COMPENSATION}): nothing reaches the destination, the money goes back to the Wise balance.",
             f"Now: {state}."]
    if not w.refunded:
        lines.append("You will get one more mail when Wise refunds it, or an escalation if it does not.")
    subject = (f"[rebalance] funded Wise transfer {w.transfer_id} cancelled, "
               + ("refunded" if w.refunded else "refund pending")
               + f": {format_amount(w.currency, w.amount)} {w.currency} [{w.saga_id}]")
    return Mail(NOTICE, w.transfer_id, subject, "\n".join(lines))


def _refunded(w: RefundWatch) -> Mail:
    body = (f"{_what(w)} was cancelled after funding and recorded as refund pending "
            f"(Wise showed it {w.recorded_status}). Wise now shows it {REFUNDED_STATUS}: "
            f"{format_amount(w.currency, w.amount)} {w.currency} is back on the Wise balance. Nothing else to do.")
    subject = (f"[rebalance] Wise refund arrived: transfer {w.transfer_id} "
               f"{format_amount(w.currency, w.amount)} {w.currency} [{w.saga_id}]")
    return Mail(REFUNDED, w.transfer_id, subject, body)


def _escalation(w: RefundWatch, now: float, alert_after_seconds: float) -> Mail:
    waited = now - w.recorded_at
    body = (f"{_what(w)} was cancelled after funding {waited / 3600:.1f} h ago and Wise has still not "
            f"refunded it: it shows {w.last_status} (alert after {alert_after_seconds:g} s). "
            f"{format_amount(w.currency, w.amount)} {w.currency} left the Wise balance and has not come back. "
            "Check the transfer in the Wise app or with Wise support. This is the only escalation for it; "
            "a mail follows if the refund still arrives.")
    subject = (f"[rebalance] ESCALATION: Wise refund missing for transfer {w.transfer_id} "
               f"{format_amount(w.currency, w.amount)} {w.currency} [{w.saga_id}]")
    return Mail(ESCALATION, w.transfer_id, subject, body)
