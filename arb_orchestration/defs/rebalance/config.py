"""Run config of `auto_rebalance_saga` and of the `rebalance_plan` asset (defaults: docs/rebalance.md).

`RebalancePolicyConfig` is the policy and the guardrails (what the asset and
the saga share); `RebalanceConfig` adds what only a run needs (dry run,
timeouts, the triggering event). The saga's run config is this class at the
top level (the saga engine maps it onto every step), e.g.:

    dry_run: true
    floors: {USDT: 20000}
    targets: [{venue: okx, asset: USDT, share: 0.3}]
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

from dagster import Config
from pydantic import Field

from arb_orchestration.defs.k8s import REBALANCE_HUMAN_FUNDING_SECONDS, REBALANCE_MAX_RUNTIME_SECONDS
from arb_orchestration.defs.market_data.policy import DEFAULT_POLICY as MARKET_DATA_POLICY
from arb_orchestration.domain.rebalance import Guardrails, TargetPolicy, TargetRule

DEFAULT_ASSETS = ["USDT", "USDC", "EUR"]
DEFAULT_FLOORS = {"USDT": 10_000.0, "USDC": 10_000.0, "EUR": 5_000.0}
DEFAULT_MAX_TRANSFER = {"USDT": 250_000.0, "USDC": 250_000.0, "EUR": 100_000.0, "BTC": 5.0, "ETH": 100.0}
DEFAULT_MAX_DAILY = {"USDT": 1_000_000.0, "USDC": 1_000_000.0, "EUR": 250_000.0, "BTC": 10.0, "ETH": 200.0}
DEFAULT_MIN_DEFICIT = {"USDT": 500.0, "USDC": 500.0, "EUR": 500.0, "BTC": 0.01, "ETH": 0.2}
# How long a Wise leg waits for a person to fund it (SCA) before the saga cancels it and compensates.
# The job's max runtime leaves room for exactly this wait (defs/k8s.py).
DEFAULT_HUMAN_FUNDING_TIMEOUT_SECONDS = float(REBALANCE_HUMAN_FUNDING_SECONDS)
# How long after an earlier rebalance saga's last saga-log record its unverified legs still block a new plan
# (guardrail `legs_in_flight`): the whole budget of one rebalance run (1 h arrivals + 4 h waiting for a person),
# counted from when that saga stopped watching its money (docs/rebalance.md, "Legs in flight").
DEFAULT_IN_FLIGHT_LOOKBACK_SECONDS = float(REBALANCE_MAX_RUNTIME_SECONDS)
# Networks the desk sends on today; a venue that starts offering a new one is not used until listed.
DEFAULT_ALLOWED_DESTINATIONS = ["*:TRC20", "*:ARBITRUM", "*:SOL", "*:ERC20", "*:BTC", "*:SEPA"]
# Upper bounds of fractions that are easy to type as percents (20 for 20 %): beyond them the check meant nothing.
MAX_VERIFY_TOLERANCE = 0.10  # a destination up to 10 % short still "arrived"
MAX_FEE_INCREASE = 1.0  # a Wise fee up to twice the planned one


def _out_of_range(name: str, value: float | None, low: float, high: float = math.inf, *, low_open: bool = False,
                  high_open: bool = False, what: str = "") -> str | None:
    """Why `value` is not a finite number within the bounds (naming `name` and the value), or None if it is."""
    if (value is not None and math.isfinite(value) and (value > low if low_open else value >= low)
            and (value < high if high_open else value <= high)):
        return None
    bounds = f"{'>' if low_open else '>='} {low:g}"
    if high != math.inf:
        bounds += f" and {'<' if high_open else '<='} {high:g}"
    return f"{name} must be a finite number {bounds}{what}, got {value!r}"


class RebalanceTargetConfig(Config):
    """One target rule: a floor and/or a share for a venue (or `*`) and asset."""

    venue: str = Field(description="Venue name, or '*' for every venue that carries the asset.")
    asset: str = Field(description="Asset, e.g. USDT or EUR.")
    floor: float = Field(default=0.0, description="Minimum free balance, in the asset's units.")
    share: Optional[float] = Field(
        default=None, description="Fraction (0..1) of the asset's total free balance over the managed venues."
    )


class RebalanceTriggerConfig(Config):
    """The event that asked for this run (the event sensors fill it in; the launchpad may leave it out).

    Same fields as the sensors' `TriggerEventConfig`, all optional here.
    """

    event_id: str = ""
    topic: str = ""
    source: str = ""
    kind: str = ""
    critical: bool = False
    reason: str = ""
    payload: dict[str, Any] = Field(default_factory=dict)

    def describe(self) -> str:
        where = " / ".join(
            str(self.payload[k]) for k in ("venue", "asset", "symbol") if self.payload.get(k) not in (None, "")
        )
        return (
            f"{self.kind or 'event'} {self.event_id or '(no id)'}"
            f"{f' on {where}' if where else ''}{f' from {self.source}' if self.source else ''}"
            f"{f': {self.reason}' if self.reason else ''}"
        )


class RebalancePolicyConfig(Config):
    """Target policy and guardrails (what `rebalance_plan` and the saga share)."""

    assets: list[str] = Field(default=list(DEFAULT_ASSETS), description="Assets the rebalance manages.")
    floors: dict[str, float] = Field(
        default=dict(DEFAULT_FLOORS),
        description="Default floor (minimum free balance) per asset on every venue that carries it.",
    )
    targets: list[RebalanceTargetConfig] = Field(
        default=[], description="Per-venue (or '*') rules overriding the default floors; may set shares."
    )
    use_market_data_floors: bool = Field(
        default=True, description="Never plan below the market_data balance floors (they are checked there)."
    )
    tolerance: float = Field(default=0.05, description="Share band: deficit below share*(1-tolerance).")
    refill_headroom: float = Field(
        default=0.20, description="A venue under its floor is refilled to floor*(1+headroom); sources keep as much."
    )
    wise_reserve: dict[str, float] = Field(
        default={"EUR": 0.0}, description="Kept on the desk's Wise balance per fiat currency."
    )
    max_transfer: dict[str, float] = Field(
        default=dict(DEFAULT_MAX_TRANSFER), description="Per-transfer limit per asset (amount leaving the source)."
    )
    max_daily: dict[str, float] = Field(
        default=dict(DEFAULT_MAX_DAILY), description="Per-UTC-day limit per asset, over every rebalance saga."
    )
    allowed_destinations: list[str] = Field(
        default=list(DEFAULT_ALLOWED_DESTINATIONS),
        description="'venue:network' patterns money may be sent to ('*' wildcards).",
    )
    min_deficit: dict[str, float] = Field(
        default=dict(DEFAULT_MIN_DEFICIT), description="An asset whose total deficit is smaller is not moved."
    )
    max_fee_ratio: float = Field(
        default=0.01, description="An asset whose fees exceed this fraction of its deficit is not moved."
    )
    planner_time_limit_seconds: float = Field(default=30.0, description="Per asset, for the exact MILP.")

    def problems(self) -> list[str]:
        """What `check` refuses here; the guardrail numbers are checked by `Guardrails` itself."""
        return [p for p in [
            *(_out_of_range(f"floors[{asset}]", floor, 0, what=f" ({asset} units)") for asset, floor in self.floors.items()),
            *(_out_of_range(f"wise_reserve[{currency}]", reserve, 0, what=f" ({currency})")
              for currency, reserve in self.wise_reserve.items()),
            _out_of_range("planner_time_limit_seconds", self.planner_time_limit_seconds, 0, low_open=True),
        ] if p]

    def check(self) -> None:
        """Raise ValueError naming every run-config field whose value would quietly do the wrong thing.

        NaN compares false both ways (a NaN limit never breaches), so numbers must be finite and in range.
        `policy()` and `guardrails()` call this; the saga's plan step calls all three before it reads a
        balance and turns a ValueError into a non-retried `InvalidRebalanceConfig`.
        """
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def policy(self) -> TargetPolicy:
        self.check()
        minimum: dict[str, dict[str, float]] = {}
        if self.use_market_data_floors:
            floors = MARKET_DATA_POLICY.floors
            # The default floors hold on every venue ('*'); a venue's own entry replaces '*' for it, so it keeps
            # the defaults it does not override *and its zeros* (a 0 switches a default off there). Not
            # `floors_for`, which drops zeros: the 0 would then hold only because the asset is absent.
            minimum = {"*": dict(floors.default),
                       **{v: {**floors.default, **per_venue} for v, per_venue in floors.per_venue.items()}}
        return TargetPolicy(
            assets=tuple(self.assets),
            default_floors=dict(self.floors),
            rules=tuple(TargetRule(t.venue, t.asset, t.floor, t.share) for t in self.targets),
            minimum_floors=minimum,
            tolerance=self.tolerance,
            refill_headroom=self.refill_headroom,
            fiat_reserve=dict(self.wise_reserve),
        )

    def guardrails(self) -> Guardrails:
        self.check()
        return Guardrails(
            max_transfer=dict(self.max_transfer),
            max_daily=dict(self.max_daily),
            allowed_destinations=tuple(self.allowed_destinations),
            min_deficit=dict(self.min_deficit),
            max_fee_ratio=self.max_fee_ratio,
        )


class RebalanceConfig(RebalancePolicyConfig):
    """Run config of `auto_rebalance_saga`: the policy plus the run's own switches."""

    dry_run: bool = Field(default=False, description="Plan and report only; nothing moves.")
    arrival_timeout_seconds: float = Field(
        default=1800.0, description="How long one attempt of await_arrival waits before it fails (then retries)."
    )
    poll_interval_seconds: float = Field(default=2.0, description="Between status polls while waiting.")
    max_fee_increase: float = Field(
        default=0.5, description="A Wise quote whose fee exceeds the planned fee by more than this fraction aborts."
    )
    verify_tolerance: float = Field(
        default=0.01, description="A destination may show up to this fraction of the credited amount less."
    )
    verify_fee_share: Optional[float] = Field(
        default=0.5,
        description="...but never this share of the smallest network fee of the withdrawals into it or more, so a leg "
        "that arrives one fee short (a venue deducting the fee while configured as adding it) fails verification; "
        "null: only verify_tolerance.",
    )
    commit_order: Literal["auto", "wise_first", "withdrawals_first"] = Field(
        default="auto",
        description="Order inside the pivot. auto: Wise legs first when the Wise resource uses a personal token "
        "(EU/UK: funding needs a human, so ask before anything irreversible), withdrawals first otherwise.",
    )
    human_funding_timeout_seconds: float = Field(
        default=DEFAULT_HUMAN_FUNDING_TIMEOUT_SECONDS,
        description="How long a Wise leg Wise refused to fund through the API (SCA) waits for a person to fund it "
        "in the Wise app; then it is cancelled and the saga compensates.",
    )
    human_funding_poll_seconds: float = Field(
        default=30.0, description="Between reads of a parked Wise transfer while a person is expected to fund it."
    )
    in_flight_lookback_seconds: float = Field(
        default=DEFAULT_IN_FLIGHT_LOOKBACK_SECONDS,
        description="Guardrail legs_in_flight: an earlier rebalance saga with legs that left but were never verified "
        "as arrived blocks the plan until this long after its last saga-log record.",
    )
    allow_legs_in_flight: bool = Field(
        default=False,
        description="Plan although earlier sagas have legs in flight (an operator checked that they arrived). "
        "The plan records the sagas it acknowledged; they no longer block later runs.",
    )
    wise_recipient_holder: str = Field(
        default="Arb Desk", description="Account holder name of the venues' IBANs (Wise recipients)."
    )
    trigger: Optional[RebalanceTriggerConfig] = Field(
        default=None, description="The event behind a sensor-triggered run (logged; planning does not use it)."
    )

    def problems(self) -> list[str]:
        """The policy's problems, and those of the fields first read after the pivot (checked up front)."""
        return super().problems() + [p for p in [
            _out_of_range("arrival_timeout_seconds", self.arrival_timeout_seconds, 0),
            _out_of_range("poll_interval_seconds", self.poll_interval_seconds, 0, low_open=True),
            _out_of_range("max_fee_increase", self.max_fee_increase, 0, MAX_FEE_INCREASE,
                          what=" (a fraction: 0.5 allows a Wise fee 50 % above the planned one)"),
            _out_of_range("verify_tolerance", self.verify_tolerance, 0, MAX_VERIFY_TOLERANCE,
                          what=" (a fraction of the credited amount: 0.01 means 1 %)"),
            None if self.verify_fee_share is None else _out_of_range(
                "verify_fee_share", self.verify_fee_share, 0, 1, high_open=True,
                what=" (of the smallest network fee: at 1 a leg one fee short would pass)"),
            _out_of_range("human_funding_timeout_seconds", self.human_funding_timeout_seconds, 0),
            _out_of_range("human_funding_poll_seconds", self.human_funding_poll_seconds, 0, low_open=True),
            _out_of_range("in_flight_lookback_seconds", self.in_flight_lookback_seconds, 0, low_open=True,
                          what=" (to plan despite legs in flight, set allow_legs_in_flight)"),
        ] if p]


def rebalance_run_config(trigger: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Run config for `auto_rebalance_saga` (top level, see the module docstring), e.g. for a sensor:
    `rebalance_run_config(trigger=trigger_event_config.model_dump())`."""
    config: dict[str, Any] = dict(overrides)
    if trigger is not None:
        config["trigger"] = {k: trigger[k] for k in RebalanceTriggerConfig.model_fields if k in trigger}
    return config
