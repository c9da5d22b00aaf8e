"""`funding_rate_hedge_schedule`: the hedge every 15 minutes, unless trading is paused."""

from __future__ import annotations

from dagster import (
    DefaultScheduleStatus,
    JobDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from arb_orchestration.defs.k8s import HEDGE_JOB, JOB_TAG
from arb_orchestration.saga import trading_paused

SCHEDULE_NAME = "funding_rate_hedge_schedule"
CRON = "*/15 * * * *"
# Same tag the event sensors set to "event" (defs/events/sensors.py TRIGGER_TAG).
TRIGGER_TAG = "arb/trigger"
CRON_RUN_TAGS = {TRIGGER_TAG: "cron", JOB_TAG: HEDGE_JOB}


def build_hedge_schedule(job: JobDefinition) -> ScheduleDefinition:
    @schedule(
        name=SCHEDULE_NAME,
        cron_schedule=CRON,
        job=job,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description="Hedge every 15 minutes (tags arb/trigger=cron, arb/job=funding_rate_hedge: the run queue "
        "keeps hedges one at a time). Skips, saying why, while trading is paused.",
    )
    def funding_rate_hedge_schedule(context: ScheduleEvaluationContext):
        paused, reason = trading_paused(context.instance)
        if paused:
            # The job would refuse anyway; a skip keeps 96 failed runs a day out of the run list.
            return SkipReason(f"trading is paused ({reason}): no hedge")
        when = context.scheduled_execution_time
        return RunRequest(
            run_key=f"{SCHEDULE_NAME}:{when.isoformat()}" if when is not None else None,
            tags=dict(CRON_RUN_TAGS),
        )

    return funding_rate_hedge_schedule
