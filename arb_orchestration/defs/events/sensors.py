"""The Kafka-triggered sensors: market shocks, capital thresholds, funding-rate deviations.

One shape for all three (see docs/sensors.md):

1. Read the cursor (offsets per topic-partition, recent critical event ids,
   funding baselines). Assign exactly those offsets; partitions the cursor does
   not know (new ones included) start at the earliest offset.
2. Read a bounded batch: at most `max_messages`, for at most the long poll
   (market/capital: wait for events, return at once on a critical one) or until
   caught up with the high watermarks seen at the start (funding). Messages come
   in chunks (`consume`), are parsed a chunk at a time (`iter_events`), and the
   cursor moves per chunk over the messages actually handled.
3. Each message is parsed and admitted by `domain.triggers`; what does not parse,
   validate or authenticate is parked on `<topic>.dlq` with the reason. Refused
   critical events also raise an alert (ERROR log + mail to the risk team); the
   funding topic carries no critical events, so its sensor never mails and does
   not need the mail resource.
4. Parked messages are produced and flushed; only then is the new cursor
   returned with the run requests. `run_key` is the event id, so an event read
   twice (a failed tick, a redelivery) never starts a second run.
5. The topic's id (Kafka's topic UUID) is asked for, without waiting, when the
   read starts, and compared with the cursor's before the tick returns: another
   id means the topic was deleted and recreated, so the cursor's offsets (and
   what was read at them) mean nothing there. The tick then drops what it read
   and returns the cursor with every partition of the topic back at the earliest
   offset (see `_restart_recreated_topic`).

Kafka unreachable: the tick raises, Dagster keeps the old cursor, nothing is lost.
Bad input never makes a tick raise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from arb_orchestration.defs.events.config import TriggerEventConfig, event_run_config
from arb_orchestration.defs.events.daemon_loop import LoopClock
from arb_orchestration.defs.events.kafka_source import (
    MAX_DLQ_MESSAGE_BYTES,
    TOPIC_ID_WAIT_SECONDS,
    Parked,
    Record,
    TopicIdAnswer,
    describe_landed,
    open_topic_read,
    park_all,
    request_topic_id,
)
from arb_orchestration.defs.events.tuning import EventSensorSettings, EventTopics
from arb_orchestration.defs.hedging.baselines import (
    baseline_keys,
    hedge_request_outcomes,
    overlay_hedge_baselines,
    sensor_instance,
)
from arb_orchestration.defs.k8s import HEDGE_JOB, JOB_TAG, PRIORITY_TAG, REBALANCE_SAGA_LANE, SAGA_TAG
from arb_orchestration.domain.events import (
    CAPITAL_EVENTS,
    FUNDING_RATE_EVENTS,
    MARKET_EVENTS,
    CapitalThresholdEvent,
    Event,
    EventRejected,
    FundingRateEvent,
    FundingChunkScan,
    FundingScreen,
    MarketShockEvent,
    canonical_payload,
    dlq_topic,
    encode_dlq_envelope,
    iter_events,
    parse_event,
)
from arb_orchestration.domain.funding import FundingDeviation
from arb_orchestration.domain.triggers import (
    Action,
    AdmissionCheck,
    AdmissionPolicy,
    NewestPerMarket,
    SensorCursor,
    TickTally,
    TopicIdVerdict,
    admit_event,
    decide_hedges,
    partition_key,
    route_event,
    run_key_problem,
    utc_now,
)
from arb_orchestration.saga.kill_switch import (
    NEVER_PAUSED,
    TRADING_PAUSE_KEY,
    InstanceTradingSwitch,
    TradingPause,
    parse_state,
)

log = logging.getLogger("arb_orchestration.defs.events")

MARKET_SHOCK_SENSOR = "market_shock_sensor"
CAPITAL_THRESHOLD_SENSOR = "capital_threshold_sensor"
FUNDING_DEVIATION_SENSOR = "funding_deviation_sensor"

# Tags every sensor run carries, and the per-job ones the instance's limits key on
# (arb_orchestration/sim/dagster_local.yaml: one hedge, one rebalancing saga at a time).
TRIGGER_TAG, EVENT_ID_TAG, SOURCE_TAG = "arb/trigger", "arb/event_id", "arb/source"
# A fingerprint of the event (`_event_digest`): tells a producer's duplicate from a new event reusing the id.
EVENT_DIGEST_TAG = "arb/event_digest"
# (JOB_TAG, SAGA_TAG, PRIORITY_TAG and the lane values come from defs/k8s.py, like the jobs' own tags.)

# What handling one funding message the screen did not take tells the chunk loop.
_GO_ON, _AFTER, _BEFORE = object(), object(), object()
_UNREAD = object()  # the tick has not asked the kill switch yet
_ALERTING_TOPICS = frozenset({MARKET_EVENTS, CAPITAL_EVENTS})  # the topics that carry critical events
_KINDS = {MarketShockEvent: "market_shock", CapitalThresholdEvent: "capital_threshold", FundingRateEvent: "funding_rate"}
_LOGGED_PER_TICK = 10  # individual log lines per tick and kind; the rest are counted
# Messages per `consume()` call: the chunk parsed, admitted and moved over in one go.
# Small enough that the read deadline and a critical event's early return are noticed
# within milliseconds (a chunk of valid events takes ~1-3 ms to handle); 500 rather than
# 1,000 because less of it is alive at once (CPU caches, fewer objects for the garbage
# collector to promote): funding ticks +15-20% (alternated runs, 4 of 4).
CHUNK_MESSAGES = 500

RunConfigBuilder = Callable[[Any, TriggerEventConfig], Mapping[str, Any]]


@dataclass
class _Tick:
    """What one evaluation collected before it returns."""

    cursor: SensorCursor
    tally: TickTally = field(default_factory=TickTally)
    run_requests: list[RunRequest] = field(default_factory=list)
    parked: list[Parked] = field(default_factory=list)
    parked_bytes: int = 0
    refused_critical: list[str] = field(default_factory=list)
    newest: NewestPerMarket | None = None  # funding: the newest admitted rate per market, with its message
    logged: dict[str, int] = field(default_factory=dict)
    stop: bool = False  # a critical event or a per-tick limit ended the read
    pause: Any = _UNREAD  # the kill switch's reason while trading is paused, None if not; read once, when needed
    # An event-requested rebalance that has not started yet (its run id, or "requested in this
    # tick"), None if there is none; looked up once, when an event asks for a rebalance.
    waiting_rebalance: Any = _UNREAD

    def should_log(self, kind: str) -> bool:
        self.logged[kind] = self.logged.get(kind, 0) + 1
        return self.logged[kind] <= _LOGGED_PER_TICK

    def ignore(self, context, kind: str, line: Callable[[], str]) -> None:
        """Count a message read but not acted on; log `line()` for the first few of each `kind`."""
        self.tally.ignored += 1
        if self.should_log(kind):
            context.log.info(line())


@dataclass(frozen=True)
class _Spec:
    name: str
    topic: str  # physical
    logical_topic: str
    long_poll_seconds: float
    stop_on_critical: bool


def _event_digest(event: Event) -> str:
    """A fingerprint of the event as validated (signature left out): equal for the same event produced twice."""
    return hashlib.sha256(canonical_payload(event.model_dump(mode="json"))).hexdigest()[:32]


class _EventSensor:
    """The evaluation shared by the three sensors; `logical_topic` picks the decisions."""

    def __init__(
        self,
        spec: _Spec,
        *,
        jobs: Mapping[Action, Any],
        settings: EventSensorSettings,
        run_config: RunConfigBuilder,
        alert_resource_key: str | None,
    ):
        self.spec = spec
        self.jobs = jobs
        self.settings = settings
        self.run_config = run_config
        self.alert_resource_key = alert_resource_key
        self.policy = AdmissionPolicy(window=settings.critical_window, max_age_seconds=settings.event_max_age_seconds)
        self.loop_clock = LoopClock()  # when this sensor's recent ticks started, daemon side
        self.deviation = FundingDeviation(
            threshold_bps=settings.funding_deviation_bps, trigger_without_baseline=settings.hedge_without_baseline
        )
        # Funding: the common chunk in one C pass (None: the chunk takes the Python path), and the
        # bulk validator, specialised to the venues and symbols this sensor has seen.
        self.scan = FundingChunkScan()
        self.screen = FundingScreen()

    # ------------------------------------------------------------------ evaluation

    def __call__(self, context: SensorEvaluationContext) -> SensorResult:
        spec, settings = self.spec, self.settings
        started, entered = time.monotonic(), time.time()
        kafka = context.resources.kafka
        tick = _Tick(cursor=SensorCursor.parse(context.cursor))
        funding = spec.logical_topic == FUNDING_RATE_EVENTS
        if funding:
            tick.newest = NewestPerMarket(max_markets=settings.max_run_requests)
        take = self._take_funding if funding else self._take_routed
        polling = spec.long_poll_seconds > 0
        if polling:
            # Read until just before the daemon's next loop iteration (daemon_loop.py), or for
            # long_poll_seconds when its phase is not known yet.
            poll = self.loop_clock.long_poll(
                now=entered,
                previous_tick=context.last_tick_completion_time,
                reserve=settings.loop_reserve_seconds or None,
                fallback=spec.long_poll_seconds,
            )
            read_for = poll.seconds
        else:
            poll, read_for = None, settings.max_read_seconds
        offsets = {
            int(key.rsplit("/", 1)[1]): offset
            for key, offset in tick.cursor.offsets.items()
            if key.rsplit("/", 1)[0] == spec.topic
        }
        recreated: tuple[str, str] | None = None  # (old id, new id) when the topic turns out to be another one
        with open_topic_read(
            owner=spec.name,
            topic=spec.topic,
            config=kafka.consumer_config(),
            offsets=offsets,
            metadata_timeout=settings.metadata_timeout_seconds,
        ) as read:
            if read is None:
                message = (
                    f"topic {spec.topic} does not exist: nothing to read "
                    f"(create it with `arb-orchestration topics create`)"
                )
                context.log.warning(message)
                return SensorResult(skip_reason=message, cursor=context.cursor)
            # Which topic is this now? Asked without waiting: the answer is taken after the read.
            topic_id = request_topic_id(
                owner=spec.name, topic=spec.topic, config=kafka.admin_config(), controller_known=read.controller_known
            )
            for warning in read.warnings:
                context.log.warning(warning)
            # Where reading really starts (a cursor past the end or behind retention was corrected).
            for partition, start in read.start_offsets.items():
                key = partition_key(spec.topic, partition)
                if start < 0:
                    tick.cursor.offsets.pop(key, None)
                else:
                    tick.cursor.offsets[key] = start
            deadline = started + read_for
            signing_key = kafka.signing_key
            while tick.tally.read < settings.max_messages and not tick.stop:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                want = min(settings.max_messages - tick.tally.read, CHUNK_MESSAGES)
                if polling:
                    # Take what is fetched; if nothing is, wait for the first message only, so
                    # a lone critical event is handled the moment it arrives.
                    batch = read.consume(want, 0.0) or read.consume(1, remaining)
                else:
                    behind = read.behind()
                    if behind <= 0:
                        break
                    want = min(want, behind)
                    # Funding chunks are checked for error events by `_take_funding` (see there).
                    check = not funding
                    batch = read.consume(want, 0.0, check=check) or read.consume(
                        want, min(remaining, 0.2), check=check
                    )
                if not batch:
                    continue
                handled = take(context, tick, batch, signing_key, read)
                if handled:
                    # The cursor moves over what was handled, never past it (the rest of a chunk
                    # cut short is read again next tick).
                    done = batch if handled == len(batch) else batch[:handled]
                    for partition, next_offset in read.mark_read(done).items():
                        tick.cursor.advance(spec.topic, partition, next_offset - 1)
                    tick.tally.read += handled
            next_offsets = {p: tick.cursor.offsets.get(partition_key(spec.topic, p)) for p in read.partitions}
            lag = read.lag(next_offsets)
            tick.tally.lag = {partition_key(spec.topic, p): value for p, value in lag.items()}
            if read.errors.transport:
                context.log.warning(
                    f"{read.errors.transport} Kafka connection error(s) during the tick (last: {read.errors.last})"
                )
            recreated = self._check_topic_id(context, tick, topic_id.answer(topic_id.issued + TOPIC_ID_WAIT_SECONDS))
            if recreated is not None:
                read.release()  # what the consumer holds was fetched at the old offsets
        if recreated is not None:
            return self._restart_recreated_topic(context, tick, *recreated, started=started)
        if tick.newest is not None and tick.newest.offered:
            self._decide_hedges(context, tick)
        # Parked messages are safe on the DLQ before the cursor moves past them.
        landed = park_all(kafka.producer_config(), tick.parked, settings.dlq_timeout_seconds)
        if landed:
            context.log.info(f"parked {len(landed)} message(s) on {describe_landed(landed)} "
                             f"(arb-orchestration replay-dlq <dlq topic> --partition P --offset N)")
        if tick.refused_critical:
            self._alert(context, tick.refused_critical)
        tick.cursor.seen.prune(utc_now().timestamp(), settings.critical_window)
        summary = f"{spec.topic}: {tick.tally.text()} in {time.monotonic() - started:.2f}s"
        if poll is not None:
            summary += f" (long poll {poll.seconds:.2f}s: {poll.reason})"
        context.log.info(summary)
        return SensorResult(
            run_requests=tick.run_requests,
            skip_reason=None if tick.run_requests else summary,
            cursor=tick.cursor.serialize(),
        )

    # ------------------------------------------------------------------ topic identity

    def _check_topic_id(self, context, tick: _Tick, answer: TopicIdAnswer) -> tuple[str, str] | None:
        """Compare the topic's id with the cursor's; (old id, new id) when the topic was recreated.

        An unknown id (no answer in time, an error) keeps the cursor's and is checked
        again next tick: the tick is not held for it, and a Kafka that cannot be reached
        at all has already failed the tick (the read's metadata request).
        """
        topic = self.spec.topic
        known = tick.cursor.topic_ids.get(topic)
        if answer.topic_id is None:
            line = (
                f"{topic}: topic id not checked this tick ({answer.problem}); the cursor keeps "
                f"{'id ' + known if known else 'no id'}, checked again next tick. Until it is, a topic deleted "
                "and recreated with at least as many messages as the cursor's offsets is not noticed"
            )
            if answer.quiet:
                log.debug(line)
            else:
                context.log.warning(line)
            return None
        verdict = tick.cursor.check_topic_id(topic, answer.topic_id)
        if verdict is TopicIdVerdict.ADOPTED:
            context.log.info(
                f"{topic}: topic id {answer.topic_id} recorded in the cursor (it had none for this topic: a cursor "
                "from before topic ids, or a first tick; nothing to compare against yet)"
            )
        elif verdict is TopicIdVerdict.RECREATED:
            assert known is not None
            return known, answer.topic_id
        return None

    def _restart_recreated_topic(self, context, tick: _Tick, old_id: str, new_id: str, *, started: float) -> SensorResult:
        """The topic was deleted and recreated: read it again from the earliest offsets, next tick.

        Everything this tick did is dropped, and the cursor returned is the one the tick
        started from with the topic's offsets removed and the new id. The messages read
        came from the new topic but at the old topic's offsets (the ones below were never
        read), and the tick's other effects cannot be kept apart from them: a critical
        event admitted now would sit in the replay memory and be refused as a replay when
        it is read again; a funding rate would move a hedge baseline. Read again from the
        start next tick, every event is handled once in offset order; one already acted on
        (the topic was recreated during an earlier tick) asks again under the same run key,
        which Dagster skips. Nothing is parked and no alert is sent: the next tick parks
        and alerts what it reads.
        """
        topic = self.spec.topic
        cursor = SensorCursor.parse(context.cursor)
        before = dict(cursor.offsets)
        dropped = ", ".join(f"{key}: {before[key]}" for key in cursor.restart_topic(topic, new_id)) or "none"
        context.log.warning(
            f"topic {topic} was deleted and recreated: its id is {new_id}, the cursor's was {old_id}. The cursor's "
            f"offsets ({dropped}) "
            f"belong to the old topic: every partition is read again from the earliest offset next tick. The "
            f"{tick.tally.read} message(s) read in this tick at those offsets are dropped ({len(tick.run_requests)} "
            f"run request(s), {tick.tally.parked} parked message(s) not sent; run keys stop duplicate runs)"
        )
        summary = (
            f"{topic}: topic recreated (id {old_id} -> {new_id}): {tick.tally.read} message(s) read at the old "
            f"offsets dropped, every partition read again from the earliest offset next tick, "
            f"in {time.monotonic() - started:.2f}s"
        )
        context.log.info(summary)
        return SensorResult(run_requests=[], skip_reason=summary, cursor=cursor.serialize())

    # ------------------------------------------------------------------ per chunk

    def _take_routed(self, context, tick: _Tick, batch: list[Any], signing_key: str | None, read: Any) -> int:
        """Market/capital: handle a chunk in order; returns how many messages were handled.

        Stops after a message that produced a stop-loss request (the tick returns
        at once) or that reached a per-tick limit; the messages after it are not
        handled and stay for the next tick.
        """
        events = iter_events(self.spec.logical_topic, [msg.value() for msg in batch], max_bytes=self.settings.max_event_bytes)
        for index, event in enumerate(events):
            if self._on_event(context, tick, batch[index], event, signing_key):
                tick.stop = True
                return index + 1
        return len(batch)

    def _on_event(self, context, tick: _Tick, msg: Any, event: Event | EventRejected, signing_key: str | None) -> bool:
        """Handle one market/capital message; True when the tick must stop after it."""
        if isinstance(event, EventRejected):
            return self._park(context, tick, _parked(msg), event.reason, critical=_claims_critical(msg.value()))
        if (problem := run_key_problem(event.event_id)) is not None:
            return self._park(context, tick, _parked(msg), problem, critical=event.is_critical)
        admission = admit_event(event, signing_key, tick.cursor.seen, now=utc_now(), policy=self.policy)
        if not admission.admitted:
            if admission.stale:
                tick.ignore(context, "stale", lambda: (
                    f"{Record.of(msg).source}: event {event.event_id} not acted on: {admission.reason}"))
                return False
            return self._park(context, tick, _parked(msg), admission.reason, critical=event.is_critical, event=event)
        route = route_event(event)
        if route.action is Action.NONE:
            tick.ignore(context, "none", lambda: f"{Record.of(msg).source}: event {event.event_id}: {route.reason}: no action")
            return False
        record = Record.of(msg)
        if route.action is not Action.STOP_LOSS:
            paused = self._trading_pause(context, tick)
            if paused is not None:
                # A rebalance would only refuse to start (its first step fails while paused): say so
                # here instead of queueing failed runs. A critical event still stops everything.
                tick.tally.paused += 1
                tick.ignore(context, "paused", lambda: (
                    f"{record.source}: event {event.event_id}: {route.reason}: not acted on, trading is paused ({paused})"))
                return False
        if route.action is Action.REBALANCE and self.settings.coalesce_rebalances:
            waiting = self._waiting_rebalance(context, tick)
            if waiting is not None:
                # A rebalance plans from the balances when it starts: one still waiting covers this
                # event too, and a second one would only queue behind it (one at a time) and re-plan.
                tick.tally.coalesced += 1
                tick.ignore(context, "coalesced", lambda: (
                    f"{record.source}: event {event.event_id}: {route.reason}: left to the rebalance "
                    f"already waiting to start ({waiting})"))
                return False
        run_key = self._stop_loss_run_key(context, event, record) if route.action is Action.STOP_LOSS else None
        tick.run_requests.append(self._request(route.action, event, record, route.reason, run_key=run_key))
        tick.tally.acted += 1
        if route.action is Action.REBALANCE:
            tick.waiting_rebalance = f"requested in this tick for event {event.event_id}"
        context.log.info(f"{record.source}: event {event.event_id}: {route.reason} -> {self.jobs[route.action].name}")
        if route.action is Action.STOP_LOSS and self.spec.stop_on_critical:
            tick.tally.stopped_early = True
            return True
        if len(tick.run_requests) >= self.settings.max_run_requests:
            tick.tally.limit = f"{self.settings.max_run_requests} run requests per tick"
            return True
        return False

    def _take_funding(self, context, tick: _Tick, batch: list[Any], signing_key: str | None, read: Any) -> int:
        """Funding: park what is bad, keep the newest admitted rate per market; returns messages handled.

        Most messages are valid, unsigned, fresh rates:
        `FundingChunkScan` (C, `domain/_fastfunding.c`) takes such a chunk whole in
        one pass and names each market's newest rate (`offer_scanned`); it
        declines a chunk with anything else in it, which then goes on as follows.
        `FundingScreen` (the
        sensor's `screen_funding_rates` that knows the venues and symbols seen)
        validates a whole chunk of them (msgspec, against the model's own fields)
        without building events. A chunk that is all such rates, all inside the
        admission age limit, is handed to `NewestPerMarket.offer_fresh_rows` in one go
        (no Python step per message). Otherwise each message costs a comparison
        and a dict lookup (`offer_rows`) and anything the screen did not take goes
        the full path: `parse_event`, admission, the DLQ. The events of the few
        rates kept are built after the read (`_decide_hedges`).

        The chunk comes unchecked for error events (`TopicRead.consume(check=False)`):
        a chunk the screen takes whole holds none (an error event's value is
        librdkafka's error text, or None), so only the others are checked, before
        any message is handled.
        """
        # A comprehension, not `map(methodcaller('value'))`: 3.11 calls the method directly (0.04 vs 0.12 us).
        values = [msg.value() for msg in batch]
        admit = AdmissionCheck(signing_key, tick.cursor.seen, now=utc_now(), policy=self.policy)
        newest = tick.newest
        assert newest is not None
        # Rates later than the admission age limit are admitted as they are (AdmissionCheck's shortcut).
        max_bytes = self.settings.max_event_bytes
        winners = self.scan(values, fresher_than=admit.fresh_after_epoch, max_bytes=max_bytes)
        if winners is not None and newest.offer_scanned(winners, batch):
            return len(batch)
        rows = self.screen(values, max_bytes=max_bytes)
        if newest.offer_fresh_rows(rows, batch, fresher_than=admit.fresh_after_epoch):
            return len(batch)
        read.check_errors(batch)
        index = 0
        while True:
            index = newest.offer_rows(rows, batch, fresher_than=admit.fresh_after_epoch, start=index)
            if index == len(batch):
                return index
            row = rows[index]
            if row is not None and row.ts > admit.fresh_after_epoch:
                return self._markets_full(tick, index)  # offer_rows stopped at a market beyond the bound
            outcome = self._funding_full_path(context, tick, batch[index], values[index], admit)
            if outcome is _AFTER:
                tick.stop = True
                return index + 1
            if outcome is _BEFORE:
                return self._markets_full(tick, index)
            index += 1

    def _funding_full_path(self, context, tick: _Tick, msg: Any, value: bytes | None, admit: AdmissionCheck) -> object:
        """One funding message the screen did not take; returns _GO_ON, _AFTER (stop after it) or _BEFORE."""
        try:
            event = parse_event(FUNDING_RATE_EVENTS, value, max_bytes=self.settings.max_event_bytes)
        except EventRejected as exc:
            if _claims_critical(value):
                # No funding event is critical: this is probably a market/capital event sent to
                # the wrong topic. Say so loudly; the emergency sensors never see it.
                context.log.error(
                    f"{Record.of(msg).source}: a message that says it is critical was parked from the funding "
                    f"topic (no funding event is critical: was it meant for {MARKET_EVENTS} or {CAPITAL_EVENTS}?)"
                )
            return _AFTER if self._park(context, tick, _parked(msg), exc.reason, critical=False) else _GO_ON
        admission = admit(event)
        if not admission.admitted:
            if admission.stale:
                tick.ignore(context, "stale", lambda: (
                    f"{Record.of(msg).source}: event {event.event_id} not acted on: {admission.reason}"))
                return _GO_ON
            parked = self._park(context, tick, _parked(msg), admission.reason, critical=False, event=event)
            return _AFTER if parked else _GO_ON
        assert tick.newest is not None
        return _GO_ON if tick.newest.offer(event, msg) else _BEFORE

    def _markets_full(self, tick: _Tick, index: int) -> int:
        """A rate for one market more than a tick may hedge: stop before it (it is read next tick)."""
        tick.tally.limit = f"{self.settings.max_run_requests} markets per tick"
        tick.stop = True
        return index

    def _decide_hedges(self, context, tick: _Tick) -> None:
        assert tick.newest is not None
        newest = []
        for msg in tick.newest.newest():  # the message of each market's newest rate: build its event
            event = parse_event(FUNDING_RATE_EVENTS, msg.value(), max_bytes=self.settings.max_event_bytes)
            if not isinstance(event, FundingRateEvent):
                raise TypeError(f"{Record.of(msg).source}: a kept funding rate parsed as {type(event).__name__}")
            if (problem := run_key_problem(event.event_id)) is not None:
                # Only a kept rate can become a run: the rest never reach a run key. (Parked before
                # park_all runs, like everything else this tick parks.)
                self._park(context, tick, _parked(msg), problem, critical=False)
                continue
            newest.append((event, msg))
        superseded = tick.newest.superseded
        tick.tally.ignored += superseded
        markets = [(event.venue, event.symbol) for event, _ in newest]
        instance = sensor_instance(context)
        values = None
        if instance is not None and tick.pause is _UNREAD:
            # One key-value read for the kill switch and the markets' hedge baselines (two
            # separate reads cost a second database round trip every tick).
            values = instance.run_storage.get_cursor_values({TRADING_PAUSE_KEY} | baseline_keys(markets))
            self._note_pause(tick, parse_state(values.get(TRADING_PAUSE_KEY)))
        paused = self._trading_pause(context, tick)
        if paused is not None:
            # No hedge while trading is paused, and no baseline moves: after the resume the
            # deviation is still measured from the rate of the last real hedge.
            tick.tally.ignored += len(newest)
            tick.tally.paused += len(newest)
            context.log.info(f"{len(newest)} newest funding rate(s) not compared: trading is paused ({paused})")
            return
        messages = {id(event): msg for event, msg in newest}
        baselines = tick.cursor.baselines
        pending = baselines.pending_event_ids()
        if pending and instance is not None:
            # A requested hedge counts as the baseline only once its run succeeded: a failed or
            # canceled one falls back to the last confirmed baseline (one runs query per tick).
            outcomes = hedge_request_outcomes(
                instance, self.jobs[Action.HEDGE].name, pending, event_id_tag=EVENT_ID_TAG
            )
            for key, outcome in baselines.settle_pending(outcomes, now=time.time()).items():
                if outcome != "succeeded":
                    context.log.info(f"{key}: the hedge requested at its rate {outcome}: back to the last hedged rate")
        # Hedge runs (schedule, UI, this sensor) record the rates they hedged at; newer ones reset the baseline.
        overlay_hedge_baselines(instance, baselines, markets, values=values)
        for decision in decide_hedges([event for event, _ in newest], baselines, self.deviation):
            record = Record.of(messages[id(decision.event)])
            if decision.hedge:
                tick.run_requests.append(self._request(Action.HEDGE, decision.event, record, decision.reason))
                tick.tally.acted += 1
                context.log.info(f"{record.source}: event {decision.event.event_id}: {decision.reason} -> hedge")
            else:
                tick.ignore(context, "within", lambda: f"{record.source}: {decision.reason}: no hedge")
        if superseded:
            context.log.info(f"{superseded} funding rate(s) superseded by a newer one for the same market in this batch")

    def _trading_pause(self, context, tick: _Tick) -> str | None:
        """The kill switch's reason when trading is paused, else None; read once per tick (when needed)."""
        if tick.pause is _UNREAD:
            instance = sensor_instance(context)
            self._note_pause(tick, InstanceTradingSwitch(instance).get() if instance is not None else NEVER_PAUSED)
        return tick.pause  # type: ignore[return-value]

    def _waiting_rebalance(self, context, tick: _Tick) -> str | None:
        """An event-requested rebalance run that has not started yet (how to name it), else None.

        Only runs this sensor family requested (`arb/trigger=event`, the sensors' run
        config): a rebalance an operator queued by hand may be a dry run or use
        another policy, so it never absorbs an event. Read once per tick.
        """
        if tick.waiting_rebalance is _UNREAD:
            tick.waiting_rebalance = None
            instance = sensor_instance(context)
            if instance is not None:
                waiting = instance.get_runs(
                    filters=RunsFilter(
                        job_name=self.jobs[Action.REBALANCE].name,
                        statuses=[DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED],
                        tags={TRIGGER_TAG: "event"},
                    ),
                    limit=1,
                )
                if waiting:
                    tick.waiting_rebalance = f"run {waiting[0].run_id}, {waiting[0].status.value.lower()}"
        return tick.waiting_rebalance  # type: ignore[return-value]

    @staticmethod
    def _note_pause(tick: _Tick, state: TradingPause) -> None:
        tick.pause = (state.reason or "no reason given") if state.paused else None

    # ------------------------------------------------------------------ outputs

    def _stop_loss_run_key(self, context, event: Event, record: Record) -> str:
        """The event id, unless a run of this sensor already holds it for another message.

        Dagster skips a request whose run key any run of the same sensor has, whatever its
        job. That is what keeps a re-read message (same topic/partition/offset: a cursor not
        saved) to one run, and it must not swallow a stop-loss for another message:
        - a warning that started a rebalance under id X, then a critical event reusing X (a
          producer reusing an incident id; an unsigned event needs no key to write): the
          stop-loss gets `X:<job>`;
        - an earlier stop-loss under X, then a new signed critical event with a fresh timestamp
          reusing X past the replay window (replays are refused before this: stale or seen):
          it gets `X@<topic/partition/offset>`. The same event produced twice (equal digests,
          `arb/event_digest`, at another offset) keeps X: one run per event.
        Both are the same on every re-read of that message, so each message still runs once;
        both are logged at ERROR. One lookup, on stop-loss requests only.
        """
        instance = sensor_instance(context)
        if instance is None:
            return event.event_id
        job_name = self.jobs[Action.STOP_LOSS].name
        # Dagster's own tag names (dagster/_core/storage/tags.py: RUN_KEY_TAG, SENSOR_NAME_TAG).
        taken = instance.get_runs(
            filters=RunsFilter(tags={"dagster/run_key": event.event_id, "dagster/sensor_name": self.spec.name}), limit=5
        )
        stop_losses = [run for run in taken if run.job_name == job_name]
        if any(run.tags.get(SOURCE_TAG) == record.source for run in stop_losses):
            return event.event_id  # this very message, read again: its run holds the key (Dagster skips it)
        digest = _event_digest(event)
        if any(run.tags.get(EVENT_DIGEST_TAG) == digest for run in stop_losses):
            return event.event_id  # the same event produced twice (a producer retry): one run per event
        if stop_losses:
            run_key = f"{event.event_id}@{record.source}"
            context.log.error(
                f"critical event {event.event_id} at {record.source}: a stop-loss run of this sensor already has run "
                f"key {event.event_id!r} for another message ({stop_losses[0].tags.get(SOURCE_TAG, '?')}); this new "
                f"signed event reuses the id, so the stop-loss is requested as {run_key!r}"
            )
            return run_key
        others = sorted({run.job_name for run in taken})
        if not others:
            return event.event_id
        run_key = f"{event.event_id}:{job_name}"
        context.log.error(
            f"critical event {event.event_id}: a {', '.join(others)} run of this sensor already has run key "
            f"{event.event_id!r} (an earlier event reused the id); the stop-loss is requested as {run_key!r}"
        )
        return run_key

    def _request(
        self, action: Action, event: Event, record: Record, reason: str, *, run_key: str | None = None
    ) -> RunRequest:
        job = self.jobs[action]
        trigger = TriggerEventConfig(
            event_id=event.event_id,
            topic=self.spec.logical_topic,
            source=record.source,
            kind=_KINDS[type(event)],
            critical=event.is_critical,
            reason=reason,
            payload=event.model_dump(mode="json", exclude={"signature"}),
        )
        tags = {TRIGGER_TAG: "event", EVENT_ID_TAG: event.event_id, SOURCE_TAG: record.source}
        if action is Action.STOP_LOSS:
            tags[PRIORITY_TAG] = str(self.settings.stop_loss_priority)
            tags[EVENT_DIGEST_TAG] = _event_digest(event)  # read by `_stop_loss_run_key`
        elif action is Action.REBALANCE:
            tags[SAGA_TAG] = REBALANCE_SAGA_LANE
        elif action is Action.HEDGE:
            tags[JOB_TAG] = HEDGE_JOB
        return RunRequest(
            run_key=run_key or event.event_id,
            job_name=job.name,
            run_config=dict(self.run_config(job, trigger)),
            tags=tags,
        )

    def _park(
        self, context, tick: _Tick, record: Record, reason: str, *, critical: bool, event: Event | None = None
    ) -> bool:
        """Queue `record` for the DLQ with `reason`; True when the tick's DLQ byte bound is reached."""
        where = dict(topic=record.topic, partition=record.partition, offset=record.offset,
                     timestamp_ms=record.timestamp_ms, key=record.key, headers=record.headers)
        envelope = encode_dlq_envelope(value=record.value, reason=reason, **where)
        if len(envelope) > MAX_DLQ_MESSAGE_BYTES:
            # The value is in the envelope twice (base64 for replay, text for people): drop the text first.
            envelope = encode_dlq_envelope(value=record.value, reason=reason, with_text=False, **where)
        if len(envelope) > MAX_DLQ_MESSAGE_BYTES:
            size = len(record.value or b"")
            envelope = encode_dlq_envelope(
                value=None,
                reason=f"{reason} [original value of {size} bytes not copied: too large for the DLQ; "
                f"it stays at {record.source} until retention]",
                **where,
            )
        tick.parked.append(Parked(dlq_topic(record.topic), record.source.encode(), envelope))
        tick.parked_bytes += len(envelope)
        tick.tally.parked += 1
        what = f"event {event.event_id}" if event is not None else "message"
        if critical:
            line = f"{record.source}: critical {what} refused: {reason}"
            tick.refused_critical.append(line)
            context.log.error(f"{line}; parked on {dlq_topic(record.topic)}, no stop-loss requested")
        elif tick.should_log("parked"):
            context.log.warning(f"{record.source}: {what} parked on {dlq_topic(record.topic)}: {reason}")
        bound = self.settings.max_parked_bytes
        if tick.parked_bytes >= bound:
            size = f"{bound / 2**20:g} MiB" if bound >= 2**20 else f"{bound:,} bytes"
            tick.tally.limit = f"{size} of DLQ envelopes per tick"
            return True
        return False

    def _alert(self, context, lines: list[str]) -> None:
        subject = f"[arb] {len(lines)} critical event(s) refused on {self.spec.topic}"
        body = (
            f"The {self.spec.name} refused {len(lines)} critical event(s); no stop-loss was requested for them.\n"
            f"Each one is parked on {dlq_topic(self.spec.topic)} with its reason.\n\n"
            + "\n".join(lines[:50])
            + (f"\n... and {len(lines) - 50} more" if len(lines) > 50 else "")
        )
        smtp = getattr(context.resources, self.alert_resource_key, None) if self.alert_resource_key else None
        if smtp is None or not hasattr(smtp, "send"):
            context.log.error(f"ALERT (no mail resource to send it): {subject}")
            return
        context.log.error(f"ALERT: {subject}; mailing the risk team")
        send_alert_in_background(smtp, subject, body)


def _parked(msg: Any) -> Record:
    """The record of a message about to be parked: with its headers, which replay puts back."""
    return Record.of(msg, with_headers=True)


def _claims_critical(value: bytes | None) -> bool:
    """Does an unparseable message say it is critical? (Alert on it: the emergency path may be broken.)"""
    if not value or len(value) > 1_000_000:
        return False
    try:
        obj = json.loads(value)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; RecursionError: nested too deeply
        return False
    return isinstance(obj, dict) and "critical" in (obj.get("severity"), obj.get("level"))


# --------------------------------------------------------------------------- alerts

_alert_threads: list[threading.Thread] = []


def send_alert_in_background(smtp: Any, subject: str, body: str) -> threading.Thread:
    """Mail without holding the tick: SMTP retries can take longer than a tick may.

    A failure is logged at ERROR with its exception and never reaches the sensor.
    """

    def deliver() -> None:
        try:
            smtp.send(subject, body)
        except Exception:
            log.error("could not mail the alert %r to the risk team", subject, exc_info=True)

    thread = threading.Thread(target=deliver, name="arb-sensor-alert", daemon=True)
    thread.start()
    _alert_threads[:] = [t for t in _alert_threads if t.is_alive()] + [thread]
    return thread


def wait_for_alerts(timeout: float = 30.0) -> bool:
    """Join the alert mails still being sent (tests, shutdown); True when all finished."""
    deadline = time.monotonic() + timeout
    for thread in list(_alert_threads):
        thread.join(max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t in _alert_threads)


# --------------------------------------------------------------------------- factory


def build_event_sensors(
    *,
    rebalance_job: Any,
    stop_loss_job: Any,
    hedge_job: Any,
    settings: EventSensorSettings | None = None,
    topics: EventTopics | None = None,
    run_config: RunConfigBuilder = event_run_config,
    alert_resource_key: str | None = "smtp",
    name_prefix: str = "",
    default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
) -> list[SensorDefinition]:
    """The three event sensors, targeting the given jobs.

    `rebalance_job`/`stop_loss_job`/`hedge_job` are job definitions (the real
    sagas, placeholders, or a test's own jobs). `topics` names the physical
    topics (unique ones per test); `run_config(job, trigger)` builds a run's
    config from its `TriggerEventConfig` (default: hand it to each op of the job
    that takes one). The sensors need the `kafka` resource and, for alerts, the
    market and capital sensors the resource named `alert_resource_key` (an
    object with `send(subject, body)`); the funding sensor never alerts.
    """
    settings = settings or EventSensorSettings()
    topics = topics or EventTopics()
    routing_jobs = {Action.REBALANCE: rebalance_job, Action.STOP_LOSS: stop_loss_job}
    specs = [
        (
            _Spec(name_prefix + MARKET_SHOCK_SENSOR, topics.market, MARKET_EVENTS, settings.long_poll_seconds, True),
            routing_jobs,
            "Market shocks: warnings start the rebalancing saga, signed critical shocks the emergency stop-loss.",
        ),
        (
            _Spec(name_prefix + CAPITAL_THRESHOLD_SENSOR, topics.capital, CAPITAL_EVENTS, settings.long_poll_seconds, True),
            routing_jobs,
            "Capital thresholds: warnings start the rebalancing saga, signed critical ones the emergency stop-loss.",
        ),
        (
            _Spec(name_prefix + FUNDING_DEVIATION_SENSOR, topics.funding, FUNDING_RATE_EVENTS, 0.0, False),
            {Action.HEDGE: hedge_job},
            f"Funding rates: hedge a market whose rate (per 8 h) moved more than "
            f"{settings.funding_deviation_bps:g} bps since the sensor's last hedge of it.",
        ),
    ]
    sensors = []
    for spec, jobs, description in specs:
        # Only topics with critical events can alert: the funding sensor never mails, so it does
        # not make Dagster build the mail resource on every tick (about half of a tick's resource cost).
        alert_key = alert_resource_key if spec.logical_topic in _ALERTING_TOPICS else None
        resource_keys = {"kafka"} | ({alert_key} if alert_key else set())
        evaluate = _EventSensor(spec, jobs=jobs, settings=settings, run_config=run_config, alert_resource_key=alert_key)
        sensors.append(
            sensor(
                name=spec.name,
                jobs=list({id(job): job for job in jobs.values()}.values()),
                minimum_interval_seconds=settings.minimum_interval_seconds,
                default_status=default_status,
                required_resource_keys=resource_keys,
                description=f"{description} Reads {spec.topic} (cursor = offsets); bad input goes to {dlq_topic(spec.topic)}.",
            )(_named(evaluate, spec.name))
        )
    return sensors


def _named(evaluate: _EventSensor, name: str):
    # @sensor inspects a plain function's signature for the context parameter; a direct
    # call (tests) also passes the required resources as keywords: they are in context.resources.
    def evaluation(context: SensorEvaluationContext, **_resources: Any) -> SensorResult:
        return evaluate(context)

    evaluation.__name__ = name
    return evaluation
