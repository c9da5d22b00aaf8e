"""The trading kill switch as jobs: `pause_trading_job` and `resume_trading_job`.

The state itself lives in `arb_orchestration.saga.kill_switch` (the instance's
key-value table) so the saga engine, sensors and these jobs share one flag.
Other code asks `trading_paused(instance) -> (paused, reason)`; sensors that
trigger money-moving jobs can return `skip_if_trading_paused(context)`.

Resuming is refused while a stop-loss is still running, or when the latest
stop-loss saga did not finish (escalated, still open), unless `force`.
"""


from dagster import (
    Config,
    DagsterInstance,
    DagsterRunStatus,
    Failure,
    MetadataValue,
    OpExecutionContext,
    RunsFilter,
    SkipReason,
    in_process_executor,
    job,
    op,
)
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES
from pydantic import Field

from arb_orchestration.defs.k8s import PRIORITY_TAG, STOP_LOSS_JOB, STOP_LOSS_PRIORITY
from arb_orchestration.saga.kill_switch import InstanceTradingSwitch, TradingPause, trading_paused

# Operator actions jump the queue like the stop-loss itself: a pause must not wait behind rebalances.
OPS_CONTROL_TAGS = {PRIORITY_TAG: str(STOP_LOSS_PRIORITY)}


class PauseTradingConfig(Config):
    reason: str = Field(description="Why trading is paused (shown wherever the pause is reported).")
    operator: str = Field(default="unknown", description="Who is pausing.")


class ResumeTradingConfig(Config):
    reason: str = Field(description="Why it is safe to trade again.")
    operator: str = Field(default="unknown", description="Who is resuming.")
    force: bool = Field(default=False, description="Resume even if a stop-loss is running or did not finish.")


def resume_blockers(instance: DagsterInstance) -> list[str]:
    """Why resuming now would be unsafe (empty: nothing against it)."""
    blockers = []
    active = instance.get_runs(filters=RunsFilter(job_name=STOP_LOSS_JOB, statuses=IN_PROGRESS_RUN_STATUSES), limit=5)
    if active:
        blockers.append(f"stop-loss run(s) in progress: {', '.join(r.run_id for r in active)}")
    latest = instance.get_runs(
        filters=RunsFilter(job_name=STOP_LOSS_JOB, statuses=[DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE,
                                                             DagsterRunStatus.CANCELED]),
        limit=1,
    )
    if latest and latest[0].status != DagsterRunStatus.SUCCESS and not active:
        blockers.append(f"the latest stop-loss run {latest[0].run_id} ended {latest[0].status.value}: "
                        "check that every venue is flat")
    return blockers


def _metadata(state: TradingPause) -> dict:
    return {
        "paused": MetadataValue.bool(state.paused),
        "reason": MetadataValue.text(state.reason),
        "changed_by": MetadataValue.text(state.changed_by),
    }


@op(tags=OPS_CONTROL_TAGS)
def pause_trading(context: OpExecutionContext, config: PauseTradingConfig) -> None:
    """Engage the kill switch: money-moving sagas refuse to start until resumed."""
    state = InstanceTradingSwitch(context.instance).pause(
        config.reason, by=f"{config.operator} (pause_trading_job)", run_id=context.run_id
    )
    context.log.warning(f"trading PAUSED by {config.operator}: {config.reason}")
    context.add_output_metadata(_metadata(state))


@op(tags=OPS_CONTROL_TAGS)
def resume_trading(context: OpExecutionContext, config: ResumeTradingConfig) -> None:
    """Release the kill switch (after a stop-loss, once the desk has reviewed it)."""
    blockers = resume_blockers(context.instance)
    if blockers and not config.force:
        raise Failure(
            description="not resuming: " + "; ".join(blockers) + " (set force: true to override)",
            allow_retries=False,
        )
    before = InstanceTradingSwitch(context.instance).get()
    state = InstanceTradingSwitch(context.instance).resume(
        config.reason, by=f"{config.operator} (resume_trading_job)", run_id=context.run_id
    )
    context.log.warning(
        f"trading RESUMED by {config.operator}: {config.reason} (was paused: {before.paused}, {before.reason!r})"
        + (f"; overrode: {'; '.join(blockers)}" if blockers else "")
    )
    context.add_output_metadata(_metadata(state))


@job(tags=OPS_CONTROL_TAGS, executor_def=in_process_executor,
     description="Pause trading and rebalancing (engage the kill switch).")
def pause_trading_job():
    pause_trading()


@job(tags=OPS_CONTROL_TAGS, executor_def=in_process_executor,
     description="Resume trading and rebalancing after a stop-loss (release the kill switch).")
def resume_trading_job():
    resume_trading()


def skip_if_trading_paused(context) -> "SkipReason | None":
    """For sensors that start money-moving jobs: `return skip` when trading is paused."""
    paused, reason = trading_paused(context.instance)
    return SkipReason(f"trading is paused: {reason}") if paused else None
