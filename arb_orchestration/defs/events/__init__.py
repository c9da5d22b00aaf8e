"""Kafka-triggered sensors: market shocks and capital thresholds (rebalance or stop-loss), funding deviations (hedge).

`build_event_sensors` (sensors.py) makes the three sensors for any three jobs;
here they are wired to the real sagas, imported from their domains: a missing
or renamed job fails the code location's load instead of being replaced by
anything else. Settings come from the environment at load (docs/sensors.md);
nothing here connects to Kafka.
"""

from __future__ import annotations

from typing import Any

from dagster import Definitions

from arb_orchestration.defs.events.config import TriggerEventConfig, event_run_config
from arb_orchestration.defs.events.sensors import (
    CAPITAL_THRESHOLD_SENSOR,
    FUNDING_DEVIATION_SENSOR,
    MARKET_SHOCK_SENSOR,
    build_event_sensors,
)
from arb_orchestration.defs.events.tuning import EventSensorSettings, EventTopics, topics_from_env
from arb_orchestration.defs.hedging import funding_rate_hedge, hedge_run_config
from arb_orchestration.defs.rebalance import auto_rebalance_saga, rebalance_run_config
from arb_orchestration.defs.stop_loss import emergency_stop_loss_saga


def domain_run_config(job: Any, trigger: TriggerEventConfig) -> dict[str, Any]:
    """Run config in the shape each saga takes; any other job gets the trigger on the ops that take it."""
    name = getattr(job, "name", None)  # by name: a repository hands out its own copy of each job
    if name == auto_rebalance_saga.name:
        return rebalance_run_config(trigger=trigger.model_dump())
    if name == funding_rate_hedge.name:
        return hedge_run_config(trigger=trigger.model_dump())
    if name == emergency_stop_loss_saga.name:
        # Flattens every venue whatever the event; the event is quoted in the risk mail.
        return {"reason": f"{trigger.reason} (event {trigger.event_id} from {trigger.source})"}
    return event_run_config(job, trigger)


event_sensors = build_event_sensors(
    rebalance_job=auto_rebalance_saga,
    stop_loss_job=emergency_stop_loss_saga,
    hedge_job=funding_rate_hedge,
    settings=EventSensorSettings.from_env(),
    topics=topics_from_env(),
    run_config=domain_run_config,
)

defs = Definitions(sensors=event_sensors)  # the jobs belong to (and are registered by) their domains

__all__ = [
    "CAPITAL_THRESHOLD_SENSOR",
    "FUNDING_DEVIATION_SENSOR",
    "MARKET_SHOCK_SENSOR",
    "EventSensorSettings",
    "EventTopics",
    "TriggerEventConfig",
    "build_event_sensors",
    "defs",
    "domain_run_config",
    "event_run_config",
]
