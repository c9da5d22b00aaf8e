"""What `CcxtVenueClient` makes the *real* ccxt classes send to OKX, Bybit, Kraken Futures and Hyperliquid.

Each test builds the unmodified ccxt exchange class (the version in .venv), gives it one market,
and replaces only its HTTP layer (`Exchange.fetch`) with a recorder that answers like the venue's
API. So the request checked is the one ccxt would put on the wire, and the answer goes through
ccxt's own parsing. What each check stands on: docs/ccxt-conformance.md.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import ccxt
import pytest

from arb_orchestration.resources.ccxt_venue import CcxtVenueClient, CcxtVenueSettings
from arb_orchestration.resources.resilience import CircuitBreaker, RetrySettings

Responder = Callable[[str, str, dict[str, Any], Any], Any]


def _market(market_id: str, symbol: str, **overrides) -> dict:
    base, rest = symbol.split("/")
    quote, settle = rest.split(":")
    market = {
        "id": market_id, "symbol": symbol, "base": base, "quote": quote, "settle": settle,
        "baseId": base, "quoteId": quote, "settleId": settle, "type": "swap", "spot": False, "margin": False,
        "swap": True, "future": False, "option": False, "contract": True, "linear": True, "inverse": False,
        "active": True, "contractSize": 1, "precision": {"amount": 0.001, "price": 0.1},
        "limits": {"amount": {"min": 0.001}, "price": {}, "cost": {}, "leverage": {}}, "info": {},
    }
    market.update(overrides)
    return market


class Wire:
    """The requests ccxt sent: (method, path, query, body)."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict[str, Any], Any]] = []

    def paths(self) -> list[str]:
        return [f"{m} {p}" for m, p, _q, _b in self.requests]

    def sent(self, method: str, path_end: str) -> list[tuple[dict[str, Any], Any]]:
        return [(q, b) for m, p, q, b in self.requests if m == method and p.endswith(path_end)]


def _real(exchange_id: str, market: dict, responder: Responder, *, options: dict | None = None) -> tuple[Any, Wire]:
    credentials = {"apiKey": "k" * 18, "secret": "c2VjcmV0c2VjcmV0", "password": "p" * 8}
    if exchange_id == "hyperliquid":
        credentials = {"walletAddress": "0x" + "1" * 40, "privateKey": "0x" + "2" * 64}
    exchange = getattr(ccxt, exchange_id)({**credentials, "options": options or {}})
    exchange.set_markets([market])
    wire = Wire()

    def fetch(url, method="GET", headers=None, body=None):
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        payload = json.loads(body) if body and body.startswith(("{", "[")) else parse_qs(body or "")
        wire.requests.append((method, parts.path, query, payload))
        return responder(method, parts.path, query, payload)

    exchange.fetch = fetch
    return exchange, wire


def _client(exchange_id: str, exchange: Any, **overrides) -> CcxtVenueClient:
    settings = CcxtVenueSettings(name=exchange_id, exchange_id=exchange_id, api_key="k" * 18, secret="s" * 32, **overrides)
    return CcxtVenueClient(settings, retry=RetrySettings(max_attempts=2, base_delay=0.0), breaker=CircuitBreaker(f"t-{exchange_id}"),
                           sleep=lambda s: None, exchange=exchange)


# ------------------------------------------------------------------------------------------------ Bybit


def _bybit(orders: list[dict]) -> Responder:
    def answer(method, path, query, body):
        if path.endswith("/v5/order/create"):
            order = {"orderId": str(len(orders) + 1), "orderLinkId": body["orderLinkId"], "symbol": body["symbol"],
                     "side": body["side"], "orderType": body["orderType"], "qty": body["qty"], "orderStatus": "New",
                     "reduceOnly": body.get("reduceOnly", False), "triggerPrice": body.get("triggerPrice", "0"),
                     "createdTime": "1700000000000", "cumExecQty": "0", "price": "0", "avgPrice": ""}
            orders.append(order)
            return {"retCode": 0, "retMsg": "OK", "result": {"orderId": order["orderId"], "orderLinkId": order["orderLinkId"]}}
        if path.endswith(("/v5/order/realtime", "/v5/order/history")):
            if query.get("orderId"):  # Bybit looks up by orderId first: "None" matches nothing
                return {"retCode": 0, "retMsg": "OK", "result": {"list": [o for o in orders if o["orderId"] == query["orderId"]]}}
            link = query.get("orderLinkId")
            return {"retCode": 0, "retMsg": "OK", "result": {"list": [o for o in orders if link in (None, o["orderLinkId"])]}}
        raise AssertionError(f"unexpected {method} {path}")

    return answer


