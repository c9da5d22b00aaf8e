"""A topic deleted and recreated between ticks loses none of the new topic's events (real Apache Kafka).

The cursor holds offsets; a recreated topic starts its offsets again at 0. When the
new topic already holds at least as many messages per partition as the cursor's
offsets, offsets alone cannot tell: the sensor would read on at the old offsets and
skip every message below them. The cursor therefore records the topic's Kafka id;
a tick that finds another id drops what it read and restarts the topic from the
earliest offsets. Covered, each against the real broker: market (sensor kept warm
between ticks, and cold as after a code-server restart, with a signed critical
event among the new ones), capital, and funding (the newest rate of a market whose
only new rate sits below the old offset is the one hedged); and a recreation
noticed a tick late (events already acted on are read again): no new run key.
"""

import json
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicCollection, TopicPartition, Uuid
from confluent_kafka.admin import AdminClient, NewTopic
from dagster import DagsterInstance, build_sensor_context, job, op

from arb_orchestration.defs.events import EventSensorSettings, EventTopics, TriggerEventConfig, build_event_sensors
from arb_orchestration.defs.events.kafka_source import drop_warm_clients
from arb_orchestration.domain.events import dlq_topic, encode_event, sign_event

pytestmark = pytest.mark.integration

KEY = "recreated-topic-signing-key"
SETTINGS = EventSensorSettings(long_poll_seconds=0, metadata_timeout_seconds=5, max_read_seconds=10,
                               coalesce_rebalances=False)
PARTITIONS = 2
OLD_PER_PARTITION, NEW_PER_PARTITION = 3, 5  # the new topic holds more than the cursor's offsets


@op
def take_event(config: TriggerEventConfig) -> str:
    return config.event_id


@job
def recreated_rebalance_job():
    take_event()


@job
def recreated_stop_loss_job():
    take_event()


@job
def recreated_hedge_job():
    take_event()


def market(severity: str, **extra) -> dict:
    event = {"schema_version": 1, "event_id": str(uuid.uuid4()), "ts": time.time(), "venue": "binance",
             "symbol": "BTC/USDT:USDT", "price_change_pct": -3.0 if severity == "warning" else -18.0,
             "window_seconds": 60, "severity": severity, **extra}
    return sign_event(event, KEY) if severity == "critical" else event


def capital(level: str) -> dict:
    return {"schema_version": 1, "event_id": str(uuid.uuid4()), "ts": time.time(), "venue": "okx", "asset": "USDT",
            "balance": 1200.0, "threshold": 5000.0, "level": level}


def funding(venue: str, symbol: str, rate: float, ts: float) -> dict:
    return {"schema_version": 1, "event_id": str(uuid.uuid4()), "ts": ts, "venue": venue, "symbol": symbol,
            "rate": rate, "interval_hours": 8}


class World:
    """One test's topics, sensors and producer on the session broker."""

    def __init__(self, broker, partitions: int):
        self.broker = broker
        self.partitions = partitions
        tag = uuid.uuid4().hex[:8]
        self.topics = EventTopics.with_prefix(f"rc{tag}-")
        for name in (self.topics.market, self.topics.capital, self.topics.funding):
            broker.create_topic(name, partitions)
            broker.create_topic(dlq_topic(name), 1)
        self.sensors = dict(zip(("market", "capital", "funding"), build_event_sensors(
            rebalance_job=recreated_rebalance_job, stop_loss_job=recreated_stop_loss_job,
            hedge_job=recreated_hedge_job, settings=SETTINGS, topics=self.topics, name_prefix=f"rc{tag}_",
            alert_resource_key=None,  # no event here is refused: nothing to mail
        )))
        self.resources = {"kafka": broker.resource(signing_key=KEY)}
        self.admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        self.producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 2})
        self.instance = DagsterInstance.ephemeral()

    def publish(self, topic: str, by_partition: dict[int, list[dict]]) -> None:
        for partition, events in by_partition.items():
            for event in events:
                self.producer.produce(topic, value=encode_event(event), partition=partition)
        assert self.producer.flush(30) == 0

    def tick(self, kind: str, cursor: str | None):
        context = build_sensor_context(instance=self.instance, cursor=cursor, resources=self.resources)
        return self.sensors[kind](context)

    def topic_id(self, topic: str) -> str:
        return str(self.admin.describe_topics(TopicCollection([topic]), request_timeout=10)[topic].result().topic_id)

    def recreate(self, topic: str, timeout: float = 30.0) -> str:
        """Delete `topic`, create it again with the same partitions; returns the new topic's id."""
        old = self.topic_id(topic)
        self.admin.delete_topics([topic], operation_timeout=10)[topic].result()
        deadline = time.monotonic() + timeout
        while True:  # the broker refuses a create while the deletion is still under way
            try:
                self.admin.create_topics([NewTopic(topic, self.partitions, 1)], operation_timeout=10)[topic].result()
                break
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.broker.create_topic(topic, self.partitions)  # exists now: waits until every partition has a leader
        new = self.topic_id(topic)
        assert new != old
        return new

    def dlq_size(self, topic: str) -> int:
        consumer = Consumer({"bootstrap.servers": self.broker.bootstrap, "group.id": "dlq-size"})
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(dlq_topic(topic), 0), timeout=10)
        finally:
            consumer.close()
        return high - low

    def close(self) -> None:
        # Clients left open keep retrying the broker after the session stops it.
        self.producer.flush(5)
        self.producer.close()
        self.admin = None


