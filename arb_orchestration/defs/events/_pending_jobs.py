"""Placeholder jobs the event sensors target until the real sagas are importable.

Each one only logs the event it was given. `defs/events/__init__.py` uses the
real `auto_rebalance_saga`, `emergency_stop_loss_saga` and `funding_rate_hedge`
as soon as their domains define them; these names (`pending_...`) never clash
with the real ones.
"""

from dagster import OpExecutionContext, job, op

from arb_orchestration.defs.events.config import TriggerEventConfig


@op
def log_trigger_event(context: OpExecutionContext, config: TriggerEventConfig) -> None:
    """Placeholder step: records which event would have started the real job."""
    context.log.warning(
        f"placeholder job {context.job_name}: the real job is not wired yet; "
        f"event {config.event_id} from {config.source}: {config.reason}"
    )


@job(tags={"arb/placeholder": "true"})
def pending_auto_rebalance_saga():
    """PLACEHOLDER for `auto_rebalance_saga` (defs/rebalance): logs the triggering event, moves nothing."""
    log_trigger_event()


@job(tags={"arb/placeholder": "true"})
def pending_emergency_stop_loss_saga():
    """PLACEHOLDER for `emergency_stop_loss_saga` (defs/stop_loss): logs the triggering event, closes nothing."""
    log_trigger_event()


@job(tags={"arb/placeholder": "true"})
def pending_funding_rate_hedge():
    """PLACEHOLDER for `funding_rate_hedge` (defs/hedging): logs the triggering event, hedges nothing."""
    log_trigger_event()
