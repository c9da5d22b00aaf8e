"""ccxt counts perp order amounts in contracts; the platform in base units (from the hedging-math review).

On OKX a BTC swap contract is 0.01 BTC: a 2.7 BTC close must go out as 270 contracts, and the
order that comes back must read 2.7 BTC again (positions were already converted). Binance USD-M
(contractSize 1) is unchanged; inverse contracts, sized in USD, are refused rather than guessed.
"""

from __future__ import annotations

import pytest

from arb_orchestration.resources.errors import BusinessError
from arb_orchestration_tests.unit.test_ccxt_venue import FakeCcxt, _client

SWAP = "BTC/USDT:USDT"


def _fake(**market) -> FakeCcxt:
    fake = FakeCcxt()
    fake.markets[SWAP] = {"swap": True, "active": True, "contract": True, "linear": True, **market}
    return fake


def test_an_order_in_base_units_goes_out_in_contracts_and_comes_back_in_base_units():
    fake = _fake(contractSize=0.01)
    order = _client(fake).create_order(SWAP, "market", "sell", 2.7, client_order_id="close-1", reduce_only=True)
    assert fake.orders[-1]["amount"] == 270  # what ccxt was asked for: contracts
    assert (order.amount, order.filled) == (pytest.approx(2.7), pytest.approx(2.7))


def test_float_division_does_not_lose_a_contract():
    fake = _fake(contractSize=0.1)
    _client(fake).create_order(SWAP, "market", "buy", 0.3, client_order_id="open-1")
    assert fake.orders[-1]["amount"] == 3  # not 2.9999999999999996, which ccxt would truncate to 2


def test_a_base_unit_venue_is_unchanged():
    fake = _fake(contractSize=1)
    order = _client(fake).create_order(SWAP, "market", "buy", 1.25, client_order_id="open-2")
    assert fake.orders[-1]["amount"] == 1.25 and order.amount == 1.25


def test_inverse_contracts_are_refused_before_anything_is_sent():
    fake = _fake(contractSize=100, linear=False, inverse=True)
    with pytest.raises(BusinessError) as refused:
        _client(fake).create_order(SWAP, "market", "buy", 1.0, client_order_id="open-3")
    assert refused.value.code == "unsupported_contract" and fake.create_calls == 0
