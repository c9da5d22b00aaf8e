"""Review: venues whose order placement answers only an acknowledgement (OKX `ordId`/`sCode`, Bybit
`orderId`/`orderLinkId`, Binance with newOrderRespType=ACK) give ccxt an order with no status, no fill and
no average: `_to_order` makes it "open", filled 0. The market close fills a moment later and the next fresh
read is flat, so the stop-loss stopped there with only the acknowledgement on record: the risk mail listed
nothing closed on that venue and no price. The fills must be read back before reporting."""

from __future__ import annotations

from arb_orchestration.defs.stop_loss.liquidator import LiquidationSettings, liquidate_all
from arb_orchestration.domain.liquidation import LiquidationReport, render_report
from arb_orchestration_tests.unit.test_stop_loss_liquidator import FakeVenue

FAST = LiquidationSettings(deadline_seconds=5.0, base_delay=0.001, max_delay=0.01)
BTC = "BTC/USDT:USDT"


class AckVenue(FakeVenue):
    """Fills at mark like FakeVenue, but create_order answers only an acknowledgement."""

    def create_order(self, symbol, type, side, amount, price=None, *, client_order_id, reduce_only=False,
                     stop_price=None):
        order = super().create_order(symbol, type, side, amount, price, client_order_id=client_order_id,
                                     reduce_only=reduce_only, stop_price=stop_price)
        return order.model_copy(update={"status": "open", "filled": 0.0, "average": None})

    def fetch_order_by_client_id(self, client_order_id, symbol=None):
        self._enter("fetch_order_by_client_id")
        return self.by_cid.get(client_order_id)


def test_fills_behind_an_acknowledgement_are_read_back_for_the_mail():
    venue = AckVenue("okx", positions=[(BTC, "long", 2.0)], mark=60_000.0)
    report = liquidate_all(["okx"], {"okx": venue}.__getitem__, saga_id="s", base_key="key-s", settings=FAST)
    assert venue.positions[(BTC, "long")] == 0.0 and report.flat
    assert venue.order_count() == 1
    [outcome] = report.venues
    assert [(c.side, c.amount, c.average_price) for c in outcome.closed] == [("sell", 2.0, 60_000.0)]
    _, body = render_report(LiquidationReport.model_validate(report.model_dump(mode="json")))
    assert "closed: sell 2 BTC/USDT:USDT @ avg 60,000.00" in body, body
