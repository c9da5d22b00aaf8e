"""ccxt's unmodified `binanceusdm` class against the exchange simulator's Binance-shaped API (only
its `urls['api']` pointed at loopback), and `CcxtVenueClient` on top of it, on the same simulator
state as the native API: markets, balances, positions, funding rates (with intervals), reduce-only
orders with client order ids (sent twice: one order), conditional stops, cancels, withdrawals,
fees and deposit addresses; Binance's own error codes for bad input and bad signatures; faults
(timeout after commit, 5xx, 429, an unreachable venue) reconciled without a duplicate; the
emergency stop-loss saga flattening the ccxt-backed venue; and no credential in any log line or
run event. No live exchange is contacted."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import tempfile
import time

import ccxt
import pytest
from dagster import DagsterInstance, instance_for_test

from arb_orchestration.resources.ccxt_venue import CcxtExchangeResource, CcxtVenueClient, CcxtVenueConfig, CcxtVenueSettings
from arb_orchestration.resources.errors import BusinessError, CircuitOpenError, TransientError
from arb_orchestration.resources.resilience import CircuitBreaker, RetrySettings, reset_breakers
from arb_orchestration.resources.sim_venue import SimVenueClient
from arb_orchestration.sim.exchange_state import venue_iban
from arb_orchestration.sim.real_api_binance import BinanceApiServer, serve_binance_venue

pytestmark = pytest.mark.integration

KEY = "it-" + secrets.token_hex(16)
SECRET = "it-" + secrets.token_hex(24)


@pytest.fixture(scope="module")
def binance_servers(local_world):
    """The world's `binance` venue (8 h funding) and `kraken` venue (4 h funding) spoken as Binance."""
    servers = {
        venue: serve_binance_venue(local_world.exchange, venue=venue, api_key=KEY, secret=SECRET)
        for venue in ("binance", "kraken")
    }
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def binance(world, binance_servers) -> BinanceApiServer:
    for server in binance_servers.values():
        server.api.reset()
    reset_breakers()
    return binance_servers["binance"]


def raw_ccxt(server: BinanceApiServer, *, key: str = KEY, secret: str = SECRET) -> ccxt.binanceusdm:
    """The unmodified ccxt class; only its API URLs are changed."""
    exchange = ccxt.binanceusdm({"apiKey": key, "secret": secret, "enableRateLimit": True, "timeout": 5000,
                                 "options": {"warnOnFetchOpenOrdersWithoutSymbol": False}})
    exchange.rateLimit = 1  # loopback: no need to pace requests like Binance's weights demand
    exchange.urls["api"] = server.ccxt_api_urls(exchange.urls["api"])
    return exchange


def venue_client(server: BinanceApiServer | str, venue: str = "binance", **overrides) -> CcxtVenueClient:
    base_url = server if isinstance(server, str) else server.url
    settings = dict(name=venue, exchange_id="binanceusdm", api_key=KEY, secret=SECRET, api_base_url=base_url,
                    rate_limit_ms=1, timeout_seconds=2.0, fiat_deposit_addresses={"EUR:SEPA": venue_iban(venue)})
    settings.update(overrides)
    return CcxtVenueClient(CcxtVenueSettings(**settings), retry=RetrySettings(max_attempts=3, base_delay=0.02),
                           breaker=CircuitBreaker(f"test:{venue}", failure_threshold=3, reset_timeout=30))


def native_client(world, venue: str = "binance") -> SimVenueClient:
    return SimVenueClient(venue, world.exchange_url, world.secrets.exchange_api_key, breaker=CircuitBreaker(f"native:{venue}"))


# ---------------------------------------------------------------------------- the unmodified ccxt class


