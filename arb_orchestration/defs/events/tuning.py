"""The event sensors' knobs and topic names, read from the settings table at load.

Every knob has an environment variable in `arb_orchestration.settings` (see
docs/sensors.md); tests and benchmarks build `EventSensorSettings(...)` directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from arb_orchestration import settings
from arb_orchestration.defs.events.daemon_loop import DAEMON_LOOP_SECONDS
from arb_orchestration.domain.events import (
    CAPITAL_EVENTS,
    DEFAULT_MAX_EVENT_BYTES,
    FUNDING_RATE_EVENTS,
    MARKET_EVENTS,
    TimestampWindow,
)

# Dagster gives a sensor evaluation 60 s (DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS).
SENSOR_EVALUATION_TIMEOUT_SECONDS = 60.0

# The environment variable behind each knob `from_env` reads (its errors name the variable, not the field).
ENV_VARIABLES = {
    "long_poll_seconds": "ARB_SENSOR_LONG_POLL_SECONDS",
    "loop_reserve_seconds": "ARB_SENSOR_LOOP_RESERVE_SECONDS",
    "max_messages": "ARB_SENSOR_MAX_MESSAGES",
    "event_max_age_seconds": "ARB_EVENT_MAX_AGE_SECONDS",
    "critical_window.max_age_seconds": "ARB_CRITICAL_EVENT_MAX_AGE_SECONDS",
    "funding_deviation_bps": "ARB_FUNDING_DEVIATION_BPS",
}


@dataclass(frozen=True)
class EventTopics:
    """Physical topic names of the three event streams (their DLQs are `<name>.dlq`)."""

    market: str = MARKET_EVENTS
    capital: str = CAPITAL_EVENTS
    funding: str = FUNDING_RATE_EVENTS

    @classmethod
    def with_prefix(cls, prefix: str) -> "EventTopics":
        return cls(market=prefix + MARKET_EVENTS, capital=prefix + CAPITAL_EVENTS, funding=prefix + FUNDING_RATE_EVENTS)


@dataclass(frozen=True)
class EventSensorSettings:
    """How the event sensors read, decide and report. Seconds unless named otherwise."""

    # Market/capital sensors wait this long for events inside a tick and return at
    # once when a critical one arrives. 0: read what is there and return.
    long_poll_seconds: float = 4.0
    # ...or, once the daemon loop's phase is known (daemon_loop.py), until this long before
    # the daemon's next loop iteration (a tick still running then makes the daemon skip this
    # sensor for a whole 5 s loop). Covers the sensor's end of tick, the gRPC return and the
    # daemon storing the tick. 0: off, always `long_poll_seconds`.
    loop_reserve_seconds: float = 0.35
    # Most messages read per tick, and the time budget for reading them when not long-polling.
    # 50,000: a tick of valid funding rates takes ~0.2-0.4 s, one of 50,000 malformed ones ~4 s
    # (DLQ flush included); memory does not grow with it (chunks of 500, newest rate per
    # market, the DLQ byte and run-request bounds). The daemon ticks a sensor once per 5 s
    # loop, so this is also the sustained rate: 10,000 events/s (200/s at the old 1,000).
    max_messages: int = 50_000
    max_read_seconds: float = 10.0
    # Most run requests one tick returns (market/capital: one per acted event; funding: one
    # per market, so at most this many markets per tick). Independent of `max_messages`:
    # the daemon creates every requested run after the tick.
    max_run_requests: int = 1000
    metadata_timeout_seconds: float = 10.0  # Kafka unreachable for this long: the tick fails
    dlq_timeout_seconds: float = 15.0  # parked messages must be acknowledged within this
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    # Parked (DLQ) envelopes one tick may hold before its read stops (the rest is read next
    # tick): a tick of large malformed messages must not hold gigabytes (an envelope is up
    # to 900 kB).
    max_parked_bytes: int = 32 * 1024 * 1024
    event_max_age_seconds: float = 900.0  # older non-critical events are counted, not acted on
    critical_window: TimestampWindow = field(default_factory=TimestampWindow)
    funding_deviation_bps: float = 20.0
    hedge_without_baseline: bool = True  # a market never hedged by the sensor counts as deviated
    # The daemon loop runs every 5 s and never ticks a sensor faster. 5 here would skip every
    # other loop: a tick starts a few ms after its loop iteration, so 5.0 s later it is "4.9 s
    # ago" and under the interval (measured: ticks 10 s apart, event -> run up to 5.5 s).
    minimum_interval_seconds: int = 1
    stop_loss_priority: int = 100  # `dagster/priority` of stop-loss runs (higher runs first)
    # An event that asks for a rebalance while an event-requested rebalance still waits to start
    # (queued) requests none: that run plans from the balances when it starts, so it covers the
    # event, and a second one would only queue behind it (one rebalance at a time). Off: one
    # rebalance run per event (the demo world's 2 events/s queued ~12 runs a minute that way).
    coalesce_rebalances: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.long_poll_seconds <= 30:
            raise ValueError(f"long_poll_seconds must be within 0..30, got {self.long_poll_seconds}")
        if not 0 <= self.loop_reserve_seconds < DAEMON_LOOP_SECONDS:
            raise ValueError(
                f"loop_reserve_seconds must be within 0..{DAEMON_LOOP_SECONDS:g} (0: off), got {self.loop_reserve_seconds}"
            )
        if self.max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {self.max_messages}")
        if self.max_run_requests < 1:
            raise ValueError(f"max_run_requests must be at least 1, got {self.max_run_requests}")
        if self.max_parked_bytes < 1:
            raise ValueError(f"max_parked_bytes must be at least 1, got {self.max_parked_bytes}")
        # NaN compares false both ways: a NaN age limit would switch the staleness checks off (a captured
        # signed stop-loss event replayable for ever); 0 or less would refuse every event.
        if not (math.isfinite(self.event_max_age_seconds) and self.event_max_age_seconds > 0):
            raise ValueError(f"event_max_age_seconds must be a number of seconds > 0, got {self.event_max_age_seconds}")
        window = self.critical_window
        if not (math.isfinite(window.max_age_seconds) and window.max_age_seconds > 0):
            raise ValueError(
                f"critical_window.max_age_seconds must be a number of seconds > 0, got {window.max_age_seconds}")
        if not (math.isfinite(window.max_future_seconds) and window.max_future_seconds >= 0):
            raise ValueError(
                f"critical_window.max_future_seconds must be a number of seconds >= 0, got {window.max_future_seconds}")
        bps = self.funding_deviation_bps
        if not (math.isfinite(bps) and bps >= 0):
            raise ValueError(f"funding_deviation_bps must be a number of basis points >= 0, got {bps}")
        if 0 < bps < 1:
            # Funding rates move by whole bps; 0.002 is 20 bps written as a fraction. 0 stays allowed (every move).
            raise ValueError(
                f"funding_deviation_bps is in basis points (20 = 0.20 %), got {bps}: a fraction? (0 = every move)")
        worst = (
            max(self.long_poll_seconds, DAEMON_LOOP_SECONDS, self.max_read_seconds)
            + 2 * self.metadata_timeout_seconds
            + self.dlq_timeout_seconds
        )
        if worst >= SENSOR_EVALUATION_TIMEOUT_SECONDS - 5:
            raise ValueError(
                f"a tick could take {worst:g}s, too close to Dagster's {SENSOR_EVALUATION_TIMEOUT_SECONDS:g}s "
                "sensor timeout: lower the long poll, read budget, metadata or DLQ timeouts"
            )

    @classmethod
    def from_env(cls, deployment: str | None = None) -> "EventSensorSettings":
        window = settings.get_float("ARB_CRITICAL_EVENT_MAX_AGE_SECONDS", deployment)
        try:
            return cls(
                long_poll_seconds=settings.get_float("ARB_SENSOR_LONG_POLL_SECONDS", deployment),
                loop_reserve_seconds=settings.get_float("ARB_SENSOR_LOOP_RESERVE_SECONDS", deployment),
                max_messages=settings.get_int("ARB_SENSOR_MAX_MESSAGES", deployment),
                event_max_age_seconds=settings.get_float("ARB_EVENT_MAX_AGE_SECONDS", deployment),
                critical_window=TimestampWindow(max_age_seconds=window),
                funding_deviation_bps=settings.get_float("ARB_FUNDING_DEVIATION_BPS", deployment),
            )
        except ValueError as exc:
            if isinstance(exc, settings.SettingError):
                raise
            message = str(exc)
            variable = next((var for name, var in ENV_VARIABLES.items() if message.startswith(name)), None)
            if variable is None:  # a combination (the tick's worst case): name every variable in play
                raise settings.SettingError(f"event sensor settings ({', '.join(ENV_VARIABLES.values())}): {message}") from None
            raise settings.SettingError(f"{variable}: {message}") from None

    def but(self, **changes) -> "EventSensorSettings":
        return replace(self, **changes)


def topics_from_env(deployment: str | None = None) -> EventTopics:
    return EventTopics.with_prefix(settings.get("ARB_EVENT_TOPIC_PREFIX", deployment=deployment) or "")
