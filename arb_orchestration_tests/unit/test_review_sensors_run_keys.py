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

Also: a stop-loss whose event id a run of another job of the same sensor already
holds as its run key is requested under `<id>:<job>` (else Dagster skips it).
"""

import json
import time
import uuid

import pytest
from dagster import DagsterInstance, RunsFilter, build_sensor_context, job, op

from arb_orchestration.defs.events import TriggerEventConfig
from arb_orchestration.defs.events import kafka_source
from arb_orchestration.domain.events import encode_event, parse_dlq_envelope, sign_event
from arb_orchestration.domain.triggers import run_key_problem
from arb_orchestration.resources.kafka import KafkaResource
from arb_orchestration_tests.unit.test_review_sensors_poison import (
    KEY,
    FakeProducer,
    _review_job,
    _shock,
    market_on_fakes,  # noqa: F401 (fixture)
    sensor_on_fakes,
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
    sensor, topics, logs = sensor_on_fakes(monkeypatch, "funding", "rk")

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


# --------------------------------------------------------------------------- a stop-loss swallowed by run-key dedupe

# Dagster skips a sensor's run request when a run of that sensor (any job) already has its run
# key. A warning that started a rebalance under id X swallowed a later stop-loss for a critical
# event reusing X: the tick logged "-> stop-loss", the daemon logged "Skipping 1 run", nothing ran.


@op
def _stop(config: TriggerEventConfig) -> str:
    return config.event_id


@job
def _review_stop_loss_job():
    _stop()


@pytest.fixture
def market_with_instance(monkeypatch):
    sensor, topics, logs = sensor_on_fakes(monkeypatch, "market", "rs", stop_loss_job=_review_stop_loss_job)
    instance = DagsterInstance.ephemeral()

    def evaluate(cursor=None):
        return sensor(build_sensor_context(instance=instance, cursor=cursor, resources={
            "kafka": KafkaResource(bootstrap_servers="fake:9", signing_key=KEY), "smtp": object()}))

    def existing(run_key):
        return instance.get_runs(filters=RunsFilter(tags={"dagster/run_key": run_key,
                                                          "dagster/sensor_name": sensor.name}))

    def started(request):  # what the daemon does with a request it does not skip
        instance.create_run_for_job(_review_stop_loss_job if request.job_name == _review_stop_loss_job.name
                                    else _review_job, run_config=request.run_config,
                                    tags={**request.tags, "dagster/run_key": request.run_key,
                                          "dagster/sensor_name": sensor.name})

    yield evaluate, logs, existing, started
    kafka_source.drop_warm_clients()
    instance.dispose()


def test_a_stop_loss_is_not_swallowed_by_a_rebalance_that_used_the_same_event_id(market_with_instance):
    evaluate, logs, existing, started = market_with_instance
    incident = f"incident-{uuid.uuid4().hex[:8]}"
    logs[0].append(encode_event(_shock("warning", event_id=incident)))
    first = evaluate()
    [rebalance] = first.run_requests
    assert rebalance.run_key == incident
    started(rebalance)

    logs[0].append(encode_event(sign_event(_shock("critical", event_id=incident), KEY)))
    second = evaluate(first.cursor)
    [stop] = second.run_requests
    assert stop.job_name == _review_stop_loss_job.name
    assert not existing(stop.run_key), "Dagster would skip this stop-loss: its run key is taken"
    # Read again (the cursor not saved): the same key, so still one stop-loss.
    again = evaluate(first.cursor)
    assert [r.run_key for r in again.run_requests] == [stop.run_key]


def test_a_stop_loss_keeps_the_event_id_as_run_key_when_it_is_free(market_with_instance):
    evaluate, logs, existing, started = market_with_instance
    critical = sign_event(_shock("critical"), KEY)
    logs[0].append(encode_event(critical))
    [stop] = evaluate().run_requests
    assert stop.run_key == critical["event_id"]
    started(stop)
    [redelivered] = evaluate().run_requests  # a stop-loss run holds it: same key, Dagster skips it
    assert redelivered.run_key == critical["event_id"]
