"""Crash recovery: the sensors that finish what dead runs left half-done.

Hooks never run when the run process is SIGKILLed (or OOM-killed, or its pod
evicted). Once Dagster marks such a run FAILURE — the code server notices
locally; on Kubernetes only run monitoring does (`run_monitoring.enabled` in
dagster.yaml) — these sensors take over:

* `<name>` — a run-failure sensor over the saga jobs: reacts within seconds.
* `<name minus _sensor>_sweep_sensor` — every `sweep_interval_seconds`, re-checks failed and
  canceled saga runs of the last `lookback_seconds`, so a failure that
  happened while the first sensor was off (or whose tick errored) is not
  missed. It skips runs younger than `grace_seconds` to let the first
  sensor and the hook act first. Once a day it also looks further back, for sagas whose
  log is too new for this code only (`scan_too_new_past_lookback`): reported, not recovered.

Both call `recovery.recover_saga`, which compensates in place or returns a
forward relaunch, and records what it did: running them again does nothing.
Each does so under the saga's claim (`saga.claim`): a saga another actor holds
is left alone and the tick says by whom (the sweep comes back to it).
Both default to RUNNING: a recovery sensor that is off is a silent risk.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping, Sequence

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    RunStatusSensorContext,
    RunStatusSensorDefinition,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES

from arb_orchestration.saga.build import Saga, alert_from, parse_saga_config, saga_id_of
from arb_orchestration.saga.claim import (
    DEFAULT_CLAIM_TTL_SECONDS,
    ClaimStore,
    InstanceClaimStore,
    InstanceSagaClaims,
    SagaClaims,
)
from arb_orchestration.saga.engine import SagaDefinition
from arb_orchestration.saga.keys import RECOVERY_OF_TAG
from arb_orchestration.saga.log import InstanceSagaLog, every_page
from arb_orchestration.saga.recovery import Action, ClaimSpec, FailedRun, RecoveryOutcome, recover_saga
from arb_orchestration.saga.settled import SETTLED_VERDICTS, SettledIndex
from arb_orchestration.saga.state import SagaLogTooNewError

_log = logging.getLogger("arb_orchestration.saga.recovery")

# How Dagster's run monitoring words the failure of a run it stopped for exceeding its maximum
# runtime (dagster/_daemon/monitoring/run_monitoring.py, 1.13). It marks the run FAILURE right
# after asking the launcher to terminate it, while the worker may still be running (on
# Kubernetes: the pod's termination grace period, 60 s in helm-values), its failure hook included.
MAX_RUNTIME_FAILURE_PREFIX = "Exceeded maximum runtime of"
# The sweep leaves such a run alone this long after that failure: longer than the run pods'
# terminationGracePeriodSeconds, so the worker is gone before anybody compensates.
STOPPING_GRACE_SECONDS = 120.0
# A relaunch recorded but not (yet) found as a run is issued again only after this long: until
# then the actor that recorded it (the other recovery sensor) may still be submitting it, and
# the two sensors' run keys do not dedupe each other. Longer than a sensor tick may take.
REISSUE_AFTER_SECONDS = 120.0
# A sweep tick stops taking up further sagas after this long (the rest wait for the next tick): Dagster
# gives a sensor evaluation 60 s, and a tick that runs past it saves nothing.
SWEEP_TIME_BUDGET_SECONDS = 30.0


def stopped_for_max_runtime(instance: DagsterInstance, run_id: str) -> float | None:
    """When run monitoring failed `run_id` for exceeding its maximum runtime: that failure's time, else None."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_FAILURE, limit=1, ascending=False)
    for record in records.records:
        event = record.event_log_entry.dagster_event
        if event is not None and (event.message or "").startswith(MAX_RUNTIME_FAILURE_PREFIX):
            return record.event_log_entry.timestamp
    return None


