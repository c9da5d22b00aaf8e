"""`CcxtVenueClient.fetch_orders(symbol, since=None)` on Bybit (linear) and Hyperliquid: the order history the hedge
unwind's rerun looks in before it resends an unwind (docs/ccxt-conformance.md § 8).

The unmodified ccxt exchange classes run; only their HTTP layer (`Exchange.fetch`) is replaced by a fake venue. The
rule under test: a history that cannot be proven whole back to `since` is an empty `IncompleteOrderHistory` (the
unwind then escalates); only a whole one may show an unwind absent (which resends it). Covered:

* Bybit: open orders (`GET /v5/order/realtime`), then closed ones (`GET /v5/order/history`, category linear,
  symbol, startTime/endTime, limit 50), each paged by `nextPageCursor`; a short page ends a read (whole); more
  pages than the bound, or a full page without a cursor, is incomplete; a window older than 7 days is incomplete
  without a request;
* Hyperliquid: open orders, then `historicalOrders` (the last 2000 order states of the account, no paging): fewer
  than 2000 is whole whatever the window; 2000 is incomplete even when the leg is in it; an order met in two states
  counts once, in its latest; other markets and orders older than `since` are left out; a cloid the saga sent with
  a `0x` prefix is shown as the saga's key again (a fresh client never saw it sent);
* the hedge decision (`_find_unwind_order`) per venue: leg without the unwind -> absent (sent once); the unwind in
  the history -> found, with its status; an incomplete history -> not absent (escalates).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from arb_orchestration.defs.hedging import steps as hedge_steps
from arb_orchestration.resources.ccxt_venue import ORDER_HISTORY_MAX_PAGES_BY_EXCHANGE, IncompleteOrderHistory
from arb_orchestration_tests.unit.test_ccxt_venue_conformance import _client, _market, _real

LEG_CID = "a" * 32
UNWIND_CID = "b" * 32
NOW_MS = int(time.time() * 1000)


def _now_ms() -> int:
    """The time a row is built (not the module's import time: a slow suite imports this minutes before it runs the
    test, and rows placed relative to an old 'now' fall out of the test's own `since` window)."""
    return int(time.time() * 1000)
OK = {"retCode": 0, "retMsg": "OK", "retExtInfo": {}, "time": NOW_MS}
BYBIT_SYMBOL = "BTC/USDT:USDT"
HL_SYMBOL = "BTC/USDC:USDC"


@pytest.fixture(autouse=True)
def _no_grace(monkeypatch):
    monkeypatch.setattr(hedge_steps, "UNWIND_ABSENT_GRACE_SECONDS", 0.0)


# ------------------------------------------------------------------------------------------------ Bybit


def bybit_row(order_id: str, cid: str, side: str, qty: str, status: str = "Filled", ago_s: float = 60.0,
              reduce_only: bool = False) -> dict[str, Any]:
    ts = str(_now_ms() - int(ago_s * 1000))
    filled = qty if status == "Filled" else "0"
    return {"symbol": "BTCUSDT", "orderType": "Market", "orderLinkId": cid, "orderId": order_id, "cancelType": "UNKNOWN",
            "avgPrice": "60000" if filled != "0" else "", "stopOrderType": "", "orderStatus": status,
            "createType": "CreateByUser", "cumExecValue": "0", "triggerDirection": 0, "rejectReason": "EC_NoError",
            "price": "0", "createdTime": ts, "updatedTime": ts, "side": side.capitalize(), "triggerPrice": "",
            "cumExecFee": "0", "leavesQty": "0" if status != "New" else qty, "cumExecQty": filled,
            "reduceOnly": reduce_only, "qty": qty, "positionIdx": 0, "timeInForce": "IOC", "closeOnTrigger": False}


class BybitVenue:
    """Bybit's order lists as its v5 API serves them: newest first, `limit` a page, `nextPageCursor` while more
    remain (`cursorless_full_page`: a full page answered without one)."""

    def __init__(self, open_rows: list[dict], closed_rows: list[dict], *, cursorless_full_page: bool = False):
        self.open_rows, self.closed_rows = open_rows, closed_rows
        self.cursorless_full_page = cursorless_full_page

    def page(self, rows: list[dict], query: dict) -> dict:
        if query.get("orderLinkId"):
            rows = [r for r in rows if r["orderLinkId"] == query["orderLinkId"]]
        if query.get("orderId"):
            rows = [r for r in rows if r["orderId"] == query["orderId"]]
        if "symbol" in query:
            rows = [r for r in rows if r["symbol"] == query["symbol"]]
        start, end = int(query.get("startTime", 0)), int(query.get("endTime", 2**62))
        rows = sorted((r for r in rows if start <= int(r["createdTime"]) <= end), key=lambda r: -int(r["createdTime"]))
        cursor = query.get("cursor", "0")
        offset, limit = int(cursor) if cursor.isdigit() else len(rows), int(query.get("limit", 20))
        chunk = rows[offset: offset + limit]
        more = offset + limit < len(rows)
        cursor = str(offset + limit) if more and not self.cursorless_full_page else ""
        return {**OK, "result": {"category": "linear", "list": chunk, "nextPageCursor": cursor}}

    def __call__(self, method, path, query, body):
        if path.endswith("/v5/order/realtime"):
            return self.page(self.open_rows, query)
        if path.endswith("/v5/order/history"):
            return self.page(self.closed_rows, query)
        raise AssertionError(f"unexpected {method} {path}")


def bybit_client(venue):
    exchange, wire = _real("bybit", _market("BTCUSDT", BYBIT_SYMBOL), venue,
                           options={"enableUnifiedAccount": True, "enableUnifiedMargin": False})
    return _client("bybit", exchange), wire


def test_bybit_reads_open_then_closed_orders_since_the_window_and_maps_them():
    client, wire = bybit_client(BybitVenue(
        open_rows=[bybit_row("3", "c" * 32, "buy", "0.005", status="New", ago_s=5)],
        closed_rows=[bybit_row("1", LEG_CID, "sell", "0.667", ago_s=600),
                     bybit_row("2", UNWIND_CID, "buy", "0.667", status="Cancelled", ago_s=30, reduce_only=True),
                     bybit_row("0", "d" * 32, "buy", "1", ago_s=7200)]))  # before the window: not asked for
    since = time.time() - 3600
    orders = client.fetch_orders(BYBIT_SYMBOL, since=since)

    assert [p for p in wire.paths() if "/v5/order/" in p] == ["GET /v5/order/realtime", "GET /v5/order/history"]
    (realtime, _), = wire.sent("GET", "/v5/order/realtime")
    (history, _), = wire.sent("GET", "/v5/order/history")
    assert (realtime["category"], realtime["symbol"], realtime["limit"]) == ("linear", "BTCUSDT", "50")
    assert (history["category"], history["symbol"], history["limit"]) == ("linear", "BTCUSDT", "50")
    assert int(history["startTime"]) == int(since * 1000) and abs(int(history["endTime"]) - time.time() * 1000) < 60_000
    assert [(o.id, o.client_order_id, o.side, o.status, o.amount, o.filled, o.reduce_only) for o in orders] == [
        ("1", LEG_CID, "sell", "closed", pytest.approx(0.667), pytest.approx(0.667), False),
        ("2", UNWIND_CID, "buy", "canceled", pytest.approx(0.667), 0.0, True),
        ("3", "c" * 32, "buy", "open", pytest.approx(0.005), 0.0, False),
    ]


def test_bybit_pages_on_by_cursor_until_a_short_page():
    closed = [bybit_row(str(100 + i), f"c{i:031d}", "buy", "0.001", ago_s=3000 - i) for i in range(120)]
    client, wire = bybit_client(BybitVenue([], closed))
    orders = client.fetch_orders(BYBIT_SYMBOL, since=time.time() - 3600)
    cursors = [q.get("cursor") for q, _b in wire.sent("GET", "/v5/order/history")]
    assert cursors == [None, "50", "100"]
    assert len(orders) == 120 and {o.id for o in orders} == {r["orderId"] for r in closed}


def test_bybit_more_pages_than_the_bound_is_an_empty_incomplete_history_not_its_first_pages():
    bound = ORDER_HISTORY_MAX_PAGES_BY_EXCHANGE["bybit"]
    closed = [bybit_row(str(100 + i), f"c{i:031d}", "sell", "0.001", ago_s=9000 - i) for i in range(50 * bound + 1)]
    closed.append(bybit_row("1", LEG_CID, "sell", "0.667", ago_s=9500))
    client, wire = bybit_client(BybitVenue([], closed))
    orders = client.fetch_orders(BYBIT_SYMBOL, since=time.time() - 10_000)
    assert isinstance(orders, IncompleteOrderHistory) and orders == [] and "pages" in orders.reason
    assert len(wire.sent("GET", "/v5/order/history")) == bound


def test_bybit_a_full_page_without_a_cursor_is_incomplete():
    closed = [bybit_row(str(100 + i), f"c{i:031d}", "buy", "0.001", ago_s=600 + i) for i in range(50)]
    closed.append(bybit_row("1", LEG_CID, "sell", "0.667", ago_s=900))
    client, _wire = bybit_client(BybitVenue([], closed, cursorless_full_page=True))
    orders = client.fetch_orders(BYBIT_SYMBOL, since=time.time() - 3600)
    assert isinstance(orders, IncompleteOrderHistory) and orders == [] and "cursor" in orders.reason


def test_bybit_exactly_one_full_page_then_an_empty_one_is_whole():
    closed = [bybit_row(str(100 + i), f"c{i:031d}", "buy", "0.001", ago_s=600 + i) for i in range(49)]
    closed.append(bybit_row("1", LEG_CID, "sell", "0.667", ago_s=900))
    venue = BybitVenue([], closed)
    venue.page = _with_trailing_cursor(venue.page)  # Bybit may still hand a cursor for an empty last page
    client, wire = bybit_client(venue)
    orders = client.fetch_orders(BYBIT_SYMBOL, since=time.time() - 3600)
    assert not isinstance(orders, IncompleteOrderHistory) and len(orders) == 50
    assert len(wire.sent("GET", "/v5/order/history")) == 2


def _with_trailing_cursor(page):
    def answer(rows, query):
        got = page(rows, query)
        if len(got["result"]["list"]) == int(query.get("limit", 20)):
            got["result"]["nextPageCursor"] = got["result"]["nextPageCursor"] or "end"
        return got
    return answer


def test_bybit_a_window_older_than_seven_days_is_incomplete_without_a_request():
    client, wire = bybit_client(BybitVenue([], [bybit_row("1", LEG_CID, "sell", "0.667")]))
    orders = client.fetch_orders(BYBIT_SYMBOL, since=time.time() - 8 * 24 * 3600)
    assert isinstance(orders, IncompleteOrderHistory) and orders == []
    assert [p for p in wire.paths() if "/v5/order/" in p] == []


def test_bybit_the_unwind_rerun_calls_an_unwind_absent_only_from_a_whole_history():
    venue = BybitVenue([], [bybit_row("1", LEG_CID, "sell", "0.667", ago_s=600)])
    client, _wire = bybit_client(venue)
    sent_at = time.time() - 300  # longer ago than Bybit's history may lag (ORDER_HISTORY_LAG_SECONDS)
    found, how, absent = hedge_steps._find_unwind_order(client, UNWIND_CID, LEG_CID, BYBIT_SYMBOL, sent_at)
    assert (found, absent) == (None, True) and "leg's own earlier order" in how

    # Sent only moments ago: Bybit's history may not show it yet, so its absence proves nothing.
    found, how, absent = hedge_steps._find_unwind_order(client, UNWIND_CID, LEG_CID, BYBIT_SYMBOL, time.time() - 10)
    assert (found, absent) == (None, False) and "may lag up to 120s" in how
    found, how, absent = hedge_steps._find_unwind_order(client, UNWIND_CID, LEG_CID, BYBIT_SYMBOL)
    assert (found, absent) == (None, False), "no sending time: never proven absent on a lagging history"

    venue.closed_rows = [bybit_row(str(100 + i), f"c{i:031d}", "buy", "0.001", ago_s=100 + i) for i in range(50)] \
        + venue.closed_rows
    venue.cursorless_full_page = True  # now the history cannot be shown whole: the leg is no proof
    found, how, absent = hedge_steps._find_unwind_order(client, UNWIND_CID, LEG_CID, BYBIT_SYMBOL, sent_at)
    assert (found, absent) == (None, False) and "does not reach back" in how


def test_bybit_the_unwind_rerun_reports_the_unwind_found_in_the_history_with_its_status():
    # The lookup by orderLinkId misses it (the fake forgets ids on the lookup, as a lagging venue would)...
    venue = BybitVenue([], [bybit_row("1", LEG_CID, "sell", "0.667", ago_s=600),
                            bybit_row("2", UNWIND_CID, "buy", "0.667", ago_s=30, reduce_only=True)])
    plain = venue.page
    venue.page = lambda rows, query: plain([] if query.get("orderLinkId") else rows, query)
    client, _wire = bybit_client(venue)
    found, how, absent = hedge_steps._find_unwind_order(client, UNWIND_CID, LEG_CID, BYBIT_SYMBOL)
    # ...the history has it: reported, never resent.
    assert found is not None and (found.id, found.status, found.filled, absent) == ("2", "closed", pytest.approx(0.667), False)
    assert how == "in the order history"


# ------------------------------------------------------------------------------------------------ Hyperliquid


def hl_state(oid: int, cid: str | None, side: str, size: str, status: str = "filled", ago_s: float = 60.0,
             coin: str = "BTC", reduce_only: bool = False, status_after_s: float = 0.0) -> dict[str, Any]:
    ts = _now_ms() - int(ago_s * 1000)
    return {"order": {"coin": coin, "side": "B" if side == "buy" else "A", "limitPx": "60000", "oid": oid,
                      "sz": "0.0" if status == "filled" else size, "origSz": size, "timestamp": ts, "cloid": cid,
                      "reduceOnly": reduce_only, "orderType": "Market", "tif": "FrontendMarket", "isTrigger": False,
                      "triggerPx": "0.0", "triggerCondition": "N/A", "children": [], "isPositionTpsl": False},
            "status": status, "statusTimestamp": ts + int(status_after_s * 1000)}


class HyperliquidVenue:
    def __init__(self, states: list[dict], open_rows: list[dict] | None = None):
        self.states, self.open_rows = states, open_rows or []

    def __call__(self, method, path, query, body):
        if body.get("type") == "historicalOrders":
            return self.states[:2000]  # the venue's cap, newest first in reality; order does not matter here
        if body.get("type") == "frontendOpenOrders":
            return self.open_rows
        if body.get("type") == "orderStatus":  # the lookup by cloid: this fake forgets every id there
            return {"status": "unknownOid"}
        raise AssertionError(f"unexpected {method} {path} {body}")


def hl_client(venue):
    market = _market("BTC", HL_SYMBOL, baseId=0, precision={"amount": 0.00001, "price": 1}, info={"szDecimals": 5})
    exchange, wire = _real("hyperliquid", market, venue, options={"approvedBuilderFee": True, "builderFee": False})
    return _client("hyperliquid", exchange), wire


def test_hyperliquid_a_history_below_the_cap_is_whole_and_maps_cloids_back_to_the_saga_keys():
    resting = {"coin": "BTC", "side": "B", "limitPx": "50000", "sz": "0.01", "oid": 9, "timestamp": _now_ms() - 5000,
               "origSz": "0.01", "cloid": "0x" + "c" * 32, "reduceOnly": False, "orderType": "Limit"}
    client, wire = hl_client(HyperliquidVenue(
        [hl_state(1, "0x" + LEG_CID, "sell", "0.667", ago_s=600),
         hl_state(2, "0x" + UNWIND_CID, "buy", "0.667", status="open", ago_s=30, reduce_only=True),
         hl_state(2, "0x" + UNWIND_CID, "buy", "0.667", status="canceled", ago_s=30, reduce_only=True, status_after_s=1),
         hl_state(3, None, "buy", "2", ago_s=20, coin="ETH"),            # another market
         hl_state(4, "0x" + "d" * 32, "buy", "1", ago_s=7200)],          # before `since`
        open_rows=[resting]))
    orders = client.fetch_orders(HL_SYMBOL, since=time.time() - 3600)

    bodies = [b for _q, b in wire.sent("POST", "/info")]
    assert [b["type"] for b in bodies] == ["frontendOpenOrders", "historicalOrders"]
    assert bodies[1] == {"type": "historicalOrders", "user": "0x" + "1" * 40}
    assert [(o.id, o.client_order_id, o.side, o.status, o.amount, o.filled, o.reduce_only) for o in orders] == [
        ("1", LEG_CID, "sell", "closed", pytest.approx(0.667), pytest.approx(0.667), False),
        ("2", UNWIND_CID, "buy", "canceled", pytest.approx(0.667), 0.0, True),
        ("9", "c" * 32, "buy", "open", pytest.approx(0.01), 0.0, False),
    ]


def test_hyperliquid_the_cap_reached_is_an_empty_incomplete_history_even_with_the_leg_in_it():
    states = [hl_state(1, "0x" + LEG_CID, "sell", "0.667", ago_s=600)]
    states += [hl_state(100 + i, None, "buy", "0.001", ago_s=500 - i / 10, coin="ETH") for i in range(1999)]
    client, _wire = hl_client(HyperliquidVenue(states))
    orders = client.fetch_orders(HL_SYMBOL, since=time.time() - 3600)
    assert isinstance(orders, IncompleteOrderHistory) and orders == [] and "2000" in orders.reason


def test_hyperliquid_one_below_the_cap_is_whole():
    states = [hl_state(1, "0x" + LEG_CID, "sell", "0.667", ago_s=600)]
    states += [hl_state(100 + i, None, "buy", "0.001", ago_s=500 - i / 10, coin="ETH") for i in range(1998)]
    client, _wire = hl_client(HyperliquidVenue(states))
    orders = client.fetch_orders(HL_SYMBOL, since=time.time() - 3600)
    assert not isinstance(orders, IncompleteOrderHistory)
    assert [(o.id, o.client_order_id) for o in orders] == [("1", LEG_CID)]


def test_hyperliquid_the_unwind_rerun_decides_only_from_a_whole_history():
    venue = HyperliquidVenue([hl_state(1, "0x" + LEG_CID, "sell", "0.667", ago_s=600)])
    client, _wire = hl_client(venue)
    found, how, absent = hedge_steps._find_unwind_order(client, UNWIND_CID, LEG_CID, HL_SYMBOL)
    assert (found, absent) == (None, True) and "leg's own earlier order" in how

    venue.states = venue.states + [hl_state(2, "0x" + UNWIND_CID, "buy", "0.667", ago_s=30, reduce_only=True)]
    found, how, absent = hedge_steps._find_unwind_order(client, UNWIND_CID, LEG_CID, HL_SYMBOL)
    assert found is not None and (found.id, found.status, found.filled, absent) == ("2", "closed", pytest.approx(0.667), False)

    venue.states = [hl_state(1, "0x" + LEG_CID, "sell", "0.667", ago_s=600)] + [
        hl_state(100 + i, None, "buy", "0.001", ago_s=500, coin="ETH") for i in range(1999)]
    found, how, absent = hedge_steps._find_unwind_order(client, UNWIND_CID, LEG_CID, HL_SYMBOL)
    assert (found, absent) == (None, False) and "does not reach back" in how
