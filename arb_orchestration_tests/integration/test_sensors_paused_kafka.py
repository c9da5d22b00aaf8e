"""The event sensors while trading is paused (the kill switch), against the real Apache Kafka broker.

After a stop-loss pauses trading, a rebalance or hedge would only refuse to
start. The sensors therefore request none while paused: they still read and
count every event (the cursor moves on, the tick says how many were not acted
on and why), a critical event still requests the stop-loss, and a funding
baseline does not move, so after the resume a deviation is still measured
from the rate of the last real hedge.
"""

from __future__ import annotations

import json
import time

import pytest
from dagster import DagsterInstance, build_sensor_context

from arb_orchestration.defs.events.kafka_source import drop_warm_clients
from arb_orchestration.saga.kill_switch import pause_trading, resume_trading
from arb_orchestration.sim.smtp_sink import SmtpSink
from arb_orchestration_tests.integration.test_sensors_kafka import Setup, capital, funding, market, offsets

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sink():
    with SmtpSink() as smtp_sink:
        yield smtp_sink


@pytest.fixture
def setup(kafka_broker, sink):
    yield Setup(kafka_broker, sink)
    drop_warm_clients()
    Setup.close_all()


@pytest.fixture
def instance():
    # Its own instance: the kill switch lives in the instance, other modules' sensors must not see it.
    with DagsterInstance.ephemeral() as fresh:
        yield fresh


def tick(setup: Setup, sensor, instance, cursor):
    return sensor(build_sensor_context(instance=instance, cursor=cursor, resources=setup.resources))


def test_paused_market_and_capital_events_request_no_rebalance_but_a_critical_one_still_stops(setup, instance):
    pause_trading(instance, "stop-loss after a shock", by="test")
    critical = market("critical", pct=-18.0, sign=True)
    setup.publish(setup.topics.market, market("warning"), market("warning"), critical)
    setup.publish(setup.topics.capital, capital("warning"))

    shocks = tick(setup, setup.market_sensor, instance, None)
    capital_tick = tick(setup, setup.capital_sensor, instance, None)

    assert [(r.job_name, r.run_key) for r in shocks.run_requests] == [("stop_loss_job_for_tests", critical["event_id"])]
    assert offsets(shocks) == {f"{setup.topics.market}/0": 3}
    assert capital_tick.run_requests == []
    assert offsets(capital_tick) == {f"{setup.topics.capital}/0": 1}
    message = capital_tick.skip_reason.skip_message
    assert "read 1, acted 0, parked 0, ignored 1" in message
    assert "1 not acted on because trading is paused" in message

    # Resumed: the next warning requests its rebalance again.
    resume_trading(instance, "checked", by="test")
    later = capital("warning")
    setup.publish(setup.topics.capital, later)
    resumed = tick(setup, setup.capital_sensor, instance, capital_tick.cursor)
    assert [(r.job_name, r.run_key) for r in resumed.run_requests] == [("rebalance_job_for_tests", later["event_id"])]


def test_paused_funding_deviation_requests_no_hedge_and_keeps_the_baseline_for_after_the_resume(setup, instance):
    topic = setup.topics.funding
    market_key = "binance|ETH/USDT:USDT"
    cursor = json.dumps({"v": 1, "offsets": {}, "hedged": {
        market_key: {"rate": 0.0001, "interval_hours": 8, "at": 0, "event_id": "old"}}})
    pause_trading(instance, "stop-loss after a shock", by="test")
    now = time.time()
    setup.publish(topic, funding("binance", 0.0030, 8, ts=now - 2))  # +29 bps: a hedge if not paused

    paused = tick(setup, setup.funding_sensor, instance, cursor)

    assert paused.run_requests == []
    assert offsets(paused) == {f"{topic}/0": 1}
    assert json.loads(paused.cursor)["hedged"] == json.loads(cursor)["hedged"]  # the baseline did not move
    assert "1 not acted on because trading is paused" in paused.skip_reason.skip_message

    resume_trading(instance, "checked", by="test")
    again = funding("binance", 0.0030, 8, ts=now - 1)
    setup.publish(topic, again)
    resumed = tick(setup, setup.funding_sensor, instance, paused.cursor)
    assert [(r.job_name, r.run_key) for r in resumed.run_requests] == [("hedge_job_for_tests", again["event_id"])]
    assert json.loads(resumed.cursor)["hedged"][market_key]["event_id"] == again["event_id"]