# ---- a saga whose log is too new for this code (docs/sagas.md, "Upgrades and record kinds") ------------------------
#
# Nothing is done for such a saga until this code is upgraded. Both sensors report it (ERROR) and go on with the
# other sagas; the risk team is mailed once per saga. "Mailed" is a key in the instance's kvs table (like the
# refund follow-up's watches), so it holds across ticks, sensors, daemon restarts and cursor resets.
#
# Once means once even when the two sensors (or two ticks, or two daemons) meet the saga at the same moment: the
# right to mail is claimed by an atomic INSERT of the key (unique `key`; `InstanceClaimStore.insert`) BEFORE the
# send, with a "sending" value; only the inserter mails, then marks the key "sent". A send that fails is logged at
# ERROR and the claim is deleted (only if it still holds our value), so the next tick claims and mails again: the
# alert is delayed, never lost. A claim left "sending" by an actor that died mid-send (or whose delete failed) is
# taken over, atomically (compare-and-set), once it is older than TOO_NEW_MAIL_SENDING_STALE_SECONDS.
TOO_NEW_MAIL_KEY_PREFIX = "arb/saga/too_new_mailed/"
# Longer than any send may take (the SMTP resource bounds its connect/send with timeouts and retries).
TOO_NEW_MAIL_SENDING_STALE_SECONDS = 600.0

# The sweep's look for too-new sagas past its lookback (`scan_too_new_past_lookback`, at the end).
TOO_NEW_SCAN_INTERVAL_SECONDS = 24 * 3600.0
TOO_NEW_SCAN_KEY_PREFIX = "arb/saga/too_new_scan_at/"
TOO_NEW_SCAN_RUNS_PER_JOB = 500
# A scan round stops once the tick is this old (after the sweep's own 30 s budget) and resumes on the next tick,
# skipping the sagas it checked (kvs `TOO_NEW_SCAN_PROGRESS_KEY_PREFIX<sweep name>`): 500 runs whose event logs
# are read for the first time in the process cost ~25-50 s on SQLite, and a tick past Dagster's 60 s timeout
# would lose the sweep's relaunch requests of that tick with it.
TOO_NEW_SCAN_TICK_DEADLINE_SECONDS = 45.0
TOO_NEW_SCAN_PROGRESS_KEY_PREFIX = "arb/saga/too_new_scan_progress/"


@dataclass
class ScanProgress:
    """One round of `scan_too_new_past_lookback` across ticks: the sagas checked so far, and whether it ended."""

    checked: set[str] = field(default_factory=set)
    finished: bool = True

    @classmethod
    def load(cls, instance: DagsterInstance, sweep_name: str) -> "ScanProgress | None":
        """The round in progress, or None (an unreadable record starts the round afresh: it only saves work)."""
        key = f"{TOO_NEW_SCAN_PROGRESS_KEY_PREFIX}{sweep_name}"
        raw = instance.run_storage.get_cursor_values({key}).get(key)
        if not raw:
            return None
        try:
            checked = json.loads(raw).get("checked", [])
        except (ValueError, AttributeError):
            checked = []
        return cls({str(c) for c in checked if isinstance(c, str)}, finished=False)

    def save(self, instance: DagsterInstance, sweep_name: str) -> None:
        key = f"{TOO_NEW_SCAN_PROGRESS_KEY_PREFIX}{sweep_name}"
        value = "" if self.finished else json.dumps({"checked": sorted(self.checked)}, separators=(",", ":"))
        instance.run_storage.set_cursor_values({key: value})


def too_new_mail_key(saga_id: str) -> str:
    return f"{TOO_NEW_MAIL_KEY_PREFIX}{saga_id}"


