"""`auto_rebalance_saga` with every venue reached through ccxt's unmodified `binanceusdm` class, each simulated
venue speaking Binance's REST dialect over HTTP (same simulator state), in both withdrawal fee conventions:

* the dialect deducts the network fee from `amount`, as Binance's `withdraw/apply` does, and the venue runs on
  its documented default (`binanceusdm` → deducted): the leg asks for credited + fee, okx receives exactly its
  target, binance loses exactly the planned `amount`, which is what the daily limit counts;
* the dialect adds the fee on top and `CCXT_VENUES` says so (`withdrawal_fee_mode: added`): same result;
* the mode set wrong (a deducting venue configured as adding): okx gets one network fee less, and
  `verify_balances` fails the run instead of letting the 1 % band hide it.

Real HTTP servers on loopback, a real temporary instance; no live exchange is contacted."""

from __future__ import annotations

import os
import secrets

import pytest
from dagster import DagsterEventType, EnvVar, RetryPolicy, instance_for_test

from arb_orchestration.defs.rebalance import RebalanceJournalResource, build_auto_rebalance_saga
from arb_orchestration.resources.ccxt_venue import CcxtExchangeResource, CcxtVenueConfig
from arb_orchestration.resources.resilience import reset_breakers
from arb_orchestration.resources.smtp import SmtpResource
from arb_orchestration.resources.wise import WiseResource
from arb_orchestration.saga import InstanceSagaLog
from arb_orchestration_tests.integration.test_ccxt_hedge_sim import binance_dialects

pytestmark = pytest.mark.integration

KEY = "fee-" + secrets.token_hex(16)
SECRET = "fee-" + secrets.token_hex(24)
SAGA = build_auto_rebalance_saga(retry_policy=RetryPolicy(max_retries=1, delay=0.05))
CONFIG = {"assets": ["USDT"], "poll_interval_seconds": 0.05, "arrival_timeout_seconds": 15.0}


@pytest.fixture(scope="module")
def dialect_servers(local_world):
    yield from binance_dialects(local_world, KEY, SECRET)


@pytest.fixture
def short(world, dialect_servers, monkeypatch):
    """okx: 4,000 USDT free (floor 10,000 → refilled to 12,000); every dialect back to Binance's convention."""
    for server in dialect_servers.values():
        server.api.reset()
        server.api.withdrawal_fee = "deducted"
    reset_breakers()
    monkeypatch.setenv("CCXT_FEE_API_KEY", KEY)
    monkeypatch.setenv("CCXT_FEE_SECRET", SECRET)
    state = world.exchange.state
    state.credit("okx", "USDT", -(state.balances("okx")["USDT"].free - 4_000.0))
    yield world


def _resources(world, servers, fee_mode: str | None = None) -> dict:
    return {
        "exchange": CcxtExchangeResource(
            accounts=[
                CcxtVenueConfig(name=venue, exchange_id="binanceusdm", api_key=EnvVar("CCXT_FEE_API_KEY"),
                                secret=EnvVar("CCXT_FEE_SECRET"), api_base_url=server.url, rate_limit_ms=1,
                                withdrawal_fee_mode=fee_mode)
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


def _run(world, servers, fee_mode: str | None = None):
    """(result, plan, the rows verify_balances reported last)."""
    with instance_for_test() as instance:
        result = SAGA.job.execute_in_process(instance=instance, resources=_resources(world, servers, fee_mode),
                                             run_config=CONFIG, raise_on_error=False)
        plan = InstanceSagaLog(instance).load(result.run_id).step("plan_rebalance").result
        verification = None
        for entry in instance.all_logs(result.run_id, of_type=DagsterEventType.ENGINE_EVENT):
            event = entry.dagster_event
            if event.step_key == "verify_balances" and "verification" in event.engine_event_data.metadata:
                verification = event.engine_event_data.metadata["verification"].value
        return result, plan, verification


def _free(world, venue: str) -> float:
    return world.exchange.state.balances(venue)["USDT"].free


@pytest.mark.parametrize("dialect, fee_mode", [("deducted", None), ("added", "added")])
def test_the_leg_delivers_its_target_and_the_source_loses_the_planned_amount(short, dialect_servers, dialect, fee_mode):
    world = short
    for server in dialect_servers.values():
        server.api.withdrawal_fee = dialect
    before = {v: _free(world, v) for v in world.exchange.state.venue_names()}
    result, plan, verification = _run(world, dialect_servers, fee_mode)
    assert result.success and [row["ok"] for row in verification] == [True]
    [leg] = plan["transfers"]
    assert (leg["to"], leg["credited"]) == ("okx", 8_000.0) and leg["fee"] > 0
    assert _free(world, "okx") == pytest.approx(12_000.0, abs=1e-6)  # the target, not one fee less
    # What left the source is the leg's planned amount (credited + fee): what the daily limit counted.
    assert before[leg["from"]] - _free(world, leg["from"]) == pytest.approx(leg["amount"], abs=1e-6)
    [withdrawal] = world.exchange.state.withdrawals(leg["from"])
    assert (withdrawal.amount, withdrawal.fee, withdrawal.status) == (pytest.approx(8_000.0), leg["fee"], "completed")


def test_a_deducting_venue_configured_as_adding_fails_verification(short, dialect_servers):
    world = short
    result, plan, verification = _run(world, dialect_servers, fee_mode="added")
    assert not result.success
    [leg] = plan["transfers"]
    assert _free(world, "okx") == pytest.approx(12_000.0 - leg["fee"], abs=1e-6)  # one network fee short
    failure = next(e for e in result.all_events if e.event_type is DagsterEventType.STEP_FAILURE)
    assert failure.step_key == "verify_balances"
    [row] = verification
    assert (row["venue"], row["ok"]) == ("okx", False)
    assert row["expected"] - row["now"] == pytest.approx(leg["fee"] / 2, abs=1e-5)  # short by the fee, allowed half
