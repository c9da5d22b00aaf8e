"""Realistic demo traffic on the three event topics.

`EventFactory` (pure, seeded) invents the next event: mostly small market moves
(`info`), funding rates that wander around each perp's steady rate at the venue's
real interval (8 h on most venues, 4 h on kraken, 1 h on hyperliquid — the
exchange simulator's specs), now and then a `warning` shock or a capital warning.
It never produces a `critical` event unless `critical_probability` > 0: those
trigger the emergency stop-loss.

`EventGenerator` publishes the factory's events at a steady rate on a background
thread (`start()`/`stop()`) or in the foreground (`run(duration=...)`), signing
each one when given a key.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from arb_orchestration.domain.events import (
    CAPITAL_EVENTS,
    FUNDING_RATE_EVENTS,
    MARKET_EVENTS,
    SCHEMA_VERSION,
    encode_event,
    new_event_id,
    partition_key,
    sign_event,
    topic_name,
)


@dataclass(frozen=True)
class Market:
    venue: str
    symbol: str
    steady_rate: float  # funding per interval the walk reverts to
    interval_hours: float


def default_markets() -> list[Market]:
    """Every perp of the local world's venues, with its funding interval."""
    from arb_orchestration.sim.exchange_specs import default_venues

    return [
        Market(v.name, p.symbol, p.funding_rate, p.funding_interval_hours)
        for v in default_venues()
        for p in v.perps
    ]


class EventFactory:
    """Invents plausible events; deterministic for a given seed (timestamps come from `now`)."""

    def __init__(
        self,
        markets: list[Market] | None = None,
        seed: int | None = None,
        warning_probability: float = 0.03,
        critical_probability: float = 0.0,
        funding_spike_probability: float = 0.01,
        # market, funding, capital. Every capital event is a warning (a rebalance): at 2 events/s a
        # share of 0.10 asked for 12 rebalances a minute and `make dev` queued them without end.
        weights: tuple[float, float, float] = (0.60, 0.395, 0.005),
    ):
        if not 0 <= critical_probability <= 1 or not 0 <= warning_probability <= 1:
            raise ValueError("probabilities must be within [0, 1]")
        self.markets = markets or default_markets()
        if not self.markets:
            raise ValueError("no markets to generate events for")
        self.random = random.Random(seed)
        self.warning_probability = warning_probability
        self.critical_probability = critical_probability
        self.funding_spike_probability = funding_spike_probability
        self.weights = weights
        self._rates = {(m.venue, m.symbol): m.steady_rate for m in self.markets}

    def next_event(self, now: float | None = None) -> tuple[str, dict[str, Any]]:
        """(base topic, payload) of the next event."""
        now = time.time() if now is None else now
        kind = self.random.choices((MARKET_EVENTS, FUNDING_RATE_EVENTS, CAPITAL_EVENTS), weights=self.weights)[0]
        base = {"schema_version": SCHEMA_VERSION, "event_id": new_event_id(), "ts": round(now, 3)}
        if kind == MARKET_EVENTS:
            return kind, {**base, **self._market_shock()}
        if kind == FUNDING_RATE_EVENTS:
            return kind, {**base, **self._funding_rate()}
        return kind, {**base, **self._capital()}

    def _market_shock(self) -> dict[str, Any]:
        m = self.random.choice(self.markets)
        roll = self.random.random()
        sign = self.random.choice((-1, 1))
        if roll < self.critical_probability:
            severity, pct = "critical", sign * self.random.uniform(10, 25)
        elif roll < self.critical_probability + self.warning_probability:
            severity, pct = "warning", sign * self.random.uniform(3, 6)
        else:
            severity, pct = "info", max(-2.0, min(2.0, self.random.gauss(0, 0.4)))
        return {
            "venue": m.venue,
            "symbol": m.symbol,
            "price_change_pct": round(pct, 4),
            "window_seconds": 60,
            "severity": severity,
        }

    def _funding_rate(self) -> dict[str, Any]:
        m = self.random.choice(self.markets)
        key = (m.venue, m.symbol)
        scale = m.interval_hours / 8.0  # noise per interval, comparable across venues
        rate = self._rates[key]
        # Mean-reverting walk around the steady rate, plus a rare jump of ~25 bps per 8 h.
        rate += 0.3 * (m.steady_rate - rate) + self.random.gauss(0, 0.00002 * scale)
        if self.random.random() < self.funding_spike_probability:
            rate += self.random.choice((-1, 1)) * 0.0025 * scale
        self._rates[key] = rate
        return {"venue": m.venue, "symbol": m.symbol, "rate": round(rate, 8), "interval_hours": m.interval_hours}

    def _capital(self) -> dict[str, Any]:
        venue = self.random.choice(sorted({m.venue for m in self.markets}))
        asset = self.random.choice(("USDT", "USDC"))
        threshold = 50_000.0
        if self.random.random() < self.critical_probability:
            level, balance = "critical", threshold * self.random.uniform(0.05, 0.4)
        else:
            level, balance = "warning", threshold * self.random.uniform(0.7, 0.98)
        return {
            "venue": venue,
            "asset": asset,
            "balance": round(balance, 2),
            "threshold": threshold,
            "level": level,
        }


