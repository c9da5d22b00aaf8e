"""The funding sensor's baseline follows what a hedge really did, not what it asked for.

`funding_deviation_sensor` used to move a market's baseline to the rate it
requested a hedge at. When that run then failed, the deviation was still
there, but the sensor measured the next rates against the requested rate and
asked for nothing until the rate moved another 20 bps. Now the requested rate
is *pending* (with the previous, confirmed baseline kept beside it): the next
tick looks the request's runs up by their `arb/event_id` tag (one query, only
when something is pending). A failed or canceled run restores the confirmed
baseline, so the same deviation is requested again; a successful one makes
the requested rate the baseline; a run still going keeps it pending. Real
instance (`DagsterInstance.ephemeral`), runs created in their end state.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from dagster import DagsterInstance, DagsterRunStatus, build_sensor_context

from arb_orchestration.defs.events import kafka_source
from arb_orchestration.domain.events import encode_event
from arb_orchestration.domain.triggers import HedgeBaselines, SensorCursor
from arb_orchestration.resources.kafka import KafkaResource
from arb_orchestration_tests.unit.test_review_sensors_poison import _review_job, sensor_on_fakes

MARKET = "okx|ETH/USDT:USDT"


@pytest.fixture
def funding(monkeypatch):
    sensor, topics, logs = sensor_on_fakes(monkeypatch, "funding", "pb")
    instance = DagsterInstance.ephemeral()

    def publish(rate: float) -> None:
        logs[0].append(encode_event({"schema_version": 1, "event_id": str(uuid.uuid4()), "ts": time.time(),
                                     "venue": "okx", "symbol": "ETH/USDT:USDT", "rate": rate, "interval_hours": 8}))

    def tick(cursor):
        return sensor(build_sensor_context(cursor=cursor, instance=instance,
                                           resources={"kafka": KafkaResource(bootstrap_servers="fake:9")}))

    def run_of(request, status):
        instance.create_run_for_job(_review_job, run_config=request.run_config, tags=dict(request.tags), status=status)

    # A confirmed baseline of 10 bp per 8 h (an old-format cursor point: no pending part).
    confirmed = json.dumps({"v": 1, "offsets": {}, "hedged": {
        MARKET: {"rate": 0.0010, "interval_hours": 8, "at": time.time() - 60, "event_id": "old"}}})
    yield publish, tick, run_of, confirmed
    instance.dispose()
    kafka_source.drop_warm_clients()


def _request_at(publish, tick, cursor, rate):
    publish(rate)
    result = tick(cursor)
    (request,) = result.run_requests
    return request, result.cursor


@pytest.mark.parametrize("status", [DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED])
def test_a_failed_hedge_run_restores_the_confirmed_baseline(funding, status):
    publish, tick, run_of, confirmed = funding
    request, cursor = _request_at(publish, tick, confirmed, 0.0040)  # +30 bps: hedge
    run_of(request, status)
    publish(0.0040)  # the deviation is still there
    again = tick(cursor)
    (retry,) = again.run_requests  # measured from the confirmed 10 bp, not the requested 40 bp
    assert "+30.00 bps" in retry.run_config["ops"]["_take"]["config"]["reason"]
    assert retry.run_key != request.run_key


def test_a_successful_hedge_run_makes_the_requested_rate_the_baseline(funding):
    publish, tick, run_of, confirmed = funding
    request, cursor = _request_at(publish, tick, confirmed, 0.0040)
    run_of(request, DagsterRunStatus.SUCCESS)
    publish(0.0041)
    after = tick(cursor)
    assert after.run_requests == []
    point = json.loads(after.cursor)["hedged"][MARKET]
    assert point["rate"] == 0.0040 and "confirmed" not in point  # no longer pending: the cursor stays small


def test_a_hedge_run_still_going_keeps_the_requested_rate(funding):
    publish, tick, run_of, confirmed = funding
    request, cursor = _request_at(publish, tick, confirmed, 0.0040)
    run_of(request, DagsterRunStatus.STARTED)
    publish(0.0041)
    after = tick(cursor)
    assert after.run_requests == []  # no second hedge while the first is running
    point = json.loads(after.cursor)["hedged"][MARKET]
    assert point["rate"] == 0.0040 and point["confirmed"]["rate"] == 0.0010


def test_a_failed_first_hedge_leaves_no_baseline(funding):
    publish, tick, run_of, _ = funding
    request, cursor = _request_at(publish, tick, None, 0.0040)  # never hedged: the sensor asks for one
    run_of(request, DagsterRunStatus.FAILURE)
    publish(0.0041)
    (retry,) = tick(cursor).run_requests
    assert retry.run_key != request.run_key


def test_old_cursor_points_parse_as_confirmed():
    cursor = SensorCursor.parse(json.dumps({"v": 1, "offsets": {}, "hedged": {
        MARKET: {"rate": 0.001, "interval_hours": 8, "at": 1.0, "event_id": "e"}}}))
    assert cursor.baselines.pending_event_ids() == {}
    assert cursor.baselines.get("okx", "ETH/USDT:USDT").rate == 0.001


def test_a_request_that_never_became_a_run_falls_back_after_the_grace():
    baselines = HedgeBaselines({MARKET: {"rate": 0.004, "interval_hours": 8, "at": 100.0, "event_id": "e",
                                         "requested_at": 1000.0, "confirmed": {"rate": 0.001, "interval_hours": 8, "at": 50.0}}})
    assert baselines.settle_pending({}, now=1010.0) == {}  # the run may not exist yet
    assert baselines.points[MARKET]["rate"] == 0.004
    assert baselines.settle_pending({}, now=1000.0 + 10_000) == {MARKET: "no run"}
    assert baselines.points[MARKET] == {"rate": 0.001, "interval_hours": 8, "at": 50.0}


def test_a_recorded_hedge_between_the_two_becomes_the_fallback():
    from arb_orchestration.defs.hedging.baselines import overlay_hedge_baselines, baseline_key

    baselines = HedgeBaselines({MARKET: {"rate": 0.004, "interval_hours": 8, "at": 100.0, "event_id": "e",
                                         "requested_at": 1000.0, "confirmed": {"rate": 0.001, "interval_hours": 8, "at": 50.0}}})
    recorded = json.dumps({"rate": 0.002, "interval_hours": 8, "at": 70.0, "run_id": "sched"})
    overlay_hedge_baselines(None, baselines, [("okx", "ETH/USDT:USDT")], values={baseline_key("okx", "ETH/USDT:USDT"): recorded})
    assert baselines.points[MARKET]["rate"] == 0.004  # the pending request is newer: still compared with
    assert baselines.settle_pending({"e": "failed"}, now=1001.0) == {MARKET: "failed"}
    assert baselines.points[MARKET]["rate"] == 0.002 and baselines.points[MARKET]["run_id"] == "sched"
