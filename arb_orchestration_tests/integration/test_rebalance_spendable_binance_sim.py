"""`auto_rebalance_saga` through unmodified ccxt (`binanceusdm`) against the simulator's Binance dialect, where every
venue's operator keeps 1,000 USDT of their own in the spot wallet: the planner counts only the futures account as
money a venue may send (docs/planner-balances.md).

binance is the cheapest source of okx's 8,000 USDT deficit and may be drawn down to nothing (floor 0), but its
futures account holds 7,500: only with the operator's 1,000 in spot could it pay the leg. Planned from the whole
balance, the leg went out of binance and its top-up (8,000 and the fee, from 7,500) was refused by the exchange; planned
from the spendable part, another venue pays, nothing is refused, and the plan's notes say binance's 1,000 in spot
were not counted as movable.

Real HTTP servers on loopback (the fee-mode test's world: every venue behind the dialect, okx short of USDT), a
real temporary Dagster instance; no live exchange is contacted.
"""

from __future__ import annotations

import pytest
from dagster import DagsterEventType, instance_for_test

from arb_orchestration.saga import InstanceSagaLog
from arb_orchestration_tests.integration.test_rebalance_fee_mode_sim import (  # noqa: F401 (fixtures)
    CONFIG,
    SAGA,
    _resources,
    dialect_servers,
    short,
)
from arb_orchestration_tests.integration.test_rebalance_sweep_binance_sim import (  # noqa: F401 (fixture)
    OPERATOR,
    _futures,
    spot_deposits,
)

pytestmark = pytest.mark.integration

TRADING = 7_500.0  # binance's futures account: less than okx's 8,000 deficit, more with the operator's spot money
RUN_CONFIG = {**CONFIG, "use_market_data_floors": False,
              "targets": [{"venue": "binance", "asset": "USDT", "floor": 0.0}]}


def test_the_operators_spot_money_is_not_planned_to_leave_and_nothing_is_refused_at_top_up(
        spot_deposits, dialect_servers):
    world = spot_deposits
    state = world.exchange.state
    state.credit("binance", "USDT", -(_futures(world, "binance") - TRADING))
    binance = dialect_servers["binance"].api
    assert binance.wallet("MAIN") == {"USDT": pytest.approx(OPERATOR)}
    with instance_for_test() as instance:
        result = SAGA.job.execute_in_process(instance=instance, resources=_resources(world, dialect_servers),
                                             run_config=RUN_CONFIG, raise_on_error=False)
        saga = InstanceSagaLog(instance).load(result.run_id)
        [plan_md] = [e.dagster_event.engine_event_data.metadata["plan"].value
                     for e in instance.all_logs(result.run_id, of_type=DagsterEventType.ENGINE_EVENT)
                     if e.dagster_event.step_key == "plan_rebalance"
                     and "plan" in e.dagster_event.engine_event_data.metadata]
    assert result.success
    [leg] = saga.step("plan_rebalance").result["transfers"]
    assert leg["to"] == "okx" and leg["from"] != "binance" and leg["credited"] == pytest.approx(8_000.0)
    # binance moved nothing: no top-up asked of its futures account, the operator's 1,000 still in spot.
    assert binance.transfers() == []
    assert binance.wallet("MAIN") == {"USDT": pytest.approx(OPERATOR)}
    assert _futures(world, "binance") == pytest.approx(TRADING, abs=1e-6)
    assert state.withdrawals("binance") == []
    assert not [p for p in saga.step("commit_transfers").progress if p.get("venue") == "binance"]
    # The operator sees why binance did not pay.
    assert "binance USDT: 1,000 in the spot wallet not counted as movable" in plan_md
