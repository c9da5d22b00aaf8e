"""Risk policy of the market_data domain: balance floors, freshness windows, hedge band.

Policy is code: reviewed and versioned with the checks that enforce it.
`build_market_data_defs(venues, policy)` takes a `MarketDataPolicy`, so a test or
another deployment can wire different numbers without touching the checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from arb_orchestration.domain.hedging import HedgePolicy


@dataclass(frozen=True)
class BalanceFloors:
    """Minimum *free* balance per asset, in the asset's units.

    `default` applies on every venue; `per_venue` overrides or adds floors for one
    venue (a floor of 0 switches a default off there). Free, not total: the
    floor protects what can still be moved or posted as margin. Below a floor is
    an ERROR; within `warn_headroom_pct` % above it is a WARN.
    """

    default: Mapping[str, float] = field(default_factory=lambda: {"USDT": 10_000.0})
    per_venue: Mapping[str, Mapping[str, float]] = field(
        default_factory=lambda: {"hyperliquid": {"USDT": 5_000.0, "USDC": 20_000.0}}
    )
    warn_headroom_pct: float = 20.0

    def floors_for(self, venue: str) -> dict[str, float]:
        floors = {**self.default, **self.per_venue.get(venue, {})}
        return {asset: floor for asset, floor in floors.items() if floor > 0}


@dataclass(frozen=True)
class MarketDataPolicy:
    """Everything the market_data checks and sensors measure against."""

    floors: BalanceFloors = field(default_factory=BalanceFloors)
    hedge: HedgePolicy = field(default_factory=HedgePolicy)
    # Drift beyond this many hedge bands is an ERROR even when orders are planned.
    drift_error_multiple: float = 5.0
    # An observation older than this is WARN, older than `stale_after` is ERROR.
    warn_after_seconds: float = 120.0
    stale_after_seconds: float = 300.0
    # How often the sensor observes (the daemon loop cannot go below 5 s).
    observe_every_seconds: int = 30
    freshness_every_seconds: int = 60
    # PNG charts are ~10 kB and ~0.3 s each: the sensor attaches them at most this
    # often per asset; `plots=False` turns them off everywhere.
    plots: bool = True
    plot_every_seconds: float = 300.0
    # A check result that has not changed is re-recorded this often (a heartbeat).
    check_heartbeat_seconds: float = 600.0
    # One observation pass gives up on venues that have not answered by then.
    fetch_deadline_seconds: float = 40.0

    def __post_init__(self) -> None:
        if not 0 < self.warn_after_seconds < self.stale_after_seconds:
            raise ValueError("need 0 < warn_after_seconds < stale_after_seconds")


DEFAULT_POLICY = MarketDataPolicy()
