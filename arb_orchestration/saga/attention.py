"""The sagas that need a person, read from the durable saga log: shared by `arb-orchestration sagas` and the UI.

`SagaReader` finds sagas in the instance's runs and reads their logs; `summarize` turns one saga's records
and runs into the operator's view (`SagaSummary`: state, since, why, the run to look at);
`needing_attention` is what `sagas list` shows without --all, and what the `sagas_needing_attention` asset
records. `Redactor` blanks secrets from anything shown. No code location is loaded: this reads the instance
only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

# States that need a person (`list` without --all shows only these).
ESCALATED = "escalated"
COMPENSATION_FAILED = "compensation_failed"
TOO_NEW = "too_new"
NEEDS_PERSON = (ESCALATED, COMPENSATION_FAILED, TOO_NEW)
# A compensation began and has not finished (deferred, or its run died inside it): the sweep carries it on.
COMPENSATING = "compensating"
WHY_WIDTH = 100  # characters of "why" on a `list` line (--json has it whole)
DEFAULT_SCAN_RUNS = 500  # newest saga runs read to find sagas (failed/canceled ones without --all)


# ---- secrets never appear in output ----------------------------------------------------------------------------


class Redactor:
    """Blanks the values of secret environment variables present in this shell, and credentials in URLs.

    Saga records hold error texts from venues and HTTP clients; the operator's shell may have the world's
    environment file loaded. Anything printed goes through `redact`."""

    _URL_CREDENTIALS = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]+:)[^@\s]+@")
    _SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|SIGNING_KEY|PRIVATE_KEY|CREDENTIALS?)$")

    def __init__(self, environ: Mapping[str, str] | None = None):
        environ = os.environ if environ is None else environ
        patterns = [self._SECRET_NAME]
        try:
            from arb_orchestration.settings import SETTINGS

            for name, setting in SETTINGS.items():
                if setting.secret:
                    patterns.append(re.compile("^" + re.escape(name).replace(re.escape("<VENUE>"), "[A-Z0-9_]+")
                                               + "$"))
        except Exception:  # noqa: BLE001 - the name heuristic above still applies
            pass
        values = {value for name, value in environ.items()
                  if value and len(value) >= 4 and any(p.search(name) for p in patterns)}
        self._secrets = sorted(values, key=len, reverse=True)  # longest first: a secret inside another

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return self._URL_CREDENTIALS.sub(r"\1***@", text)


# ---- what one saga looks like to an operator -------------------------------------------------------------------


@dataclass
class SagaSummary:
    saga_id: str
    saga_name: str
    state: str
    since: float | None
    why: str
    run_id: str | None  # where the deciding record (escalation, failure, resolution) is, else the newest run
    running: bool = False
    runs: list[dict[str, Any]] = field(default_factory=list)  # run id, status, created (epoch), oldest first

    @property
    def needs_person(self) -> bool:
        return self.state in NEEDS_PERSON


def _utc(epoch: float | None) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc_precise(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _one_line(text: str, width: int = WHY_WIDTH) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1].rstrip() + "…"


def _unfinished_why(step: Any) -> str:
    """Why a step's compensation counts as unfinished: its deferral (when, why) or its last progress note."""
    from arb_orchestration.saga.engine import DEFERRED_SINCE, MAX_COMPENSATION_DEFERRAL_SECONDS

    deferral = next((n for n in step.compensation_progress if DEFERRED_SINCE in n), None)
    if deferral is not None:
        try:
            at = datetime.fromtimestamp(float(deferral[DEFERRED_SINCE]), timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        except (TypeError, ValueError, OverflowError, OSError):
            at = "?"
        return (f"compensation of {step.name} deferred since {at} UTC ({deferral.get('why', '?')}): the recovery "
                f"sweep tries again; still deferred {MAX_COMPENSATION_DEFERRAL_SECONDS:g} s after that, it fails")
    return (f"compensation of {step.name} began and has not finished (last note: "
            f"{_one_line(step.compensation_progress[-1], 80)}): the recovery sweep carries it on")


def _last(records: Sequence[Any], kind: Any) -> Any:
    return next((r for r in reversed(records) if r.kind == kind), None)


def summarize(saga_id: str, records: Sequence[Any], runs: Sequence[Mapping[str, Any]],
              saga_name: str | None = None) -> SagaSummary:
    """The operator's view of one saga from its raw records (oldest first) and its runs (dicts with run_id,
    status (a DagsterRunStatus value string), created, in_progress), oldest first.

    No saga definition is needed (the command does not load the code location), so "completed" is read from
    the runs: the newest run succeeded and nothing was rolled back."""
    from arb_orchestration.saga.state import RecordKind, SagaLogTooNewError, SagaState

    newest_run = runs[-1]["run_id"] if runs else None
    running = any(r["in_progress"] for r in runs)
    in_progress = ", ".join(f"{r['run_id']} ({r['status']})" for r in runs if r["in_progress"])
    name = next((r.saga_name for r in records if r.saga_name), None) or saga_name or "?"
    newest_ts = records[-1].timestamp if records else None

    def out(state: str, since: float | None, why: str, run_id: str | None = None) -> SagaSummary:
        return SagaSummary(saga_id, name, state, since, why, run_id or newest_run, running, list(runs))

    try:
        state = SagaState.from_records(saga_id, records)
    except SagaLogTooNewError as exc:
        return out(TOO_NEW, newest_ts, f"log holds record kind(s) {', '.join(exc.kinds)} from a newer version "
                                       "that this code does not know: upgrade arb-orchestration (and the code "
                                       "locations); nothing is recovered for this saga until then")
    if not records:
        return out("not_started", None, "no saga record (no step started)")
    if state.resolved:
        r = state.resolution or {}
        forced = " (forced)" if r.get("forced") else ""
        return out("resolved", r.get("at"), f"by {r.get('by')}{forced}: {r.get('reason')}", r.get("run_id"))
    failed_compensations = state.failed_compensations
    newest_succeeded = bool(runs) and runs[-1]["status"] == "SUCCESS"
    if newest_succeeded and not state.compensation_began:
        # An escalated saga an operator finished by re-executing its run (docs/sagas.md, Operator guide).
        return out("completed", newest_ts, "its newest run succeeded")
    if state.escalated:
        rec = _last(records, RecordKind.ESCALATED)
        why = state.escalation_reason or "?"
        return out(ESCALATED, rec.timestamp, why + (f" [run in progress: {in_progress}]" if running else ""),
                   rec.run_id)
    if failed_compensations:
        rec = _last([r for r in records if r.step in failed_compensations], RecordKind.COMPENSATION_FAILED)
        step = state.step(rec.step)
        why = (f"compensation of {step.name} failed ({step.compensation_failures} time(s); the recovery sweep "
               f"retries it, then escalates): {step.last_compensation_error}")
        return out(COMPENSATION_FAILED, rec.timestamp, why + (f" [run in progress: {in_progress}]" if running else ""),
                   rec.run_id)
    if running:
        return out("running", newest_ts, f"run in progress: {in_progress}")
    unfinished = [s for s in state.steps.values() if s.compensation_progress and not s.compensated]
    if unfinished:
        # A compensation noted progress (or its deferral) and recorded no `step_compensated` since: it has not
        # finished, whatever the runs say. Recovery carries it on (decide -> COMPENSATE); not rolled back yet.
        return out(COMPENSATING, newest_ts, "; ".join(_unfinished_why(s) for s in unfinished))
    if state.compensation_began:
        done = [s.name for s in state.steps.values() if s.compensated]
        return out("rolled_back", newest_ts, f"compensated: {', '.join(done) or 'nothing needed undoing'}")
    errors = [s for s in state.steps.values() if s.last_error and not s.done]
    last = errors[-1] if errors else None
    why = f"step {last.name} failed: {last.last_error}" if last else "a run ended without finishing it"
    return out("failed", newest_ts, why + "; the recovery sensors act on it")


# ---- reading the instance --------------------------------------------------------------------------------------


class SagaReader:
    """Finds sagas in the instance's runs and reads their logs through `InstanceSagaLog` (any run storage)."""

    def __init__(self, instance: Any):
        from arb_orchestration.saga.log import InstanceSagaLog

        self.instance = instance
        self.log = InstanceSagaLog(instance)
        self._runs_by_id: dict[str, Any] = {}

    def _get_run(self, run_id: str) -> Any:
        if run_id not in self._runs_by_id:
            self._runs_by_id[run_id] = self.instance.get_run_by_id(run_id)
        return self._runs_by_id[run_id]

    def saga_id_of(self, run: Any) -> str:
        from arb_orchestration.saga.keys import saga_id_for_run

        return saga_id_for_run(run, self._get_run)

    def recent_sagas(self, *, failed_only: bool, scan_runs: int) -> tuple[list[tuple[str, str, Any]], bool]:
        """(saga id, saga tag, its newest run among those read) of the sagas of the newest `scan_runs` saga runs,
        newest first; True if the scan hit its bound (older runs were not read)."""
        from dagster import DagsterRunStatus, RunsFilter

        from arb_orchestration.saga.keys import SAGA_TAG

        names = sorted({value for _key, values in self.instance.get_run_tags(tag_keys=[SAGA_TAG]) for value in values})
        if not names:
            return [], False
        statuses = [DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED] if failed_only else []
        runs = self.instance.get_runs(filters=RunsFilter(tags={SAGA_TAG: names}, statuses=statuses), limit=scan_runs)
        seen: dict[str, tuple[str, str, Any]] = {}
        for run in runs:  # newest first
            self._runs_by_id.setdefault(run.run_id, run)
            saga_id = self.saga_id_of(run)
            seen.setdefault(saga_id, (saga_id, run.tags.get(SAGA_TAG, ""), run))
        return list(seen.values()), len(runs) >= scan_runs

    def recent_saga_ids(self, *, failed_only: bool, scan_runs: int) -> tuple[list[tuple[str, str]], bool]:
        """(saga id, saga tag) of the sagas of the newest `scan_runs` saga runs, newest first; True if the scan
        hit its bound (older runs were not read)."""
        sagas, truncated = self.recent_sagas(failed_only=failed_only, scan_runs=scan_runs)
        return [(saga_id, tag) for saga_id, tag, _run in sagas], truncated

    def resolve_id(self, saga_or_run_id: str) -> str:
        return self.log.resolve_saga_id(saga_or_run_id)

    def runs(self, saga_id: str, dagster_runs: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        if dagster_runs is None:
            dagster_runs = self.log.runs_of_saga(saga_id)
        rows = self._run_rows([run.run_id for run in dagster_runs])
        return sorted(rows.values(), key=lambda r: r["created"])

    def _run_rows(self, run_ids: Sequence[str], chunk: int = 500) -> dict[str, dict[str, Any]]:
        """run id -> {run_id, status, created, in_progress}, read in one query per `chunk` runs."""
        from dagster import RunsFilter
        from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES

        ids = list(dict.fromkeys(run_ids))
        rows: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), chunk):
            for rec in self.instance.get_run_records(filters=RunsFilter(run_ids=ids[start:start + chunk])):
                run = rec.dagster_run
                rows[run.run_id] = {"run_id": run.run_id, "status": run.status.value,
                                    "created": rec.create_timestamp.timestamp(),
                                    "in_progress": run.status in IN_PROGRESS_RUN_STATUSES}
        return rows

    def summaries(self, sagas: Sequence[tuple[str, str]]) -> list[SagaSummary]:
        """`summary` for many sagas (saga id, saga tag), their runs read in a few queries for all of them; only
        each saga's own log is read one by one."""
        runs_by_saga = self.log.runs_of_sagas([saga_id for saga_id, _tag in sagas])
        rows = self._run_rows([run.run_id for runs in runs_by_saga.values() for run in runs])
        out = []
        for saga_id, tag in sagas:
            dagster_runs = runs_by_saga.get(saga_id, [])
            runs = sorted((rows[run.run_id] for run in dagster_runs if run.run_id in rows), key=lambda r: r["created"])
            out.append(summarize(saga_id, self.log.load_records(saga_id, runs=dagster_runs), runs, tag))
        return out

    def records(self, saga_id: str) -> list[Any]:
        return self.log.load_records(saga_id)

    def summary(self, saga_id: str, saga_tag: str | None = None) -> SagaSummary:
        """`saga_id` must be a saga id (as `recent_saga_ids` gives), not a run id: the saga's runs are read once."""
        dagster_runs = self.log.runs_of_saga(saga_id)
        return summarize(saga_id, self.log.load_records(saga_id, runs=dagster_runs), self.runs(saga_id, dagster_runs),
                         saga_tag)



