"""Review evidence (no bug found): the stop-loss through unmodified ccxt (`binanceusdm`) against the
simulator's Binance-shaped API mails the fills the venue actually made: per symbol, the closed amount and
the volume-weighted average of the venue's own fill prices (slippage included, not the mark), and every
close is a reduce-only market order in the position's opposite side. Real HTTP server, real SMTP sink."""

from __future__ import annotations

import pytest

from arb_orchestration_tests.integration.test_ccxt_binance_sim import (  # noqa: F401  (fixtures)
    _run_stop_loss,
    binance,
    binance_servers,
    dagster_instance,
)

pytestmark = pytest.mark.integration


def test_the_mail_quotes_the_venues_own_fill_prices(world, binance, dagster_instance, monkeypatch):  # noqa: F811
    state = world.exchange.state
    before = {p.symbol: (p.side, p.size) for p in state.positions("binance")}
    assert before
    result = _run_stop_loss(dagster_instance, world, binance, monkeypatch, venues=["binance"], reason="price drill")
    assert result.success
    assert state.positions("binance") == []
    [mail] = world.smtp.wait_for(1, timeout=10)
    for symbol, (side, size) in before.items():
        fills = [o for o in state.orders("binance") if o.symbol == symbol and o.filled > 0]
        assert fills and all(o.reduce_only and o.type == "market" for o in fills)
        close = "sell" if side == "long" else "buy"
        assert all(o.side == close for o in fills)
        amount = sum(o.filled for o in fills)
        assert amount == pytest.approx(size)
        vwap = sum(o.filled * o.average for o in fills) / amount
        assert f"closed: {close} {amount:g} {symbol} @ avg {vwap:,.2f}" in mail.body, mail.body
