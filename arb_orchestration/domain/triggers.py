"""What an event triggers, and the bookkeeping that makes re-reading an event harmless. Pure.

The Kafka sensors (`arb_orchestration/defs/events`) are thin: they read bytes and
hand them here. This module decides, with no Dagster and no I/O:

- `route_event`: which job an event asks for. Critical events (an extreme market
  shock, a capital balance at its critical floor) go to the emergency stop-loss;
  warnings go to the rebalancing saga; informational market events to nothing.
  Criticality is the producer's label (`event.is_critical`), which the HMAC
  signature covers, so it cannot be flipped in transit.
- `admit_event`: the admission rule of `domain.events.check_critical_event`
  (signed, inside the timestamp window, not replayed) with a replay memory that
  lives in the sensor cursor (`SeenCriticalIds`), plus an age limit for acting on
  non-critical events.
- `decide_hedges`: funding-rate deviation per venue/symbol against the rate at
  the last hedge the sensor requested (`HedgeBaselines`), newest rate per market
  within a batch.
- `SensorCursor`: the JSON the sensor stores as its Dagster cursor (offsets per
  topic-partition, the identity of each topic they belong to, recent critical
  ids, hedge baselines) and `TickTally`, the one-line account of a tick.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from itertools import islice
from operator import attrgetter, sub
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

from arb_orchestration.domain.events import (
    CapitalThresholdEvent,
    Event,
    EventRejected,
    FundingRateEvent,
    MarketShockEvent,
    TimestampWindow,
    check_critical_event,
)
from arb_orchestration.domain.funding import FundingDeviation, RatePoint, to_bps
from arb_orchestration.domain.models import FundingRate

CURSOR_VERSION = 1
# librdkafka's "start at the earliest available offset" (OFFSET_BEGINNING).
EARLIEST = -2


class Action(str, Enum):
    """The job family an event asks for."""

    STOP_LOSS = "stop_loss"
    REBALANCE = "rebalance"
    HEDGE = "hedge"
    NONE = "none"


@dataclass(frozen=True)
class Route:
    action: Action
    critical: bool
    reason: str


def route_event(event: Event) -> Route:
    """Which job `event` asks for, and a sentence saying why (for logs and run config)."""
    if isinstance(event, MarketShockEvent):
        move = f"{event.symbol} {event.price_change_pct:+.2f}% in {event.window_seconds} s on {event.venue}"
        if event.is_critical:
            return Route(Action.STOP_LOSS, True, f"extreme market shock: {move}")
        if event.severity == "warning":
            return Route(Action.REBALANCE, False, f"market shock: {move}")
        return Route(Action.NONE, False, f"informational market event: {move}")
    if isinstance(event, CapitalThresholdEvent):
        where = f"{event.asset} on {event.venue}: balance {event.balance:g}, floor {event.threshold:g}"
        if event.is_critical:
            return Route(Action.STOP_LOSS, True, f"critical capital threshold: {where}")
        return Route(Action.REBALANCE, False, f"capital threshold: {where}")
    if isinstance(event, FundingRateEvent):
        return Route(Action.HEDGE, False, f"funding rate {event.venue} {event.symbol}")
    raise TypeError(f"no route for {type(event).__name__}")


# Control characters in an id that becomes a run key and a run tag: PostgreSQL (the deployed
# run storage) refuses NUL in text, so the sensor daemon could neither look the key up nor
# create the run, and it retries that tick's runs for ever instead of evaluating the sensor.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def run_key_problem(event_id: str) -> str | None:
    """Why `event_id` cannot be a run key (None when it can): it holds a control character."""
    found = _CONTROL_CHARACTERS.search(event_id)
    if found is None:
        return None
    return (
        f"field 'event_id': contains the control character U+{ord(found.group()):04X} at position {found.start()} "
        "(an event id becomes a run key and a run tag, which the run storage cannot hold)"
    )


# --------------------------------------------------------------------------- replay memory


class SeenCriticalIds:
    """Ids of accepted critical events with their timestamps; lives in the sensor cursor.

    Bounded two ways. By time: an id older than the timestamp window is dropped,
    because its event would be refused as stale anyway. By count: past `capacity`
    the oldest ids are dropped and `floor` rises to their timestamp; events at or
    before the floor are refused, so forgetting an id never re-opens a replay.
    """

    def __init__(self, ids: Mapping[str, float] | None = None, floor: float = 0.0, capacity: int = 5000):
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.ids: dict[str, float] = dict(ids or {})
        self.floor = float(floor)
        self.capacity = capacity

    def __contains__(self, event_id: object) -> bool:
        return event_id in self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def remember(self, event_id: str, ts: float) -> None:
        self.ids[event_id] = ts
        if len(self.ids) > self.capacity:
            for old_id, old_ts in sorted(self.ids.items(), key=lambda item: item[1])[: len(self.ids) - self.capacity]:
                del self.ids[old_id]
                self.floor = max(self.floor, old_ts)

    def prune(self, now: float, window: TimestampWindow) -> None:
        """Forget ids whose events the window already refuses."""
        horizon = now - window.max_age_seconds
        self.ids = {event_id: ts for event_id, ts in self.ids.items() if ts >= horizon}

    def recorder(self, ts: float) -> "_RecordingView":
        """A `SeenEventIds` view for `check_critical_event` that records ids with `ts`."""
        return _RecordingView(self, ts)


class _RecordingView:
    def __init__(self, seen: SeenCriticalIds, ts: float):
        self._seen, self._ts = seen, ts

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._seen

    def add(self, event_id: str) -> None:
        self._seen.remember(event_id, self._ts)


@dataclass(frozen=True)
class AdmissionPolicy:
    """When an event may be acted on."""

    window: TimestampWindow = field(default_factory=TimestampWindow)
    max_age_seconds: float = 900.0  # non-critical events older than this are not acted on


@dataclass(frozen=True)
class Admission:
    """`admitted` events are acted on; otherwise `stale` ones are only counted, the rest are parked."""

    admitted: bool
    reason: str = ""
    stale: bool = False


def admit_event(
    event: Event,
    signing_key: str | bytes | None,
    seen: SeenCriticalIds,
    *,
    now: datetime,
    policy: AdmissionPolicy = AdmissionPolicy(),
) -> Admission:
    """May the sensor act on `event`? A critical one is recorded in `seen` when admitted.

    Refusals that must be parked (and, for critical events, alerted on) come back
    with `admitted=False, stale=False`; a valid but old non-critical event comes
    back `stale=True` (nothing to park: it is just too late to act on).
    Raises ValueError when a critical event arrives and no key is configured.
    """
    ts = event.ts.timestamp()
    if event.is_critical and ts <= seen.floor:
        return Admission(False, f"refused: ts {event.ts.isoformat()} is older than the replay memory (floor)")
    try:
        check_critical_event(event, signing_key, seen.recorder(ts), now=now, window=policy.window)
    except EventRejected as exc:
        return Admission(False, exc.reason)
    if not event.is_critical:
        age = (now - event.ts).total_seconds()
        if age > policy.max_age_seconds:
            return Admission(False, f"stale: {age:.0f} s old (acting limit {policy.max_age_seconds:g} s)", stale=True)
    return Admission(True)


_ADMITTED = Admission(True)


class AdmissionCheck:
    """`admit_event` with the key, replay memory, clock and policy of one batch bound once.

    Same answers as `admit_event(event, signing_key, seen, now=now, policy=policy)`.
    The common case, a non-critical unsigned event well inside the age limit, is
    answered with one comparison; everything else (critical, signed, or within a
    millisecond of the age limit) goes through `admit_event` itself.
    """

    def __init__(
        self,
        signing_key: str | bytes | None,
        seen: SeenCriticalIds,
        *,
        now: datetime,
        policy: AdmissionPolicy = AdmissionPolicy(),
    ):
        self.signing_key, self.seen, self.now, self.policy = signing_key, seen, now, policy
        # `admit_event` compares (now - ts).total_seconds() with the limit as floats; a margin
        # of 1 ms keeps the shortcut clear of any rounding at the boundary.
        self._fresh_after = now - timedelta(seconds=policy.max_age_seconds) + timedelta(milliseconds=1)
        # The same bound in epoch seconds: a non-critical unsigned event whose `ts` is later
        # than this is admitted (for rates known by their fields, before any event is built).
        self.fresh_after_epoch = self._fresh_after.timestamp()

    def __call__(self, event: Event) -> Admission:
        if event.signature is None and not event.is_critical and event.ts > self._fresh_after:
            return _ADMITTED
        return admit_event(event, self.signing_key, self.seen, now=self.now, policy=self.policy)


# --------------------------------------------------------------------------- funding deviation


def market_key(venue: str, symbol: str) -> str:
    return f"{venue}|{symbol}"


# A requested hedge whose run the instance still does not show after this long (seconds) never
# became a run (the request was lost): its requested rate hedged nothing, so it stops counting.
PENDING_RUN_GRACE_SECONDS = 300.0
# Keys that make a point *pending*: the rate the sensor requested a hedge at, not yet hedged.
_PENDING_KEYS = ("requested_at", "confirmed")


class HedgeBaselines:
    """The funding rate each venue/symbol had at its last hedge: what the sensor compares new rates with.

    A point is ``{rate, interval_hours, at, event_id | run_id}``. When the sensor
    requests a hedge the point becomes that event's rate and is *pending*: it also
    holds ``requested_at`` (wall clock) and ``confirmed``, the baseline before the
    request (None when there was none). The sensor compares with the pending rate
    (no second request while the first runs), and `settle_pending` resolves it
    from the request's runs: a successful run confirms it, a failed or canceled
    one (or none at all after `PENDING_RUN_GRACE_SECONDS`) restores `confirmed`,
    so the deviation the failed hedge left is measured, and requested, again.
    Points without the pending keys (every cursor written before them) are confirmed.
    """

    def __init__(self, points: Mapping[str, Mapping[str, Any]] | None = None):
        self.points: dict[str, dict[str, Any]] = {key: dict(value) for key, value in (points or {}).items()}

    def get(self, venue: str, symbol: str) -> RatePoint | None:
        point = self.points.get(market_key(venue, symbol))
        if point is None:
            return None
        return RatePoint(rate=float(point["rate"]), interval_hours=float(point["interval_hours"]), at=point.get("at"))

    def record(self, event: FundingRateEvent, *, requested_at: float | None = None) -> None:
        """A hedge was requested at `event`'s rate: pending until a run of that request succeeds."""
        key = market_key(event.venue, event.symbol)
        self.points[key] = {
            "rate": event.rate,
            "interval_hours": event.interval_hours,
            "at": event.ts.timestamp(),
            "event_id": event.event_id,
            "requested_at": utc_now().timestamp() if requested_at is None else requested_at,
            "confirmed": self.confirmed(key),
        }

    def confirmed(self, key: str) -> dict[str, Any] | None:
        """The market's baseline as really hedged: the point, or what it replaced when it is pending."""
        point = self.points.get(key)
        if point is None:
            return None
        if "confirmed" in point:
            held = point["confirmed"]
            return None if held is None else dict(held)
        return dict(point)

    def pending_event_ids(self) -> dict[str, str]:
        """``{event_id: market key}`` of the requested hedges not yet settled."""
        return {str(p.get("event_id")): key for key, p in self.points.items() if "confirmed" in p}

    def settle_pending(
        self, outcomes: Mapping[str, str], *, now: float, grace_seconds: float = PENDING_RUN_GRACE_SECONDS
    ) -> dict[str, str]:
        """Resolve pending points from their request's run outcome; returns ``{market: what happened}``.

        `outcomes`: ``{event_id: "succeeded" | "failed" | "running"}`` (an id without
        a run is absent). Succeeded: the requested rate is the baseline. Failed (or
        canceled): back to the confirmed baseline. Running: still pending. No run
        after `grace_seconds`: back to the confirmed baseline.
        """
        settled = {}
        for event_id, key in self.pending_event_ids().items():
            point = self.points[key]
            outcome = outcomes.get(event_id)
            if outcome == "running":
                continue
            if outcome is None:
                requested_at = point.get("requested_at")
                if requested_at is not None and now - float(requested_at) <= grace_seconds:
                    continue
                outcome = "no run"
            if outcome == "succeeded":
                for name in _PENDING_KEYS:
                    point.pop(name, None)
            else:
                confirmed = self.confirmed(key)
                if confirmed is None:
                    del self.points[key]
                else:
                    self.points[key] = confirmed
            settled[key] = outcome
        return settled


