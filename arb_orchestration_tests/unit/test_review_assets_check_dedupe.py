"""Review of the sensors' check de-duplication: the UI must show the latest verdict, whoever wrote the last one.

The sensors record a check result only when it differs from the one they last
recorded (their cursor), or as a 10-minute heartbeat. But the observation job
and the UI's *Execute* record results too. Found: the sensor recorded a floor
breach, the job then recorded a PASS (the balance had been topped up at that
moment), the balance fell below the floor again, and the sensor recorded
nothing: same verdict as in its cursor. The check showed PASS for up to ten
minutes while the venue was below its floor. Now the sensors compare with the
latest result stored in the instance.
"""

from __future__ import annotations

from dagster import AssetCheckEvaluation, AssetCheckSeverity, DagsterInstance, build_sensor_context

import pytest

from arb_orchestration.defs.market_data.checks import balance_floors_outcome
from arb_orchestration.defs.market_data.keys import BALANCES_FLOORS_CHECK, balances_key
from arb_orchestration.defs.market_data.policy import MarketDataPolicy
from arb_orchestration_tests.unit.test_market_data import defs_for
from arb_orchestration_tests.unit.test_market_data_fakes import FakeVenue, fake_exchange, marks, world

POLICY = MarketDataPolicy(plots=False)


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as inst:
        yield inst


def tick(defs, instance, cursor):
    """One observation-sensor tick, its events stored as the daemon stores them."""
    sensor = defs.resolve_sensor_def("market_state_observation_sensor")
    with build_sensor_context(instance=instance, resources=dict(defs.resources), cursor=cursor) as context:
        result = sensor(context)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def okx_floor(result):
    return next((e for e in result.asset_events if isinstance(e, AssetCheckEvaluation)
                 and e.asset_key == balances_key("okx") and e.check_name == BALANCES_FLOORS_CHECK), None)


def test_a_pass_recorded_by_someone_else_does_not_hide_a_breach_the_sensor_already_saw(instance):
    below = world(okx=FakeVenue("okx", balances={"USDT": 5_000.0}, marks=marks()))
    defs = defs_for(fake_exchange(below), POLICY)
    first = tick(defs, instance, None)
    assert (okx_floor(first).passed, okx_floor(first).severity) == (False, AssetCheckSeverity.ERROR)

    # The observation job (or the UI's Execute) saw okx topped up and recorded a PASS.
    instance.report_runless_asset_event(balance_floors_outcome("okx", {"USDT": 50_000.0}, POLICY.floors).as_evaluation())

    second = tick(defs, instance, first.cursor)  # okx is below its floor again
    again = okx_floor(second)
    assert again is not None, "the check kept showing the other writer's PASS while okx is below its floor"
    assert (again.passed, again.severity) == (False, AssetCheckSeverity.ERROR)

    third = tick(defs, instance, second.cursor)  # nothing changed: still no repeat within the heartbeat
    assert okx_floor(third) is None
