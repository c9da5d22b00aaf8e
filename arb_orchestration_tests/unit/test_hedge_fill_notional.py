"""A hedge fill the venue reports without an average price is never counted as 0 USD.

`place_hedge_orders` reports `filled_notional_usd`; a fill without `average`
used to add 0, understating what the hedge moved. It is now priced by the
order's own price, else the price the leg was planned at (its notional over its
amount: the reference mark), else reported as unknown.
"""

from __future__ import annotations

import pytest

from arb_orchestration.defs.hedging.legs import fill_notional_usd
from arb_orchestration.defs.hedging.steps import _fill_row, _report_fills
from arb_orchestration.domain.models import Order

LEG = {"leg": 0, "venue": "alpha", "symbol": "BTC/USDT:USDT", "side": "sell", "amount": 0.5,
       "reduce_only": False, "notional_usd": 0.5 * 60_000.0}


def _order(*, average=None, price=None, filled=0.5):
    return Order(id="o1", client_order_id="c1", venue="alpha", symbol="BTC/USDT:USDT", type="market", side="sell",
                 amount=0.5, price=price, filled=filled, average=average, status="closed")


class _Journal:
    def __init__(self):
        self.reports = []

    def report(self, step, message, metadata):
        self.reports.append((step, message, metadata))


def test_priced_by_average_then_order_price_then_planned_price():
    assert fill_notional_usd(_order(average=61_000.0), LEG) == (pytest.approx(30_500.0), "average")
    assert fill_notional_usd(_order(price=62_000.0), LEG) == (pytest.approx(31_000.0), "order_price")
    assert fill_notional_usd(_order(), LEG) == (pytest.approx(30_000.0), "planned_price")
    assert fill_notional_usd(_order(), {**LEG, "notional_usd": None}) == (None, "unknown")


def test_fill_without_average_is_not_zero_in_the_step_report():
    journal = _Journal()
    _report_fills(journal, "place_hedge_orders", [_fill_row(LEG, "c1", _order())])
    metadata = journal.reports[-1][2]
    assert metadata["filled_notional_usd"] == pytest.approx(30_000.0)


def test_fill_without_any_price_is_reported_unknown_not_zero():
    journal = _Journal()
    priced = _fill_row(LEG, "c1", _order(average=60_000.0))
    unpriced = _fill_row({**LEG, "leg": 1, "notional_usd": None}, "c2", _order())
    _report_fills(journal, "place_hedge_orders", [priced, unpriced])
    metadata = journal.reports[-1][2]
    assert not isinstance(metadata["filled_notional_usd"], (int, float))
    assert "unknown" in str(metadata["filled_notional_usd"])
    assert metadata["fills_without_price"] == 1
