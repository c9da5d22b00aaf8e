"""A protective stop stays on the right side of the mark when liquidation is closer than the buffer.

Found by the hedging-math review: a long at mark 60,000 with liquidation at 59,800 and a 0.5 %
buffer got a sell stop at 60,099, above the mark (it fires at once, or the venue refuses it).
"""

from __future__ import annotations

import pytest

from arb_orchestration.domain.hedging import protective_stop
from arb_orchestration.domain.models import Position


def _position(side: str, mark: float, liq: float) -> Position:
    return Position(venue="alpha", symbol="BTC/USDT:USDT", side=side, size=1.0, entry_price=mark,
                    mark_price=mark, liquidation_price=liq)


@pytest.mark.parametrize("side, mark, liq", [("long", 60_000.0, 59_800.0), ("short", 60_000.0, 60_200.0)])
def test_the_stop_lies_between_the_mark_and_liquidation(side, mark, liq):
    stop = protective_stop(_position(side, mark, liq), 5.0, liquidation_buffer_pct=0.5)
    low, high = sorted((mark, liq))
    assert low < stop.stop_price < high
    assert stop.stop_price == pytest.approx(60_000.0 + (liq - mark) / 2)  # 59,900 / 60,100: halfway, as the reason says
    assert stop.side == ("sell" if side == "long" else "buy") and stop.reduce_only
    assert "halfway to liquidation" in stop.reason


def test_a_stop_with_room_to_the_buffer_is_only_clamped():
    stop = protective_stop(_position("long", 60_000.0, 58_000.0), 5.0, liquidation_buffer_pct=0.5)
    assert stop.stop_price == pytest.approx(58_000.0 * 1.005) and "moved inside liquidation" in stop.reason
