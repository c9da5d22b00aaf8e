"""`auto_rebalance_saga` through unmodified ccxt (`binanceusdm`) against the simulator's Binance dialect with deposits
credited to the spot wallet, as Binance does: after a rebalance into a venue, the money ends in its USDⓈ-M futures
account (margin), not in spot, and an operator's own USDT in spot stays where it is.

* the leg arrives in okx's spot wallet, beside 1,000 USDT of the operator's own; `sweep_to_trading` moves exactly
  what the leg credited with one universal transfer (MAIN_UMFUTURE) into the futures account and records it; the
  operator's 1,000 stay in spot;
* with `sweep_deposits_to_trading` off the same run leaves it in spot (what every rebalance did before the step
  existed): verified, since the balances count spot, but no margin;
* a withdrawal that fails after its top-up (the source's withdraw endpoint answers 5xx throughout): the pivot's
  compensation moves the top-up, as `commit_transfers` recorded it, from the source's spot wallet back into its
  futures account, and not the operator's 1,000 beside it.

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


OPERATOR = 1_000.0  # USDT an operator keeps in each venue's spot wallet, unrelated to the bot


@pytest.fixture
def spot_deposits(short, dialect_servers):
    """The fee-mode world with every dialect crediting deposits to spot, and OPERATOR USDT of each venue's futures
    account moved to its spot wallet by a person (totals, and so the plan, unchanged); back to the futures
    account after (the next test's `reset` clears the spot wallets)."""
    state = short.exchange.state
    for venue, server in dialect_servers.items():
        server.api.deposit_wallet = "MAIN"
        state.credit(venue, "USDT", -OPERATOR)
        with server.api._wallet_lock:  # noqa: SLF001 - the simulator's spot wallet, set as a person's transfer would
            server.api._wallets["MAIN"]["USDT"] = OPERATOR  # noqa: SLF001
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


def test_a_rebalance_into_a_binance_venue_ends_in_its_futures_account_and_the_operators_spot_stays(
        spot_deposits, dialect_servers):
    world = spot_deposits
    result, state, reports = _run(world, dialect_servers)
    assert result.success
    [leg] = state.step("plan_rebalance").result["transfers"]
    assert (leg["to"], leg["credited"]) == ("okx", 8_000.0)
    okx = dialect_servers["okx"].api
    # The target (12,000) as margin, less the operator's 1,000 that stay in spot (what the whole-balance sweep moved).
    assert _futures(world, "okx") == pytest.approx(12_000.0 - OPERATOR, abs=1e-6)
    assert okx.wallet("MAIN") == {"USDT": pytest.approx(OPERATOR)}
    assert [(t["type"], t["amount"]) for t in okx.transfers()] == [("MAIN_UMFUTURE", pytest.approx(8_000.0))]
    swept = [{"venue": "okx", "asset": "USDT", "arrived": 8_000.0, "moved": pytest.approx(8_000.0)}]
    assert state.step("sweep_to_trading").result["swept"] == swept
    assert [(p["sweep"], p["amount"]) for p in state.step("sweep_to_trading").progress] == [
        ("sending", pytest.approx(8_000.0)), ("moved", pytest.approx(8_000.0))]
    [report] = reports
    assert report["swept"].value == swept


def test_with_the_sweep_off_the_deposit_stays_in_spot_verified_but_no_margin(spot_deposits, dialect_servers):
    world = spot_deposits
    result, state, _reports = _run(world, dialect_servers, sweep=False)
    assert result.success and state.step("verify_balances").done  # the balances count spot: verified
    okx = dialect_servers["okx"].api
    assert _futures(world, "okx") == pytest.approx(4_000.0 - OPERATOR, abs=1e-6)  # no margin arrived
    assert okx.wallet("MAIN") == {"USDT": pytest.approx(8_000.0 + OPERATOR)}
    assert okx.transfers() == []
    assert state.step("sweep_to_trading").result["swept"] == [
        {"venue": "okx", "asset": "USDT", "arrived": 8_000.0, "moved": 0.0}]


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
    commit = state.step("commit_transfers")
    # The spot wallet held the operator's 1,000: the top-up still moved the leg's whole amount (the operator's money
    # is not the plan's to spend), once although the step was retried, and recorded it.
    [top_up] = [p for p in commit.progress if "top_up" in p]
    assert (top_up["top_up"], top_up["venue"]) == (leg["index"], leg["from"])
    assert top_up["amount"] == pytest.approx(leg["amount"])
    compensation = commit.compensation
    assert compensation["not_created"] == [leg["index"]]
    assert compensation["swept"] == [{"venue": leg["from"], "asset": "USDT",
                                      "moved": pytest.approx(leg["amount"])}]
    assert [(t["type"], t["amount"]) for t in source.transfers()] == [  # the top-up, and back: the same amount
        ("UMFUTURE_MAIN", pytest.approx(top_up["amount"])), ("MAIN_UMFUTURE", pytest.approx(top_up["amount"]))]
    assert source.wallet("MAIN") == {"USDT": pytest.approx(OPERATOR)}
    assert _futures(world, leg["from"]) == pytest.approx(before[leg["from"]], abs=1e-6)
    assert world.exchange.state.withdrawals(leg["from"]) == []
