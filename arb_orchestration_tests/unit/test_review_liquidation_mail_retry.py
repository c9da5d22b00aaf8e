"""Review: the risk mail must say what was closed and at what prices even when `liquidate` needed an op retry.
The first attempt closes one venue and runs out of time on another (StopLossIncomplete); the retry finds the
first venue already flat and sends nothing there. The report used to cover only the last attempt, so the mail
said "flat, 0 round(s)" for the venue whose position the stop-loss had actually sold, with no fill or price.
Real SQLite instance, the job's own retry policy, fake venues and mailer."""

from __future__ import annotations

import time

from arb_orchestration_tests.unit.test_stop_loss_job import FakeExchange, FakeSmtp, _run, instance  # noqa: F401
from arb_orchestration.resources.errors import TransientError
from arb_orchestration_tests.unit.test_stop_loss_liquidator import FakeVenue


def test_fills_of_an_earlier_attempt_are_in_the_risk_mail(instance):  # noqa: F811
    alpha = FakeVenue("alpha", positions=[("BTC/USDT:USDT", "long", 1.5)], mark=60_000.0)
    beta = FakeVenue("beta", positions=[("ETH/USDT:USDT", "short", 10.0)], mark=3_000.0)
    unreachable_until = time.monotonic() + 0.8

    def down():
        if time.monotonic() < unreachable_until:
            raise TransientError("beta: 503")

    beta.hooks["fetch_positions"] = down
    smtp = FakeSmtp()
    result = _run(instance, FakeExchange([alpha, beta]), smtp, config={"deadline_seconds": 0.5})
    assert result.success
    assert alpha.positions[("BTC/USDT:USDT", "long")] == 0 and beta.positions[("ETH/USDT:USDT", "short")] == 0
    assert alpha.order_count() == 1  # closed in the first attempt, nothing sent in the retry
    [(subject, body)] = smtp.sent
    assert subject.startswith("[stop-loss] FLAT on 2 venue(s)")
    assert "closed: sell 1.5 BTC/USDT:USDT @ avg 60,000.00" in body, body
    assert "closed: buy 10 ETH/USDT:USDT @ avg 3,000.00" in body, body


def test_earlier_attempts_merge_once_and_the_latest_view_of_an_order_wins():
    from arb_orchestration.domain.liquidation import LiquidationReport, VenueOutcome, with_earlier_attempts
    from arb_orchestration.domain.models import Order

    def order(filled, status):
        return Order(id="a-1", venue="alpha", symbol="BTC/USDT:USDT", type="market", side="sell", amount=1.5,
                     filled=filled, average=60_000.0, status=status, reduce_only=True)

    first = LiquidationReport(saga_id="s", dry_run=False, venues=[
        VenueOutcome(venue="alpha", flat=False, orders=[order(0.5, "open")], rounds=1, canceled_orders=2)])
    second = LiquidationReport(saga_id="s", dry_run=False, venues=[
        VenueOutcome(venue="alpha", flat=False, orders=[order(1.5, "closed")], rounds=2)])
    third = LiquidationReport(saga_id="s", dry_run=False, venues=[VenueOutcome(venue="alpha", flat=True)])
    [alpha] = with_earlier_attempts(third, [first, second]).venues
    assert [c.amount for c in alpha.closed] == [1.5]
    assert alpha.rounds == 3 and alpha.canceled_orders == 2 and alpha.flat