@dataclass(frozen=True)
class HedgeDecision:
    """One market's verdict; `hedge` means a run is requested for `event`."""

    event: FundingRateEvent
    hedge: bool
    reason: str
    delta_bps: float | None
    current_bps_8h: float


def newest_per_market(events: Iterable[tuple[FundingRateEvent, int]]) -> list[tuple[FundingRateEvent, int]]:
    """Keep the newest rate per venue/symbol: latest `ts`, ties broken by read order (the int)."""
    newest: dict[tuple[str, str], tuple[FundingRateEvent, int]] = {}
    for event, order in events:
        key = (event.venue, event.symbol)
        held = newest.get(key)
        if held is None or (event.ts, order) >= (held[0].ts, held[1]):
            newest[key] = (event, order)
    return sorted(newest.values(), key=lambda pair: pair[1])


# Two times further apart than this (seconds) keep their order once rounded to the
# microsecond a datetime holds: each side moves by at most 0.5 us plus float error
# (~0.24 us at today's epoch). Closer ones are compared as the events' datetimes: two
# different floats within a microsecond can be the same datetime (a tie, which the later
# read wins) while one float is smaller.
_SURELY_APART_S = 5e-6
_APART = _SURELY_APART_S + 1.0  # a gap no chunk of one rate has
# Of a screened funding row (`domain.events.FundingRateRow`).
_TS_OF, _MARKET_OF = attrgetter("ts"), attrgetter("venue", "symbol")
_VENUE_OF, _SYMBOL_OF = attrgetter("venue"), attrgetter("symbol")


