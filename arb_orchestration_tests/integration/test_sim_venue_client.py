"""`SimVenueClient` / `SimExchangeResource` against a running exchange simulator under
injected faults: typed results, retries, Retry-After, the circuit breaker opening,
half-opening and closing, and no duplicate order or withdrawal after a
timeout-after-commit (the client reconciles by idempotency key before retrying)."""

from __future__ import annotations

import logging
import time

import httpx
import pytest
from dagster import EnvVar, asset, materialize

from arb_orchestration.domain.models import Balance, DepositAddress, FundingRate, NetworkFee, Order, Position
from arb_orchestration.resources.errors import BusinessError, CircuitOpenError, TransientError
from arb_orchestration.resources.resilience import reset_breakers
from arb_orchestration.resources.sim_venue import SimExchangeResource, UnknownVenueError
from arb_orchestration.sim.exchange import ExchangeSimulator

pytestmark = pytest.mark.integration

KEY = "client-test-key"
COOL_DOWN = 0.8  # breaker reset: long enough that a slow run cannot half-open it by accident
PERP = "BTC/USDT:USDT"


@pytest.fixture(scope="module")
def sim():
    simulator = ExchangeSimulator(seed=42, api_key=KEY, tick_interval=None, withdrawal_hold=0.2, settle_delay=0.3)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def admin(sim):
    with httpx.Client(base_url=sim.url, timeout=5.0) as client:
        client.post("/admin/reset").raise_for_status()
        yield client


@pytest.fixture
def resource(sim, admin):
    reset_breakers()
    res = SimExchangeResource(
        base_url=sim.url,
        api_key=KEY,
        venue_list=sim.state.venue_names(),
        timeout_seconds=2.0,
        max_attempts=4,
        retry_base_delay=0.01,
        breaker_failure_threshold=3,
        breaker_reset_seconds=COOL_DOWN,
    )
    yield res
    res.close()
    reset_breakers()


def _fault(admin, **spec) -> str:
    response = admin.post("/admin/faults", json=spec)
    response.raise_for_status()
    return response.json()[0]["id"]


def _hits(admin, fault_id: str) -> int:
    return next(f["hits"] for f in admin.get("/admin/faults").json() if f["id"] == fault_id)


def test_reads_return_domain_models(resource):
    venue = resource.venue("binance")
    balances = venue.fetch_balance()
    assert isinstance(balances["USDT"], Balance) and balances["USDT"].total == 250_000
    positions = venue.fetch_positions()
    assert all(isinstance(p, Position) for p in positions) and {p.symbol for p in positions} >= {PERP}
    rates = venue.fetch_funding_rates()
    assert all(isinstance(r, FundingRate) and r.interval_hours == 8.0 for r in rates)
    assert resource.venue("hyperliquid").fetch_funding_rates()[0].interval_hours == 1.0
    assert venue.fetch_mark_prices()[PERP] == pytest.approx(65_000, rel=0.01)
    fees = venue.fetch_deposit_withdraw_fees()
    assert all(isinstance(f, NetworkFee) for f in fees) and ("USDT", "TRC20") in {(f.asset, f.network) for f in fees}
    address = resource.venue("okx").fetch_deposit_address("USDT", "TRC20")
    assert address == DepositAddress(venue="okx", asset="USDT", network="TRC20", address="sim:okx:USDT:TRC20")
    assert venue.fetch_open_orders() == [] and venue.fetch_order_by_client_id("nope") is None
    assert venue.fetch_withdrawal("nope") is None