def _mail_state(raw: str | None) -> dict[str, Any] | None:
    """The key's JSON; a value written before the claim existed (no `state`, has `mailed_at`) counts as sent."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return {"state": "sent"}  # unreadable: never mail twice because of it
    data.setdefault("state", "sent")
    return data


def claim_too_new_mail(store: ClaimStore, saga_id: str, *, run_id: str, kinds: Sequence[str], actor: str,
                       now: float, stale_after_seconds: float = TOO_NEW_MAIL_SENDING_STALE_SECONDS) -> str | None:
    """Claim the right to mail about `saga_id`: the value we stored (pass it to `finish_too_new_mail`), or None
    if it was mailed already or another actor is mailing it right now."""
    key = too_new_mail_key(saga_id)
    value = json.dumps({"state": "sending", "run_id": run_id, "kinds": list(kinds), "by": actor,
                        "claimed_at": now, "nonce": uuid.uuid4().hex})
    if store.insert(key, value):
        return value
    seen = store.read(key)
    if seen is None:  # deleted after a failed send, between our insert and read: the next tick claims it
        return None
    state = _mail_state(seen) or {}
    if state.get("state") != "sending" or now - float(state.get("claimed_at") or 0) < stale_after_seconds:
        return None
    return value if store.replace(key, seen, value) else None  # a dead sender's claim: take it over, once


def report_too_new_saga(
    instance: DagsterInstance,
    definition: SagaDefinition,
    run: DagsterRun,
    error: SagaLogTooNewError,
    resources: Mapping[str, Any],
    logger: Any,
    *,
    actor: str,
    store: ClaimStore | None = None,
    now: float | None = None,
) -> bool:
    """Log the refusal (ERROR) and mail the risk team unless already mailed for this saga; True if mailed now.

    The mail is claimed first (atomic insert of the kvs key), sent by the claimant only, then marked sent. A
    failing send (or kvs statement) is logged at ERROR and left for a later tick: the claim is deleted again."""
    logger.error(f"{actor}: saga {definition.name} [{error.saga_id}] (failed run {run.run_id}) not recovered: "
                 f"{error}")
    send = alert_from(resources, definition.alert_resource_key)
    if send is None:
        return False
    store = store or InstanceClaimStore(instance)
    key = too_new_mail_key(error.saga_id)
    now = time.time() if now is None else now
    try:
        claimed = claim_too_new_mail(store, error.saga_id, run_id=run.run_id, kinds=error.kinds, actor=actor, now=now)
    except Exception as exc:  # the kvs table is unreachable: no claim, no mail now; the next tick tries again
        logger.error(f"{actor}: could not claim the risk-team mail about saga [{error.saga_id}] (kvs {key}); "
                     f"a later tick retries: {type(exc).__name__}: {exc}")
        return False
    if claimed is None:
        return False
    kinds = ", ".join(error.kinds)
    try:
        send(
            f"[saga] {definition.name} {error.saga_id}: log too new for this code — NOT recovered; upgrade needed",
            f"Saga {definition.name} [{error.saga_id}], failed run {run.run_id} (job {run.job_name}).\n\n"
            f"Its saga log holds record kind(s) {kinds} written by a newer version of arb-orchestration. This code "
            "does not know them and must not ignore them, so it has done nothing for this saga: no compensation, "
            "no forward relaunch.\n\n"
            "What to do: upgrade this code location (and every code location/daemon that runs saga steps or "
            "recovery) to the version that wrote these records. The recovery sweep then recovers the saga on its "
            "next tick, as long as the failed run is still within its lookback window (3 days by default); past "
            "that, recover it by hand (re-execute the run on the upgraded code). Until then the sweep's tick stays "
            "red naming this saga. `arb-orchestration sagas list` lists every such saga. This mail is sent once "
            "per saga.",
        )
    except Exception as exc:  # not lost: give the claim back so a later tick mails again
        logger.error(f"{actor}: could not mail the risk team about saga [{error.saga_id}]; a later tick retries: "
                     f"{type(exc).__name__}: {exc}")
        try:
            store.delete(key, claimed)
        except Exception as delete_exc:  # the claim goes stale and is taken over after the stale delay
            logger.error(f"{actor}: could not release the mail claim {key} after the failed send (retried after "
                         f"{TOO_NEW_MAIL_SENDING_STALE_SECONDS:g} s): {type(delete_exc).__name__}: {delete_exc}")
        return False
    sent = json.dumps({"state": "sent", "run_id": run.run_id, "kinds": list(error.kinds), "by": actor,
                       "mailed_at": time.time()})
    try:
        if not store.replace(key, claimed, sent):
            logger.warning(f"{actor}: mailed about saga [{error.saga_id}], but the claim {key} was taken over "
                           "meanwhile (the send outlived the stale delay): the risk team may get it twice")
    except Exception as exc:  # mailed; the claim stays "sending" and may be taken over (a second mail) later
        logger.error(f"{actor}: mailed about saga [{error.saga_id}] but could not mark {key} sent: "
                     f"{type(exc).__name__}: {exc}")
    return True


def recover_run(
    instance: DagsterInstance,
    definition: SagaDefinition,
    run: DagsterRun,
    resources: Mapping[str, Any],
    logger: Any = None,
    *,
    actor: str = "recover_run",
    claims: SagaClaims | None = None,
    claim_ttl_seconds: float = DEFAULT_CLAIM_TTL_SECONDS,
    reissue_after_seconds: float = REISSUE_AFTER_SECONDS,
) -> RecoveryOutcome:
    """Recover the saga of one finished (failed/canceled) run; records go into that run's log.

    Acts under the saga's claim (taken by `actor`); `Action.BUSY` if another actor holds it.
    """
    saga_id = saga_id_of(run, instance)
    log = InstanceSagaLog(instance, run)

    def active_runs() -> int:  # read under the claim: a re-execution started a moment ago counts
        return sum(1 for r in log.runs_of_saga(saga_id)
                   if r.run_id != run.run_id and r.status in IN_PROGRESS_RUN_STATUSES)

    def relaunch_exists() -> bool:
        return bool(instance.get_runs(filters=RunsFilter(tags={RECOVERY_OF_TAG: run.run_id}), limit=1))

    return recover_saga(
        definition,
        saga_id,
        FailedRun(
            run_id=run.run_id,
            job_name=run.job_name,
            canceled=run.status == DagsterRunStatus.CANCELED,
            run_config=run.run_config,
            tags=run.tags,
        ),
        log=log,
        resources=resources,
        alert=alert_from(resources, definition.alert_resource_key),
        config=_config_or_none(definition, run, logger or _log),
        active_runs=active_runs,
        relaunch_exists=relaunch_exists,
        claim=ClaimSpec(claims or InstanceSagaClaims(instance), actor, ttl_seconds=claim_ttl_seconds),
        reissue_after_seconds=reissue_after_seconds,
        logger=logger or _log,
    )


def _config_or_none(definition: SagaDefinition, run: DagsterRun, logger: Any) -> Any:
    try:
        return parse_saga_config(definition, run.run_config)
    except Exception as exc:  # compensations get None rather than the sensor dying on old config
        logger.error(f"run {run.run_id}: run config no longer parses as {definition.config_class}: {exc}")
        return None


def _run_request(outcome: RecoveryOutcome) -> RunRequest:
    assert outcome.relaunch is not None
    return RunRequest(
        run_key=outcome.relaunch.run_key,
        job_name=outcome.relaunch.job_name,
        run_config=dict(outcome.relaunch.run_config),
        tags=dict(outcome.relaunch.tags),
    )


def build_saga_recovery_sensors(
    sagas: Sequence[Saga],
    *,
    name: str = "saga_recovery_sensor",
    sweep_name: str | None = None,
    sweep_interval_seconds: int = 60,
    lookback_seconds: float = 3 * 24 * 3600,
    grace_seconds: float = 60,
    stopping_grace_seconds: float = STOPPING_GRACE_SECONDS,
    default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
    claim_ttl_seconds: float = DEFAULT_CLAIM_TTL_SECONDS,
    reissue_after_seconds: float = REISSUE_AFTER_SECONDS,
    too_new_scan_interval_seconds: float | None = TOO_NEW_SCAN_INTERVAL_SECONDS,
) -> list[SensorDefinition]:
    """The failure sensor `name` and the sweep (`..._sweep_sensor`) for `sagas`.

    Every `too_new_scan_interval_seconds` (None: never) the sweep also looks past its lookback for sagas
    whose log is too new for this code (`scan_too_new_past_lookback`): reported and mailed, not recovered.

    A run that run monitoring stopped for exceeding its maximum runtime is left to the sweep,
    which waits `stopping_grace_seconds` after that failure: its worker may still be shutting
    down (and compensating through its own hook) when the run is already marked FAILURE.
    """
    if sweep_name is None:
        sweep_name = f"{name.removesuffix('_sensor')}_sweep_sensor"
    by_job = {s.job.name: s.definition for s in sagas}
    jobs = [s.job for s in sagas]
    resource_keys: set[str] = set()
    for s in sagas:
        resource_keys |= s.definition.compensation_resource_keys

    def _resources(context: Any) -> dict[str, Any]:
        return {key: getattr(context.resources, key) for key in resource_keys}

    def on_failure(context: RunStatusSensorContext, **_direct_invocation_resources: Any):
        # Resources come from context.resources (direct invocation in tests also passes them as kwargs).
        run = context.dagster_run
        definition = by_job.get(run.job_name)
        if definition is None:
            return None
        if stopped_for_max_runtime(context.instance, run.run_id) is not None:
            context.log.info(
                f"saga run {run.run_id} was stopped for exceeding its maximum runtime; its worker may still be "
                f"shutting down, so the sweep recovers it {stopping_grace_seconds:g} s after the failure"
            )
            return None
        try:
            outcome = recover_run(context.instance, definition, run, _resources(context), context.log,
                                  actor=f"sensor {name}", claim_ttl_seconds=claim_ttl_seconds,
                                  reissue_after_seconds=reissue_after_seconds)
        except SagaLogTooNewError as exc:
            # Reported here (ERROR + one mail), then None so the tick goes on with the next failed run. Dagster
            # moves this sensor's cursor past the run whatever we return or raise (RunStatusSensorDefinition);
            # the saga is not lost: the sweep has no cursor and re-checks it every tick until an upgrade.
            report_too_new_saga(context.instance, definition, run, exc, _resources(context), context.log,
                                actor=f"sensor {name}")
            return None
        context.log.info(f"saga recovery of run {run.run_id}: {outcome.action.value} — {outcome.reason}")
        if outcome.action is Action.RELAUNCH:
            return _run_request(outcome)
        # None lets the sensor go on to the next failed run in the same tick.
        return None

    failure_sensor = RunStatusSensorDefinition(
        name=name,
        run_status=DagsterRunStatus.FAILURE,
        run_status_sensor_fn=on_failure,
        monitored_jobs=jobs,
        request_jobs=jobs,
        default_status=default_status,
        required_resource_keys=resource_keys,
        description="Compensates (before the pivot) or relaunches forward (after it) saga runs that failed "
        "without their hook finishing the job — e.g. a SIGKILLed run worker.",
    )

    @sensor(
        name=sweep_name,
        minimum_interval_seconds=sweep_interval_seconds,
        jobs=jobs,
        required_resource_keys=resource_keys,
        default_status=default_status,
        description="Periodic safety net for the saga recovery sensor: re-checks recent failed/canceled saga "
        "runs so none is missed while the failure sensor was off.",
    )
    def sweep(context: SensorEvaluationContext, **_direct_invocation_resources: Any):
        tick_started = time.monotonic()
        requests, lines = sweep_failed_sagas(
            context.instance,
            by_job,
            _resources(context),
            lookback_seconds=lookback_seconds,
            grace_seconds=grace_seconds,
            stopping_grace_seconds=stopping_grace_seconds,
            logger=context.log,
            actor=f"sensor {sweep_name}",
            claim_ttl_seconds=claim_ttl_seconds,
            reissue_after_seconds=reissue_after_seconds,
        )
        try:  # after the recovery above: its relaunches are returned even if this fails
            progress = ScanProgress.load(context.instance, sweep_name)  # a round that ran out of time last tick
            if progress is None and too_new_scan_interval_seconds is not None and _scan_due(
                    context.instance, sweep_name, too_new_scan_interval_seconds):
                progress = ScanProgress()
            if progress is not None:
                lines += scan_too_new_past_lookback(context.instance, by_job, _resources(context),
                                                    lookback_seconds=lookback_seconds, logger=context.log,
                                                    actor=f"sensor {sweep_name}", progress=progress,
                                                    deadline=tick_started + TOO_NEW_SCAN_TICK_DEADLINE_SECONDS)
                progress.save(context.instance, sweep_name)
        except Exception as exc:
            context.log.error(f"the scan for too-new sagas past the lookback raised: {type(exc).__name__}: {exc}")
            lines.append(f"scan for too-new sagas past the lookback: error {type(exc).__name__}")
        errors = [line for line in lines if ": error " in line]
        if requests:
            return SensorResult(run_requests=requests)
        if errors:
            # Red tick, so it is seen; the sagas that did recover have recorded it already.
            raise RuntimeError(f"saga recovery failed for {len(errors)} saga(s): {'; '.join(errors)}")
        return SkipReason("; ".join(lines) if lines else "no failed saga runs needing recovery")

    return [failure_sensor, sweep]


# Failed runs read per query. Every page of the lookback is read: settled sagas count towards a page too, so a
# saga behind one page of newer failures (e.g. rebalances refused every few seconds by a guardrail) would
# otherwise never be retried or escalated again.
SWEEP_RUNS_PAGE = 500


def _failed_run_records(instance: DagsterInstance, job_name: str, *, now: float, lookback_seconds: float,
                        grace_seconds: float) -> Iterator[Any]:
    """Every failed/canceled run record of `job_name` in the sweep's window, newest first, page by page."""
    filters = RunsFilter(
        job_name=job_name,
        statuses=[DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED],
        updated_after=datetime.fromtimestamp(now - lookback_seconds, tz=timezone.utc),
        updated_before=datetime.fromtimestamp(now - grace_seconds, tz=timezone.utc),
    )
    size = SWEEP_RUNS_PAGE
    return every_page(lambda cursor: instance.get_run_records(filters=filters, limit=size, cursor=cursor), size,
                      lambda record: record.dagster_run.run_id)