class NewestPerMarket:
    """`newest_per_market` kept while reading: only the newest rate per venue/symbol is held.

    Offer rates in read order: `offer(event, item)` for a parsed event, or, for
    rates known only by their fields (`domain.events.screen_funding_rates`),
    `offer_at(venue, symbol, epoch_seconds, item)`, `offer_rows(rows, items)` or
    `offer_fresh_rows(rows, items)`, whose events would have
    `ts == datetime.fromtimestamp(epoch_seconds, UTC)`. The same rule as
    `newest_per_market` every way: latest `ts` wins, a tie (equal datetimes)
    goes to the later read. `item` travels with the rate (the sensor's Kafka
    message, from which it builds the event of the few it keeps). Memory is one
    entry per market however many rates a tick reads. With `max_markets`, a rate
    for a market beyond that many is refused and not counted, so the caller can
    stop before it: this bounds the hedge requests one tick can make.
    """

    def __init__(self, max_markets: int | None = None):
        if max_markets is not None and max_markets < 1:
            raise ValueError("max_markets must be at least 1")
        self.max_markets = max_markets
        self.offered = 0
        # (venue, symbol) -> [epoch seconds, its datetime (None until needed), item, read order]
        self._held: dict[tuple[str, str], list[Any]] = {}

    def __len__(self) -> int:
        return len(self._held)

    def offer(self, event: FundingRateEvent, item: Any = None) -> bool:
        """Offer a parsed rate; False (not counted) when it is a market beyond `max_markets`."""
        return self.offer_at(event.venue, event.symbol, event.ts.timestamp(), item, ts=event.ts)

    def offer_at(
        self, venue: str, symbol: str, epoch_seconds: float, item: Any = None, *, ts: datetime | None = None
    ) -> bool:
        """Offer a rate by its fields (`ts`: its exact datetime when known); False as for `offer`."""
        key = (venue, symbol)
        held = self._held.get(key)
        if held is None:
            if self.max_markets is not None and len(self._held) >= self.max_markets:
                return False
            self._held[key] = [epoch_seconds, ts, item, self.offered]
        elif _is_newer_or_tie(epoch_seconds, ts, held):
            held[0], held[1], held[2], held[3] = epoch_seconds, ts, item, self.offered
        self.offered += 1
        return True

    def offer_rows(self, rows: list[Any], items: list[Any], *, fresher_than: float, start: int = 0) -> int:
        """Offer `rows[start:]` (screened rows: `venue`, `symbol`, `ts` in epoch seconds) in order.

        Stops at the first row that is None, whose `ts` is not later than
        `fresher_than`, or that is a market beyond `max_markets`, and returns its
        index (`len(rows)` when every row was taken); the caller deals with that
        one and calls again from the next. The same as `offer_at` row by row,
        without a call per row (for a chunk `offer_fresh_rows` could not take).
        """
        held_by_market = self._held
        cap = self.max_markets
        order = self.offered
        index = start
        end = len(rows)
        try:
            while index < end:
                row = rows[index]
                if row is None:
                    return index
                epoch_seconds = row.ts
                if epoch_seconds <= fresher_than:
                    return index
                key = (row.venue, row.symbol)
                held = held_by_market.get(key)
                if held is None:
                    if cap is not None and len(held_by_market) >= cap:
                        return index
                    held_by_market[key] = [epoch_seconds, None, items[index], order]
                else:
                    gap = epoch_seconds - held[0]
                    if gap > _SURELY_APART_S or (gap >= -_SURELY_APART_S and _is_newer_or_tie(epoch_seconds, None, held)):
                        held[0], held[1], held[2], held[3] = epoch_seconds, None, items[index], order
                order += 1
                index += 1
            return index
        finally:
            self.offered = order

    def offer_fresh_rows(self, rows: list[Any], items: list[Any], *, fresher_than: float) -> bool:
        """Offer a whole chunk of screened rows (`venue`, `symbol`, `ts` in epoch seconds) in one go.

        Only when every row is a rate later than `fresher_than`: False, and nothing
        offered, when a row is None, one is not later, or the chunk holds a market
        beyond `max_markets`; the caller then goes row by row (`offer_rows`). The
        same outcome as `offer_at` rate by rate, without a Python step per rate: a
        dict built from the rates in time order (read order when that is already
        it, else a stable sort by time) keeps, per market, the latest rate with
        ties to the later read (C-level work); only the one winner per market is
        then compared with what is held.
        """
        if len(rows) != len(items):
            raise ValueError("offer_fresh_rows: rows and items differ in length")
        try:
            epochs = list(map(_TS_OF, rows))
        except AttributeError:  # a None: that message needs the full path
            return False
        if not epochs:
            return True
        ordered = sorted(epochs)
        if ordered[0] <= fresher_than:
            return False
        if ordered == epochs:  # in time order (see `_offer_sorted`): the keys without a list of them
            return self._offer_winners(dict(zip(zip(map(_VENUE_OF, rows), map(_SYMBOL_OF, rows)), range(len(rows)))),
                                       epochs, items)
        return self._offer_sorted(list(map(_MARKET_OF, rows)), epochs, items, ordered)

    def _offer_sorted(self, markets: list[Any], epochs: list[float], items: list[Any], ordered: list[float]) -> bool:
        """`offer_fresh_rows` once `ordered` (the chunk's times, sorted) is known."""
        count = len(epochs)
        held_by_market = self._held
        cap = self.max_markets
        if ordered == epochs:
            # Read order is time order (the common case: a chunk is mostly one partition's run).
            # `fromtimestamp` rounds monotonically, so the events' datetimes are in read order too,
            # near ties included: per market, the last read is the newest, a tie going to the later
            # read. The last index per market is what a dict built in read order keeps.
            winners = dict(zip(markets, range(count)))
        elif min(filter(None, map(sub, islice(ordered, 1, None), ordered)), default=_APART) <= _SURELY_APART_S:
            # Out of read order with two different times a few microseconds apart: floats may
            # order them unlike the events' datetimes (which may be a tie). Rate by rate, exactly.
            if cap is not None and len(held_by_market) + len(set(markets).difference(held_by_market)) > cap:
                return False
            for key, epoch_seconds, item in zip(markets, epochs, items):
                self.offer_at(key[0], key[1], epoch_seconds, item)
            return True
        else:
            order = sorted(range(count), key=epochs.__getitem__)  # stable: equal times keep read order
            # Later entries overwrite earlier ones: per market, the latest time, the later read on a tie.
            winners = dict(zip(map(markets.__getitem__, order), order))
        return self._offer_winners(winners, epochs, items)

    def _offer_winners(self, winners: dict[Any, int], epochs: list[float], items: list[Any]) -> bool:
        """Offer each market's newest rate of a chunk (`winners`: market -> its index); False at the bound."""
        return self.offer_scanned([(key, index, epochs[index]) for key, index in winners.items()], items)

    def offer_scanned(self, winners: list[tuple[Any, int, float]], items: list[Any]) -> bool:
        """Offer each market's newest rate of a chunk (`items`: the chunk's messages) in one go.

        `winners`: per market of the chunk, `(market, index of its newest rate, its ts)`, as
        `domain.events.FundingChunkScan` answers for a chunk it took whole (every rate later than
        the admission limit) and `offer_fresh_rows` finds for one it takes. Only the winners are
        compared with what is held; every rate of the chunk counts as offered. False, and nothing
        offered, when the chunk holds a market beyond `max_markets`.
        """
        held_by_market = self._held
        cap = self.max_markets
        # Every market of the chunk is a winner (a handful), so the bound is checked on them.
        if cap is not None and len(held_by_market) + len(winners) > cap:
            if len(held_by_market) + sum(1 for key, _, _ in winners if key not in held_by_market) > cap:
                return False
        base = self.offered
        for key, index, epoch_seconds in winners:
            held = held_by_market.get(key)
            if held is None:
                held_by_market[key] = [epoch_seconds, None, items[index], base + index]
            elif _is_newer_or_tie(epoch_seconds, None, held):
                held[0], held[1], held[2], held[3] = epoch_seconds, None, items[index], base + index
        self.offered = base + len(items)
        return True

    @property
    def superseded(self) -> int:
        """Rates offered but not kept (a newer one for the same market was, or came later)."""
        return self.offered - len(self._held)

    def newest(self) -> list[Any]:
        """The item of each market's newest rate, in the order those rates were read."""
        return [held[2] for held in sorted(self._held.values(), key=lambda held: held[3])]


