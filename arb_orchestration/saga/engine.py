"""The saga engine core: steps, their execution and compensation (pure Python, no Dagster).

A saga is an ordered list of `SagaStep`s. Each step is an action, an optional
compensation and an idempotency key derived from (saga name, saga id, step).
The Dagster layer (`saga.build`) turns each step into an op; this module
holds every decision, so it is tested without Dagster.

Rules, Temporal-style:
* The compensation is part of the step's definition and the `step_started`
  record is durable *before* the action runs: whoever recovers the saga knows
  what to undo even if the process dies mid-action. A compensation therefore
  must cope with an action that never happened (look things up by key).
* A step that is already `done` in the log is not run again: its recorded
  result is returned. Re-executions and recovery runs move nothing twice.
* Compensations run newest-first and stop at the first one that fails: a
  failed compensation is recorded, alerted and raised (chained to its cause),
  and the older steps stay as they are until it succeeds.
* Business errors (`BusinessError`) are recorded as such and re-raised; the
  Dagster layer turns them into `Failure(allow_retries=False)`. Everything
  else is re-raised for the op's `RetryPolicy`.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NoReturn, Sequence

from arb_orchestration.resources.errors import BusinessError
from arb_orchestration.saga.claim import (
    STEP_CLAIM_TTL_SECONDS,
    STEP_CLAIM_WAIT_SECONDS,
    ClaimLostError,
    HeldClaim,
    SagaClaims,
)
from arb_orchestration.saga.keys import derive_key, idempotency_key
from arb_orchestration.saga.kill_switch import TradingSwitch
from arb_orchestration.saga.log import SagaLog, describe
from arb_orchestration.saga.state import SagaState, StepState, jsonable

Alert = Callable[[str, str], None]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------- errors


class SagaError(Exception):
    """Base class of the engine's own errors."""


class SagaClosedError(SagaError, BusinessError):
    """The saga was already rolled back: a new attempt needs a new saga id, not a re-execution."""


class TradingPausedError(SagaError, BusinessError):
    """The kill switch is engaged; money-moving sagas do not start."""


class SagaBusyError(SagaError):
    """Another actor (a recovery sensor, a hook) holds the saga's claim: the step did not start.

    Transient on purpose: the op's RetryPolicy tries again, and by then the holder has either
    finished compensating (the retry then refuses with `SagaClosedError`) or let go.
    """


class CompensationFailedError(SagaError):
    """A compensation raised. `__cause__` is the compensation's error, `original` the step's."""

    def __init__(self, saga_name: str, saga_id: str, step: str, original: BaseException | None):
        cause = f" (undoing after: {describe(original)})" if original is not None else ""
        super().__init__(f"saga {saga_name} [{saga_id}]: compensation of step {step!r} failed{cause}")
        self.saga_name = saga_name
        self.saga_id = saga_id
        self.step = step
        self.original = original


class CompensationDeferred(Exception):
    """Raised BY a compensation that cannot decide yet, and knows when it will be able to.

    Example: a hedge unwind sent by an earlier attempt is not in Bybit's order history, but that history may lag
    its orders by up to two minutes, so "not in it" proves nothing until then (defs/hedging/steps.py). The
    compensation has done nothing a later attempt would do twice. `compensate` records no failure and sends no
    mail for it; the recovery sweep tries again on a later tick. A compensation must defer only for a bounded
    time (the lag): after `retry_after_seconds` it must decide, or fail.
    """

    def __init__(self, message: str, *, retry_after_seconds: float):
        super().__init__(message)
        self.retry_after_seconds = max(0.0, float(retry_after_seconds))


# How long a compensation may keep deferring (`CompensationDeferred`) after its first deferral; past it, the next
# deferral counts as a failure (recorded, mailed, towards escalation). The Bybit unwind defers for at most 120 s.
MAX_COMPENSATION_DEFERRAL_SECONDS = 900.0
# The engine's own compensation-progress note of a first deferral (filtered out of the compensation's context).
DEFERRED_SINCE = "engine_deferred_since"


