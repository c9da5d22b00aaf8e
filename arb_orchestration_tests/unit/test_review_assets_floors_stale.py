"""Review of the balance-floor check: a venue that stopped answering must not keep a green floor check.

Found: the floor check read the latest balances observation whatever its age,
so the check definition (the UI's *Execute*) passed on an hour-old balance
sheet, and the observation sensor, which records floors only for venues that
answered, left the last PASS standing for as long as the venue was down.
Now a balances observation older than `stale_after_seconds` cannot confirm a
floor: the check fails with ERROR, from the definition and from the sensor.
"""

from __future__ import annotations

import re
import time

import pytest
from dagster import AssetCheckKey, AssetCheckSeverity, AssetCheckEvaluation, DagsterInstance, build_sensor_context

from arb_orchestration.defs.market_data.checks import balance_floors_outcome
from arb_orchestration.defs.market_data.keys import BALANCES_FLOORS_CHECK, balances_key
from arb_orchestration.defs.market_data.observations import balances_observation
from arb_orchestration.defs.market_data.policy import MarketDataPolicy
from arb_orchestration.defs.market_data.sensors import SensorCursor
from arb_orchestration.defs.market_data.snapshot import MarketSnapshot, VenueState
from arb_orchestration.domain.models import Balance
from arb_orchestration_tests.unit.test_market_data import defs_for, latest_check
from arb_orchestration_tests.unit.test_market_data_fakes import FakeVenue, fake_exchange, world

POLICY = MarketDataPolicy(plots=False)  # stale after 300 s


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as inst:
        yield inst


def report_balances(instance: DagsterInstance, venue: str, usdt_free: float, fetched_at: float) -> None:
    """A real balances observation, as the sensor makes it, answered by the venue at `fetched_at`."""
    state = VenueState(
        venue=venue,
        balances={"USDT": Balance(asset="USDT", free=usdt_free, used=0.0, total=usdt_free)},
        positions=[],
        funding_rates=[],
        marks={},
        fetched_at=fetched_at,
    )
    snapshot = MarketSnapshot(venues=[venue], states={venue: state}, started_at=fetched_at)
    instance.report_runless_asset_event(balances_observation(snapshot, venue, {}, with_plot=False))


def test_the_floor_check_definition_fails_on_an_hour_old_balance_sheet(instance):
    report_balances(instance, "okx", 50_000.0, fetched_at=time.time() - 3600)  # well above the 10k floor
    report_balances(instance, "binance", 50_000.0, fetched_at=time.time() - 5)
    defs = defs_for(fake_exchange(), POLICY)
    defs.resolve_job_def("observed_state_checks").execute_in_process(instance=instance)

    okx = latest_check(instance, balances_key("okx"), BALANCES_FLOORS_CHECK)
    assert (okx.passed, okx.severity) == (False, AssetCheckSeverity.ERROR)
    assert re.fullmatch(r"okx: balances last observed 360\d s ago .*floors cannot be confirmed", okx.description)
    # Control: the same balances observed 5 s ago pass.
    assert latest_check(instance, balances_key("binance"), BALANCES_FLOORS_CHECK).passed


def floor_evaluations(result) -> dict:
    return {
        e.asset_key.path[1]: e
        for e in result.asset_events
        if isinstance(e, AssetCheckEvaluation) and e.check_name == BALANCES_FLOORS_CHECK
    }


def test_the_sensor_turns_the_floor_check_red_once_a_silent_venues_balances_are_stale(instance):
    # okx passed its floors when it last answered (the cursor says so), an hour ago; now it times out.
    report_balances(instance, "okx", 50_000.0, fetched_at=time.time() - 3600)
    cursor = SensorCursor()
    cursor.due([balance_floors_outcome("okx", {"USDT": 50_000.0}, POLICY.floors)], now=time.time() - 60,
               heartbeat=POLICY.check_heartbeat_seconds)
    broken = world(okx=FakeVenue("okx", fail_with=TimeoutError("read timed out")))
    defs = defs_for(fake_exchange(broken), POLICY)
    sensor = defs.resolve_sensor_def("market_state_observation_sensor")
    with build_sensor_context(instance=instance, resources=dict(defs.resources), cursor=cursor.dump()) as context:
        result = sensor(context)

    okx = floor_evaluations(result).get("okx")
    assert okx is not None, "the sensor left okx's last PASS standing while okx does not answer"
    assert (okx.passed, okx.severity) == (False, AssetCheckSeverity.ERROR)


def test_a_venue_that_missed_one_tick_keeps_its_floor_result(instance):
    # Not stale yet (observed 10 s ago): one failed tick changes nothing, and records nothing.
    report_balances(instance, "okx", 50_000.0, fetched_at=time.time() - 10)
    cursor = SensorCursor()
    cursor.due([balance_floors_outcome("okx", {"USDT": 50_000.0}, POLICY.floors)], now=time.time() - 10,
               heartbeat=POLICY.check_heartbeat_seconds)
    broken = world(okx=FakeVenue("okx", fail_with=TimeoutError("read timed out")))
    defs = defs_for(fake_exchange(broken), POLICY)
    sensor = defs.resolve_sensor_def("market_state_observation_sensor")
    with build_sensor_context(instance=instance, resources=dict(defs.resources), cursor=cursor.dump()) as context:
        result = sensor(context)
    assert "okx" not in floor_evaluations(result)
    assert {"binance", "hyperliquid"} <= set(floor_evaluations(result))  # the others are recorded (new)
    assert AssetCheckKey(balances_key("okx"), BALANCES_FLOORS_CHECK).to_user_string() in SensorCursor.parse(
        result.cursor
    ).checks
