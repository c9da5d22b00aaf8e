"""Review of the market-state assets against the real local world (exchange simulator over HTTP).

- A venue that stops answering (503) does not keep a green balance-floor check:
  once its last balance sheet is stale, the observation sensor records the
  floor check failing (ERROR), and so does the check definition executed the
  way the UI's *Execute* does it (the asset job, subset to the check).
"""

from __future__ import annotations

import os
import time

import pytest
from dagster import AssetCheckEvaluation, AssetCheckKey, AssetCheckSeverity, Definitions, build_sensor_context, instance_for_test

from arb_orchestration.defs.market_data import build_market_data_defs
from arb_orchestration.defs.market_data.keys import BALANCES_FLOORS_CHECK, balances_key
from arb_orchestration.defs.market_data.policy import MarketDataPolicy
from arb_orchestration_tests.integration.world_resources import world_exchange

pytestmark = pytest.mark.integration


@pytest.fixture
def instance():
    with instance_for_test() as inst:
        yield inst


def world_defs(policy: MarketDataPolicy) -> tuple[Definitions, list[str]]:
    venues = os.environ["EXCHANGE_VENUES"].split(",")
    exchange = world_exchange(timeout_seconds=2.0, max_attempts=1, retry_base_delay=0.01)
    return Definitions.merge(build_market_data_defs(venues, policy), Definitions(resources={"exchange": exchange})), venues


def tick(defs: Definitions, instance, cursor: str | None):
    """One observation-sensor tick, its events stored as the daemon stores them (runless)."""
    sensor = defs.resolve_sensor_def("market_state_observation_sensor")
    with build_sensor_context(instance=instance, resources=dict(defs.resources), cursor=cursor) as context:
        result = sensor(context)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def test_a_venue_answering_503_loses_its_green_floor_check_once_its_balances_are_stale(world, instance):
    policy = MarketDataPolicy(plots=False, warn_after_seconds=1.5, stale_after_seconds=3.0)
    defs, venues = world_defs(policy)
    first = tick(defs, instance, None)
    floors = {e.asset_key: e for e in first.asset_events if isinstance(e, AssetCheckEvaluation)}
    assert floors[balances_key("okx")].passed  # okx answered and is far above its floor

    world.exchange.faults.add({"kind": "error_5xx", "venue": "okx", "status": 503})
    cursor, okx_floor, deadline = first.cursor, None, time.monotonic() + 15
    while okx_floor is None and time.monotonic() < deadline:
        result = tick(defs, instance, cursor)
        cursor = result.cursor
        assert result.asset_events, "the healthy venues are still observed"
        okx_floor = next(
            (e for e in result.asset_events
             if isinstance(e, AssetCheckEvaluation) and e.asset_key == balances_key("okx")),
            None,
        )
    assert okx_floor is not None, "okx's floor check kept its PASS while okx answered 503"
    assert (okx_floor.passed, okx_floor.severity) == (False, AssetCheckSeverity.ERROR)
    assert "floors cannot be confirmed" in okx_floor.description

    # The UI's Execute on the check: the asset job subset to that check, reading the instance.
    check_key = AssetCheckKey(balances_key("okx"), BALANCES_FLOORS_CHECK)
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection={check_key}
    )
    (evaluation,) = job.execute_in_process(instance=instance).get_asset_check_evaluations()
    assert (evaluation.passed, evaluation.severity) == (False, AssetCheckSeverity.ERROR)
    binance = AssetCheckKey(balances_key("binance"), BALANCES_FLOORS_CHECK)
    control = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection={binance}
    )
    tick(defs, instance, cursor)  # binance just answered again
    (ok,) = control.execute_in_process(instance=instance).get_asset_check_evaluations()
    assert ok.passed, ok.description