def test_unmodified_ccxt_loads_markets_and_reads_the_account(world, binance):
    state = world.exchange.state
    ex = raw_ccxt(binance)
    markets = ex.load_markets()
    assert sorted(markets) == sorted(p["perps"] for p in state.venue_info() if p["name"] == "binance")[0]
    btc = markets["BTC/USDT:USDT"]
    assert btc["id"] == "BTCUSDT" and btc["swap"] and btc["linear"] and btc["precision"]["amount"] == 0.001
    assert ex.currencies["USDT"]["networks"]["TRC20"]["fee"] == 1.0  # from sapi capital/config/getall

    balance = ex.fetch_balance()
    usdt = state.balances("binance")["USDT"]
    upnl = sum(p.unrealized_pnl for p in state.positions("binance"))
    assert balance["USDT"]["free"] == pytest.approx(usdt.free)
    assert balance["USDT"]["used"] == pytest.approx(usdt.used)
    assert balance["USDT"]["total"] == pytest.approx(usdt.total + upnl)  # Binance: margin balance

    positions = {(p["symbol"], p["side"], p["contracts"]) for p in ex.fetch_positions()}
    assert positions == {(p.symbol, p.side, p.size) for p in state.positions("binance")}

    rates = ex.fetch_funding_rates()
    assert {s: r["fundingRate"] for s, r in rates.items()} == pytest.approx(
        {r.symbol: r.rate for r in state.funding_rates("binance")}
    )
    assert all(r["interval"] is None for r in rates.values())  # the premium index carries no interval


