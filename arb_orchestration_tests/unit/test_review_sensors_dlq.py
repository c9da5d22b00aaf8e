"""Review: what a DLQ envelope keeps of the parked message.

- The original record's headers (tracing, producer metadata): they were not kept,
  so a replay could not put them back. Now the envelope carries them and
  `DlqEnvelope.original_headers()` reads them back; envelopes written before have
  none (still readable).
- A value between ~390 kB and ~670 kB: the envelope holds it twice (base64 for
  replay, text for people), which passed the 900 kB DLQ message limit, and both
  copies were dropped, so the message was lost once the source topic's retention
  deleted it. Now the readable text is dropped first and `value_b64` kept.
"""

import json

from arb_orchestration.defs.events.kafka_source import MAX_DLQ_MESSAGE_BYTES
from arb_orchestration.domain.events import encode_dlq_envelope, parse_dlq_envelope
from arb_orchestration_tests.unit.test_review_sensors_poison import (
    FakeProducer,
    _shock,
    market_on_fakes,  # noqa: F401 (fixture)
)
from arb_orchestration.domain.events import encode_event


def test_headers_round_trip_through_the_envelope():
    headers = [("traceparent", b"00-abc-01"), ("empty", None), ("bin", b"\x00\xff")]
    envelope = parse_dlq_envelope(encode_dlq_envelope(value=b"{}", reason="r", topic="t", partition=2, offset=7,
                                                      timestamp_ms=1, key=b"k", headers=headers))
    assert envelope.original_headers() == headers
    assert envelope.original_value() == b"{}" and envelope.original_key() == b"k"


def test_an_envelope_written_without_headers_still_reads():
    old = json.loads(encode_dlq_envelope(value=b"x", reason="r", topic="t", partition=0, offset=0, timestamp_ms=None))
    old["original"].pop("headers", None)
    assert parse_dlq_envelope(json.dumps(old)).original_headers() == []


def test_the_sensor_parks_the_headers_of_the_message(market_on_fakes):
    evaluate, logs, topics, mailbox = market_on_fakes
    logs[0] += [encode_event(_shock("warning")), b"not json"]
    evaluate()
    [(_, envelope, _, _)] = FakeProducer.produced
    assert parse_dlq_envelope(envelope).original_headers() == [("traceparent", b"00-1")]


def test_a_large_value_keeps_its_replayable_copy(market_on_fakes):
    evaluate, logs, topics, mailbox = market_on_fakes
    value = b"x" * 500_000  # not JSON; base64 (667 kB) fits the DLQ limit, base64 + text (1.17 MB) does not
    logs[0].append(value)
    result = evaluate()
    assert json.loads(result.cursor)["offsets"] == {f"{topics.market}/0": 1}
    [(_, envelope, _, _)] = FakeProducer.produced
    assert len(envelope) <= MAX_DLQ_MESSAGE_BYTES
    parked = parse_dlq_envelope(envelope)
    assert parked.original_value() == value
    assert parked.original.value_text is None and parked.original.size_bytes == 500_000


def test_a_value_too_large_even_as_base64_is_left_out_and_the_reason_says_where_it_is(market_on_fakes):
    evaluate, logs, topics, mailbox = market_on_fakes
    logs[0].append(b"y" * 700_000)
    evaluate()
    [(_, envelope, _, _)] = FakeProducer.produced
    parked = parse_dlq_envelope(envelope)
    assert parked.original_value() is None
    assert f"it stays at {topics.market}/0/0" in parked.reason
