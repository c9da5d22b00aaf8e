"""`CcxtVenueClient.fetch_orders(symbol, since=None)`: the order history the hedge unwind's rerun looks in.

Each test runs the unmodified ccxt exchange class and replaces only its HTTP layer (`Exchange.fetch`), like
test_ccxt_okx_transfer_client_id. Covered:

* Binance USDⓈ-M: `GET /fapi/v1/allOrders` with symbol, startTime, endTime, limit=1000; oldest first, so a full
  page is paged on; more pages than the bound is an empty `IncompleteOrderHistory`, never the first pages;
* OKX: open orders, then `trade/orders-history` state=filled and state=canceled with `begin`, instType SWAP;
  a full page (100) is an empty `IncompleteOrderHistory`; contracts are mapped to base units;
* a window older than the venue keeps is reported incomplete without a request;
* a venue whose history the client cannot read whole (Kraken Futures) has no `fetch_orders`;
* the hedge unwind's decision (`_find_unwind_order`) on a ccxt client: the leg's order in the history and not the
  unwind -> absent for sure (it is sent once); the history not reaching back to the leg -> not absent (escalates).
"""

from __future__ import annotations

import time
from typing import Any

import ccxt
import pytest

from arb_orchestration.defs.hedging import steps as hedge_steps
from arb_orchestration.resources.ccxt_venue import (
    ORDER_HISTORY_MAX_PAGES,
    CcxtVenueClient,
    IncompleteOrderHistory,
)
from arb_orchestration_tests.unit.test_ccxt_withdraw_wallet import SYMBOL, Venue, _client, _market, _real

LEG_CID = "a" * 32
UNWIND_CID = "b" * 32


def _now_ms() -> int:
    """The time a row is built (not the module's import time: a slow suite imports this minutes before it runs the
    test, and rows placed relative to an old 'now' fall out of the test's own `since` window)."""
    return int(time.time() * 1000)


def _binance_row(order_id: int, cid: str, side: str, qty: str, status: str = "FILLED", ago_s: float = 60.0,
                 reduce_only: bool = False) -> dict[str, Any]:
    ts = _now_ms() - int(ago_s * 1000)
    return {"orderId": order_id, "symbol": "BTCUSDT", "status": status, "clientOrderId": cid, "price": "0",
            "avgPrice": "60000", "origQty": qty, "executedQty": qty if status == "FILLED" else "0",
            "cumQuote": "0", "timeInForce": "GTC", "type": "MARKET", "reduceOnly": reduce_only, "closePosition": False,
            "side": side.upper(), "positionSide": "BOTH", "stopPrice": "0", "workingType": "CONTRACT_PRICE",
            "priceProtect": False, "origType": "MARKET", "time": ts, "updateTime": ts}


def _binance(rows: list[dict[str, Any]]) -> tuple[CcxtVenueClient, Venue]:
    venue = Venue(0.0, 0.0)

    def answer(method, path, p):
        if path.endswith("/fapi/v1/allOrders"):
            start, end, limit = int(p.get("startTime", 0)), int(p.get("endTime", 2**62)), int(p.get("limit", 500))
            return [r for r in rows if start <= r["time"] <= end][:limit]  # oldest first from startTime, as Binance
        if path.endswith(("/fapi/v1/order", "/fapi/v1/algoOrder")):  # the lookup by client order id: Binance forgot it
            raise ccxt.OrderNotFound('binanceusdm {"code":-2013,"msg":"Order does not exist."}')
        raise AssertionError(f"unexpected {method} {path}")

    return _client("binanceusdm", _real("binanceusdm", _market("BTCUSDT"), venue, answer)), venue


def _okx_row(ord_id: str, cid: str, side: str, contracts: str, state: str, ago_s: float = 60.0) -> dict[str, Any]:
    ts = str(_now_ms() - int(ago_s * 1000))
    filled = contracts if state == "filled" else "0"
    return {"instType": "SWAP", "instId": "BTC-USDT-SWAP", "ordId": ord_id, "clOrdId": cid, "px": "", "sz": contracts,
            "ordType": "market", "side": side, "posSide": "net", "tdMode": "cross", "accFillSz": filled,
            "fillSz": filled, "avgPx": "60000" if filled != "0" else "", "state": state, "reduceOnly": "false",
            "cTime": ts, "uTime": ts, "fee": "0", "feeCcy": "USDT", "tag": "", "category": "normal"}


