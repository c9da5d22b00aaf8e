"""The exchange simulator's `error_4xx` fault (a venue's business refusal), over real HTTP on loopback:
the rule's fields are validated (a bad status or code fails naming the field, over the admin API too);
the native API answers the status with the exchange error code and applies nothing, and
`SimVenueClient` raises `BusinessError` with that code after one request (no retry, no lookup, the
breaker stays closed); the venue/endpoint/count filters refuse exactly the requests they name; and
the Binance dialect answers a Binance-shaped refusal that `CcxtVenueClient` (unmodified ccxt
underneath) also raises as a `BusinessError`, nothing applied."""

from __future__ import annotations

import secrets

import httpx
import pytest

from arb_orchestration.resources.ccxt_venue import CcxtVenueClient, CcxtVenueSettings
from arb_orchestration.resources.errors import BusinessError
from arb_orchestration.resources.resilience import CircuitBreaker, RetrySettings
from arb_orchestration.resources.sim_venue import SimVenueClient
from arb_orchestration.sim.exchange import ExchangeSimulator
from arb_orchestration.sim.exchange_faults import Fault, FaultInjector
from arb_orchestration.sim.real_api_binance import serve_binance_venue

pytestmark = pytest.mark.integration

KEY = "test-key-not-a-secret"
BN_KEY = "it-" + secrets.token_hex(16)
BN_SECRET = "it-" + secrets.token_hex(24)
BTC = "BTC/USDT:USDT"


@pytest.fixture(scope="module")
def sim():
    simulator = ExchangeSimulator(seed=42, api_key=KEY, tick_interval=None)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def world(sim):
    sim.state.reset()
    sim.faults.clear()
    yield sim
    sim.faults.clear()


@pytest.fixture
def http(world):
    with httpx.Client(base_url=world.url, headers={"X-API-Key": KEY}, timeout=5.0) as client:
        yield client


def _client(sim, venue: str) -> SimVenueClient:
    return SimVenueClient(venue, sim.url, KEY, timeout=2.0, retry=RetrySettings(max_attempts=3, base_delay=0.01),
                          breaker=CircuitBreaker(f"reject-test:{venue}:{secrets.token_hex(4)}", failure_threshold=2))


# ---------------------------------------------------------------- the rule


def test_defaults_status_400_and_order_rejected_and_keeps_5xx_defaults():
    faults = FaultInjector()
    reject = faults.add({"kind": "error_4xx", "venue": "bybit", "endpoint": "create_order", "count": 1})
    assert (reject.status, reject.code, reject.message) == (400, "order_rejected", None)
    assert reject.rejection_message() == f"injected refusal: order_rejected ({reject.id})"
    assert faults.add({"kind": "error_5xx"}).status == 503  # unchanged for the other kinds
    custom = Fault(kind="error_4xx", status=403, code="-2022", message="ReduceOnly Order is rejected.")
    assert custom.as_dict()["code"] == "-2022" and custom.rejection_message() == "ReduceOnly Order is rejected."


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"status": 503}, "error_4xx status"),
        ({"status": 429}, "error_4xx status"),
        ({"status": 404}, "error_4xx status"),
        ({"status": "400"}, "status must be an integer"),
        ({"code": ""}, "error_4xx code"),
        ({"code": "x" * 65}, "error_4xx code"),
        ({"message": 7}, "error_4xx message"),
    ],
)
def test_a_bad_field_fails_naming_it(spec, named):
    with pytest.raises(ValueError, match=named):
        FaultInjector().add({"kind": "error_4xx", **spec})


def test_the_admin_api_refuses_a_bad_rule_and_adds_nothing(http):
    bad = http.post("/admin/faults", json=[{"kind": "error_4xx", "count": 1}, {"kind": "error_4xx", "status": 500}])
    assert bad.status_code == 400 and "error_4xx status" in bad.json()["message"]
    assert http.get("/admin/faults").json() == []
    good = http.post("/admin/faults", json={"kind": "error_4xx", "status": 409, "code": "order_rejected"})
    assert good.status_code == 201 and good.json()[0]["status"] == 409


# ---------------------------------------------------------------- the native API and SimVenueClient


