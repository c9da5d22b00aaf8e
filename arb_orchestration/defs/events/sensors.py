"""The Kafka-triggered sensors: market shocks, capital thresholds, funding-rate deviations.

One shape for all three (see docs/sensors.md):

1. Read the cursor (offsets per topic-partition, recent critical event ids,
   funding baselines). Assign exactly those offsets; partitions the cursor does
   not know (new ones included) start at the earliest offset.
2. Read a bounded batch: at most `max_messages`, for at most the long poll
   (market/capital: wait for events, return at once on a critical one) or until
   caught up with the high watermarks seen at the start (funding).
3. Each message is parsed and admitted by `domain.triggers`; what does not parse,
   validate or authenticate is parked on `<topic>.dlq` with the reason. Refused
   critical events also raise an alert (ERROR log + mail to the risk team).
4. Parked messages are produced and flushed; only then is the new cursor
   returned with the run requests. `run_key` is the event id, so an event read
   twice (a failed tick, a redelivery) never starts a second run.

Kafka unreachable: the tick raises, Dagster keeps the old cursor, nothing is lost.
Bad input never makes a tick raise.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dagster import DefaultSensorStatus, RunRequest, SensorDefinition, SensorEvaluationContext, SensorResult, sensor

from arb_orchestration.defs.events.config import TriggerEventConfig, event_run_config
from arb_orchestration.defs.events.kafka_source import (
    MAX_DLQ_MESSAGE_BYTES,
    Parked,
    Record,
    open_topic_read,
    park_all,
)
from arb_orchestration.defs.events.tuning import EventSensorSettings, EventTopics
from arb_orchestration.defs.hedging.baselines import overlay_hedge_baselines, sensor_instance
from arb_orchestration.domain.events import (
    CAPITAL_EVENTS,
    FUNDING_RATE_EVENTS,
    MARKET_EVENTS,
    CapitalThresholdEvent,
    Event,
    EventRejected,
    FundingRateEvent,
    MarketShockEvent,
    dlq_topic,
    encode_dlq_envelope,
    parse_event,
)
from arb_orchestration.domain.funding import FundingDeviation
from arb_orchestration.domain.triggers import (
    Action,
    AdmissionPolicy,
    SensorCursor,
    TickTally,
    admit_event,
    decide_hedges,
    newest_per_market,
    partition_key,
    route_event,
    utc_now,
)

log = logging.getLogger("arb_orchestration.defs.events")

MARKET_SHOCK_SENSOR = "market_shock_sensor"
CAPITAL_THRESHOLD_SENSOR = "capital_threshold_sensor"
FUNDING_DEVIATION_SENSOR = "funding_deviation_sensor"

# Tags every sensor run carries, and the per-job ones the instance's limits key on
# (arb_orchestration/sim/dagster_local.yaml: one hedge, one rebalancing saga at a time).
TRIGGER_TAG, EVENT_ID_TAG, SOURCE_TAG = "arb/trigger", "arb/event_id", "arb/source"
JOB_TAG, SAGA_TAG, PRIORITY_TAG = "arb/job", "arb/saga", "dagster/priority"
HEDGE_JOB_TAG_VALUE = "funding_rate_hedge"
REBALANCE_SAGA_TAG_VALUE = "auto_rebalance"

_KINDS = {MarketShockEvent: "market_shock", CapitalThresholdEvent: "capital_threshold", FundingRateEvent: "funding_rate"}
_LOGGED_PER_TICK = 10  # individual log lines per tick and kind; the rest are counted

RunConfigBuilder = Callable[[Any, TriggerEventConfig], Mapping[str, Any]]


@dataclass
class _Tick:
    """What one evaluation collected before it returns."""

    cursor: SensorCursor
    tally: TickTally = field(default_factory=TickTally)
    run_requests: list[RunRequest] = field(default_factory=list)
    parked: list[Parked] = field(default_factory=list)
    refused_critical: list[str] = field(default_factory=list)
    funding: list[tuple[FundingRateEvent, Record]] = field(default_factory=list)
    logged: dict[str, int] = field(default_factory=dict)

    def should_log(self, kind: str) -> bool:
        self.logged[kind] = self.logged.get(kind, 0) + 1
        return self.logged[kind] <= _LOGGED_PER_TICK


@dataclass(frozen=True)
class _Spec:
    name: str
    topic: str  # physical
    logical_topic: str
    long_poll_seconds: float
    stop_on_critical: bool


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
        self.deviation = FundingDeviation(
            threshold_bps=settings.funding_deviation_bps, trigger_without_baseline=settings.hedge_without_baseline
        )

    # ------------------------------------------------------------------ evaluation

    def __call__(self, context: SensorEvaluationContext) -> SensorResult:
        spec, settings = self.spec, self.settings
        kafka = context.resources.kafka
        tick = _Tick(cursor=SensorCursor.parse(context.cursor))
        started = time.monotonic()
        offsets = {
            int(key.rsplit("/", 1)[1]): offset
            for key, offset in tick.cursor.offsets.items()
            if key.rsplit("/", 1)[0] == spec.topic
        }
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
            for warning in read.warnings:
                context.log.warning(warning)
            # Where reading really starts (a cursor past the end or behind retention was corrected).
            for partition, start in read.start_offsets.items():
                key = partition_key(spec.topic, partition)
                if start < 0:
                    tick.cursor.offsets.pop(key, None)
                else:
                    tick.cursor.offsets[key] = start
            long_poll = spec.long_poll_seconds
            deadline = started + (long_poll if long_poll > 0 else settings.max_read_seconds)
            while tick.tally.read < settings.max_messages:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (long_poll <= 0 and read.caught_up()):
                    break
                record = read.poll(remaining if long_poll > 0 else min(remaining, 0.2))
                if record is None:
                    continue
                tick.tally.read += 1
                tick.cursor.advance(record.topic, record.partition, record.offset)
                urgent = self._on_record(context, tick, record, kafka.signing_key)
                if urgent and spec.stop_on_critical:
                    tick.tally.stopped_early = True
                    break
            next_offsets = {p: tick.cursor.offsets.get(partition_key(spec.topic, p)) for p in read.partitions}
            lag = read.lag(next_offsets)
            tick.tally.lag = {partition_key(spec.topic, p): value for p, value in lag.items()}
            if read.errors.transport:
                context.log.warning(
                    f"{read.errors.transport} Kafka connection error(s) during the tick (last: {read.errors.last})"
                )
        if tick.funding:
            self._decide_hedges(context, tick)
        # Parked messages are safe on the DLQ before the cursor moves past them.
        park_all(kafka.producer_config(), tick.parked, settings.dlq_timeout_seconds)
        if tick.refused_critical:
            self._alert(context, tick.refused_critical)
        tick.cursor.seen.prune(utc_now().timestamp(), settings.critical_window)
        summary = f"{spec.topic}: {tick.tally.text()} in {time.monotonic() - started:.2f}s"
        context.log.info(summary)
        return SensorResult(
            run_requests=tick.run_requests,
            skip_reason=None if tick.run_requests else summary,
            cursor=tick.cursor.serialize(),
        )

    # ------------------------------------------------------------------ per message

    def _on_record(self, context, tick: _Tick, record: Record, signing_key: str | None) -> bool:
        """Handle one message; True when it produced a stop-loss request (return now)."""
        try:
            event = parse_event(self.spec.logical_topic, record.value, max_bytes=self.settings.max_event_bytes)
        except EventRejected as exc:
            self._park(context, tick, record, exc.reason, critical=_claims_critical(record.value))
            return False
        admission = admit_event(event, signing_key, tick.cursor.seen, now=utc_now(), policy=self.policy)
        if not admission.admitted:
            if admission.stale:
                tick.tally.ignored += 1
                if tick.should_log("stale"):
                    context.log.info(f"{record.source}: event {event.event_id} not acted on: {admission.reason}")
            else:
                self._park(context, tick, record, admission.reason, critical=event.is_critical, event=event)
            return False
        if isinstance(event, FundingRateEvent):
            tick.funding.append((event, record))
            return False
        route = route_event(event)
        if route.action is Action.NONE:
            tick.tally.ignored += 1
            if tick.should_log("none"):
                context.log.info(f"{record.source}: event {event.event_id}: {route.reason}: no action")
            return False
        tick.run_requests.append(self._request(route.action, event, record, route.reason))
        tick.tally.acted += 1
        context.log.info(f"{record.source}: event {event.event_id}: {route.reason} -> {self.jobs[route.action].name}")
        return route.action is Action.STOP_LOSS

    def _decide_hedges(self, context, tick: _Tick) -> None:
        order = {id(event): index for index, (event, _record) in enumerate(tick.funding)}
        records = {id(event): record for event, record in tick.funding}
        newest = newest_per_market((event, order[id(event)]) for event, _record in tick.funding)
        superseded = len(tick.funding) - len(newest)
        tick.tally.ignored += superseded
        # Hedge runs (schedule, UI, this sensor) record the rates they hedged at; newer ones reset the baseline.
        overlay_hedge_baselines(
            sensor_instance(context), tick.cursor.baselines, [(event.venue, event.symbol) for event, _ in newest]
        )
        for decision in decide_hedges([event for event, _ in newest], tick.cursor.baselines, self.deviation):
            record = records[id(decision.event)]
            if decision.hedge:
                tick.run_requests.append(self._request(Action.HEDGE, decision.event, record, decision.reason))
                tick.tally.acted += 1
                context.log.info(f"{record.source}: event {decision.event.event_id}: {decision.reason} -> hedge")
            else:
                tick.tally.ignored += 1
                if tick.should_log("within"):
                    context.log.info(f"{record.source}: {decision.reason}: no hedge")
        if superseded:
            context.log.info(f"{superseded} funding rate(s) superseded by a newer one for the same market in this batch")

    # ------------------------------------------------------------------ outputs

    def _request(self, action: Action, event: Event, record: Record, reason: str) -> RunRequest:
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
        elif action is Action.REBALANCE:
            tags[SAGA_TAG] = REBALANCE_SAGA_TAG_VALUE
        elif action is Action.HEDGE:
            tags[JOB_TAG] = HEDGE_JOB_TAG_VALUE
        return RunRequest(
            run_key=event.event_id,
            job_name=job.name,
            run_config=dict(self.run_config(job, trigger)),
            tags=tags,
        )

    def _park(self, context, tick: _Tick, record: Record, reason: str, *, critical: bool, event: Event | None = None):
        envelope = encode_dlq_envelope(
            value=record.value,
            reason=reason,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp_ms,
            key=record.key,
        )
        if len(envelope) > MAX_DLQ_MESSAGE_BYTES:
            size = len(record.value or b"")
            envelope = encode_dlq_envelope(
                value=None,
                reason=f"{reason} [original value of {size} bytes not copied: too large for the DLQ; "
                f"it stays at {record.source} until retention]",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                timestamp_ms=record.timestamp_ms,
                key=record.key,
            )
        tick.parked.append(Parked(dlq_topic(record.topic), record.source.encode(), envelope))
        tick.tally.parked += 1
        what = f"event {event.event_id}" if event is not None else "message"
        if critical:
            line = f"{record.source}: critical {what} refused: {reason}"
            tick.refused_critical.append(line)
            context.log.error(f"{line}; parked on {dlq_topic(record.topic)}, no stop-loss requested")
        elif tick.should_log("parked"):
            context.log.warning(f"{record.source}: {what} parked on {dlq_topic(record.topic)}: {reason}")

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


def _claims_critical(value: bytes | None) -> bool:
    """Does an unparseable message say it is critical? (Alert on it: the emergency path may be broken.)"""
    if not value or len(value) > 1_000_000:
        return False
    try:
        obj = json.loads(value)
    except (ValueError, UnicodeDecodeError):
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
    resource named `alert_resource_key` (an object with `send(subject, body)`).
    """
    settings = settings or EventSensorSettings()
    topics = topics or EventTopics()
    resource_keys = {"kafka"} | ({alert_resource_key} if alert_resource_key else set())
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
        evaluate = _EventSensor(
            spec, jobs=jobs, settings=settings, run_config=run_config, alert_resource_key=alert_resource_key
        )
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
