"""The funding sensor with its C chunk scanner gives what it gives without it, on a real broker.

Two sensors over the same topic from the same cursor: the shipped one, and one whose
scanner is switched off (every chunk takes the Python path). Same run requests, same
offsets, same hedge baselines; and the scanner did take the clean chunks (a scanner
that declines everything would pass the comparison and be dead weight).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from arb_orchestration.defs.events import build_event_sensors
from arb_orchestration_tests.integration.test_sensors_kafka import (
    SETTINGS,
    Setup,
    funding,
    hedge_job_for_tests,
    offsets,
    rebalance_job_for_tests,
    sink,  # noqa: F401 (fixture)
    stop_loss_job_for_tests,
)
from arb_orchestration.defs.events.kafka_source import drop_warm_clients

pytestmark = pytest.mark.integration

MARKETS = [("binance", "ETH/USDT:USDT", 8), ("okx", "ETH/USDT:USDT", 8), ("hyperliquid", "ETH/USDT:USDT", 1),
           ("binance", "BTC/USDT:USDT", 8), ("bybit", "SOL/USDT:USDT", 8)]


@pytest.fixture
def setup(kafka_broker, sink):  # noqa: F811
    yield Setup(kafka_broker, sink)
    drop_warm_clients()
    Setup.close_all()


def _evaluator(sensor):
    [found] = [cell.cell_contents for cell in sensor._raw_fn.__closure__ or () if hasattr(cell.cell_contents, "scan")]
    return found


def _python_path_sensor(setup: Setup):
    """The same funding sensor over the same topics, its C scanner off."""
    sensors = build_event_sensors(
        rebalance_job=rebalance_job_for_tests, stop_loss_job=stop_loss_job_for_tests, hedge_job=hedge_job_for_tests,
        settings=SETTINGS, topics=setup.topics, name_prefix="python_path_",
    )
    funding_sensor = sensors[2]
    _evaluator(funding_sensor).scan = lambda values, **_kwargs: None
    return funding_sensor


def _counting_scan(sensor) -> dict[str, int]:
    """Count what the shipped sensor's scanner takes and declines (it still does the work)."""
    evaluator = _evaluator(sensor)
    real = evaluator.scan
    counts = {"taken": 0, "declined": 0}

    def scan(values, **kwargs):
        winners = real(values, **kwargs)
        counts["taken" if winners is not None else "declined"] += 1
        return winners

    evaluator.scan = scan
    return counts


def _rates(count: int, start: float) -> list[dict]:
    rates = []
    for i in range(count):
        venue, symbol, interval = MARKETS[i % len(MARKETS)]
        # Every market drifts; a few jumps far enough (> 20 bps per 8 h) to ask for a hedge.
        rate = 0.0001 + (0.003 if i % 397 == 396 else 0.0) + (i % 7) * 1e-6
        event = funding(venue, rate, interval, symbol=symbol, ts=start + i * 0.001)
        event["mark_price"] = 1000.5 + i
        rates.append(event)
    return rates


def _both_sensors_read(setup: Setup, values: list) -> tuple[Any, Any, dict[str, int]]:
    """Publish `values`, then one tick of the shipped sensor and one of the scanner-off sensor from the start."""
    setup.publish(setup.topics.funding, *values)
    shipped, python_path = setup.funding_sensor, _python_path_sensor(setup)
    counts = _counting_scan(shipped)
    return setup.tick(shipped, None), setup.tick(python_path, None), counts


def _outcome(result) -> tuple:
    cursor = json.loads(result.cursor)
    hedged = {market: (entry.get("rate"), entry.get("event_id")) for market, entry in cursor.get("hedged", {}).items()}
    requests = [(r.run_key, r.tags.get("arb/trigger"), json.dumps(r.run_config, sort_keys=True))
                for r in result.run_requests]
    return requests, offsets(result), hedged


def test_clean_rates_are_scanned_in_c_with_the_python_paths_outcome(setup):
    topic = setup.topics.funding
    fast, slow, counts = _both_sensors_read(setup, _rates(3000, time.time() - 20))

    assert _outcome(fast) == _outcome(slow)
    assert offsets(fast) == {f"{topic}/0": 3000}
    assert len(fast.run_requests) == len(MARKETS)  # no baseline yet: every market's newest rate is hedged
    assert counts["taken"] >= 6 and counts["declined"] == 0, counts


def test_bad_messages_among_rates_are_parked_either_way(setup):
    topic = setup.topics.funding
    rates = [json.dumps(r).encode() for r in _rates(2000, time.time() - 20)]
    # All three early on: the first chunk or two hold them, the later chunks are clean.
    rates[100] = b"{not json"
    rates[150] = json.dumps({**json.loads(rates[150]), "interval_hours": 0}).encode()
    rates[200] = json.dumps({**json.loads(rates[200]), "note": {"nested": True}}).encode()  # valid: nested extra
    fast, slow, counts = _both_sensors_read(setup, rates)

    assert _outcome(fast) == _outcome(slow)
    assert offsets(fast) == {f"{topic}/0": 2000}
    reasons = sorted(envelope.reason for envelope in setup.dlq(topic, 4))
    assert len(reasons) == 4  # the two bad messages, parked once by each sensor
    assert reasons[0] == reasons[1] and reasons[2] == reasons[3] and "interval_hours" in " ".join(reasons)
    # A chunk holding a bad message (or the nested extra) took the Python path; the others the C one.
    assert counts["declined"] >= 1 and counts["taken"] >= 2, counts
