"""The durable saga log: `SagaLog`, its Dagster-instance implementation and an in-memory one.

Design (why the run's event log): every record is an engine event written with
`instance.report_engine_event` into the event log of the run doing the work.
That is one synchronous INSERT into the deployment's own database (SQLite
locally, PostgreSQL in production), committed before the call returns, so a
record written before a side effect survives SIGKILL of the run process. It
uses public instance APIs only (no schema of our own to migrate), shows up in
the run's log in the UI next to the step it belongs to, and is deleted with
the run (keep run retention longer than any saga can stay unresolved).

A saga spans runs (op retries, re-executions, recovery runs), so `load` reads
every run of the saga: runs tagged `arb/saga_id=<id>` plus the run group whose
root is `<id>`.
"""

from __future__ import annotations

import abc
import dataclasses
import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence, TypeVar

from arb_orchestration.saga.keys import SAGA_ID_TAG, saga_id_for_run
from arb_orchestration.saga.state import RecordKind, SagaRecord, SagaState

if TYPE_CHECKING:  # dagster is imported lazily so the pure engine stays importable without it
    from dagster import DagsterInstance, DagsterRun

RECORD_METADATA_KEY = "arb/saga_record"



_Row = TypeVar("_Row")


def every_page(fetch: Callable[[str | None], Sequence[_Row]], page_size: int,
               cursor_of: Callable[[_Row], str]) -> Iterator[_Row]:
    """Every row of a cursor-paged Dagster query (`fetch(cursor)`, `page_size` rows a call), page by page.

    For run queries whose answer must be whole (a recovery sweep, a guardrail): a query with only a `limit`
    silently drops what lies past it. Stops at the first short page.
    """
    cursor = None
    while True:
        page = fetch(cursor)
        yield from page
        if len(page) < page_size:
            return
        cursor = cursor_of(page[-1])

class SagaLog(abc.ABC):
    """Append-only log of saga facts. Writers are bound to the run doing the work."""

    run_id: str | None = None

    @abc.abstractmethod
    def append(self, record: SagaRecord, *, error: BaseException | None = None) -> None:
        """Write one record durably before returning. `error` marks it as an error in the UI."""

    @abc.abstractmethod
    def load(self, saga_id: str) -> SagaState:
        """Everything known about `saga_id` (a run id of one of its runs also works)."""

    # -- the vocabulary the engine speaks -------------------------------------------------

    def _record(self, kind: RecordKind, saga_id: str, saga_name: str, step: str | None,
                data: Mapping[str, Any], error: BaseException | None = None) -> SagaRecord:
        record = SagaRecord(kind, saga_id, saga_name, step, self.run_id, dict(data))
        self.append(record, error=error)
        return record

    def record_started(self, saga_id: str, saga_name: str, step: str, *, key: str,
                       attempt: int = 0, compensation: str | None = None) -> SagaRecord:
        return self._record(RecordKind.STEP_STARTED, saga_id, saga_name, step,
                            {"key": key, "attempt": attempt, "compensation": compensation})

    def record_progress(self, saga_id: str, saga_name: str, step: str, details: Mapping[str, Any]) -> SagaRecord:
        return self._record(RecordKind.STEP_PROGRESS, saga_id, saga_name, step, details)

    def record_done(self, saga_id: str, saga_name: str, step: str, *, key: str,
                    result: Mapping[str, Any]) -> SagaRecord:
        return self._record(RecordKind.STEP_DONE, saga_id, saga_name, step, {"key": key, "result": result})

    def record_failed(self, saga_id: str, saga_name: str, step: str, *, error: BaseException,
                      business: bool, attempt: int = 0) -> SagaRecord:
        return self._record(RecordKind.STEP_FAILED, saga_id, saga_name, step,
                            {"error": describe(error), "business": business, "attempt": attempt}, error)

    def record_compensated(self, saga_id: str, saga_name: str, step: str, *, key: str,
                           details: Mapping[str, Any]) -> SagaRecord:
        return self._record(RecordKind.STEP_COMPENSATED, saga_id, saga_name, step,
                            {"key": key, "details": details})

    def record_compensation_progress(self, saga_id: str, saga_name: str, step: str,
                                     details: Mapping[str, Any]) -> SagaRecord:
        return self._record(RecordKind.COMPENSATION_PROGRESS, saga_id, saga_name, step, details)

    def record_compensation_failed(self, saga_id: str, saga_name: str, step: str, *, key: str,
                                   error: BaseException) -> SagaRecord:
        return self._record(RecordKind.COMPENSATION_FAILED, saga_id, saga_name, step,
                            {"key": key, "error": describe(error)}, error)

    def record_forward_requested(self, saga_id: str, saga_name: str, *, failed_run_id: str,
                                 attempt: int) -> SagaRecord:
        return self._record(RecordKind.FORWARD_REQUESTED, saga_id, saga_name, None,
                            {"failed_run_id": failed_run_id, "attempt": attempt})

    def record_escalated(self, saga_id: str, saga_name: str, *, reason: str) -> SagaRecord:
        return self._record(RecordKind.ESCALATED, saga_id, saga_name, None, {"reason": reason})

    def record_operator_resolved(self, saga_id: str, saga_name: str, *, by: str, reason: str, forced: bool,
                                 state_before: str) -> SagaRecord:
        """An operator settled the saga by hand (`arb-orchestration sagas resolve`): recovery leaves it alone from
        now on. Must-understand for older readers (see `RecordKind.OPERATOR_RESOLVED`)."""
        return self._record(RecordKind.OPERATOR_RESOLVED, saga_id, saga_name, None,
                            {"by": by, "reason": reason, "forced": forced, "state_before": state_before})

    def load_records(self, saga_id: str) -> list[SagaRecord]:
        """The saga's records as stored, oldest first, without folding them: readable even when the log holds
        kinds this code does not know (where `load` raises `SagaLogTooNewError`). For display, never for deciding."""
        raise NotImplementedError(f"{type(self).__name__} cannot list raw records")


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class InMemorySagaLog(SagaLog):
    """For unit tests: same semantics, records kept in a dict. `bind(run_id)` shares the store."""

    def __init__(self, run_id: str | None = "run-1", _store: dict[str, list[SagaRecord]] | None = None):
        self.run_id = run_id
        self._store = _store if _store is not None else defaultdict(list)
        self._lock = threading.Lock()
        self.errors: list[tuple[SagaRecord, BaseException]] = []

    def bind(self, run_id: str) -> "InMemorySagaLog":
        other = InMemorySagaLog(run_id, self._store)
        other.errors = self.errors
        return other

    def append(self, record: SagaRecord, *, error: BaseException | None = None) -> None:
        with self._lock:
            # Strictly increasing timestamps keep replay order equal to write order.
            existing = self._store[record.saga_id]
            if existing and record.timestamp <= existing[-1].timestamp:
                record = dataclasses.replace(record, timestamp=existing[-1].timestamp + 1e-6)
            existing.append(record)
            if error is not None:
                self.errors.append((record, error))

    def load(self, saga_id: str) -> SagaState:
        with self._lock:
            return SagaState.from_records(saga_id, list(self._store.get(saga_id, [])))

    def load_records(self, saga_id: str) -> list[SagaRecord]:
        with self._lock:
            return sorted(self._store.get(saga_id, []), key=lambda r: r.timestamp)

    def all_records(self) -> list[SagaRecord]:
        with self._lock:
            return [r for records in self._store.values() for r in records]


