"""How a tick uses the topic id it asks for, on fakes (the consumer of test_event_sensor_reading, an admin client).

Covered: no answer within the wait (or a failed DescribeTopics) neither holds the
tick nor fails it, keeps the cursor's id and warns; another id drops the tick's
requests, resets the cursor and unassigns the kept consumer, so the next tick
assigns every partition from the earliest offset; a cluster whose metadata names
no controller (librdkafka's mock cluster) gets no admin client and one warning,
not one per tick; a cluster that reports the all-zero id is not asked again next
tick. The real broker: integration/test_sensors_topic_recreated_kafka.py.
"""

import json
import time
import uuid
from concurrent.futures import Future

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Uuid
from dagster import build_sensor_context, job, op

from arb_orchestration.defs.events import EventSensorSettings, EventTopics, TriggerEventConfig, build_event_sensors
from arb_orchestration.defs.events import kafka_source
from arb_orchestration.domain.events import encode_event
from arb_orchestration.resources.kafka import KafkaResource
from arb_orchestration_tests.unit.test_event_sensor_reading import FakeConsumer

OLD_ID, NEW_ID = str(Uuid(1, 1)), str(Uuid(2, 2))


@op
def _take(config: TriggerEventConfig) -> str:
    return config.event_id


@job
def _topic_id_job():
    _take()


class ControllerConsumer(FakeConsumer):
    """The fake consumer, with cluster metadata that names a controller (as a real Kafka's does)."""

    controller = True

    def list_topics(self, topic=None, timeout=None):
        metadata = super().list_topics(topic, timeout)
        metadata.controller_id, metadata.brokers = (1, {1: object()}) if self.controller else (0, {1: object()})
        return metadata


class FakeAdmin:
    """Answers DescribeTopics with what `reply` holds: an id string, an exception, or None (never answers)."""

    made: list["FakeAdmin"] = []
    reply: object = None

    def __init__(self, config):
        self.config, self.asked = config, 0
        FakeAdmin.made.append(self)

    def poll(self, timeout):
        return 0

    def describe_topics(self, topics, request_timeout=None):
        self.asked += 1
        future: Future = Future()
        if isinstance(FakeAdmin.reply, BaseException):
            future.set_exception(FakeAdmin.reply)
        elif FakeAdmin.reply is not None:
            future.set_result(type("TopicDescription", (), {"topic_id": FakeAdmin.reply})())
        return {name: future for name in topics.topic_names}


def _warning(n: int) -> bytes:
    return encode_event({"schema_version": 1, "event_id": f"w{n}-{uuid.uuid4().hex[:6]}", "ts": time.time(),
                         "venue": "binance", "symbol": "BTC/USDT:USDT", "price_change_pct": -3.0,
                         "window_seconds": 60, "severity": "warning"})


@pytest.fixture
def market(monkeypatch):
    """(evaluate(cursor), topic, logs, consumers made): the market sensor on the fakes, no long poll."""
    topics = EventTopics.with_prefix(f"ti{uuid.uuid4().hex[:6]}-")
    logs = {0: [_warning(i) for i in range(4)]}
    made: list[ControllerConsumer] = []

    def consumer(config):
        made.append(ControllerConsumer(topics.market, logs))
        return made[-1]

    monkeypatch.setattr(kafka_source, "Consumer", consumer)
    monkeypatch.setattr(kafka_source, "AdminClient", FakeAdmin)
    monkeypatch.setattr(ControllerConsumer, "controller", True)
    FakeAdmin.made, FakeAdmin.reply = [], None
    kafka_source.drop_warm_clients()
    sensor = build_event_sensors(rebalance_job=_topic_id_job, stop_loss_job=_topic_id_job, hedge_job=_topic_id_job,
                                 settings=EventSensorSettings(long_poll_seconds=0, coalesce_rebalances=False),
                                 topics=topics, name_prefix="ti_", alert_resource_key=None)[0]

    def evaluate(cursor):
        return sensor(build_sensor_context(cursor=cursor, resources={"kafka": KafkaResource(bootstrap_servers="fake:9")}))

    yield evaluate, topics.market, logs, made
    kafka_source.drop_warm_clients()