def test_the_refusal_is_answered_with_its_code_and_nothing_is_applied(world, http):
    rule = world.faults.add({"kind": "error_4xx", "venue": "okx", "endpoint": "create_order", "count": 1,
                             "status": 422, "code": "risk_limit_exceeded", "message": "position risk limit"})
    body = {"symbol": BTC, "type": "market", "side": "buy", "amount": 0.1, "client_order_id": "refused-1"}
    refused = http.post("/venues/okx/orders", json=body)
    assert refused.status_code == 422
    assert refused.json() == {"code": "risk_limit_exceeded", "message": "position risk limit"}
    assert world.state.orders("okx") == [] and (rule.hits, rule.remaining) == (1, 0)
    assert http.post("/venues/okx/orders", json=body).status_code == 201  # count spent: the next one goes through


def test_the_client_raises_business_error_with_the_code_after_one_request(world):
    before = [(p.symbol, p.signed_size) for p in world.state.positions("bybit")]
    rule = world.faults.add({"kind": "error_4xx", "venue": "bybit", "endpoint": "create_order"})
    client = _client(world, "bybit")
    try:
        for attempt in range(3):  # more refusals than the breaker's threshold: a refusal is not a failure
            with pytest.raises(BusinessError) as refused:
                client.create_order(BTC, "market", "buy", 0.01, client_order_id=f"unwind-{attempt}", reduce_only=True)
            assert refused.value.code == "order_rejected" and "HTTP 400" in str(refused.value)
        assert rule.hits == 3  # one request per call: not retried, no lookup by client order id
        assert client.health()["breaker"]["state"] == "closed"
        assert world.state.orders("bybit") == []
        assert [(p.symbol, p.signed_size) for p in world.state.positions("bybit")] == before
        assert len(client.fetch_positions()) == len(before)  # reads of the same venue are not refused
    finally:
        client.close()


def test_venue_endpoint_and_count_pick_the_refused_requests(world):
    rule = world.faults.add({"kind": "error_4xx", "venue": "bybit", "endpoint": "create_order", "count": 1})
    okx, bybit = _client(world, "okx"), _client(world, "bybit")
    try:
        assert okx.create_order(BTC, "market", "buy", 0.01, client_order_id="okx-1").status == "closed"
        with pytest.raises(BusinessError):
            bybit.create_order(BTC, "market", "buy", 0.01, client_order_id="bybit-1")
        assert bybit.create_order(BTC, "market", "buy", 0.01, client_order_id="bybit-1").status == "closed"
        assert (rule.hits, rule.remaining) == (1, 0)
        assert [o.client_order_id for o in world.state.orders("bybit")] == ["bybit-1"]
    finally:
        okx.close()
        bybit.close()


# ---------------------------------------------------------------- the Binance dialect


@pytest.fixture(scope="module")
def binance_server(sim):
    server = serve_binance_venue(sim, venue="binance", api_key=BN_KEY, secret=BN_SECRET)
    yield server
    server.stop()


def _ccxt_client(server) -> CcxtVenueClient:
    settings = CcxtVenueSettings(name="binance", exchange_id="binanceusdm", api_key=BN_KEY, secret=BN_SECRET,
                                 api_base_url=server.url, rate_limit_ms=1, timeout_seconds=2.0)
    return CcxtVenueClient(settings, retry=RetrySettings(max_attempts=3, base_delay=0.02),
                           breaker=CircuitBreaker(f"reject-test:ccxt:{secrets.token_hex(4)}", failure_threshold=3))


@pytest.mark.parametrize(("code", "binance_code", "ours"), [("order_rejected", -2010, "invalid_order"),
                                                             ("-2022", -2022, "reduce_only_rejected")])
def test_the_binance_dialect_refuses_in_binance_shape_and_ccxt_maps_it(world, binance_server, code, binance_code, ours):
    binance_server.api.reset()
    rule = world.faults.add({"kind": "error_4xx", "venue": "binance", "endpoint": "create_order", "code": code})
    before = [(p.symbol, p.signed_size) for p in world.state.positions("binance")]
    client = _ccxt_client(binance_server)
    with pytest.raises(BusinessError) as refused:
        client.create_order(BTC, "market", "sell", 0.01, client_order_id=f"bn-refused-{binance_code}", reduce_only=True)
    assert refused.value.code == ours and str(binance_code) in str(refused.value)
    assert rule.hits == 1 and world.state.orders("binance") == []
    assert [(p.symbol, p.signed_size) for p in world.state.positions("binance")] == before
    creates = [r for r in binance_server.api.request_log if r[:2] == ("POST", "/fapi/v1/order")]
    assert [status for _, _, status in creates] == [400]
