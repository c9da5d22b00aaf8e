"""Sensors that keep the market-state assets observed and their checks current, without runs.

`market_state_observation_sensor` (every 30 s) fetches every venue and returns
the observations and the balance-floor check outcomes as runless asset events
(`SensorResult(asset_events=...)`): no run worker per tick. A venue that fails
is logged on the tick and simply not observed (its freshness check will say so);
a tick where no venue answers fails, so the sensor page shows it.

`market_state_freshness_sensor` (every 60 s) reads the latest observation of
every observed asset from the instance and records the freshness outcome. It is
separate on purpose: it must notice when the observation sensor itself stops.

Both record a check outcome only when it differs from the latest stored result
(whoever recorded it: a sensor, the job, the UI's Execute) or their own last
record is older than the heartbeat (the cursor remembers), and the observation sensor attaches
charts at most every `plot_every_seconds` per asset: each is ~10 kB of PNG.
"""


import json
import time
from collections.abc import Iterable, Mapping

from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    DagsterInstance,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from arb_orchestration.defs.market_data.checks import (
    CheckOutcome,
    balance_floors_from_instance,
    balance_floors_outcome,
    freshness_from_instance,
    position_mode_from_client,
)
from arb_orchestration.defs.market_data.keys import observable_keys
from arb_orchestration.defs.market_data.observations import market_observations
from arb_orchestration.defs.market_data.policy import MarketDataPolicy
from arb_orchestration.defs.market_data.snapshot import fetch_market_snapshot
from arb_orchestration.resources.venue import ExchangeResource


class MarketDataUnavailable(RuntimeError):
    """No venue answered during an observation tick."""


class SensorCursor:
    """JSON cursor: when each asset last got a chart, and each check's last recorded state."""

    def __init__(self, plots: dict[str, float] | None = None, checks: dict[str, dict] | None = None):
        self.plots = plots or {}
        self.checks = checks or {}

    @classmethod
    def parse(cls, raw: str | None) -> "SensorCursor":
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            return cls(plots=dict(data.get("plots", {})), checks=dict(data.get("checks", {})))
        except (ValueError, TypeError, AttributeError):
            # The cursor only saves work: a bad one costs one extra chart and check record.
            return cls()

    def dump(self) -> str:
        return json.dumps({"plots": self.plots, "checks": self.checks}, sort_keys=True)

    def plot_due(self, key: AssetKey, now: float, every: float) -> bool:
        return now - self.plots.get(key.to_user_string(), 0.0) >= every

    def plotted(self, key: AssetKey, now: float) -> None:
        self.plots[key.to_user_string()] = now

    def due(
        self,
        outcomes: Iterable[CheckOutcome],
        now: float,
        heartbeat: float,
        stored: Mapping[str, str | None] | None = None,
    ) -> list[AssetCheckEvaluation]:
        """Evaluations worth recording: new, changed, or due for a heartbeat; remembers them.

        `stored` is the state of the latest result in the instance per check (`stored_check_states`):
        the job and the UI's Execute record results too, so "changed" is measured against what the
        UI shows, not only against what this sensor last wrote (the cursor decides when nothing is stored).
        """
        due = []
        for outcome in outcomes:
            name = outcome.check_key.to_user_string()
            last = self.checks.get(name)
            shown = last.get("state") if last is not None else None
            if stored is not None and stored.get(name) is not None:
                shown = stored[name]
            if last is None or shown != outcome.state or now - float(last.get("at", 0)) >= heartbeat:
                due.append(outcome.as_evaluation())
                self.checks[name] = {"state": outcome.state, "at": now}
        return due