def _okx(open_rows: list[dict], history: list[dict]) -> tuple[CcxtVenueClient, Venue]:
    venue = Venue(0.0, 0.0)

    def answer(method, path, p):
        if path.endswith("/trade/orders-pending"):
            return {"code": "0", "msg": "", "data": open_rows[: int(p.get("limit", 100))]}
        if path.endswith("/trade/orders-history"):
            begin = int(p.get("begin", 0))
            data = [r for r in history if r["state"] == p.get("state") and int(r["cTime"]) >= begin]
            return {"code": "0", "msg": "", "data": data[: int(p.get("limit", 100))]}
        raise AssertionError(f"unexpected {method} {path}")

    market = _market("BTC-USDT-SWAP", contractSize=0.01, precision={"amount": 1, "price": 0.1})
    return _client("okx", _real("okx", market, venue, answer), password="p" * 8), venue


# ------------------------------------------------------------------------------------------------ Binance USDⓈ-M


def test_binance_reads_all_orders_of_the_symbol_since_the_window_and_maps_them():
    client, venue = _binance([_binance_row(11, LEG_CID, "sell", "0.667", ago_s=600),
                              _binance_row(12, UNWIND_CID, "buy", "0.667", status="CANCELED", ago_s=30, reduce_only=True)])
    since = time.time() - 3600
    orders = client.fetch_orders(SYMBOL, since=since)

    (query, _body), = venue.sent("GET", "/fapi/v1/allOrders")
    assert query["symbol"] == "BTCUSDT" and query["limit"] == "1000"
    assert int(query["startTime"]) == int(since * 1000)
    assert abs(int(query["endTime"]) - time.time() * 1000) < 60_000
    assert [(o.id, o.client_order_id, o.side, o.status, o.amount, o.filled, o.reduce_only) for o in orders] == [
        ("11", LEG_CID, "sell", "closed", pytest.approx(0.667), pytest.approx(0.667), False),
        ("12", UNWIND_CID, "buy", "canceled", pytest.approx(0.667), 0.0, True),
    ]


def test_binance_pages_on_from_the_last_order_and_counts_an_order_met_twice_once():
    rows = [_binance_row(100 + i, f"c{i:031d}", "buy", "0.001", ago_s=3000 - i) for i in range(1500)]
    client, venue = _binance(rows)
    orders = client.fetch_orders(SYMBOL, since=time.time() - 3600)
    starts = [int(q["startTime"]) for q, _b in venue.sent("GET", "/fapi/v1/allOrders")]
    assert len(starts) == 2 and starts[1] == rows[999]["time"]
    assert len(orders) == 1500 and len({o.id for o in orders}) == 1500


def test_binance_more_orders_than_the_page_bound_is_an_empty_incomplete_history_not_its_first_pages():
    rows = [_binance_row(100 + i, f"c{i:031d}", "buy", "0.001", ago_s=9000 - i) for i in range(1000 * ORDER_HISTORY_MAX_PAGES + 1)]
    client, venue = _binance(rows)
    orders = client.fetch_orders(SYMBOL, since=time.time() - 10_000)
    assert isinstance(orders, IncompleteOrderHistory) and orders == [] and "pages" in orders.reason
    assert len(venue.sent("GET", "/fapi/v1/allOrders")) == ORDER_HISTORY_MAX_PAGES


def test_a_window_older_than_the_venue_keeps_is_incomplete_without_a_request():
    client, venue = _binance([_binance_row(11, LEG_CID, "sell", "0.667")])
    orders = client.fetch_orders(SYMBOL, since=time.time() - 8 * 24 * 3600)
    assert isinstance(orders, IncompleteOrderHistory) and orders == []
    assert venue.sent("GET", "/fapi/v1/allOrders") == []


# ------------------------------------------------------------------------------------------------ OKX


