"""Saga-log records and the state folded from them (pure Python, no Dagster).

The log is append-only. `SagaState.from_records` replays it into one
`StepState` per step; the engine and the recovery planner decide from that
state alone, so everything they do can be tested without a Dagster instance.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping


class RecordKind(str, enum.Enum):
    STEP_STARTED = "step_started"
    STEP_PROGRESS = "step_progress"
    STEP_DONE = "step_done"
    STEP_FAILED = "step_failed"
    STEP_COMPENSATED = "step_compensated"
    COMPENSATION_FAILED = "compensation_failed"
    # A compensation's own `note()`: progress inside a compensation (a transfer about to be sent, its
    # outcome), so the next attempt of that compensation (another actor, another run) does not repeat it.
    COMPENSATION_PROGRESS = "compensation_progress"
    FORWARD_REQUESTED = "forward_requested"
    ESCALATED = "escalated"
    # An operator fixed the saga by hand (`arb-orchestration sagas resolve`; docs/sagas-cli.md): who, when, why.
    # Terminal for recovery: no compensation, no relaunch, no escalation mail after it. MUST-UNDERSTAND (not in
    # IGNORABLE_KINDS): an older reader that skipped it would see an unresolved saga and could compensate again or
    # escalate (mail) a saga a person has already settled on the venue; refusing ("log too new") is the safe
    # failure. Only the first one counts (`SagaState.resolution`); the command writes no second one.
    OPERATOR_RESOLVED = "operator_resolved"


# ---- forward compatibility: record kinds a reader does not know (docs/sagas.md, "Upgrades") ----------------------
#
# A record of a kind this code does not know was written by a newer version. Whether a reader may skip it is
# decided by its *writer*, the only one that knows what it means, and travels with the record: the JSON key
# IGNORABLE_KEY set to true says "a reader that does not know this kind decides correctly without it" (pure
# information: nothing in it changes what may be done next). Without that flag an unknown kind is
# must-understand: the reader refuses to act on that saga (`SagaLogTooNewError` from `SagaState.from_records`,
# so from every `SagaLog.load` of it) until it is upgraded; other sagas are not affected. An ignorable one is
# skipped with a WARNING naming it. Failing closed is the point: skipping a record that meant "compensation
# began" or "step done" would let an old reader go forward on a saga being rolled back, or redo a step.
IGNORABLE_KEY = "ignorable_by_older_readers"

# Kinds of this version that an older reader may skip. Every kind so far changes decisions (compensation_progress
# included: it makes `compensation_began` true and bounds a rerun), so none. A new kind goes here only if a
# reader without it still decides exactly as it should; then it is written with IGNORABLE_KEY: true.
IGNORABLE_KINDS: frozenset[RecordKind] = frozenset()

_log = logging.getLogger("arb_orchestration.saga")


class SagaLogTooNewError(RuntimeError):
    """The saga's log holds record kinds from a newer version that older readers must not skip: nothing is
    decided or done for this saga by this code (upgrade it). Raised per saga; other sagas are unaffected."""

    def __init__(self, saga_id: str, kinds: Iterable[str]):
        self.saga_id = saga_id
        self.kinds = tuple(sorted(set(kinds)))
        super().__init__(
            f"saga log of [{saga_id}] has record kind(s) {', '.join(self.kinds)} from a newer version that this "
            "code does not know and must not ignore; upgrade this code location (and every daemon/code server "
            "that runs saga steps or recovery). Nothing is done for this saga until then; other sagas are "
            "unaffected."
        )


@dataclass(frozen=True)
class SagaRecord:
    """One durable fact about a saga. `data` holds what the step did (ids, amounts, errors).

    `kind` is a `RecordKind`, or the raw string of a kind this code does not know (read from a newer version's
    log; `known` is False), with `ignorable` saying whether its writer allowed older readers to skip it.
    """

    kind: RecordKind | str
    saga_id: str
    saga_name: str
    step: str | None = None
    run_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)
    ignorable: bool = False

    @property
    def known(self) -> bool:
        return isinstance(self.kind, RecordKind)

    @property
    def kind_name(self) -> str:
        return self.kind.value if isinstance(self.kind, RecordKind) else str(self.kind)

    def to_json(self) -> dict[str, Any]:
        raw = {
            "kind": self.kind_name,
            "saga_id": self.saga_id,
            "saga_name": self.saga_name,
            "step": self.step,
            "run_id": self.run_id,
            "data": jsonable(self.data),
            "timestamp": self.timestamp,
        }
        if self.ignorable or self.kind in IGNORABLE_KINDS:
            raw[IGNORABLE_KEY] = True
        return raw

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "SagaRecord":
        """Never raises on an unknown kind (it is kept as a string): `SagaState.from_records` applies the rule."""
        try:
            kind: RecordKind | str = RecordKind(raw["kind"])
        except ValueError:
            kind = str(raw["kind"])
        return cls(
            kind=kind,
            saga_id=raw["saga_id"],
            saga_name=raw["saga_name"],
            step=raw.get("step"),
            run_id=raw.get("run_id"),
            data=dict(raw.get("data") or {}),
            timestamp=float(raw.get("timestamp") or 0.0),
            ignorable=raw.get(IGNORABLE_KEY) is True,
        )


def jsonable(value: Any) -> Any:
    """`value` as plain JSON types: pydantic models, dataclasses, enums and sets included."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    # Last resort keeps the log writable; the repr still says what it was.
    return json.loads(json.dumps(value, default=repr))


