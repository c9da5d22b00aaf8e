"""The Kafka commands end to end on the real broker: topics create, publish, replay-dlq, generate-events.

Each test works under its own ARB_EVENT_TOPIC_PREFIX, so tests sharing the
session's broker never see each other's topics.
"""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from arb_orchestration.commands import generate_events, publish, replay_dlq, topics
from arb_orchestration.domain.events import (
    RecentEventIds,
    check_critical_event,
    encode_dlq_envelope,
    encode_event,
    parse_dlq_envelope,
    parse_event,
    verify_signature,
)

pytestmark = pytest.mark.integration

KEY = "integration-signing-key"


@pytest.fixture
def kafka_env(kafka_broker, monkeypatch):
    prefix = f"it{uuid.uuid4().hex[:8]}-"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap)
    monkeypatch.setenv("ARB_EVENT_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("EVENT_SIGNING_KEY", KEY)
    monkeypatch.delenv("KAFKA_SECURITY_PROTOCOL", raising=False)
    return kafka_broker.resource(), prefix


def read_topic(kafka, topic: str, timeout: float = 15.0) -> list:
    """Every message currently on `topic`, in partition/offset order."""
    return sorted(
        replay_dlq.read_messages(kafka, topic, {p: None for p in kafka.partitions_for(topic)}, timeout=timeout),
        key=lambda m: (m.partition(), m.offset()),
    )


def high_watermarks(kafka, topic: str) -> int:
    return sum(kafka.watermarks(topic, p)[1] for p in kafka.partitions_for(topic))


def test_topics_create_is_idempotent(kafka_env, capsys):
    kafka, prefix = kafka_env
    assert topics.main(["create", "--partitions", "2"]) == 0
    first = capsys.readouterr().out
    assert "6 created, 0 already existed" in first
    assert topics.main(["create", "--partitions", "2"]) == 0
    second = capsys.readouterr().out
    assert "0 created, 6 already existed" in second
    for base in ("market-events", "capital-events", "funding-rate-events"):
        assert f"exists   {prefix}{base}.dlq" in second
        assert kafka.partitions_for(prefix + base) == [0, 1]
        assert kafka.partitions_for(f"{prefix}{base}.dlq") == [0, 1]


def test_publish_signed_critical_event_round_trips_and_verifies(kafka_env, capsys):
    kafka, prefix = kafka_env
    topics.create_all_topics(kafka, partitions=1, prefix=prefix)
    event = {"venue": "binance", "symbol": "BTC/USDT:USDT", "price_change_pct": -14.2, "window_seconds": 60,
             "severity": "critical"}

    assert publish.main(["market-events", json.dumps(event)]) == 0

    out = capsys.readouterr().out
    match = re.search(r"published (\S+) \(signed\) to (\S+) partition (\d+) offset (\d+)", out)
    assert match, out
    event_id, topic, partition, offset = match.group(1), match.group(2), int(match.group(3)), int(match.group(4))
    assert topic == f"{prefix}market-events"
    [msg] = read_topic(kafka, topic)
    assert (msg.partition(), msg.offset()) == (partition, offset)
    received = parse_event("market-events", msg.value())
    assert received.event_id == event_id and received.is_critical and received.price_change_pct == -14.2
    verify_signature(received, KEY)
    check_critical_event(received, KEY, RecentEventIds())  # signed, fresh, new: admitted
    with pytest.raises(Exception, match="bad signature"):
        verify_signature(received, "some-other-key")


def test_publish_rejects_an_invalid_event_naming_the_field_and_sends_nothing(kafka_env, capsys):
    kafka, prefix = kafka_env
    topics.create_all_topics(kafka, partitions=1, prefix=prefix)
    bad = {"venue": "okx", "symbol": "ETH/USDT:USDT", "price_change_pct": 3.1, "window_seconds": "sixty",
           "severity": "warning"}

    assert publish.main(["market-events", json.dumps(bad)]) == 2

    assert "field 'window_seconds'" in capsys.readouterr().err
    assert publish.main(["trades", "{}"]) == 2
    assert "unknown topic" in capsys.readouterr().err
    assert high_watermarks(kafka, f"{prefix}market-events") == 0


def test_replay_dlq_moves_a_parked_message_back_to_its_topic(kafka_env, capsys):
    kafka, prefix = kafka_env
    topics.create_all_topics(kafka, partitions=1, prefix=prefix)
    source, dlq = f"{prefix}capital-events", f"{prefix}capital-events.dlq"
    original = encode_event({"schema_version": 1, "event_id": "cap-7", "ts": time.time(), "venue": "kraken",
                             "asset": "USDT", "balance": 12_000.0, "threshold": 50_000.0, "level": "critical"})
    # A sensor read it at source offset 0, refused it (unsigned critical) and parked it.
    first = kafka.publish(source, original, key=b"kraken:USDT")
    kafka.publish(dlq, encode_dlq_envelope(value=original, key=b"kraken:USDT", reason="missing signature",
                                           topic=source, partition=first.partition, offset=first.offset,
                                           timestamp_ms=int(time.time() * 1000)))
    kafka.publish(dlq, b"not an envelope")
    kafka.publish(dlq, encode_dlq_envelope(value=None, reason="oversized, not copied", topic=source, partition=0,
                                           offset=99, timestamp_ms=None))

    assert replay_dlq.main([dlq, "--all", "--dry-run"]) == 1  # the stray message is reported
    out = capsys.readouterr().out
    assert f"would  {dlq}:0:0 -> {source}" in out and "parked for: missing signature" in out
    assert f"skip   {dlq}:0:1: not a DLQ envelope" in out
    assert f"skip   {dlq}:0:2: the envelope holds no original value" in out
    assert "would replay 1 message(s), skipped 2" in out
    assert high_watermarks(kafka, source) == 1  # dry run sent nothing

    assert replay_dlq.main([dlq, "--offset", "0"]) == 0

    out = capsys.readouterr().out
    assert f"replay {dlq}:0:0 -> {source}:0:1" in out and "replayed 1 message(s), skipped 0" in out
    replayed = read_topic(kafka, source)[-1]
    assert replayed.offset() == 1
    assert replayed.value() == original and replayed.key() == b"kraken:USDT"
    assert dict(replayed.headers())["x-arb-replayed-from"] == f"{dlq}:0:0".encode()
    # The DLQ itself is left as it was (an audit trail).
    assert parse_dlq_envelope(read_topic(kafka, dlq)[0].value()).reason == "missing signature"


def test_replay_dlq_refuses_offsets_that_are_not_there(kafka_env, capsys):
    kafka, prefix = kafka_env
    topics.create_all_topics(kafka, partitions=1, prefix=prefix)
    assert replay_dlq.main([f"{prefix}market-events.dlq", "--offset", "5"]) == 2
    assert "is empty" in capsys.readouterr().err
    assert replay_dlq.main([f"{prefix}market-events", "--all"]) == 2  # not a .dlq topic
    assert "not a dead-letter topic" in capsys.readouterr().err


def test_generate_events_publishes_valid_signed_traffic(kafka_env, capsys):
    kafka, prefix = kafka_env
    topics.create_all_topics(kafka, partitions=1, prefix=prefix)

    assert generate_events.main(["--rate", "200", "--count", "40", "--seed", "5"]) == 0

    assert "40 delivered, 0 failed" in capsys.readouterr().out
    total = 0
    for base in ("market-events", "capital-events", "funding-rate-events"):
        for msg in read_topic(kafka, prefix + base):
            event = parse_event(base, msg.value())
            verify_signature(event, KEY)
            assert not event.is_critical
            total += 1
    assert total == 40