def stored_check_states(instance: DagsterInstance, outcomes: Iterable[CheckOutcome]) -> dict[str, str | None]:
    """The state ("pass" / "fail:<severity>") of each check's latest stored result; None when there is none
    or it is still only planned (one query for all)."""
    keys = [outcome.check_key for outcome in outcomes]
    summaries = instance.event_log_storage.get_asset_check_summary_records(keys) if keys else {}
    states: dict[str, str | None] = {}
    for key in keys:
        summary = summaries.get(key)
        record = summary.last_check_execution_record if summary is not None else None
        evaluation = record.evaluation if record is not None else None
        states[key.to_user_string()] = (
            None if evaluation is None else "pass" if evaluation.passed else f"fail:{evaluation.severity.value}"
        )
    return states


def build_observation_sensor(venues: list[str], policy: MarketDataPolicy):
    @sensor(
        name="market_state_observation_sensor",
        minimum_interval_seconds=policy.observe_every_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Observes balances and positions per venue and all funding rates, and records the "
            "balance-floor and position-mode checks, as runless asset events."
        ),
    )
    def market_state_observation_sensor(context: SensorEvaluationContext, exchange: ExchangeResource):
        cursor = SensorCursor.parse(context.cursor)
        now = time.time()
        snapshot = fetch_market_snapshot(exchange, venues, deadline_seconds=policy.fetch_deadline_seconds)
        for venue, reason in sorted(snapshot.errors.items()):
            context.log.error(f"{venue}: not observed this tick: {reason}")
        if not snapshot.states:
            raise MarketDataUnavailable(f"no venue answered: {sorted(snapshot.errors)}")

        events = market_observations(
            snapshot,
            with_plot=lambda key: policy.plots and cursor.plot_due(key, now, policy.plot_every_seconds),
            all_venues=venues,
        )
        for event in events:
            if any(name.endswith("chart") for name in event.metadata):
                cursor.plotted(event.asset_key, now)
        outcomes = [
            balance_floors_outcome(venue, {a: b.free for a, b in state.balances.items()}, policy.floors)
            for venue, state in snapshot.states.items()
        ]
        # A venue that did not answer keeps the verdict of its last balance sheet until that is
        # stale, then fails: its last PASS must not stand for as long as the venue is down.
        outcomes += [
            balance_floors_from_instance(context.instance, venue, policy, now)
            for venue in venues
            if venue not in snapshot.states
        ]
        # Position mode (hedge mode makes every order fail): read by the snapshot's fetch, which the client cached.
        outcomes += [position_mode_from_client(venue, state.client)
                     for venue, state in snapshot.states.items() if state.client is not None]
        checks = cursor.due(
            outcomes, now, policy.check_heartbeat_seconds, stored_check_states(context.instance, outcomes)
        )
        context.log.info(
            f"observed {len(events)} assets from {len(snapshot.states)}/{len(venues)} venues, "
            f"recorded {len(checks)} check results"
        )
        return SensorResult(asset_events=[*events, *checks], cursor=cursor.dump())

    return market_state_observation_sensor


def build_freshness_sensor(venues: list[str], policy: MarketDataPolicy):
    keys = observable_keys(venues)

    @sensor(
        name="market_state_freshness_sensor",
        minimum_interval_seconds=policy.freshness_every_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Records the observation_fresh check of every observed market-state asset.",
    )
    def market_state_freshness_sensor(context: SensorEvaluationContext):
        cursor = SensorCursor.parse(context.cursor)
        now = time.time()
        outcomes = [freshness_from_instance(context.instance, key, policy, now) for key in keys]
        checks = cursor.due(
            outcomes, now, policy.check_heartbeat_seconds, stored_check_states(context.instance, outcomes)
        )
        stale = [o.asset_key.to_user_string() for o in outcomes if not o.passed]
        if stale:
            context.log.warning(f"not fresh: {', '.join(stale)}")
        if not checks:
            return SensorResult(
                skip_reason=SkipReason(f"freshness unchanged for {len(keys)} assets ({len(stale)} not fresh)"),
                cursor=cursor.dump(),
            )
        return SensorResult(asset_events=checks, cursor=cursor.dump())

    return market_state_freshness_sensor