def _bybit_client(orders: list[dict]):
    exchange, wire = _real("bybit", _market("BTCUSDT", "BTC/USDT:USDT"), _bybit(orders),
                           options={"enableUnifiedAccount": True, "enableUnifiedMargin": False})
    return _client("bybit", exchange), wire


def test_bybit_an_order_is_looked_up_by_order_link_id_then_sent_once():
    orders: list[dict] = []
    client, wire = _bybit_client(orders)
    order = client.create_order("BTC/USDT:USDT", "market", "sell", 1.0, client_order_id="close-1", reduce_only=True)
    assert order.status == "open" and order.client_order_id == "close-1"
    lookups = wire.sent("GET", "/v5/order/realtime") + wire.sent("GET", "/v5/order/history")
    assert lookups and all(q.get("orderLinkId") == "close-1" and "orderId" not in q for q, _ in lookups)
    assert [b["orderLinkId"] for _q, b in wire.sent("POST", "/v5/order/create")] == ["close-1"]
    # Asked again (a relaunch), the order is found by its orderLinkId and not sent a second time.
    again = client.create_order("BTC/USDT:USDT", "market", "sell", 1.0, client_order_id="close-1", reduce_only=True)
    assert again.id == order.id and len(wire.sent("POST", "/v5/order/create")) == 1


def test_bybit_a_protective_stop_carries_its_trigger_direction():
    orders: list[dict] = []
    client, wire = _bybit_client(orders)
    client.create_order("BTC/USDT:USDT", "stop_market", "sell", 1.0, client_order_id="stop-long", reduce_only=True, stop_price=90000)
    client.create_order("BTC/USDT:USDT", "stop_market", "buy", 1.0, client_order_id="stop-short", reduce_only=True, stop_price=110000)
    sent = [b for _q, b in wire.sent("POST", "/v5/order/create")]
    # A long's stop sells when the price falls (2), a short's buys when it rises (1); both reduce-only.
    assert [(b["side"], b["triggerDirection"], b["triggerPrice"], b["reduceOnly"]) for b in sent] == [
        ("Sell", 2, "90000", True), ("Buy", 1, "110000", True)]


# ------------------------------------------------------------------------------------------------ OKX


def _okx(regular: list[dict], algos: list[dict], cancelled: list[str]) -> Responder:
    def answer(method, path, query, body):
        if path.endswith("/trade/order-algo") and method == "POST":
            algo = {"algoId": str(100 + len(algos)), "algoClOrdId": body.get("algoClOrdId", ""), "clOrdId": body.get("clOrdId", ""),
                    "instId": body["instId"], "side": body["side"], "ordType": body["ordType"], "sz": body["sz"],
                    "triggerPx": body["triggerPx"], "reduceOnly": "true" if body.get("reduceOnly") else "false",
                    "state": "live", "cTime": "1700000000000", "instType": "SWAP"}
            algos.append(algo)
            return {"code": "0", "msg": "", "data": [{"algoId": algo["algoId"], "algoClOrdId": algo["algoClOrdId"], "sCode": "0", "sMsg": ""}]}
        if path.endswith("/trade/order-algo"):
            found = [a for a in algos if a["algoClOrdId"] == query.get("algoClOrdId") or a["algoId"] == query.get("algoId")]
            if not found:
                return {"code": "51603", "msg": "Order does not exist", "data": []}
            return {"code": "0", "msg": "", "data": found}
        if path.endswith("/trade/order"):
            found = [o for o in regular if o["clOrdId"] == query.get("clOrdId") or o["ordId"] == query.get("ordId")]
            if not found:
                return {"code": "51603", "msg": "Order does not exist", "data": []}
            return {"code": "0", "msg": "", "data": found}
        if path.endswith("/trade/orders-pending"):
            return {"code": "0", "msg": "", "data": [o for o in regular if o["state"] == "live"]}
        if path.endswith("/trade/orders-algo-pending"):
            return {"code": "0", "msg": "", "data": [a for a in algos if a["state"] == "live" and a["ordType"] == query.get("ordType")]}
        if path.endswith("/trade/cancel-algos"):
            for row in body:
                cancelled.append("algo:" + row["algoId"])
                next(a for a in algos if a["algoId"] == row["algoId"])["state"] = "canceled"
            return {"code": "0", "msg": "", "data": [{"algoId": r["algoId"], "sCode": "0", "sMsg": ""} for r in body]}
        if path.endswith("/trade/cancel-order"):
            cancelled.append("order:" + body["ordId"])
            next(o for o in regular if o["ordId"] == body["ordId"])["state"] = "canceled"
            return {"code": "0", "msg": "", "data": [{"ordId": body["ordId"], "clOrdId": "", "sCode": "0", "sMsg": ""}]}
        raise AssertionError(f"unexpected {method} {path}")

    return answer