def test_okx_reads_open_then_filled_then_cancelled_orders_and_maps_contracts_to_base_units():
    client, venue = _okx(open_rows=[_okx_row("3", "c" * 32, "buy", "5", "live", ago_s=5)],
                         history=[_okx_row("1", LEG_CID, "sell", "67", "filled", ago_s=600),
                                  _okx_row("2", UNWIND_CID, "buy", "67", "canceled", ago_s=30)])
    since = time.time() - 3600
    orders = client.fetch_orders(SYMBOL, since=since)

    paths = [p for p in venue.paths() if "/trade/" in p]
    assert paths == ["GET /api/v5/trade/orders-pending", "GET /api/v5/trade/orders-history",
                     "GET /api/v5/trade/orders-history"]
    (pending, _), = venue.sent("GET", "/trade/orders-pending")
    assert pending["instId"] == "BTC-USDT-SWAP"
    history = [q for q, _b in venue.sent("GET", "/trade/orders-history")]
    assert [q["state"] for q in history] == ["filled", "canceled"]
    assert all(q["instType"] == "SWAP" and q["instId"] == "BTC-USDT-SWAP" and q["limit"] == "100"
               and int(q["begin"]) == int(since * 1000) for q in history)
    assert [(o.id, o.client_order_id, o.side, o.status, o.amount, o.filled) for o in orders] == [
        ("1", LEG_CID, "sell", "closed", pytest.approx(0.67), pytest.approx(0.67)),
        ("2", UNWIND_CID, "buy", "canceled", pytest.approx(0.67), 0.0),
        ("3", "c" * 32, "buy", "open", pytest.approx(0.05), 0.0),
    ]


def test_okx_a_full_page_is_an_empty_incomplete_history():
    filled = [_okx_row(str(i), f"c{i:031d}", "buy", "1", "filled", ago_s=100 + i) for i in range(100)]
    client, _venue = _okx(open_rows=[], history=filled + [_okx_row("x", LEG_CID, "sell", "67", "filled", ago_s=900)])
    orders = client.fetch_orders(SYMBOL, since=time.time() - 3600)
    assert isinstance(orders, IncompleteOrderHistory) and orders == [] and "full page" in orders.reason


# ------------------------------------------------------------------------------------------------ no history


@pytest.mark.parametrize("exchange_id", ["krakenfutures"])  # Bybit, Hyperliquid: test_ccxt_order_history_bybit_hyperliquid
def test_a_venue_without_a_whole_history_has_no_fetch_orders(exchange_id):
    client = _client(exchange_id, exchange=object())  # never asked: no request can be made
    assert client.has_order_history is False
    assert getattr(client, "fetch_orders", None) is None
    with pytest.raises(AttributeError, match="no order history"):
        client.fetch_orders(SYMBOL)


# ------------------------------------------------------------------------------------------------ the hedge unwind


@pytest.fixture
def _no_grace(monkeypatch):
    monkeypatch.setattr(hedge_steps, "UNWIND_ABSENT_GRACE_SECONDS", 0.0)


def test_the_unwind_rerun_reads_a_ccxt_history_showing_the_leg_without_the_unwind_as_never_arrived(_no_grace):
    client, venue = _binance([_binance_row(11, LEG_CID, "sell", "0.667", ago_s=600)])
    found, how, absent = hedge_steps._find_unwind_order(client, UNWIND_CID, LEG_CID, SYMBOL)
    assert (found, absent) == (None, True) and "leg's own earlier order" in how
    assert venue.sent("GET", "/fapi/v1/order") and venue.sent("GET", "/fapi/v1/allOrders")


def test_the_unwind_rerun_does_not_call_an_unwind_absent_when_the_history_does_not_reach_back(_no_grace):
    client, _venue = _binance([_binance_row(11, LEG_CID, "sell", "0.667", ago_s=4 * 24 * 3600)])  # older than 3 days
    found, how, absent = hedge_steps._find_unwind_order(client, UNWIND_CID, LEG_CID, SYMBOL)
    assert (found, absent) == (None, False) and "does not reach back" in how


def test_the_unwind_rerun_finds_the_unwind_in_a_ccxt_history(_no_grace):
    client, _venue = _binance([_binance_row(11, LEG_CID, "sell", "0.667", ago_s=600),
                               _binance_row(12, UNWIND_CID, "buy", "0.667", ago_s=30, reduce_only=True)])
    found, how, absent = hedge_steps._find_unwind_order(client, UNWIND_CID, LEG_CID, SYMBOL)
    assert found is not None and (found.id, found.filled, absent) == ("12", pytest.approx(0.667), False)
    assert how == "in the order history"


def test_the_unwind_rerun_on_a_venue_without_history_escalates(_no_grace):
    venue = Venue(0.0, 0.0)

    def answer(method, path, p):
        raise ccxt.OrderNotFound("krakenfutures: order not found")

    client = _client("krakenfutures", _real("krakenfutures", _market("PF_XBTUSD"), venue, answer))
    found, how, absent = hedge_steps._find_unwind_order(client, UNWIND_CID, LEG_CID, SYMBOL)
    assert (found, absent) == (None, False) and "no order history" in how
