"""Review of the rebalance saga's execution: failure messages show money amounts in full.

Every guardrail, funds and verification message printed amounts with `:g` (6 significant digits): a leg of
250000.4 USDT against a 250000 limit read "moves 250000 USDT …, above the per-transfer limit 250000", and a
daily total of 1234567.89 read "1.23457e+06". The person who gets the failure cannot tell what broke. Amounts
are now printed in full at the asset's precision.
"""

from __future__ import annotations

from arb_orchestration.domain.rebalance import (
    Guardrails,
    PlannedTransfer,
    apply_min_benefit,
    check_guardrails,
    format_amount,
)


def _leg(amount, asset="USDT", fee=1.0):
    return PlannedTransfer(0, f"a->b:{asset}:TRC20", "withdrawal", "a", "b", asset, "TRC20", amount, fee, amount - fee)


def _guardrails(**kw):
    base = dict(max_transfer={"USDT": 250_000.0}, max_daily={"USDT": 1_000_000.0}, allowed_destinations=("*:TRC20",))
    return Guardrails(**{**base, **kw})


def test_amounts_print_at_the_assets_precision():
    assert format_amount("USDT", 250_000.4) == "250000.4"
    assert format_amount("USDT", 1_234_567.891234) == "1234567.891234"
    assert format_amount("EUR", 3_000.0) == "3000"
    assert format_amount("BTC", 0.12345678) == "0.12345678"


def test_the_per_transfer_breach_shows_an_amount_that_differs_from_the_limit():
    [breach] = check_guardrails([_leg(250_000.4)], _guardrails())
    assert "moves 250000.4 USDT" in breach.message and "per-transfer limit 250000" in breach.message


def test_the_daily_breach_shows_full_amounts():
    [breach] = check_guardrails([_leg(200_000.0)], _guardrails(), used_today={"USDT": 1_034_567.89})
    assert "1034567.89 already moved or reserved today + 200000 planned = 1234567.89" in breach.message
    assert "e+06" not in breach.message


def test_the_min_benefit_reason_shows_full_amounts():
    _, skipped = apply_min_benefit([_leg(2_000_000.5, fee=30_000.25)], {"USDT": 1_234_567.5},
                                   _guardrails(max_fee_ratio=0.01))
    assert "fees 30000.25 USDT" in skipped["USDT"] and "1234567.5 deficit" in skipped["USDT"]