class EventGenerator:
    """Publishes `EventFactory` events at `events_per_second` until stopped."""

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        *,
        kafka=None,
        signing_key: str | None = None,
        events_per_second: float = 2.0,
        seed: int | None = None,
        topic_prefix: str | None = None,
        critical_probability: float = 0.0,
        warning_probability: float = 0.03,
        markets: list[Market] | None = None,
    ):
        if events_per_second <= 0:
            raise ValueError("events_per_second must be > 0")
        if kafka is None:
            from arb_orchestration.resources.kafka import KafkaResource

            kafka = KafkaResource.from_env(**({"bootstrap_servers": bootstrap_servers} if bootstrap_servers else {}))
        if topic_prefix is None:
            from arb_orchestration import settings

            topic_prefix = settings.get("ARB_EVENT_TOPIC_PREFIX")
        self.kafka = kafka
        self.signing_key = signing_key
        self.events_per_second = events_per_second
        self.topic_prefix = topic_prefix
        self.factory = EventFactory(
            markets=markets,
            seed=seed,
            warning_probability=warning_probability,
            critical_probability=critical_probability,
        )
        self.sent: Counter[str] = Counter()  # acknowledged by the broker, per full topic name
        self.failed = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            self.failed += 1
            self.last_error = str(err)
        else:
            self.sent[msg.topic()] += 1

    def run(self, duration: float | None = None, max_events: int | None = None) -> Counter[str]:
        """Publish in the foreground until `duration` seconds, `max_events`, or `stop()`; returns `sent`."""
        producer = self.kafka.producer()
        interval = 1.0 / self.events_per_second
        started = time.monotonic()
        next_at = started
        produced = 0
        try:
            while not self._stop.is_set():
                if duration is not None and time.monotonic() - started >= duration:
                    break
                if max_events is not None and produced >= max_events:
                    break
                base, payload = self.factory.next_event()
                if self.signing_key:
                    payload = sign_event(payload, self.signing_key)
                producer.produce(
                    topic_name(base, self.topic_prefix),
                    value=encode_event(payload),
                    key=partition_key(payload),
                    on_delivery=self._on_delivery,
                )
                produced += 1
                producer.poll(0)
                next_at += interval
                # Behind schedule (a slow broker): do not burst to catch up.
                next_at = max(next_at, time.monotonic() - interval)
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            remaining = producer.flush(10)
            if remaining:
                self.failed += remaining
                self.last_error = f"{remaining} event(s) not delivered within 10 s"
        return self.sent

    def start(self) -> "EventGenerator":
        if self._thread is not None:
            raise RuntimeError("already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="event-generator", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
