"""Dagster definitions of the market_data domain: observed venue state, hedge targets, their checks.

Assets (keys read as paths)
    venues/<venue>/balances, venues/<venue>/positions, funding_rates   observed (AssetSpec)
    hedge_targets                                                     materialised, deps on all of them
Checks
    balances_above_floors (per venue balances), observation_fresh (every observed asset),
    hedge_drift_within_tolerance (hedge_targets)
Job / sensors
    observe_market_state_job, market_state_observation_sensor, market_state_freshness_sensor

Venue names come from `EXCHANGE_VENUES` when the code location loads; nothing
here touches the network until a sensor ticks or a run starts.
"""

from __future__ import annotations

from dagster import Definitions

from arb_orchestration.defs.market_data.assets import build_hedge_targets, build_observable_specs
from arb_orchestration.defs.market_data.checks import (
    build_balance_floor_checks,
    build_freshness_checks,
    build_position_mode_checks,
)
from arb_orchestration.defs.market_data.jobs import build_observe_market_state_job
from arb_orchestration.defs.market_data.keys import configured_venues
from arb_orchestration.defs.market_data.policy import DEFAULT_POLICY, MarketDataPolicy
from arb_orchestration.defs.market_data.sensors import build_freshness_sensor, build_observation_sensor


def build_market_data_defs(venues: list[str], policy: MarketDataPolicy = DEFAULT_POLICY) -> Definitions:
    """The domain's definitions for these venues (resources come from `definitions.py`)."""
    venues = list(dict.fromkeys(venues))
    return Definitions(
        assets=[*build_observable_specs(venues), build_hedge_targets(venues, policy)],
        asset_checks=[build_balance_floor_checks(venues, policy), build_freshness_checks(venues, policy),
                      build_position_mode_checks(venues)],
        jobs=[build_observe_market_state_job(venues, policy)],
        sensors=[build_observation_sensor(venues, policy), build_freshness_sensor(venues, policy)],
    )


defs = build_market_data_defs(configured_venues())
