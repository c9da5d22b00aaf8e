"""Review: a retried stop-loss reuses the client order ids of the attempt before it (same saga: same base
key, attempts start at 0 again). A venue that refuses a reused id as a duplicate and can no longer find the
order it belonged to (Bybit 110072 / OKX 51016 once the order has aged out of the lookup) answers a
`BusinessError(code="duplicate_client_order_id")`: that id is spent, the position is not refused. Counting it
as a refusal gave the position up after three such ids and escalated it as "refused by the venue" while it
was still open."""

from __future__ import annotations

from arb_orchestration.defs.stop_loss.liquidator import LiquidationSettings, liquidate_all
from arb_orchestration.domain.liquidation import close_order_id
from arb_orchestration.resources.errors import BusinessError
from arb_orchestration_tests.unit.test_stop_loss_liquidator import FakeVenue

FAST = LiquidationSettings(deadline_seconds=5.0, base_delay=0.001, max_delay=0.01)
BTC = "BTC/USDT:USDT"


class ForgetfulVenue(FakeVenue):
    """Remembers client order ids it has seen but not the orders: a reused id is refused as a duplicate."""

    def __init__(self, *a, spent=(), **kw):
        super().__init__(*a, **kw)
        self.spent = set(spent)

    def create_order(self, symbol, type, side, amount, price=None, *, client_order_id, reduce_only=False,
                     stop_price=None):
        if client_order_id in self.spent:
            self._enter("create_order")
            raise BusinessError(f"{self.name}: OrderLinkedID is duplicate", code="duplicate_client_order_id")
        self.spent.add(client_order_id)
        return super().create_order(symbol, type, side, amount, price, client_order_id=client_order_id,
                                    reduce_only=reduce_only, stop_price=stop_price)


def test_ids_spent_by_an_earlier_attempt_are_skipped_not_counted_as_refusals():
    # The earlier attempt of the same saga used attempts 0..4 on this position (partial fills), then ran out
    # of time; the venue has forgotten those orders but still refuses their ids.
    spent = {close_order_id("key-s", "bybit", BTC, "long", n) for n in range(5)}
    venue = ForgetfulVenue("bybit", positions=[(BTC, "long", 2.0)], mark=60_000.0, spent=spent)
    report = liquidate_all(["bybit"], {"bybit": venue}.__getitem__, saga_id="s", base_key="key-s", settings=FAST)
    [outcome] = report.venues
    assert venue.positions[(BTC, "long")] == 0.0, outcome.errors
    assert outcome.flat and report.flat
    assert [c.amount for c in outcome.closed] == [2.0]
    assert not report.only_business_errors  # it must never be escalated as "refused"


def test_a_real_refusal_is_still_given_up_on_after_three_tries():
    venue = ForgetfulVenue("bybit", positions=[(BTC, "long", 2.0)], mark=60_000.0)
    venue.refuse_orders = True
    report = liquidate_all(["bybit"], {"bybit": venue}.__getitem__, saga_id="s", base_key="key-s", settings=FAST)
    [outcome] = report.venues
    assert not outcome.flat and report.only_business_errors
    assert len(outcome.business_errors) == 3
