"""Review, on the real broker: a parked message goes back where it came from, headers included.

`replay-dlq` produced the original value and key and let the producer's
partitioner pick the partition: a message a producer with another partitioner
(Java's murmur2, an explicit partition) had written to partition P came back on
whatever partition librdkafka's hash chose, out of order with its instrument's
other events; and its record headers were gone (the envelope did not keep them).
Here the market sensor parks a message written to a partition its key does not
hash to, with headers; replay puts it back on that partition with the same
headers plus `x-arb-replayed-from`.
"""

import uuid

import pytest
from confluent_kafka import Producer
from dagster import build_sensor_context

from arb_orchestration.commands import replay_dlq
from arb_orchestration.defs.events import EventSensorSettings, EventTopics, build_event_sensors
from arb_orchestration.defs.events.kafka_source import drop_warm_clients
from arb_orchestration.domain.events import dlq_topic
from arb_orchestration_tests.integration.test_kafka_commands import read_topic
from arb_orchestration_tests.unit.test_review_sensors_poison import _review_job

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, topic: str, value: bytes, key: bytes, partition: int | None = None, headers=None):
    delivered = []
    producer = Producer({"bootstrap.servers": bootstrap})
    where = {} if partition is None else {"partition": partition}
    producer.produce(topic, value=value, key=key, headers=headers,
                     on_delivery=lambda err, msg: delivered.append((err, msg.partition(), msg.offset())), **where)
    assert producer.flush(15) == 0
    [(err, got_partition, offset)] = delivered
    assert err is None
    return got_partition, offset


def test_replay_puts_a_parked_message_back_on_its_partition_with_its_headers(kafka_broker, monkeypatch, capsys):
    prefix = f"rr{uuid.uuid4().hex[:8]}-"
    topics = EventTopics.with_prefix(prefix)
    kafka_broker.create_topic(topics.market, 3)
    kafka_broker.create_topic(dlq_topic(topics.market), 1)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap)
    monkeypatch.setenv("ARB_EVENT_TOPIC_PREFIX", prefix)
    monkeypatch.delenv("KAFKA_SECURITY_PROTOCOL", raising=False)
    key = b"binance:BTC/USDT:USDT"
    # Where librdkafka's partitioner puts this key; the producer of the bad message used another partition.
    hashed, _ = _produce(kafka_broker.bootstrap, topics.market, b"not json either", key)
    elsewhere = (hashed + 1) % 3
    headers = [("traceparent", b"00-4bf92f3577b34da6-01"), ("producer", b"java-gateway")]
    bad = b'{"schema_version": 1, "truncated'
    _produce(kafka_broker.bootstrap, topics.market, bad, key, partition=elsewhere, headers=headers)

    sensor = build_event_sensors(rebalance_job=_review_job, stop_loss_job=_review_job, hedge_job=_review_job,
                                 settings=EventSensorSettings(long_poll_seconds=0, metadata_timeout_seconds=5),
                                 topics=topics, name_prefix=prefix.replace("-", "_"), alert_resource_key=None)[0]
    try:
        result = sensor(build_sensor_context(resources={"kafka": kafka_broker.resource()}))
    finally:
        drop_warm_clients()
    assert result.cursor and not result.run_requests

    kafka = kafka_broker.resource()
    parked = read_topic(kafka, dlq_topic(topics.market))
    assert len(parked) == 2  # the probe and the truncated message
    assert replay_dlq.main([dlq_topic(topics.market), "--all"]) == 0
    out = capsys.readouterr().out
    assert "replayed 2 message(s)" in out

    replayed = [m for m in read_topic(kafka, topics.market) if m.value() == bad and m.headers()
                and any(name == replay_dlq.REPLAY_HEADER for name, _ in m.headers())]
    assert len(replayed) == 1
    assert replayed[0].partition() == elsewhere
    assert replayed[0].key() == key
    assert replayed[0].headers()[:2] == headers
    assert replayed[0].headers()[2][0] == replay_dlq.REPLAY_HEADER
