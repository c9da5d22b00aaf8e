"""`wise_refund_followup_sensor`: follows up the Wise refunds the rebalance saga left pending.

When a rebalance rolls back, its compensations cancel funded Wise transfers that Wise had not converted
yet, and Wise refunds them (`cancelled → funds_refunded`). The saga waits only briefly for that and then
records the leg under `refunded` with `"refunded": false` (refund pending). This sensor looks again
(docs/refund-followup.md); the decisions are `domain/wise_refunds.py`'s, this module only wires them:

1. **Discover** (saga log): the rebalance runs updated since the cursor's watermark (less a lag, since
   the recovery sensor may write a compensation into a finished run's log later) are read with
   `InstanceSagaLog`; every `refunded` entry of a `commit_transfers` / `prepare_transfers` compensation
   that still owes a mail becomes a watch in the instance's key-value table — unless one exists already.
2. **Check** (Wise): every open watch not yet seen refunded is read with `wise.get_transfer` (the resource's
   retries and circuit breaker).
3. **Mail** (SMTP): what `decide` asks for — a notice for `cancel_prepared` legs, one "refund arrived", one
   escalation after `alert_after_seconds` — each mail marked in the key-value table right after the server
   took it.

State lives in the instance's `kvs` table (same database as runs; survives daemon restarts, cursor resets
and failed ticks): `arb/wise_refund_followup/transfer/<id>` holds a watch (kept when closed, so a
re-discovery never reopens it), `arb/wise_refund_followup/open` the ids still open. The cursor holds only
the discovery watermark: lost, the next tick re-reads `discovery_lookback_seconds` of runs and finds every
watch already there, so nothing is mailed twice. A Wise or SMTP failure on one watch is recorded after the
others were handled, and the tick then fails with all of them (never a skip); what was done is stored.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable

from dagster import DefaultSensorStatus, RunsFilter, SensorEvaluationContext, SensorResult, SkipReason, sensor

from arb_orchestration import settings
from arb_orchestration.defs.k8s import REBALANCE_JOB
from arb_orchestration.domain.wise_refunds import (
    PIVOT_COMPENSATION,
    PREPARE_COMPENSATION,
    RecordedRefund,
    RefundWatch,
    decide,
    mailed,
    needs_check,
    watches_from_records,
)
from arb_orchestration.resources.smtp import SmtpResource
from arb_orchestration.resources.wise import WiseResource
from arb_orchestration.saga import InstanceSagaLog, RecordKind, SagaState, saga_id_for_run

if TYPE_CHECKING:
    from dagster import DagsterInstance

SENSOR_NAME = "wise_refund_followup_sensor"
ALERT_AFTER_SETTING = "ARB_WISE_REFUND_ALERT_AFTER_SECONDS"
DEFAULT_ALERT_AFTER_SECONDS = 86_400.0

KEY_PREFIX = "arb/wise_refund_followup/"
OPEN_KEY = KEY_PREFIX + "open"
# In a watch's entry, only when an operator closed it (`arb-orchestration refunds close`): {by, at, reason}.
CLOSED_BY_HAND_FIELD = "closed_by_hand"
# The saga-log steps whose compensation records `refunded` legs, and which compensation that is.
_COMPENSATIONS = {"commit_transfers": PIVOT_COMPENSATION, "prepare_transfers": PREPARE_COMPENSATION}
# A compensation can be written into a run's log after the run's last update (the recovery sensor
# compensates a failed run later): runs updated this long before the watermark are read again.
RECORD_LAG_SECONDS = 3600.0
# With no cursor (first tick, or reset): how far back rebalance runs are read. Longer than Wise keeps an
# unfunded transfer (14 days) and than any refund should take.
DISCOVERY_LOOKBACK_SECONDS = 30 * 86_400.0


class RefundFollowUpFailed(Exception):
    """Some watches could not be checked or mailed this tick (what was done is stored); the tick fails."""


def alert_after_seconds_from_env(deployment: str | None = None) -> float:
    """`ARB_WISE_REFUND_ALERT_AFTER_SECONDS`: a positive, finite number of seconds (refused at load otherwise)."""
    value = settings.get_float(ALERT_AFTER_SETTING, deployment)
    if not math.isfinite(value) or value <= 0:
        raise settings.SettingError(f"{ALERT_AFTER_SETTING} must be a positive number of seconds, "
                                    f"got {settings.raw(ALERT_AFTER_SETTING, deployment)!r}")
    return value


# --------------------------------------------------------------------------- state in the instance's kvs


def watch_key(transfer_id: int) -> str:
    return f"{KEY_PREFIX}transfer/{int(transfer_id)}"


class RefundWatchStore:
    """Watches in the instance's key-value table (see the module docstring). One writer: the sensor's tick."""

    def __init__(self, instance: "DagsterInstance"):
        self.instance = instance

    def _get(self, keys: set[str]) -> dict[str, str]:
        return self.instance.run_storage.get_cursor_values(keys) if keys else {}

    def open_ids(self) -> list[int]:
        raw = self._get({OPEN_KEY}).get(OPEN_KEY)
        return sorted(int(i) for i in json.loads(raw)) if raw else []

    def _set_open(self, ids: Iterable[int]) -> None:
        self.instance.run_storage.set_cursor_values({OPEN_KEY: json.dumps(sorted(set(ids)))})

    def known(self, transfer_ids: Iterable[int]) -> set[int]:
        keys = {watch_key(i): int(i) for i in transfer_ids}
        return {keys[k] for k in self._get(set(keys))}

    def load(self, transfer_ids: Iterable[int]) -> dict[int, RefundWatch]:
        """The watches among `transfer_ids`; one closed by hand is left out even if its id is listed open
        again (a tick's open-list write racing `close_by_hand`): no tick checks or mails it."""
        return {i: watch for i, (watch, closure) in self.entries(transfer_ids).items() if closure is None}

    def save(self, watch: RefundWatch) -> None:
        self.instance.run_storage.set_cursor_values({watch_key(watch.transfer_id): json.dumps(watch.to_json())})

    def add(self, watches: Iterable[RefundWatch]) -> None:
        """List new watches as open, then store them. In this order a crash in between leaves an id listed
        without a watch (skipped by `load`; the next discovery finds no watch and adds it again), never a
        watch that discovery counts as known but no tick checks."""
        watches = list(watches)
        if not watches:
            return
        self._set_open([*self.open_ids(), *(w.transfer_id for w in watches)])
        self.instance.run_storage.set_cursor_values(
            {watch_key(w.transfer_id): json.dumps(w.to_json()) for w in watches})

    def close(self, transfer_id: int) -> None:
        self._set_open(i for i in self.open_ids() if i != int(transfer_id))

    # ------------------------------------------------ operator access (`arb-orchestration refunds`)

    def all_ids(self) -> list[int]:
        """Every transfer id with a stored entry, open or closed: a prefix scan of the key-value table. Dagster
        has no public prefix read of kvs, so this uses the SQL run storage's table (SQLite and Postgres)."""
        import sqlalchemy as db
        from dagster._core.storage.runs.schema import KeyValueStoreTable

        prefix = f"{KEY_PREFIX}transfer/"

        with self.instance.run_storage.connect() as conn:
            rows = conn.execute(db.select(KeyValueStoreTable.c.key).where(
                KeyValueStoreTable.c.key.like(prefix + "%"))).fetchall()
        return sorted(int(r[0][len(prefix):]) for r in rows if r[0][len(prefix):].isdigit())

    def entries(self, transfer_ids: Iterable[int]) -> dict[int, tuple[RefundWatch, dict | None]]:
        """{id: (watch, hand closure or None)} of the stored entries among `transfer_ids`."""
        keys = {watch_key(i): int(i) for i in transfer_ids}
        out = {}
        for key, raw in self._get(set(keys)).items():
            data = json.loads(raw)
            closure = data.pop(CLOSED_BY_HAND_FIELD, None)
            out[keys[key]] = (RefundWatch.from_json(data), closure)
        return out

    def close_by_hand(self, transfer_id: int, *, by: str, reason: str, at: float | None = None) -> RefundWatch:
        """Close a watch an operator settled with Wise by other means: the entry records who, when and why
        (`closed_by_hand`), then the id leaves the open list, so no tick checks or mails it again. Raises
        `LookupError` (nothing changed) for an unknown id or a watch that is not open."""
        transfer_id = int(transfer_id)
        found = self.entries([transfer_id]).get(transfer_id)
        if found is None:
            raise LookupError(f"no refund watch for Wise transfer {transfer_id}")
        watch, closure = found
        if closure is not None:
            raise LookupError(f"Wise transfer {transfer_id} was already closed by hand by {closure.get('by')} "
                              f"at {closure.get('at')}: {closure.get('reason')}")
        if transfer_id not in self.open_ids():
            raise LookupError(f"Wise transfer {transfer_id} is already closed (refunded and mailed)")
        data = watch.to_json()
        data[CLOSED_BY_HAND_FIELD] = {"by": by, "at": time.time() if at is None else at, "reason": reason}
        self.instance.run_storage.set_cursor_values({watch_key(transfer_id): json.dumps(data)})
        self.close(transfer_id)
        return watch


# --------------------------------------------------------------------------- discovery from the saga log


def recorded_refunds(state: SagaState) -> list[RecordedRefund]:
    """Every `refunded` entry of the compensation records of `state` (one saga)."""
    out = []
    for record in state.records:
        if record.kind is not RecordKind.STEP_COMPENSATED or record.step not in _COMPENSATIONS:
            continue
        for entry in (record.data.get("details") or {}).get("refunded") or []:
            out.append(RecordedRefund(state.saga_id, record.run_id, _COMPENSATIONS[record.step],
                                      record.timestamp, entry))
    return out


def discover(instance: "DagsterInstance", *, updated_after: float, job_name: str = REBALANCE_JOB
             ) -> tuple[int, list[RefundWatch]]:
    """(sagas read, watches owed by them) from the rebalance runs updated after `updated_after` (epoch s)."""
    runs = instance.get_runs(filters=_runs_filter(job_name, updated_after))
    log = InstanceSagaLog(instance)
    seen: set[str] = set()
    watches: list[RefundWatch] = []
    for run in runs:
        saga_id = saga_id_for_run(run, instance.get_run_by_id)
        if saga_id in seen:
            continue
        seen.add(saga_id)
        watches += watches_from_records(recorded_refunds(log.load(saga_id))).values()
    return len(seen), watches


def _runs_filter(job_name: str, updated_after: float) -> RunsFilter:
    return RunsFilter(job_name=job_name, updated_after=datetime.fromtimestamp(updated_after, timezone.utc))


# --------------------------------------------------------------------------- one tick


@dataclass
class TickReport:
    sagas_read: int = 0
    discovered: int = 0
    open_before: int = 0
    checked: int = 0
    refunded: int = 0
    pending: int = 0
    mailed: int = 0
    escalated: int = 0
    closed: int = 0
    open_after: int = 0

    def describe(self) -> str:
        return (f"read {self.sagas_read} rebalance saga(s), {self.discovered} new refund leg(s); "
                f"{self.open_before} open: checked {self.checked} with Wise ({self.refunded} refunded, "
                f"{self.pending} still pending); mailed {self.mailed} ({self.escalated} escalation(s)); "
                f"closed {self.closed}, {self.open_after} open")


@dataclass(frozen=True)
class FollowUpCursor:
    """Discovery watermark: epoch seconds up to which rebalance runs were read (None: never / reset)."""

    scanned_until: float | None = None

    @classmethod
    def parse(cls, raw: str | None) -> "FollowUpCursor":
        if not raw:
            return cls()
        try:
            return cls(float(json.loads(raw)["scanned_until"]))
        except (ValueError, TypeError, KeyError):  # an unreadable watermark only costs a longer re-read
            return cls()

    def dump(self) -> str:
        return json.dumps({"scanned_until": self.scanned_until})


def follow_up(instance: "DagsterInstance", wise, smtp, cursor: FollowUpCursor, *, alert_after_seconds: float,
              now: float | None = None, log=None, job_name: str = REBALANCE_JOB,
              discovery_lookback_seconds: float = DISCOVERY_LOOKBACK_SECONDS) -> tuple[TickReport, FollowUpCursor]:
    """One tick: discover, check, mail (module docstring). Raises `RefundFollowUpFailed` after doing
    everything it could when a Wise read or a mail failed."""
    now = time.time() if now is None else now
    store = RefundWatchStore(instance)
    report = TickReport()
    since = (cursor.scanned_until - RECORD_LAG_SECONDS if cursor.scanned_until is not None
             else now - discovery_lookback_seconds)
    report.sagas_read, found = discover(instance, updated_after=since, job_name=job_name)
    known = store.known(w.transfer_id for w in found)
    new = [w for w in found if w.transfer_id not in known]
    store.add(new)
    report.discovered = len(new)

    open_ids = store.open_ids()
    report.open_before = len(open_ids)
    failures: list[str] = []
    for transfer_id, watch in sorted(store.load(open_ids).items()):
        status = None
        if needs_check(watch):
            try:
                status = wise.get_transfer(transfer_id).status
            except Exception as exc:  # noqa: BLE001 - collected and raised below, after the other watches
                failures.append(f"Wise transfer {transfer_id} (saga {watch.saga_id}): could not read its status: "
                                f"{type(exc).__name__}: {exc}")
                continue
            report.checked += 1
        decision = decide(watch, status, now=now, alert_after_seconds=alert_after_seconds)
        watch = decision.watch
        store.save(watch)  # what Wise showed, before any mail about it
        if status is not None:
            report.refunded += watch.refunded
            report.pending += not watch.refunded
        for mail in decision.mails:
            try:
                smtp.send(mail.subject, mail.body, message_id=mail.message_id)
            except Exception as exc:  # noqa: BLE001 - collected and raised below; the mail is owed next tick
                failures.append(f"Wise transfer {transfer_id} (saga {watch.saga_id}): could not mail the "
                                f"{mail.kind}: {type(exc).__name__}: {exc}")
                break
            watch = mailed(watch, mail, now=now)
            store.save(watch)
            report.mailed += 1
            report.escalated += mail.kind == "escalation"
            if log is not None:
                log.info(f"mailed the {mail.kind} of Wise transfer {transfer_id} (saga {watch.saga_id})")
        if watch.closed:
            store.close(transfer_id)
            report.closed += 1
    report.open_after = len(store.open_ids())
    if failures:
        raise RefundFollowUpFailed(f"{report.describe()}; {len(failures)} failure(s): " + "; ".join(failures))
    return report, FollowUpCursor(scanned_until=now)


def build_wise_refund_followup_sensor(*, alert_after_seconds: float, minimum_interval_seconds: int = 60,
                                      job_name: str = REBALANCE_JOB,
                                      default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING):
    """The sensor (no runs: it reads, asks Wise, mails); `alert_after_seconds` from the setting at load."""

    @sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            "Follows up Wise transfers the rebalance saga cancelled after funding: mails the risk team once "
            f"when Wise refunds one left pending, once if it is still not refunded after {alert_after_seconds:g} s, "
            "and once for each refunded leg of cancel_prepared (docs/refund-followup.md)."
        ),
    )
    def wise_refund_followup_sensor(context: SensorEvaluationContext, wise: WiseResource, smtp: SmtpResource):
        report, cursor = follow_up(context.instance, wise, smtp, FollowUpCursor.parse(context.cursor),
                                   alert_after_seconds=alert_after_seconds, log=context.log, job_name=job_name)
        message = report.describe()
        context.log.info(message)
        return SensorResult(skip_reason=SkipReason(message), cursor=cursor.dump())

    return wise_refund_followup_sensor


def wise_refund_followup_sensor_from_env(deployment: str | None = None):
    return build_wise_refund_followup_sensor(alert_after_seconds=alert_after_seconds_from_env(deployment))


__all__ = [
    "RefundFollowUpFailed",
    "RefundWatchStore",
    "build_wise_refund_followup_sensor",
    "follow_up",
    "wise_refund_followup_sensor_from_env",
]
