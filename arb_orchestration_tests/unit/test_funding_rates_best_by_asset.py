"""`funding_rates`' best-venue table compares every perp of a base asset, like `plan_hedges` and the hedge
summary (`defs/hedging/legs.best_markets`): a USDC-margined perp paying more than every USDT one is the best
short, each side names its symbol, and different settle assets are flagged (review follow-up)."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance

from arb_orchestration.defs.market_data.keys import FUNDING_RATES_KEY
from arb_orchestration.domain.models import FundingRate
from arb_orchestration_tests.unit.test_market_data import defs_for, latest, rows
from arb_orchestration_tests.unit.test_market_data_fakes import BTC, BTC_PRICE, FakeVenue, fake_exchange, world

BTC_USDC = "BTC/USDC:USDC"


def test_best_venue_table_groups_usdt_and_usdc_perps_by_base_asset():
    venues = world()
    # hyperliquid lists only the USDC perp, paying 2 bp/h = 16 bp/8h: above binance's 1 bp and okx's 0.8 bp (USDT).
    venues["hyperliquid"] = FakeVenue(
        "hyperliquid", balances={"USDC": 30_000.0}, marks={BTC_USDC: BTC_PRICE},
        funding=[FundingRate(venue="hyperliquid", symbol=BTC_USDC, rate=0.0002, interval_hours=1)],
    )
    job = defs_for(fake_exchange(venues)).resolve_job_def("observe_market_state_job")
    with DagsterInstance.ephemeral() as instance:
        assert job.execute_in_process(instance=instance).success
        funding = latest(instance, FUNDING_RATES_KEY)
    assert "best_venue_per_symbol" not in funding
    best = {r["asset"]: r for r in rows(funding["best_venue_per_asset"])}
    assert set(best) == {"BTC", "ETH"}
    btc = best["BTC"]
    assert (btc["short_on"], btc["short_symbol"], btc["short_rate_8h_bps"]) == ("hyperliquid", BTC_USDC, 16.0)
    assert (btc["long_on"], btc["long_symbol"], btc["long_rate_8h_bps"]) == ("okx", BTC, 0.8)
    assert btc["spread_8h_bps"] == pytest.approx(15.2)
    assert btc["mixed_settle"] is True
    eth = best["ETH"]
    assert (eth["short_on"], eth["long_on"], eth["mixed_settle"]) == ("binance", "okx", False)