def _is_newer_or_tie(epoch_seconds: float, ts: datetime | None, held: list[Any]) -> bool:
    """Does a rate at `epoch_seconds` (exactly `ts` when given) replace `held` (newer, or a tie)?

    Far-apart times are ordered as floats; close ones are compared as the
    events' datetimes (`fromtimestamp` of the float when the datetime is not
    known), so two different floats that round to the same microsecond are a
    tie, which the later read (this one) wins.
    """
    gap = epoch_seconds - held[0]
    if gap > _SURELY_APART_S:
        return True
    if gap < -_SURELY_APART_S:
        return False
    return _exact(epoch_seconds, ts) >= _exact_held(held)


def _exact(epoch_seconds: float, ts: datetime | None) -> datetime:
    return ts if ts is not None else datetime.fromtimestamp(epoch_seconds, timezone.utc)


def _exact_held(held: list[Any]) -> datetime:
    if held[1] is None:
        held[1] = datetime.fromtimestamp(held[0], timezone.utc)
    return held[1]


def decide_hedges(
    events: Iterable[FundingRateEvent],
    baselines: HedgeBaselines,
    deviation: FundingDeviation,
    *,
    now: float | None = None,
) -> list[HedgeDecision]:
    """Compare each rate (one per market) with the rate at its last hedge; a hedge makes its rate pending.

    `now` (epoch seconds, default the clock): when the requests are made, for
    `HedgeBaselines.settle_pending`'s grace.
    """
    decisions = []
    for event in events:
        current = FundingRate(
            venue=event.venue,
            symbol=event.symbol,
            rate=event.rate,
            interval_hours=event.interval_hours,
            observed_at=event.ts.timestamp(),
        )
        result = deviation.check(baselines.get(event.venue, event.symbol), current)
        if result.exceeded:
            baselines.record(event, requested_at=now)
        decisions.append(
            HedgeDecision(
                event=event,
                hedge=result.exceeded,
                reason=result.reason,
                delta_bps=result.delta_bps,
                current_bps_8h=to_bps(result.current_rate),
            )
        )
    return decisions


