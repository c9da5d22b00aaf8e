"""The run config a sensor-triggered run receives: the event that triggered it.

Contract with the triggered jobs: the op that needs the event (usually the
first op of the saga) takes `config: TriggerEventConfig`. The sensors find
every top-level op of the job whose config has exactly these fields and put
the event there; a job without such an op gets no run config (the event still
reaches it through the run's tags: `arb/event_id`, `arb/source`).
"""

from __future__ import annotations

from typing import Any

from dagster import Config


class TriggerEventConfig(Config):
    """The event behind a sensor-triggered run (never secrets: the signature is dropped)."""

    event_id: str
    topic: str  # the logical topic: market-events, capital-events, funding-rate-events
    source: str  # physical topic/partition/offset the event was read from
    kind: str  # market_shock | capital_threshold | funding_rate
    critical: bool
    reason: str  # why the sensor asked for this run, in one sentence
    payload: dict[str, Any]  # the validated event, as JSON


_FIELDS = frozenset(TriggerEventConfig.model_fields)


def trigger_ops(job: Any) -> list[str]:
    """Top-level ops of `job` whose config is a `TriggerEventConfig`."""
    graph = getattr(job, "graph", None)
    if graph is None:  # an unresolved asset job: no ops to address yet
        return []
    names = []
    for name, node in graph.node_dict.items():
        schema = getattr(node.definition, "config_schema", None)
        config_type = getattr(schema, "config_type", None) if schema is not None else None
        fields = getattr(config_type, "fields", None)
        if fields is not None and frozenset(fields) == _FIELDS:
            names.append(name)
    return sorted(names)


def event_run_config(job: Any, trigger: TriggerEventConfig) -> dict[str, Any]:
    """Run config that hands `trigger` to each op of `job` that takes it ({} when none does)."""
    values = trigger.model_dump()
    return {"ops": {name: {"config": values} for name in trigger_ops(job)}} if trigger_ops(job) else {}
