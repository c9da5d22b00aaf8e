"""Asset checks on observed market state: balance floors and observation freshness.

Each check is a plain function returning a `CheckOutcome`, used in two places:

- the `@multi_asset_check` definitions (what the UI lists and can execute on
  demand), which read the latest observation from the instance;
- the sensors and the observation job, which record the same outcome as an
  `AssetCheckEvaluation` right after observing (floors) or once a minute
  (freshness), so the checks run continuously without launching runs.

Why a custom freshness check: in Dagster 1.13 a `FreshnessPolicy` is evaluated
from the last *materialization* only (an observed asset stays UNKNOWN), and the
sensor behind `build_last_update_freshness_checks` re-runs a failed check only
after a materialization, so a check on an observed asset would stay red after
observations resumed. This one reads the latest observation's timestamp.
"""


import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    multi_asset_check,
)

from arb_orchestration.defs.market_data.keys import (
    BALANCES_FLOORS_CHECK,
    HEDGE_DRIFT_CHECK,
    HEDGE_TARGETS_KEY,
    OBSERVATION_FRESH_CHECK,
    balances_key,
    observable_keys,
    positions_key,
)
from arb_orchestration.defs.market_data.observations import LAST_UPDATED
from arb_orchestration.defs.market_data.policy import BalanceFloors, MarketDataPolicy
from arb_orchestration.domain.hedging import HedgePlan

FLOORS_SCHEMA = TableSchema(
    columns=[
        TableColumn("asset", "string"),
        TableColumn("floor", "float"),
        TableColumn("free", "float"),
        TableColumn("headroom_pct", "float", description="(free - floor) / floor, percent"),
        TableColumn("status", "string", description="ok | warn (within headroom) | below"),
    ]
)


def _amount(value: float) -> str:
    """An amount for a sentence: '9,500' and '10,000', not '9500' and '1e+04' (what `,.4g` printed)."""
    if value == 0 or abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:.4g}"


@dataclass(frozen=True)
class CheckOutcome:
    """One check's verdict, convertible to a run's `AssetCheckResult` or a runless evaluation."""

    asset_key: AssetKey
    check_name: str
    passed: bool
    severity: AssetCheckSeverity
    description: str
    metadata: Mapping[str, object] = field(default_factory=dict)

    @property
    def check_key(self) -> AssetCheckKey:
        return AssetCheckKey(self.asset_key, self.check_name)

    @property
    def state(self) -> str:
        """What must change for the outcome to be worth recording again."""
        return "pass" if self.passed else f"fail:{self.severity.value}"

    def as_result(self) -> AssetCheckResult:
        return AssetCheckResult(
            asset_key=self.asset_key,
            check_name=self.check_name,
            passed=self.passed,
            severity=self.severity,
            description=self.description,
            metadata=dict(self.metadata),
        )

    def as_evaluation(self) -> AssetCheckEvaluation:
        return AssetCheckEvaluation(
            asset_key=self.asset_key,
            check_name=self.check_name,
            passed=self.passed,
            severity=self.severity,
            description=self.description,
            metadata=dict(self.metadata),
        )


# ---------------------------------------------------------------- balance floors


def balance_floors_outcome(venue: str, free_by_asset: Mapping[str, float], floors: BalanceFloors) -> CheckOutcome:
    """ERROR when any free balance is below its floor, WARN when one is within the headroom above it."""
    wanted = floors.floors_for(venue)
    rows, below, warn = [], [], []
    for asset, floor in sorted(wanted.items()):
        free = float(free_by_asset.get(asset, 0.0))
        headroom = (free - floor) / floor * 100
        if not free >= floor:  # a NaN (unreadable) balance is below every floor, not above it
            status = "below"
            below.append(f"{asset} {_amount(free)} < {_amount(floor)}")
        elif headroom < floors.warn_headroom_pct:
            status = "warn"
            warn.append(f"{asset} {_amount(free)} within {floors.warn_headroom_pct:g}% of {_amount(floor)}")
        else:
            status = "ok"
        rows.append({"asset": asset, "floor": floor, "free": round(free, 8), "headroom_pct": round(headroom, 2),
                     "status": status})
    metadata = {
        "floors": MetadataValue.table(records=[TableRecord(r) for r in rows], schema=FLOORS_SCHEMA),
        "below_floor_count": len(below),
        "warn_count": len(warn),
    }
    if below:
        return CheckOutcome(
            balances_key(venue), BALANCES_FLOORS_CHECK, False, AssetCheckSeverity.ERROR,
            f"{venue}: free balance below floor: " + "; ".join(below + warn), metadata,
        )
    if warn:
        return CheckOutcome(
            balances_key(venue), BALANCES_FLOORS_CHECK, False, AssetCheckSeverity.WARN,
            f"{venue}: free balance close to floor: " + "; ".join(warn), metadata,
        )
    description = f"{venue}: all {len(rows)} floors met" if rows else f"{venue}: no floors configured"
    return CheckOutcome(balances_key(venue), BALANCES_FLOORS_CHECK, True, AssetCheckSeverity.ERROR, description, metadata)


