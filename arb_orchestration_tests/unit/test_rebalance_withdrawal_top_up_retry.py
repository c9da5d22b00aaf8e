"""`commit_transfers` tells a venue what earlier attempts already topped up for a withdrawal, so a retried withdrawal
never moves the same top-up out of the trading account twice (fakes of test_rebalance_sweep_step, engine without
Dagster).

* a withdrawal whose top-up moved and whose send then failed transiently: the step's retry (a new process in
  production: the venue client remembers nothing) hands the recorded top-up to the venue before withdrawing, and the
  venue tops up nothing more; the operator's money in the withdrawal wallet is untouched;
* a withdrawal that never topped up anything is not told anything.
"""

from __future__ import annotations

import pytest

from arb_orchestration.resources.errors import TransientError
from arb_orchestration.saga import StepRuntime, execute_step
from arb_orchestration_tests.unit.test_rebalance_steps import SAGA, STEPS, _config, _run
from arb_orchestration_tests.unit.test_rebalance_steps import world as world  # noqa: F401 (fixture)
from arb_orchestration_tests.unit.test_rebalance_sweep_step import OPERATOR, TwoWalletVenue, _with_operator_money
from arb_orchestration_tests.unit.test_rebalance_sweep_step import two_wallets as two_wallets  # noqa: F401

LEAVES = 8_001.0  # the leg's amount (credited 8,000 + fee 1): all of it comes from the trading account


class RestoringVenue(TwoWalletVenue):
    """Tops the deposit/withdrawal wallet up by the full amount less what it was told earlier attempts moved."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.restored: list[tuple[str, float]] = []
        self.known: dict[str, float] = {}  # like the ccxt client's memory: empty in a new process

    def restore_withdrawal_top_up(self, idempotency_key, amount):
        self.restored.append((idempotency_key, amount))
        self.known[idempotency_key] = max(self.known.get(idempotency_key, 0.0), amount)

    def withdraw(self, asset, amount, *, address, network, idempotency_key, tag=None):
        if idempotency_key not in self.withdrawals:
            rest = LEAVES - self.known.get(idempotency_key, 0.0)
            if rest > 0:
                self._shift(asset, rest, into_deposit=True)
                self._top_ups[idempotency_key] = self._top_ups.get(idempotency_key, 0.0) + rest
                self.known[idempotency_key] = self.known.get(idempotency_key, 0.0) + rest
            if self.fail_withdraw is None:  # the send pays the whole top-up out of the withdrawal wallet
                self._shift(asset, LEAVES, into_deposit=False)
        self.top_up = 0.0  # (TwoWalletVenue's own top-up stays off)
        return super().withdraw(asset, amount, address=address, network=network, idempotency_key=idempotency_key,
                                tag=tag)


@pytest.fixture
def restoring(two_wallets):  # noqa: F811
    exchange = two_wallets["exchange"]
    old = exchange.venues["b"]
    exchange.venues["b"] = RestoringVenue(exchange, "b", old.wallet, old.iban, old.fee)
    return two_wallets


def _commit(resources, log, attempt):
    return execute_step(SAGA, "commit_transfers", StepRuntime("saga-1", log, resources, config=_config(),
                                                             attempt=attempt))


def test_a_retried_withdrawal_is_told_its_recorded_top_up_and_moves_it_only_once(restoring):
    source = _with_operator_money(restoring, "b")
    log = _run(restoring, steps=STEPS[:2])
    source.fail_withdraw = TransientError("venue b: withdraw/apply 503, not applied")
    with pytest.raises(TransientError):
        _commit(restoring, log, attempt=0)
    [note] = [p for p in log.load("saga-1").step("commit_transfers").progress if "top_up" in p]
    assert (note["venue"], note["amount"]) == ("b", LEAVES)
    assert source.deposit_wallet["USDT"] == pytest.approx(OPERATOR + LEAVES)
    source.known.clear()  # the retry runs in a new process: the client has forgotten the top-up
    source.fail_withdraw = None
    _commit(restoring, log, attempt=1)
    [key] = source.withdrawals
    assert source.restored == [(key, LEAVES)]
    assert [p["amount"] for p in log.load("saga-1").step("commit_transfers").progress if "top_up" in p] == [LEAVES]
    assert source.deposit_wallet["USDT"] == pytest.approx(OPERATOR)  # the operator's money: untouched
    assert source.wallet["USDT"] == pytest.approx(60_000.0 - OPERATOR - LEAVES)  # the leg left the trading wallet


def test_a_withdrawal_without_an_earlier_top_up_is_told_nothing(restoring):
    source = _with_operator_money(restoring, "b")
    log = _run(restoring, steps=STEPS[:2])
    _commit(restoring, log, attempt=0)
    assert source.restored == [] and len(source.withdrawals) == 1
    assert source.deposit_wallet["USDT"] == pytest.approx(OPERATOR)
