"""`auto_rebalance_saga` through unmodified ccxt (`binanceusdm`) against the exchange simulator's Binance dialect,
when the exchange cannot take a client withdrawal id: the planner offers no withdrawal rail out of it, so the
run fails `plan_infeasible` naming why, nothing is withdrawn, and the next rebalance on the same instance is not
blocked by the `legs_in_flight` guardrail (before the fix the pivot failed, its compensation failed the same
way, and every rebalance was refused for the 5 h lookback).

"No client withdrawal id" is the capability table `WITHDRAW_CLIENT_ID_PARAMS` without `binanceusdm` (the
simulator speaks only Binance's dialect; Bybit, Kraken Futures and Hyperliquid are the real cases). Real HTTP
servers on loopback, a real temporary Dagster instance; no live exchange is contacted."""

from __future__ import annotations

import pytest
from dagster import DagsterEventType, instance_for_test

from arb_orchestration.resources import ccxt_venue
from arb_orchestration.saga import InstanceSagaLog
# The same world as the fee-mode test: every venue behind the simulator's Binance dialect, okx short of USDT.
from arb_orchestration_tests.integration.test_rebalance_fee_mode_sim import (  # noqa: F401 (fixtures)
    CONFIG,
    SAGA,
    _resources,
    dialect_servers,
    short,
)

pytestmark = pytest.mark.integration


def _failure_text(result) -> tuple[str, str]:
    failure = next(e for e in result.all_events if e.event_type is DagsterEventType.STEP_FAILURE)
    return failure.step_key, str(failure.event_specific_data)


def test_no_withdrawal_out_of_such_a_venue_and_the_next_rebalance_is_not_blocked(short, dialect_servers, monkeypatch):
    world = short
    withdrawals_before = {v: len(world.exchange.state.withdrawals(v)) for v in world.exchange.state.venue_names()}
    param = ccxt_venue.WITHDRAW_CLIENT_ID_PARAMS["binanceusdm"]
    monkeypatch.delitem(ccxt_venue.WITHDRAW_CLIENT_ID_PARAMS, "binanceusdm")
    with instance_for_test() as instance:
        refused = SAGA.job.execute_in_process(instance=instance, resources=_resources(world, dialect_servers),
                                              run_config=CONFIG, raise_on_error=False)
        assert not refused.success
        step, text = _failure_text(refused)
        assert step == "plan_rebalance" and "plan_infeasible" in text and "no idempotent withdrawal" in text
        plan_log = InstanceSagaLog(instance).load(refused.run_id)
        assert not plan_log.step("commit_transfers").started
        assert {v: len(world.exchange.state.withdrawals(v)) for v in withdrawals_before} == withdrawals_before

        # The venue can be withdrawn from idempotently again: the next rebalance runs, not held by the first.
        monkeypatch.setitem(ccxt_venue.WITHDRAW_CLIENT_ID_PARAMS, "binanceusdm", param)
        done = SAGA.job.execute_in_process(instance=instance, resources=_resources(world, dialect_servers),
                                           run_config=CONFIG, raise_on_error=False)
        assert done.success, _failure_text(done)
        plan = InstanceSagaLog(instance).load(done.run_id).step("plan_rebalance").result
        assert plan["legs_in_flight"] == [] and plan["withdrawal_excluded"] == []
        assert world.exchange.state.balances("okx")["USDT"].free == pytest.approx(12_000.0, abs=1e-6)
