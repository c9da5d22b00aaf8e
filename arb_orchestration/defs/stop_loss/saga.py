"""`emergency_stop_loss_saga`: flatten every venue, now, then tell the risk team.

Two steps on the saga engine:

1. `liquidate` — the pivot, forward-only (a liquidation cannot be undone):
   every venue in parallel (cancel all + reduce-only market closes, retried
   until a fresh snapshot is flat); engages the trading kill switch while the
   venues are being worked. Done only when flat (or on a dry run).
2. `notify_risk_team` — a fresh look at every venue (the verification) and a
   mail with what was closed, at what prices, and anything left open.

Failures only ever go forward: the op retries with backoff, the failure hook
mails the risk team, the recovery sensors relaunch the saga with the same
saga id (same client order ids: nothing is sent twice), then escalate.
Highest queue priority and the Kubernetes settings come from
`defs/k8s.STOP_LOSS_RUN_TAGS`; the in-process executor avoids a second
process start before the first order.
"""

from __future__ import annotations

import math

from dagster import Backoff, Config, Jitter, RetryPolicy, in_process_executor
from pydantic import Field

from arb_orchestration.defs.k8s import STOP_LOSS_JOB, STOP_LOSS_RUN_TAGS
from arb_orchestration.defs.stop_loss.liquidator import LiquidationSettings, liquidate_all, observe_all
from arb_orchestration.domain.liquidation import LiquidationReport, open_positions, render_report, with_earlier_attempts
from arb_orchestration.resources.errors import BusinessError, TransientError
from arb_orchestration.resources.venue import ExchangeResource
from arb_orchestration.saga import SagaStep, StepContext, build_saga


class StopLossConfig(Config):
    """Run config of `emergency_stop_loss_saga` (all optional)."""

    venues: list[str] = Field(default_factory=list, description="Venues to flatten; empty: every configured venue.")
    dry_run: bool = Field(default=False, description="Report what would be closed; send nothing, pause nothing.")
    reason: str = Field(default="", description="Why (the triggering event), quoted in the risk mail.")
    deadline_seconds: float = Field(default=120.0, description="Per attempt: how long each venue keeps retrying.")
    dust: float = Field(default=1e-9, description="Positions at or below this size (base units) count as flat.")

    def check(self) -> None:
        """Raise `InvalidStopLossConfig` naming the field when a value would quietly do the wrong thing.

        `size > dust` is never true for a NaN/inf dust (or 1e9 typed for 1e-9): every position counted as
        flat, so the stop-loss closed nothing and reported the book flat. A NaN deadline never expires.
        """
        problems = []
        if not (math.isfinite(self.dust) and 0 <= self.dust < 1):
            problems.append(f"dust must be a finite number >= 0 and < 1 (base units), got {self.dust!r}")
        if not (math.isfinite(self.deadline_seconds) and self.deadline_seconds > 0):
            problems.append(f"deadline_seconds must be a finite number of seconds > 0, got {self.deadline_seconds!r}")
        if problems:
            raise InvalidStopLossConfig(f"invalid run config: {'; '.join(problems)}")


class InvalidStopLossConfig(BusinessError):
    """The run config makes no sense (a NaN dust, a deadline <= 0): fix it and launch again; not retried."""


class StopLossIncomplete(TransientError):
    """Some venue is not flat yet after this attempt's deadline: retry (same client order ids)."""


class StopLossRefused(BusinessError):
    """Every venue still open was refused (auth, rejections): retrying will not help — escalate."""


class NotFlatAfterLiquidation(BusinessError):
    """The fresh check after a completed liquidation found exposure: a human must look."""


def _venues(config: StopLossConfig, exchange: ExchangeResource) -> list[str]:
    return list(dict.fromkeys(config.venues)) if config.venues else exchange.venue_names()


def _reason(ctx: StepContext) -> str:
    cfg: StopLossConfig = ctx.config
    if cfg.reason:
        return cfg.reason
    event, source = ctx.run_tags.get("arb/event_id"), ctx.run_tags.get("arb/source")
    return f"event {event} ({source})" if event else ""


