"""Review: funding normalisation and the 20 bps deviation threshold across 1/2/4/8/24 h intervals.

A move of exactly 20 bps per 8 h, between rates published on any two intervals,
does not trigger (strictly greater); 20.01 bps does, either way; the same
8 h-equivalent rate on two intervals is no move at all; a 0 or missing
interval is refused instead of dividing by it.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from arb_orchestration.domain.funding import FundingDeviation, RatePoint, normalise_rate
from arb_orchestration.domain.models import FundingRate

INTERVALS = st.sampled_from([1.0, 2.0, 4.0, 8.0, 24.0])


def _rate(bps_8h: float, hours: float) -> float:
    """The per-interval fraction that is `bps_8h` bps per 8 h."""
    return bps_8h / 1e4 * hours / 8.0


@settings(max_examples=300, deadline=None, derandomize=True)
@given(previous=st.integers(-500, 500), before=INTERVALS, after=INTERVALS, sign=st.sampled_from([-1, 1]),
       extra=st.sampled_from([0.0, 0.01, -0.01]))
def test_the_threshold_is_strict_at_20_bps_whatever_the_intervals(previous, before, after, sign, extra):
    current = FundingRate(venue="v", symbol="BTC/USDT:USDT", rate=_rate(previous + sign * (20 + extra), after),
                          interval_hours=after)
    result = FundingDeviation().check(RatePoint(_rate(previous, before), before), current)
    assert result.exceeded == (extra > 0)
    assert result.delta_bps == pytest.approx(sign * (20 + extra), abs=1e-6)


def test_one_bp_an_hour_is_eight_per_8h_and_a_switch_of_interval_is_no_move():
    assert normalise_rate(0.0001, 1) == pytest.approx(0.0008)
    assert normalise_rate(0.0003, 24) == pytest.approx(0.0001)
    switched = FundingRate(venue="v", symbol="BTC/USDT:USDT", rate=0.0001, interval_hours=1)
    assert not FundingDeviation().check(RatePoint(0.0008, 8.0), switched).exceeded


@pytest.mark.parametrize("hours", [0.0, -8.0])
def test_a_zero_or_negative_interval_is_refused(hours):
    with pytest.raises(ValidationError):
        FundingRate(venue="v", symbol="BTC/USDT:USDT", rate=0.0001, interval_hours=hours)
    with pytest.raises(ValueError):
        normalise_rate(0.0001, hours)
    with pytest.raises(ValidationError):
        FundingRate(venue="v", symbol="BTC/USDT:USDT", rate=0.0001)  # missing interval