def test_orders_idempotency_and_cancels(resource, sim):
    venue = resource.venue("okx")
    first = venue.create_order(PERP, "market", "buy", 0.5, client_order_id="c-1")
    again = venue.create_order(PERP, "market", "buy", 0.5, client_order_id="c-1")
    assert isinstance(first, Order) and again == first and first.status == "closed"
    assert venue.fetch_order_by_client_id("c-1") == first
    stop = venue.create_order(PERP, "stop_market", "buy", 1.0, client_order_id="s-1", reduce_only=True,
                              stop_price=80_000.0)
    limit = venue.create_order(PERP, "limit", "sell", 0.1, 90_000.0, client_order_id="l-1")
    assert [o.id for o in venue.fetch_open_orders()] == [stop.id, limit.id]
    assert venue.cancel_order(limit.id).status == "canceled"
    assert [o.id for o in venue.cancel_all_orders(PERP)] == [stop.id]
    assert [o.client_order_id for o in venue.fetch_orders()] == ["c-1", "s-1", "l-1"]
    assert len(sim.state.orders("okx")) == 3


def test_business_errors_are_not_retried(resource, admin):
    counter = _fault(admin, kind="latency", latency_ms=0, endpoint="create_withdrawal")
    with pytest.raises(BusinessError) as info:
        resource.venue("binance").withdraw("USDT", 10_000_000.0, address="sim:okx:USDT:TRC20", network="TRC20",
                                           idempotency_key="too-much")
    assert info.value.code == "insufficient_funds"
    assert _hits(admin, counter) == 1
    with pytest.raises(BusinessError) as info:
        resource.venue("binance").create_order(PERP, "market", "buy", 1.0, client_order_id="ro",
                                               reduce_only=True)
    assert info.value.code == "reduce_only_would_increase"


def test_wrong_api_key_is_a_business_error(sim, admin):
    reset_breakers()
    res = SimExchangeResource(base_url=sim.url, api_key="wrong", venue_list=["okx"], retry_base_delay=0.01)
    with pytest.raises(BusinessError) as info:
        res.venue("okx").fetch_balance()
    assert info.value.code == "unauthorized"
    assert "wrong" not in repr(res.venue("okx"))
    res.close()


def test_transient_5xx_on_reads_is_retried(sim, resource, admin):
    fault = _fault(admin, kind="error_5xx", venue="bybit", endpoint="positions", count=2)
    positions = resource.venue("bybit").fetch_positions()
    assert {p.symbol for p in positions} == {p.symbol for p in sim.state.positions("bybit")} != set()
    assert _hits(admin, fault) == 2
    assert resource.venue("bybit").health()["breaker"]["state"] == "closed"


def test_429_retry_after_is_honoured(resource, admin):
    fault = _fault(admin, kind="rate_limit", venue="kraken", endpoint="balances", count=1, retry_after=0.4)
    started = time.monotonic()
    balances = resource.venue("kraken").fetch_balance()
    elapsed = time.monotonic() - started
    assert balances["EUR"].total == 150_000
    assert _hits(admin, fault) == 1
    assert elapsed >= 0.4  # the backoff alone would be <= 0.01 s


def test_breaker_opens_after_repeated_failures_then_half_opens_and_closes(resource, admin, caplog):
    caplog.set_level(logging.INFO, logger="arb_orchestration")
    fault = _fault(admin, kind="error_5xx", venue="okx", endpoint="tickers")
    venue = resource.venue("okx")
    with pytest.raises(CircuitOpenError):
        venue.fetch_mark_prices()  # 3 failures open the breaker; the 4th attempt is refused
    assert _hits(admin, fault) == 3
    assert venue.health()["breaker"]["state"] == "open"
    with pytest.raises(CircuitOpenError):
        venue.fetch_balance()  # fails fast, nothing sent
    assert _hits(admin, fault) == 3
    assert resource.venue("binance").health()["breaker"]["state"] == "closed"  # per venue
    admin.delete("/admin/faults")
    time.sleep(COOL_DOWN)
    assert PERP in venue.fetch_mark_prices()  # the half-open probe succeeds
    assert venue.health()["breaker"] == {"name": "venue:okx", "state": "closed", "consecutive_failures": 0}
    messages = [r.getMessage() for r in caplog.records if r.name == "arb_orchestration.resources.sim_venue"]
    assert "venue okx: circuit breaker closed -> open" in messages
    assert "venue okx: circuit breaker open -> closed" in messages
    assert not any(KEY in r.getMessage() for r in caplog.records)


