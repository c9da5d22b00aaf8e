"""A withdrawal from Binance USDⓈ-M or OKX moves the planned amount out of the trading account and leaves whatever
already sits in the withdrawal wallet (an operator's own spot / funding money) where it is.

The exchange pays the withdrawal from spot (Binance) / funding (OKX); the plan moves money out of the futures /
trading account. So the client tops the withdrawal wallet up by everything that leaves it (Binance: the request,
amount + fee, since it deducts the fee from the request; OKX: amount + fee on top), not by the wallet's shortfall.
Covered: the operator's balance unchanged after a withdrawal on both exchanges; a retry of the same withdrawal
(same client, or another process told by the saga's record) never tops up twice; an ambiguous top-up is re-read,
never resent, and nothing is withdrawn while its outcome is unknown. Same recorder as test_ccxt_withdraw_wallet.py
(the real ccxt class, only its HTTP layer replaced).
"""

from __future__ import annotations

import pytest

from arb_orchestration.resources.errors import BusinessError, TransientError
from arb_orchestration_tests.unit.test_ccxt_withdraw_wallet import ADDRESS, _binance, _client, _okx, _withdraw

OPERATOR = 1_000.0  # USDT an operator keeps in the withdrawal wallet, unrelated to the bot


def _transfers(venue) -> list[float]:
    return [float(b["amount"]) for _q, b in venue.sent("POST", "/sapi/v1/asset/transfer")]


def test_binance_a_withdrawal_leaves_the_operators_spot_balance_unchanged():
    client, venue = _binance(trading=10_000.0, spot=OPERATOR)
    _withdraw(client, "leg1", 300.0)
    # Binance deducts its 1 USDT fee from the request: 301 leave spot, so 301 come from the futures account.
    assert _transfers(venue) == [301.0]
    (transfer,) = venue.sent("POST", "/sapi/v1/asset/transfer")
    assert transfer[1]["type"] == "UMFUTURE_MAIN"
    (apply,) = venue.sent("POST", "/sapi/v1/capital/withdraw/apply")
    assert (float(apply[1]["amount"]), apply[1]["walletType"]) == (301.0, "0")
    assert venue.wallet == pytest.approx(OPERATOR)  # the operator's spot money: untouched
    assert venue.trading == pytest.approx(10_000.0 - 301.0)  # the planned amount left the futures account
    assert client.take_withdrawal_top_up("leg1") == pytest.approx(301.0)
    assert client.take_withdrawal_top_up("leg1") == 0.0


def test_okx_a_withdrawal_leaves_the_operators_funding_balance_unchanged():
    client, venue = _okx(trading=10_000.0, funding=OPERATOR)
    client.withdraw("USDT", 300.0, address=ADDRESS, network="TRC20", idempotency_key="leg1")
    (transfer,) = venue.sent("POST", "/asset/transfer")
    assert float(transfer[1]["amt"]) == 301.0  # OKX adds its 1 USDT fee on top of the 300
    assert venue.wallet == pytest.approx(OPERATOR)
    assert venue.trading == pytest.approx(10_000.0 - 301.0)


def test_a_retried_withdrawal_on_the_same_client_does_not_top_up_twice():
    client, venue = _binance(trading=10_000.0, spot=OPERATOR)
    venue.refuse_withdrawal = True
    with pytest.raises(BusinessError):
        _withdraw(client, "leg1", 300.0)
    assert venue.wallet == pytest.approx(OPERATOR + 301.0)  # the top-up stayed; the withdrawal did not leave
    venue.refuse_withdrawal = False
    _withdraw(client, "leg1", 300.0)  # the same key again: its top-up is already there
    assert _transfers(venue) == [301.0]
    assert venue.wallet == pytest.approx(OPERATOR) and venue.trading == pytest.approx(10_000.0 - 301.0)


def test_a_retry_in_another_process_is_told_the_recorded_top_up_and_moves_only_the_rest():
    first, venue = _binance(trading=10_000.0, spot=OPERATOR)
    venue.refuse_withdrawal = True
    with pytest.raises(BusinessError):
        _withdraw(first, "leg1", 300.0)
    recorded = first.take_withdrawal_top_up("leg1")  # what the saga notes (`top_up`)
    assert recorded == pytest.approx(301.0)
    venue.refuse_withdrawal = False
    # A relaunch: a new client, no memory of the first one, the same exchange.
    again = _client("binanceusdm", first._exchange)
    again.restore_withdrawal_top_up("leg1", recorded)
    _withdraw(again, "leg1", 300.0)
    assert _transfers(venue) == [301.0]
    assert venue.wallet == pytest.approx(OPERATOR) and venue.trading == pytest.approx(10_000.0 - 301.0)
    with pytest.raises(ValueError):
        again.restore_withdrawal_top_up("leg2", float("nan"))


def test_a_top_up_applied_with_its_answer_lost_is_read_back_and_not_resent():
    client, venue = _binance(trading=10_000.0, spot=OPERATOR)
    venue.transfer_script = ["timeout_after_commit"]
    _withdraw(client, "leg1", 300.0)
    assert _transfers(venue) == [301.0]
    assert venue.wallet == pytest.approx(OPERATOR) and venue.trading == pytest.approx(10_000.0 - 301.0)
    assert len(venue.sent("POST", "/sapi/v1/capital/withdraw/apply")) == 1


def test_a_top_up_with_an_unknown_outcome_is_never_resent_and_nothing_is_withdrawn_until_it_shows():
    client, venue = _binance(trading=10_000.0, spot=OPERATOR)
    venue.transfer_script = ["5xx"]  # not applied, but a 5xx may have been: unknown to the client
    with pytest.raises(TransientError):
        _withdraw(client, "leg1", 300.0)
    with pytest.raises(TransientError):  # a retry looks again: still not there, still not resent
        _withdraw(client, "leg1", 300.0)
    assert _transfers(venue) == [301.0]
    # Sending would have paid from the operator's 1,000: nothing was sent.
    assert venue.sent("POST", "/sapi/v1/capital/withdraw/apply") == []
    assert venue.wallet == pytest.approx(OPERATOR) and venue.trading == pytest.approx(10_000.0)
    assert client.take_withdrawal_top_up("leg1") == 0.0  # unconfirmed: not in the sweep's bound
    # The exchange shows the transfer late (it had applied it after all): the next retry finds it and sends.
    venue.trading -= 301.0
    venue.wallet += 301.0
    _withdraw(client, "leg1", 300.0)
    assert _transfers(venue) == [301.0]
    assert venue.wallet == pytest.approx(OPERATOR) and venue.trading == pytest.approx(10_000.0 - 301.0)
    assert client.take_withdrawal_top_up("leg1") == pytest.approx(301.0)
