"""The exchange simulator over real HTTP on loopback: every endpoint, auth, idempotency
(same client order id / withdrawal key twice → one object), the withdrawal lifecycle,
each fault type (latency, 5xx, 429 + Retry-After, timeout-after-commit), the tick
thread and a clean stop."""

from __future__ import annotations

import time

import httpx
import pytest

from arb_orchestration.sim.exchange import ExchangeSimulator
from arb_orchestration.sim.exchange_specs import default_venues

pytestmark = pytest.mark.integration

KEY = "test-key-not-a-secret"
PERP = "BTC/USDT:USDT"


@pytest.fixture(scope="module")
def sim():
    simulator = ExchangeSimulator(seed=42, api_key=KEY, tick_interval=None, withdrawal_hold=0.2, settle_delay=0.3)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def http(sim):
    with httpx.Client(base_url=sim.url, headers={"X-API-Key": KEY}, timeout=5.0) as client:
        assert client.post("/admin/reset").json() == {"ok": True}
        yield client


def _order(http, venue="binance", **kw):
    body = {"symbol": PERP, "type": "market", "side": "buy", "amount": 0.1, "client_order_id": "cid-1"}
    body.update(kw)
    return http.post(f"/venues/{venue}/orders", json=body)


def _poll(fn, predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if predicate(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        time.sleep(0.05)


# ---------------------------------------------------------------- reads


def test_health_and_venues(http):
    assert http.get("/health").json()["ok"] is True
    venues = http.get("/venues").json()
    assert [v["name"] for v in venues] == ["binance", "okx", "bybit", "kraken", "hyperliquid"]
    hyperliquid = venues[-1]
    assert set(hyperliquid["funding_interval_hours"].values()) == {1.0}


def test_requests_without_the_api_key_are_refused(sim):
    for headers in ({}, {"X-API-Key": "wrong"}):
        response = httpx.get(f"{sim.url}/venues/binance/balances", headers=headers)
        assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    assert httpx.get(f"{sim.url}/admin/faults").status_code == 200  # admin needs no key


def test_balances_positions_funding_and_tickers(http):
    balances = {b["asset"]: b for b in http.get("/venues/binance/balances").json()}
    assert set(balances) == {"USDT", "USDC", "EUR", "BTC", "ETH"}
    usdt = balances["USDT"]
    assert usdt["free"] + usdt["used"] == pytest.approx(usdt["total"]) and usdt["used"] > 0
    positions = http.get("/venues/binance/positions").json()
    assert {(p["symbol"], p["side"]) for p in positions} == {(PERP, "long"), ("ETH/USDT:USDT", "short")}
    assert all(p["liquidation_price"] and "unrealized_pnl" in p for p in positions)
    rates = http.get("/venues/kraken/funding-rates").json()
    assert {r["interval_hours"] for r in rates} == {4.0}
    tickers = {t["symbol"]: t for t in http.get("/venues/okx/tickers").json()}
    assert tickers[PERP]["type"] == "swap" and tickers["BTC/USDT"]["type"] == "spot"
    assert tickers[PERP]["mark_price"] == pytest.approx(65_000, rel=0.01)
    assert http.get("/venues/nowhere/balances").status_code == 404


def test_networks_and_deposit_addresses(http):
    networks = http.get("/venues/okx/networks").json()
    trc20 = next(n for n in networks if (n["asset"], n["network"]) == ("USDT", "TRC20"))
    assert trc20["fee"] > 0 and trc20["min_amount"] > 0 and trc20["eta_seconds"] == pytest.approx(0.5)
    address = http.get("/venues/okx/deposit-address", params={"asset": "USDT", "network": "TRC20"}).json()
    assert address == {
        "venue": "okx", "asset": "USDT", "network": "TRC20", "address": "sim:okx:USDT:TRC20", "tag": None
    }
    iban = http.get("/venues/kraken/deposit-address", params={"asset": "EUR", "network": "SEPA"}).json()
    assert iban["address"].startswith("LT")
    bad = http.get("/venues/okx/deposit-address", params={"asset": "USDT", "network": "CARRIER_PIGEON"})
    assert bad.status_code == 400 and bad.json()["code"] == "unsupported_network"


# ---------------------------------------------------------------- orders


def test_same_client_order_id_twice_makes_one_order_and_one_fill(http):
    before = next(p for p in http.get("/venues/okx/positions").json() if p["symbol"] == PERP)
    first = _order(http, "okx", amount=0.2, client_order_id="dup-1")
    second = _order(http, "okx", amount=0.2, client_order_id="dup-1")
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.headers["X-Idempotent-Replay"] == "true"
    assert first.json() == second.json()
    after = next(p for p in http.get("/venues/okx/positions").json() if p["symbol"] == PERP)
    assert before["size"] - after["size"] == pytest.approx(0.2)  # okx is short: one buy of 0.2
    orders = http.get("/venues/okx/orders", params={"status": "all"}).json()
    assert [o["client_order_id"] for o in orders] == ["dup-1"]


def test_order_fields_lookup_by_client_id_and_by_id(http):
    sent_at = time.time()
    order = _order(http, client_order_id="odd/id:1 x").json()
    assert order["received_at"] >= sent_at - 0.01 and order["reduce_only"] is False
    by_cid = http.get("/venues/binance/orders/by-client-id/odd%2Fid%3A1%20x").json()
    assert by_cid == order
    assert http.get(f"/venues/binance/orders/{order['id']}").json() == order
    missing = http.get("/venues/binance/orders/by-client-id/never-sent")
    assert missing.status_code == 404 and missing.json()["code"] == "order_not_found"


def test_reduce_only_is_clamped_and_refused_when_it_would_increase(http):
    clamped = _order(http, side="sell", amount=99.0, reduce_only=True, client_order_id="ro-1").json()
    assert clamped["amount"] == pytest.approx(1.5) and clamped["status"] == "closed"
    assert all(p["symbol"] != PERP for p in http.get("/venues/binance/positions").json())
    refused = _order(http, side="sell", amount=1.0, reduce_only=True, client_order_id="ro-2")
    assert refused.status_code == 400 and refused.json()["code"] == "reduce_only_would_increase"


def test_resting_orders_list_cancel_and_cancel_all(http):
    limit = _order(http, type="limit", price=50_000.0, client_order_id="lim-1").json()
    stop = _order(http, type="stop_market", side="sell", stop_price=50_000.0, reduce_only=True,
                  amount=1.5, client_order_id="stop-1").json()
    eth = _order(http, symbol="ETH/USDT:USDT", type="limit", price=1_000.0, client_order_id="lim-eth").json()
    assert stop["status"] == "open" and stop["stop_price"] == 50_000.0 and stop["reduce_only"] is True
    open_ids = [o["id"] for o in http.get("/venues/binance/orders").json()]  # default: open
    assert open_ids == [limit["id"], stop["id"], eth["id"]]
    only_eth = http.get("/venues/binance/orders", params={"status": "open", "symbol": "ETH/USDT:USDT"}).json()
    assert [o["id"] for o in only_eth] == [eth["id"]]
    cancelled = http.delete(f"/venues/binance/orders/{limit['id']}").json()
    assert cancelled["status"] == "canceled"
    assert http.delete(f"/venues/binance/orders/{limit['id']}").status_code == 200  # idempotent
    by_symbol = http.delete("/venues/binance/orders", params={"symbol": "ETH/USDT:USDT"}).json()
    assert [o["id"] for o in by_symbol] == [eth["id"]]
    rest = http.delete("/venues/binance/orders").json()
    assert [o["id"] for o in rest] == [stop["id"]]
    assert http.get("/venues/binance/orders").json() == []
    assert http.delete("/venues/binance/orders/binance-404").status_code == 404


def test_stop_triggers_on_an_admin_shock(http):
    stop = _order(http, type="stop_market", side="sell", stop_price=60_000.0, reduce_only=True, amount=1.5,
                  client_order_id="sl-1").json()
    shocked = http.post("/admin/shock", json={"venue": "binance", "symbol": PERP, "pct": -0.1}).json()
    assert shocked[0]["mark_price"] < 60_000
    done = http.get("/venues/binance/orders/by-client-id/sl-1").json()
    assert done["id"] == stop["id"] and done["status"] == "closed" and done["filled"] == pytest.approx(1.5)
    okx_mark = next(t for t in http.get("/venues/okx/tickers").json() if t["symbol"] == PERP)["mark_price"]
    assert okx_mark > 64_000  # only binance moved


def test_bad_order_requests(http):
    assert _order(http, symbol="NOPE/USDT:USDT").json()["code"] == "unknown_symbol"
    assert http.post("/venues/binance/orders", json={"symbol": PERP}).status_code == 400
    assert http.post("/venues/binance/orders", json={**{"symbol": PERP, "type": "market", "side": "buy",
                                                         "amount": 1}, "leverage": 100}).status_code == 400
    raw = http.post("/venues/binance/orders", content=b"{not json", headers={"Content-Type": "application/json"})
    assert raw.status_code == 400 and raw.json()["code"] == "bad_request"


# ---------------------------------------------------------------- withdrawals


def _withdraw(http, venue="binance", **kw):
    body = {"asset": "USDT", "amount": 1_000.0, "address": "sim:okx:USDT:TRC20", "network": "TRC20",
            "idempotency_key": "wd-1"}
    body.update(kw)
    return http.post(f"/venues/{venue}/withdrawals", json=body)


def test_withdrawal_lifecycle_and_idempotency_key(http):
    okx_before = next(b for b in http.get("/venues/okx/balances").json() if b["asset"] == "USDT")["total"]
    first = _withdraw(http)
    again = _withdraw(http, amount=5_000.0)
    assert (first.status_code, again.status_code) == (201, 200) and first.json() == again.json()
    wd = first.json()
    assert wd["status"] == "pending" and wd["to_venue"] == "okx" and wd["fee"] > 0
    assert [w["id"] for w in http.get("/venues/binance/withdrawals").json()] == [wd["id"]]
    final = _poll(lambda: http.get("/venues/binance/withdrawals/wd-1").json(), lambda w: w["status"] == "completed")
    assert final["id"] == wd["id"]
    okx_after = next(b for b in http.get("/venues/okx/balances").json() if b["asset"] == "USDT")["total"]
    assert okx_after - okx_before == pytest.approx(1_000.0)
    missing = http.get("/venues/binance/withdrawals/never")
    assert missing.status_code == 404 and missing.json()["code"] == "withdrawal_not_found"


def test_withdrawal_cancel_only_while_pending(sim, http):
    sim.state.withdrawal_hold = 60.0  # pending for sure, however slow this run is
    try:
        wd = _withdraw(http, idempotency_key="wd-c").json()
    finally:
        sim.state.withdrawal_hold = 0.2
    cancelled = http.post(f"/venues/binance/withdrawals/{wd['id']}/cancel").json()
    assert cancelled["status"] == "canceled"
    assert http.post(f"/venues/binance/withdrawals/{wd['id']}/cancel").json()["status"] == "canceled"
    late = _withdraw(http, idempotency_key="wd-late").json()
    _poll(lambda: http.get("/venues/binance/withdrawals/wd-late").json(), lambda w: w["status"] != "pending")
    refused = http.post(f"/venues/binance/withdrawals/{late['id']}/cancel")
    assert refused.status_code == 400 and refused.json()["code"] == "not_cancelable"
    assert http.post("/venues/binance/withdrawals/wd-binance-99/cancel").status_code == 404


def test_withdrawal_refusals(http):
    poor = _withdraw(http, amount=10_000_000.0, idempotency_key="wd-poor")
    assert poor.status_code == 400 and poor.json()["code"] == "insufficient_funds"
    sepa = _withdraw(http, asset="EUR", network="SEPA", address="LT00", idempotency_key="wd-eur")
    assert sepa.status_code == 400 and sepa.json()["code"] == "unsupported_network"
    assert http.get("/venues/binance/withdrawals").json() == []


# ---------------------------------------------------------------- admin


def test_admin_positions_credit_tick_and_reset(http):
    set_ = http.post("/admin/positions", json={"venue": "kraken", "positions": [
        {"symbol": "ETH/USDT:USDT", "side": "short", "size": 3.0, "entry_price": 3_300.0}]})
    assert [(p["symbol"], p["size"]) for p in set_.json()] == [("ETH/USDT:USDT", 3.0)]
    assert http.get("/venues/kraken/positions").json() == set_.json()
    credited = http.post("/admin/credit", json={"venue": "kraken", "asset": "EUR", "amount": 2_000.0}).json()
    assert credited["total"] == pytest.approx(152_000.0)
    before = http.get("/venues/okx/tickers").json()
    ticked = http.post("/admin/tick", json={"steps": 5}).json()
    assert ticked["ticks"] == 5
    assert http.get("/venues/okx/tickers").json() != before
    funding = http.post("/admin/shock", json={"venue": "okx", "symbol": PERP, "funding_rate": 0.004}).json()
    assert funding[0]["funding_rate"] == 0.004
    http.post("/admin/reset")
    seeded = next(v for v in default_venues() if v.name == "kraken").positions
    assert [p["symbol"] for p in http.get("/venues/kraken/positions").json()] == [p.symbol for p in seeded]
    assert http.post("/admin/tick", json={"steps": 0}).status_code == 400


def test_admin_faults_add_list_remove_clear(http):
    added = http.post("/admin/faults", json=[{"kind": "latency", "latency_ms": 1}, {"kind": "error_5xx", "count": 0}])
    assert added.status_code == 201
    ids = [f["id"] for f in added.json()]
    assert [f["id"] for f in http.get("/admin/faults").json()] == ids
    assert http.delete(f"/admin/faults/{ids[0]}").json()[0]["id"] == ids[1]
    assert http.delete("/admin/faults/fault-999").status_code == 404
    assert http.post("/admin/faults", json={"kind": "nonsense"}).status_code == 400
    assert http.delete("/admin/faults").json() == []
    assert http.get("/admin/faults").json() == []


# ---------------------------------------------------------------- faults


def test_latency_fault_delays_the_answer_but_not_the_receipt_time(http):
    http.post("/admin/faults", json={"kind": "latency", "venue": "okx", "endpoint": "create_order",
                                     "latency_ms": 300, "count": 1})
    started = time.time()
    order = _order(http, "okx", client_order_id="slow-1").json()
    answered = time.time()
    assert answered - started >= 0.3
    # Stamped on arrival, before the injected wait (so at least 0.3 s before the answer).
    assert started - 0.01 <= order["received_at"] <= answered - 0.29
    _order(http, "okx", client_order_id="fast-1")
    (rule,) = http.get("/admin/faults").json()
    assert (rule["hits"], rule["remaining"]) == (1, 0)  # the second order was not delayed


def test_5xx_fault_answers_the_status_and_applies_nothing(http):
    http.post("/admin/faults", json={"kind": "error_5xx", "endpoint": "create_order", "status": 502, "count": 1})
    failed = _order(http, client_order_id="five-1")
    assert failed.status_code == 502 and failed.json()["code"] == "injected_error"
    assert http.get("/venues/binance/orders/by-client-id/five-1").status_code == 404
    assert _order(http, client_order_id="five-1").status_code == 201


def test_429_fault_sends_retry_after(http):
    http.post("/admin/faults", json={"kind": "rate_limit", "venue": "bybit", "retry_after": 2, "count": 1})
    limited = http.get("/venues/bybit/positions")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert http.get("/venues/bybit/positions").status_code == 200
    faults = http.get("/admin/faults").json()
    assert (faults[0]["hits"], faults[0]["remaining"]) == (1, 0)


def test_timeout_after_commit_drops_the_answer_but_keeps_the_order(http):
    http.post("/admin/faults", json={"kind": "timeout_after_commit", "endpoint": "create_order", "count": 1})
    with pytest.raises(httpx.RemoteProtocolError):
        _order(http, client_order_id="lost-1")
    applied = http.get("/venues/binance/orders/by-client-id/lost-1")
    assert applied.status_code == 200 and applied.json()["status"] == "closed"


def test_timeout_after_commit_can_hang_past_the_client_timeout(sim, http):
    http.post("/admin/faults", json={"kind": "timeout_after_commit", "endpoint": "create_withdrawal",
                                     "count": 1, "hang_ms": 800})
    with httpx.Client(base_url=sim.url, headers={"X-API-Key": KEY}, timeout=0.3) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            _withdraw(impatient, idempotency_key="wd-hang")
    applied = http.get("/venues/binance/withdrawals/wd-hang")
    assert applied.status_code == 200 and applied.json()["status"] in {"pending", "broadcast", "completed"}


def test_rate_fault_on_one_venue_is_repeatable(http):
    def pattern():
        http.delete("/admin/faults")
        http.post("/admin/faults", json={"kind": "error_5xx", "venue": "kraken", "endpoint": "tickers", "rate": 0.5})
        return [http.get("/venues/kraken/tickers").status_code for _ in range(12)]

    first = pattern()
    assert set(first) == {200, 503}
    assert pattern() == first
    assert http.get("/venues/okx/tickers").status_code == 200


# ---------------------------------------------------------------- lifecycle


def test_tick_thread_moves_prices_and_stop_closes_keep_alive_connections():
    simulator = ExchangeSimulator(seed=1, tick_interval=0.05)
    url = simulator.start()
    try:
        assert url.startswith("http://127.0.0.1:")
        _poll(lambda: simulator.state.ticks, lambda n: n >= 3, timeout=3.0)
        client = httpx.Client(base_url=url, timeout=2.0)  # no api_key: none needed
        assert client.get("/venues/okx/positions").status_code == 200
    finally:
        simulator.stop()
    with pytest.raises(httpx.TransportError):
        client.get("/venues/okx/positions")
    client.close()
    with pytest.raises(RuntimeError):
        _ = simulator.url
