"""The hedge unwind's rerun on Bybit: `unwind_hedge_orders` with a `CcxtVenueClient` around the unmodified ccxt
`bybit` class (only its HTTP layer replaced), now that the client reads Bybit's order history.

An earlier attempt noted the unwind `sending` and its send ended ambiguously (it died before the outcome); Bybit
does not find the unwind by its orderLinkId. Covered:

* the history (open orders + `GET /v5/order/history`) shows the leg's own filled order and not the unwind: it never
  arrived, so it is noted `not_placed` and sent exactly once (one `POST /v5/order/create`, reduce-only, the unwind's
  orderLinkId) -- before, Bybit had no history on the client and this escalated;
* the unwind is in the history (filled): reported from it, nothing sent;
* the history is a full page with no cursor to go on (not provably whole): nothing is sent and the compensation
  fails with `UnwindOutcomeUnknown` naming the order.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from arb_orchestration.defs.hedging import steps as hedge_steps
from arb_orchestration.defs.hedging.legs import leg_client_order_id, unwind_client_order_id
from arb_orchestration.defs.hedging.steps import PLAN, UnwindOutcomeUnknown, unwind_hedge_orders
from arb_orchestration_tests.unit.test_ccxt_order_history_bybit_hyperliquid import BYBIT_SYMBOL, OK, BybitVenue, bybit_row
from arb_orchestration_tests.unit.test_ccxt_venue_conformance import _client, _market, _real
from arb_orchestration_tests.unit.test_hedge_unwind_rerun_ccxt import Ctx as _Ctx
from arb_orchestration_tests.unit.test_hedge_unwind_rerun_ccxt import Exchange as _Exchange

KEY = "step-key-place-hedge-bybit"
LEG = {"leg": 0, "venue": "bybit", "symbol": BYBIT_SYMBOL, "side": "sell", "amount": 0.667, "reduce_only": False}


@pytest.fixture(autouse=True)
def _no_grace(monkeypatch):
    monkeypatch.setattr(hedge_steps, "UNWIND_ABSENT_GRACE_SECONDS", 0.0)


class Bybit(BybitVenue):
    """The order lists of BybitVenue plus order entry (a market order fills at once) and the position list."""

    def __call__(self, method, path, query, body):
        if path.endswith("/v5/order/create"):
            assert body["orderLinkId"] == unwind_client_order_id(KEY, LEG) and body["reduceOnly"] is True
            assert (body["side"], body["orderType"], body["category"]) == ("Buy", "Market", "linear")
            self.closed_rows.append(bybit_row("12", body["orderLinkId"], "buy", body["qty"], ago_s=0, reduce_only=True))
            self.forget_unwind = False  # this send's own order is found again
            return {**OK, "result": {"orderId": "12", "orderLinkId": body["orderLinkId"]}}
        if path.endswith("/v5/position/list"):
            row = {"positionIdx": 0, "symbol": "BTCUSDT", "side": "Sell", "size": "0.667", "avgPrice": "60000",
                   "positionValue": "40020", "leverage": "10", "markPrice": "60000", "positionStatus": "Normal",
                   "tradeMode": 0, "createdTime": "1700000000000", "updatedTime": "1700000000000"}
            return {**OK, "result": {"category": "linear", "list": [row], "nextPageCursor": ""}}
        return super().__call__(method, path, query, body)


def _bybit(closed: list[dict], *, cursorless_full_page: bool = False):
    venue = Bybit([], closed, cursorless_full_page=cursorless_full_page)
    plain = venue.page
    ucid = unwind_client_order_id(KEY, LEG)
    # The lookup by orderLinkId misses the earlier attempt's unwind (Bybit keeps closed orders on the realtime list
    # only for a while): only the full history can say what became of it. A new send is found again.
    venue.forget_unwind = True
    venue.page = lambda rows, query: plain([] if venue.forget_unwind and query.get("orderLinkId") == ucid else rows, query)
    exchange, wire = _real("bybit", _market("BTCUSDT", BYBIT_SYMBOL), venue,
                           options={"enableUnifiedAccount": True, "enableUnifiedMargin": False})
    sending = {"unwind": "sending", "leg": 0, "client_order_id": ucid, "venue": "bybit", "symbol": BYBIT_SYMBOL,
               "side": "buy", "amount": 0.667, "sent_at": time.time() - 300}  # (Bybit's history may lag 120 s)
    return _client("bybit", exchange), wire, [sending]


def _leg_row() -> dict[str, Any]:
    return bybit_row("11", leg_client_order_id(KEY, LEG), "sell", "0.667", ago_s=600)


def test_bybit_an_unwind_the_history_shows_never_arrived_is_sent_once():
    client, wire, notes = _bybit([_leg_row()])
    ctx = _Ctx(notes, leg=LEG, key=KEY)

    result = unwind_hedge_orders(ctx, _Exchange(client, "bybit"))

    creates = wire.sent("POST", "/v5/order/create")
    assert len(creates) == 1 and creates[0][1]["orderLinkId"] == unwind_client_order_id(KEY, LEG)
    assert [n["unwind"] for n in ctx.notes] == ["not_placed", "sending", "placed", "filled"]
    assert "leg's own earlier order" in ctx.notes[0]["resolved"]
    assert [(r["order_id"], r["amount"]) for r in result["unwound"]] == [("12", pytest.approx(0.667))]
    assert wire.sent("GET", "/v5/order/history"), "the history was asked"


def test_bybit_an_unwind_found_in_the_history_is_reported_not_resent():
    ucid = unwind_client_order_id(KEY, LEG)
    client, wire, notes = _bybit([_leg_row(), bybit_row("12", ucid, "buy", "0.667", ago_s=50, reduce_only=True)])
    ctx = _Ctx(notes, leg=LEG, key=KEY)

    result = unwind_hedge_orders(ctx, _Exchange(client, "bybit"))

    assert wire.sent("POST", "/v5/order/create") == []
    assert [(n["unwind"], n["order_id"], n["status"], n["resolved"]) for n in ctx.notes] == [
        ("filled", "12", "closed", "in the order history")]
    assert [(r["order_id"], r["amount"]) for r in result["unwound"]] == [("12", pytest.approx(0.667))]


def test_bybit_an_unwind_is_not_resent_when_the_history_cannot_be_shown_whole():
    others = [bybit_row(str(100 + i), f"c{i:031d}", "buy", "0.001", ago_s=100 + i) for i in range(50)]
    client, wire, notes = _bybit(others + [_leg_row()], cursorless_full_page=True)
    ctx = _Ctx(notes, leg=LEG, key=KEY)

    with pytest.raises(UnwindOutcomeUnknown) as failed:
        unwind_hedge_orders(ctx, _Exchange(client, "bybit"))

    assert unwind_client_order_id(KEY, LEG) in str(failed.value)
    assert wire.sent("POST", "/v5/order/create") == [] and ctx.notes == []