def latest_observation(instance: DagsterInstance, key: AssetKey):
    """The newest observation record of `key`, or None."""
    records = instance.fetch_observations(AssetRecordsFilter(asset_key=key), limit=1).records
    return records[0] if records else None


def free_balances_from_observation(record) -> dict[str, float]:
    table = record.asset_observation.metadata.get("balances")
    if table is None:
        return {}
    return {row.data["asset"]: float(row.data.get("free") or 0.0) for row in table.records}


def balance_floors_from_instance(
    instance: DagsterInstance, venue: str, policy: MarketDataPolicy, now: float | None = None
) -> CheckOutcome:
    """The floors of the latest balances observation; ERROR when there is none or it is stale.

    A balance sheet older than `stale_after_seconds` confirms nothing about the
    floors now: a venue that stopped answering must not keep a green floor check.
    """
    record = latest_observation(instance, balances_key(venue))
    if record is None:
        return CheckOutcome(
            balances_key(venue), BALANCES_FLOORS_CHECK, False, AssetCheckSeverity.ERROR,
            f"{venue}: balances never observed", {},
        )
    observed = observed_at(record)
    age = max(0.0, (time.time() if now is None else now) - observed)
    when = {"observed_at": MetadataValue.timestamp(observed), "age_seconds": round(age, 1)}
    if age > policy.stale_after_seconds:
        return CheckOutcome(
            balances_key(venue), BALANCES_FLOORS_CHECK, False, AssetCheckSeverity.ERROR,
            f"{venue}: balances last observed {age:.0f} s ago (stale after {policy.stale_after_seconds:g} s): "
            "floors cannot be confirmed", when,
        )
    outcome = balance_floors_outcome(venue, free_balances_from_observation(record), policy.floors)
    return CheckOutcome(
        outcome.asset_key, outcome.check_name, outcome.passed, outcome.severity, outcome.description,
        {**outcome.metadata, **when},
    )


# ---------------------------------------------------------------- freshness


def observed_at(record) -> float:
    """When the venue answered (`dagster/last_updated_timestamp`), else when the event was stored."""
    value = record.asset_observation.metadata.get(LAST_UPDATED)
    return float(value.value) if value is not None else float(record.timestamp)


def freshness_outcome(key: AssetKey, last_observed: float | None, now: float, policy: MarketDataPolicy) -> CheckOutcome:
    """PASS within `warn_after_seconds`, WARN until `stale_after_seconds`, ERROR after (or never observed)."""
    limits = {
        "warn_after_seconds": policy.warn_after_seconds,
        "stale_after_seconds": policy.stale_after_seconds,
    }
    if last_observed is None:
        return CheckOutcome(key, OBSERVATION_FRESH_CHECK, False, AssetCheckSeverity.ERROR,
                            f"{key.to_user_string()} has never been observed", limits)
    age = max(0.0, now - last_observed)
    metadata = {**limits, "age_seconds": round(age, 1), "last_observed_at": MetadataValue.timestamp(last_observed)}
    if age <= policy.warn_after_seconds:
        return CheckOutcome(key, OBSERVATION_FRESH_CHECK, True, AssetCheckSeverity.ERROR,
                            f"observed {age:.0f} s ago", metadata)
    severity = AssetCheckSeverity.WARN if age <= policy.stale_after_seconds else AssetCheckSeverity.ERROR
    return CheckOutcome(key, OBSERVATION_FRESH_CHECK, False, severity,
                        f"last observed {age:.0f} s ago (warn after {policy.warn_after_seconds:g} s, "
                        f"stale after {policy.stale_after_seconds:g} s)", metadata)


def freshness_from_instance(instance: DagsterInstance, key: AssetKey, policy: MarketDataPolicy,
                            now: float | None = None) -> CheckOutcome:
    record = latest_observation(instance, key)
    return freshness_outcome(key, observed_at(record) if record else None, time.time() if now is None else now, policy)


# ---------------------------------------------------------------- definitions


def build_balance_floor_checks(venues: list[str], policy: MarketDataPolicy):
    @multi_asset_check(
        name="market_data_balance_floor_checks",
        specs=[
            AssetCheckSpec(
                BALANCES_FLOORS_CHECK,
                asset=balances_key(venue),
                description=f"Free balances on {venue} are above their floors (ERROR below, WARN within headroom).",
            )
            for venue in venues
        ],
        can_subset=True,
    )
    def market_data_balance_floor_checks(context: AssetCheckExecutionContext):
        for check_key in context.selected_asset_check_keys:
            venue = check_key.asset_key.path[1]
            yield balance_floors_from_instance(context.instance, venue, policy).as_result()

    return market_data_balance_floor_checks


def build_freshness_checks(venues: list[str], policy: MarketDataPolicy):
    @multi_asset_check(
        name="market_data_freshness_checks",
        specs=[
            AssetCheckSpec(
                OBSERVATION_FRESH_CHECK,
                asset=key,
                description=(
                    f"Observed within {policy.warn_after_seconds:g} s "
                    f"(WARN until {policy.stale_after_seconds:g} s, ERROR after)."
                ),
            )
            for key in observable_keys(venues)
        ],
        can_subset=True,
    )
    def market_data_freshness_checks(context: AssetCheckExecutionContext):
        for check_key in context.selected_asset_check_keys:
            yield freshness_from_instance(context.instance, check_key.asset_key, policy).as_result()

    return market_data_freshness_checks