# --------------------------------------------------------------------------- cursor


class CursorError(ValueError):
    """The stored cursor cannot be read; the sensor refuses to guess offsets."""


def partition_key(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


class TopicIdVerdict(Enum):
    """What the topic id the cluster reports says about the cursor's offsets of that topic."""

    SAME = "same"  # the offsets belong to this topic
    ADOPTED = "adopted"  # the cursor had no id for the topic (an older cursor, a first tick): now it has
    RECREATED = "recreated"  # another topic of the same name: the offsets mean nothing there


@dataclass
class SensorCursor:
    """The sensor's Dagster cursor: the source of truth for what has been read.

    JSON: ``{"v": 1, "offsets": {"market-events/0": 42}, "topic_ids": {"market-events": "<id>"},
    "seen": {"<event_id>": ts}, "floor": ts,
    "hedged": {"binance|BTC/USDT:USDT": {"rate", "interval_hours", "at", "event_id"}}}``
    (a pending hedge point also has ``requested_at`` and ``confirmed``: `HedgeBaselines`).
    An offset is the *next* offset to read; a partition missing from `offsets`
    is read from the earliest offset the broker still has. `topic_ids` holds the
    Kafka topic id (a UUID, as the client prints it) of the topic the offsets were
    read from: a topic deleted and recreated under the same name has another id,
    and its offsets start again at 0. Cursors written before `topic_ids` existed
    load without it (`check_topic_id` then adopts the id the cluster reports).
    """

    offsets: dict[str, int] = field(default_factory=dict)
    topic_ids: dict[str, str] = field(default_factory=dict)
    seen: SeenCriticalIds = field(default_factory=SeenCriticalIds)
    baselines: HedgeBaselines = field(default_factory=HedgeBaselines)

    @classmethod
    def parse(cls, text: str | None) -> "SensorCursor":
        if not text:
            return cls()
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise CursorError(f"sensor cursor is not JSON ({exc}); reset it with `dagster sensor cursor`") from None
        if not isinstance(obj, dict) or obj.get("v") != CURSOR_VERSION:
            raise CursorError(f"sensor cursor has an unknown format (expected v={CURSOR_VERSION}): {text[:200]!r}")
        try:
            offsets = {str(k): int(v) for k, v in (obj.get("offsets") or {}).items()}
            topic_ids = obj.get("topic_ids") or {}
            if not isinstance(topic_ids, dict) or not all(isinstance(v, str) and v for v in topic_ids.values()):
                raise TypeError(f"topic_ids must map topics to non-empty id strings, got {topic_ids!r}")
            topic_ids = {str(k): v for k, v in topic_ids.items()}
            seen = SeenCriticalIds({str(k): float(v) for k, v in (obj.get("seen") or {}).items()}, float(obj.get("floor", 0)))
            baselines = HedgeBaselines(obj.get("hedged") or {})
        except (TypeError, ValueError, AttributeError) as exc:
            raise CursorError(f"sensor cursor is malformed ({exc}): {text[:200]!r}") from None
        for key, offset in offsets.items():
            if "/" not in key or offset < 0:
                raise CursorError(f"sensor cursor has a bad offset entry {key!r}: {offset}")
        return cls(offsets=offsets, topic_ids=topic_ids, seen=seen, baselines=baselines)

    def offset(self, topic: str, partition: int) -> int:
        """Where to start reading `topic/partition` (EARLIEST when never read)."""
        return self.offsets.get(partition_key(topic, partition), EARLIEST)

    def check_topic_id(self, topic: str, current: str) -> TopicIdVerdict:
        """Compare the id the cluster reports for `topic` with the cursor's; a first id is recorded.

        RECREATED leaves the cursor as it is: the caller decides what to keep of the
        tick and calls `restart_topic`.
        """
        known = self.topic_ids.get(topic)
        if known is None:
            self.topic_ids[topic] = current
            return TopicIdVerdict.ADOPTED
        return TopicIdVerdict.SAME if known == current else TopicIdVerdict.RECREATED

    def restart_topic(self, topic: str, topic_id: str) -> list[str]:
        """`topic` is now the topic with `topic_id`: forget every offset of it (read from the earliest).

        Returns the partition keys forgotten. Offsets of other topics, the replay
        memory and the hedge baselines are not the topic's and stay.
        """
        prefix = f"{topic}/"
        dropped = sorted(key for key in self.offsets if key.startswith(prefix) and "/" not in key[len(prefix):])
        for key in dropped:
            del self.offsets[key]
        self.topic_ids[topic] = topic_id
        return dropped

    def advance(self, topic: str, partition: int, offset: int) -> None:
        """Record that `offset` was read: the next read starts after it."""
        key = partition_key(topic, partition)
        self.offsets[key] = max(self.offsets.get(key, 0), offset + 1)

    def serialize(self) -> str:
        obj: dict[str, Any] = {"v": CURSOR_VERSION, "offsets": dict(sorted(self.offsets.items()))}
        if self.topic_ids:
            obj["topic_ids"] = dict(sorted(self.topic_ids.items()))
        if self.seen.ids or self.seen.floor:
            obj["seen"] = self.seen.ids
            obj["floor"] = self.seen.floor
        if self.baselines.points:
            obj["hedged"] = self.baselines.points
        return json.dumps(obj, separators=(",", ":"), sort_keys=True)


# --------------------------------------------------------------------------- tick account


@dataclass
class TickTally:
    """What one tick did, for the operator: read = acted + parked + ignored."""

    read: int = 0
    acted: int = 0
    parked: int = 0
    ignored: int = 0
    lag: dict[str, int | None] = field(default_factory=dict)
    stopped_early: bool = False
    limit: str = ""  # the per-tick limit that ended the read before the batch bound, if one did
    paused: int = 0  # of `ignored`: would have started a rebalance/hedge, but trading is paused
    # of `ignored`: asked for a rebalance while one requested by an event still waits to start
    # (it plans from the balances at its start, so it covers this event too)
    coalesced: int = 0

    def text(self) -> str:
        lag = ", ".join(f"{key}: {'?' if value is None else value}" for key, value in sorted(self.lag.items()))
        tail = ", returned early for a critical event" if self.stopped_early else ""
        if self.paused:
            tail += f", {self.paused} not acted on because trading is paused"
        if self.coalesced:
            tail += f", {self.coalesced} left to the rebalance already waiting to start"
        if self.limit:
            tail += f", stopped at the {self.limit} limit (the rest is read next tick)"
        return (
            f"read {self.read}, acted {self.acted}, parked {self.parked}, ignored {self.ignored}, "
            f"lag {{{lag}}}{tail}"
        )


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
