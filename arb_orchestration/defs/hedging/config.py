"""Run config of `funding_rate_hedge` (every field optional; defaults in docs/hedging.md).

The saga engine maps this class onto every step, so the run config is flat at
the top level, e.g. in the launchpad:

    dry_run: true
    drift_tolerance_usd: 500
    stop_distance_pct: 4

The defaults of the hedge band come from `defs/market_data/policy.py`, so the
job hedges exactly what the `hedge_targets` asset shows. The event sensor may
pass the triggering event as `trigger` (`hedge_run_config(trigger=...)`); the
hedge does not need it (it observes the venues afresh) but shows it.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from dagster import Config
from pydantic import Field

from arb_orchestration.defs.hedging.stops import StopSettings
from arb_orchestration.defs.market_data.policy import DEFAULT_POLICY as MARKET_DATA_POLICY
from arb_orchestration.domain.hedging import HedgePolicy

_BAND = MARKET_DATA_POLICY.hedge
_STOPS = StopSettings()


class HedgeTriggerConfig(Config):
    """The event behind a sensor-triggered run (the fields of the sensors' `TriggerEventConfig`, all optional)."""

    event_id: str = ""
    topic: str = ""
    source: str = ""
    kind: str = ""
    critical: bool = False
    reason: str = ""
    payload: dict[str, Any] = Field(default_factory=dict)

    def describe(self) -> str:
        where = " ".join(str(self.payload[k]) for k in ("venue", "symbol") if self.payload.get(k))
        return (f"{self.kind or 'event'} {self.event_id or '(no id)'}{f' ({where})' if where else ''}"
                f"{f': {self.reason}' if self.reason else ''}")


class HedgeConfig(Config):
    """Run config of `funding_rate_hedge`."""

    dry_run: bool = Field(default=False, description="Observe, plan and report; place and cancel nothing.")
    order_venues: list[str] = Field(
        default_factory=list,
        description="Venues hedge orders may go to (empty: every venue). Every venue is observed regardless: "
        "the net delta is over the whole book.",
    )
    hedge_assets: list[str] = Field(
        default=list(_BAND.hedge_assets), description="Base assets always evaluated (plus every perp base seen)."
    )
    target_delta: dict[str, float] = Field(default_factory=dict, description="Target net delta per asset (default 0).")
    drift_tolerance_usd: float = Field(default=_BAND.drift_tolerance_usd, description="No order inside this band.")
    min_notional_usd: float = Field(default=_BAND.min_notional_usd, description="Smallest order placed.")
    max_notional_per_market_usd: Optional[float] = Field(
        default=_BAND.max_notional_per_market_usd,
        description="Cap per (venue, symbol); the rest of the adjustment spills to the next-best market.",
    )
    maintain_stops: bool = Field(default=True, description="Keep a reduce-only stop on every open position.")
    stop_distance_pct: float = Field(default=_STOPS.distance_pct, description="Stop trigger, % from mark.")
    stop_replace_band_pct: float = Field(
        default=_STOPS.replace_band_pct,
        description="A resting stop whose trigger is more than this many points of mark off the wanted one is replaced.",
    )
    stop_size_tolerance_pct: float = Field(
        default=_STOPS.size_tolerance_pct, description="A stop whose size differs from the position's by more is replaced."
    )
    liquidation_buffer_pct: float = Field(
        default=_STOPS.liquidation_buffer_pct, description="A stop beyond liquidation moves this far inside it."
    )
    dust: float = Field(default=_STOPS.dust, description="Positions at or below this size (base units) count as closed.")
    fetch_deadline_seconds: float = Field(default=30.0, description="Every venue must answer within this, per attempt.")
    trigger: Optional[HedgeTriggerConfig] = Field(
        default=None, description="The event behind a sensor-triggered run (shown; the hedge observes afresh)."
    )

    def check(self) -> None:
        """Raise ValueError naming the run-config field when a value would quietly do the wrong thing.

        NaN compares false both ways (a NaN band never trades; a NaN or huge dust makes every position count
        as closed and cancels its stop), and the `_pct` fields are percent, not fractions. `policy()` and
        `stop_settings()` call this, so the plan step turns it into a non-retried `InvalidHedgeConfig`.
        """
        def bad(name: str, value: float | None, low: float, high: float = math.inf, *, low_open: bool = False,
                what: str = "") -> str | None:
            ok = value is not None and math.isfinite(value) and (value > low if low_open else value >= low) and value < high
            if ok:
                return None
            bounds = f"{'>' if low_open else '>='} {low:g}" + (f" and < {high:g}" if high != math.inf else "")
            return f"{name} must be a finite number {bounds}{what}, got {value!r}"

        problems = [
            bad("drift_tolerance_usd", self.drift_tolerance_usd, 0),
            bad("min_notional_usd", self.min_notional_usd, 0),
            None if self.max_notional_per_market_usd is None
            else bad("max_notional_per_market_usd", self.max_notional_per_market_usd, 0, low_open=True),
            bad("stop_distance_pct", self.stop_distance_pct, 0.5, 100,
                what=" (percent of mark: 5 means 5 %; under 0.5 looks like a fraction)"),
            bad("stop_replace_band_pct", self.stop_replace_band_pct, 0),
            bad("stop_size_tolerance_pct", self.stop_size_tolerance_pct, 0),
            bad("liquidation_buffer_pct", self.liquidation_buffer_pct, 0, 100),
            bad("dust", self.dust, 0, 1, what=" (base units; 1e9 for 1e-9 would count every position as closed)"),
            bad("fetch_deadline_seconds", self.fetch_deadline_seconds, 0, low_open=True),
        ]
        problems += [f"target_delta[{asset}] must be a finite number (base units), got {delta!r}"
                     for asset, delta in self.target_delta.items() if not math.isfinite(delta)]
        problems = [p for p in problems if p]
        if problems:
            raise ValueError("; ".join(problems))

    def policy(self) -> HedgePolicy:
        self.check()
        return HedgePolicy(
            min_notional_usd=self.min_notional_usd,
            drift_tolerance_usd=self.drift_tolerance_usd,
            hedge_assets=tuple(self.hedge_assets),
            target_delta=dict(self.target_delta),
            venues=tuple(self.order_venues) or None,
            max_notional_per_market_usd=self.max_notional_per_market_usd,
        )

    def stop_settings(self) -> StopSettings:
        self.check()
        return StopSettings(
            distance_pct=self.stop_distance_pct,
            replace_band_pct=self.stop_replace_band_pct,
            size_tolerance_pct=self.stop_size_tolerance_pct,
            liquidation_buffer_pct=self.liquidation_buffer_pct,
            dust=self.dust,
        )


def hedge_run_config(trigger: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Run config for `funding_rate_hedge` (flat, see the module docstring), e.g. from a sensor:
    `hedge_run_config(trigger=trigger_event_config.model_dump())`."""
    config: dict[str, Any] = dict(overrides)
    if trigger is not None:
        config["trigger"] = {k: trigger[k] for k in HedgeTriggerConfig.model_fields if k in trigger}
    return config
