"""Kafka client review (docs/kafka-client-review.md): failures of the DLQ producer and `publish` are loud.

Real sockets only: the real Apache Kafka broker, or a loopback port nothing listens on.
"""

from __future__ import annotations

import socket
import uuid

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from arb_orchestration.defs.events.kafka_source import DeadLetterError, Parked, drop_warm_clients, park_all
from arb_orchestration.resources.kafka import KafkaResource

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dlq_timeout_names_what_librdkafka_reported_instead_of_swallowing_it():
    kafka = KafkaResource(bootstrap_servers=f"127.0.0.1:{_closed_port()}")
    try:
        with pytest.raises(DeadLetterError) as raised:
            park_all(kafka.producer_config(), [Parked("nowhere.dlq", b"k", b"v")], timeout=2.0)
    finally:
        drop_warm_clients()
    text = str(raised.value)
    assert "not acknowledged" in text
    # The producer's error callback used to be `lambda err: None`: the cause never reached the tick log.
    assert "librdkafka reported" in text and ("refused" in text.lower() or "down" in text.lower()), text


def test_envelope_over_the_topic_max_message_bytes_fails_the_tick_loudly(kafka_broker):
    dlq = kafka_broker.create_topic(f"t{uuid.uuid4().hex[:8]}.dlq")
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, dlq, set_config={"max.message.bytes": "2000"})
    for future in admin.alter_configs([resource]).values():
        future.result(timeout=20)
    try:
        with pytest.raises(DeadLetterError) as raised:
            park_all(kafka_broker.resource().producer_config(), [Parked(dlq, b"k", b"x" * 10_000)], timeout=20)
    finally:
        drop_warm_clients()
    assert "failed" in str(raised.value) and "too large" in str(raised.value).lower(), str(raised.value)


def test_publish_timeout_purges_the_message_so_it_cannot_land_after_the_error():
    kafka = KafkaResource(bootstrap_servers=f"127.0.0.1:{_closed_port()}")
    producer = kafka.producer()
    with pytest.raises(TimeoutError):
        kafka.publish("nowhere", b"v", key=b"k", timeout=1.0, producer=producer)
    # The caller was told "not delivered": the message must not stay queued and be delivered later.
    assert len(producer) == 0
