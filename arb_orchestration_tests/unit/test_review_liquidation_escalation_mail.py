"""Review: when `liquidate` cannot get flat, the step fails and `notify_risk_team` never runs: the only mail
the risk team gets is the saga's failure/escalation alert, built from the step's error text. That text said
"okx (1 position(s), 0 order(s); <last error>)": not what was closed on the other venues, at what prices,
nor which positions were left open. Real SQLite instance, the job's hook, fake venues and mailer."""

from __future__ import annotations

from arb_orchestration_tests.unit.test_stop_loss_job import FakeExchange, FakeSmtp, _run, _venues, instance  # noqa: F401


def test_the_escalation_mail_says_what_was_closed_at_what_price_and_what_is_left(instance):  # noqa: F811
    venues = _venues()
    venues[1].refuse_orders = True  # okx refuses to close its ETH short
    smtp = FakeSmtp()
    result = _run(instance, FakeExchange(venues), smtp)
    assert not result.success
    [(subject, body)] = [(s, b) for s, b in smtp.sent if "ESCALATED" in s]
    assert "closed: sell 1.5 BTC/USDT:USDT @ avg 60,000.00" in body, body  # binance, flattened
    assert "closed: sell 50 SOL/USDT:USDT @ avg 150.00" in body, body  # bybit, flattened
    assert "LEFT OPEN: short 10 ETH/USDT:USDT" in body, body  # okx, refused
