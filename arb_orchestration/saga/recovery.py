"""What to do with a saga whose run ended without finishing it (pure Python, no Dagster).

`decide(saga, state)` reads the saga log and says which way the saga goes:

* before the pivot (nothing irreversible done yet): compensate, newest-first;
* after the pivot: forward only — finish the remaining steps (a relaunch with
  the same saga id, so every key repeats and done steps are skipped);
* a pivot without a compensation that started but did not report a business
  refusal has an *unknown* outcome, so it too is completed forward;
* a saga whose every step up to the pivot lacks a compensation is
  forward-only from the start (the stop-loss: relaunched even if it died
  before its first step).

`recover_saga` acts on that decision, idempotently: compensations and
relaunches are recorded in the log, so a second call finds nothing to do.
Both the failure hook (in the dying run) and the recovery sensors (after a
crash) go through here.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from arb_orchestration.saga.claim import (
    DEFAULT_CLAIM_TTL_SECONDS,
    DEFAULT_MAX_HOLD_SECONDS,
    RENEWALS_PER_TTL,
    ClaimLostError,
    HeldClaim,
    Lease,
    SagaClaims,
    check_claim_timing,
    default_fence_margin,
)
from arb_orchestration.saga.engine import (
    Alert,
    CompensationDeferredError,
    CompensationFailedError,
    SagaDefinition,
    compensate,
    pending_compensations,
    send_alert,
)
from arb_orchestration.saga.keys import FORWARD_ATTEMPT_TAG, RECOVERY_OF_TAG, SAGA_ID_TAG
from arb_orchestration.saga.log import SagaLog, describe
from arb_orchestration.saga.state import RecordKind, SagaRecord, SagaState


class Verdict(str, enum.Enum):
    COMPLETED = "completed"
    NOT_STARTED = "not_started"
    COMPENSATED = "compensated"  # nothing (left) to undo
    COMPENSATE = "compensate"  # undo work pending
    FORWARD = "forward"  # finish it
    ESCALATED = "escalated"  # an operator owns it now
    RESOLVED = "resolved"  # an operator settled it by hand (`sagas resolve`): terminal, nothing more is done


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    pending: tuple[str, ...] = ()  # compensations, newest first
    next_step: str | None = None  # for FORWARD


def decide(saga: SagaDefinition, state: SagaState) -> Decision:
    steps = saga.steps
    if state.resolved:  # before everything: a person settled it on the venue; acting again could undo their fix
        r = state.resolution or {}
        return Decision(Verdict.RESOLVED, f"resolved by hand by {r.get('by')}: {r.get('reason')}")
    if all(state.step(s.name).done for s in steps):
        return Decision(Verdict.COMPLETED, "every step is done")
    if state.escalated:
        return Decision(Verdict.ESCALATED, f"escalated: {state.escalation_reason}")
    if state.compensation_began:
        pending = tuple(s.name for s in pending_compensations(saga, state))
        if pending:
            return Decision(Verdict.COMPENSATE, "compensation in progress", pending)
        return Decision(Verdict.COMPENSATED, "every started step is compensated")
    next_step = next(s.name for s in steps if not state.step(s.name).done)
    if saga.forward_only:
        return Decision(Verdict.FORWARD, "nothing up to the pivot can be undone: forward only", next_step=next_step)
    pivot = saga.pivot
    pivot_state = state.step(pivot.name)
    if pivot_state.done:
        return Decision(Verdict.FORWARD, f"past the pivot {pivot.name}: forward only", next_step=next_step)
    if pivot_state.started and pivot.compensation is None and not pivot_state.failed_business:
        return Decision(
            Verdict.FORWARD,
            f"pivot {pivot.name} started and cannot be undone; its outcome is unknown: finish it",
            next_step=next_step,
        )
    if not state.any_started:
        return Decision(Verdict.NOT_STARTED, "no step started")
    pending = tuple(s.name for s in pending_compensations(saga, state))
    if pending:
        return Decision(Verdict.COMPENSATE, "failed before the pivot: undo", pending)
    return Decision(Verdict.COMPENSATED, "failed before the pivot; nothing needed undoing")


@dataclass(frozen=True)
class FailedRun:
    """The run that ended without finishing the saga."""

    run_id: str
    job_name: str
    canceled: bool = False
    run_config: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)  # carried over to a relaunch (not dagster/*)


@dataclass(frozen=True)
class RelaunchRequest:
    """A new run of the same job that continues the same saga (same keys)."""

    job_name: str
    run_key: str
    run_config: Mapping[str, Any]
    tags: Mapping[str, str]


class Action(str, enum.Enum):
    NONE = "none"
    WAITING = "waiting"  # another run of the saga is in progress
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"
    RELAUNCH = "relaunch"
    ESCALATED = "escalated"
    ALERTED = "alerted"  # hook: forward recovery will follow
    BUSY = "busy"  # another actor holds the saga's claim: it was left alone (reason names the holder)
    CLAIM_LOST = "claim_lost"  # our claim was taken over while we acted: we stopped (logged at ERROR)


@dataclass(frozen=True)
class RecoveryOutcome:
    saga_id: str
    decision: Decision
    action: Action
    reason: str
    compensated: tuple[str, ...] = ()
    relaunch: RelaunchRequest | None = None


@dataclass(frozen=True)
class ClaimSpec:
    """Who takes the saga's claim, for how long, and how long it waits for another holder.

    While held, a heartbeat renews the lease every `renew_every_seconds` (default: a sixth of
    `ttl_seconds`) until `max_hold_seconds` (None: no limit); the holder fences itself once no
    renewal was confirmed for `ttl_seconds - fence_margin_seconds` (default margin: 15 s, or a
    quarter of a shorter TTL; see `claim.DEFAULT_FENCE_MARGIN_SECONDS`)."""

    claims: SagaClaims
    actor: str
    run_id: str | None = None  # the run the actor lives in (hook): the lease dies with it
    ttl_seconds: float = DEFAULT_CLAIM_TTL_SECONDS
    wait_seconds: float = 0.0
    renew_every_seconds: float | None = None
    max_hold_seconds: float | None = DEFAULT_MAX_HOLD_SECONDS
    fence_margin_seconds: float | None = None

    def __post_init__(self) -> None:  # refuse a bad period before a lease is taken, not after
        every = self.ttl_seconds / RENEWALS_PER_TTL if self.renew_every_seconds is None else self.renew_every_seconds
        margin = (default_fence_margin(self.ttl_seconds) if self.fence_margin_seconds is None
                  else self.fence_margin_seconds)
        check_claim_timing(self.ttl_seconds, every, margin, f"claim of {self.actor}")


@contextlib.contextmanager
def holding_claim(spec: ClaimSpec | None, saga_name: str, saga_id: str,
                  logger: Any) -> Iterator[HeldClaim | Lease | None]:
    """Yields our `HeldClaim` (heartbeat running); the other holder's `Lease` if the claim is taken; None without a spec.

    The heartbeat runs for the whole held section (log reads, compensation calls, mails), so a
    single call longer than the lease keeps it; it stops before the lease is released. If its
    renewals keep failing the holder fences itself before the lease can expire (`HeldClaim`): the
    next safe point raises `ClaimLostError`, exactly as for a lease found taken over.
    """
    if spec is None:
        yield None
        return
    result = spec.claims.acquire(saga_id, spec.actor, ttl_seconds=spec.ttl_seconds, run_id=spec.run_id,
                                 wait_seconds=spec.wait_seconds)
    if not result.acquired:
        assert result.holder is not None
        yield result.holder
        return
    assert result.lease is not None
    if result.took_over is not None:
        logger.warning(f"saga {saga_name} [{saga_id}]: {spec.actor} took over the claim of "
                       f"{result.took_over.describe()} (its lease expired or its run ended)")
    held = HeldClaim(spec.claims, result.lease, ttl_seconds=spec.ttl_seconds,
                     renew_every_seconds=spec.renew_every_seconds, max_hold_seconds=spec.max_hold_seconds,
                     fence_margin_seconds=spec.fence_margin_seconds, logger=logger)
    held.start_heartbeat()
    try:
        yield held
    finally:
        if not held.release() and held.lost is None:
            logger.warning(f"saga {saga_name} [{saga_id}]: {spec.actor} no longer held its claim at release "
                           f"(taken over after its lease ran out)")


class _FencedLog(SagaLog):
    """The saga log as a claim holder writes it: every write is a safe point that renews the claim first.

    Once the lease is gone nothing more is written: not the outcome of the compensation that was in
    flight when it was lost (logged at ERROR instead; the new holder repeats that compensation,
    idempotent by key, and records it), not a compensation failure (it would count towards the new
    holder's escalation), not a relaunch request, not an escalation. Raising `ClaimLostError` from
    the write also stops `engine.compensate` before its next step and before any mail.
    """

    def __init__(self, inner: SagaLog, held: HeldClaim, logger: Any):
        self._inner = inner
        self._held = held
        self._logger = logger
        self.run_id = inner.run_id

    def append(self, record: SagaRecord, *, error: BaseException | None = None) -> None:
        try:
            self._held.renew()
        except ClaimLostError as exc:
            self._logger.error(f"CLAIM LOST: {exc}. {_what(record)} — NOT recorded; {self._held.lease.actor} "
                               f"stops acting on saga {record.saga_name} [{record.saga_id}] here")
            raise
        self._inner.append(record, error=error)

    def load(self, saga_id: str) -> SagaState:
        return self._inner.load(saga_id)

    def load_records(self, saga_id: str) -> list[SagaRecord]:
        return self._inner.load_records(saga_id)

    def __getattr__(self, name: str) -> Any:  # runs_of_saga, resolve_saga_id, ...
        return getattr(self._inner, name)


def _what(record: SagaRecord) -> str:
    if record.kind is RecordKind.STEP_COMPENSATED:
        return f"The compensation of step {record.step} had returned {dict(record.data).get('details')}"
    if record.kind is RecordKind.COMPENSATION_FAILED:
        return f"The compensation of step {record.step} had failed ({dict(record.data).get('error')})"
    return f"Record {record.kind.value}{f' of step {record.step}' if record.step else ''} {dict(record.data)}"


def _fenced(log: SagaLog, held: HeldClaim | None, logger: Any) -> SagaLog:
    return log if held is None else _FencedLog(log, held, logger)


def _checkpoint(held: HeldClaim | None) -> None:
    """A safe point without a log write (before a mail): `ClaimLostError` if the claim is gone."""
    if held is not None:
        held.renew()


def _claim_lost(saga: SagaDefinition, saga_id: str, log: SagaLog, actor: str, exc: ClaimLostError,
                logger: Any) -> RecoveryOutcome:
    logger.error(f"saga {saga.name} [{saga_id}]: {actor} LOST its claim while acting and stopped: {exc}")
    return RecoveryOutcome(saga_id, decide(saga, log.load(saga_id)), Action.CLAIM_LOST, str(exc))


def _busy(saga: SagaDefinition, saga_id: str, log: SagaLog, actor: str, holder: Lease, logger: Any) -> RecoveryOutcome:
    reason = f"claimed by {holder.describe()}"
    logger.info(f"saga {saga.name} [{saga_id}]: {actor} leaves it alone: {reason}")
    return RecoveryOutcome(saga_id, decide(saga, log.load(saga_id)), Action.BUSY, reason)


def recover_saga(
    saga: SagaDefinition,
    saga_id: str,
    failed_run: FailedRun,
    *,
    log: SagaLog,
    resources: Mapping[str, Any],
    alert: Alert | None,
    config: Any = None,
    active_runs: int | Callable[[], int] = 0,
    relaunch_exists: bool | Callable[[], bool] = False,
    claim: ClaimSpec | None = None,
    reissue_after_seconds: float = 0.0,
    logger: Any = None,
) -> RecoveryOutcome:
    """Bring a saga whose run ended to a consistent state (the recovery sensors' job).

    Compensates in place (before the pivot) or returns a `RelaunchRequest`
    (after it) which the caller must submit. The request is recorded first;
    `relaunch_exists` says whether a run continuing `failed_run` already
    exists: if it was recorded but never created (the sensor tick died), the
    same request (same run key) is issued again once it is `reissue_after_seconds`
    old (before that, the actor that recorded it may still be submitting it).

    With `claim`, everything happens under the saga's claim: another holder means
    `Action.BUSY` (nothing done, the reason names the holder). `active_runs` and
    `relaunch_exists` may be callables so they are read under the claim.
    """
    logger = logger or logging.getLogger("arb_orchestration.saga")
    with holding_claim(claim, saga.name, saga_id, logger) as held:
        if isinstance(held, Lease):
            assert claim is not None
            return _busy(saga, saga_id, log, claim.actor, held, logger)
        try:
            return _recover(saga, saga_id, failed_run, log=_fenced(log, held, logger), resources=resources,
                            alert=alert, config=config,
                            active_runs=active_runs() if callable(active_runs) else active_runs,
                            relaunch_exists=relaunch_exists() if callable(relaunch_exists) else relaunch_exists,
                            held=held, reissue_after_seconds=reissue_after_seconds, logger=logger)
        except ClaimLostError as exc:
            assert claim is not None
            return _claim_lost(saga, saga_id, log, claim.actor, exc, logger)


def _recover(
    saga: SagaDefinition,
    saga_id: str,
    failed_run: FailedRun,
    *,
    log: SagaLog,
    resources: Mapping[str, Any],
    alert: Alert | None,
    config: Any,
    active_runs: int,
    relaunch_exists: bool,
    held: HeldClaim | None,
    reissue_after_seconds: float,
    logger: Any,
) -> RecoveryOutcome:
    if active_runs:
        state = log.load(saga_id)
        return RecoveryOutcome(saga_id, decide(saga, state), Action.WAITING,
                               f"{active_runs} run(s) of this saga still in progress")
    state = log.load(saga_id)
    decision = decide(saga, state)
    if decision.verdict in (Verdict.COMPLETED, Verdict.NOT_STARTED, Verdict.COMPENSATED, Verdict.ESCALATED,
                            Verdict.RESOLVED):
        return RecoveryOutcome(saga_id, decision, Action.NONE, decision.reason)

    if decision.verdict is Verdict.COMPENSATE:
        head = decision.pending[0]
        if state.step(head).compensation_failures >= saga.max_compensation_attempts:
            return _escalate(saga, saga_id, state, decision, log, alert, logger,
                             f"compensation of {head} failed {saga.max_compensation_attempts} times; "
                             f"last error: {state.step(head).last_compensation_error}")
        try:
            done = compensate(saga, saga_id, log=log, resources=resources, config=config, alert=alert, logger=logger,
                              before_each=held.renew if held is not None else None)
        except CompensationDeferredError as exc:  # cannot tell yet: a later sweep tick tries again
            return RecoveryOutcome(saga_id, decision, Action.WAITING, str(exc))
        except CompensationFailedError as exc:
            failures = log.load(saga_id).step(exc.step).compensation_failures
            if failures >= saga.max_compensation_attempts:
                return _escalate(saga, saga_id, log.load(saga_id), decision, log, alert, logger,
                                 f"compensation of {exc.step} failed {failures} times; "
                                 f"last error: {describe(exc.__cause__ or exc)}")
            return RecoveryOutcome(saga_id, decision, Action.COMPENSATION_FAILED, str(exc))
        # No checkpoint needed: every compensation above was recorded under a confirmed claim, so a
        # holder that took over after it finds nothing left to undo and sends no second mail.
        send_alert(alert, logger, f"[saga] {saga.name} rolled back [{saga_id}]",
                   f"Run {failed_run.run_id} of {saga.name} ended before the pivot.\n"
                   f"Compensated (newest first): {', '.join(done) or 'nothing'}.")
        return RecoveryOutcome(saga_id, decision, Action.COMPENSATED, "compensated", tuple(done))

    # FORWARD
    assert decision.next_step is not None
    nxt = state.step(decision.next_step)
    if nxt.failed_business:
        return _escalate(saga, saga_id, state, decision, log, alert, logger,
                         f"step {nxt.name} was refused (business error, not retried): {nxt.last_error}")
    if failed_run.canceled:
        return _escalate(saga, saga_id, state, decision, log, alert, logger,
                         f"run {failed_run.run_id} was canceled by an operator; this saga can only go forward, "
                         f"so it is not relaunched without a human (next step: {nxt.name})")
    if failed_run.run_id in state.forward_requested_for:
        if relaunch_exists:
            return RecoveryOutcome(saga_id, decision, Action.NONE, f"run {failed_run.run_id} was already relaunched")
        age = time.time() - state.forward_requested_at.get(failed_run.run_id, 0.0)
        if age < reissue_after_seconds:
            # Whoever recorded it (the other recovery sensor, a moment ago) may still be submitting
            # the run; issuing it again from here could start a second run of the saga.
            return RecoveryOutcome(saga_id, decision, Action.WAITING,
                                   f"relaunch of run {failed_run.run_id} requested {age:.0f} s ago; waiting for it "
                                   f"to appear (re-issued after {reissue_after_seconds:g} s)")
        attempt = state.forward_requested_for.index(failed_run.run_id) + 1
        _checkpoint(held)  # nothing is written on this path: a lost (or fenced) holder must not start a run
        logger.warning(f"saga {saga.name} [{saga_id}]: relaunch {attempt} was recorded but no run exists; re-issuing")
        return RecoveryOutcome(saga_id, decision, Action.RELAUNCH, f"forward attempt {attempt} (re-issued)",
                               relaunch=_relaunch(saga_id, failed_run, attempt))
    if state.forward_attempts >= saga.max_forward_attempts:
        return _escalate(saga, saga_id, state, decision, log, alert, logger,
                         f"still unfinished after {state.forward_attempts} forward-recovery runs "
                         f"(next step {nxt.name}; last error: {nxt.last_error})")
    attempt = state.forward_attempts + 1
    log.record_forward_requested(saga_id, saga.name, failed_run_id=failed_run.run_id, attempt=attempt)
    request = _relaunch(saga_id, failed_run, attempt)
    logger.warning(f"saga {saga.name} [{saga_id}]: relaunching forward (attempt {attempt}) from step {nxt.name}")
    return RecoveryOutcome(saga_id, decision, Action.RELAUNCH, f"forward attempt {attempt}", relaunch=request)


def _relaunch(saga_id: str, failed_run: FailedRun, attempt: int) -> RelaunchRequest:
    # The trigger's own tags (e.g. arb/event_id) travel on; Dagster's system tags do not.
    carried = {k: v for k, v in failed_run.tags.items() if not k.startswith("dagster/")}
    return RelaunchRequest(
        job_name=failed_run.job_name,
        run_key=f"saga-forward:{saga_id}:{attempt}",
        run_config=dict(failed_run.run_config),
        tags={**carried, SAGA_ID_TAG: saga_id, RECOVERY_OF_TAG: failed_run.run_id, FORWARD_ATTEMPT_TAG: str(attempt)},
    )


def on_step_failure(
    saga: SagaDefinition,
    saga_id: str,
    step: str,
    error: BaseException | None,
    *,
    log: SagaLog,
    resources: Mapping[str, Any],
    alert: Alert | None,
    config: Any = None,
    claim: ClaimSpec | None = None,
    logger: Any = None,
) -> RecoveryOutcome:
    """The failure hook's logic: a step failed for good (after its last retry) in a live run.

    Before the pivot it compensates right away (raising `CompensationFailedError`
    if that fails); after it, it alerts and leaves the relaunch to the recovery
    sensor, which acts once the run has finished failing.

    With `claim`, it compensates only under the saga's claim; if another actor holds it
    (after `claim.wait_seconds`), it does nothing (`Action.BUSY`, the reason names the
    holder) and the recovery sweep finishes the job once the run has failed.
    """
    logger = logger or logging.getLogger("arb_orchestration.saga")
    with holding_claim(claim, saga.name, saga_id, logger) as held:
        if isinstance(held, Lease):
            assert claim is not None
            return _busy(saga, saga_id, log, claim.actor, held, logger)
        try:
            return _on_step_failure(saga, saga_id, step, error, log=_fenced(log, held, logger), resources=resources,
                                    alert=alert, config=config, held=held, logger=logger)
        except ClaimLostError as exc:
            assert claim is not None
            return _claim_lost(saga, saga_id, log, claim.actor, exc, logger)


def _on_step_failure(saga: SagaDefinition, saga_id: str, step: str, error: BaseException | None, *, log: SagaLog,
                     resources: Mapping[str, Any], alert: Alert | None, config: Any, held: HeldClaim | None,
                     logger: Any) -> RecoveryOutcome:
    state = log.load(saga_id)
    decision = decide(saga, state)
    err = describe(error) if error is not None else "unknown error"
    if decision.verdict is Verdict.COMPENSATE:
        try:
            done = compensate(saga, saga_id, log=log, resources=resources, config=config, alert=alert,
                              logger=logger, cause=error, before_each=held.renew if held is not None else None)
        except CompensationDeferredError as exc:  # logged by compensate; the sweep finishes it once the run failed
            return RecoveryOutcome(saga_id, decision, Action.WAITING, str(exc))
        send_alert(alert, logger, f"[saga] {saga.name} rolled back [{saga_id}]",
                   f"Step {step} failed: {err}\nCompensated (newest first): {', '.join(done) or 'nothing'}.")
        return RecoveryOutcome(saga_id, decision, Action.COMPENSATED, "compensated", tuple(done))
    if decision.verdict is Verdict.FORWARD:
        assert decision.next_step is not None
        nxt = state.step(decision.next_step)
        if nxt.failed_business:
            return _escalate(saga, saga_id, state, decision, log, alert, logger,
                             f"step {nxt.name} was refused (business error, not retried): {nxt.last_error}")
        _checkpoint(held)
        send_alert(alert, logger, f"[saga] {saga.name} stuck after its pivot at {step} [{saga_id}]",
                   f"Step {step} failed after its retries: {err}\n{decision.reason}.\n"
                   f"The recovery sensor relaunches it (attempt {state.forward_attempts + 1} of "
                   f"{saga.max_forward_attempts}), then escalates.")
        return RecoveryOutcome(saga_id, decision, Action.ALERTED, "forward recovery will relaunch")
    if decision.verdict is Verdict.ESCALATED:
        _checkpoint(held)
        send_alert(alert, logger, f"[saga] {saga.name} (escalated) failed again at {step} [{saga_id}]",
                   f"Step {step} failed: {err}\n{decision.reason}")
        return RecoveryOutcome(saga_id, decision, Action.ALERTED, decision.reason)
    return RecoveryOutcome(saga_id, decision, Action.NONE, decision.reason)


def _escalate(saga: SagaDefinition, saga_id: str, state: SagaState, decision: Decision, log: SagaLog,
              alert: Alert | None, logger: Any, reason: str) -> RecoveryOutcome:
    log.record_escalated(saga_id, saga.name, reason=reason)
    logger.error(f"saga {saga.name} [{saga_id}] ESCALATED: {reason}")
    send_alert(alert, logger, f"[saga] ESCALATED: {saga.name} [{saga_id}] needs an operator",
               f"{reason}\n\nState: {decision.reason}. Runs: {', '.join(state.run_ids) or '-'}.\n"
               "Automatic recovery has stopped for this saga. Fix the cause, then re-execute the last run "
               "(forward) or compensate by hand.")
    return RecoveryOutcome(saga_id, decision, Action.ESCALATED, reason)
