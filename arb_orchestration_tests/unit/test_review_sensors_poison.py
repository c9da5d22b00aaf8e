"""Review: messages that made an event sensor's tick raise, for ever (a FAILURE tick keeps its cursor).

Each one is valid enough to reach a later step that raised something other than
`EventRejected`:
- a value nested too deeply for Python's JSON decoder: the "does it say it is
  critical?" check after the rejection re-decoded it and let `RecursionError` out;
- a signed event (any 64 hex digits will do) with an extra field the verifier
  cannot re-serialise: a number that overflows to infinity (`1e400`) or a lone
  surrogate escape (`"\\ud800"`); the canonical payload raised `ValueError` /
  `UnicodeEncodeError`, which the admission did not catch.
Now each is parked on the DLQ with a reason, the cursor moves past it, and a
critical one still alerts. Domain functions are checked directly, and the market
sensor end to end on a fake consumer and a fake DLQ producer.
"""

import json
import time
import uuid

import pytest
from dagster import build_sensor_context, job, op

from arb_orchestration.defs.events import EventSensorSettings, EventTopics, TriggerEventConfig, build_event_sensors
from arb_orchestration.defs.events import kafka_source
from arb_orchestration.defs.events.sensors import _claims_critical, wait_for_alerts
from arb_orchestration.domain.events import (
    MARKET_EVENTS,
    EventRejected,
    RecentEventIds,
    check_critical_event,
    encode_event,
    parse_dlq_envelope,
    parse_event,
    sign_event,
    verify_signature,
)
from arb_orchestration.domain.triggers import SeenCriticalIds, admit_event, utc_now
from arb_orchestration.resources.kafka import KafkaResource
from arb_orchestration_tests.unit import test_event_sensor_reading as reading
from arb_orchestration_tests.unit.test_event_sensor_reading import FakeConsumer, FakeMessage

KEY = "review-signing-key"


def _shock(severity: str = "critical", **extra) -> dict:
    return {"schema_version": 1, "event_id": str(uuid.uuid4()), "ts": time.time(), "venue": "binance",
            "symbol": "BTC/USDT:USDT", "price_change_pct": -14.2, "window_seconds": 60, "severity": severity, **extra}


def _with_raw_field(event: dict, raw_json_value: str) -> bytes:
    """The event's wire bytes with one more field whose JSON text is given as is."""
    text = encode_event(event).decode()
    return (text[:-1] + f',"x":{raw_json_value}}}').encode()


OVERFLOW = "1e400"  # valid JSON grammar; Python reads it as float('inf')
SURROGATE = '"\\ud800"'  # a lone surrogate escape; Python reads it, UTF-8 cannot encode it


# --------------------------------------------------------------------------- domain


def test_a_deeply_nested_value_is_not_critical_and_does_not_raise():
    assert _claims_critical(b"[" * 60_000) is False
    assert _claims_critical(b'{"severity":"critical","x":' + b"[" * 60_000) is False


@pytest.mark.parametrize("raw_value", [OVERFLOW, SURROGATE], ids=["overflow", "surrogate"])
@pytest.mark.parametrize("severity", ["critical", "warning"])
def test_a_signed_event_the_verifier_cannot_canonicalise_is_rejected(raw_value, severity):
    data = _with_raw_field(sign_event(_shock(severity), KEY), raw_value)
    event = parse_event(MARKET_EVENTS, data)  # the extra field is ignored by the schema
    with pytest.raises(EventRejected, match="signature"):
        verify_signature(event, KEY)
    with pytest.raises(EventRejected):
        check_critical_event(event, KEY, RecentEventIds())
    admission = admit_event(event, KEY, SeenCriticalIds(), now=utc_now())
    assert not admission.admitted and not admission.stale and "signature" in admission.reason


def test_an_empty_key_is_still_a_deployment_error_not_a_rejection():
    with pytest.raises(ValueError, match="empty") as caught:
        verify_signature(sign_event(_shock(), KEY), "")
    assert not isinstance(caught.value, EventRejected)


# --------------------------------------------------------------------------- the market sensor on fakes


class FakeProducer:
    """A DLQ producer that acknowledges everything (what `park_all` uses)."""

    produced: list[tuple[str, bytes, bytes | None, list | None]] = []

    def __init__(self, config):
        pass

    def produce(self, topic, value=None, key=None, headers=None, on_delivery=None, partition=None):
        FakeProducer.produced.append((topic, value, key, headers))
        offset = len(FakeProducer.produced) - 1
        msg = type("Delivered", (), {"topic": lambda s: topic, "partition": lambda s: 0, "offset": lambda s: offset})()
        on_delivery(None, msg)

    def poll(self, timeout=0):
        return 0

    def flush(self, timeout=None):
        return 0

    def purge(self):
        pass


