"""Funding-rate arithmetic: normalise, annualise, compare. Pure: no Dagster, no I/O.

Units, everywhere in this module:

- a **rate** is a *fraction per funding interval*, as venues publish it and as
  `FundingRate.rate` holds it: ``0.0001`` means 0.01 % = 1 bp paid per interval.
  A positive rate means longs pay shorts.
- an **interval** is in hours (8 on most venues, 4 on some, 1 on hyperliquid).
- a **normalised rate** is a fraction per ``basis_hours`` (8 h unless said
  otherwise), so rates from venues with different intervals compare directly:
  1 bp per hour is 8 bp per 8 h.
- **APR** is a fraction per year, simple (not compounded): 0.1095 = 10.95 %.
- **bps** (basis points) appear only where the name says so: 1 bp = 0.0001.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from arb_orchestration.domain.models import FundingRate

DEFAULT_BASIS_HOURS = 8.0
HOURS_PER_YEAR = 24.0 * 365.0
BPS_PER_UNIT = 10_000.0
DEFAULT_DEVIATION_THRESHOLD_BPS = 20.0
# Float noise allowance when comparing a deviation with its threshold, in bps:
# (0.0022 + 0.002) - 0.0022 is 20.000000000000004 bps in binary floating point.
_BPS_EPSILON = 1e-9


def _check_hours(name: str, hours: float) -> None:
    if not (hours > 0 and math.isfinite(hours)):
        raise ValueError(f"{name} must be a positive number of hours, got {hours!r}")


def normalise_rate(rate: float, interval_hours: float, basis_hours: float = DEFAULT_BASIS_HOURS) -> float:
    """A rate per `interval_hours` expressed per `basis_hours` (fraction in, fraction out).

    ``normalise_rate(0.0001, 1)`` is ``0.0008``: 1 bp each hour is 8 bp per 8 h.
    """
    _check_hours("interval_hours", interval_hours)
    _check_hours("basis_hours", basis_hours)
    return rate * basis_hours / interval_hours


def normalised(funding: FundingRate, basis_hours: float = DEFAULT_BASIS_HOURS) -> float:
    """`funding.rate` as a fraction per `basis_hours` (8 h by default)."""
    return normalise_rate(funding.rate, funding.interval_hours, basis_hours)


def apr(rate: float, interval_hours: float) -> float:
    """Simple annualised rate (fraction per year) of a rate paid every `interval_hours`.

    ``apr(0.0001, 8)`` is 0.1095 (10.95 % a year: 1095 intervals of 1 bp).
    """
    _check_hours("interval_hours", interval_hours)
    return rate * HOURS_PER_YEAR / interval_hours


def to_bps(fraction: float) -> float:
    """A fraction in basis points: 0.0001 -> 1.0."""
    return fraction * BPS_PER_UNIT


def deviation_bps(previous_rate: float, current_rate: float) -> float:
    """Signed change from `previous_rate` to `current_rate`, in bps.

    Both rates must already be normalised to the same basis (fractions per 8 h, say);
    the result is in bps *per that basis*.
    """
    return (current_rate - previous_rate) * BPS_PER_UNIT


@dataclass(frozen=True)
class RatePoint:
    """A funding rate as it stood at some moment (e.g. when the position was last hedged)."""

    rate: float  # fraction per interval
    interval_hours: float
    at: float | None = None  # epoch seconds

    @classmethod
    def of(cls, funding: FundingRate) -> "RatePoint":
        return cls(rate=funding.rate, interval_hours=funding.interval_hours, at=funding.observed_at)


@dataclass(frozen=True)
class DeviationResult:
    """How one market's funding moved since the last hedge, normalised to `basis_hours`."""

    venue: str
    symbol: str
    previous_rate: float | None  # fraction per basis_hours; None when never hedged
    current_rate: float  # fraction per basis_hours
    delta_bps: float | None  # current - previous, bps per basis_hours; None without a baseline
    threshold_bps: float
    exceeded: bool
    basis_hours: float = DEFAULT_BASIS_HOURS

    @property
    def reason(self) -> str:
        where = f"{self.venue} {self.symbol}"
        now = f"{to_bps(self.current_rate):.2f} bp/{self.basis_hours:g}h"
        if self.delta_bps is None:
            return f"{where}: no rate recorded at the last hedge (now {now})"
        was = f"{to_bps(self.previous_rate or 0.0):.2f}"
        verdict = "exceeds" if self.exceeded else "within"
        return (
            f"{where}: {was} -> {now}, moved {self.delta_bps:+.2f} bps, "
            f"{verdict} the {self.threshold_bps:g} bps threshold"
        )


@dataclass(frozen=True)
class FundingDeviation:
    """Has a market's funding moved far enough since the last hedge to hedge again?

    Both rates are normalised to `basis_hours` before comparing, so a venue that
    switched from 8 h to 1 h intervals is not mistaken for an 8x move. The move
    counts when ``|delta| > threshold_bps`` (strictly; exactly at the threshold
    does not trigger). A market with no rate recorded at the last hedge counts as
    exceeded when `trigger_without_baseline` (the default: it was never hedged
    against its current funding).
    """

    threshold_bps: float = DEFAULT_DEVIATION_THRESHOLD_BPS
    basis_hours: float = DEFAULT_BASIS_HOURS
    trigger_without_baseline: bool = True

    def __post_init__(self) -> None:
        if not (self.threshold_bps >= 0 and math.isfinite(self.threshold_bps)):
            raise ValueError(f"threshold_bps must be a non-negative number, got {self.threshold_bps!r}")
        _check_hours("basis_hours", self.basis_hours)

    def check(self, previous: RatePoint | FundingRate | None, current: FundingRate) -> DeviationResult:
        """Compare `current` with the rate at the last hedge (`previous`, or None if never hedged)."""
        current_norm = normalised(current, self.basis_hours)
        if previous is None:
            return DeviationResult(
                venue=current.venue,
                symbol=current.symbol,
                previous_rate=None,
                current_rate=current_norm,
                delta_bps=None,
                threshold_bps=self.threshold_bps,
                exceeded=self.trigger_without_baseline,
                basis_hours=self.basis_hours,
            )
        previous_norm = normalise_rate(previous.rate, previous.interval_hours, self.basis_hours)
        delta = deviation_bps(previous_norm, current_norm)
        return DeviationResult(
            venue=current.venue,
            symbol=current.symbol,
            previous_rate=previous_norm,
            current_rate=current_norm,
            delta_bps=delta,
            threshold_bps=self.threshold_bps,
            exceeded=abs(delta) > self.threshold_bps + _BPS_EPSILON,
            basis_hours=self.basis_hours,
        )

    def evaluate(
        self,
        at_last_hedge: Mapping[tuple[str, str], RatePoint | FundingRate],
        current: Iterable[FundingRate],
    ) -> list[DeviationResult]:
        """One result per current rate; `at_last_hedge` is keyed by ``(venue, symbol)``."""
        return [self.check(at_last_hedge.get((rate.venue, rate.symbol)), rate) for rate in current]

    def exceeded(
        self,
        at_last_hedge: Mapping[tuple[str, str], RatePoint | FundingRate],
        current: Iterable[FundingRate],
    ) -> list[DeviationResult]:
        """Only the markets whose move exceeds the threshold."""
        return [result for result in self.evaluate(at_last_hedge, current) if result.exceeded]
