"""Run config of auto_rebalance_saga: documented defaults, market_data floors as lower bounds, and the
contract with the event sensors (the trigger they send is accepted as `trigger`)."""

from __future__ import annotations

from dagster._config import process_config

from arb_orchestration.defs.events.config import TriggerEventConfig
from arb_orchestration.defs.rebalance import (
    RebalanceConfig,
    RebalanceTriggerConfig,
    auto_rebalance_saga,
    rebalance_run_config,
)


def _validate(run_config: dict):
    return process_config(auto_rebalance_saga.run_config_schema.config_type, run_config)


def test_an_empty_run_config_is_valid_and_means_the_documented_defaults():
    assert _validate({}).success
    config = RebalanceConfig()
    assert config.dry_run is False and config.assets == ["USDT", "USDC", "EUR"]
    assert config.floors == {"USDT": 10_000.0, "USDC": 10_000.0, "EUR": 5_000.0}
    assert "*:SEPA" in config.allowed_destinations and "*:ERC20" in config.allowed_destinations


def test_market_data_floors_bound_the_policy_from_below():
    policy = RebalanceConfig().policy()
    assert policy.minimum_floor("hyperliquid", "USDC") == 20_000.0
    assert policy.minimum_floor("okx", "USDT") == 10_000.0
    assert RebalanceConfig(use_market_data_floors=False).policy().minimum_floor("okx", "USDT") == 0.0


def test_targets_and_limits_come_through_the_run_config():
    raw = {"targets": [{"venue": "okx", "asset": "USDT", "share": 0.3}], "max_daily": {"USDT": 5.0}}
    assert _validate(raw).success
    config = RebalanceConfig(**raw)
    assert config.policy().rules[0].share == 0.3 and config.guardrails().max_daily == {"USDT": 5.0}


def test_the_trigger_the_event_sensors_build_is_accepted():
    assert set(RebalanceTriggerConfig.model_fields) == set(TriggerEventConfig.model_fields)
    trigger = TriggerEventConfig(
        event_id="e1", topic="capital-events", source="capital-events/2/9", kind="capital_threshold",
        critical=False, reason="okx USDT below floor", payload={"venue": "okx", "asset": "USDT", "balance": 3.0},
    )
    run_config = rebalance_run_config(trigger=trigger.model_dump())
    processed = _validate(run_config)
    assert processed.success, processed.errors
    parsed = RebalanceConfig(**run_config)
    assert parsed.trigger.event_id == "e1"
    assert parsed.trigger.describe() == (
        "capital_threshold e1 on okx / USDT from capital-events/2/9: okx USDT below floor"
    )
