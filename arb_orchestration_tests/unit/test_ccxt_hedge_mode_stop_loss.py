"""The stop-loss on a hedge-mode venue: no close reaches the exchange, and the outcome says why and what to change.

The venue is the real ccxt binanceusdm class behind the client, HTTP replaced by a recorder answering
`dualSidePosition: true`; positions and open orders are served by the test (their ccxt paths are covered elsewhere).
"""

from __future__ import annotations

from arb_orchestration.defs.stop_loss.liquidator import LiquidationSettings, liquidate_venue
from arb_orchestration.domain.models import Position
from arb_orchestration_tests.unit.test_ccxt_position_mode import _binance_client


def test_the_stop_loss_reports_hedge_mode_instead_of_an_exchange_rejection():
    client, wire = _binance_client(True)
    position = Position(venue=client.name, symbol="BTC/USDT:USDT", side="long", size=1.0, entry_price=100000.0,
                        mark_price=100000.0)
    client.fetch_positions = lambda: [position]
    client.fetch_open_orders = lambda symbol=None: []
    client.cancel_all_orders = lambda symbol=None: []
    outcome = liquidate_venue(client, base_key="sl-1", sleep=lambda s: None,
                              settings=LiquidationSettings(deadline_seconds=5.0, base_delay=0.0, max_delay=0.0))
    assert not outcome.flat and outcome.remaining == [position]
    assert outcome.business_errors
    assert all("hedge_mode_unsupported" in e and "One-way Mode" in e for e in outcome.business_errors)
    # One mode read (cached for every attempt), and no order was sent.
    assert wire.paths() == ["GET /fapi/v1/positionSide/dual"]
