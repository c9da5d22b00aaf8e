"""A per-venue market_data floor of 0 switches the `*` default off for that venue in the rebalance policy too.

`BalanceFloors.floors_for(v)` drops zero floors, and `RebalancePolicyConfig.policy()` builds its minimum
floors from the market_data policy, so a reviewer asked whether such a venue falls back to the `*` default.
It must not: the venue's own entry (with its 0) is what `TargetPolicy.minimum_floor` reads, and a venue
below the default floor but above its own (0) floor is not in deficit.
"""

from __future__ import annotations

import pytest

from arb_orchestration.defs.market_data.policy import BalanceFloors, MarketDataPolicy
from arb_orchestration.defs.rebalance import config as rebalance_config
from arb_orchestration.defs.rebalance.config import RebalanceConfig
from arb_orchestration.domain.rebalance import compute_targets

FLOORS = BalanceFloors(
    default={"USDT": 10_000.0, "USDC": 5_000.0},
    per_venue={"hyperliquid": {"USDT": 0.0, "USDC": 20_000.0}, "okx": {"USDT": 0.0, "USDC": 0.0}},
)


@pytest.fixture
def market_data_floors(monkeypatch):
    monkeypatch.setattr(rebalance_config, "MARKET_DATA_POLICY", MarketDataPolicy(floors=FLOORS))


def test_a_per_venue_zero_floor_is_not_replaced_by_the_default(market_data_floors):
    policy = RebalanceConfig().policy()
    assert policy.minimum_floor("hyperliquid", "USDT") == 0.0
    assert policy.minimum_floor("hyperliquid", "USDC") == 20_000.0
    assert policy.minimum_floor("okx", "USDT") == 0.0 and policy.minimum_floor("okx", "USDC") == 0.0
    assert policy.minimum_floor("bybit", "USDT") == 10_000.0 and policy.minimum_floor("bybit", "USDC") == 5_000.0
    # Explicit, not implied by absence: the venue's entry carries its zeros (and the defaults it keeps).
    assert policy.minimum_floors["okx"] == {"USDT": 0.0, "USDC": 0.0}
    assert policy.minimum_floors["hyperliquid"] == {"USDT": 0.0, "USDC": 20_000.0}


def test_a_venue_whose_market_data_floor_is_zero_is_not_refilled_to_the_default(market_data_floors):
    # No run-config floors: only the market_data floors count.
    policy = RebalanceConfig(floors={"USDT": 0.0, "USDC": 0.0}).policy()
    targets = compute_targets(policy, {"okx": {"USDT": 100.0}, "bybit": {"USDT": 100.0}, "binance": {"USDT": 90_000.0}})
    rows = {row.venue: row for row in targets.rows}
    assert rows["okx"].floor == 0.0 and rows["okx"].deficit == 0.0
    assert rows["bybit"].floor == 10_000.0 and rows["bybit"].deficit == pytest.approx(11_900.0)
    assert targets.needs() == {"USDT": pytest.approx(11_900.0)}
