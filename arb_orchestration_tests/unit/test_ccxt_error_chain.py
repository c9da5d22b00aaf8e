"""The ccxt client's errors carry no signed URL, neither in their text nor in their cause chain.

ccxt puts the request URL (for Binance's signed calls: the query with
`signature=`) into its exception text. The client words its own error from a
redacted copy; Dagster and the saga log store a failure with its whole cause
chain, so the raw ccxt exception must not travel along as `__cause__` or shown
`__context__`.
"""

from __future__ import annotations

import traceback

import ccxt
import pytest

from arb_orchestration.resources.errors import BusinessError, ExternalServiceError
from arb_orchestration_tests.unit.test_ccxt_venue import FakeCcxt, _client

SIGNED = "https://fapi.binance.com/fapi/v1/order?symbol=BTCUSDT&timestamp=1700000000000&signature=5f1d0c0ffee0ddba11"


def _everything_printed(err: BaseException) -> str:
    return "".join(traceback.format_exception(err))


def test_a_refused_order_keeps_no_signed_url_in_its_cause_chain():
    fake = FakeCcxt()
    fake.fail_next_create = ccxt.InsufficientFunds(f'binanceusdm POST {SIGNED} 400 {{"code":-2019,"msg":"Margin is insufficient."}}')
    with pytest.raises(BusinessError) as refused:
        _client(fake).create_order("BTC/USDT:USDT", "market", "buy", 1.0, client_order_id="open-1")
    err = refused.value
    assert err.code == "insufficient_margin"
    assert err.__cause__ is None and err.__suppress_context__
    printed = _everything_printed(err)
    assert "InsufficientFunds" in printed  # the kind of ccxt error is still named
    assert "5f1d0c0ffee0ddba11" not in printed


def test_a_failed_lookup_keeps_no_signed_url_in_its_cause_chain():
    fake = FakeCcxt()

    def broken_fetch_order(id, symbol, params=None):
        raise ccxt.ExchangeNotAvailable(f"binanceusdm GET {SIGNED} 503 Service Unavailable")

    fake.fetch_order = broken_fetch_order
    with pytest.raises(ExternalServiceError) as failed:
        _client(fake).fetch_order_by_client_id("open-1", "BTC/USDT:USDT")
    assert "5f1d0c0ffee0ddba11" not in _everything_printed(failed.value)