class CompensationDeferralExpired(Exception):
    """A compensation still deferred `MAX_COMPENSATION_DEFERRAL_SECONDS` after its first deferral: a failure."""


class CompensationDeferredError(SagaError):
    """`compensate` stopped at a step whose compensation deferred (`CompensationDeferred`): nothing was recorded as
    failed and nobody was mailed; the steps not yet compensated wait for the recovery sweep."""

    def __init__(self, saga_name: str, saga_id: str, step: str, retry_after_seconds: float, why: str):
        super().__init__(f"saga {saga_name} [{saga_id}]: compensation of step {step!r} deferred for about "
                         f"{retry_after_seconds:.0f} s: {why}")
        self.saga_name = saga_name
        self.saga_id = saga_id
        self.step = step
        self.retry_after_seconds = retry_after_seconds


# --------------------------------------------------------------------------- definitions


def _resource_params(fn: Callable[..., Any]) -> tuple[str, ...]:
    params = list(inspect.signature(fn).parameters.values())
    if not params:
        raise TypeError(f"{fn.__name__} must take the step context as its first parameter")
    return tuple(p.name for p in params[1:])


@dataclass(frozen=True)
class SagaStep:
    """One step: `action(ctx: StepContext, **resources) -> dict`, and how to undo it.

    Parameters after the context are resource keys (e.g. `exchange`, `wise`),
    exactly as ops receive resources. The action returns a JSON-able dict of
    what it did (order ids, transfer ids, amounts); it is recorded and handed
    to later steps as `ctx.results[step_name]` and to the compensation as
    `ctx.result`. `compensation(ctx: CompensationContext, **resources) -> dict`
    undoes it and must be idempotent and safe when the action never happened.
    `pivot=True` marks the point of no return (see docs/sagas.md).
    `retry_policy` (a dagster `RetryPolicy`) overrides the saga's default.
    """

    name: str
    action: Callable[..., Mapping[str, Any] | None]
    compensation: Callable[..., Mapping[str, Any] | None] | None = None
    pivot: bool = False
    retry_policy: Any = None
    description: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"saga step name {self.name!r} must be a Python identifier (it becomes an op name)")
        _resource_params(self.action)
        if self.compensation is not None:
            _resource_params(self.compensation)

    @property
    def resource_keys(self) -> tuple[str, ...]:
        return _resource_params(self.action)

    @property
    def compensation_resource_keys(self) -> tuple[str, ...]:
        return _resource_params(self.compensation) if self.compensation else ()


def saga_step(
    name: str | None = None,
    *,
    compensation: Callable[..., Mapping[str, Any] | None] | None = None,
    pivot: bool = False,
    retry_policy: Any = None,
) -> Callable[[Callable[..., Mapping[str, Any] | None]], SagaStep]:
    """Decorator form of `SagaStep`: `@saga_step(compensation=undo_withdraw)` on the action."""

    def wrap(fn: Callable[..., Mapping[str, Any] | None]) -> SagaStep:
        return SagaStep(
            name=name or fn.__name__,
            action=fn,
            compensation=compensation,
            pivot=pivot,
            retry_policy=retry_policy,
            description=inspect.getdoc(fn),
        )

    return wrap