# ---------------------------------------------------------------- hedge drift


def hedge_drift_outcome(plan: HedgePlan, policy: MarketDataPolicy) -> CheckOutcome:
    """Passes when every base asset's net delta is inside its band.

    WARN when the plan's orders bring every asset back inside its band; ERROR
    when they cannot (no market, no price, capped) or when a drift is beyond
    `drift_error_multiple` bands (the hedge loop is not keeping up).
    """
    outside = [d for d in plan.deltas if not d.within_tolerance]
    metadata = {
        "assets_outside_band": len(outside),
        "planned_orders": len(plan.orders),
    }
    if not outside:
        return CheckOutcome(HEDGE_TARGETS_KEY, HEDGE_DRIFT_CHECK, True, AssetCheckSeverity.ERROR,
                            f"all {len(plan.deltas)} assets within their bands", metadata)
    unfixable = [d for d in outside if d.status in ("partial", "no_market", "unpriced")]
    far = [
        d for d in outside
        if d.drift_usd is not None and d.drift_usd > policy.drift_error_multiple * d.tolerance_usd
    ]
    parts = []
    for d in outside:
        usd = "unpriced" if d.drift_usd is None else f"${d.drift_usd:,.0f}"
        parts.append(f"{d.asset} drift {d.drift:+.6g} {d.asset} ({usd}, band ${d.tolerance_usd:,.0f}, {d.status})")
    severity = AssetCheckSeverity.ERROR if unfixable or far else AssetCheckSeverity.WARN
    return CheckOutcome(HEDGE_TARGETS_KEY, HEDGE_DRIFT_CHECK, False, severity, "; ".join(parts), metadata)


# ---------------------------------------------------------------- position mode (hedge-mode accounts)

POSITION_MODE_CHECK = "position_mode_one_way"


def position_mode_outcome(venue: str, mode: str | None, detail: str | None = None,
                          setting: str | None = None) -> CheckOutcome:
    """ERROR when the venue's account is in hedge (two-way) mode: every order the platform sends would be rejected.

    `mode`: "one_way" | "hedge" | "unknown" (a venue client's `position_mode()`); None: the client cannot tell.
    """
    metadata = {"position_mode": mode or "unknown", "detail": detail or ""}
    if mode == "hedge":
        what = setting or "switch the account to one-way position mode"
        return CheckOutcome(
            positions_key(venue), POSITION_MODE_CHECK, False, AssetCheckSeverity.ERROR,
            f"{venue}: the account is in hedge (two-way) position mode; orders (hedge legs, stops, stop-loss closes) "
            f"would be rejected (hedge_mode_unsupported). On the exchange: {what}.", metadata)
    if mode == "one_way":
        return CheckOutcome(positions_key(venue), POSITION_MODE_CHECK, True, AssetCheckSeverity.ERROR,
                            f"{venue}: one-way position mode.", metadata)
    return CheckOutcome(positions_key(venue), POSITION_MODE_CHECK, True, AssetCheckSeverity.WARN,
                        f"{venue}: position mode unknown ({detail or 'this venue cannot report it'}); "
                        "the platform needs one-way mode.", metadata)


def position_mode_from_client(venue: str, client: object) -> CheckOutcome:
    """Ask a venue client for its position mode (ccxt clients only; others are unknown). Never raises."""
    read = getattr(client, "position_mode", None)
    if read is None:
        return position_mode_outcome(venue, None, "the venue client does not read the position mode")
    try:
        mode = read()
        health = client.health() if hasattr(client, "health") else {}
    except Exception as exc:  # the check reports, it does not fail the run
        return position_mode_outcome(venue, None, f"position mode not read: {type(exc).__name__}")
    from arb_orchestration.resources.ccxt_venue import ONE_WAY_SETTING  # lazy: ccxt is imported at first use only

    exchange_id = getattr(getattr(client, "config", None), "exchange_id", None)
    return position_mode_outcome(venue, mode, health.get("position_mode_detail"), ONE_WAY_SETTING.get(exchange_id))


def build_position_mode_checks(venues: list[str]):
    @multi_asset_check(
        name="market_data_position_mode_checks",
        specs=[
            AssetCheckSpec(
                POSITION_MODE_CHECK,
                asset=positions_key(venue),
                description=f"{venue}'s account is in one-way position mode (ERROR in hedge mode: orders would be rejected).",
            )
            for venue in venues
        ],
        can_subset=True,
        required_resource_keys={"exchange"},
    )
    def market_data_position_mode_checks(context: AssetCheckExecutionContext):
        for check_key in context.selected_asset_check_keys:
            venue = check_key.asset_key.path[1]
            yield position_mode_from_client(venue, context.resources.exchange.venue(venue)).as_result()

    return market_data_position_mode_checks
