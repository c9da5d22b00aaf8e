"""Fix: ccxt funding intervals given in days are read as days, and one that cannot be read is logged.

Before, only "h" and "m" were understood: a "1d" interval silently became the
documented default (8 h), mis-normalising the rate 3x. Now "d" is accepted, and
an interval that is present but not understood logs a warning naming the venue,
symbol and raw value before the next source or the default is used (funding
data must not stop the hedge). Valid "h"/"m" intervals read as before.
"""

from __future__ import annotations

import logging

import pytest

from arb_orchestration.resources.ccxt_venue import CcxtVenueClient, CcxtVenueSettings
from arb_orchestration.resources.resilience import CircuitBreaker, RetrySettings

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"


class FundingCcxt:
    """Just enough of a ccxt exchange for `fetch_funding_rates`: one rate per symbol with the given interval."""

    has = {"fetchFundingIntervals": False}

    def __init__(self, intervals: dict[str, object]):
        self.intervals = intervals
        self.markets = {s: {"swap": True, "active": True} for s in intervals}
        self.currencies = {}

    def load_markets(self):
        return self.markets

    def fetch_funding_rates(self, symbols=None):
        return {s: {"symbol": s, "fundingRate": 0.0001, "interval": i, "timestamp": 1_700_000_000_000}
                for s, i in self.intervals.items()}


def _rates(intervals: dict[str, object]) -> dict[str, float]:
    config = CcxtVenueSettings(name="okx", exchange_id="okx")
    client = CcxtVenueClient(config, retry=RetrySettings(max_attempts=1, base_delay=0.0),
                             breaker=CircuitBreaker("test-funding-interval"), sleep=lambda s: None,
                             exchange=FundingCcxt(intervals))
    return {r.symbol: r.interval_hours for r in client.fetch_funding_rates()}


@pytest.mark.parametrize("raw, hours", [("8h", 8.0), ("1h", 1.0), ("4 H", 4.0), ("480m", 8.0), ("0.5h", 0.5),
                                        ("1d", 24.0), ("2D", 48.0), ("0.5d", 12.0)])
def test_intervals_in_hours_minutes_and_days(raw, hours, caplog):
    with caplog.at_level(logging.WARNING, logger="arb_orchestration.resources.ccxt_venue"):
        assert _rates({BTC: raw}) == {BTC: pytest.approx(hours)}
    assert not [r for r in caplog.records if "funding interval" in r.getMessage()]


@pytest.mark.parametrize("raw", ["1w", "eight hours", "0h", "-1h"])
def test_an_interval_not_understood_is_logged_and_falls_back_to_the_default(raw, caplog):
    with caplog.at_level(logging.WARNING, logger="arb_orchestration.resources.ccxt_venue"):
        rates = _rates({BTC: raw, ETH: "4h"})
    assert rates == {BTC: 8.0, ETH: 4.0}  # okx's documented interval; the readable one is unaffected
    (warning,) = [r for r in caplog.records if "funding interval" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    message = warning.getMessage()
    assert "okx" in message and BTC in message and repr(raw) in message


def test_a_missing_interval_still_falls_back_without_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="arb_orchestration.resources.ccxt_venue"):
        assert _rates({BTC: None}) == {BTC: 8.0}
    assert not [r for r in caplog.records if "funding interval" in r.getMessage()]
