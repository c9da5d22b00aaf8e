"""From a funding-rate event on the real Kafka broker to a hedge against the local world, and back:
the `funding_deviation_sensor` requests `funding_rate_hedge` (tags, run config the job accepts), the
hedge runs on a real temporary instance and records the rates it hedged at, and the sensor's next
tick measures deviation from *those* (the hedge reset the baseline) — a control tick without the
hedge's record would have asked for another hedge."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from confluent_kafka import Producer
from dagster import build_sensor_context, instance_for_test

from arb_orchestration.defs.events import EventSensorSettings, EventTopics, build_event_sensors, domain_run_config
from arb_orchestration.defs.events.kafka_source import drop_warm_clients
from arb_orchestration.domain.events import dlq_topic, encode_event
from arb_orchestration_tests.integration.test_hedge_job_sim import JOB, resources_from_env

pytestmark = pytest.mark.integration

BTC = "BTC/USDT:USDT"
KEY = "hedge-sensor-test-key"


def funding_event(rate: float, *, venue: str = "binance", interval_hours: float = 8.0) -> dict:
    return {"schema_version": 1, "event_id": str(uuid.uuid4()), "ts": time.time(), "venue": venue,
            "symbol": BTC, "rate": rate, "interval_hours": interval_hours}


@pytest.fixture
def funding_sensor(kafka_broker):
    topics = EventTopics.with_prefix(f"h{uuid.uuid4().hex[:8]}-")
    for name in (topics.market, topics.capital, topics.funding):
        kafka_broker.create_topic(name, 1)
        kafka_broker.create_topic(dlq_topic(name), 1)
    sensors = build_event_sensors(
        rebalance_job=JOB, stop_loss_job=JOB, hedge_job=JOB,
        settings=EventSensorSettings(long_poll_seconds=0, metadata_timeout_seconds=5, max_read_seconds=10),
        topics=topics, run_config=domain_run_config, alert_resource_key=None, name_prefix="hedge_test_",
    )
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "linger.ms": 2})

    def publish(event: dict) -> None:
        producer.produce(topics.funding, value=encode_event(event))
        assert producer.flush(30) == 0

    def tick(instance, cursor):
        context = build_sensor_context(instance=instance, cursor=cursor,
                                       resources={"kafka": kafka_broker.resource(signing_key=KEY)})
        return sensors[2](context)

    yield publish, tick
    drop_warm_clients()


def test_a_hedge_run_resets_the_sensors_funding_baseline(world, funding_sensor):
    publish, tick = funding_sensor
    market = f"binance|{BTC}"
    with instance_for_test() as instance, instance_for_test() as control:
        publish(funding_event(0.0050))  # 50 bp per 8 h, never hedged: ask for a hedge
        first = tick(instance, None)
        (request,) = first.run_requests
        assert request.job_name == "funding_rate_hedge"
        assert request.tags["arb/trigger"] == "event" and request.tags["arb/job"] == "funding_rate_hedge"
        assert json.loads(first.cursor)["hedged"][market]["rate"] == 0.0050

        hedge = JOB.execute_in_process(instance=instance, run_config=request.run_config, tags=request.tags,
                                       resources=resources_from_env(), raise_on_error=False)
        assert hedge.success  # the simulator's binance BTC funding: 1 bp per 8 h, recorded by the hedge

        publish(funding_event(0.0002))  # 2 bp: 48 bps below the sensor's own baseline, 1 bp above the hedge's
        after = tick(instance, first.cursor)
        assert after.run_requests == []
        baseline = json.loads(after.cursor)["hedged"][market]
        assert baseline["rate"] == pytest.approx(0.0001) and baseline["run_id"] == hedge.run_id
        assert "ignored 1" in after.skip_reason.skip_message

        # Control: an instance where no hedge ran sees the same event as a 48 bps move.
        (again,) = tick(control, first.cursor).run_requests
        assert "-48.00 bps, exceeds the 20 bps threshold" in again.run_config["trigger"]["reason"]