class InstanceSagaLog(SagaLog):
    """The saga log in the Dagster instance's event log (see the module docstring)."""

    def __init__(self, instance: "DagsterInstance", run: "DagsterRun | None" = None, *, in_run: bool = False):
        """`run` is where records are written; `in_run=True` when writing from that run's own steps
        (records then attach to the step in the UI), False for the recovery sensor writing afterwards."""
        self.instance = instance
        self.run = run
        self.run_id = run.run_id if run is not None else None
        self.in_run = in_run

    def append(self, record: SagaRecord, *, error: BaseException | None = None) -> None:
        from dagster import MetadataValue
        from dagster._core.events import EngineEventData
        from dagster._utils.error import SerializableErrorInfo, serializable_error_info_from_exc_info

        if self.run is None:
            raise RuntimeError("InstanceSagaLog without a run is read-only")
        error_info = None
        if error is not None and error.__traceback__ is not None:
            error_info = serializable_error_info_from_exc_info((type(error), error, error.__traceback__))
        elif error is not None:  # an error built but never raised (e.g. the kill-switch refusal)
            error_info = SerializableErrorInfo(describe(error), [], type(error).__name__)
        target = f" step {record.step}" if record.step else ""
        self.instance.report_engine_event(
            f"saga {record.saga_name} [{record.saga_id}]{target}: {record.kind_name}{_summary(record)}",
            self.run,
            EngineEventData(
                metadata={
                    RECORD_METADATA_KEY: MetadataValue.json(record.to_json()),
                    SAGA_ID_TAG: MetadataValue.text(record.saga_id),
                },
                error=error_info,
            ),
            step_key=record.step if self.in_run else None,
        )

    def load(self, saga_id: str) -> SagaState:
        saga_id = self.resolve_saga_id(saga_id)
        return SagaState.from_records(saga_id, self._read(saga_id))

    def load_records(self, saga_id: str, *, runs: "list[DagsterRun] | None" = None) -> list[SagaRecord]:
        """`runs`: the saga's runs (`runs_of_saga(saga_id)`) when the caller has them already; `saga_id` must
        then be the saga id itself (not a run id), as it is not resolved again."""
        if runs is None:
            saga_id = self.resolve_saga_id(saga_id)
        return sorted(self._read(saga_id, runs), key=lambda r: r.timestamp)

    def _read(self, saga_id: str, runs: "list[DagsterRun] | None" = None) -> list[SagaRecord]:
        from dagster import DagsterEventType

        records: list[SagaRecord] = []
        for run in self.runs_of_saga(saga_id) if runs is None else runs:
            for entry in self.instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
                event = entry.dagster_event
                data = event.engine_event_data if event is not None else None
                value = data.metadata.get(RECORD_METADATA_KEY) if data is not None else None
                if value is None:
                    continue
                record = SagaRecord.from_json(value.value)
                if record.saga_id == saga_id:
                    records.append(record)
        return records

    def resolve_saga_id(self, saga_or_run_id: str) -> str:
        run = self.instance.get_run_by_id(saga_or_run_id)
        if run is None:
            return saga_or_run_id
        return saga_id_for_run(run, self.instance.get_run_by_id)

    def runs_of_saga(self, saga_id: str) -> list["DagsterRun"]:
        from dagster import RunsFilter

        runs: dict[str, "DagsterRun"] = {}
        for run in self.instance.get_runs(filters=RunsFilter(tags={SAGA_ID_TAG: saga_id})):
            runs[run.run_id] = run
        if self.instance.has_run(saga_id):
            group = self.instance.get_run_group(saga_id)
            for run in group[1] if group else []:
                if run.run_id not in runs and saga_id_for_run(run, self.instance.get_run_by_id) == saga_id:
                    runs[run.run_id] = run
        return list(runs.values())


    def runs_of_sagas(self, saga_ids: "Sequence[str]", *, chunk: int = 200) -> dict[str, list["DagsterRun"]]:
        """`runs_of_saga` for many sagas in a few queries (not four per saga): saga id -> its runs."""
        from dagster import RunsFilter
        from dagster._core.storage.tags import ROOT_RUN_ID_TAG

        ids = list(dict.fromkeys(saga_ids))
        found: dict[str, dict[str, "DagsterRun"]] = {saga_id: {} for saga_id in ids}
        for start in range(0, len(ids), chunk):
            part = ids[start:start + chunk]
            for run in self.instance.get_runs(filters=RunsFilter(tags={SAGA_ID_TAG: part})):
                found[run.tags[SAGA_ID_TAG]].setdefault(run.run_id, run)
            # A saga id that is a run id: that run's group (its root and every re-execution of it).
            named_runs = self.instance.get_runs(filters=RunsFilter(run_ids=part))
            roots = sorted({run.root_run_id or run.run_id for run in named_runs})
            if not roots:
                continue
            known: dict[str, "DagsterRun"] = {run.run_id: run for run in named_runs}
            for run in self.instance.get_runs(filters=RunsFilter(run_ids=roots)):
                known.setdefault(run.run_id, run)
            members: dict[str, list["DagsterRun"]] = {}
            for run in self.instance.get_runs(filters=RunsFilter(tags={ROOT_RUN_ID_TAG: roots})):
                known.setdefault(run.run_id, run)
                members.setdefault(run.tags[ROOT_RUN_ID_TAG], []).append(run)

            def get_run(run_id: str) -> "DagsterRun | None":
                return known.get(run_id) or self.instance.get_run_by_id(run_id)

            for named in named_runs:
                saga_id, root_id = named.run_id, named.root_run_id or named.run_id
                group = ([known[root_id]] if root_id in known else []) + members.get(root_id, [])
                for run in group:
                    if run.run_id not in found[saga_id] and saga_id_for_run(run, get_run) == saga_id:
                        found[saga_id][run.run_id] = run
        return {saga_id: list(runs.values()) for saga_id, runs in found.items()}


def _summary(record: SagaRecord) -> str:
    data = record.data
    if record.kind in (RecordKind.STEP_FAILED, RecordKind.COMPENSATION_FAILED):
        return f" — {data.get('error')}"
    if record.kind is RecordKind.STEP_STARTED:
        return f" (key {data.get('key')}, attempt {data.get('attempt')})"
    if record.kind is RecordKind.ESCALATED:
        return f" — {data.get('reason')}"
    if record.kind is RecordKind.FORWARD_REQUESTED:
        return f" (after failed run {data.get('failed_run_id')}, attempt {data.get('attempt')})"
    if record.kind is RecordKind.OPERATOR_RESOLVED:
        return f" by {data.get('by')}{' (forced)' if data.get('forced') else ''} — {data.get('reason')}"
    return ""