@dataclass(frozen=True)
class SagaDefinition:
    """A named, validated list of steps plus the saga-wide policies."""

    name: str
    steps: tuple[SagaStep, ...]
    config_class: type | None = None
    refuse_while_trading_paused: bool = True
    alert_resource_key: str | None = "smtp"
    max_forward_attempts: int = 3
    max_compensation_attempts: int = 5

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.steps:
            raise ValueError(f"saga {self.name} has no steps")
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"saga {self.name} has duplicate step names: {names}")
        pivots = [i for i, s in enumerate(self.steps) if s.pivot]
        if len(pivots) > 1:
            raise ValueError(f"saga {self.name} names more than one pivot: {[names[i] for i in pivots]}")
        after = [s.name for s in self.steps[self.pivot_index + 1 :] if s.compensation is not None]
        if after:
            raise ValueError(
                f"saga {self.name}: steps after the pivot are forward-only and cannot have compensations: {after}"
            )

    @property
    def pivot_index(self) -> int:
        """The pivot step's index; without an explicit pivot, the last step."""
        for i, s in enumerate(self.steps):
            if s.pivot:
                return i
        return len(self.steps) - 1

    @property
    def pivot(self) -> SagaStep:
        return self.steps[self.pivot_index]

    @property
    def forward_only(self) -> bool:
        """Nothing up to the pivot can be undone: every unfinished saga is completed forward."""
        return all(s.compensation is None for s in self.steps[: self.pivot_index + 1])

    def step(self, name: str) -> SagaStep:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"saga {self.name} has no step {name!r}")

    def index(self, name: str) -> int:
        return [s.name for s in self.steps].index(name)

    @property
    def compensation_resource_keys(self) -> set[str]:
        keys = {k for s in self.steps for k in s.compensation_resource_keys}
        if self.alert_resource_key:
            keys.add(self.alert_resource_key)
        return keys

    @property
    def resource_keys(self) -> set[str]:
        return {k for s in self.steps for k in s.resource_keys} | self.compensation_resource_keys


# --------------------------------------------------------------------------- contexts


@dataclass
class StepContext:
    """What an action sees. `key(*parts)` derives stable sub-keys (one per order, per venue...)."""

    saga_id: str
    saga_name: str
    step: str
    idempotency_key: str
    config: Any
    results: Mapping[str, Mapping[str, Any]]
    attempt: int
    run_id: str | None
    log: Any  # logging.Logger or Dagster's log manager
    trading_switch: TradingSwitch | None = None
    run_tags: Mapping[str, str] = field(default_factory=dict)
    # What earlier attempts of this step `note()`d (op retries, relaunched runs); empty on a fresh run.
    progress: Sequence[Mapping[str, Any]] = field(default_factory=list)
    _log: SagaLog | None = field(default=None, repr=False)

    def key(self, *parts: object) -> str:
        return derive_key(self.idempotency_key, *parts)

    def note(self, **details: Any) -> None:
        """Durably record progress inside a long step (e.g. an order id as soon as it exists)."""
        if self._log is not None:
            self._log.record_progress(self.saga_id, self.saga_name, self.step, jsonable(details))


@dataclass
class CompensationContext:
    """What a compensation sees: its step's key, recorded result (None if the action never finished).

    `progress` is what the *action* `note()`d. A compensation that moves money in several calls records
    its own progress with `note(**fields)` (durable before it returns, like an action's note) and finds
    what every earlier attempt of *this compensation* noted in `compensation_progress`, oldest first,
    across runs and actors: an attempt killed after a transfer and before its result was recorded leaves
    the transfer in the log, so the next attempt does not send it again.
    """

    saga_id: str
    saga_name: str
    step: str
    idempotency_key: str
    config: Any
    result: Mapping[str, Any] | None
    progress: Sequence[Mapping[str, Any]]
    results: Mapping[str, Mapping[str, Any]]
    log: Any
    # Earlier attempts' compensation notes for this step (oldest first); empty the first time, and in older logs.
    compensation_progress: Sequence[Mapping[str, Any]] = field(default_factory=list)
    # The saga log this compensation's outcome is recorded in. Under a claim it is the recovery actor's fenced
    # log (recovery._FencedLog): every note first renews the claim, and a lost claim raises `ClaimLostError`
    # with nothing written.
    _log: SagaLog | None = field(default=None, repr=False)

    def key(self, *parts: object) -> str:
        return derive_key(self.idempotency_key, *parts)

    def note(self, **fields: Any) -> None:
        """Durably record progress inside this compensation (e.g. a transfer before it is sent, then its
        outcome). Raises `ClaimLostError` (nothing written) if the actor lost the saga's claim: let it
        propagate, so nothing is sent after it."""
        if self._log is not None:
            self._log.record_compensation_progress(self.saga_id, self.saga_name, self.step, jsonable(fields))


