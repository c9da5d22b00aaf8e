"""A balance the venue reported as NaN fails its floor check (comparisons with NaN are all false)."""

from __future__ import annotations

import math

from dagster import AssetCheckSeverity

from arb_orchestration.defs.market_data.checks import balance_floors_outcome
from arb_orchestration.defs.market_data.policy import BalanceFloors


def test_a_nan_free_balance_is_below_its_floor():
    floors = BalanceFloors(default={"USDT": 10_000.0})
    outcome = balance_floors_outcome("okx", {"USDT": math.nan}, floors)
    assert outcome.passed is False and outcome.severity == AssetCheckSeverity.ERROR
    assert "below floor" in outcome.description
