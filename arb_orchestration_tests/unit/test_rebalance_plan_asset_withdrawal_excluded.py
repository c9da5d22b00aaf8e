"""The dry `rebalance_plan` asset counts the rails left out because their source venue cannot withdraw
idempotently (`withdrawal_excluded_rails`) in its metadata, like the allowlist exclusions
(`allowlist_excluded_rails`) (review follow-up), on the fakes of test_rebalance_steps."""

from __future__ import annotations

from dagster import DagsterInstance, materialize

from arb_orchestration.defs.rebalance.assets import build_rebalance_plan
from arb_orchestration_tests.unit.test_rebalance_steps import FakeExchange, FakeWise

VENUES = ["a", "b", "c"]


def _materialize(exchange, config):
    with DagsterInstance.ephemeral() as instance:
        return materialize(
            [build_rebalance_plan(VENUES)], instance=instance, raise_on_error=False,
            resources={"exchange": exchange, "wise": FakeWise(exchange)},
            run_config={"ops": {"rebalance_plan": {"config": config}}},
        )


def test_rails_excluded_for_no_idempotent_withdrawal_are_counted_in_the_metadata():
    exchange = FakeExchange()
    exchange.venues["b"].withdrawals_idempotent = False
    result = _materialize(exchange, {"assets": ["USDT"], "use_market_data_floors": False})
    assert result.success
    [materialization] = result.asset_materializations_for_node("rebalance_plan")
    metadata = materialization.metadata
    assert metadata["withdrawal_excluded_rails"].value == 2  # b->a and b->c, USDT over TRC20
    assert metadata["allowlist_excluded_rails"].value == 0
    assert "no idempotent withdrawal" in metadata["plan"].value
    assert exchange.venues["b"].withdraw_calls == []
