"""Asset keys of the market_data domain, and the venues they exist for.

Keys read as paths: ``venues/<venue>/balances``, ``venues/<venue>/positions``,
``funding_rates``, ``hedge_targets``. The venue list comes from settings (the
same `EXCHANGE_VENUES` the exchange resource is configured with), read when the
code location loads: no network.
"""

from __future__ import annotations

from dagster import AssetKey

from arb_orchestration import settings

FUNDING_RATES_KEY = AssetKey("funding_rates")
HEDGE_TARGETS_KEY = AssetKey("hedge_targets")
GROUP_NAME = "market_data"

BALANCES_FLOORS_CHECK = "balances_above_floors"
OBSERVATION_FRESH_CHECK = "observation_fresh"
HEDGE_DRIFT_CHECK = "hedge_drift_within_tolerance"


def balances_key(venue: str) -> AssetKey:
    return AssetKey(["venues", venue, "balances"])


def positions_key(venue: str) -> AssetKey:
    return AssetKey(["venues", venue, "positions"])


def observable_keys(venues: list[str]) -> list[AssetKey]:
    """Every asset the observation sensor and job report on, in a stable order."""
    return [k for venue in venues for k in (balances_key(venue), positions_key(venue))] + [FUNDING_RATES_KEY]


def configured_venues() -> list[str]:
    """Venue names from `EXCHANGE_VENUES` (validated; a bad value fails the load naming the variable)."""
    return settings.get_venues("EXCHANGE_VENUES")