def test_unmodified_ccxt_order_lifecycle_with_binance_client_id_semantics(world, binance):
    state = world.exchange.state
    ex = raw_ccxt(binance)
    close = ex.create_order("BTC/USDT:USDT", "market", "sell", 0.5, None, {"reduceOnly": True, "newClientOrderId": "raw-close-1"})
    assert close["clientOrderId"] == "raw-close-1" and close["status"] == "closed" and close["reduceOnly"] is True
    assert next(p for p in state.positions("binance") if p.symbol == "BTC/USDT:USDT").size == pytest.approx(1.0)
    # Binance keeps client ids unique among *open* orders only: resending a filled order's id places
    # a second order. This is why the venue client looks up before it ever sends again.
    ex.create_order("BTC/USDT:USDT", "market", "sell", 0.5, None, {"reduceOnly": True, "newClientOrderId": "raw-close-1"})
    assert len(state.orders("binance")) == 2
    rest = ex.create_order("ETH/USDT:USDT", "limit", "buy", 1, 1000, {"newClientOrderId": "raw-rest-1"})
    with pytest.raises(ccxt.ExchangeError, match="-4116"):  # an open order holds that id
        ex.create_order("ETH/USDT:USDT", "limit", "buy", 1, 1000, {"newClientOrderId": "raw-rest-1"})
    assert ex.fetch_order(None, "ETH/USDT:USDT", {"clientOrderId": "raw-rest-1"})["id"] == rest["id"]
    assert ex.cancel_order(rest["id"], "ETH/USDT:USDT")["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound, match="-2011"):
        ex.cancel_order(rest["id"], "ETH/USDT:USDT")
    with pytest.raises(ccxt.OrderNotFound, match="-2013"):
        ex.fetch_order(None, "ETH/USDT:USDT", {"clientOrderId": "never-sent"})
    ex.transfer("USDT", 50, "linear", "spot")  # Binance pays withdrawals from spot, not the futures account
    withdrawal = ex.withdraw("USDT", 50, "sim:okx:USDT:TRC20", {"network": "TRC20", "withdrawOrderId": "raw-wd-1"})
    assert [w["id"] for w in ex.fetch_withdrawals(None, None, None, {"withdrawOrderId": "raw-wd-1"})] == [withdrawal["id"]]
    fees = ex.fetch_deposit_withdraw_fees()
    assert fees["USDT"]["networks"]["ERC20"]["withdraw"]["fee"] == 4.5


def test_bad_input_and_bad_signatures_get_binance_error_codes(world, binance):
    ex = raw_ccxt(binance)
    ex.load_markets()
    with pytest.raises(ccxt.BadRequest, match="-1102"):  # mandatory parameter missing
        ex.fapiPrivatePostOrder({"symbol": "BTCUSDT", "side": "BUY"})
    with pytest.raises(ccxt.BadSymbol, match="-1121"):
        ex.fapiPrivatePostOrder({"symbol": "DOGEUSDT", "side": "BUY", "type": "MARKET", "quantity": "1"})
    with pytest.raises(ccxt.ExchangeError, match="-2019"):  # margin insufficient
        ex.create_order("BTC/USDT:USDT", "market", "buy", 100, None, {"newClientOrderId": "too-big"})
    with pytest.raises(ccxt.ExchangeError, match="-2022"):  # reduce-only with nothing to reduce
        ex.create_order("SOL/USDT:USDT", "market", "buy", 1, None, {"reduceOnly": True})
    with pytest.raises(ccxt.BaseError, match="-4026"):
        ex.withdraw("USDT", 10_000_000, "sim:okx:USDT:TRC20", {"network": "TRC20"})
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        raw_ccxt(binance, secret="not-the-secret").fetch_balance()
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        raw_ccxt(binance, key="not-the-key").fetch_balance()
    skewed = raw_ccxt(binance)
    skewed.load_markets()
    skewed.options["timeDifference"] = -120_000  # our clock two minutes ahead of the server's
    with pytest.raises(ccxt.InvalidNonce, match="-1021"):
        skewed.fetch_balance()
    assert world.exchange.state.orders("binance") == []  # nothing was applied


# ---------------------------------------------------------------------------- CcxtVenueClient


def test_the_ccxt_client_reads_what_the_native_client_reads(world, binance, binance_servers):
    client, native = venue_client(binance), native_client(world)
    balances = {a: (b.free, b.used, b.total) for a, b in native.fetch_balance().items()}
    assert {a: (b.free, b.used, b.total) for a, b in client.fetch_balance().items()} == {
        a: pytest.approx(v) for a, v in balances.items()
    }  # total: the wallet, as on the simulator (ccxt's own total adds unrealised PnL)
    assert {(p.symbol, p.side, p.size, p.entry_price) for p in client.fetch_positions()} == {
        (p.symbol, p.side, p.size, p.entry_price) for p in native.fetch_positions()
    }
    rates = {r.symbol: r for r in client.fetch_funding_rates()}
    assert {s: (r.rate, r.interval_hours) for s, r in rates.items()} == {
        r.symbol: (pytest.approx(r.rate), 8.0) for r in native.fetch_funding_rates()  # Binance's documented 8 h
    }
    kraken = venue_client(binance_servers["kraken"], "kraken")
    assert {r.interval_hours for r in kraken.fetch_funding_rates()} == {4.0}  # from fundingInfo
    assert client.fetch_mark_prices() == pytest.approx({s: p for s, p in native.fetch_mark_prices().items() if ":" in s})
    rails = {(f.asset, f.network): (f.fee, f.min_amount) for f in client.fetch_deposit_withdraw_fees()}
    assert rails == {(f.asset, f.network): (f.fee, f.min_amount) for f in native.fetch_deposit_withdraw_fees()}
    assert client.fetch_deposit_address("USDT", "ARBITRUM").address == native.fetch_deposit_address("USDT", "ARBITRUM").address
    assert client.fetch_deposit_address("EUR", "SEPA").address == native.fetch_deposit_address("EUR", "SEPA").address


def test_a_reduce_only_order_sent_twice_is_one_order(world, binance):
    client = venue_client(binance)
    first = client.create_order("BTC/USDT:USDT", "market", "sell", 0.4, client_order_id="close-btc-1", reduce_only=True)
    again = client.create_order("BTC/USDT:USDT", "market", "sell", 0.4, client_order_id="close-btc-1", reduce_only=True)
    assert again.id == first.id and first.status == "closed" and first.reduce_only
    orders = world.exchange.state.orders("binance")
    assert len(orders) == 1 and orders[0].client_order_id == "close-btc-1" and orders[0].reduce_only
    assert client.fetch_order_by_client_id("close-btc-1").id == first.id  # found without its symbol


@pytest.mark.parametrize("hang_ms", [0, 2600], ids=["dropped-connection", "read-timeout"])
def test_an_order_whose_answer_is_lost_is_looked_up_not_resent(world, binance, hang_ms):
    fault = world.exchange.faults.add({"kind": "timeout_after_commit", "venue": "binance", "endpoint": "create_order",
                                       "count": 1, "hang_ms": hang_ms})
    order = venue_client(binance).create_order("ETH/USDT:USDT", "market", "buy", 2.0, client_order_id="hedge-eth-1", reduce_only=True)
    assert fault.hits == 1  # the venue applied it, and the answer never came back
    orders = world.exchange.state.orders("binance")
    assert [o.client_order_id for o in orders] == ["hedge-eth-1"] and order.client_order_id == "hedge-eth-1"
    assert order.status == "closed" and order.filled == 2.0


def test_5xx_and_429_are_retried_without_duplicates(world, binance):
    world.exchange.faults.add({"kind": "error_5xx", "venue": "binance", "endpoint": "create_order", "count": 2})
    world.exchange.faults.add({"kind": "rate_limit", "venue": "binance", "endpoint": "positions", "count": 2, "retry_after": 0.05})
    client = venue_client(binance)
    assert len(client.fetch_positions()) == len(world.exchange.state.positions("binance"))
    order = client.create_order("BTC/USDT:USDT", "market", "sell", 0.1, client_order_id="close-btc-5xx", reduce_only=True)
    assert order.status == "closed"
    assert [o.client_order_id for o in world.exchange.state.orders("binance")] == ["close-btc-5xx"]


def test_business_rejections_are_not_retried(world, binance):
    client = venue_client(binance)
    with pytest.raises(BusinessError) as margin:
        client.create_order("BTC/USDT:USDT", "market", "buy", 100, client_order_id="too-big-1")
    assert margin.value.code == "insufficient_margin"
    with pytest.raises(BusinessError) as reduce:
        client.create_order("SOL/USDT:USDT", "market", "buy", 1, client_order_id="nothing-to-reduce", reduce_only=True)
    assert reduce.value.code == "reduce_only_rejected"
    creates = [r for r in binance.api.request_log if r[:2] == ("POST", "/fapi/v1/order")]
    assert len(creates) == 2 and client.health()["breaker"]["state"] == "closed"


def test_stop_orders_and_cancels(world, binance):
    client = venue_client(binance)
    stop = client.create_order("BTC/USDT:USDT", "stop_market", "sell", 1.5, client_order_id="stop-btc-1",
                               reduce_only=True, stop_price=55_000)
    limit = client.create_order("ETH/USDT:USDT", "limit", "buy", 1.0, 2_000, client_order_id="bid-eth-1")
    open_orders = {o.client_order_id: o for o in client.fetch_open_orders()}
    assert open_orders["stop-btc-1"].type == "stop_market" and open_orders["stop-btc-1"].stop_price == 55_000
    assert open_orders["stop-btc-1"].reduce_only and open_orders["bid-eth-1"].type == "limit"
    assert client.cancel_order(stop.id).status == "canceled"
    assert client.cancel_order(stop.id).status == "canceled"  # twice is harmless
    cancelled = client.cancel_all_orders()
    assert [o.id for o in cancelled] == [limit.id]
    assert client.fetch_open_orders() == [] and world.exchange.state.orders("binance", status="open") == []


def test_withdrawals_are_sent_once(world, binance):
    state = world.exchange.state
    client = venue_client(binance)
    okx_before = state.balances("okx")["USDT"].total
    first = client.withdraw("USDT", 300, address="sim:okx:USDT:TRC20", network="TRC20", idempotency_key="rebalance-1-leg-1")
    again = client.withdraw("USDT", 300, address="sim:okx:USDT:TRC20", network="TRC20", idempotency_key="rebalance-1-leg-1")
    assert again.id == first.id and first.fee == 1.0 and first.network == "TRC20"
    world.exchange.faults.add({"kind": "timeout_after_commit", "venue": "binance", "endpoint": "create_withdrawal", "count": 1})
    second = client.withdraw("USDT", 200, address="sim:okx:USDT:ARBITRUM", network="ARBITRUM", idempotency_key="rebalance-1-leg-2")
    assert len(state.withdrawals("binance")) == 2 and second.idempotency_key == "rebalance-1-leg-2"
    deadline = time.monotonic() + 10
    while client.fetch_withdrawal("rebalance-1-leg-1").status != "completed" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.fetch_withdrawal("rebalance-1-leg-1").status == "completed"
    assert state.balances("okx")["USDT"].total >= okx_before + 300
    with pytest.raises(BusinessError) as no_cancel:
        client.cancel_withdrawal(second.id)
    assert no_cancel.value.code == "not_supported"


def test_an_unreachable_venue_is_transient_then_opens_the_breaker():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = venue_client(f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(TransientError) as refused:
        client.fetch_balance()  # three attempts, each refused at once
    assert not isinstance(refused.value, CircuitOpenError) and time.monotonic() - started < 5
    assert client.health()["breaker"]["state"] == "open"
    with pytest.raises(CircuitOpenError):
        client.fetch_balance()  # fails fast, nothing sent


def test_no_credential_in_any_log_line(world, binance, caplog):
    with caplog.at_level(logging.DEBUG):
        client = venue_client(binance)
        client.fetch_balance()
        client.create_order("BTC/USDT:USDT", "market", "sell", 0.1, client_order_id="log-check-1", reduce_only=True)
        client.withdraw("USDT", 20, address="sim:okx:USDT:TRC20", network="TRC20", idempotency_key="log-check-wd")
        with pytest.raises(BusinessError):
            venue_client(binance, secret="wrong-secret-value-123").fetch_balance()
    text = caplog.text
    assert "arb_orchestration.ccxt.binance" in text and "X-MBX-APIKEY" in text  # ccxt's DEBUG lines were there
    assert KEY not in text and SECRET not in text and "wrong-secret-value-123" not in text


# ---------------------------------------------------------------------------- the stop-loss saga on a ccxt venue


@pytest.fixture(scope="module")
def dagster_instance():
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp, instance_for_test(temp_dir=tmp) as instance:
        yield instance


def _stop_loss_resources(world, server: BinanceApiServer) -> dict:
    from dagster import EnvVar

    from arb_orchestration.resources.smtp import SmtpResource

    return {
        "exchange": CcxtExchangeResource(
            accounts=[CcxtVenueConfig(name="binance", exchange_id="binanceusdm", api_key=EnvVar("CCXT_BINANCE_API_KEY"),
                                      secret=EnvVar("CCXT_BINANCE_SECRET"), api_base_url=server.url, rate_limit_ms=1)],
            timeout_seconds=2.0, max_attempts=3, retry_base_delay=0.02,
        ),
        "smtp": SmtpResource(host=world.smtp_host, port=world.smtp_port, sender="arb-orchestration@localhost",
                             risk_team=["risk@localhost"], retry_base_delay=0.05),
    }


def _run_stop_loss(instance: DagsterInstance, world, server, monkeypatch, **config):
    from arb_orchestration.defs.stop_loss import emergency_stop_loss_saga

    monkeypatch.setenv("CCXT_BINANCE_API_KEY", KEY)
    monkeypatch.setenv("CCXT_BINANCE_SECRET", SECRET)
    return emergency_stop_loss_saga.execute_in_process(
        instance=instance, run_config={"deadline_seconds": 20.0, **config},
        resources=_stop_loss_resources(world, server), raise_on_error=False,
    )


def _run_text(instance: DagsterInstance, run_id: str) -> str:
    return "\n".join(repr(entry) for entry in instance.all_logs(run_id))


def test_stop_loss_flattens_the_ccxt_venue_once_even_when_an_answer_is_lost(world, binance, dagster_instance, monkeypatch):
    state = world.exchange.state
    before = [(p.symbol, p.side, p.size) for p in state.positions("binance")]
    assert before
    client = venue_client(binance)
    resting = client.create_order("ETH/USDT:USDT", "limit", "buy", 1.0, 2_000, client_order_id="resting-bid")
    fault = world.exchange.faults.add({"kind": "timeout_after_commit", "venue": "binance", "endpoint": "create_order", "count": 1})
    result = _run_stop_loss(dagster_instance, world, binance, monkeypatch, venues=["binance"], reason="ccxt venue drill")
    assert result.success
    assert fault.hits == 1
    assert state.positions("binance") == []
    closes = [o for o in state.orders("binance") if o.client_order_id != resting.client_order_id]
    assert len(closes) == len(before) and all(o.reduce_only and o.type == "market" and o.status == "closed" for o in closes)
    assert state.order_by_client_id("binance", "resting-bid").status == "canceled"
    [mail] = world.smtp.wait_for(1, timeout=10)
    assert mail.subject.startswith("[stop-loss] FLAT on 1 venue(s)") and "ccxt venue drill" in mail.body
    text = _run_text(dagster_instance, result.run_id)
    assert KEY not in text and SECRET not in text


def test_stop_loss_dry_run_on_the_ccxt_venue_reports_and_moves_nothing(world, binance, dagster_instance, monkeypatch):
    state = world.exchange.state
    before = [(p.symbol, p.side, p.size) for p in state.positions("binance")]
    result = _run_stop_loss(dagster_instance, world, binance, monkeypatch, venues=["binance"], dry_run=True)
    assert result.success
    assert [(p.symbol, p.side, p.size) for p in state.positions("binance")] == before
    assert state.orders("binance") == []
    assert not [r for r in binance.api.request_log if r[0] in {"POST", "DELETE"}]  # not one mutating request
    [mail] = world.smtp.wait_for(1, timeout=10)
    assert "DRY RUN" in mail.subject and "would sell 1.5 BTC/USDT:USDT" in mail.body
    text = _run_text(dagster_instance, result.run_id)
    assert KEY not in text and SECRET not in text
