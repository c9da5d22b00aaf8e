"""The real Apache Kafka broker fixture: produce/consume with manual assignment, restart keeps data and offsets."""

from __future__ import annotations

import time

import pytest

from arb_orchestration.domain.events import encode_event, parse_event, partition_key
from arb_orchestration.sim.event_generator import EventFactory

pytestmark = pytest.mark.integration


def consume_from(kafka, topic: str, start: dict[int, int], expected: int, timeout: float = 20.0) -> list:
    """Read `expected` messages from the given partition offsets (the way the sensors use their cursor)."""
    from confluent_kafka import TopicPartition

    consumer = kafka.consumer()
    try:
        consumer.assign([TopicPartition(topic, p, o) for p, o in start.items()])
        messages, deadline = [], time.monotonic() + timeout
        while len(messages) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                messages.append(msg)
        # Anything beyond `expected` would be a duplicate or a stray: poll briefly for it.
        extra = consumer.poll(0.3)
        assert extra is None or extra.error(), f"unexpected extra message at offset {extra.offset()}"
        return messages
    finally:
        consumer.close()


def test_broker_is_apache_kafka_4(kafka_broker):
    assert kafka_broker.version.startswith("4."), kafka_broker.version
    metadata = kafka_broker.resource().admin().list_topics(timeout=10)
    assert [b.port for b in metadata.brokers.values()] == [kafka_broker.port]
    assert metadata.controller_id in metadata.brokers  # a real KRaft controller, unlike the mock


def test_produce_and_consume_typed_events_with_manual_assignment(kafka_broker):
    topic = kafka_broker.create_topic(kafka_broker.unique_topic("market-events"), partitions=3)
    kafka = kafka_broker.resource()
    factory = EventFactory(seed=11, weights=(1, 0, 0))
    payloads = [factory.next_event()[1] for _ in range(30)]
    producer = kafka.producer()
    for payload in payloads:
        producer.produce(topic, value=encode_event(payload), key=partition_key(payload))
    assert producer.flush(15) == 0

    messages = consume_from(kafka, topic, {0: 0, 1: 0, 2: 0}, expected=30)

    assert sorted(m.value() for m in messages) == sorted(encode_event(p) for p in payloads)
    assert len({m.partition() for m in messages}) > 1  # keys spread over partitions
    events = [parse_event("market-events", m.value()) for m in messages]
    assert {e.event_id for e in events} == {p["event_id"] for p in payloads}
    # Per key, order is preserved.
    by_key: dict[bytes, list[int]] = {}
    for m in messages:
        by_key.setdefault(m.key(), []).append(m.offset())
    assert all(offsets == sorted(offsets) for offsets in by_key.values())


def test_restart_keeps_messages_and_a_cursor_resumes_after_it(kafka_broker):
    topic = kafka_broker.create_topic(kafka_broker.unique_topic("restart"), partitions=1)
    kafka = kafka_broker.resource()
    producer = kafka.producer()
    for i in range(5):
        kafka.publish(topic, f"before-{i}".encode(), producer=producer)
    cursor = {0: 5}  # what a sensor would have stored after reading the first five

    began = time.monotonic()
    seconds = kafka_broker.restart()

    assert kafka_broker.is_running()
    # The producer created before the restart reconnects by itself.
    delivered = [kafka.publish(topic, f"after-{i}".encode(), producer=producer).offset for i in range(3)]
    print(f"broker restart took {seconds:.1f}s; first delivery after {time.monotonic() - began:.1f}s")
    assert delivered == [5, 6, 7]  # the log survived the restart
    resumed = consume_from(kafka, topic, cursor, expected=3)
    assert [m.value() for m in resumed] == [b"after-0", b"after-1", b"after-2"]
    replayed = consume_from(kafka, topic, {0: 0}, expected=8)
    assert [m.value() for m in replayed][:5] == [f"before-{i}".encode() for i in range(5)]