def _okx_client(regular, algos, cancelled):
    market = _market("BTC-USDT-SWAP", "BTC/USDT:USDT", contractSize=0.01, precision={"amount": 1, "price": 0.1})
    exchange, wire = _real("okx", market, _okx(regular, algos, cancelled))
    return _client("okx", exchange, password="p" * 8), wire


def test_okx_a_stop_is_an_algo_order_found_again_by_its_algo_client_id():
    algos: list[dict] = []
    client, wire = _okx_client([], algos, [])
    stop = client.create_order("BTC/USDT:USDT", "stop_market", "sell", 2.0, client_order_id="stop1", reduce_only=True, stop_price=90000)
    (sent_body,) = [b for _q, b in wire.sent("POST", "/trade/order-algo")]
    assert (sent_body["ordType"], sent_body["algoClOrdId"], sent_body["sz"], sent_body["reduceOnly"]) == ("trigger", "stop1", "200", True)
    # After an ambiguous outcome, or on a relaunch, the stop is found on the algo endpoint, not placed twice.
    again = client.create_order("BTC/USDT:USDT", "stop_market", "sell", 2.0, client_order_id="stop1", reduce_only=True, stop_price=90000)
    assert again.id == stop.id == "100" and len(wire.sent("POST", "/trade/order-algo")) == 1
    assert client.fetch_order_by_client_id("stop1", "BTC/USDT:USDT").type == "stop_market"


def test_okx_open_orders_and_cancel_all_include_the_algo_stops():
    regular = [{"ordId": "7", "clOrdId": "lim1", "instId": "BTC-USDT-SWAP", "side": "buy", "ordType": "limit", "sz": "1",
                "px": "50000", "state": "live", "accFillSz": "0", "reduceOnly": "false", "cTime": "1700000000000", "instType": "SWAP"}]
    algos: list[dict] = []
    cancelled: list[str] = []
    client, wire = _okx_client(regular, algos, cancelled)
    client.create_order("BTC/USDT:USDT", "stop_market", "sell", 2.0, client_order_id="stop1", reduce_only=True, stop_price=90000)
    listed = client.fetch_open_orders()
    assert sorted((o.id, o.type, o.reduce_only) for o in listed) == [("100", "stop_market", True), ("7", "limit", False)]
    # ccxt's okx has no cancelAllOrders (NotSupported): every listed order is cancelled on its own endpoint.
    done = client.cancel_all_orders()
    assert sorted(cancelled) == ["algo:100", "order:7"] and {o.status for o in done} == {"canceled"}


# ------------------------------------------------------------------------------------------------ Hyperliquid

_HL_SYMBOL = "BTC/USDC:USDC"


def _hyperliquid(statuses: dict[str, dict]) -> Responder:
    def answer(method, path, query, body):
        action = body.get("action") or {}
        if body.get("type") == "orderStatus":
            order = statuses.get(str(body["oid"]))
            return {"status": "order", "order": order} if order else {"status": "unknownOid"}
        if action.get("type") == "order":
            placed = []
            for row in action["orders"]:
                oid = 1000 + len(statuses)
                statuses[row["c"]] = {"order": {"coin": "BTC", "side": "B" if row["b"] else "A", "limitPx": row["p"], "sz": row["s"],
                                                "oid": oid, "timestamp": 1700000000000, "origSz": row["s"], "cloid": row["c"],
                                                "reduceOnly": row["r"], "orderType": "Market"}, "status": "filled", "statusTimestamp": 1}
                placed.append({"filled": {"totalSz": row["s"], "avgPx": "100000", "oid": oid}})
            return {"status": "ok", "response": {"type": "order", "data": {"statuses": placed}}}
        if action.get("type") == "cancel":
            return {"status": "ok", "response": {"type": "cancel", "data": {"statuses": ["success" for _ in action["cancels"]]}}}
        if body.get("type") == "frontendOpenOrders":
            return [{"coin": "BTC", "side": "A", "limitPx": "85500", "sz": "0.1", "oid": 77, "timestamp": 1700000000000,
                     "origSz": "0.1", "cloid": "0x" + "b" * 32, "reduceOnly": True, "orderType": "Stop Market",
                     "isTrigger": True, "triggerPx": "90000", "triggerCondition": "Price below 90000", "isPositionTpsl": False}]
        raise AssertionError(f"unexpected {method} {path} {body}")

    return answer


