"""`funding_rate_hedge` end to end with every venue reached through `CcxtExchangeResource`: each
simulated venue also speaks Binance's REST dialect (same simulator state), so the job runs on ccxt's
unmodified `binanceusdm` class throughout: funding intervals come from Binance's fundingInfo (4 h
kraken, 1 h hyperliquid) or its documented 8 h, the drift is hedged with the same two market orders as
on the native API, every position gets its conditional stop through Binance's Algo Order API, a second
run places nothing, and no credential reaches the run's events. No live exchange is contacted."""

from __future__ import annotations

import secrets

import pytest
from dagster import EnvVar, RetryPolicy, instance_for_test

from arb_orchestration.defs.hedging import HedgeJournalResource, build_funding_rate_hedge
from arb_orchestration.resources.ccxt_venue import CcxtExchangeResource, CcxtVenueConfig
from arb_orchestration.resources.resilience import reset_breakers
from arb_orchestration.resources.smtp import SmtpResource
from arb_orchestration.sim.real_api_binance import serve_binance_venue

pytestmark = pytest.mark.integration

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
KEY = "hedge-" + secrets.token_hex(16)
SECRET = "hedge-" + secrets.token_hex(24)
JOB = build_funding_rate_hedge(retry_policy=RetryPolicy(max_retries=1, delay=0.05)).job


def binance_dialects(local_world, key: str, secret: str):
    """Every venue of the world behind the simulator's Binance API (one HTTP server each), stopped after."""
    servers = {
        venue: serve_binance_venue(local_world.exchange, venue=venue, api_key=key, secret=secret)
        for venue in local_world.exchange.state.venue_names()
    }
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def dialect_servers(local_world):
    yield from binance_dialects(local_world, KEY, SECRET)


@pytest.fixture
def servers(world, dialect_servers, monkeypatch):
    for server in dialect_servers.values():
        server.api.reset()
    reset_breakers()
    monkeypatch.setenv("CCXT_TEST_API_KEY", KEY)
    monkeypatch.setenv("CCXT_TEST_SECRET", SECRET)
    return dialect_servers


def _resources(world, servers) -> dict:
    return {
        "exchange": CcxtExchangeResource(
            accounts=[
                CcxtVenueConfig(name=venue, exchange_id="binanceusdm", api_key=EnvVar("CCXT_TEST_API_KEY"),
                                secret=EnvVar("CCXT_TEST_SECRET"), api_base_url=server.url, rate_limit_ms=1)
                for venue, server in servers.items()
            ],
            timeout_seconds=3.0, max_attempts=3, retry_base_delay=0.02,
        ),
        "smtp": SmtpResource(host=world.smtp_host, port=world.smtp_port, sender="arb-orchestration@localhost",
                             risk_team=["risk@localhost"], retry_base_delay=0.05),
        "hedge_journal": HedgeJournalResource(),
    }


def test_the_hedge_job_runs_on_ccxt_venues_like_on_the_native_api(world, servers):
    state = world.exchange.state
    with instance_for_test() as instance:
        first = JOB.execute_in_process(instance=instance, resources=_resources(world, servers), raise_on_error=False)
        assert first.success
        orders = {v: state.orders(v) for v in state.venue_names()}
        markets = {v: [(o.symbol, o.side, o.amount) for o in os if o.type == "market"] for v, os in orders.items()}
        assert markets["bybit"] == [(BTC, "sell", pytest.approx(0.04))]
        assert markets["okx"] == [(ETH, "buy", pytest.approx(0.45))]
        assert sum(len(m) for m in markets.values()) == 2

        positions = [p for v in state.venue_names() for p in state.positions(v)]
        stops = [o for os in orders.values() for o in os if o.type == "stop_market" and o.status == "open"]
        assert len(stops) == len(positions) == 12
        for p in positions:
            (stop,) = [s for s in stops if (s.venue, s.symbol) == (p.venue, p.symbol)]
            assert stop.reduce_only and stop.side == ("sell" if p.side == "long" else "buy") and stop.amount == p.size
            assert abs(stop.stop_price - p.mark_price) / p.mark_price == pytest.approx(0.05, abs=1e-3)  # tick-rounded
        algo_posts = sum(1 for s in servers.values() for r in s.api.request_log if r[:2] == ("POST", "/fapi/v1/algoOrder"))
        assert algo_posts == 12

        counts = {v: len(os) for v, os in orders.items()}
        second = JOB.execute_in_process(instance=instance, resources=_resources(world, servers), raise_on_error=False)
        assert second.success
        assert {v: len(state.orders(v)) for v in state.venue_names()} == counts  # nothing placed twice

        text = "\n".join(repr(e) for run in (first, second) for e in instance.all_logs(run.run_id))
        assert "kraken" in text and KEY not in text and SECRET not in text
