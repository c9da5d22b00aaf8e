"""`auto_rebalance_saga` through unmodified ccxt (`binanceusdm`) against the exchange simulator's Binance dialect,
when the exchange cannot take a client withdrawal id: the planner offers no withdrawal rail out of it, so the
run fails `plan_infeasible` naming why, nothing is withdrawn, and the next rebalance on the same instance is not
blocked by the `legs_in_flight` guardrail (before the fix the pivot failed, its compensation failed the same
way, and every rebalance was refused for the 5 h lookback).

"No client withdrawal id" is the capability table `WITHDRAW_CLIENT_ID_PARAMS` without `binanceusdm` (the
simulator speaks only Binance's dialect; Bybit, Kraken Futures and Hyperliquid are the real cases). Real HTTP
servers on loopback, a real temporary Dagster instance; no live exchange is contacted."""

from __future__ import annotations

import os
import secrets

import pytest
from dagster import DagsterEventType, EnvVar, RetryPolicy, instance_for_test

from arb_orchestration.defs.rebalance import RebalanceJournalResource, build_auto_rebalance_saga
from arb_orchestration.resources import ccxt_venue
from arb_orchestration.resources.ccxt_venue import CcxtExchangeResource, CcxtVenueConfig
from arb_orchestration.resources.resilience import reset_breakers
from arb_orchestration.resources.smtp import SmtpResource
from arb_orchestration.resources.wise import WiseResource
from arb_orchestration.saga import InstanceSagaLog
from arb_orchestration.sim.real_api_binance import serve_binance_venue

pytestmark = pytest.mark.integration

KEY = "nid-" + secrets.token_hex(16)
SECRET = "nid-" + secrets.token_hex(24)
SAGA = build_auto_rebalance_saga(retry_policy=RetryPolicy(max_retries=1, delay=0.05))
CONFIG = {"assets": ["USDT"], "poll_interval_seconds": 0.05, "arrival_timeout_seconds": 15.0}


@pytest.fixture(scope="module")
def dialect_servers(local_world):
    servers = {
        venue: serve_binance_venue(local_world.exchange, venue=venue, api_key=KEY, secret=SECRET)
        for venue in local_world.exchange.state.venue_names()
    }
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def short(world, dialect_servers, monkeypatch):
    """okx: 4,000 USDT free (floor 10,000), so a rebalance wants to withdraw USDT into it."""
    for server in dialect_servers.values():
        server.api.reset()
        server.api.withdrawal_fee = "deducted"
    reset_breakers()
    monkeypatch.setenv("CCXT_NID_API_KEY", KEY)
    monkeypatch.setenv("CCXT_NID_SECRET", SECRET)
    state = world.exchange.state
    state.credit("okx", "USDT", -(state.balances("okx")["USDT"].free - 4_000.0))
    yield world


def _resources(world, servers) -> dict:
    return {
        "exchange": CcxtExchangeResource(
            accounts=[
                CcxtVenueConfig(name=venue, exchange_id="binanceusdm", api_key=EnvVar("CCXT_NID_API_KEY"),
                                secret=EnvVar("CCXT_NID_SECRET"), api_base_url=server.url, rate_limit_ms=1)
                for venue, server in servers.items()
            ],
            timeout_seconds=3.0, max_attempts=3, retry_base_delay=0.02,
        ),
        "wise": WiseResource(base_url=os.environ["WISE_API_URL"], api_token=EnvVar("WISE_API_TOKEN"),
                             profile_id=int(os.environ["WISE_PROFILE_ID"]), timeout_seconds=2.0, max_attempts=2,
                             retry_base_delay=0.01),
        "smtp": SmtpResource(host=world.smtp_host, port=world.smtp_port, sender="rebalance@arb.local",
                             risk_team=["risk@arb.local"], retry_base_delay=0.05),
        "rebalance_journal": RebalanceJournalResource(),
    }


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