def _hl_client(statuses: dict[str, dict]):
    market = _market("BTC", _HL_SYMBOL, baseId=0, precision={"amount": 0.00001, "price": 1}, info={"szDecimals": 5})
    exchange, wire = _real("hyperliquid", market, _hyperliquid(statuses), options={"approvedBuilderFee": True, "builderFee": False})
    # ccxt's hyperliquid ticker has no unified markPrice: the mark is in info.markPx, last/close are the mid.
    exchange.fetch_ticker = lambda symbol, params={}: {"symbol": symbol, "markPrice": None, "last": 100010.0, "close": 100010.0,
                                                       "info": {"markPx": "100000.0", "midPx": "100010.0"}}
    return _client("hyperliquid", exchange), wire


def _hl_orders(wire: Wire) -> list[dict]:
    return [row for _q, b in wire.sent("POST", "/exchange") if (b.get("action") or {}).get("type") == "order"
            for row in b["action"]["orders"]]


def test_hyperliquid_client_order_ids_are_128_bit_hex():
    statuses: dict[str, dict] = {}
    client, wire = _hl_client(statuses)
    order = client.create_order(_HL_SYMBOL, "market", "sell", 0.1, client_order_id="close-1", reduce_only=True)
    (row,) = _hl_orders(wire)
    assert re.fullmatch(r"0x[0-9a-f]{32}", row["c"]) and order.client_order_id == "close-1"
    # The same key maps to the same cloid, so the relaunch finds the order and does not send it again.
    again = client.create_order(_HL_SYMBOL, "market", "sell", 0.1, client_order_id="close-1", reduce_only=True)
    assert again.id == order.id and len(_hl_orders(wire)) == 1


def test_hyperliquid_an_unknown_cloid_is_not_taken_for_an_existing_order():
    client, wire = _hl_client({})
    assert client.fetch_order_by_client_id("never-sent", _HL_SYMBOL) is None
    order = client.create_order(_HL_SYMBOL, "market", "sell", 0.1, client_order_id="close-2", reduce_only=True)
    assert len(_hl_orders(wire)) == 1 and order.id == "1000"


def test_hyperliquid_market_closes_and_stops_carry_a_slippage_bounded_price():
    client, wire = _hl_client({})
    client.create_order(_HL_SYMBOL, "market", "sell", 0.1, client_order_id="close-3", reduce_only=True)
    client.create_order(_HL_SYMBOL, "stop_market", "sell", 0.1, client_order_id="stop-3", reduce_only=True, stop_price=90000)
    close, stop = _hl_orders(wire)
    # ccxt's default 5% slippage off the mark (close) and off the trigger (stop); reduce-only both.
    assert (close["p"], close["r"], close["t"]) == ("95000", True, {"limit": {"tif": "Ioc"}})
    assert (stop["p"], stop["r"], stop["t"]) == ("85500", True, {"trigger": {"isMarket": True, "triggerPx": "90000", "tpsl": "sl"}})


def test_hyperliquid_credentials_reach_ccxt_as_wallet_address_and_private_key():
    settings = CcxtVenueSettings(name="hyperliquid", exchange_id="hyperliquid", api_key="0x" + "1" * 40, secret="0x" + "2" * 64)
    exchange = CcxtVenueClient(settings, breaker=CircuitBreaker("t-hl-creds"))._build_exchange()
    assert (exchange.walletAddress, exchange.privateKey) == ("0x" + "1" * 40, "0x" + "2" * 64)
    exchange.check_required_credentials()  # raises AuthenticationError when they are missing
    assert exchange.options["builderFee"] is False  # no third-party builder fee on our orders


