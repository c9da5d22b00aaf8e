"""An open position ccxt reports without a side must not vanish from the positions read.

`fetch_positions` skipped it, so a venue holding it read as flat: the stop-loss would
have reported FLAT and the hedge would have ignored the exposure. A non-zero position
whose direction is unknown is a failed read (not retried: asking again gives the same
answer), which the stop-loss treats as "not confirmed flat" and escalates.
"""

from __future__ import annotations

import pytest

from arb_orchestration.resources.errors import BusinessError
from arb_orchestration_tests.unit.test_ccxt_venue import FakeCcxt, _client


def test_an_open_position_without_a_side_fails_the_read_naming_it():
    fake = FakeCcxt()
    fake.fetch_positions = lambda *a, **k: [
        {"symbol": "BTC/USDT:USDT", "side": None, "contracts": 3, "contractSize": 0.01, "entryPrice": 50_000.0},
    ]
    with pytest.raises(BusinessError, match=r"BTC/USDT:USDT.*no side") as caught:
        _client(fake).fetch_positions()
    assert caught.value.code == "position_side_unknown"


def test_a_closed_position_without_a_side_is_still_skipped():
    fake = FakeCcxt()
    fake.fetch_positions = lambda *a, **k: [
        {"symbol": "BTC/USDT:USDT", "side": None, "contracts": 0, "contractSize": 0.01, "entryPrice": 0.0},
        {"symbol": "ETH/USDT:USDT", "side": "long", "contracts": 1, "contractSize": 0.1, "entryPrice": 3_000.0},
    ]
    assert [(p.symbol, p.side) for p in _client(fake).fetch_positions()] == [("ETH/USDT:USDT", "long")]
