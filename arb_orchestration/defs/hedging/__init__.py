"""Dagster definitions of the hedging domain: `funding_rate_hedge` and how it is started.

Job       funding_rate_hedge (saga: plan_hedge → place_hedge_orders (PIVOT, unwinds on failure)
          → maintain_protective_stops → record_hedge)
Schedule  funding_rate_hedge_schedule (*/15 * * * *, running by default, skips while trading is paused)
Sensors   funding_rate_hedge_recovery_sensor, ..._sweep (saga engine: runs that died mid-saga);
          the Kafka `funding_deviation_sensor` (defs/events) also requests the job
Resource  hedge_journal (step reports in the run's log; the funding baselines for the sensor)

Pure logic: `domain/hedging.py`, `domain/funding.py`, and `stops.py`/`legs.py` here. docs/hedging.md.
Nothing here touches the network at load.
"""

from __future__ import annotations

from dagster import Definitions

from arb_orchestration.defs.hedging.config import HedgeConfig, HedgeTriggerConfig, hedge_run_config
from arb_orchestration.defs.hedging.jobs import HEDGE_SAGA, build_funding_rate_hedge, funding_rate_hedge
from arb_orchestration.defs.hedging.journal import HedgeJournalResource
from arb_orchestration.defs.hedging.schedules import build_hedge_schedule

funding_rate_hedge_schedule = build_hedge_schedule(funding_rate_hedge)

defs = Definitions(
    jobs=[funding_rate_hedge],
    schedules=[funding_rate_hedge_schedule],
    sensors=HEDGE_SAGA.recovery_sensors(),
    resources={"hedge_journal": HedgeJournalResource()},
)

__all__ = [
    "HEDGE_SAGA",
    "HedgeConfig",
    "HedgeJournalResource",
    "HedgeTriggerConfig",
    "build_funding_rate_hedge",
    "build_hedge_schedule",
    "defs",
    "funding_rate_hedge",
    "funding_rate_hedge_schedule",
    "hedge_run_config",
]
