"""Fakes for the market_data tests: an in-memory `ExchangeResource` and a small three-venue world.

`FakeExchange` is a real `ExchangeResource` subclass (so Dagster validates and
injects it like the simulator's), whose venues live in a process-wide registry
keyed by `scenario`: resource fields must be plain config, venue objects are
not. Each venue can be told to fail. `api_key` lets a test pass a secret as
`EnvVar` and check that the venue saw it (it refuses to answer otherwise).
The one test here checks the fake itself.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest

from arb_orchestration.domain.models import Balance, FundingRate, Position
from arb_orchestration.resources.venue import ExchangeResource, VenueClient

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
BTC_PRICE = 60_000.0
ETH_PRICE = 3_000.0


@dataclass
class FakeVenue(VenueClient):
    name: str
    balances: dict[str, float] = field(default_factory=dict)  # asset -> free (used = 0 unless given)
    used: dict[str, float] = field(default_factory=dict)
    positions: list[Position] = field(default_factory=list)
    funding: list[FundingRate] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    fail_with: Exception | None = None
    expected_api_key: str | None = None
    seen_api_key: str | None = None

    def _answer(self):
        if self.expected_api_key is not None and self.seen_api_key != self.expected_api_key:
            raise PermissionError("unauthorised")
        if self.fail_with is not None:
            raise self.fail_with

    def fetch_balance(self):
        self._answer()
        assets = set(self.balances) | set(self.used)
        return {
            a: Balance(
                asset=a,
                free=self.balances.get(a, 0.0),
                used=self.used.get(a, 0.0),
                total=self.balances.get(a, 0.0) + self.used.get(a, 0.0),
            )
            for a in sorted(assets)
        }

    def fetch_positions(self):
        self._answer()
        return list(self.positions)

    def fetch_funding_rates(self):
        self._answer()
        return list(self.funding)

    def fetch_mark_prices(self):
        self._answer()
        return dict(self.marks)

    def _unused(self, *args, **kwargs):
        raise NotImplementedError("market_data never trades")

    create_order = cancel_order = cancel_all_orders = fetch_open_orders = _unused
    fetch_order_by_client_id = fetch_deposit_withdraw_fees = fetch_deposit_address = _unused
    withdraw = fetch_withdrawal = cancel_withdrawal = _unused


SCENARIOS: dict[str, dict[str, FakeVenue]] = {}


class FakeExchange(ExchangeResource):
    """Venues from `SCENARIOS[scenario]`; `api_key` is handed to each venue as its credential."""

    scenario: str
    api_key: str = ""

    def venue_names(self) -> list[str]:
        return list(SCENARIOS[self.scenario])

    def venue(self, name: str) -> VenueClient:
        venue = SCENARIOS[self.scenario][name]
        venue.seen_api_key = self.api_key
        return venue


def marks() -> dict[str, float]:
    return {"BTC/USDT": BTC_PRICE, "ETH/USDT": ETH_PRICE, BTC: BTC_PRICE, ETH: ETH_PRICE, "USDC/USDT": 1.0}


def pos(venue: str, symbol: str, side: str, size: float, price: float, liq: float | None = None) -> Position:
    return Position(
        venue=venue,
        symbol=symbol,
        side=side,
        size=size,
        entry_price=price,
        mark_price=price,
        liquidation_price=liq,
        unrealized_pnl=0.0,
    )


def world(**overrides) -> dict[str, FakeVenue]:
    """Three venues, delta-neutral: spot BTC 1.0 / ETH 10 hedged by perps; hyperliquid funds hourly."""
    venues = {
        "binance": FakeVenue(
            "binance",
            balances={"USDT": 50_000.0, "BTC": 1.0, "ETH": 10.0},
            used={"USDT": 5_000.0},
            positions=[pos("binance", BTC, "short", 0.5, BTC_PRICE, liq=70_000.0)],
            funding=[
                FundingRate(venue="binance", symbol=BTC, rate=0.0001, interval_hours=8, mark_price=BTC_PRICE),
                FundingRate(venue="binance", symbol=ETH, rate=0.0001, interval_hours=8, mark_price=ETH_PRICE),
            ],
            marks=marks(),
        ),
        "okx": FakeVenue(
            "okx",
            balances={"USDT": 40_000.0, "EUR": 1_000.0},  # EUR has no market here: unpriced
            positions=[pos("okx", ETH, "short", 10.0, ETH_PRICE, liq=3_600.0)],
            funding=[
                FundingRate(venue="okx", symbol=BTC, rate=0.00008, interval_hours=8),
                FundingRate(venue="okx", symbol=ETH, rate=-0.00002, interval_hours=8),
            ],
            marks=marks(),
        ),
        "hyperliquid": FakeVenue(
            "hyperliquid",
            balances={"USDT": 20_000.0, "USDC": 30_000.0},
            positions=[pos("hyperliquid", BTC, "short", 0.5, BTC_PRICE, liq=75_000.0)],
            funding=[FundingRate(venue="hyperliquid", symbol=BTC, rate=0.00005, interval_hours=1)],
            marks={BTC: BTC_PRICE},
        ),
    }
    venues.update(overrides)
    return venues


def register(venues: dict[str, FakeVenue]) -> str:
    """Register a scenario; returns its name for `FakeExchange(scenario=...)`."""
    name = uuid.uuid4().hex
    SCENARIOS[name] = venues
    return name


def fake_exchange(venues: dict[str, FakeVenue] | None = None, **kwargs) -> FakeExchange:
    return FakeExchange(scenario=register(venues if venues is not None else world()), **kwargs)


def test_fake_exchange_answers_and_fails_on_demand():
    exchange = fake_exchange(world(okx=FakeVenue("okx", fail_with=TimeoutError("read timed out"))))
    assert exchange.venue_names() == ["binance", "okx", "hyperliquid"]
    assert exchange.venue("binance").fetch_balance()["USDT"].total == 55_000.0
    with pytest.raises(TimeoutError):
        exchange.venue("okx").fetch_positions()
    exchange = fake_exchange({"x": FakeVenue("x", expected_api_key="k")}, api_key="wrong")
    with pytest.raises(PermissionError):
        exchange.venue("x").fetch_balance()
