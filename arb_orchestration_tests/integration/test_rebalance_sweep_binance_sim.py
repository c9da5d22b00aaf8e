"""`auto_rebalance_saga` through unmodified ccxt (`binanceusdm`) against the simulator's Binance dialect with deposits
credited to the spot wallet, as Binance does: after a rebalance into a venue, the money ends in its USDⓈ-M futures
account (margin), not in spot.

* the leg arrives in okx's spot wallet; `sweep_to_trading` moves it with one universal transfer (MAIN_UMFUTURE)
  into the futures account and records what it moved;
* with `sweep_deposits_to_trading` off the same run leaves it in spot (what every rebalance did before the step
  existed): verified, since the balances count spot, but no margin;
* a withdrawal that fails after its top-up (the source's withdraw endpoint answers 5xx throughout): the pivot's
  compensation moves the top-up from the source's spot wallet back into its futures account.

Real HTTP servers on loopback (the fee-mode test's world: every venue behind the dialect, okx short of USDT), a
real temporary Dagster instance; no live exchange is contacted.
"""

from __future__ import annotations

import pytest
from dagster import DagsterEventType, instance_for_test

from arb_orchestration.resources.ccxt_venue import CcxtExchangeResource
from arb_orchestration.saga import InstanceSagaLog
from arb_orchestration_tests.integration.test_rebalance_fee_mode_sim import (  # noqa: F401 (fixtures)
    CONFIG,
    SAGA,
    _resources,
    dialect_servers,
    short,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def spot_deposits(short, dialect_servers):
    """The fee-mode world with every dialect crediting deposits to spot; back to the futures account after."""
    for server in dialect_servers.values():
        server.api.deposit_wallet = "MAIN"
    yield short
    for server in dialect_servers.values():
        server.api.deposit_wallet = "UMFUTURE"


def _run(world, servers, *, sweep: bool | None = None):
    resources = _resources(world, servers)
    if sweep is not None:
        exchange = resources["exchange"]
        resources["exchange"] = CcxtExchangeResource(
            accounts=[a.model_copy(update={"sweep_deposits_to_trading": sweep}) for a in exchange.accounts],
            timeout_seconds=exchange.timeout_seconds, max_attempts=exchange.max_attempts,
            retry_base_delay=exchange.retry_base_delay)
    with instance_for_test() as instance:
        result = SAGA.job.execute_in_process(instance=instance, resources=resources, run_config=CONFIG,
                                             raise_on_error=False)
        state = InstanceSagaLog(instance).load(result.run_id)
        reports = [e.dagster_event.engine_event_data.metadata
                   for e in instance.all_logs(result.run_id, of_type=DagsterEventType.ENGINE_EVENT)
                   if e.dagster_event.step_key == "sweep_to_trading"
                   and "swept" in e.dagster_event.engine_event_data.metadata]
        return result, state, reports


def _futures(world, venue: str) -> float:
    return world.exchange.state.balances(venue)["USDT"].free


def test_a_rebalance_into_a_binance_venue_ends_in_its_futures_account(spot_deposits, dialect_servers):
    world = spot_deposits
    result, state, reports = _run(world, dialect_servers)
    assert result.success
    [leg] = state.step("plan_rebalance").result["transfers"]
    assert (leg["to"], leg["credited"]) == ("okx", 8_000.0)
    okx = dialect_servers["okx"].api
    assert _futures(world, "okx") == pytest.approx(12_000.0, abs=1e-6)  # the target, as margin
    assert okx.wallet("MAIN") == {}  # nothing left in spot
    assert [(t["type"], t["amount"]) for t in okx.transfers()] == [("MAIN_UMFUTURE", pytest.approx(8_000.0))]
    assert state.step("sweep_to_trading").result["swept"] == [
        {"venue": "okx", "asset": "USDT", "moved": pytest.approx(8_000.0)}]
    [report] = reports
    assert report["swept"].value == [{"venue": "okx", "asset": "USDT", "moved": pytest.approx(8_000.0)}]


def test_with_the_sweep_off_the_deposit_stays_in_spot_verified_but_no_margin(spot_deposits, dialect_servers):
    world = spot_deposits
    result, state, _reports = _run(world, dialect_servers, sweep=False)
    assert result.success and state.step("verify_balances").done  # the balances count spot: verified
    okx = dialect_servers["okx"].api
    assert _futures(world, "okx") == pytest.approx(4_000.0, abs=1e-6)  # no margin arrived
    assert okx.wallet("MAIN") == {"USDT": pytest.approx(8_000.0)}
    assert okx.transfers() == []
    assert state.step("sweep_to_trading").result["swept"] == [{"venue": "okx", "asset": "USDT", "moved": 0.0}]


def test_a_failed_withdrawals_top_up_goes_back_into_the_sources_futures_account(spot_deposits, dialect_servers):
    world = spot_deposits
    before = {v: _futures(world, v) for v in world.exchange.state.venue_names()}
    fault = world.exchange.faults.add({"kind": "error_5xx", "endpoint": "create_withdrawal", "count": 1_000})
    try:
        result, state, _reports = _run(world, dialect_servers)
    finally:
        world.exchange.faults.remove(fault.id)
    assert not result.success
    [leg] = state.step("plan_rebalance").result["transfers"]
    source = dialect_servers[leg["from"]].api
    compensation = state.step("commit_transfers").compensation
    assert compensation["not_created"] == [leg["index"]]
    assert compensation["swept"] == [{"venue": leg["from"], "asset": "USDT", "moved": pytest.approx(leg["amount"])}]
    assert [t["type"] for t in source.transfers()] == ["UMFUTURE_MAIN", "MAIN_UMFUTURE"]  # the top-up, and back
    assert source.wallet("MAIN") == {}
    assert _futures(world, leg["from"]) == pytest.approx(before[leg["from"]], abs=1e-6)
    assert world.exchange.state.withdrawals(leg["from"]) == []