def test_failed_half_open_probe_reopens_the_breaker(resource, admin):
    fault = _fault(admin, kind="error_5xx", venue="okx", endpoint="positions")
    venue = resource.venue("okx")
    with pytest.raises(CircuitOpenError):
        venue.fetch_positions()
    opened_after = _hits(admin, fault)
    with pytest.raises(CircuitOpenError):
        venue.fetch_positions()  # open: refused without a request
    assert _hits(admin, fault) == opened_after
    time.sleep(COOL_DOWN)
    with pytest.raises(CircuitOpenError):
        venue.fetch_positions()  # probe fails → open again → the retry is refused
    assert _hits(admin, fault) == opened_after + 1  # exactly one probe went out (a breaker that never half-opened sends none)
    assert venue.health()["breaker"]["state"] == "open"


def _position_size(sim, venue: str, symbol: str) -> float:
    return next((p.signed_size for p in sim.state.positions(venue) if p.symbol == symbol), 0.0)


def test_timeout_after_commit_on_create_order_makes_no_duplicate(resource, admin, sim):
    before = _position_size(sim, "bybit", "ETH/USDT:USDT")
    posts = _fault(admin, kind="latency", latency_ms=0, venue="bybit", endpoint="create_order")  # counts requests
    lookups = _fault(admin, kind="latency", latency_ms=0, venue="bybit", endpoint="get_order_by_client_id")
    fault = _fault(admin, kind="timeout_after_commit", venue="bybit", endpoint="create_order", count=1)
    order = resource.venue("bybit").create_order("ETH/USDT:USDT", "market", "buy", 2.0, client_order_id="tac-1")
    assert _hits(admin, fault) == 1
    # Reconciled by lookup, not resubmitted: one POST, one GET by client id.
    assert (_hits(admin, posts), _hits(admin, lookups)) == (1, 1)
    assert order.client_order_id == "tac-1" and order.status == "closed"
    assert [o.client_order_id for o in sim.state.orders("bybit")] == ["tac-1"]
    assert _position_size(sim, "bybit", "ETH/USDT:USDT") - before == pytest.approx(2.0)


def test_read_timeout_after_commit_on_create_order_makes_no_duplicate(sim, admin):
    reset_breakers()
    impatient = SimExchangeResource(base_url=sim.url, api_key=KEY, venue_list=["kraken"], timeout_seconds=0.5,
                                    retry_base_delay=0.01)
    posts = _fault(admin, kind="latency", latency_ms=0, venue="kraken", endpoint="create_order")
    fault = _fault(admin, kind="timeout_after_commit", venue="kraken", endpoint="create_order", count=1,
                   hang_ms=1_500)  # longer than the client's timeout
    order = impatient.venue("kraken").create_order(PERP, "market", "sell", 0.1, client_order_id="tac-slow",
                                                   reduce_only=True)
    assert _hits(admin, fault) == 1 and _hits(admin, posts) == 1 and order.filled == pytest.approx(0.1)
    assert [o.client_order_id for o in sim.state.orders("kraken")] == ["tac-slow"]
    impatient.close()


def test_5xx_before_applying_an_order_is_resubmitted_once(resource, admin, sim):
    posts = _fault(admin, kind="latency", latency_ms=0, venue="binance", endpoint="create_order")
    fault = _fault(admin, kind="error_5xx", venue="binance", endpoint="create_order", count=1)
    order = resource.venue("binance").create_order("ETH/USDT:USDT", "market", "buy", 1.0, client_order_id="r-1")
    # 5xx is ambiguous: looked up (absent), then sent again.
    assert _hits(admin, fault) == 1 and _hits(admin, posts) == 2 and order.status == "closed"
    assert [o.client_order_id for o in sim.state.orders("binance")] == ["r-1"]


