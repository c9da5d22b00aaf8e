"""Dagster definitions of the rebalance domain: `auto_rebalance_saga` and the `rebalance_plan` asset.

Job      auto_rebalance_saga (saga: plan → prepare → commit (pivot) → await arrival → verify)
Sensors  auto_rebalance_saga_recovery_sensor and its periodic sweep (built by the saga engine);
         wise_refund_followup_sensor (refunds the saga left pending; refunds.py, docs/refund-followup.md)
Asset    rebalance_plan (deps: venues/<venue>/balances) — the plan a rebalance would run now, dry
Resource rebalance_journal (the saga's view of the Dagster instance: daily usage, step reports)

Pure logic lives in `arb_orchestration/domain/rebalance.py` and `domain/routing.py`; docs/rebalance.md.
Venue names come from `EXCHANGE_VENUES` at load; nothing here touches the network.
"""

from __future__ import annotations

from dagster import Definitions

from arb_orchestration.defs.market_data.keys import configured_venues
from arb_orchestration.defs.rebalance.assets import REBALANCE_PLAN_KEY, build_rebalance_plan
from arb_orchestration.defs.rebalance.config import (
    RebalanceConfig,
    RebalancePolicyConfig,
    RebalanceTargetConfig,
    RebalanceTriggerConfig,
    rebalance_run_config,
)
from arb_orchestration.defs.rebalance.jobs import AUTO_REBALANCE_SAGA, auto_rebalance_saga, build_auto_rebalance_saga
from arb_orchestration.defs.rebalance.journal import RebalanceJournalResource
from arb_orchestration.defs.rebalance.refunds import wise_refund_followup_sensor_from_env

defs = Definitions(
    assets=[build_rebalance_plan(configured_venues())],
    jobs=[auto_rebalance_saga],
    sensors=[*AUTO_REBALANCE_SAGA.recovery_sensors(), wise_refund_followup_sensor_from_env()],
    resources={"rebalance_journal": RebalanceJournalResource()},
)

__all__ = [
    "AUTO_REBALANCE_SAGA",
    "REBALANCE_PLAN_KEY",
    "RebalanceConfig",
    "RebalanceJournalResource",
    "RebalancePolicyConfig",
    "RebalanceTargetConfig",
    "RebalanceTriggerConfig",
    "auto_rebalance_saga",
    "build_auto_rebalance_saga",
    "defs",
    "rebalance_run_config",
]
