"""Kafka client review (docs/kafka-client-review.md): the configuration promises, checked without a broker."""

from __future__ import annotations

from arb_orchestration.resources.kafka import KafkaResource, topic_config


def test_producer_is_acks_all_idempotent_and_bounded():
    config = KafkaResource(bootstrap_servers="127.0.0.1:9092").producer_config()
    assert config["acks"] == "all" and config["enable.idempotence"] is True
    assert config["message.timeout.ms"] <= 30_000


def test_consumer_never_commits_to_the_group_and_reads_only_committed_records():
    config = KafkaResource(bootstrap_servers="127.0.0.1:9092").consumer_config()
    assert config["enable.auto.commit"] is False and config["enable.auto.offset.store"] is False
    assert config["isolation.level"] == "read_committed"


def test_replicated_topics_refuse_an_acks_all_write_that_only_one_replica_has():
    assert topic_config(3) == {"min.insync.replicas": "2"}
    assert topic_config(5) == {"min.insync.replicas": "2"}
    # One or two replicas: min.insync.replicas=2 would stop every write when one broker is down; left to the broker.
    assert topic_config(1) == {} and topic_config(2) == {}
