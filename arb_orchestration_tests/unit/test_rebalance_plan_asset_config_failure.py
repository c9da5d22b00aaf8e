"""The dry `rebalance_plan` asset on a bad run config (review follow-up), on the fakes of test_rebalance_steps:
it fails with a `dagster.Failure` whose description names the key, with the saga plan step's check and message
("invalid run config: ..."), before any venue is read; not a ValueError traceback."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance, materialize

from arb_orchestration.defs.rebalance.assets import build_rebalance_plan
from arb_orchestration_tests.unit.test_rebalance_steps import FakeExchange, FakeWise

VENUES = ["a", "b", "c"]


class _CountingExchange(FakeExchange):
    def __init__(self):
        super().__init__()
        self.venue_calls: list[str] = []

    def venue(self, name):
        self.venue_calls.append(name)
        return super().venue(name)


def _materialize(exchange, config):
    with DagsterInstance.ephemeral() as instance:
        return materialize(
            [build_rebalance_plan(VENUES)], instance=instance, raise_on_error=False,
            resources={"exchange": exchange, "wise": FakeWise(exchange)},
            run_config={"ops": {"rebalance_plan": {"config": config}}},
        )


@pytest.mark.parametrize(
    "config, key",
    [
        ({"max_fee_ratio": 1.0}, "max_fee_ratio"),  # RebalancePolicyConfig / Guardrails check
        ({"max_transfer": {"USDT": float("nan")}}, "max_transfer[USDT]"),
        ({"tolerance": float("nan")}, "tolerance"),  # TargetPolicy check
        ({"targets": [{"venue": "okxx", "asset": "USDT", "share": 0.3}]}, "okxx"),  # unknown venue
    ],
)
def test_a_bad_run_config_fails_the_asset_with_a_failure_naming_the_key(config, key):
    exchange = _CountingExchange()
    result = _materialize(exchange, config)
    assert not result.success
    failure = result.failure_data_for_node("rebalance_plan")
    assert failure.error.cls_name == "Failure", failure.error.cls_name
    description = failure.user_failure_data.description
    assert description.startswith("invalid run config: ") and key in description, description
    assert exchange.venue_calls == []  # refused before any venue was read

