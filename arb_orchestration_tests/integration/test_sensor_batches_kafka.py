"""The event sensors' per-tick bounds against a real Apache Kafka broker, one scenario per test.

Reading is chunked (`consume`) and the cursor moves over the messages a tick
handled, never past them. Covered: the message bound across ticks on the
funding topic (every rate read once, the bad ones parked once with their
offsets, the newest rate per market hedged); the run-request bound of the
market sensor; the markets-per-tick bound of the funding sensor; the DLQ byte
bound; the funding sensor running with the `kafka` resource alone, parking a
message that claims to be critical without mailing anyone.
"""

import json
import time

import pytest

from arb_orchestration.defs.events import sensors as event_sensors
from arb_orchestration.defs.events.kafka_source import drop_warm_clients
from arb_orchestration_tests.integration.test_sensors_kafka import SETTINGS, Setup, funding, market, offsets

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sink():
    from arb_orchestration.sim.smtp_sink import SmtpSink

    with SmtpSink() as smtp_sink:
        yield smtp_sink


@pytest.fixture(autouse=True)
def close_warm_clients():
    yield
    drop_warm_clients()
    Setup.close_all()


def summary(result) -> str:
    return result.skip_reason.skip_message if result.skip_reason else ""


def test_the_message_bound_splits_a_backlog_across_ticks_without_losing_or_repeating_anything(kafka_broker, sink):
    setup = Setup(kafka_broker, sink, settings=SETTINGS.but(max_messages=10))
    topic = setup.topics.funding
    now = time.time()
    values: list = [funding(f"venue{i % 3}", 0.0001 + i * 1e-7, 8, ts=now - 30 + i) for i in range(25)]
    values[4] = b'{"schema_version": 1, "event_id": "broken"'  # truncated JSON
    values[17] = json.dumps(dict(values[16], rate="0.001")).encode()  # a string where a number belongs
    setup.publish(topic, *values)

    first = setup.tick(setup.funding_sensor, None)
    second = setup.tick(setup.funding_sensor, first.cursor)
    third = setup.tick(setup.funding_sensor, second.cursor)
    fourth = setup.tick(setup.funding_sensor, third.cursor)

    assert [offsets(r)[f"{topic}/0"] for r in (first, second, third, fourth)] == [10, 20, 25, 25]
    # First tick: markets never hedged, so the newest rate of each of the 3 in offsets 0-9 asks for a hedge.
    newest = {f"venue{i % 3}": values[i]["event_id"] for i in range(10) if i != 4}
    assert sorted(r.run_key for r in first.run_requests) == sorted(newest.values())
    # Later rates moved far less than 20 bps: no more hedges, every rate counted once.
    assert second.run_requests == [] and third.run_requests == []
    assert "read 10, acted 0, parked 1, ignored 9" in summary(second)
    assert "read 5, acted 0, parked 0, ignored 5" in summary(third)
    assert "read 0," in summary(fourth)
    envelopes = setup.dlq(topic, 2)
    assert sorted((e.source.offset, e.reason.split(":")[0]) for e in envelopes) == [(4, "not JSON"), (17, "field 'rate'")]


def test_the_run_request_bound_ends_the_tick_after_the_message_that_reached_it(kafka_broker, sink):
    setup = Setup(kafka_broker, sink, settings=SETTINGS.but(max_run_requests=3))
    topic = setup.topics.market
    events = [market("warning") for _ in range(5)]
    setup.publish(topic, *events)

    first = setup.tick(setup.market_sensor, None)
    second = setup.tick(setup.market_sensor, first.cursor)

    assert [r.run_key for r in first.run_requests] == [e["event_id"] for e in events[:3]]
    assert offsets(first) == {f"{topic}/0": 3}
    assert [r.run_key for r in second.run_requests] == [e["event_id"] for e in events[3:]]
    assert offsets(second) == {f"{topic}/0": 5}


def test_the_markets_bound_stops_the_funding_sensor_before_a_market_it_cannot_hedge_this_tick(kafka_broker, sink):
    setup = Setup(kafka_broker, sink, settings=SETTINGS.but(max_run_requests=2))
    topic = setup.topics.funding
    now = time.time()
    rates = [funding(venue, 0.001, 8, ts=now - 5 + i) for i, venue in enumerate(["a", "b", "a", "c", "b"])]
    setup.publish(topic, *rates)

    first = setup.tick(setup.funding_sensor, None)
    second = setup.tick(setup.funding_sensor, first.cursor)

    assert offsets(first) == {f"{topic}/0": 3}  # a, b, a: market c waits for the next tick
    assert sorted(r.run_key for r in first.run_requests) == sorted([rates[1]["event_id"], rates[2]["event_id"]])
    assert offsets(second) == {f"{topic}/0": 5}
    assert [r.run_key for r in second.run_requests] == [rates[3]["event_id"]]  # c is new; b moved < 20 bps


def test_the_dlq_byte_bound_parks_every_message_once_over_several_ticks(kafka_broker, sink):
    setup = Setup(kafka_broker, sink, settings=SETTINGS.but(max_parked_bytes=1500))  # ~3 small envelopes
    topic = setup.topics.capital
    setup.publish(topic, *[b"not json %d" % i for i in range(7)])

    cursor, results = None, []
    while len(results) < 7:
        results.append(setup.tick(setup.capital_sensor, cursor))
        cursor = results[-1].cursor
        if offsets(results[-1]).get(f"{topic}/0") == 7:
            break
    positions = [offsets(r)[f"{topic}/0"] for r in results]
    assert 1 < len(positions) < 7 and positions == sorted(positions) and positions[-1] == 7
    assert "stopped at the 1,500 bytes of DLQ envelopes per tick limit" in summary(results[0])
    envelopes = setup.dlq(topic, 7)
    assert sorted(e.source.offset for e in envelopes) == list(range(7))


def test_the_funding_sensor_needs_only_kafka_and_never_mails(kafka_broker, sink):
    setup = Setup(kafka_broker, sink)
    sink.clear()
    topic = setup.topics.funding
    misrouted = market("critical", pct=-30.0, sign=True)  # a stop-loss event on the wrong topic
    good = funding("binance", 0.002, 8)
    setup.publish(topic, misrouted, good)

    result = setup.tick(setup.funding_sensor, None, resources={"kafka": setup.resources["kafka"]})

    assert [r.run_key for r in result.run_requests] == [good["event_id"]]
    assert offsets(result) == {f"{topic}/0": 2}
    (envelope,) = setup.dlq(topic, 1)
    assert envelope.source.offset == 0 and envelope.reason.startswith("missing field")
    assert event_sensors.wait_for_alerts(10)
    assert sink.messages() == []  # no mail resource, and no mail: funding events are never critical
