"""Hedge-mode accounts fail loudly and early: the position-mode read, its cache, the refusal to place orders.

Same technique as test_ccxt_venue_conformance.py: the real ccxt class (the version in .venv) with only its
HTTP layer replaced by a recorder, so the request asserted is the one ccxt would send and the answer goes
through ccxt's own parser. See docs/ccxt-conformance.md § 2a.
"""

from __future__ import annotations

import pytest

from arb_orchestration.resources.errors import BusinessError
from arb_orchestration_tests.unit.test_ccxt_venue_conformance import _client, _market, _real

OK = {"retCode": 0, "retMsg": "OK"}


def _binance(dual: bool | None):
    def answer(method, path, query, body):
        if path.endswith("/fapi/v1/positionSide/dual"):
            return {} if dual is None else {"dualSidePosition": dual}
        raise AssertionError(f"unexpected {method} {path}")
    return answer


def _okx(pos_mode: str):
    def answer(method, path, query, body):
        if path.endswith("/api/v5/account/config"):
            return {"code": "0", "msg": "", "data": [{"uid": "44705892343619584", "acctLv": "2", "posMode": pos_mode,
                                                      "autoLoan": False, "greeksType": "PA", "level": "Lv1"}]}
        raise AssertionError(f"unexpected {method} {path}")
    return answer


def _bybit(position_idx: list[int]):
    def answer(method, path, query, body):
        if path.endswith("/v5/position/list"):
            rows = [{"positionIdx": idx, "symbol": "BTCUSDT", "side": "", "size": "0", "avgPrice": "0",
                     "positionValue": "0", "leverage": "10", "markPrice": "100000", "positionStatus": "Normal",
                     "tradeMode": 0, "createdTime": "1700000000000", "updatedTime": "1700000000000"}
                    for idx in position_idx]
            return {**OK, "result": {"category": "linear", "list": rows, "nextPageCursor": ""}}
        raise AssertionError(f"unexpected {method} {path}")
    return answer


def _binance_client(dual):
    exchange, wire = _real("binanceusdm", _market("BTCUSDT", "BTC/USDT:USDT"), _binance(dual))
    return _client("binanceusdm", exchange), wire


def _okx_client(pos_mode):
    exchange, wire = _real("okx", _market("BTC-USDT-SWAP", "BTC/USDT:USDT", contractSize=0.01), _okx(pos_mode))
    return _client("okx", exchange, password="p" * 8), wire


def _bybit_client(position_idx):
    exchange, wire = _real("bybit", _market("BTCUSDT", "BTC/USDT:USDT"), _bybit(position_idx),
                           options={"enableUnifiedAccount": True, "enableUnifiedMargin": False})
    return _client("bybit", exchange), wire


@pytest.mark.parametrize("dual, mode", [(False, "one_way"), (True, "hedge"), (None, "unknown")])
def test_binance_reads_dual_side_position(dual, mode):
    client, wire = _binance_client(dual)
    assert client.position_mode() == mode
    assert wire.paths() == ["GET /fapi/v1/positionSide/dual"]
    query, _ = wire.sent("GET", "/fapi/v1/positionSide/dual")[0]
    assert set(query) >= {"timestamp", "signature"}  # a signed read, nothing else asked


@pytest.mark.parametrize("pos_mode, mode", [("net_mode", "one_way"), ("long_short_mode", "hedge")])
def test_okx_reads_pos_mode_from_the_account_config(pos_mode, mode):
    client, wire = _okx_client(pos_mode)
    assert client.position_mode() == mode
    assert wire.paths() == ["GET /api/v5/account/config"]


@pytest.mark.parametrize("idx, mode", [([0], "one_way"), ([1, 2], "hedge"), ([], "unknown")])
def test_bybit_reads_the_position_idx_of_the_position_rows(idx, mode):
    client, wire = _bybit_client(idx)
    assert client.position_mode() == mode
    sent = wire.sent("GET", "/v5/position/list")
    assert sent and all(q["category"] == "linear" and q["settleCoin"] == "USDT" for q, _ in sent)


def test_venues_without_a_read_are_unknown_without_any_request():
    for exchange_id, market in (("krakenfutures", _market("PF_XBTUSD", "BTC/USD:USD")),
                                ("hyperliquid", _market("0", "BTC/USDC:USDC"))):
        exchange, wire = _real(exchange_id, market, lambda *a: (_ for _ in ()).throw(AssertionError(a)))
        client = _client(exchange_id, exchange)
        assert client.position_mode() == "unknown"
        assert wire.requests == []


def test_the_answer_is_cached_and_shown_by_health():
    client, wire = _binance_client(False)
    assert client.health()["position_mode"] is None  # health itself sends nothing
    assert client.position_mode() == "one_way" and client.position_mode() == "one_way"
    assert len(wire.requests) == 1
    health = client.health()
    assert health["position_mode"] == "one_way" and "dualSidePosition" in health["position_mode_detail"]
    client.position_mode(max_age_seconds=0)  # a caller can ask for a fresh read
    assert len(wire.requests) == 2


def test_a_failed_read_is_unknown_not_an_error():
    def broken(method, path, query, body):
        raise OSError("connection reset")
    exchange, wire = _real("binanceusdm", _market("BTCUSDT", "BTC/USDT:USDT"), broken)
    client = _client("binanceusdm", exchange)
    assert client.position_mode() == "unknown"
    assert "not read" in client.health()["position_mode_detail"]


@pytest.mark.parametrize("make, setting", [
    (lambda: _binance_client(True), "One-way Mode"),
    (lambda: _okx_client("long_short_mode"), "posMode=net_mode"),
    (lambda: _bybit_client([1, 2]), "One-Way Mode"),
])
def test_orders_on_a_hedge_mode_account_are_refused_before_anything_is_sent(make, setting):
    client, wire = make()
    for kwargs in ({"type": "market", "reduce_only": True},  # a stop-loss close
                   {"type": "stop_market", "reduce_only": True, "stop_price": 90000.0}):  # a protective stop
        with pytest.raises(BusinessError) as err:
            client.create_order("BTC/USDT:USDT", side="sell", amount=1.0, client_order_id="close-1", **kwargs)
        assert err.value.code == "hedge_mode_unsupported"
        assert "hedge (two-way) position mode" in str(err.value) and setting in str(err.value)
    # Only the mode read went out (once: cached), no order, no lookup.
    assert all("order" not in p.lower() for p in wire.paths())
    assert len(wire.requests) == len(set(wire.paths()))