@pytest.fixture
def world(kafka_broker):
    created = World(kafka_broker, PARTITIONS)
    yield created
    created.close()
    drop_warm_clients()


def run_until_caught_up(world: World, kind: str, cursor: str, expected_read: int, max_ticks: int = 6):
    """Tick until the cursor's offsets of the topic add up to `expected_read` and a tick reads nothing more.

    Returns (results, run requests of all ticks)."""
    topic = getattr(world.topics, kind)
    results, requests = [], []
    for _ in range(max_ticks):
        result = world.tick(kind, cursor)
        results.append(result)
        requests += result.run_requests
        cursor = result.cursor
        read = sum(v for k, v in json.loads(cursor)["offsets"].items() if k.startswith(f"{topic}/"))
        if read >= expected_read and not result.run_requests:
            break
    return results, requests


def topic_ids(result) -> dict[str, str]:
    return json.loads(result.cursor).get("topic_ids", {})


@pytest.mark.parametrize("restart", ["warm", "cold"], ids=["kept-consumer", "code-server-restart"])
def test_market_events_of_a_recreated_topic_are_all_acted_on(world, restart):
    topic = world.topics.market
    old = {p: [market("warning") for _ in range(OLD_PER_PARTITION)] for p in range(PARTITIONS)}
    world.publish(topic, old)
    first = world.tick("market", None)
    assert sorted(r.run_key for r in first.run_requests) == sorted(e["event_id"] for es in old.values() for e in es)
    old_id = world.topic_id(topic)

    new_id = world.recreate(topic)
    new = {p: [market("warning") for _ in range(NEW_PER_PARTITION)] for p in range(PARTITIONS)}
    critical = market("critical")
    new[0][OLD_PER_PARTITION + 1] = critical  # above the old offset: read (and dropped) by the tick that notices
    world.publish(topic, new)
    if restart == "cold":
        drop_warm_clients()

    results, requests = run_until_caught_up(world, "market", first.cursor, PARTITIONS * NEW_PER_PARTITION)

    # Every event of the new topic is acted on, the ones below the old offsets included.
    assert sorted(r.run_key for r in requests) == sorted(e["event_id"] for es in new.values() for e in es)
    assert [r.job_name for r in requests if r.run_key == critical["event_id"]] == ["recreated_stop_loss_job"]
    # The cursor named the old topic, and the tick that noticed the new one requested nothing and said why.
    assert topic_ids(first) == {topic: old_id}
    noticed = results[0]
    assert noticed.run_requests == []
    assert "recreated" in noticed.skip_reason.skip_message
    assert old_id in noticed.skip_reason.skip_message and new_id in noticed.skip_reason.skip_message
    assert json.loads(noticed.cursor)["offsets"] == {}
    assert critical["event_id"] not in json.loads(noticed.cursor).get("seen", {})  # not refused as a replay later
    assert topic_ids(results[-1]) == {topic: new_id}
    assert json.loads(results[-1].cursor)["offsets"] == {f"{topic}/{p}": NEW_PER_PARTITION for p in range(PARTITIONS)}


