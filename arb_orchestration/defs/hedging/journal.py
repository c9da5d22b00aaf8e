"""The hedge saga's view of the Dagster instance: step reports in the run's log, funding baselines.

Saga steps receive resources, not the op context, so what they need from the
instance comes through `HedgeJournalResource` (key `hedge_journal`):

* `report(step, message, metadata)` — an engine event in the current run,
  attached to the step, carrying Dagster metadata (tables, markdown), so the
  UI shows the normalised rates, orders, fills and stops next to each step;
* `record_baselines(points)` — the rates the hedge ran at, for the funding
  sensor (`baselines.py`).

`InMemoryHedgeJournal` is the same surface for unit tests. Nothing here opens
anything at import or load; the instance comes from the run.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from dagster import ConfigurableResource, InitResourceContext, MetadataValue
from pydantic import PrivateAttr

from arb_orchestration.defs.hedging.baselines import record_baselines

_log = logging.getLogger("arb_orchestration.defs.hedging")


def as_metadata(metadata: Mapping[str, Any]) -> dict[str, MetadataValue]:
    values: dict[str, MetadataValue] = {}
    for key, value in metadata.items():
        if isinstance(value, MetadataValue):
            values[key] = value
        elif isinstance(value, bool):
            values[key] = MetadataValue.bool(value)
        elif isinstance(value, int):
            values[key] = MetadataValue.int(value)
        elif isinstance(value, float):
            values[key] = MetadataValue.float(value)
        elif isinstance(value, (dict, list)):
            values[key] = MetadataValue.json(value)
        else:
            values[key] = MetadataValue.text(str(value))
    return values


class HedgeJournalResource(ConfigurableResource):
    """The hedge saga's access to the Dagster instance (see the module docstring)."""

    _instance: Any = PrivateAttr(default=None)
    _run: Any = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._instance = context.instance
        self._run = context.dagster_run

    def report(self, step: str, message: str, metadata: Mapping[str, Any]) -> None:
        """An engine event in this run, under `step`, with `metadata` (MetadataValue or plain values)."""
        from dagster._core.events import EngineEventData

        if self._instance is None or self._run is None:
            _log.info("%s: %s", step, message)
            return
        self._instance.report_engine_event(
            message, self._run, EngineEventData(metadata=as_metadata(metadata)), step_key=step
        )

    def record_baselines(self, points: Mapping[str, Mapping[str, Any]]) -> None:
        if self._instance is None:
            raise RuntimeError("hedge_journal has no Dagster instance (used outside a run?)")
        record_baselines(self._instance, points)


class InMemoryHedgeJournal:
    """Unit-test stand-in: keeps reports and baselines in lists and dicts."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, str, dict[str, Any]]] = []
        self.baselines: dict[str, dict[str, Any]] = {}

    def report(self, step: str, message: str, metadata: Mapping[str, Any]) -> None:
        self.reports.append((step, message, dict(metadata)))

    def record_baselines(self, points: Mapping[str, Mapping[str, Any]]) -> None:
        self.baselines.update({k: dict(v) for k, v in points.items()})

    def metadata(self, step: str) -> dict[str, Any]:
        """Every metadata entry reported under `step`, later reports winning."""
        merged: dict[str, Any] = {}
        for s, _message, metadata in self.reports:
            if s == step:
                merged.update(metadata)
        return merged
