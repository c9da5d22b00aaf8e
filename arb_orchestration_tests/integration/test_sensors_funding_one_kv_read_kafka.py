"""The funding sensor reads the kill switch and the hedge baselines in ONE key-value read per tick.

Both live in the Dagster instance's key-value table; two reads cost a second
database round trip every tick (SQLite: a new connection, ~3.5 ms here). The
combined read must keep both behaviours: a baseline recorded by a hedge run
replaces the sensor's older one, and a pause stops every hedge request.
"""

from __future__ import annotations

import json
import time

import pytest
from dagster import build_sensor_context

from arb_orchestration.defs.hedging.baselines import baseline_points, record_baselines
from arb_orchestration.saga.kill_switch import pause_trading
from arb_orchestration_tests.integration.test_sensors_kafka import funding, offsets
from arb_orchestration_tests.integration.test_sensors_paused_kafka import instance, setup, sink  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration

MARKET = "binance|ETH/USDT:USDT"


def counting_reads(instance, monkeypatch) -> list[set[str]]:
    """Every key set the instance's key-value table is asked for (the real storage still answers)."""
    storage = instance.run_storage
    calls: list[set[str]] = []
    real = storage.get_cursor_values

    def get_cursor_values(keys):
        calls.append(set(keys))
        return real(keys)

    monkeypatch.setattr(storage, "get_cursor_values", get_cursor_values)
    return calls


def test_one_read_gives_the_hedge_runs_baseline_and_the_kill_switch(setup, instance, monkeypatch):
    topic = setup.topics.funding
    now = time.time()
    # The sensor's own baseline is old (+0 bps at 1 bp); a hedge run recorded 29 bps an hour ago.
    cursor = json.dumps({"v": 1, "offsets": {}, "hedged": {
        MARKET: {"rate": 0.0001, "interval_hours": 8, "at": 0, "event_id": "old"}}})
    record_baselines(instance, baseline_points(
        [{"venue": "binance", "symbol": "ETH/USDT:USDT", "rate": 0.0030, "interval_hours": 8, "observed_at": now - 3600}],
        run_id="hedge-run", saga_id="hedge-saga"))
    setup.publish(topic, funding("binance", 0.0031, 8, ts=now - 1))  # 1 bp from the hedge run's rate
    calls = counting_reads(instance, monkeypatch)

    result = build_sensor_context(instance=instance, cursor=cursor, resources=setup.resources)
    result = setup.funding_sensor(result)

    assert len(calls) == 1, calls
    assert "arb/trading_pause" in calls[0] and len(calls[0]) == 2
    assert result.run_requests == []  # measured from the hedge run's 30 bps, not the sensor's 1 bp
    assert offsets(result) == {f"{topic}/0": 1}
    assert json.loads(result.cursor)["hedged"][MARKET]["run_id"] == "hedge-run"


def test_the_same_read_stops_hedges_while_paused(setup, instance, monkeypatch):
    topic = setup.topics.funding
    cursor = json.dumps({"v": 1, "offsets": {}, "hedged": {
        MARKET: {"rate": 0.0001, "interval_hours": 8, "at": 0, "event_id": "old"}}})
    pause_trading(instance, "stop-loss after a shock", by="test")
    setup.publish(topic, funding("binance", 0.0030, 8, ts=time.time() - 1))  # +29 bps
    calls = counting_reads(instance, monkeypatch)

    result = setup.funding_sensor(build_sensor_context(instance=instance, cursor=cursor, resources=setup.resources))

    assert len(calls) == 1, calls
    assert result.run_requests == []
    assert "1 not acted on because trading is paused" in result.skip_reason.skip_message
    assert json.loads(result.cursor)["hedged"] == json.loads(cursor)["hedged"]