@dataclass
class StepState:
    """What the log says about one step."""

    name: str
    key: str | None = None
    started: bool = False
    starts: int = 0
    done: bool = False
    result: dict[str, Any] | None = None
    progress: list[dict[str, Any]] = field(default_factory=list)
    last_error: str | None = None
    # The last failure was a business error: the venue definitively refused, nothing applied.
    failed_business: bool = False
    compensated: bool = False
    compensation: dict[str, Any] | None = None
    compensation_failures: int = 0
    last_compensation_error: str | None = None
    # Every attempt's compensation notes, oldest first (`CompensationContext.note`); empty in older logs.
    compensation_progress: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SagaState:
    """A saga as its log describes it. Decisions need the definition's step order (see recovery)."""

    saga_id: str
    saga_name: str | None = None
    steps: dict[str, StepState] = field(default_factory=dict)
    records: list[SagaRecord] = field(default_factory=list)
    forward_requested_for: list[str] = field(default_factory=list)  # failed run ids
    forward_requested_at: dict[str, float] = field(default_factory=dict)  # failed run id -> first request time
    escalated: bool = False
    escalation_reason: str | None = None
    # Records of kinds this code does not know whose writer marked them ignorable: skipped (WARNING), kept here.
    ignored_records: list[SagaRecord] = field(default_factory=list)
    # The first `operator_resolved` record (an operator settled the saga by hand): its data (by, reason, forced,
    # state_before) plus "at" (the record's time). None while no operator resolved it.
    resolution: dict[str, Any] | None = None

    @property
    def resolved(self) -> bool:
        """An operator resolved the saga by hand: recovery treats it as terminal (`recovery.decide`)."""
        return self.resolution is not None

    @property
    def failed_compensations(self) -> list[str]:
        """Steps whose compensation failed and has not succeeded since (oldest step first in log order)."""
        return [name for name, s in self.steps.items() if s.compensation_failures and not s.compensated]

    def step(self, name: str) -> StepState:
        return self.steps.get(name) or StepState(name)

    @property
    def any_started(self) -> bool:
        return any(s.started for s in self.steps.values())

    @property
    def compensation_began(self) -> bool:
        """Once any compensation ran, failed or noted progress, the saga only ever goes backward."""
        return any(s.compensated or s.compensation_failures or s.compensation_progress for s in self.steps.values())

    @property
    def forward_attempts(self) -> int:
        return len(self.forward_requested_for)

    @property
    def run_ids(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.records:
            if r.run_id:
                seen.setdefault(r.run_id)
        return list(seen)

    def results(self) -> dict[str, dict[str, Any]]:
        """Recorded results of the steps that are done, by step name."""
        return {name: dict(s.result or {}) for name, s in self.steps.items() if s.done}

    @classmethod
    def from_records(cls, saga_id: str, records: Iterable[SagaRecord]) -> "SagaState":
        """Replay the log. Raises `SagaLogTooNewError` if it holds a kind this code does not know and its writer
        did not mark ignorable; unknown ignorable kinds are skipped with a WARNING (see IGNORABLE_KEY)."""
        ordered = sorted(records, key=lambda r: r.timestamp)
        unknown = [r for r in ordered if not r.known]
        if unknown:
            must_understand = [r.kind_name for r in unknown if not r.ignorable]
            if must_understand:
                raise SagaLogTooNewError(saga_id, must_understand)
            counts: dict[str, int] = {}
            for r in unknown:
                counts[r.kind_name] = counts.get(r.kind_name, 0) + 1
            _log.warning(f"saga [{saga_id}]: ignoring record kind(s) from a newer version that this code does not "
                         f"know ({', '.join(f'{k} x{n}' for k, n in sorted(counts.items()))}); their writer marked "
                         "them safe for older readers to skip")
            ordered = [r for r in ordered if r.known]
        state = cls(saga_id=saga_id, records=ordered, ignored_records=unknown)
        for r in ordered:
            state.saga_name = state.saga_name or r.saga_name
            if r.kind is RecordKind.FORWARD_REQUESTED:
                state.forward_requested_for.append(str(r.data.get("failed_run_id")))
                state.forward_requested_at.setdefault(str(r.data.get("failed_run_id")), r.timestamp)
                continue
            if r.kind is RecordKind.ESCALATED:
                state.escalated = True
                state.escalation_reason = str(r.data.get("reason"))
                continue
            if r.kind is RecordKind.OPERATOR_RESOLVED:
                if state.resolution is None:
                    state.resolution = {**dict(r.data), "at": r.timestamp, "run_id": r.run_id}
                continue
            if r.step is None:
                continue
            s = state.steps.setdefault(r.step, StepState(r.step))
            if r.kind is RecordKind.STEP_STARTED:
                s.started = True
                s.starts += 1
                s.key = r.data.get("key", s.key)
                s.failed_business = False
            elif r.kind is RecordKind.STEP_PROGRESS:
                s.progress.append(dict(r.data))
            elif r.kind is RecordKind.STEP_DONE:
                s.done = True
                s.result = dict(r.data.get("result") or {})
                s.failed_business = False
            elif r.kind is RecordKind.STEP_FAILED:
                s.last_error = r.data.get("error")
                s.failed_business = bool(r.data.get("business"))
            elif r.kind is RecordKind.STEP_COMPENSATED:
                s.compensated = True
                s.compensation = dict(r.data.get("details") or {})
            elif r.kind is RecordKind.COMPENSATION_FAILED:
                s.compensation_failures += 1
                s.last_compensation_error = r.data.get("error")
            elif r.kind is RecordKind.COMPENSATION_PROGRESS:
                s.compensation_progress.append(dict(r.data))
        return state
