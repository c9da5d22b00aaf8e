"""Rebalance requests coalesce into an event-requested rebalance that has not started yet (real Kafka broker).

A rebalance plans from the balances when it starts, and only one runs at a time.
One run per event therefore piled up behind the running one: in the demo world
(2 events/s) `arb-orchestration dev` had 36 rebalance runs queued after three
minutes, each of which would re-plan, and creating them kept the capital
sensor's ticks over the 5 s daemon loop (ticks 10 s apart, so a critical
capital event waited up to 10 s). Now an event that asks for a rebalance while
an event-requested one still waits requests none; the tick says so.
"""

from __future__ import annotations

import time

import pytest
from dagster import DagsterRunStatus, build_sensor_context
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.test_utils import create_run_for_test

from arb_orchestration.defs.events.kafka_source import drop_warm_clients
from arb_orchestration.defs.events.tuning import EventSensorSettings
from arb_orchestration_tests.integration.test_sensors_kafka import Setup, capital, market, offsets
from arb_orchestration_tests.integration.test_sensors_paused_kafka import instance, sink  # noqa: F401 (fixtures)
from arb_orchestration_tests.unit.deploy_model import remote_job_origin

pytestmark = pytest.mark.integration

REBALANCE_JOB = "rebalance_job_for_tests"
SETTINGS = EventSensorSettings(long_poll_seconds=0, metadata_timeout_seconds=5, max_read_seconds=10)


@pytest.fixture
def setup(kafka_broker, sink):  # the shared fixture's, with coalescing on (the default)
    yield Setup(kafka_broker, sink, settings=SETTINGS)
    drop_warm_clients()
    Setup.close_all()


def tick(setup: Setup, sensor, instance, cursor=None):
    return sensor(build_sensor_context(instance=instance, cursor=cursor, resources=setup.resources))


def a_rebalance(instance, status: DagsterRunStatus, **tags) -> str:
    """A rebalance run in `status` (NOT_STARTED, or QUEUED as the run coordinator leaves it)."""
    return create_run_for_test(
        instance, job_name=REBALANCE_JOB, status=status, tags=tags, remote_job_origin=remote_job_origin(REBALANCE_JOB)
    ).run_id


def _move(instance, run_id: str, event_type: DagsterEventType, expected: DagsterRunStatus) -> None:
    """Change the run's status the way Dagster does: by its run event."""
    run = instance.get_run_by_id(run_id)
    event = DagsterEvent(event_type_value=event_type.value, job_name=run.job_name)
    instance.handle_new_event(EventLogEntry(error_info=None, level="DEBUG", user_message="", run_id=run_id,
                                            timestamp=time.time(), dagster_event=event))
    assert instance.get_run_by_id(run_id).status == expected


def test_the_coalescing_default_is_on():
    assert EventSensorSettings().coalesce_rebalances is True


def test_events_of_one_tick_request_one_rebalance(setup, instance):
    first, second = capital("warning"), capital("warning")
    setup.publish(setup.topics.capital, first, second)
    setup.publish(setup.topics.market, market("warning"))

    result = tick(setup, setup.capital_sensor, instance)

    assert [(r.job_name, r.run_key) for r in result.run_requests] == [(REBALANCE_JOB, first["event_id"])]
    assert offsets(result) == {f"{setup.topics.capital}/0": 2}  # the second event was read, and left to the first
    # The market sensor sees no waiting run in the instance (the daemon has not created the request's run).
    shocks = tick(setup, setup.market_sensor, instance)
    assert [r.job_name for r in shocks.run_requests] == [REBALANCE_JOB]


def test_an_event_requested_rebalance_still_queued_absorbs_later_events(setup, instance):
    queued = a_rebalance(instance, DagsterRunStatus.QUEUED, **{"arb/trigger": "event"})
    setup.publish(setup.topics.capital, capital("warning"), capital("warning"))

    result = tick(setup, setup.capital_sensor, instance)

    assert result.run_requests == []
    assert offsets(result) == {f"{setup.topics.capital}/0": 2}  # read and moved past: nothing re-read
    message = result.skip_reason.skip_message
    assert "read 2, acted 0, parked 0, ignored 2" in message
    assert "2 left to the rebalance already waiting to start" in message

    # Once that run has started (it planned from the balances of its start), the next event requests
    # the next rebalance.
    _move(instance, queued, DagsterEventType.RUN_START, DagsterRunStatus.STARTED)
    later = capital("warning")
    setup.publish(setup.topics.capital, later)
    resumed = tick(setup, setup.capital_sensor, instance, result.cursor)
    assert [(r.job_name, r.run_key) for r in resumed.run_requests] == [(REBALANCE_JOB, later["event_id"])]


def test_a_run_created_but_not_yet_submitted_absorbs_too(setup, instance):
    a_rebalance(instance, DagsterRunStatus.NOT_STARTED, **{"arb/trigger": "event"})
    setup.publish(setup.topics.market, market("warning"))

    result = tick(setup, setup.market_sensor, instance)

    assert result.run_requests == []
    assert "1 left to the rebalance already waiting to start" in result.skip_reason.skip_message


def test_a_rebalance_queued_by_hand_absorbs_nothing(setup, instance):
    # An operator's run may be a dry run or use another policy: the event still gets its own rebalance.
    a_rebalance(instance, DagsterRunStatus.QUEUED)
    event = capital("warning")
    setup.publish(setup.topics.capital, event)

    result = tick(setup, setup.capital_sensor, instance)

    assert [(r.job_name, r.run_key) for r in result.run_requests] == [(REBALANCE_JOB, event["event_id"])]


def test_a_critical_event_still_stops_everything_while_a_rebalance_waits(setup, instance):
    a_rebalance(instance, DagsterRunStatus.QUEUED, **{"arb/trigger": "event"})
    critical = market("critical", pct=-18.0, sign=True)
    setup.publish(setup.topics.market, market("warning"), critical)

    result = tick(setup, setup.market_sensor, instance)

    assert [(r.job_name, r.run_key) for r in result.run_requests] == [("stop_loss_job_for_tests", critical["event_id"])]
    assert offsets(result) == {f"{setup.topics.market}/0": 2}


def test_off_it_requests_one_rebalance_per_event(kafka_broker, sink, instance):
    setup = Setup(kafka_broker, sink, settings=SETTINGS.but(coalesce_rebalances=False))
    try:
        a_rebalance(instance, DagsterRunStatus.QUEUED, **{"arb/trigger": "event"})
        events = [capital("warning"), capital("warning")]
        setup.publish(setup.topics.capital, *events)
        result = tick(setup, setup.capital_sensor, instance)
        assert [r.run_key for r in result.run_requests] == [e["event_id"] for e in events]
    finally:
        drop_warm_clients()
        Setup.close_all()
