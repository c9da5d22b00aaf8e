"""Fault rules of the exchange simulator (count, seeded rate, matching) and the socket-free
API dispatcher: auth, routing, injected errors and timeout-after-commit (applied, answer dropped)."""

from __future__ import annotations

import pytest

from arb_orchestration.sim.exchange_faults import FaultInjector
from arb_orchestration.sim.exchange_http import ApiRequest, ExchangeApi
from arb_orchestration.sim.exchange_state import ExchangeState


def test_count_fault_fires_on_the_next_n_matching_requests_only():
    faults = FaultInjector()
    faults.add({"kind": "error_5xx", "venue": "okx", "endpoint": "create_order", "count": 2})
    assert faults.decide("binance", "create_order").response_fault is None
    assert faults.decide("okx", "balances").response_fault is None
    fired = [faults.decide("okx", "create_order").response_fault is not None for _ in range(4)]
    assert fired == [True, True, False, False]
    (rule,) = faults.list()
    assert (rule.remaining, rule.hits) == (0, 2)


def test_rate_fault_is_repeatable_with_the_seed():
    def run(seed):
        faults = FaultInjector(seed)
        faults.add({"kind": "rate_limit", "rate": 0.3})
        return [faults.decide("okx", "tickers").response_fault is not None for _ in range(200)]

    first = run(11)
    assert first == run(11)
    assert first != run(12)
    assert 40 <= sum(first) <= 80


def test_clear_reseeds_so_the_same_rules_fire_the_same_way():
    faults = FaultInjector(3)
    faults.add({"kind": "error_5xx", "rate": 0.5})
    before = [faults.decide(None, "list_venues").response_fault is not None for _ in range(30)]
    faults.clear()
    assert faults.decide(None, "list_venues").response_fault is None
    faults.add({"kind": "error_5xx", "rate": 0.5})
    assert [faults.decide(None, "list_venues").response_fault is not None for _ in range(30)] == before


def test_latencies_add_up_and_only_the_first_response_fault_fires():
    faults = FaultInjector()
    faults.add({"kind": "latency", "latency_ms": 100})
    faults.add({"kind": "latency", "latency_ms": 50, "venue": "okx"})
    first = faults.add({"kind": "rate_limit", "count": 1})
    second = faults.add({"kind": "error_5xx", "count": 1})
    decision = faults.decide("okx", "positions")
    assert decision.latency_s == pytest.approx(0.15)
    assert decision.response_fault is first
    assert second.remaining == 1  # not consumed while the first one answered
    assert faults.decide("okx", "positions").response_fault is second


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "explode"},
        {"kind": "latency", "endpoint": "no_such_endpoint"},
        {"kind": "error_5xx", "status": 404},
        {"kind": "rate_limit", "rate": 1.5},
        {"kind": "latency", "latncy_ms": 5},
    ],
)
def test_invalid_fault_specs_are_refused(spec):
    with pytest.raises((ValueError, TypeError)):
        FaultInjector().add(spec)


def _api(api_key="secret"):
    state = ExchangeState(seed=1)
    faults = FaultInjector()
    waits: list[float] = []
    return ExchangeApi(state, faults, api_key=api_key, wait=waits.append), state, faults, waits


def _req(method, path, body=None, key="secret", query=None):
    headers = {"x-api-key": key} if key else {}
    return ApiRequest(method, path.strip("/").split("/"), query or {}, body, headers, received_at=1.0)


ORDER = {"symbol": "BTC/USDT:USDT", "type": "market", "side": "buy", "amount": 0.1, "client_order_id": "c-1"}


def test_api_key_is_required_on_venue_endpoints_but_not_admin():
    api, *_ = _api()
    assert api.handle(_req("GET", "venues/okx/balances", key=None)).status == 401
    assert api.handle(_req("GET", "venues/okx/balances", key="wrong")).status == 401
    assert api.handle(_req("GET", "venues/okx/balances")).status == 200
    assert api.handle(_req("POST", "admin/tick", {}, key=None)).status == 200


def test_routing_answers_404_and_405():
    api, *_ = _api()
    assert api.handle(_req("GET", "venues/okx/nothing")).status == 404
    assert api.handle(_req("POST", "venues/okx/balances", {})).status == 405
    response = api.handle(_req("GET", "venues/nope/balances"))
    assert (response.status, response.body["code"]) == (404, "unknown_venue")


def test_injected_5xx_and_429_are_answered_without_applying_the_request():
    api, state, faults, waits = _api()
    faults.add({"kind": "error_5xx", "endpoint": "create_order", "count": 1, "status": 502})
    faults.add({"kind": "rate_limit", "endpoint": "create_order", "count": 1, "retry_after": 0.25})
    faults.add({"kind": "latency", "endpoint": "create_order", "count": 1, "latency_ms": 30})
    first = api.handle(_req("POST", "venues/okx/orders", ORDER))
    assert first.status == 502 and waits == [0.03]
    second = api.handle(_req("POST", "venues/okx/orders", ORDER))
    assert second.status == 429 and second.headers["Retry-After"] == "0.25"
    assert state.orders("okx") == []
    third = api.handle(_req("POST", "venues/okx/orders", ORDER))
    assert third.status == 201 and third.body.received_at == 1.0


def test_timeout_after_commit_applies_the_order_and_drops_the_answer():
    api, state, faults, _ = _api()
    faults.add({"kind": "timeout_after_commit", "endpoint": "create_order", "count": 1, "hang_ms": 20})
    dropped = api.handle(_req("POST", "venues/okx/orders", ORDER))
    assert dropped.drop and dropped.hang_s == pytest.approx(0.02)
    assert [o.client_order_id for o in state.orders("okx")] == ["c-1"]
    replay = api.handle(_req("POST", "venues/okx/orders", ORDER))
    assert replay.status == 200 and replay.headers["X-Idempotent-Replay"] == "true"
    assert len(state.orders("okx")) == 1
