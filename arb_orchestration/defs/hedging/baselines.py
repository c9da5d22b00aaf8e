"""The funding rate of each market at the last hedge *run*, where the funding sensor reads it.

`funding_deviation_sensor` (defs/events) asks for a hedge when a market's
rate, normalised to 8 h, moved more than the threshold since "the rate at the
last hedge". It keeps that baseline in its own cursor, set when *it* requests
a hedge. But hedges also run from the schedule and the UI, and a run observes
the venue's rate itself; so every completed hedge run records the rates it
hedged at here, and the sensor lays these over its cursor's baselines,
newest wins (`overlay_hedge_baselines`). A hedge therefore resets the
deviation baseline whatever started it.

Storage: the Dagster instance's key-value table (`run_storage.set_cursor_values`,
the same table as the kill switch: SQLite locally, PostgreSQL in production),
one key per market (`arb/funding_hedge_baseline/<venue>|<symbol>`), so a write
never rewrites another market's entry. The value is JSON shaped like the
sensor's own baselines (`rate`, `interval_hours`, `at`) plus `rate_8h`, the
run and the saga. The sensor's cursor is not written from a run: the daemon
writes it at the end of each tick and would overwrite it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from arb_orchestration.domain.funding import normalise_rate
from arb_orchestration.domain.triggers import HedgeBaselines, market_key

if TYPE_CHECKING:
    from dagster import DagsterInstance

BASELINE_KEY_PREFIX = "arb/funding_hedge_baseline/"


def baseline_key(venue: str, symbol: str) -> str:
    return BASELINE_KEY_PREFIX + market_key(venue, symbol)


def baseline_points(
    rates: Iterable[Mapping[str, Any]], *, run_id: str | None, saga_id: str | None
) -> dict[str, dict[str, Any]]:
    """`{market_key: point}` from the rates a hedge observed (dicts with venue, symbol, rate, interval_hours, observed_at)."""
    points: dict[str, dict[str, Any]] = {}
    for r in rates:
        rate, hours = float(r["rate"]), float(r["interval_hours"])
        points[market_key(r["venue"], r["symbol"])] = {
            "venue": r["venue"],
            "symbol": r["symbol"],
            "rate": rate,
            "interval_hours": hours,
            "rate_8h": normalise_rate(rate, hours),
            "at": float(r["observed_at"]) if r.get("observed_at") is not None else None,
            "source": "funding_rate_hedge",
            "run_id": run_id,
            "saga_id": saga_id,
        }
    return points


def record_baselines(instance: "DagsterInstance", points: Mapping[str, Mapping[str, Any]]) -> None:
    """Store the points (one key per market) in the instance's key-value table."""
    if points:
        instance.run_storage.set_cursor_values(
            {BASELINE_KEY_PREFIX + key: json.dumps(dict(point), sort_keys=True) for key, point in points.items()}
        )


def read_baselines(instance: "DagsterInstance", markets: Iterable[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """The recorded points for these (venue, symbol) markets, by market key; unreadable entries are skipped."""
    keys = baseline_keys(markets)
    if not keys:
        return {}
    return parse_baselines(instance.run_storage.get_cursor_values(keys))


def parse_baselines(values: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The baseline points among key-value entries (other keys are ignored), by market key."""
    out: dict[str, dict[str, Any]] = {}
    for key, raw in values.items():
        if not key.startswith(BASELINE_KEY_PREFIX):
            continue
        try:
            point = json.loads(raw)
            float(point["rate"]), float(point["interval_hours"])
        except (ValueError, TypeError, KeyError):
            continue  # a hand-edited or foreign value: the sensor keeps its own baseline
        out[key[len(BASELINE_KEY_PREFIX):]] = point
    return out


def baseline_keys(markets: Iterable[tuple[str, str]]) -> set[str]:
    """The key-value keys of these markets' recorded points (for a caller that reads them with other keys)."""
    return {baseline_key(venue, symbol) for venue, symbol in markets}


def overlay_hedge_baselines(
    instance: "DagsterInstance | None",
    baselines: HedgeBaselines,
    markets: Iterable[tuple[str, str]],
    *,
    values: Mapping[str, str] | None = None,
) -> list[str]:
    """Put each market's hedge-run baseline into `baselines` where it is newer; returns the markets replaced.

    Called by `funding_deviation_sensor` before it compares rates. Newer means a
    later `at` (epoch seconds: the venue's observation time for a hedge run, the
    event's time for the sensor's own baseline); a point without `at` never wins.
    `values`: the key-value entries already read by the caller (the sensor reads
    the kill switch in the same round trip, `baseline_keys`); else they are read
    here. With no instance and no values (a sensor evaluated without an
    instance) nothing changes.
    """
    if values is None:
        if instance is None:
            return []
        points = read_baselines(instance, markets)
    else:
        wanted = baseline_keys(markets)
        points = parse_baselines({k: v for k, v in values.items() if k in wanted})
    replaced = []
    for key, point in points.items():
        at = point.get("at")
        if at is None:
            continue
        recorded = {
            "rate": float(point["rate"]),
            "interval_hours": float(point["interval_hours"]),
            "at": float(at),
            "run_id": point.get("run_id"),
        }
        held = baselines.points.get(key)
        held_at = held.get("at") if held else None
        if held_at is None or float(at) >= float(held_at):
            baselines.points[key] = recorded  # newer than a pending request too: it settles it
            replaced.append(key)
        elif held is not None and "confirmed" in held:
            # Older than the pending request but newer than what it would fall back to.
            confirmed = held["confirmed"]
            if confirmed is None or confirmed.get("at") is None or float(at) >= float(confirmed["at"]):
                held["confirmed"] = recorded
    return sorted(replaced)


# Run statuses that end a hedge request's run without hedging / having hedged.
_FAILED = {"FAILURE", "CANCELED", "CANCELING"}


def hedge_request_outcomes(
    instance: "DagsterInstance", job_name: str, event_ids: Iterable[str], *, event_id_tag: str
) -> dict[str, str]:
    """``{event_id: "succeeded" | "failed" | "running"}`` for the hedge runs the sensor requested; one query.

    Runs are found by their event id tag (the sensor's request). Any successful run
    of a request counts as hedged (a re-execution that went through); else one
    still queued or going is "running"; else every run failed or was canceled.
    """
    from dagster import RunsFilter

    ids = sorted(set(event_ids))
    if not ids:
        return {}
    runs = instance.get_runs(filters=RunsFilter(job_name=job_name, tags={event_id_tag: ids}), limit=20 * len(ids))
    statuses: dict[str, set[str]] = {}
    for run in runs:
        statuses.setdefault(run.tags.get(event_id_tag, ""), set()).add(run.status.value)
    out = {}
    for event_id, seen in statuses.items():
        if "SUCCESS" in seen:
            out[event_id] = "succeeded"
        elif seen - _FAILED:
            out[event_id] = "running"
        else:
            out[event_id] = "failed"
    return out


def sensor_instance(context: Any) -> "DagsterInstance | None":
    """The sensor context's instance, or None when it was built without one (unit tests)."""
    from dagster import DagsterInvariantViolationError

    try:
        return context.instance
    except DagsterInvariantViolationError:
        return None