def test_capital_events_of_a_recreated_topic_are_all_acted_on(world):
    topic = world.topics.capital
    world.publish(topic, {p: [capital("warning") for _ in range(OLD_PER_PARTITION)] for p in range(PARTITIONS)})
    first = world.tick("capital", None)
    assert len(first.run_requests) == PARTITIONS * OLD_PER_PARTITION
    new_id = world.recreate(topic)
    new = {p: [capital("warning") for _ in range(NEW_PER_PARTITION)] for p in range(PARTITIONS)}
    world.publish(topic, new)

    results, requests = run_until_caught_up(world, "capital", first.cursor, PARTITIONS * NEW_PER_PARTITION)

    assert sorted(r.run_key for r in requests) == sorted(e["event_id"] for es in new.values() for e in es)
    assert topic_ids(results[-1]) == {topic: new_id}


def test_funding_takes_the_newest_rates_from_the_recreated_topic(world):
    topic = world.topics.funding
    a, b, c = ("binance", "ETH/USDT:USDT"), ("okx", "ETH/USDT:USDT"), ("bybit", "BTC/USDT:USDT")
    now = time.time()
    world.publish(topic, {0: [funding(*a, 0.0001, now - 60), funding(*b, 0.0001, now - 59),
                              funding(*a, 0.0001, now - 58), funding(*b, 0.0001, now - 57)]})
    first = world.tick("funding", None)
    assert len(first.run_requests) == 2  # a and b: never hedged by this sensor before
    new_id = world.recreate(topic)
    # Market a's only new rate (a 49 bps move) sits at offset 0, below the old cursor's offset 4.
    a_moved = funding(*a, 0.0050, now - 30)
    b_same = [funding(*b, 0.0001, now - 29 + i) for i in range(3)]
    c_first = [funding(*c, 0.0002, now - 20), funding(*c, 0.0003, now - 19)]
    world.publish(topic, {0: [a_moved, *b_same, *c_first]})

    results, requests = run_until_caught_up(world, "funding", first.cursor, 6)

    # a is hedged at its new rate, c (new market) at its newest; b did not move.
    assert sorted(r.run_key for r in requests) == sorted([a_moved["event_id"], c_first[-1]["event_id"]])
    assert topic_ids(results[-1]) == {topic: new_id}
    hedged = json.loads(results[-1].cursor)["hedged"]
    assert hedged["binance|ETH/USDT:USDT"]["rate"] == pytest.approx(0.0050)


def _with_topic_id(cursor: str, topic: str, topic_id: str) -> str:
    obj = json.loads(cursor)
    obj["topic_ids"] = {topic: topic_id}
    return json.dumps(obj)


def test_a_recreation_noticed_a_tick_late_asks_for_no_new_run(world):
    """The topic was recreated after a tick's DescribeTopics was answered: that tick acted on the new
    topic's events under the old id; the next tick notices, and reading the topic again from its start
    asks for no run key that was not asked for already (a critical event: refused as a replay, loud)."""
    market_topic, funding_topic = world.topics.market, world.topics.funding
    critical = market("critical")
    world.publish(market_topic, {0: [market("warning"), critical, market("warning")], 1: [market("warning")]})
    now = time.time()
    world.publish(funding_topic, {0: [funding("binance", "ETH/USDT:USDT", 0.0001, now - 5),
                                      funding("okx", "ETH/USDT:USDT", 0.0030, now - 4)]})
    stale_id = str(Uuid(12345, 67890))  # stands for the old topic's id (no topic on the broker has it)
    for kind, topic in (("market", market_topic), ("funding", funding_topic)):
        acted, _ = run_until_caught_up(world, kind, None, 4 if kind == "market" else 2)
        first_keys = {r.run_key for result in acted for r in result.run_requests}
        assert len(first_keys) == (4 if kind == "market" else 2)
        late = _with_topic_id(acted[-1].cursor, topic, stale_id)  # the id the cursor held before the recreation
        results, requests = run_until_caught_up(world, kind, late, 4 if kind == "market" else 2)
        assert "recreated" in results[0].skip_reason.skip_message and results[0].run_requests == []
        assert {r.run_key for r in requests} <= first_keys
        if kind == "market":
            # Re-read: the warnings ask again under their keys (Dagster skips them); the critical event
            # is in the replay memory, so it is parked and alerted, never a second stop-loss.
            assert {r.run_key for r in requests} == first_keys - {critical["event_id"]}
            assert world.dlq_size(market_topic) == 1
        assert topic_ids(results[-1]) == {topic: world.topic_id(topic)}