@dataclass
class StepRuntime:
    """What the caller (an op, a test) supplies to run one step."""

    saga_id: str
    log: SagaLog
    resources: Mapping[str, Any]
    config: Any = None
    run_id: str | None = None
    attempt: int = 0
    logger: Any = field(default_factory=lambda: logging.getLogger("arb_orchestration.saga"))
    trading_switch: TradingSwitch | None = None
    run_tags: Mapping[str, str] = field(default_factory=dict)
    # False only for a fresh run's first attempt: skips a log read on the hot path.
    may_have_history: bool = True
    # The saga's claims. Taken only by a run that continues a saga other runs worked on (a
    # re-execution, a forward-recovery run), while it checks the log and records its start:
    # a fresh run never pays for it.
    claims: SagaClaims | None = None
    # The run continues an existing saga (re-execution, recovery run): claim before reading the log.
    continues_saga: bool = False
    claim_wait_seconds: float = STEP_CLAIM_WAIT_SECONDS
    claim_ttl_seconds: float = STEP_CLAIM_TTL_SECONDS
    # The step's claim is a `HeldClaim` (heartbeat + self-fence) like a recovery actor's; None: the
    # default margin (claim.default_fence_margin). Tests shorten it with the TTL.
    claim_fence_margin_seconds: float | None = None


# --------------------------------------------------------------------------- execution


def execute_step(saga: SagaDefinition, step_name: str, rt: StepRuntime) -> dict[str, Any]:
    """Run one step under the log's rules; returns its (recorded) result."""
    step = saga.step(step_name)
    index = saga.index(step_name)
    key = idempotency_key(saga.name, rt.saga_id, step.name)
    fresh = index == 0 and rt.attempt == 0 and not rt.may_have_history
    # A run that continues a saga other runs worked on (re-execution, forward-recovery run) may
    # meet a recovery actor compensating it right now: it decides and records its start under
    # the saga's claim. Once `step_started` is recorded and the claim let go, recovery sees this
    # run in progress and waits for it. A fresh run never touches the claim.
    # The window is a few statements, but a slow database can stretch it past any TTL: the claim is
    # held like a recovery actor's (heartbeat + self-fence), and checked before the start is
    # recorded and again after, before the action runs (`_begin_step`).
    held: HeldClaim | None = None
    try:
        if rt.claims is not None and rt.continues_saga:
            held = _claim_for_step(saga, step.name, rt)
        state = SagaState(rt.saga_id) if fresh else rt.log.load(rt.saga_id)
        if held is None and rt.claims is not None and any(r.run_id != rt.run_id for r in state.records):
            held = _claim_for_step(saga, step.name, rt)  # not flagged as continuing, but it is
            state = rt.log.load(rt.saga_id)
        already_done = _begin_step(saga, step, index, key, state, rt, held)
    finally:
        if held is not None:
            _release_step_claim(held, rt)
    if already_done is not None:
        return already_done
    ctx = StepContext(
        saga_id=rt.saga_id,
        saga_name=saga.name,
        step=step.name,
        idempotency_key=key,
        config=rt.config,
        results=state.results(),
        attempt=rt.attempt,
        run_id=rt.run_id,
        log=rt.logger,
        trading_switch=rt.trading_switch,
        run_tags=rt.run_tags,
        progress=list(state.steps[step.name].progress) if step.name in state.steps else [],
        _log=rt.log,
    )
    try:
        raw = step.action(ctx, **{k: rt.resources[k] for k in step.resource_keys})
    except BusinessError as exc:
        rt.log.record_failed(rt.saga_id, saga.name, step.name, error=exc, business=True, attempt=rt.attempt)
        raise
    except Exception as exc:
        rt.log.record_failed(rt.saga_id, saga.name, step.name, error=exc, business=False, attempt=rt.attempt)
        raise
    result = jsonable(raw if raw is not None else {})
    if not isinstance(result, dict):
        result = {"value": result}
    rt.log.record_done(rt.saga_id, saga.name, step.name, key=key, result=result)
    return result