def test_hyperliquid_cancel_all_cancels_each_open_order():
    client, wire = _hl_client({})
    listed = client.fetch_open_orders()
    assert [(o.id, o.type, o.reduce_only, o.stop_price) for o in listed] == [("77", "stop_market", True, 90000.0)]
    done = client.cancel_all_orders()
    cancels = [c for _q, b in wire.sent("POST", "/exchange") if (b.get("action") or {}).get("type") == "cancel"
               for c in b["action"]["cancels"]]
    assert cancels == [{"a": 0, "o": 77}] and [o.status for o in done] == ["canceled"]


# ------------------------------------------------------------------------------------------------ Kraken Futures


def _kraken(orders: list[dict]) -> Responder:
    def answer(method, path, query, body):
        if path.endswith("/orders/status"):
            wanted = query.get("cliOrdIds")
            rows = [o for o in orders if o["order"]["cliOrdId"] == wanted] if wanted else []
            return {"result": "success", "orders": rows, "serverTime": "2024-01-01T00:00:00.000Z"}
        if path.endswith("/sendorder"):
            oid = f"kf-{len(orders) + 1}"
            order = {"type": "ORDER", "orderId": oid, "cliOrdId": query["cliOrdId"], "symbol": query["symbol"],
                     "side": query["side"], "quantity": query["size"], "filled": "0", "limitPrice": None,
                     "reduceOnly": query.get("reduceOnly") == "true", "timestamp": "2024-01-01T00:00:00.000Z",
                     "lastUpdateTimestamp": "2024-01-01T00:00:00.000Z", "orderType": "mkt"}
            orders.append({"order": order, "status": "ENTERED_BOOK", "updateReason": None, "error": None})
            return {"result": "success", "sendStatus": {"order_id": oid, "status": "placed", "receivedTime": "2024-01-01T00:00:00.000Z",
                                                        "orderEvents": [{"order": {**order, "type": "mkt"}, "type": "PLACE"}]},
                    "serverTime": "2024-01-01T00:00:00.000Z"}
        raise AssertionError(f"unexpected {method} {path}")

    return answer


def test_kraken_futures_an_order_is_looked_up_by_cli_ord_id_then_sent_once():
    orders: list[dict] = []
    exchange, wire = _real("krakenfutures", _market("PF_XBTUSD", "BTC/USD:USD"), _kraken(orders))
    client = _client("krakenfutures", exchange)
    first = client.create_order("BTC/USD:USD", "market", "sell", 1.0, client_order_id="close-1", reduce_only=True)
    assert [q.get("cliOrdIds") for q, _b in wire.sent("GET", "/orders/status")][0] == "close-1"
    assert all("orderIds" not in q for q, _b in wire.sent("GET", "/orders/status"))
    again = client.create_order("BTC/USD:USD", "market", "sell", 1.0, client_order_id="close-1", reduce_only=True)
    assert again.id == first.id == "kf-1" and len(wire.sent("POST", "/sendorder")) == 1


def test_a_lookup_answer_for_another_client_id_is_not_our_order():
    """Whatever the venue's lookup answers, an order carrying another client id (or none at all) is not ours."""
    orders: list[dict] = []
    client, wire = _bybit_client(orders)
    orders.append({"orderId": "9", "orderLinkId": "someone-else", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit",
                   "qty": "1", "orderStatus": "New", "createdTime": "1700000000000", "cumExecQty": "0", "price": "1", "avgPrice": ""})
    client._exchange.fetch = lambda *a, **k: {"retCode": 0, "retMsg": "OK", "result": {"list": orders}}  # ignores the filter
    assert client.fetch_order_by_client_id("mine", "BTC/USDT:USDT") is None


def test_kraken_futures_funding_is_hourly_and_relative():
    """Kraken settles funding every hour; its ticker's fundingRate is absolute (USD per contract), ccxt divides by the mark."""
    def answer(method, path, query, body):
        assert path.endswith("/tickers"), path
        return {"result": "success", "tickers": [{"symbol": "PF_XBTUSD", "tag": "perpetual", "pair": "XBT:USD", "markPrice": 100000.0,
                                                  "fundingRate": 5.0, "fundingRatePrediction": 4.0, "lastTime": "2024-01-01T00:00:00.000Z"}]}

    exchange, _wire = _real("krakenfutures", _market("PF_XBTUSD", "BTC/USD:USD"), answer)
    client = _client("krakenfutures", exchange)
    (rate,) = client.fetch_funding_rates()
    assert (rate.symbol, rate.rate, rate.interval_hours) == ("BTC/USD:USD", pytest.approx(0.00005), 1.0)
    # Only the fallback: ccxt gives '1h' itself. It must not say 4 h when ccxt's answer lacks one.
    from arb_orchestration.resources.ccxt_venue import DOCUMENTED_FUNDING_INTERVAL_HOURS
    assert DOCUMENTED_FUNDING_INTERVAL_HOURS["krakenfutures"] == 1.0