def test_timeout_after_commit_on_withdraw_makes_no_duplicate(resource, admin, sim):
    free_before = sim.state.balances("binance")["USDT"].free
    posts = _fault(admin, kind="latency", latency_ms=0, venue="binance", endpoint="create_withdrawal")
    fault = _fault(admin, kind="timeout_after_commit", venue="binance", endpoint="create_withdrawal", count=1)
    wd = resource.venue("binance").withdraw("USDT", 500.0, address="sim:okx:USDT:TRC20", network="TRC20",
                                            idempotency_key="wd-tac")
    assert _hits(admin, fault) == 1 and wd.idempotency_key == "wd-tac" and wd.to_venue == "okx"
    assert _hits(admin, posts) == 1  # reconciled by lookup, not resubmitted
    assert [w.idempotency_key for w in sim.state.withdrawals("binance")] == ["wd-tac"]
    assert resource.venue("binance").fetch_withdrawals() == [wd]
    spent = free_before - sim.state.balances("binance")["USDT"].free
    assert spent == pytest.approx(500.0 + wd.fee)  # held (pending) or gone (broadcast) exactly once
    assert resource.venue("binance").fetch_withdrawal("wd-tac").id == wd.id


def test_withdrawal_lifecycle_and_cancel_through_the_client(resource, sim):
    venue = resource.venue("okx")
    sim.state.withdrawal_hold = 60.0  # pending for sure, however slow this run is
    try:
        wd = venue.withdraw("USDC", 100.0, address="sim:bybit:USDC:SOL", network="SOL", idempotency_key="wd-2")
    finally:
        sim.state.withdrawal_hold = 0.2
    assert venue.cancel_withdrawal(wd.id).status == "canceled"
    wd3 = venue.withdraw("USDC", 100.0, address="sim:bybit:USDC:SOL", network="SOL", idempotency_key="wd-3")
    deadline = time.monotonic() + 5
    while venue.fetch_withdrawal("wd-3").status != "completed":
        assert time.monotonic() < deadline, "withdrawal did not complete"
        time.sleep(0.05)
    with pytest.raises(BusinessError) as info:
        venue.cancel_withdrawal(wd3.id)
    assert info.value.code == "not_cancelable"
    assert sim.state.balances("bybit")["USDC"].total == pytest.approx(30_100.0)


def test_unreachable_simulator_is_a_transient_error(admin):
    reset_breakers()
    dead = ExchangeSimulator(tick_interval=None)
    url = dead.start()
    dead.stop()
    res = SimExchangeResource(base_url=url, api_key="", venue_list=["okx"], max_attempts=2, retry_base_delay=0.01)
    with pytest.raises(TransientError):
        res.venue("okx").fetch_balance()
    assert res.venue("okx").health()["breaker"]["consecutive_failures"] == 2
    res.close()


def test_resource_caches_clients_refuses_unknown_venues_and_works_in_a_run(sim, monkeypatch):
    reset_breakers()
    res = SimExchangeResource(base_url=sim.url, api_key=KEY, venue_list=["okx", "kraken"])
    assert res.venue("okx") is res.venue("okx") and res.venue_names() == ["okx", "kraken"]
    with pytest.raises(UnknownVenueError, match="binance"):
        res.venue("binance")
    res.close()

    monkeypatch.setenv("TEST_EXCHANGE_SIM_KEY", KEY)

    @asset
    def okx_btc_funding(exchange: SimExchangeResource) -> float:
        return next(r.rate for r in exchange.venue("okx").fetch_funding_rates() if r.symbol == PERP)

    result = materialize(
        [okx_btc_funding],
        resources={
            "exchange": SimExchangeResource(
                base_url=sim.url, api_key=EnvVar("TEST_EXCHANGE_SIM_KEY"), venue_list=["okx"]
            )
        },
    )
    assert result.success and result.output_for_node("okx_btc_funding") == pytest.approx(0.00008, abs=0.0002)
