"""One pass over the venues: balances, positions, funding rates and marks, fetched concurrently.

Each venue is fetched in its own thread (the `VenueClient` contract allows it),
its four calls in sequence so a venue sees one connection from us at a time.
A venue that raises, or has not answered by the deadline, is recorded in
`errors` and contributes nothing: an observation is a complete picture of its
asset or it is not made. The caller decides what a missing venue means (the
sensor observes the others; `hedge_targets` refuses to plan).
"""

from __future__ import annotations

import concurrent.futures
import statistics
import time
from dataclasses import dataclass, field

from arb_orchestration.domain.hedging import base_asset, reference_price
from arb_orchestration.domain.models import Balance, FundingRate, Position
from arb_orchestration.resources.venue import ExchangeResource


@dataclass
class VenueState:
    venue: str
    balances: dict[str, Balance]
    positions: list[Position]
    funding_rates: list[FundingRate]
    marks: dict[str, float]
    fetched_at: float
    # The client itself: the observation sensor asks it for its position mode (`position_mode_from_client`
    # in checks.py) after the fetch, from what this fetch left cached; None in states built without one.
    client: object | None = None


@dataclass
class MarketSnapshot:
    """What each venue reported in one pass, and which venues failed (with a one-line reason)."""

    venues: list[str]
    states: dict[str, VenueState] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    started_at: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.errors and set(self.states) == set(self.venues)

    def balances(self) -> dict[str, dict[str, Balance]]:
        return {venue: state.balances for venue, state in self.states.items()}

    def positions(self) -> list[Position]:
        return [p for state in self.states.values() for p in state.positions]

    def funding_rates(self) -> list[FundingRate]:
        return [rate for state in self.states.values() for rate in state.funding_rates]

    def reference_prices(self) -> dict[str, float]:
        """USD price per asset: the median over venues that price it (one bad venue cannot skew it)."""
        assets: set[str] = set()
        for state in self.states.values():
            assets.update(state.balances)
            assets.update(base_asset(p.symbol) for p in state.positions)
            assets.update(base_asset(r.symbol) for r in state.funding_rates)
        prices: dict[str, float] = {}
        for asset in sorted(assets):
            quotes = [q for s in self.states.values() if (q := reference_price(asset, s.marks)) is not None]
            if quotes:
                prices[asset] = float(statistics.median(quotes))
        return prices

    def price_on(self, venue: str, asset: str, fallback: dict[str, float]) -> float | None:
        """The venue's own price for `asset`, else the cross-venue reference."""
        state = self.states.get(venue)
        own = reference_price(asset, state.marks) if state else None
        return own if own is not None else fallback.get(asset)


def _fetch_venue(exchange: ExchangeResource, venue: str) -> VenueState:
    client = exchange.venue(venue)
    balances = client.fetch_balance()
    positions = client.fetch_positions()
    funding = client.fetch_funding_rates()
    marks = client.fetch_mark_prices()
    read_mode = getattr(client, "position_mode", None)
    if read_mode is not None:
        # Inside this venue's deadline-bound fetch, so a hung exchange cannot stall the sensor's tick;
        # the client caches the answer, and never raises for it (an unread mode is "unknown").
        read_mode()
    return VenueState(
        venue=venue,
        balances=dict(balances),
        positions=list(positions),
        funding_rates=list(funding),
        marks=dict(marks),
        fetched_at=time.time(),
        client=client,
    )


def _describe(exc: BaseException) -> str:
    # Type and message only: resources put no credentials in their errors, and
    # a traceback here would only repeat the resource's own logging.
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]


def fetch_market_snapshot(
    exchange: ExchangeResource, venues: list[str], *, deadline_seconds: float = 40.0
) -> MarketSnapshot:
    """Fetch every venue in `venues` concurrently; never raises for a venue's failure."""
    snapshot = MarketSnapshot(venues=list(venues), started_at=time.time())
    if not venues:
        return snapshot
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(venues)), thread_name_prefix="market-data")
    try:
        futures = {pool.submit(_fetch_venue, exchange, venue): venue for venue in venues}
        done, not_done = concurrent.futures.wait(futures, timeout=deadline_seconds)
        for future in done:
            venue = futures[future]
            exc = future.exception()
            if exc is None:
                snapshot.states[venue] = future.result()
            else:
                snapshot.errors[venue] = _describe(exc)
        for future in not_done:
            snapshot.errors[futures[future]] = f"no answer within {deadline_seconds:g} s"
    finally:
        # Do not wait for stragglers: their results are discarded anyway.
        pool.shutdown(wait=False, cancel_futures=True)
    return snapshot
