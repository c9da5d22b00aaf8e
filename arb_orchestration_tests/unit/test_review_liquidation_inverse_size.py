"""Review: an inverse perp (BTC/USD:BTC, contractSize 100 = USD per contract) held on a ccxt venue was read
as `contracts * contractSize` = USD, but `Position.size` is base units: 50 contracts ($5,000, 0.1 BTC at
50,000) became a 5,000 BTC position, a $250M notional in the stop-loss's "LEFT OPEN" line (the stop-loss
refuses to trade inverse contracts, so it is always reported). Base = USD / price."""

from __future__ import annotations

import pytest

from arb_orchestration_tests.unit.test_ccxt_venue import FakeCcxt, _client

INVERSE = "BTC/USD:BTC"


def test_an_inverse_position_is_read_in_base_units():
    fake = FakeCcxt()
    fake.markets[INVERSE] = {"swap": True, "active": True, "contract": True, "linear": False, "inverse": True,
                             "contractSize": 100}
    fake.fetch_positions = lambda *a, **k: [
        {"symbol": INVERSE, "side": "short", "contracts": 50, "contractSize": 100, "entryPrice": 40_000.0,
         "markPrice": 50_000.0},
        {"symbol": "BTC/USDT:USDT", "side": "long", "contracts": 2, "contractSize": 0.01, "entryPrice": 50_000.0,
         "markPrice": 50_000.0},
    ]
    positions = {p.symbol: p for p in _client(fake).fetch_positions()}
    assert positions[INVERSE].side == "short"
    assert positions[INVERSE].size == pytest.approx(0.1)  # $5,000 at 50,000
    assert positions[INVERSE].notional == pytest.approx(5_000.0)
    assert positions["BTC/USDT:USDT"].size == pytest.approx(0.02)  # linear: unchanged
