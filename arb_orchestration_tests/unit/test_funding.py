"""Funding-rate maths: normalisation across intervals, APR, bps, and the deviation threshold edges."""

from __future__ import annotations

import math

import pytest

from arb_orchestration.domain.funding import (
    FundingDeviation,
    RatePoint,
    apr,
    deviation_bps,
    normalise_rate,
    normalised,
    to_bps,
)
from arb_orchestration.domain.models import FundingRate


def rate(value: float, hours: float = 8.0, venue: str = "binance", symbol: str = "BTC/USDT:USDT") -> FundingRate:
    return FundingRate(venue=venue, symbol=symbol, rate=value, interval_hours=hours)


def test_one_hour_rate_is_eight_times_larger_per_8h():
    assert normalise_rate(0.0001, 1) == pytest.approx(0.0008)
    assert normalise_rate(0.0001, 8) == pytest.approx(0.0001)
    assert normalise_rate(0.0001, 4) == pytest.approx(0.0002)
    # Same economics on a 1 h venue and an 8 h venue compare equal once normalised.
    assert normalised(rate(0.0000125, 1.0)) == pytest.approx(normalised(rate(0.0001, 8.0)))


def test_normalise_to_another_basis_and_back():
    per_hour = normalise_rate(0.0008, 8, basis_hours=1)
    assert per_hour == pytest.approx(0.0001)
    assert normalise_rate(per_hour, 1) == pytest.approx(0.0008)


@pytest.mark.parametrize("hours", [0, -1, math.inf, math.nan])
def test_invalid_interval_is_rejected(hours):
    with pytest.raises(ValueError):
        normalise_rate(0.0001, hours)
    with pytest.raises(ValueError):
        apr(0.0001, hours)


def test_apr_is_simple_annualisation():
    assert apr(0.0001, 8) == pytest.approx(0.1095)  # 1095 intervals a year
    assert apr(0.0001, 1) == pytest.approx(0.876)
    assert apr(-0.0001, 8) == pytest.approx(-0.1095)


def test_bps_units():
    assert to_bps(0.0001) == pytest.approx(1.0)
    assert deviation_bps(0.0001, 0.0004) == pytest.approx(3.0)
    assert deviation_bps(0.0004, 0.0001) == pytest.approx(-3.0)


def test_deviation_exactly_at_threshold_does_not_trigger_and_just_above_does():
    check = FundingDeviation(threshold_bps=20)
    at = check.check(RatePoint(0.0010, 8), rate(0.0030))
    assert at.delta_bps == pytest.approx(20.0)
    assert not at.exceeded
    noisy = check.check(RatePoint(0.0022, 8), rate(0.0022 + 0.0020))
    assert noisy.delta_bps > 20.0  # 20.000000000000004 in binary floating point
    assert not noisy.exceeded
    above = check.check(RatePoint(0.0010, 8), rate(0.0030001))
    assert above.exceeded
    below_negative = check.check(RatePoint(0.0030, 8), rate(0.0010))
    assert below_negative.delta_bps == pytest.approx(-20.0)
    assert not below_negative.exceeded
    assert check.check(RatePoint(0.0030, 8), rate(0.0009999)).exceeded


def test_deviation_is_measured_after_normalisation():
    check = FundingDeviation()  # 20 bps per 8 h
    # Hedged at 1 bp/8h on an 8 h schedule; the venue now pays 1 bp per hour = 8 bp/8h: 7 bps move.
    moved = check.check(RatePoint(0.0001, 8), rate(0.0001, hours=1))
    assert moved.delta_bps == pytest.approx(7.0)
    assert not moved.exceeded
    # 4 bp per hour = 32 bp/8h against 1 bp/8h: 31 bps, over the threshold although the raw rates differ by 3 bp.
    big = check.check(RatePoint(0.0001, 8), rate(0.0004, hours=1))
    assert big.delta_bps == pytest.approx(31.0)
    assert big.exceeded
    assert "exceeds" in big.reason


def test_no_baseline_triggers_unless_configured_otherwise():
    assert FundingDeviation().check(None, rate(0.0001)).exceeded
    quiet = FundingDeviation(trigger_without_baseline=False).check(None, rate(0.0001))
    assert not quiet.exceeded and quiet.delta_bps is None
    assert "no rate recorded" in quiet.reason


def test_evaluate_keys_by_venue_and_symbol():
    check = FundingDeviation(threshold_bps=20)
    last = {
        ("binance", "BTC/USDT:USDT"): rate(0.0001),
        ("hyperliquid", "BTC/USDT:USDT"): rate(0.0000125, hours=1, venue="hyperliquid"),
    }
    now = [
        rate(0.0001),  # unchanged
        rate(0.0001, hours=1, venue="hyperliquid"),  # 1 -> 8 bp/8h: 7 bps
        rate(0.0005, venue="okx"),  # never hedged
        rate(0.0040, venue="binance", symbol="ETH/USDT:USDT"),  # never hedged
    ]
    results = check.evaluate(last, now)
    assert [r.exceeded for r in results] == [False, False, True, True]
    assert [r.venue for r in check.exceeded(last, now)] == ["okx", "binance"]


def test_threshold_must_be_sane():
    with pytest.raises(ValueError):
        FundingDeviation(threshold_bps=-1)
    with pytest.raises(ValueError):
        FundingDeviation(basis_hours=0)


def test_a_zero_threshold_is_allowed_and_any_move_then_triggers():
    check = FundingDeviation(threshold_bps=0)
    assert check.check(RatePoint(0.0001, 8), rate(0.00011)).exceeded  # +0.1 bp
    assert not check.check(RatePoint(0.0001, 8), rate(0.0001)).exceeded  # no move


def test_the_reason_quotes_both_rates_per_8h_the_move_and_the_threshold():
    # Hedged at 1 bp per 8 h; now 4 bp per hour = 32 bp per 8 h: +31 bps against a 20 bps threshold.
    moved = FundingDeviation().check(RatePoint(0.0001, 8), rate(0.0004, hours=1))
    assert moved.reason == (
        "binance BTC/USDT:USDT: 1.00 -> 32.00 bp/8h, moved +31.00 bps, exceeds the 20 bps threshold"
    )
    # Down from 3 bp per 4 h (6 bp per 8 h) to 1 bp per 8 h: -5 bps, within.
    within = FundingDeviation().check(RatePoint(0.0003, 4), rate(0.0001))
    assert within.reason == "binance BTC/USDT:USDT: 6.00 -> 1.00 bp/8h, moved -5.00 bps, within the 20 bps threshold"
    # Hedged when funding was exactly zero: the previous rate is 0.00, not missing.
    from_zero = FundingDeviation().check(RatePoint(0.0, 8), rate(0.0025))
    assert from_zero.reason == "binance BTC/USDT:USDT: 0.00 -> 25.00 bp/8h, moved +25.00 bps, exceeds the 20 bps threshold"