def _claim_for_step(saga: SagaDefinition, step: str, rt: StepRuntime) -> HeldClaim:
    assert rt.claims is not None
    actor = f"step {step} of run {rt.run_id}"
    result = rt.claims.acquire(rt.saga_id, actor, ttl_seconds=rt.claim_ttl_seconds, run_id=rt.run_id,
                               wait_seconds=rt.claim_wait_seconds)
    if not result.acquired:
        assert result.holder is not None
        raise SagaBusyError(f"saga {saga.name} [{rt.saga_id}]: step {step} did not start: the saga is claimed by "
                            f"{result.holder.describe()} (waited {rt.claim_wait_seconds:g} s)")
    assert result.lease is not None
    if result.took_over is not None:
        rt.logger.warning(f"saga {saga.name} [{rt.saga_id}]: {actor} took over the claim of "
                          f"{result.took_over.describe()} (its lease expired or its run ended)")
    held = HeldClaim(rt.claims, result.lease, ttl_seconds=rt.claim_ttl_seconds,
                     fence_margin_seconds=rt.claim_fence_margin_seconds, logger=rt.logger)
    return held.start_heartbeat()


def _release_step_claim(held: HeldClaim, rt: StepRuntime) -> None:
    # Never let a failed release replace the step's own outcome (or error): the lease then runs out
    # at its expiry, or as soon as this run ends (it is tied to the run).
    try:
        held.release()
    except Exception as exc:
        rt.logger.warning(f"saga [{rt.saga_id}]: could not release the step's claim ({type(exc).__name__}: {exc}); "
                          f"it ends when this run ends or at its expiry")


def _step_safe_point(held: HeldClaim | None, saga: SagaDefinition, step: str, rt: StepRuntime, what: str) -> None:
    """`SagaBusyError` (transient: the op retries) if the step's claim was lost or fenced."""
    if held is None:
        return
    try:
        held.renew()
    except ClaimLostError as exc:
        raise SagaBusyError(f"saga {saga.name} [{rt.saga_id}]: step {step} {what}: it lost the saga's claim "
                            f"({exc})") from exc


