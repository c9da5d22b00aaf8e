"""Where parked messages land: `park_all` reports each one's DLQ partition and offset (real broker).

The tick log names them ("parked 3 message(s) on t.dlq partition 0 offsets 0-1, ...") because
that is what `arb-orchestration replay-dlq --partition P --offset N` takes.
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from arb_orchestration.defs.events.kafka_source import Parked, describe_landed, park_all

pytestmark = pytest.mark.integration


def test_park_all_reports_the_partition_and_offset_of_every_parked_message(kafka_broker):
    dlq = kafka_broker.create_topic(f"t{uuid.uuid4().hex[:8]}.dlq", partitions=2)
    parked = [Parked(dlq, f"source/0/{i}".encode(), f"envelope {i}".encode()) for i in range(5)]

    landed = park_all(kafka_broker.resource().producer_config(), parked, timeout=20)

    assert len(landed) == 5 and {topic for topic, _, _ in landed} == {dlq}
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": "dlq-check", "enable.auto.commit": False})
    try:
        for topic, partition, offset in landed:  # each reported position holds one of the parked values
            consumer.assign([TopicPartition(topic, partition, offset)])
            [msg] = consumer.consume(1, timeout=10)
            assert msg.error() is None and msg.value().startswith(b"envelope ")
    finally:
        consumer.close()
    text = describe_landed(landed)
    assert text.startswith(f"{dlq} partition ") and "offset" in text


def test_describe_landed_groups_offsets_per_partition():
    landed = [("m.dlq", 2, 7), ("m.dlq", 0, 12), ("m.dlq", 0, 14), ("m.dlq", 0, 13)]
    assert describe_landed(landed) == "m.dlq partition 0 offsets 12-14, m.dlq partition 2 offset 7"
    assert park_all({}, [], timeout=1) == []
