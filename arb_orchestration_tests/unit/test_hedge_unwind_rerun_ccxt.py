"""The hedge unwind's rerun on a real-venue client: `unwind_hedge_orders` with a `CcxtVenueClient` (the unmodified
ccxt `binanceusdm` class, only its HTTP layer replaced) whose order history now answers.

An earlier attempt noted the unwind `sending` and died before its outcome; Binance no longer finds the unwind by
its client order id. Covered:

* the history (`GET /fapi/v1/allOrders`) shows the leg's own order and not the unwind: it never arrived, so it is
  noted `not_placed` and sent exactly once (one `POST /fapi/v1/order`, reduce-only, the unwind's client order id);
* the history does not reach back to the leg (placed before the lookback window): nothing is sent and the
  compensation fails with `UnwindOutcomeUnknown` naming the order.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ccxt
import pytest

from arb_orchestration.defs.hedging import steps as hedge_steps
from arb_orchestration.defs.hedging.legs import leg_client_order_id, unwind_client_order_id
from arb_orchestration.defs.hedging.steps import PLAN, UnwindOutcomeUnknown, unwind_hedge_orders
from arb_orchestration_tests.unit.test_ccxt_order_history import _binance_row
from arb_orchestration_tests.unit.test_ccxt_withdraw_wallet import SYMBOL, Venue, _client, _market, _real

KEY = "step-key-place-hedge"
LEG = {"leg": 0, "venue": "binanceusdm", "symbol": SYMBOL, "side": "sell", "amount": 0.667, "reduce_only": False}


@pytest.fixture(autouse=True)
def _no_grace(monkeypatch):
    monkeypatch.setattr(hedge_steps, "UNWIND_ABSENT_GRACE_SECONDS", 0.0)


class Ctx:
    """What `unwind_hedge_orders` reads of a CompensationContext, with `note` kept in memory."""

    def __init__(self, notes: list[dict[str, Any]], *, leg: dict[str, Any] = LEG, key: str = KEY):
        self.idempotency_key = key
        self.results = {PLAN: {"legs": [leg]}}
        self.progress: list[dict[str, Any]] = []
        self.compensation_progress = list(notes)
        self.notes: list[dict[str, Any]] = []
        self.log = logging.getLogger("test.hedge_unwind_rerun_ccxt")

    def note(self, **fields: Any) -> None:
        self.notes.append(fields)


class Exchange:
    """One venue's client, as `ExchangeResource.venue` hands it out (any other venue name is a test error)."""

    def __init__(self, client, venue: str = "binanceusdm"):
        self.client = client
        self.name = venue

    def venue(self, name: str):
        assert name == self.name
        return self.client


def _binance_venue(leg_ago_s: float) -> tuple[Any, Venue, list[dict]]:
    """Binance holding the leg's filled order (placed `leg_ago_s` ago), forgetting nothing but the unwind."""
    leg_cid, ucid = leg_client_order_id(KEY, LEG), unwind_client_order_id(KEY, LEG)
    rows = [_binance_row(11, leg_cid, "sell", "0.667", ago_s=leg_ago_s)]
    venue = Venue(0.0, 0.0)

    def answer(method, path, p):
        if path.endswith("/fapi/v1/allOrders"):
            start, end = int(p.get("startTime", 0)), int(p.get("endTime", 2**62))
            return [r for r in rows if start <= r["time"] <= end][: int(p.get("limit", 500))]
        if path.endswith("/fapi/v1/positionSide/dual"):
            return {"dualSidePosition": False}
        if path.endswith("/fapi/v1/order") and method == "GET":
            cid = p.get("origClientOrderId")
            found = next((r for r in rows if r["clientOrderId"] == cid), None)
            if found is None:
                raise ccxt.OrderNotFound('binanceusdm {"code":-2013,"msg":"Order does not exist."}')
            return found
        if path.endswith("/fapi/v1/order") and method == "POST":
            assert p["newClientOrderId"] == ucid and p["reduceOnly"] == "true" and p["side"] == "BUY"
            row = _binance_row(12, ucid, "buy", p["quantity"], ago_s=0, reduce_only=True)
            rows.append(row)
            return row
        if path.endswith("/fapi/v1/algoOrder"):
            raise ccxt.OrderNotFound('binanceusdm {"code":-2013,"msg":"Order does not exist."}')
        raise AssertionError(f"unexpected {method} {path}")

    market = _market("BTCUSDT", info={"orderTypes": ["LIMIT", "MARKET", "STOP_MARKET"]})
    client = _client("binanceusdm", _real("binanceusdm", market, venue, answer))
    sending = {"unwind": "sending", "leg": 0, "client_order_id": ucid, "venue": "binanceusdm", "symbol": SYMBOL,
               "side": "buy", "amount": 0.667, "sent_at": time.time() - 60}
    return client, venue, [sending]


def test_an_unwind_the_ccxt_history_shows_never_arrived_is_sent_once():
    client, venue, notes = _binance_venue(leg_ago_s=600)
    ctx = Ctx(notes)

    result = unwind_hedge_orders(ctx, Exchange(client))

    posts = venue.sent("POST", "/fapi/v1/order")
    assert len(posts) == 1 and posts[0][1]["newClientOrderId"] == unwind_client_order_id(KEY, LEG)
    assert [n["unwind"] for n in ctx.notes] == ["not_placed", "sending", "placed", "filled"]
    assert "leg's own earlier order" in ctx.notes[0]["resolved"]
    assert [(r["order_id"], r["amount"]) for r in result["unwound"]] == [("12", pytest.approx(0.667))]


def test_an_unwind_is_not_resent_when_the_ccxt_history_does_not_reach_back_to_the_leg():
    client, venue, notes = _binance_venue(leg_ago_s=4 * 24 * 3600)  # before the 3-day lookback
    ctx = Ctx(notes)

    with pytest.raises(UnwindOutcomeUnknown) as failed:
        unwind_hedge_orders(ctx, Exchange(client))

    assert unwind_client_order_id(KEY, LEG) in str(failed.value)
    assert venue.sent("POST", "/fapi/v1/order") == [] and ctx.notes == []
    assert venue.sent("GET", "/fapi/v1/allOrders"), "the history was asked"