def _begin_step(saga: SagaDefinition, step: SagaStep, index: int, key: str, state: SagaState,
                rt: StepRuntime, held: HeldClaim | None = None) -> dict[str, Any] | None:
    """Checks the log allows the step, then records its start; returns the recorded result if already done.

    With the saga's claim (`held`), every write here is preceded by a safe point, and the start is
    confirmed by one more after it: a step whose claim was lost or fenced neither records nor acts.
    """
    if state.resolved:
        # An operator settled it by hand (`arb-orchestration sagas resolve`): recovery leaves it alone, and so
        # does a re-execution, done steps included (acting again on top of a manual fix is what resolving stops).
        resolution = state.resolution or {}
        raise SagaClosedError(
            f"saga {saga.name} [{rt.saga_id}] was resolved by hand by {resolution.get('by') or '?'} "
            f"({resolution.get('reason') or 'no reason given'}); it does not run again. "
            "Start a new saga (new run, no re-execution) to try again."
        )
    if state.compensation_began:
        raise SagaClosedError(
            f"saga {saga.name} [{rt.saga_id}] was rolled back; it does not run again. "
            "Start a new saga (new run, no re-execution) to try again."
        )
    mine = state.step(step.name)
    if mine.done:
        rt.logger.info(f"saga {saga.name} [{rt.saga_id}]: step {step.name} already done; not running it again")
        return dict(mine.result or {})

    if index == 0 and not state.any_started and saga.refuse_while_trading_paused and rt.trading_switch:
        pause = rt.trading_switch.get()
        if pause.paused:
            error = TradingPausedError(
                f"trading is paused ({pause.reason}; by {pause.changed_by or 'unknown'}): "
                f"saga {saga.name} does not start"
            )
            _step_safe_point(held, saga, step.name, rt, "did not record its refusal")
            rt.log.record_failed(rt.saga_id, saga.name, step.name, error=error, business=True, attempt=rt.attempt)
            raise error

    _step_safe_point(held, saga, step.name, rt, "did not start")
    rt.log.record_started(
        rt.saga_id,
        saga.name,
        step.name,
        key=key,
        attempt=rt.attempt,
        compensation=step.compensation.__name__ if step.compensation else None,
    )
    # The write may have been slow enough for the lease to run out under it and another actor to read
    # the log without it: confirm before acting. If lost, the recorded start is harmless (it reads as
    # "started, outcome unknown": compensations cope with an action that never happened, by key).
    _step_safe_point(held, saga, step.name, rt, "recorded its start but did not run its action")
    return None


def pending_compensations(saga: SagaDefinition, state: SagaState) -> list[SagaStep]:
    """Steps to undo, newest first: started (done or not), compensable, not yet compensated."""
    pending = []
    for step in reversed(saga.steps[: saga.pivot_index + 1]):
        s = state.step(step.name)
        if step.compensation is not None and s.started and not s.compensated:
            pending.append(step)
    return pending


def compensate(
    saga: SagaDefinition,
    saga_id: str,
    *,
    log: SagaLog,
    resources: Mapping[str, Any],
    config: Any = None,
    alert: Alert | None = None,
    logger: Any = None,
    cause: BaseException | None = None,
    before_each: Callable[[str], None] | None = None,
) -> list[str]:
    """Undo every pending step newest-first; returns the steps compensated now.

    Raises `CompensationFailedError` (chained from the compensation's error)
    at the first failure, after recording and alerting it; `CompensationDeferredError` (nothing recorded,
    nobody mailed) when a compensation raised `CompensationDeferred`. `before_each(step)`
    runs before each compensation (the claim's renewal: whatever it raises stops
    the compensation before that step is touched).
    """
    logger = logger or logging.getLogger("arb_orchestration.saga")
    state = log.load(saga_id)
    results = state.results()
    done: list[str] = []
    for step in pending_compensations(saga, state):
        st: StepState = state.step(step.name)
        key = st.key or idempotency_key(saga.name, saga_id, step.name)
        ctx = CompensationContext(
            saga_id=saga_id,
            saga_name=saga.name,
            step=step.name,
            idempotency_key=key,
            config=config,
            result=st.result if st.done else None,
            progress=list(st.progress),
            results=results,
            log=logger,
            compensation_progress=[n for n in st.compensation_progress if DEFERRED_SINCE not in n],
            _log=log,
        )
        assert step.compensation is not None
        if before_each is not None:
            before_each(step.name)
        try:
            raw = step.compensation(ctx, **{k: resources[k] for k in step.compensation_resource_keys})
        except ClaimLostError:
            # A note found the claim gone (nothing written): another actor owns the saga now. Neither a
            # failure (it would count towards that actor's escalation) nor a mail: stop here.
            raise
        except CompensationDeferred as exc:
            # Not a failure: the compensation cannot tell yet and did nothing a later attempt repeats. No failure
            # record (it would count towards escalation), no mail; the recovery sweep comes back to it. Bounded:
            # the first deferral is noted, and one past MAX_COMPENSATION_DEFERRAL_SECONDS after it is a failure.
            since = _deferred_since(st.compensation_progress)
            now = time.time()
            if since is None or now - since <= MAX_COMPENSATION_DEFERRAL_SECONDS:
                if since is None:
                    log.record_compensation_progress(saga_id, saga.name, step.name,
                                                     {DEFERRED_SINCE: now, "why": describe(exc)})
                deferred = CompensationDeferredError(saga.name, saga_id, step.name, exc.retry_after_seconds, str(exc))
                logger.warning(f"{deferred}; the recovery sweep tries again on a later tick")
                raise deferred from exc
            expired = CompensationDeferralExpired(
                f"still deferred {now - since:.0f} s after its first deferral (limit "
                f"{MAX_COMPENSATION_DEFERRAL_SECONDS:g} s): {exc}")
            expired.__cause__ = exc
            _fail_compensation(saga, saga_id, step.name, key, expired, cause, done, state, log=log, alert=alert,
                               logger=logger)
        except Exception as exc:
            _fail_compensation(saga, saga_id, step.name, key, exc, cause, done, state, log=log, alert=alert,
                               logger=logger)
        details = jsonable(raw if raw is not None else {})
        log.record_compensated(saga_id, saga.name, step.name, key=key,
                               details=details if isinstance(details, dict) else {"value": details})
        logger.info(f"saga {saga.name} [{saga_id}]: compensated step {step.name}")
        done.append(step.name)
    return done