def test_hyperliquid_a_saga_key_is_its_own_cloid():
    """The saga's keys are 128-bit hex already (saga/keys.py): on Hyperliquid they go out 0x-prefixed, readable in its UI."""
    client, _wire = _hl_client({})
    assert client._venue_client_id("3f2a" * 8) == "0x" + "3f2a" * 8
    assert client._venue_client_id("0x" + "ab" * 16) == "0x" + "ab" * 16


@pytest.mark.parametrize("exchange_id, symbol, market_id", [("krakenfutures", "BTC/USD:USD", "PF_XBTUSD"),
                                                            ("hyperliquid", _HL_SYMBOL, "BTC")])
def test_a_venue_without_a_fee_endpoint_offers_no_withdrawal_rails(exchange_id, symbol, market_id):
    """ccxt has no fetchDepositWithdrawFees for these (NotSupported): the rebalance planner, which asks every venue,
    must get "no rails" rather than a failure that stops every plan (withdrawals from them are refused anyway)."""
    def answer(method, path, query, body):
        raise AssertionError(f"no request expected: {method} {path}")

    exchange, _wire = _real(exchange_id, _market(market_id, symbol), answer)
    assert not exchange.has.get("fetchDepositWithdrawFees")
    assert _client(exchange_id, exchange).fetch_deposit_withdraw_fees() == []


def test_bybit_positions_and_open_orders_are_read_for_every_settle_coin_and_page():
    """ccxt's bybit asks for settleCoin=USDT only when no symbol is given, and one page (orders: 20): a USDC-settled
    position would read as flat to the stop-loss, and the 21st open order would be missed."""
    def position(symbol: str) -> dict:
        return {"symbol": symbol, "side": "Buy", "size": "0.5", "avgPrice": "100000", "markPrice": "100000", "positionIdx": 0,
                "positionValue": "50000", "unrealisedPnl": "0", "liqPrice": "", "leverage": "5", "tradeMode": 0,
                "updatedTime": "1700000000000", "createdTime": "1700000000000"}

    def order(i: int) -> dict:
        return {"orderId": f"o{i}", "orderLinkId": f"l{i}", "symbol": "BTCUSDT", "side": "Sell", "orderType": "Limit", "qty": "0.1",
                "price": "200000", "orderStatus": "New", "createdTime": "1700000000000", "cumExecQty": "0", "avgPrice": ""}

    usdt_orders = [order(i) for i in range(25)]

    def answer(method, path, query, body):
        settle = query.get("settleCoin")
        if path.endswith("/v5/position/list"):
            rows = [position("BTCPERP")] if settle == "USDC" else [position("BTCUSDT")] if settle == "USDT" else []
            return {"retCode": 0, "retMsg": "OK", "result": {"list": rows, "nextPageCursor": ""}}
        if path.endswith("/v5/order/realtime"):
            if settle != "USDT":
                return {"retCode": 0, "retMsg": "OK", "result": {"list": [], "nextPageCursor": ""}}
            start = int(query.get("cursor") or 0)
            size = int(query.get("limit") or 20)
            page = usdt_orders[start:start + size]
            more = start + size < len(usdt_orders)
            return {"retCode": 0, "retMsg": "OK", "result": {"list": page, "nextPageCursor": str(start + size) if more else ""}}
        raise AssertionError(f"unexpected {method} {path}")

    usdc = _market("BTCPERP", "BTC/USDC:USDC")
    exchange, _wire = _real("bybit", _market("BTCUSDT", "BTC/USDT:USDT"), answer,
                            options={"enableUnifiedAccount": True, "enableUnifiedMargin": False})
    exchange.set_markets([_market("BTCUSDT", "BTC/USDT:USDT"), usdc])
    client = _client("bybit", exchange)
    assert sorted(p.symbol for p in client.fetch_positions()) == ["BTC/USDC:USDC", "BTC/USDT:USDT"]
    assert len(client.fetch_open_orders()) == 25
