"""`auto_rebalance_saga`: the rebalance steps as a saga job (engine: arb_orchestration/saga)."""

from __future__ import annotations

from dagster import RetryPolicy

from arb_orchestration.defs.k8s import REBALANCE_JOB, REBALANCE_RUN_TAGS
from arb_orchestration.defs.rebalance.config import RebalanceConfig
from arb_orchestration.defs.rebalance.steps import (
    AWAIT,
    COMMIT,
    PLAN,
    PREPARE,
    SWEEP,
    VERIFY,
    await_arrival,
    cancel_prepared,
    cancel_uncommitted,
    commit_transfers,
    plan_rebalance,
    prepare_transfers,
    release_reservations,
    sweep_to_trading,
    verify_balances,
)
from arb_orchestration.saga import DEFAULT_STEP_RETRY, Saga, SagaStep, build_saga


def _step(name, action, compensation=None, *, pivot: bool = False) -> SagaStep:
    return SagaStep(name, action, compensation, pivot=pivot, description=(action.__doc__ or "").strip() or None)


def build_auto_rebalance_saga(*, retry_policy: RetryPolicy | None = DEFAULT_STEP_RETRY) -> Saga:
    """The saga (job + definition). Tests pass a faster `retry_policy`; the code location uses the default."""
    return build_saga(
        REBALANCE_JOB,
        [
            _step(PLAN, plan_rebalance, release_reservations),
            _step(PREPARE, prepare_transfers, cancel_prepared),
            _step(COMMIT, commit_transfers, cancel_uncommitted, pivot=True),
            _step(AWAIT, await_arrival),
            _step(VERIFY, verify_balances),
            _step(SWEEP, sweep_to_trading),
        ],
        config=RebalanceConfig,
        description=(
            "Moves money between venues (crypto withdrawals, EUR via Wise) to bring every venue back to its "
            "target: plan (exact MILP, guardrails) → prepare → commit (PIVOT) → await arrival → verify → sweep deposits "
            "into the trading account. "
            "Compensates before the pivot, recovers forward after it. See docs/rebalance.md."
        ),
        tags=dict(REBALANCE_RUN_TAGS),
        retry_policy=retry_policy,
    )


AUTO_REBALANCE_SAGA = build_auto_rebalance_saga()
auto_rebalance_saga = AUTO_REBALANCE_SAGA.job
