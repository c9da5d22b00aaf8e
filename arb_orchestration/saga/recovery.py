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

import enum
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from arb_orchestration.saga.engine import (
    Alert,
    CompensationFailedError,
    SagaDefinition,
    compensate,
    pending_compensations,
    send_alert,
)
from arb_orchestration.saga.keys import FORWARD_ATTEMPT_TAG, RECOVERY_OF_TAG, SAGA_ID_TAG
from arb_orchestration.saga.log import SagaLog, describe
from arb_orchestration.saga.state import SagaState


class Verdict(str, enum.Enum):
    COMPLETED = "completed"
    NOT_STARTED = "not_started"
    COMPENSATED = "compensated"  # nothing (left) to undo
    COMPENSATE = "compensate"  # undo work pending
    FORWARD = "forward"  # finish it
    ESCALATED = "escalated"  # an operator owns it now


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    pending: tuple[str, ...] = ()  # compensations, newest first
    next_step: str | None = None  # for FORWARD


def decide(saga: SagaDefinition, state: SagaState) -> Decision:
    steps = saga.steps
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


@dataclass(frozen=True)
class RecoveryOutcome:
    saga_id: str
    decision: Decision
    action: Action
    reason: str
    compensated: tuple[str, ...] = ()
    relaunch: RelaunchRequest | None = None


def recover_saga(
    saga: SagaDefinition,
    saga_id: str,
    failed_run: FailedRun,
    *,
    log: SagaLog,
    resources: Mapping[str, Any],
    alert: Alert | None,
    config: Any = None,
    active_runs: int = 0,
    relaunch_exists: bool = False,
    logger: Any = None,
) -> RecoveryOutcome:
    """Bring a saga whose run ended to a consistent state (the recovery sensors' job).

    Compensates in place (before the pivot) or returns a `RelaunchRequest`
    (after it) which the caller must submit. The request is recorded first;
    `relaunch_exists` says whether a run continuing `failed_run` already
    exists: if it was recorded but never created (the sensor tick died), the
    same request (same run key) is issued again.
    """
    logger = logger or logging.getLogger("arb_orchestration.saga")
    if active_runs:
        state = log.load(saga_id)
        return RecoveryOutcome(saga_id, decide(saga, state), Action.WAITING,
                               f"{active_runs} run(s) of this saga still in progress")
    state = log.load(saga_id)
    decision = decide(saga, state)
    if decision.verdict in (Verdict.COMPLETED, Verdict.NOT_STARTED, Verdict.COMPENSATED, Verdict.ESCALATED):
        return RecoveryOutcome(saga_id, decision, Action.NONE, decision.reason)

    if decision.verdict is Verdict.COMPENSATE:
        head = decision.pending[0]
        if state.step(head).compensation_failures >= saga.max_compensation_attempts:
            return _escalate(saga, saga_id, state, decision, log, alert, logger,
                             f"compensation of {head} failed {saga.max_compensation_attempts} times; "
                             f"last error: {state.step(head).last_compensation_error}")
        try:
            done = compensate(saga, saga_id, log=log, resources=resources, config=config, alert=alert, logger=logger)
        except CompensationFailedError as exc:
            failures = log.load(saga_id).step(exc.step).compensation_failures
            if failures >= saga.max_compensation_attempts:
                return _escalate(saga, saga_id, log.load(saga_id), decision, log, alert, logger,
                                 f"compensation of {exc.step} failed {failures} times; "
                                 f"last error: {describe(exc.__cause__ or exc)}")
            return RecoveryOutcome(saga_id, decision, Action.COMPENSATION_FAILED, str(exc))
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
        attempt = state.forward_requested_for.index(failed_run.run_id) + 1
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
    logger: Any = None,
) -> RecoveryOutcome:
    """The failure hook's logic: a step failed for good (after its last retry) in a live run.

    Before the pivot it compensates right away (raising `CompensationFailedError`
    if that fails); after it, it alerts and leaves the relaunch to the recovery
    sensor, which acts once the run has finished failing.
    """
    logger = logger or logging.getLogger("arb_orchestration.saga")
    state = log.load(saga_id)
    decision = decide(saga, state)
    err = describe(error) if error is not None else "unknown error"
    if decision.verdict is Verdict.COMPENSATE:
        done = compensate(saga, saga_id, log=log, resources=resources, config=config, alert=alert,
                          logger=logger, cause=error)
        send_alert(alert, logger, f"[saga] {saga.name} rolled back [{saga_id}]",
                   f"Step {step} failed: {err}\nCompensated (newest first): {', '.join(done) or 'nothing'}.")
        return RecoveryOutcome(saga_id, decision, Action.COMPENSATED, "compensated", tuple(done))
    if decision.verdict is Verdict.FORWARD:
        assert decision.next_step is not None
        nxt = state.step(decision.next_step)
        if nxt.failed_business:
            return _escalate(saga, saga_id, state, decision, log, alert, logger,
                             f"step {nxt.name} was refused (business error, not retried): {nxt.last_error}")
        send_alert(alert, logger, f"[saga] {saga.name} stuck after its pivot at {step} [{saga_id}]",
                   f"Step {step} failed after its retries: {err}\n{decision.reason}.\n"
                   f"The recovery sensor relaunches it (attempt {state.forward_attempts + 1} of "
                   f"{saga.max_forward_attempts}), then escalates.")
        return RecoveryOutcome(saga_id, decision, Action.ALERTED, "forward recovery will relaunch")
    if decision.verdict is Verdict.ESCALATED:
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
