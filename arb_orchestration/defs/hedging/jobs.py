"""`funding_rate_hedge`: the hedge steps as a saga job (engine: arb_orchestration/saga)."""

from __future__ import annotations

import inspect

from dagster import RetryPolicy

from arb_orchestration.defs.hedging.config import HedgeConfig
from arb_orchestration.defs.hedging.steps import (
    PLACE,
    PLAN,
    RECORD,
    STOPS,
    maintain_protective_stops,
    place_hedge_orders,
    plan_hedge,
    record_hedge,
    unwind_hedge_orders,
)
from arb_orchestration.defs.k8s import HEDGE_JOB, HEDGE_RUN_TAGS
from arb_orchestration.saga import DEFAULT_STEP_RETRY, Saga, SagaStep, build_saga


def _step(name, action, compensation=None, *, pivot: bool = False) -> SagaStep:
    return SagaStep(name, action, compensation, pivot=pivot, description=inspect.getdoc(action))


def build_funding_rate_hedge(*, retry_policy: RetryPolicy | None = DEFAULT_STEP_RETRY) -> Saga:
    """The saga (job + definition). Tests pass a faster `retry_policy`; the code location uses the default
    (3 retries, exponential backoff with jitter, for transient errors only)."""
    return build_saga(
        HEDGE_JOB,
        [
            _step(PLAN, plan_hedge),
            _step(PLACE, place_hedge_orders, unwind_hedge_orders, pivot=True),
            _step(STOPS, maintain_protective_stops),
            _step(RECORD, record_hedge),
        ],
        config=HedgeConfig,
        description=(
            "Keeps the book delta-neutral: observes every venue, normalises funding to 8 h, places the delta "
            "orders where funding favours them (idempotent client order ids; a failed leg unwinds the filled "
            "ones), keeps a reduce-only exchange stop on every position, records the rates it hedged at. "
            "plan → place (PIVOT) → stops → record. See docs/hedging.md."
        ),
        tags=dict(HEDGE_RUN_TAGS),
        retry_policy=retry_policy,
    )


HEDGE_SAGA = build_funding_rate_hedge()
funding_rate_hedge = HEDGE_SAGA.job
