"""The long poll of the market/capital sensors: read until just before the sensor daemon's next 5 s loop.

Pure arithmetic (`defs/events/daemon_loop.py`): the estimate from the daemon
timestamps of earlier ticks, its fall-backs (no history, a phase that does not
fit, alignment off), the earliest estimate winning over late pickups, old
history expiring; and the market sensor on a fake consumer reading for the
planned time and saying so in its tick summary.
"""

import time

import pytest
from dagster import build_sensor_context

from arb_orchestration.defs.events import kafka_source
from arb_orchestration.defs.events.daemon_loop import DAEMON_LOOP_SECONDS, LoopClock, long_poll_for
from arb_orchestration.defs.events.tuning import EventSensorSettings

T0 = 1_795_000_000.0


def test_reads_until_the_reserve_before_the_next_loop():
    # The previous tick was picked up 20 ms after its loop started; this one is evaluated 150 ms after its own.
    poll = long_poll_for(now=T0 + 5 + 0.15, loop_starts=[T0 + 0.02], reserve=0.35, fallback=4.0)
    # Next loop estimated at T0 + 10.02 (the pickup delay of the previous tick counts: a late estimate).
    assert poll.aligned and poll.seconds == pytest.approx(10.02 - 0.35 - 5.15)
    assert "before the next daemon loop" in poll.reason


def test_a_skipped_loop_in_between_still_fits():
    poll = long_poll_for(now=T0 + 10.2, loop_starts=[T0], reserve=0.35, fallback=4.0)
    assert poll.aligned and poll.seconds == pytest.approx(4.45)


@pytest.mark.parametrize("now, starts, why", [
    (T0 + 5.1, [], "unknown"),  # first tick: no earlier tick known
    (T0 + 5 - 0.6, [T0], "does not fit"),  # "before its loop": another phase (a daemon restart)
    (T0 + 2.0, [T0], "unknown"),  # less than a loop since the last tick
])
def test_falls_back_to_the_fixed_long_poll(now, starts, why):
    poll = long_poll_for(now=now, loop_starts=starts, reserve=0.35, fallback=4.0)
    assert not poll.aligned and poll.seconds == 4.0 and why in poll.reason


def test_a_tick_picked_up_late_still_ends_before_the_next_loop():
    # Measured: a tick picked up 1.35 s late; a fixed 4 s poll from there overran the next loop.
    poll = long_poll_for(now=T0 + 5 + 1.6, loop_starts=[T0], reserve=0.35, fallback=4.0)
    assert poll.aligned and poll.seconds == pytest.approx(10 - 0.35 - 6.6) and "1.60s late" in poll.reason


def test_the_earliest_estimate_wins_over_a_late_pickup():
    # Two ticks ago the pickup took 20 ms, last tick 400 ms (a busy pool): trust the early one.
    starts = [T0 + 0.02, T0 + 5 + 0.4]
    poll = long_poll_for(now=T0 + 10 + 0.1, loop_starts=starts, reserve=0.35, fallback=4.0)
    assert poll.seconds == pytest.approx(5 + 0.02 - 0.1 - 0.35)


def test_no_long_poll_and_alignment_off():
    assert long_poll_for(now=T0 + 5, loop_starts=[T0], reserve=0.35, fallback=0).seconds == 0
    clock = LoopClock()
    poll = clock.long_poll(now=T0 + 5.1, previous_tick=T0, reserve=None, fallback=4.0)
    assert poll.seconds == 4.0 and not poll.aligned


def test_the_clock_remembers_recent_ticks_and_forgets_old_ones():
    clock = LoopClock(keep_seconds=60)
    first = clock.long_poll(now=T0 + 5.1, previous_tick=T0 + 0.3, reserve=0.35, fallback=4.0)
    assert first.aligned and first.seconds == pytest.approx(10.3 - 0.35 - 5.1)  # evaluated "0.2 s early": tolerated
    # The next tick learns a smaller pickup (the loop really started at T0 + 5): from then on that one counts.
    second = clock.long_poll(now=T0 + 10.12, previous_tick=T0 + 5.0, reserve=0.35, fallback=4.0)
    assert second.seconds == pytest.approx(5 - 0.12 - 0.35)
    third = clock.long_poll(now=T0 + 15.1, previous_tick=T0 + 10.3, reserve=0.35, fallback=4.0)
    assert third.seconds == pytest.approx(5 - 0.1 - 0.35)  # T0 + 5.0 still the earliest estimate
    later = clock.long_poll(now=T0 + 200.1, previous_tick=None, reserve=0.35, fallback=4.0)
    assert not later.aligned  # everything older than 60 s forgotten


def test_settings_bound_the_reserve():
    assert EventSensorSettings().loop_reserve_seconds == 0.35
    with pytest.raises(ValueError, match="loop_reserve_seconds"):
        EventSensorSettings(loop_reserve_seconds=DAEMON_LOOP_SECONDS)


# --------------------------------------------------------------------------- the market sensor on a fake consumer


def test_the_market_sensor_long_polls_until_the_planned_end(monkeypatch):
    from arb_orchestration_tests.unit.test_event_sensor_reading import FakeConsumer, _hedge_job
    from arb_orchestration.defs.events import EventTopics, build_event_sensors
    from arb_orchestration.resources.kafka import KafkaResource
    import uuid

    topics = EventTopics.with_prefix(f"u{uuid.uuid4().hex[:6]}-")
    monkeypatch.setattr(kafka_source, "Consumer", lambda config: FakeConsumer(topics.market, {0: []}))
    kafka_source.drop_warm_clients()
    settings = EventSensorSettings(long_poll_seconds=0.3, loop_reserve_seconds=4.6)
    market_sensor = build_event_sensors(rebalance_job=_hedge_job, stop_loss_job=_hedge_job, hedge_job=_hedge_job,
                                        settings=settings, topics=topics, alert_resource_key=None,
                                        name_prefix="u_")[0]
    resources = {"kafka": KafkaResource(bootstrap_servers="fake:9")}
    try:
        # No earlier tick known: the fixed long poll (0.3 s).
        began = time.monotonic()
        result = market_sensor(build_sensor_context(cursor=None, resources=resources))
        assert 0.25 <= time.monotonic() - began < 2.0
        assert "long poll 0.30s: daemon loop phase unknown" in result.skip_reason.skip_message
        # The daemon says the previous tick started 5.05 s ago: the next loop starts in ~4.95 s,
        # minus the 4.6 s reserve leaves ~0.35 s of reading.
        context = build_sensor_context(cursor=result.cursor, resources=resources)
        context._last_tick_completion_time = time.time() - 5.05
        began = time.monotonic()
        result = market_sensor(context)
        took = time.monotonic() - began
        assert 0.25 <= took < 2.0
        assert "before the next daemon loop" in result.skip_reason.skip_message
    finally:
        kafka_source.drop_warm_clients()
