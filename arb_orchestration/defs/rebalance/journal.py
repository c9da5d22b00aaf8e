"""The rebalance saga's view of the Dagster instance: today's rebalances, and reports into the run's log.

Saga steps receive resources, not the op context, so what they need from the
instance comes through `RebalanceJournalResource` (key `rebalance_journal`):

* `used_today()` — what earlier rebalance sagas moved or still hold reserved
  today, per asset, read from their saga logs (the per-day guardrail);
* `legs_in_flight(lookback_seconds=...)` — earlier rebalance sagas with legs
  that left but were never verified as arrived (the `legs_in_flight` guardrail);
* `report(step, message, metadata)` — an engine event in the current run,
  attached to the step, carrying Dagster metadata (tables, markdown) so the
  UI shows transfer ids, amounts, fees and etas next to each step;
* `step_progress(saga_id, step)` — the notes earlier attempts of a step wrote
  (a retried pivot keeps the deadline it announced for a parked Wise leg);
* `run_ends_at()` — when run monitoring terminates this run (`dagster/max_runtime`);
* `tag_run(tags)` — run tags, e.g. `arb/waiting_for_human`, so the Runs page
  shows a saga parked for a person;
* `webhook_board()` — the Wise webhook board in the instance (written by
  `arb-orchestration wise-webhooks serve`), which the saga's Wise waits look at.

It opens nothing at import or load; the instance comes from the run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from dagster import ConfigurableResource, InitResourceContext, MetadataValue, RunsFilter
from pydantic import PrivateAttr

from arb_orchestration.defs.k8s import MAX_RUNTIME_TAG, REBALANCE_JOB
from arb_orchestration.domain.rebalance import PastRebalance, daily_usage
from arb_orchestration.resources.wise_webhooks import InstanceWebhookBoard
from arb_orchestration.saga import InstanceSagaLog, RecordKind, SagaState, saga_id_for_run
from arb_orchestration.saga.log import every_page

if TYPE_CHECKING:
    from dagster import DagsterInstance

_log = logging.getLogger("arb_orchestration.defs.rebalance")

PLAN_STEP = "plan_rebalance"
# Set by the plan step on its run, before the plan is recorded: how many transfers it moves ("0": none, or a
# dry run). Lets the journal skip the logs of sagas that moved nothing (`_rebalance_states`).
PLANNED_MOVES_TAG = "arb/rebalance_moves"
PREPARE_STEP = "prepare_transfers"
COMMIT_STEP = "commit_transfers"
AWAIT_STEP = "await_arrival"
VERIFY_STEP = "verify_balances"

# Plan result key of a run launched with `allow_legs_in_flight`: {saga id: last activity it acknowledged}.
ACKNOWLEDGED_IN_FLIGHT = "acknowledged_in_flight"
# Saga-log records can land in a run's event log after the run's last status change (the recovery sensor
# compensates or escalates into the failed run's log), so runs updated this much before the lookback are read too.
_RECORD_LAG_SECONDS = 3600.0


def utc_midnight(now: datetime | None = None) -> datetime:
    now = now or datetime.now(timezone.utc)
    return now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def past_rebalance(state: SagaState, since: float) -> PastRebalance | None:
    """What one saga planned and did, from its log; None if it planned nothing on or after `since`."""
    plan = state.step(PLAN_STEP)
    if not plan.done or not plan.result:
        return None
    planned_at = max(
        (r.timestamp for r in state.records if r.step == PLAN_STEP and r.kind is RecordKind.STEP_DONE), default=0.0
    )
    if planned_at < since:
        return None
    commit = state.step(COMMIT_STEP)
    committed = {int(p["committed"]) for p in commit.progress if "committed" in p}
    if commit.done and commit.result:
        committed |= {int(i) for i in (commit.result.get("committed") or {})}
    cancelled = set()
    if commit.compensation:  # written by cancel_uncommitted
        cancelled = {int(i) for i in commit.compensation.get("cancelled", [])}
        cancelled |= {int(i) for i in commit.compensation.get("not_created", [])}
    # A leg either compensation found already gone has left, whatever an earlier read said: cancel_prepared
    # runs after cancel_uncommitted and can find a Wise transfer funded meanwhile (a person approved it).
    in_flight = {int(i) for s in (commit, state.step(PREPARE_STEP)) if s.compensation
                 for i in s.compensation.get("in_flight", [])}
    committed |= in_flight
    cancelled -= in_flight
    # Until the pivot's own compensation has succeeded nobody knows which legs left (its lookups failed,
    # or it has not run): the whole plan stays counted, as for a saga in progress.
    rolled_back = state.compensation_began and (not commit.started or commit.compensated)
    return PastRebalance(
        saga_id=state.saga_id,
        planned=tuple((int(t["index"]), str(t["asset"]), float(t["amount"])) for t in plan.result.get("transfers", [])),
        committed=frozenset(committed),
        cancelled=frozenset(cancelled),
        rolled_back=rolled_back,
        dry_run=bool(plan.result.get("dry_run")),
    )


@dataclass(frozen=True)
class InFlightLeg:
    """A leg of an earlier saga that may still be on its way: `status` says what is known of it."""

    index: int
    rail: str
    asset: str
    amount: float
    from_venue: str
    to_venue: str
    network: str
    status: str  # "left" | "arrived, balance not verified" | "outcome unknown"

    def describe(self) -> str:
        return (f"#{self.index} {self.amount:g} {self.asset} {self.from_venue} → {self.to_venue} "
                f"over {self.network} ({self.status})")

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "rail": self.rail, "asset": self.asset, "amount": self.amount,
                "from": self.from_venue, "to": self.to_venue, "network": self.network, "status": self.status}


@dataclass(frozen=True)
class SagaInFlight:
    """An earlier rebalance saga whose money left but was never verified as arrived.

    `last_activity`: epoch seconds of its newest saga-log record (when it last did or learned
    anything); the lookback of the `legs_in_flight` guardrail counts from there.
    """

    saga_id: str
    last_activity: float
    why: str
    legs: tuple[InFlightLeg, ...]

    def describe(self) -> str:
        at = datetime.fromtimestamp(self.last_activity, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        legs = ", ".join(leg.describe() for leg in self.legs)
        return f"saga {self.saga_id} ({self.why}; last activity {at}): {legs}"

    def to_dict(self) -> dict[str, Any]:
        return {"saga_id": self.saga_id, "last_activity": self.last_activity, "why": self.why,
                "legs": [leg.to_dict() for leg in self.legs]}


def legs_in_flight(state: SagaState) -> SagaInFlight | None:
    """The legs of one earlier saga that left (or may have) and were not verified as arrived; None if none.

    A saga whose `verify_balances` finished has nothing in flight. Otherwise a leg counts when it is
    known to have left (committed, or found in flight by a compensation) and was not cancelled — or,
    while the pivot's outcome is unknown (it started, did not finish, and its compensation has not
    succeeded), every planned leg not known to be cancelled counts, as for the daily limit.
    Dry runs and empty plans have nothing in flight.
    """
    plan = state.step(PLAN_STEP)
    if not plan.done or not plan.result or plan.result.get("dry_run") or not plan.result.get("transfers"):
        return None
    if state.step(VERIFY_STEP).done:
        return None
    past = past_rebalance(state, since=0.0)
    if past is None:
        return None
    commit = state.step(COMMIT_STEP)
    left = set(past.committed) - set(past.cancelled)
    pivot_settled = commit.done or commit.compensated or not commit.started
    unknown = set() if pivot_settled else {i for i, _, _ in past.planned} - left - set(past.cancelled)
    if not left and not unknown:
        return None
    awaited = state.step(AWAIT_STEP)
    arrived = {int(i) for i in ((awaited.result or {}).get("arrived") or {})} if awaited.done else set()
    legs = []
    for raw in plan.result.get("transfers", []):
        index = int(raw["index"])
        if index not in left and index not in unknown:
            continue
        status = ("outcome unknown" if index in unknown
                  else "arrived, balance not verified" if index in arrived else "left")
        legs.append(InFlightLeg(index, str(raw["rail"]), str(raw["asset"]), float(raw["amount"]), str(raw["from"]),
                                str(raw["to"]), str(raw["network"]), status))
    if state.resolved:
        # An operator settled the saga by hand (`arb-orchestration sagas resolve`): recovery leaves it alone, but
        # nothing verified its legs arrived, so it still blocks until a run acknowledges them (allow_legs_in_flight).
        resolution = state.resolution or {}
        why = (f"resolved by hand by {resolution.get('by') or '?'} ({resolution.get('reason') or 'no reason'}); "
               "its legs were never verified as arrived")
    elif commit.compensated:
        why = "rolled back around legs already on their way"
    elif not commit.started:
        why = "rolled back before its pivot; a compensation found legs already on their way"
    elif state.escalated:
        why = f"escalated: {state.escalation_reason}"
    elif commit.done:
        why = "past its pivot, arrival not verified"
    else:
        why = "pivot outcome unknown (its compensation failed or has not run)"
    last = max((r.timestamp for r in state.records), default=0.0)
    return SagaInFlight(state.saga_id, last, why, tuple(legs))


def blocking_sagas(states: Iterable[SagaState], *, since: float) -> list[SagaInFlight]:
    """The sagas among `states` with legs in flight and activity at or after `since`, oldest first.

    A saga is left out once a later (not dry) run launched with `allow_legs_in_flight` acknowledged it
    in its plan, unless the saga wrote to its log after that acknowledgement.
    """
    states = list(states)
    acknowledged: dict[str, float] = {}
    for state in states:
        plan = state.step(PLAN_STEP)
        if plan.done and plan.result and not plan.result.get("dry_run"):
            for saga_id, seen in (plan.result.get(ACKNOWLEDGED_IN_FLIGHT) or {}).items():
                acknowledged[saga_id] = max(acknowledged.get(saga_id, 0.0), float(seen))
    out = []
    for state in states:
        found = legs_in_flight(state)
        if found is None or found.last_activity < since:
            continue
        if found.last_activity <= acknowledged.get(found.saga_id, float("-inf")):
            continue
        out.append(found)
    return sorted(out, key=lambda s: (s.last_activity, s.saga_id))


# Runs read per query. Every page is read: a saga behind the first page (many quick "nothing to move" runs
# since) must still block the next plan (`legs_in_flight`) and count towards the per-day limit.
_RUNS_PAGE = 1000


def _runs_of_job(instance: "DagsterInstance", *, job_name: str, updated_after: datetime) -> Iterable[Any]:
    """Every run of `job_name` updated after `updated_after`, newest first, page by page."""
    filters, size = RunsFilter(job_name=job_name, updated_after=updated_after), _RUNS_PAGE
    return every_page(lambda cursor: instance.get_runs(filters=filters, cursor=cursor, limit=size), size,
                      lambda run: run.run_id)


def _rebalance_states(instance: "DagsterInstance", *, updated_after: datetime, exclude_saga: str | None,
                      job_name: str) -> list[SagaState]:
    """The saga state of every rebalance saga with a run in the window, except those that provably moved nothing.

    Reading a saga's log costs a query per run (on SQLite a database file per run), and most rebalance sagas plan
    nothing to move: a saga every run of which in the window carries `PLANNED_MOVES_TAG` "0" has an empty (or dry)
    plan, i.e. no legs in flight and no usage, so its log is not read. A run without the tag (older code, a
    re-execution that did not run the plan step, a plan step that died first) is read.
    """
    log = InstanceSagaLog(instance)
    runs_by_saga: dict[str, list[Any]] = {}
    for run in _runs_of_job(instance, job_name=job_name, updated_after=updated_after):
        saga_id = saga_id_for_run(run, instance.get_run_by_id)
        if saga_id != exclude_saga:
            runs_by_saga.setdefault(saga_id, []).append(run)
    return [log.load(saga_id) for saga_id, runs in runs_by_saga.items()
            if not all(run.tags.get(PLANNED_MOVES_TAG) == "0" for run in runs)]


def sagas_with_legs_in_flight(
    instance: "DagsterInstance", *, lookback_seconds: float, exclude_saga: str | None = None,
    now: datetime | None = None, job_name: str = REBALANCE_JOB,
) -> list[SagaInFlight]:
    """Earlier rebalance sagas (other than `exclude_saga`) whose legs left, unverified, within the lookback."""
    since = (now or datetime.now(timezone.utc)).timestamp() - lookback_seconds
    updated_after = datetime.fromtimestamp(since - _RECORD_LAG_SECONDS, timezone.utc)
    states = _rebalance_states(instance, updated_after=updated_after, exclude_saga=exclude_saga, job_name=job_name)
    return blocking_sagas(states, since=since)


def rebalances_today(
    instance: "DagsterInstance", *, exclude_saga: str | None = None, now: datetime | None = None,
    job_name: str = REBALANCE_JOB,
) -> list[PastRebalance]:
    """Every rebalance saga with a plan recorded since UTC midnight (other than `exclude_saga`)."""
    midnight = utc_midnight(now)
    states = _rebalance_states(instance, updated_after=midnight, exclude_saga=exclude_saga, job_name=job_name)
    return [p for p in (past_rebalance(s, midnight.timestamp()) for s in states) if p is not None]


def usage_today(instance: "DagsterInstance", *, exclude_saga: str | None = None,
                now: datetime | None = None) -> dict[str, float]:
    return daily_usage(rebalances_today(instance, exclude_saga=exclude_saga, now=now))


class RebalanceJournalResource(ConfigurableResource):
    """The rebalance saga's access to the Dagster instance (see the module docstring)."""

    job_name: str = REBALANCE_JOB

    _instance: Any = PrivateAttr(default=None)
    _run: Any = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._instance = context.instance
        self._run = context.dagster_run

    def used_today(self, *, exclude_saga: str | None = None) -> dict[str, float]:
        if self._instance is None:
            raise RuntimeError("rebalance_journal has no Dagster instance (used outside a run?)")
        return daily_usage(rebalances_today(self._instance, exclude_saga=exclude_saga, job_name=self.job_name))

    def legs_in_flight(self, *, lookback_seconds: float, exclude_saga: str | None = None) -> list[SagaInFlight]:
        """Earlier rebalance sagas with legs that left and were never verified as arrived (see `blocking_sagas`)."""
        if self._instance is None:
            raise RuntimeError("rebalance_journal has no Dagster instance (used outside a run?)")
        return sagas_with_legs_in_flight(self._instance, lookback_seconds=lookback_seconds,
                                         exclude_saga=exclude_saga, job_name=self.job_name)

    def report(self, step: str, message: str, metadata: Mapping[str, Any]) -> None:
        """An engine event in this run, under `step`, with `metadata` (MetadataValue or plain values)."""
        from dagster._core.events import EngineEventData

        if self._instance is None or self._run is None:
            _log.info("%s: %s", step, message)
            return
        values = {k: v if isinstance(v, MetadataValue) else MetadataValue.json(v) if isinstance(v, (dict, list))
                  else MetadataValue.text(str(v)) for k, v in metadata.items()}
        self._instance.report_engine_event(message, self._run, EngineEventData(metadata=values), step_key=step)


    def step_progress(self, saga_id: str, step: str) -> list[dict[str, Any]]:
        """The `note()`s recorded so far for `step` of this saga, by every run of it."""
        if self._instance is None:
            return []
        return [dict(p) for p in InstanceSagaLog(self._instance).load(saga_id).step(step).progress]

    def run_ends_at(self) -> float | None:
        """Epoch seconds at which run monitoring terminates this run (start + `dagster/max_runtime`), if set."""
        if self._instance is None or self._run is None:
            return None
        raw = self._run.tags.get(MAX_RUNTIME_TAG)
        record = self._instance.get_run_record_by_id(self._run.run_id)
        if not raw or record is None or record.start_time is None:
            return None
        try:
            return float(record.start_time) + float(raw)
        except ValueError:
            return None

    def webhook_board(self) -> InstanceWebhookBoard | None:
        """Where the webhook receiver records Wise transfer states; None outside a run."""
        return InstanceWebhookBoard(self._instance) if self._instance is not None else None

    def tag_run(self, tags: Mapping[str, str]) -> None:
        """Add (or overwrite) tags on this run: what the Runs page shows at a glance."""
        if self._instance is None or self._run is None:
            _log.info("run tags: %s", dict(tags))
            return
        self._instance.add_run_tags(self._run.run_id, dict(tags))