def liquidate(ctx: StepContext, exchange: ExchangeResource) -> dict:
    """Cancel all orders and close every position on every venue in parallel, until flat."""
    cfg: StopLossConfig = ctx.config
    cfg.check()  # before any order
    names = _venues(cfg, exchange)
    if not names:  # nothing checked is not flat (all([]) would say it is)
        raise StopLossRefused("no venue to flatten: the exchange resource lists none")
    reason = _reason(ctx)

    def engage_kill_switch() -> None:
        # Runs while the venue threads are already talking to the exchanges.
        if not cfg.dry_run and ctx.trading_switch is not None:
            ctx.trading_switch.pause(f"emergency stop-loss {ctx.saga_id}: {reason or 'triggered'}",
                                     by=STOP_LOSS_JOB, run_id=ctx.run_id)

    report = liquidate_all(
        names,
        exchange.venue,
        saga_id=ctx.saga_id,
        base_key=ctx.idempotency_key,
        settings=LiquidationSettings(deadline_seconds=cfg.deadline_seconds, dust=cfg.dust, dry_run=cfg.dry_run),
        reason=reason,
        while_running=engage_kill_switch,
    )
    earlier = []
    for n in ctx.progress:
        try:
            earlier.append(LiquidationReport.model_validate(n["report"]))
        except (KeyError, TypeError, ValueError):  # not ours or unreadable: the orders are sent, only report
            ctx.log.warning(f"stop-loss: an earlier attempt's note is not a report; left out of the mail: {n!r:.200}")
    this_attempt = report  # noted alone on failure: each note holds one attempt, so nothing counts twice
    report = with_earlier_attempts(report, earlier)  # fills of earlier attempts belong in the mail too
    for v in report.venues:
        first = ("no order sent" if v.first_order_after_seconds is None
                 else f"first order after {v.first_order_after_seconds:.3f}s")
        ctx.log.info(f"stop-loss {v.venue}: flat={v.flat} rounds={v.rounds} closed={len(v.closed)} "
                     f"left={len(v.remaining)}, {first}")
    if report.dry_run or report.flat:
        return report.model_dump(mode="json")
    ctx.note(report=this_attempt.model_dump(mode="json"))  # durable even though the step fails
    stuck = ", ".join(f"{v.venue} ({len(v.remaining)} position(s), {len(v.open_orders)} order(s); "
                      f"{v.errors[-1] if v.errors else 'no error'})" for v in report.venues if not v.flat)
    # notify_risk_team will not run: the failure/escalation mail (built from this text) carries the report,
    # so the risk team learns what was closed, at what prices, and what is left open.
    _, body = render_report(report)
    if report.only_business_errors:
        raise StopLossRefused(f"not flat and refused by the venue: {stuck}\n\n{body}")
    raise StopLossIncomplete(f"not flat yet: {stuck}\n\n{body}")


def notify_risk_team(ctx: StepContext, exchange: ExchangeResource, smtp) -> dict:
    """Check every venue afresh and mail the risk team what was closed, at what prices, and what is open."""
    cfg: StopLossConfig = ctx.config
    report = LiquidationReport.model_validate(ctx.results["liquidate"])
    seen, errors = observe_all([v.venue for v in report.venues], exchange.venue)
    subject, body = render_report(report, verification=seen, verification_errors=errors, dust=cfg.dust)
    smtp.send(subject, body)
    still_open = sorted(v for v, (positions, orders) in seen.items() if open_positions(positions, cfg.dust) or orders)
    result = {"subject": subject, "still_open": still_open, "unverified": sorted(errors)}
    if not report.dry_run and (still_open or errors):
        ctx.note(**result)
        raise NotFlatAfterLiquidation(f"after liquidation: still open on {still_open}, unverified {sorted(errors)}")
    return result


# Each attempt already retries for `deadline_seconds`; the op retries the whole attempt 3 more
# times (2 s, 6 s, 14 s apart, full jitter), then the hook mails and the recovery sensors relaunch.
STOP_LOSS_RETRY = RetryPolicy(max_retries=3, delay=2.0, backoff=Backoff.EXPONENTIAL, jitter=Jitter.FULL)

stop_loss_saga = build_saga(
    STOP_LOSS_JOB,
    [
        SagaStep("liquidate", liquidate, pivot=True, retry_policy=STOP_LOSS_RETRY),
        SagaStep("notify_risk_team", notify_risk_team),
    ],
    config=StopLossConfig,
    description="Emergency stop-loss: cancel all orders and close every position on every venue in parallel "
    "(reduce-only market orders, idempotent client order ids) until flat; pauses trading; mails the risk team.",
    tags=STOP_LOSS_RUN_TAGS,
    executor_def=in_process_executor,
    refuse_while_trading_paused=False,  # the stop-loss always runs
    max_forward_attempts=5,
)
emergency_stop_loss_saga = stop_loss_saga.job
