"""`SimVenueClient` with a swapped httpx transport (no sockets): the API-key header, path
encoding of client ids, error mapping, and reconcile-before-retry after an ambiguous timeout."""

from __future__ import annotations

import httpx
import pytest

from arb_orchestration.resources.errors import AmbiguousOutcomeError, NotFoundError
from arb_orchestration.resources.resilience import CircuitBreaker, RetrySettings
from arb_orchestration.resources.sim_venue import SimExchangeResource, SimVenueClient

ORDER = {
    "id": "okx-1", "client_order_id": "a/b", "venue": "okx", "symbol": "BTC/USDT:USDT", "type": "market",
    "side": "buy", "amount": 1.0, "filled": 1.0, "average": 65_000.0, "status": "closed", "reduce_only": False,
    "received_at": 1.0,
}


def _client(handler, attempts=3):
    sleeps: list[float] = []
    client = SimVenueClient(
        "okx", "http://sim.test", "k-123",
        retry=RetrySettings(max_attempts=attempts, base_delay=0.01),
        breaker=CircuitBreaker("venue:okx", failure_threshold=10),
        transport=httpx.MockTransport(handler),
        sleep=sleeps.append,
    )
    return client, sleeps


def test_sends_the_api_key_and_encodes_client_ids_in_the_path():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ORDER)

    client, _ = _client(handler)
    assert client.fetch_order_by_client_id("a/b").client_order_id == "a/b"
    assert seen[0].headers["X-API-Key"] == "k-123"
    assert seen[0].url.raw_path == b"/venues/okx/orders/by-client-id/a%2Fb"
    assert "k-123" not in repr(client)


def test_ambiguous_create_is_reconciled_by_lookup_not_resubmitted():
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if request.method == "POST":
            raise httpx.ReadTimeout("no answer", request=request)
        return httpx.Response(200, json=ORDER)

    client, sleeps = _client(handler)
    order = client.create_order("BTC/USDT:USDT", "market", "buy", 1.0, client_order_id="a/b")
    assert order.id == "okx-1"
    assert calls == ["POST /venues/okx/orders", "GET /venues/okx/orders/by-client-id/a/b"]
    assert sleeps == []


def test_ambiguous_create_is_resubmitted_only_when_the_lookup_finds_nothing():
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if request.method == "POST":
            if calls.count("POST") == 1:
                return httpx.Response(503, json={"code": "injected_error"})
            return httpx.Response(201, json=ORDER)
        return httpx.Response(404, json={"code": "order_not_found"})

    client, sleeps = _client(handler)
    assert client.create_order("BTC/USDT:USDT", "market", "buy", 1.0, client_order_id="a/b").id == "okx-1"
    assert calls == ["POST", "GET", "POST"] and len(sleeps) == 1


def test_ambiguous_outcome_that_never_resolves_is_raised():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            raise httpx.RemoteProtocolError("dropped", request=request)
        return httpx.Response(404, json={"code": "withdrawal_not_found"})

    client, _ = _client(handler, attempts=2)
    with pytest.raises(AmbiguousOutcomeError):
        client.withdraw("USDT", 100.0, address="x", network="TRC20", idempotency_key="k")


def test_unknown_order_is_none_but_unknown_venue_is_an_error():
    def handler(request: httpx.Request) -> httpx.Response:
        if "by-client-id" in request.url.path:
            return httpx.Response(404, json={"code": "order_not_found"})
        return httpx.Response(404, json={"code": "unknown_venue"})

    client, _ = _client(handler)
    assert client.fetch_order_by_client_id("missing") is None
    with pytest.raises(NotFoundError) as info:
        client.fetch_balance()
    assert info.value.code == "unknown_venue"


def test_resource_hands_its_transport_to_new_clients():
    res = SimExchangeResource(base_url="http://sim.test", api_key="k", venue_list=["okx"])
    res._transport = httpx.MockTransport(
        lambda request: httpx.Response(200, json=[{"asset": "USDT", "free": 1.0, "used": 0.0, "total": 1.0}])
    )
    assert res.venue("okx").fetch_balance()["USDT"].total == 1.0
    res.close()