def _deferred_since(notes: Sequence[Mapping[str, Any]]) -> float | None:
    """When the engine first noted a deferral of this compensation (its note), if it did."""
    for note in notes or ():
        value = note.get(DEFERRED_SINCE)
        if isinstance(value, (int, float)):
            return float(value)
    return None


def _fail_compensation(saga: SagaDefinition, saga_id: str, step: str, key: str, exc: BaseException,
                       cause: BaseException | None, done: list[str], state: SagaState, *, log: SagaLog,
                       alert: Alert | None, logger: Any) -> NoReturn:
    """Record, log and mail a failed compensation, then raise `CompensationFailedError` from it."""
    log.record_compensation_failed(saga_id, saga.name, step, key=key, error=exc)
    failure = CompensationFailedError(saga.name, saga_id, step, cause)
    logger.error(f"{failure}: {describe(exc)}")
    send_alert(
        alert,
        logger,
        f"[saga] COMPENSATION FAILED: {saga.name} step {step} [{saga_id}]",
        _compensation_failure_body(saga, saga_id, step, exc, cause, done, state),
    )
    raise failure from exc


def send_alert(alert: Alert | None, logger: Any, subject: str, body: str) -> bool:
    """Mail the risk team; a broken mailer is logged as an error, never allowed to hide the saga's state."""
    if alert is None:
        logger.error(f"no alert channel configured; would have sent: {subject}")
        return False
    try:
        alert(subject, body)
        return True
    except Exception as exc:  # the saga log already holds the facts; the mail is a courtesy copy
        logger.error(f"alert '{subject}' could not be sent: {describe(exc)}")
        return False


def _compensation_failure_body(
    saga: SagaDefinition,
    saga_id: str,
    step: str,
    error: BaseException,
    cause: BaseException | None,
    done: list[str],
    state: SagaState,
) -> str:
    lines = [
        f"Saga {saga.name} [{saga_id}] could not undo step {step!r}.",
        f"Compensation error: {describe(error)}",
    ]
    if cause is not None:
        lines.append(f"It was undoing after: {describe(cause)}")
    lines.append(f"Compensated just now: {', '.join(done) or 'nothing'}")
    still = [s.name for s in pending_compensations(saga, state) if s.name not in done]
    lines.append(f"Still NOT undone (newest first): {', '.join(still)}")
    lines.append("The recovery sensor retries the compensation; it escalates after "
                 f"{saga.max_compensation_attempts} failures. Runs: {', '.join(state.run_ids) or '-'}")
    return "\n".join(lines)
