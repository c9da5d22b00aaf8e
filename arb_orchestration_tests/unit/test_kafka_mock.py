"""The demo broker (librdkafka mock cluster): reachable by another client, topics 'created', stops for real.

Not a real Kafka: the integration tests use scripts/kafka-broker.sh. This only
checks what `arb-orchestration dev` relies on.
"""

from __future__ import annotations

import socket

from arb_orchestration.domain.events import encode_event
from arb_orchestration.resources.kafka import KafkaResource
from arb_orchestration.sim.event_generator import EventGenerator
from arb_orchestration.sim.kafka_mock import MockKafkaCluster


def test_mock_cluster_serves_topics_produce_and_consume_then_stops():
    from confluent_kafka import TopicPartition

    cluster = MockKafkaCluster()
    bootstrap = cluster.start()
    try:
        host, port = bootstrap.split(":")
        assert host == "127.0.0.1" and int(port) > 0
        assert cluster.start() == bootstrap  # idempotent
        kafka = KafkaResource(bootstrap_servers=bootstrap)

        # No controller on the mock: create_topics falls back to auto-creation.
        assert kafka.create_topics(["market-events", "market-events.dlq"]) == {
            "market-events": "created", "market-events.dlq": "created"}
        assert kafka.create_topics(["market-events"]) == {"market-events": "exists"}

        delivered = kafka.publish("market-events", encode_event({"hello": 1}), key=b"k")
        consumer = kafka.consumer()
        consumer.assign([TopicPartition("market-events", delivered.partition, delivered.offset)])
        msg = None
        for _ in range(50):
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                break
        consumer.close()
        assert msg is not None and msg.value() == b'{"hello":1}'
    finally:
        cluster.stop()
    assert not cluster.running
    with socket.socket() as sock:
        sock.settimeout(1)
        assert sock.connect_ex((host, int(port))) != 0  # the port is closed


def test_generator_publishes_to_the_mock_until_stopped():
    with MockKafkaCluster() as cluster:
        generator = EventGenerator(kafka=KafkaResource(bootstrap_servers=cluster.bootstrap), events_per_second=200,
                                   seed=1, topic_prefix="demo-", signing_key="k")
        sent = generator.run(max_events=40)
        assert sum(sent.values()) == 40 and generator.failed == 0
        assert set(sent) <= {"demo-market-events", "demo-capital-events", "demo-funding-rate-events"}
