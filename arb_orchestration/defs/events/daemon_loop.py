"""How long a long-polling sensor tick may read: until just before Dagster's next sensor-daemon loop.

No Dagster import here: the rule is plain arithmetic on timestamps, tested on its own.

What the daemon does (dagster/_daemon/sensor.py, Dagster 1.13.27, `sensors: use_threads: true`):
`execute_sensor_iteration_loop` starts an iteration every `MIN_INTERVAL_LOOP_TIME` = 5 s
(it sleeps 5 s minus the iteration's own duration, so iterations start 5 s plus a few ms
apart). Each iteration hands every due sensor to the thread pool, **except a sensor whose
previous tick is still in flight** ("only allow one tick per sensor to be in flight"): the
future covers the whole tick, the evaluation in the code server and then the daemon's own
work (storing the tick and the cursor, creating and submitting the requested runs). A tick
still running when the next iteration starts therefore costs a whole loop: the next tick
starts 10 s after this one, and an event that arrives meanwhile waits up to ~5 s more.

A fixed long poll (4 s from the evaluation start) stays clear of that but leaves ~1 s per
loop in which nobody reads. Instead the tick reads until `reserve` seconds before the next
iteration. The daemon tells each evaluation when the previous tick of this sensor started
(`context.last_tick_completion_time` is the previous tick's `tick.timestamp`, taken in the
worker thread when it picked the tick up: iteration start + pickup delay). This tick's
iteration started a whole number of 5 s loops after that, so the next one starts about
`loop start + 5 s`. Errors and their direction:
- the loop period is 5 s plus a few ms per iteration (DB heartbeats, thread wake-ups), so
  5 s multiples put the estimated start early: the read ends early (safe);
- pickup delay (a busy pool; the order sensors are handed out in) puts it late (unsafe):
  `LoopClock` remembers the daemon timestamps of recent ticks and takes the earliest
  estimate, i.e. the tick with the smallest pickup delay;
- a tick picked up late (measured: up to 1.35 s while a stop-loss run was being written)
  still ends before the next iteration, which comes on time: its poll is just shorter
  (a fixed 4 s poll from a late start is what overran);
- a daemon restart changes the phase: an estimate that puts the evaluation before its own
  loop does not fit, and the fixed long poll is used; one that puts it late only shortens
  the poll; after one tick the new phase is learnt (estimates expire after 60 s).
The reserve covers what follows the read: the sensor's own end of tick, the gRPC return,
the daemon storing the tick. When a critical event arrives in the last moments, its run's
submission may overrun the next iteration (one loop skipped); the stop-loss itself is not
delayed by that.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

DAEMON_LOOP_SECONDS = 5.0  # dagster/_daemon/sensor.py MIN_INTERVAL_LOOP_TIME (not configurable)


@dataclass(frozen=True)
class LongPoll:
    """How long this tick reads, and why (for the tick's log line)."""

    seconds: float
    aligned: bool  # ends `reserve` before the estimated next daemon iteration
    reason: str


def long_poll_for(
    *,
    now: float,
    loop_starts: list[float],
    reserve: float,
    fallback: float,
    period: float = DAEMON_LOOP_SECONDS,
    max_lateness: float = 1.0,
    clock_tolerance: float = 0.25,
) -> LongPoll:
    """The long poll of a tick whose evaluation starts at `now` (epoch seconds).

    `loop_starts`: daemon timestamps of earlier ticks of this sensor (each = its
    iteration's start plus a pickup delay). Without one that fits, `fallback`.
    """
    if fallback <= 0:
        return LongPoll(0.0, False, "no long poll")
    estimates = []
    for start in loop_starts:
        loops = round((now - start) / period)
        if loops >= 1:
            estimates.append(start + loops * period)
    if not estimates:
        return LongPoll(fallback, False, "daemon loop phase unknown")
    loop_start = min(estimates)
    lateness = now - loop_start
    if lateness < -clock_tolerance:
        # No tick starts before its own loop: the estimate comes from another phase (a daemon
        # restart, a clock step). Nothing known: the fixed poll.
        return LongPoll(fallback, False, f"daemon loop phase does not fit ({lateness:+.2f}s)")
    seconds = max(0.0, min(period, loop_start + period - reserve - now))
    if lateness > max_lateness:
        # Either this tick was picked up late (a busy pool, a slow database: the next loop still
        # comes on time, so stopping before it matters most now) or the phase moved; either way
        # the poll ends early rather than late.
        return LongPoll(seconds, True, f"until {reserve:g}s before the next daemon loop (tick {lateness:.2f}s late)")
    return LongPoll(seconds, True, f"until {reserve:g}s before the next daemon loop")


class LoopClock:
    """Daemon timestamps of a sensor's recent ticks (kept in the code server's memory)."""

    def __init__(self, keep_seconds: float = 60.0, size: int = 16):
        self.keep_seconds = keep_seconds
        self._starts: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def long_poll(self, *, now: float, previous_tick: float | None, reserve: float | None, fallback: float) -> LongPoll:
        """Record `previous_tick` (the context's `last_tick_completion_time`) and size this tick's long poll.

        `reserve` None: alignment off, always `fallback`.
        """
        with self._lock:
            if previous_tick is not None and previous_tick not in self._starts and previous_tick <= now:
                self._starts.append(previous_tick)
            while self._starts and now - self._starts[0] > self.keep_seconds:
                self._starts.popleft()
            starts = list(self._starts)
        if reserve is None:
            return LongPoll(fallback, False, "aligned long poll off")
        return long_poll_for(now=now, loop_starts=starts, reserve=reserve, fallback=fallback)
