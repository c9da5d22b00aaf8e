"""Kafka-triggered sensors: market shocks and capital thresholds (rebalance or stop-loss), funding deviations (hedge).

`build_event_sensors` (sensors.py) makes the three sensors for any three jobs;
here they are wired to the real sagas when their domains define them, and to
clearly named placeholders (`_pending_jobs.py`) until then. Settings come from
the environment at load (docs/sensors.md); nothing here connects to Kafka.
"""

from __future__ import annotations

from typing import Any

from dagster import Definitions

from arb_orchestration.defs import hedging, rebalance, stop_loss
from arb_orchestration.defs.events._pending_jobs import (
    pending_auto_rebalance_saga,
    pending_emergency_stop_loss_saga,
    pending_funding_rate_hedge,
)
from arb_orchestration.defs.events.config import TriggerEventConfig, event_run_config
from arb_orchestration.defs.events.sensors import (
    CAPITAL_THRESHOLD_SENSOR,
    FUNDING_DEVIATION_SENSOR,
    MARKET_SHOCK_SENSOR,
    build_event_sensors,
)
from arb_orchestration.defs.events.tuning import EventSensorSettings, EventTopics, topics_from_env


def _defined_job(domain: Any, name: str) -> Any | None:
    """The job called `name` if `domain` (a defs package) defines it, else None."""
    job = getattr(domain, name, None)
    if job is not None:
        return job
    domain_defs = getattr(domain, "defs", None)
    for candidate in list(getattr(domain_defs, "jobs", None) or []):
        if getattr(candidate, "name", None) == name:
            return candidate
    for schedule in list(getattr(domain_defs, "schedules", None) or []):
        target = getattr(schedule, "job", None) if getattr(schedule, "has_job", lambda: True) else None
        if getattr(target, "name", None) == name:
            return target
    return None


_real = {
    "rebalance": _defined_job(rebalance, "auto_rebalance_saga"),
    "stop_loss": _defined_job(stop_loss, "emergency_stop_loss_saga"),
    "hedge": _defined_job(hedging, "funding_rate_hedge"),
}
_jobs = {
    "rebalance": _real["rebalance"] or pending_auto_rebalance_saga,
    "stop_loss": _real["stop_loss"] or pending_emergency_stop_loss_saga,
    "hedge": _real["hedge"] or pending_funding_rate_hedge,
}



def domain_run_config(job: Any, trigger: TriggerEventConfig) -> dict[str, Any]:
    """Run config in the shape each real job takes; the placeholders take `TriggerEventConfig` ops."""
    name = getattr(job, "name", None)  # by name: a repository hands out its own copy of each job
    if name == "auto_rebalance_saga" and hasattr(rebalance, "rebalance_run_config"):
        return rebalance.rebalance_run_config(trigger=trigger.model_dump())
    if name == "funding_rate_hedge" and hasattr(hedging, "hedge_run_config"):
        return hedging.hedge_run_config(trigger=trigger.model_dump())
    if name == "emergency_stop_loss_saga" and hasattr(stop_loss, "StopLossConfig"):
        # Flattens every venue whatever the event; the event is quoted in the risk mail.
        fields = stop_loss.StopLossConfig.model_fields
        reason = f"{trigger.reason} (event {trigger.event_id} from {trigger.source})"
        return {"reason": reason} if "reason" in fields else {}
    return event_run_config(job, trigger)


event_sensors = build_event_sensors(
    rebalance_job=_jobs["rebalance"],
    stop_loss_job=_jobs["stop_loss"],
    hedge_job=_jobs["hedge"],
    settings=EventSensorSettings.from_env(),
    topics=topics_from_env(),
    run_config=domain_run_config,
)

defs = Definitions(
    sensors=event_sensors,
    # Only the placeholders in use are ours to register; real jobs belong to their domains.
    jobs=[job for key, job in _jobs.items() if _real[key] is None],
)

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