class HeaderedMessage(FakeMessage):
    """The reading tests' fake message with the record headers a real one has (here: one trace header)."""

    def headers(self):
        return [("traceparent", b"00-%d" % self._offset)]


def use_headered_messages(monkeypatch) -> None:
    monkeypatch.setattr(reading, "FakeMessage", HeaderedMessage)  # what FakeConsumer.consume builds


class Mailbox:
    def __init__(self):
        self.sent: list[tuple[str, str]] = []

    def send(self, subject, body):
        self.sent.append((subject, body))


@op
def _take(config: TriggerEventConfig) -> str:
    return config.event_id


@job
def _review_job():
    _take()


SENSOR_INDEX = {"market": 0, "capital": 1, "funding": 2}  # build_event_sensors' order


def sensor_on_fakes(monkeypatch, topic: str, prefix: str, *, stop_loss_job=_review_job):
    """(sensor, topics, logs): the `topic` sensor ("market", "capital", "funding") reading the fake
    consumer's `logs` (partition -> values) and parking on FakeProducer (reset), no long poll."""
    topics = EventTopics.with_prefix(f"{prefix}{uuid.uuid4().hex[:6]}-")
    logs: dict[int, list[bytes]] = {0: []}
    monkeypatch.setattr(kafka_source, "Consumer", lambda config: FakeConsumer(getattr(topics, topic), logs))
    monkeypatch.setattr(kafka_source, "Producer", FakeProducer)
    use_headered_messages(monkeypatch)
    FakeProducer.produced = []
    kafka_source.drop_warm_clients()
    sensors = build_event_sensors(rebalance_job=_review_job, stop_loss_job=stop_loss_job, hedge_job=_review_job,
                                  settings=EventSensorSettings(long_poll_seconds=0), topics=topics,
                                  name_prefix=f"{prefix}_")
    return sensors[SENSOR_INDEX[topic]], topics, logs


@pytest.fixture
def market_on_fakes(monkeypatch):
    sensor, topics, logs = sensor_on_fakes(monkeypatch, "market", "rv")
    mailbox = Mailbox()

    def evaluate(cursor=None):
        return sensor(build_sensor_context(cursor=cursor, resources={
            "kafka": KafkaResource(bootstrap_servers="fake:9", signing_key=KEY), "smtp": mailbox}))

    yield evaluate, logs, topics, mailbox
    kafka_source.drop_warm_clients()


@pytest.mark.parametrize(
    "poison",
    [
        pytest.param(lambda: b"[" * 60_000, id="nested-too-deep"),
        pytest.param(lambda: _with_raw_field(sign_event(_shock(), KEY), OVERFLOW), id="signed-critical-overflow"),
        pytest.param(lambda: _with_raw_field(sign_event(_shock(), KEY), SURROGATE), id="signed-critical-surrogate"),
        pytest.param(lambda: _with_raw_field(sign_event(_shock("warning"), KEY), OVERFLOW), id="signed-warning"),
    ],
)
def test_a_poison_message_is_parked_and_the_cursor_moves_past_it(market_on_fakes, poison):
    evaluate, logs, topics, mailbox = market_on_fakes
    good = _shock("warning")
    logs[0] += [poison(), encode_event(good)]
    result = evaluate()
    assert json.loads(result.cursor)["offsets"] == {f"{topics.market}/0": 2}
    assert [r.run_key for r in result.run_requests] == [good["event_id"]]
    [(dlq, envelope, _, _)] = FakeProducer.produced
    assert dlq == f"{topics.market}.dlq"
    parked = parse_dlq_envelope(envelope)
    assert parked.source.offset == 0 and parked.reason


def test_a_refused_critical_poison_event_still_alerts(market_on_fakes):
    evaluate, logs, topics, mailbox = market_on_fakes
    logs[0].append(_with_raw_field(sign_event(_shock(), KEY), OVERFLOW))
    result = evaluate()
    assert not result.run_requests
    assert wait_for_alerts(10)
    assert len(mailbox.sent) == 1 and "critical" in mailbox.sent[0][0]
    assert "signature" in parse_dlq_envelope(FakeProducer.produced[0][1]).reason