def sweep_failed_sagas(
    instance: DagsterInstance,
    sagas_by_job: Mapping[str, SagaDefinition],
    resources: Mapping[str, Any],
    *,
    lookback_seconds: float,
    grace_seconds: float,
    stopping_grace_seconds: float = STOPPING_GRACE_SECONDS,
    logger: Any = None,
    now: float | None = None,
    actor: str = "recovery sweep",
    claim_ttl_seconds: float = DEFAULT_CLAIM_TTL_SECONDS,
    reissue_after_seconds: float = REISSUE_AFTER_SECONDS,
    time_budget_seconds: float | None = SWEEP_TIME_BUDGET_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[list[RunRequest], list[str]]:
    """One sweep over failed/canceled saga runs; returns relaunches to submit and a line per action.

    A run stopped for exceeding its maximum runtime waits `stopping_grace_seconds` after that
    failure (its worker may still be shutting down).

    Sagas found settled are recorded in the saga's `SettledIndex` (instance key-value table) and not read
    again while their newest failed run stays the same and none of their runs is in progress. Once
    `time_budget_seconds` have passed (None: no budget) the sagas not reached yet are left to the next
    tick (newest first across all the sweep's jobs, so the most recent failures are never the ones deferred),
    with a line saying how many: a tick past Dagster's 60 s sensor timeout would save nothing and leave every
    saga undone.
    """
    logger = logger or _log
    now = time.time() if now is None else now
    started = clock()
    requests: list[RunRequest] = []
    lines: list[str] = []
    seen_sagas: set[str] = set()
    deferred = 0
    # Every job's failed runs in one list, newest first across jobs (a sweep may serve several sagas: the budget
    # must never hold back the newest failure of one behind older ones of another).
    found: list[tuple[float, str, DagsterRun]] = []
    indexes: dict[str, SettledIndex] = {}
    active: dict[str, set[str]] = {}
    listed: dict[str, set[str]] = {}
    for job_name, definition in sagas_by_job.items():
        for record in _failed_run_records(instance, job_name, now=now, lookback_seconds=lookback_seconds,
                                          grace_seconds=grace_seconds):
            found.append((record.create_timestamp.timestamp(), job_name, record.dagster_run))
        indexes[job_name] = SettledIndex.load(instance, definition.name)
        # One query per job: a saga with a run in progress is never skipped from the index.
        active[job_name] = {saga_id_of(r, instance) for r in instance.get_runs(
            filters=RunsFilter(job_name=job_name, statuses=list(IN_PROGRESS_RUN_STATUSES)))}
        listed[job_name] = set()
    found.sort(key=lambda entry: entry[0], reverse=True)
    try:
        for _created, job_name, run in found:  # newest first: one decision per saga per sweep
            definition, index = sagas_by_job[job_name], indexes[job_name]
            saga_id = saga_id_of(run, instance)
            listed[job_name].add(saga_id)
            if saga_id in seen_sagas:
                continue
            seen_sagas.add(saga_id)
            if saga_id not in active[job_name] and index.verdict(saga_id, run.run_id, run.status.value) is not None:
                continue  # settled when last read, and nothing has happened to it since
            if time_budget_seconds is not None and clock() - started > time_budget_seconds:
                deferred += 1
                continue
            index.forget(saga_id)
            outcome = _sweep_one(instance, definition, run, saga_id, resources, logger, lines, now=now,
                                 stopping_grace_seconds=stopping_grace_seconds, actor=actor,
                                 claim_ttl_seconds=claim_ttl_seconds, reissue_after_seconds=reissue_after_seconds)
            if outcome is None:
                continue
            if (outcome.action is Action.NONE and outcome.decision.verdict.value in SETTLED_VERDICTS
                    and saga_id not in active[job_name]):
                index.settle(saga_id, run.run_id, run.status.value, outcome.decision.verdict.value)
            if outcome.action is Action.RELAUNCH:
                requests.append(_run_request(outcome))
            if outcome.action is not Action.NONE:
                lines.append(f"{saga_id}: {outcome.action.value} ({outcome.reason})")
    finally:
        for job_name, index in indexes.items():
            index.keep_only(listed[job_name])
            try:
                index.save(instance)
            except Exception as exc:  # noqa: BLE001 - the index only saves work; the sagas were handled
                logger.warning(f"{actor}: could not store the settled-saga index of {index.saga_name}: "
                               f"{type(exc).__name__}: {exc}")
    if deferred:
        lines.append(f"time budget of {time_budget_seconds:g} s used up: {deferred} older failed saga run(s) "
                     "left to the next tick")
    return requests, lines


def _sweep_one(instance: DagsterInstance, definition: SagaDefinition, run: DagsterRun, saga_id: str,
               resources: Mapping[str, Any], logger: Any, lines: list[str], *, now: float,
               stopping_grace_seconds: float, actor: str, claim_ttl_seconds: float,
               reissue_after_seconds: float) -> RecoveryOutcome | None:
    """Recover one saga for the sweep; None when nothing was decided (a line says why, if anything)."""
    if run.status == DagsterRunStatus.FAILURE:
        stopped_at = stopped_for_max_runtime(instance, run.run_id)
        if stopped_at is not None and now - stopped_at < stopping_grace_seconds:
            lines.append(f"{saga_id}: waiting for run {run.run_id}, stopped for exceeding its maximum "
                         f"runtime, to shut down ({now - stopped_at:.0f} of {stopping_grace_seconds:g} s)")
            return None
    try:
        return recover_run(instance, definition, run, resources, logger, actor=actor,
                           claim_ttl_seconds=claim_ttl_seconds, reissue_after_seconds=reissue_after_seconds)
    except SagaLogTooNewError as exc:  # waits for an upgrade: reported every tick, mailed once
        report_too_new_saga(instance, definition, run, exc, resources, logger, actor=actor)
        lines.append(f"{saga_id}: error SagaLogTooNewError")  # the ERROR line and the mail name the kinds
        return None
    except Exception as exc:  # reported; one bad saga must not block the others' recovery
        logger.error(f"saga recovery of run {run.run_id} raised: {type(exc).__name__}: {exc}")
        lines.append(f"{saga_id}: error {type(exc).__name__}")
        return None


# ---- too-new sagas older than the sweep's lookback ---------------------------------------------------------------
#
# The sweep recovers failed runs of the last `lookback_seconds` only. A saga whose log is too new and whose run
# failed before that (the code location was down, or on the old version, for longer than the lookback) would be
# neither mailed nor recovered. So once per interval (the first sweep tick after a deploy or an outage included:
# the time of the last scan is kept in the kvs table, not in the sweep's cursor, which a red tick does not save)
# the sweep also reads, past the lookback, the newest failed/canceled runs of each saga job, loads the log of each
# saga not yet mailed about, and reports those that are too new exactly like the sweep does (ERROR line, one mail).
# It recovers nothing: past the lookback recovery is by hand, after the upgrade (docs/sagas.md).
# (TOO_NEW_SCAN_INTERVAL_SECONDS, TOO_NEW_SCAN_KEY_PREFIX, TOO_NEW_SCAN_RUNS_PER_JOB: above.)


def _scan_due(instance: DagsterInstance, sweep_name: str, interval_seconds: float, now: float | None = None) -> bool:
    """True (and the scan's time recorded, before it runs: a scan that fails waits for the next interval rather
    than running every tick) if the last scan of this sweep is `interval_seconds` old, or there was none."""
    now = time.time() if now is None else now
    key = f"{TOO_NEW_SCAN_KEY_PREFIX}{sweep_name}"
    raw = instance.run_storage.get_cursor_values({key}).get(key)
    try:
        last = float(raw) if raw else None
    except ValueError:
        last = None
    if last is not None and 0 <= now - last < interval_seconds:
        return False
    instance.run_storage.set_cursor_values({key: repr(now)})
    return True


def scan_too_new_past_lookback(
    instance: DagsterInstance,
    sagas_by_job: Mapping[str, SagaDefinition],
    resources: Mapping[str, Any],
    *,
    lookback_seconds: float,
    logger: Any = None,
    now: float | None = None,
    actor: str = "recovery sweep",
    runs_per_job: int = TOO_NEW_SCAN_RUNS_PER_JOB,
    progress: ScanProgress | None = None,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[str]:
    """Report (ERROR, one mail) the sagas whose failed/canceled run was last updated before the lookback and whose
    log is too new for this code; a line `<saga>: error SagaLogTooNewError (...)` each. Recovers nothing.

    With `progress`, the sagas in `progress.checked` are skipped and each saga checked is added; past `deadline`
    (on `clock`) the scan stops with `progress.finished` False and a line saying so (the sweep resumes it)."""
    logger = logger or _log
    now = time.time() if now is None else now
    log = InstanceSagaLog(instance)
    store = InstanceClaimStore(instance)
    lines: list[str] = []
    seen: set[str] = set(progress.checked) if progress is not None else set()
    first = len(seen)
    if progress is not None:
        progress.finished = True
    for job_name, definition in sagas_by_job.items():
        runs = instance.get_runs(
            filters=RunsFilter(job_name=job_name, statuses=[DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED],
                               updated_before=datetime.fromtimestamp(now - lookback_seconds, tz=timezone.utc)),
            limit=runs_per_job,
        )
        for run in runs:  # newest first
            saga_id = saga_id_of(run, instance)
            if saga_id in seen:
                continue
            if deadline is not None and len(seen) > first and clock() > deadline:  # at least one saga a call
                if progress is not None:
                    progress.finished = False
                lines.append(f"scan for too-new sagas past the lookback: stopped at its time limit after "
                             f"{len(seen)} saga(s); it goes on next tick")
                return lines
            seen.add(saga_id)
            if progress is not None:
                progress.checked.add(saga_id)
            try:
                if (_mail_state(store.read(too_new_mail_key(saga_id))) or {}).get("state") == "sent":
                    continue  # reported already; `arb-orchestration sagas list` still lists it
                log.load(saga_id)
            except SagaLogTooNewError as exc:
                report_too_new_saga(instance, definition, run, exc, resources, logger, actor=actor, store=store)
                lines.append(f"{saga_id}: error SagaLogTooNewError (failed run {run.run_id} is older than the "
                             f"sweep's lookback of {lookback_seconds:g} s: recover it by hand after the upgrade)")
            except Exception as exc:  # one unreadable saga must not end the scan
                logger.error(f"{actor}: could not read saga [{saga_id}] (run {run.run_id}) while looking for "
                             f"too-new logs past the lookback: {type(exc).__name__}: {exc}")
        if len(runs) >= runs_per_job:
            logger.warning(f"{actor}: the scan past the lookback read only the newest {runs_per_job} failed runs "
                           f"of {job_name}; older ones were not checked (`arb-orchestration sagas list --scan-runs`)")
    return lines
