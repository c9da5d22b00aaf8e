"""`auto_rebalance_saga` through unmodified ccxt (`binanceusdm`) against the simulator's Binance dialect, where every
venue's operator keeps 1,000 USDT of their own in the spot wallet, the wallet Binance pays withdrawals from: the
rebalance's withdrawal moves its planned amount (credited + the network fee, which Binance deducts from the request)
out of the source's USDⓈ-M futures account, and the operator's 1,000 in spot stay where they are, at the source and
at the destination.

Real HTTP servers on loopback (the fee-mode test's world: every venue behind the dialect, okx short of USDT), a
real temporary Dagster instance; no live exchange is contacted.
"""

from __future__ import annotations

import pytest

from arb_orchestration_tests.integration.test_rebalance_fee_mode_sim import (  # noqa: F401 (fixtures)
    dialect_servers,
    short,
)
from arb_orchestration_tests.integration.test_rebalance_sweep_binance_sim import (  # noqa: F401 (fixture)
    OPERATOR,
    _futures,
    _run,
    spot_deposits,
)

pytestmark = pytest.mark.integration


def test_a_withdrawal_draws_the_futures_account_and_leaves_the_operators_spot_alone(spot_deposits, dialect_servers):
    world = spot_deposits
    before = {v: _futures(world, v) for v in world.exchange.state.venue_names()}
    result, state, _reports = _run(world, dialect_servers)
    assert result.success
    [leg] = state.step("plan_rebalance").result["transfers"]
    source = dialect_servers[leg["from"]].api
    assert leg["fee"] > 0 and leg["amount"] == pytest.approx(leg["credited"] + leg["fee"])
    # The operator's spot money at the source: untouched (before the fix the withdrawal spent it first).
    assert source.wallet("MAIN") == {"USDT": pytest.approx(OPERATOR)}
    # The futures account paid the planned amount: credited + the fee Binance deducts from the request.
    assert before[leg["from"]] - _futures(world, leg["from"]) == pytest.approx(leg["amount"], abs=1e-6)
    assert [(t["type"], t["amount"]) for t in source.transfers()] == [("UMFUTURE_MAIN", pytest.approx(leg["amount"]))]
    [top_up] = [p for p in state.step("commit_transfers").progress if "top_up" in p]
    assert (top_up["venue"], top_up["amount"]) == (leg["from"], pytest.approx(leg["amount"]))
    [withdrawal] = world.exchange.state.withdrawals(leg["from"])
    assert (withdrawal.amount, withdrawal.fee, withdrawal.status) == (
        pytest.approx(leg["credited"]), pytest.approx(leg["fee"]), "completed")
    # The destination got its target as margin; its operator's 1,000 stay in spot too.
    destination = dialect_servers[leg["to"]].api
    assert destination.wallet("MAIN") == {"USDT": pytest.approx(OPERATOR)}
    assert _futures(world, leg["to"]) - before[leg["to"]] == pytest.approx(leg["credited"], abs=1e-6)
