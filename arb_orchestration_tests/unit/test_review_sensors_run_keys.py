"""Review: an event id that cannot be a run key is parked instead of becoming one.

The event id is the run key and the `arb/event_id` tag of the run a sensor asks
for. The schema takes any 1-128 characters, NUL included, and PostgreSQL (the
deployed run storage) refuses NUL in text: the sensor daemon reserves the tick's
cursor with its run requests, then fails looking the key up (measured on the
embedded PostgreSQL: "A string literal cannot contain NUL (0x00) characters"),
and resumes that same tick on every later loop instead of evaluating the sensor
again. One unsigned warning with such an id stopped the market sensor, the
emergency path included, for good. Now an event whose id holds a control
character is parked with the reason (market/capital before admission; funding
when it is the rate kept for its market) and the cursor moves on.
"""

import json
import time
import uuid

import pytest
from dagster import build_sensor_context

from arb_orchestration.defs.events import EventSensorSettings, EventTopics, build_event_sensors
from arb_orchestration.defs.events import kafka_source
from arb_orchestration.domain.events import encode_event, parse_dlq_envelope, sign_event
from arb_orchestration.domain.triggers import run_key_problem
from arb_orchestration.resources.kafka import KafkaResource
from arb_orchestration_tests.unit.test_event_sensor_reading import FakeConsumer
from arb_orchestration_tests.unit.test_review_sensors_poison import (
    KEY,
    FakeProducer,
    _review_job,
    _shock,
    market_on_fakes,  # noqa: F401 (fixture)
    use_headered_messages,
)


def test_run_key_problem_names_the_character():
    assert run_key_problem("6c0f3e9a-1b2c-4d5e-8f90-a1b2c3d4e5f6") is None
    assert run_key_problem("okx:USDT:2026-01-01T00:00:00Z ünïcode") is None
    assert "U+0000 at position 1" in run_key_problem("a\x00b")
    assert "U+000A" in run_key_problem("line\nbreak")
    assert "U+007F" in run_key_problem("del\x7f")


@pytest.mark.parametrize("severity", ["warning", "critical"])
def test_a_market_event_whose_id_holds_nul_is_parked_not_requested(market_on_fakes, severity):
    evaluate, logs, topics, mailbox = market_on_fakes
    bad = _shock(severity, event_id="shock\x00-1")
    if severity == "critical":
        bad = sign_event(bad, KEY)
    good = _shock("warning")
    logs[0] += [encode_event(bad), encode_event(good)]
    result = evaluate()
    assert [r.run_key for r in result.run_requests] == [good["event_id"]]
    assert all(run_key_problem(r.run_key) is None for r in result.run_requests)
    assert json.loads(result.cursor)["offsets"] == {f"{topics.market}/0": 2}
    [(_, envelope, _, _)] = FakeProducer.produced
    assert "control character U+0000" in parse_dlq_envelope(envelope).reason


@pytest.fixture
def funding_on_fakes(monkeypatch):
    topics = EventTopics.with_prefix(f"rk{uuid.uuid4().hex[:6]}-")
    logs: dict[int, list[bytes]] = {0: []}
    monkeypatch.setattr(kafka_source, "Consumer", lambda config: FakeConsumer(topics.funding, logs))
    monkeypatch.setattr(kafka_source, "Producer", FakeProducer)
    use_headered_messages(monkeypatch)
    FakeProducer.produced = []
    kafka_source.drop_warm_clients()
    sensor = build_event_sensors(rebalance_job=_review_job, stop_loss_job=_review_job, hedge_job=_review_job,
                                 settings=EventSensorSettings(long_poll_seconds=0), topics=topics,
                                 name_prefix="rk_")[2]

    def evaluate(cursor=None):
        return sensor(build_sensor_context(cursor=cursor, resources={"kafka": KafkaResource(bootstrap_servers="fake:9")}))

    yield evaluate, logs, topics
    kafka_source.drop_warm_clients()


def _rate(venue, event_id=None, rate=0.001):
    return {"schema_version": 1, "event_id": event_id or str(uuid.uuid4()), "ts": time.time(), "venue": venue,
            "symbol": "ETH/USDT:USDT", "rate": rate, "interval_hours": 8}


def test_a_kept_funding_rate_whose_id_holds_nul_is_parked_not_hedged(funding_on_fakes):
    evaluate, logs, topics = funding_on_fakes
    good, bad = _rate("okx"), _rate("binance", event_id="rate\x00-1")
    logs[0] += [encode_event(good), encode_event(bad)]
    result = evaluate()
    assert [r.run_key for r in result.run_requests] == [good["event_id"]]
    assert json.loads(result.cursor)["offsets"] == {f"{topics.funding}/0": 2}
    assert "binance|ETH/USDT:USDT" not in json.loads(result.cursor).get("hedged", {})
    [(_, envelope, _, _)] = FakeProducer.produced
    parked = parse_dlq_envelope(envelope)
    assert parked.source.offset == 1 and "U+0000" in parked.reason