def _cursor(topic: str, offset: int | None, topic_id: str | None) -> str:
    obj: dict = {"v": 1, "offsets": {} if offset is None else {f"{topic}/0": offset}}
    if topic_id:
        obj["topic_ids"] = {topic: topic_id}
    return json.dumps(obj)


def _warnings(capfd) -> list[str]:
    """The WARNING lines the sensor's context logged (Dagster's console handler, on stderr)."""
    return [line for line in capfd.readouterr().err.splitlines() if " - WARNING - " in line]


@pytest.mark.parametrize("reply", [KafkaException(KafkaError(KafkaError._TIMED_OUT)), None], ids=["failed", "no-answer"])
def test_an_unknown_id_neither_holds_nor_fails_the_tick_and_keeps_the_cursors(market, capfd, reply):
    evaluate, topic, logs, made = market
    FakeAdmin.reply = reply
    began = time.monotonic()
    result = evaluate(_cursor(topic, 1, OLD_ID))
    took = time.monotonic() - began
    assert len(result.run_requests) == 3  # offsets 1..3 acted on as without the check
    assert json.loads(result.cursor)["topic_ids"] == {topic: OLD_ID}
    assert json.loads(result.cursor)["offsets"] == {f"{topic}/0": 4}
    assert took < kafka_source.TOPIC_ID_REQUEST_SECONDS  # bounded by the wait, not by the request's timeout
    assert any("topic id not checked this tick" in line and OLD_ID in line for line in _warnings(capfd))


def test_another_id_drops_the_tick_and_the_next_tick_reads_every_message_from_the_start(market, capfd):
    evaluate, topic, logs, made = market
    FakeAdmin.reply = OLD_ID
    first = evaluate(_cursor(topic, None, None))
    assert len(first.run_requests) == 4 and json.loads(first.cursor)["topic_ids"] == {topic: OLD_ID}
    # The topic is replaced by one with 6 messages: the cursor's offset 4 exists in it.
    logs[0][:] = [_warning(10 + i) for i in range(6)]
    FakeAdmin.reply = NEW_ID
    noticed = evaluate(first.cursor)
    assert noticed.run_requests == []
    assert json.loads(noticed.cursor) == {"v": 1, "offsets": {}, "topic_ids": {topic: NEW_ID}}
    assert any(OLD_ID in line and NEW_ID in line and topic in line for line in _warnings(capfd))
    after = evaluate(noticed.cursor)
    assert len(after.run_requests) == 6
    # The kept consumer was let go: the next tick assigned the partition from the earliest offset.
    assert made[0].assigned_at[-1] == {0: OFFSET_BEGINNING}
    assert json.loads(after.cursor)["topic_ids"] == {topic: NEW_ID}


def test_a_cluster_without_a_controller_gets_no_admin_client_and_one_warning(market, capfd, monkeypatch):
    evaluate, topic, logs, made = market
    monkeypatch.setattr(ControllerConsumer, "controller", False)
    first = evaluate(None)
    second = evaluate(first.cursor)
    assert FakeAdmin.made == []
    assert "topic_ids" not in json.loads(second.cursor)
    assert len(first.run_requests) == 4
    assert sum("names no controller" in line for line in _warnings(capfd)) == 1


def test_a_cluster_without_topic_ids_is_not_asked_again_next_tick(market, capfd):
    evaluate, topic, logs, made = market
    FakeAdmin.reply = str(Uuid(0, 0))
    first = evaluate(None)
    second = evaluate(first.cursor)
    assert [admin.asked for admin in FakeAdmin.made] == [1]
    assert "topic_ids" not in json.loads(second.cursor)
    assert sum("no topic ids" in line for line in _warnings(capfd)) == 1