@dataclass
class AttentionList:
    """The sagas that need a person (newest first) and whether the scan hit its bound (older ones unread)."""

    sagas: list[SagaSummary]
    truncated: bool
    scan_runs: int


def needing_attention(reader: SagaReader, *, scan_runs: int = DEFAULT_SCAN_RUNS) -> AttentionList:
    """The sagas of the newest `scan_runs` failed/canceled saga runs that need a person, newest first.

    The same sagas `arb-orchestration sagas list` (without --all) prints, in the same order."""
    from arb_orchestration.saga.settled import QUIET_VERDICTS, load_indexes

    failed, truncated = reader.recent_sagas(failed_only=True, scan_runs=scan_runs)
    # The recovery sweep's index of settled sagas: one that needs nobody (rolled back, completed, resolved)
    # and whose newest failed run is still the one the sweep saw is not read again (saga/settled.py).
    indexes = load_indexes(reader.instance, {tag for _saga_id, tag, _run in failed if tag})
    to_read = []
    for saga_id, tag, run in failed:
        index = indexes.get(tag)
        if index is not None and index.verdict(saga_id, run.run_id, run.status.value) in QUIET_VERDICTS:
            continue
        to_read.append((saga_id, tag))
    summaries = [s for s in reader.summaries(to_read) if s.needs_person]
    return AttentionList(sorted(summaries, key=lambda s: -(s.since or 0.0)), truncated, scan_runs)
