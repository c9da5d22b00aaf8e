"""Reading one topic for one sensor tick, from offsets the sensor's cursor gives, and parking to the DLQ.

No Dagster here. The sensor hands over the offsets in its cursor; `open_topic_read`
assigns exactly those (manual `assign()`, no consumer group, nothing committed),
so the Dagster cursor stays the only source of truth for what has been read.

Consumers are kept warm across ticks in the long-lived code-server process (one
per sensor, topic and client configuration), which saves the connection and
metadata round trips at the start of each tick. A warm consumer carries no
state that matters: it is re-assigned from the cursor every tick, unassigned at
the end of it, and thrown away after any tick that raised (a broker restart or
a network failure never leaves a half-broken client in the cache).

A topic deleted and recreated under the same name starts its offsets again at 0,
so offsets alone cannot tell it from the old one. `request_topic_id` asks the
cluster for the topic's id (DescribeTopics, through one cached AdminClient per
sensor and configuration) without waiting; the tick reads meanwhile and takes
the answer, with a short bounded wait, before it returns its cursor.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import CancelledError, Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import methodcaller
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
    Uuid,
)
from confluent_kafka.admin import AdminClient

log = logging.getLogger("arb_orchestration.defs.events")

# A DLQ envelope carries the original message twice (base64 and text); above this
# size the original is left out of the envelope (it stays in the source topic).
# Kept below the producer's and the broker's default message.max.bytes (1 MB).
MAX_DLQ_MESSAGE_BYTES = 900_000


_PARTITION_OF = methodcaller("partition")
_ERROR_OF = methodcaller("error")


class KafkaUnavailable(RuntimeError):
    """Kafka could not be reached or refused us; the tick must fail so its cursor is not saved."""


class DeadLetterError(RuntimeError):
    """A parked message was not acknowledged by the DLQ topic; the tick must fail."""


@dataclass(frozen=True)
class Record:
    """One message read from the source topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    @property
    def source(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @classmethod
    def of(cls, msg: Any, *, with_headers: bool = False) -> "Record":
        """The record of a confluent-kafka `Message` (built only for messages a tick reports on).

        `with_headers`: copy the record's headers too (for a message being parked: replay puts them back).
        """
        timestamp_type, timestamp = msg.timestamp()
        return cls(
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            key=msg.key(),
            value=msg.value(),
            timestamp_ms=timestamp if timestamp_type else None,
            headers=tuple(msg.headers() or ()) if with_headers else (),
        )


@dataclass
class _ClientErrors:
    """What librdkafka's error callback reported; counts only (it can fire hundreds of times a second)."""

    transport: int = 0
    fatal: list[str] = field(default_factory=list)
    last: str = ""

    def __call__(self, error: KafkaError) -> None:
        self.last = str(error)
        if error.fatal() or error.code() in _REFUSALS:
            if len(self.fatal) < 5:
                self.fatal.append(str(error))
        else:
            self.transport += 1

    def reset(self) -> None:
        self.transport, self.fatal, self.last = 0, [], ""


_REFUSALS = {
    getattr(KafkaError, name)
    for name in ("_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED", "TOPIC_AUTHORIZATION_FAILED", "_SSL")
    if hasattr(KafkaError, name)
}

# Connection settings for sensor consumers: reconnect quickly after a broker restart.
_CONSUMER_OVERRIDES = {
    "reconnect.backoff.ms": 50,
    "reconnect.backoff.max.ms": 1000,
    "enable.partition.eof": False,
    "allow.auto.create.topics": False,
    # Prefetch little: the tick reads a bounded batch and unassigns.
    "queued.max.messages.kbytes": 16384,
    # When the prefetch queue is full, librdkafka stops fetching for this long (default 1000 ms)
    # and only then looks again: a tick that drains the queue sat idle for the rest of that
    # second (measured: 50,000-message ticks took 1.1-1.3 s instead of ~0.5 s).
    "fetch.queue.backoff.ms": 20,
}


# librdkafka's own log lines (connection refused while a broker restarts, ...) go to
# Python logging instead of stderr; the tick summary reports what matters.
_client_log = logging.getLogger("arb_orchestration.defs.events.librdkafka")
# A cached consumer nobody used for this long is closed (a sensor that was stopped,
# a test's topic): it would otherwise keep a connection and reconnect forever.
IDLE_CONSUMER_SECONDS = 300.0


class _WarmConsumer:
    def __init__(self, config: Mapping[str, Any]):
        self.errors = _ClientErrors()
        self.consumer = Consumer({**config, **_CONSUMER_OVERRIDES, "error_cb": self.errors, "logger": _client_log})
        self.lock = threading.Lock()
        self.last_used = time.monotonic()
        # While the consumer stays assigned between ticks: per partition, where the client will
        # deliver from next (an offset, or OFFSET_BEGINNING for a partition it has delivered
        # nothing of since it was assigned there). None: not assigned.
        self.assigned: dict[int, int] | None = None
        self.oneoff = False  # a consumer for one evaluation only (closed after it)

    def close(self) -> None:
        try:
            self.consumer.close()
        except Exception:  # closing a client whose broker is gone can itself fail; nothing to keep
            log.debug("closing a sensor consumer failed", exc_info=True)


_cache_lock = threading.Lock()
_consumers: dict[str, _WarmConsumer] = {}
_producers: dict[str, Producer] = {}  # DLQ producers (thread-safe, shared)
_producer_errors: dict[str, _ClientErrors] = {}  # what each one's error_cb reported
_admins: dict[str, "_WarmAdmin"] = {}  # topic-id lookups (an AdminClient is thread-safe: shared)


def _cache_key(owner: str, topic: str, config: Mapping[str, Any]) -> str:
    # The config holds secrets: key on a digest, never on the values themselves.
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{owner}|{topic}|{digest}"


def _warm_entry(cache: dict[str, Any], key: str, make: Callable[[], Any]) -> tuple[Any, list[Any]]:
    """The cached client for `key` (made if missing), marked used now, and the others idle for longer than
    IDLE_CONSUMER_SECONDS, taken out of `cache` for the caller to close outside the lock."""
    now = time.monotonic()
    with _cache_lock:
        idle = [k for k, w in cache.items() if k != key and now - w.last_used > IDLE_CONSUMER_SECONDS]
        retired = [cache.pop(k) for k in idle]
        warm = cache.get(key)
        if warm is None:
            warm = cache[key] = make()
        warm.last_used = now
    return warm, retired


@contextmanager
def _consumer(owner: str, topic: str, config: Mapping[str, Any]) -> Iterator[_WarmConsumer]:
    """The warm consumer for (owner, topic, config), or a one-off one when it is busy."""
    key = _cache_key(owner, topic, config)
    warm, retired = _warm_entry(_consumers, key, lambda: _WarmConsumer(config))
    for old in retired:
        if old.lock.acquire(blocking=False):
            old.close()
    if not warm.lock.acquire(blocking=False):
        # Another evaluation of the same sensor is running (a preview, a test): don't share.
        oneoff = _WarmConsumer(config)
        oneoff.oneoff = True
        try:
            yield oneoff
        finally:
            oneoff.close()
        return
    try:
        yield warm
    except BaseException:
        with _cache_lock:
            if _consumers.get(key) is warm:
                del _consumers[key]
        warm.close()
        raise
    finally:
        if warm.lock.locked():
            warm.lock.release()


def drop_warm_clients() -> None:
    """Close every cached consumer, producer and admin client (tests; a code server shutting down)."""
    with _cache_lock:
        cached = list(_consumers.values())
        producers = list(_producers.values())
        admins = list(_admins.values())
        _consumers.clear()
        _producers.clear()
        _producer_errors.clear()
        _admins.clear()
    del admins  # an AdminClient has no close(): it goes with its last reference (outside the lock)
    for warm in cached:
        warm.close()
    for producer in producers:
        producer.flush(1)


@dataclass
class TopicRead:
    """One tick's read of one topic: partitions, watermarks at the start, and batched consumption."""

    topic: str
    consumer: Consumer
    errors: _ClientErrors
    partitions: list[int]
    start_offsets: dict[int, int]  # as assigned; OFFSET_BEGINNING for never-read partitions
    high_at_start: dict[int, int]
    low_at_start: dict[int, int]
    positions: dict[int, int] = field(default_factory=dict)  # next offset per partition after what was read
    warnings: list[str] = field(default_factory=list)  # offsets the cursor had that the broker no longer has
    # The cluster metadata named a controller among its brokers (DescribeTopics needs one; the
    # librdkafka mock cluster has none).
    controller_known: bool = True
    # False: unassign the consumer at the end of the tick instead of keeping it assigned for the
    # next one (what it read or prefetched must not be read on from: see `release`).
    keep_assignment: bool = True
    # The client's own positions (`Consumer.position`: last message returned + 1, reset by
    # `assign`) equal what was handled while every batch returned was handled whole; they are
    # used then, instead of one `partition()` call per message (see `mark_read`).
    client_positions_exact: bool = False
    _last_batch: list[Any] | None = field(default=None, repr=False)
    _position_query: list[Any] = field(default_factory=list, repr=False)

    def consume(self, max_messages: int, timeout: float, *, check: bool = True) -> list[Any]:
        """Up to `max_messages` messages (confluent-kafka `Message`s) in one call.

        Returns as soon as `max_messages` are there, else after `timeout` seconds
        with what came (timeout 0: what is already fetched). Positions are not
        moved: the caller hands the messages it handled to `mark_read`, so a tick
        that stops inside a batch (a critical event, a limit) leaves the rest to
        the next tick. Raises `KafkaUnavailable` if any is an error event; with
        `check=False` the caller must call `check_errors` before it takes any
        message as data (the funding sensor: a chunk its screen takes whole can
        hold no error event, whose value is librdkafka's error text or None).
        """
        messages = self.consumer.consume(max_messages, max(0.0, timeout))
        if check:
            self.check_errors(messages)
        if messages:
            if self._last_batch is not None:
                self.client_positions_exact = False  # a batch was returned and never marked
            self._last_batch = messages
        return messages

    def check_errors(self, messages: list[Any]) -> None:
        """Raises `KafkaUnavailable` if any of `messages` is an error event rather than a message."""
        if any(map(_ERROR_OF, messages)):  # C-level: a KafkaError is truthy, None is not
            for msg in messages:
                if msg.error() is not None:
                    raise KafkaUnavailable(f"reading {self.topic}: {msg.error()}")

    def mark_read(self, messages: list[Any]) -> dict[int, int]:
        """Record that `messages` (a prefix of what `consume` returned) were handled.

        Returns the next offset per partition they touched. While every batch
        `consume` returned was handed back whole, the client's positions are
        exactly that (one `position()` call per chunk). Otherwise: offsets grow
        within a partition, so the last message of each partition gives its
        position (found with C-level list operations, one `partition()` call per
        message, no Python loop over the chunk).
        """
        touched: dict[int, int] = {}
        if not messages:
            return touched
        whole = messages is self._last_batch
        self._last_batch = None
        if whole and self.client_positions_exact:
            # Every message returned so far was handled: the client's positions are exactly
            # "last handled + 1" (one call for the chunk; a partition is touched when it moved).
            try:
                reported = self.consumer.position(self._position_query)
            except KafkaException:
                reported = None
            if reported is not None:
                for tp in reported:
                    if tp.offset >= 0 and tp.offset != self.positions.get(tp.partition):
                        touched[tp.partition] = tp.offset
                self.positions.update(touched)
                return touched
        if not whole:
            self.client_positions_exact = False  # the client is now ahead of what was handled
        partitions = list(map(_PARTITION_OF, messages))  # C-level: a chunk is mostly runs of one partition
        last = len(partitions) - 1
        backwards = partitions[::-1]
        for partition in set(partitions):
            touched[partition] = messages[last - backwards.index(partition)].offset() + 1
        self.positions.update(touched)
        return touched

    def release(self) -> None:
        """Do not keep the consumer assigned after this tick: the next one assigns from its cursor.

        For a tick whose messages are dropped (the topic turned out to be another one
        than the cursor's): what the client fetched or prefetched comes from offsets
        that mean nothing in the new topic.
        """
        self.keep_assignment = False

    def behind(self) -> int:
        """Messages between the positions and the high watermarks seen at the start (0: caught up).

        An upper bound where a partition has offset gaps (compaction, transaction markers).
        """
        left = 0
        for partition in self.partitions:
            high = self.high_at_start.get(partition, 0)
            start = self.start_offsets[partition]
            if start == OFFSET_BEGINNING:
                start = self.low_at_start.get(partition, 0)
            position = self.positions.get(partition, start)
            if position < high:
                left += high - position
        return left

    def caught_up(self) -> bool:
        """True once every partition was read up to its high watermark as it was at the start."""
        return self.behind() == 0

    def lag(self, next_offsets: Mapping[int, int | None]) -> dict[int, int | None]:
        """Messages left per partition after `next_offsets` (None when unknown)."""
        lags: dict[int, int | None] = {}
        for partition in self.partitions:
            low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, partition), cached=True)
            if high < 0:
                high, low = self.high_at_start.get(partition, -1), self.low_at_start.get(partition, -1)
            if high < 0:
                lags[partition] = None
                continue
            position = next_offsets.get(partition)
            lags[partition] = max(0, high - (low if position is None else max(position, low)))
        return lags


@contextmanager
def open_topic_read(
    *,
    owner: str,
    topic: str,
    config: Mapping[str, Any],
    offsets: Mapping[int, int],
    metadata_timeout: float,
) -> Iterator[TopicRead | None]:
    """Assign every partition of `topic` at the given offsets (EARLIEST for the others).

    Yields None when the topic does not exist. Raises `KafkaUnavailable` when the
    cluster cannot be reached within `metadata_timeout` seconds or refuses us.
    """
    with _consumer(owner, topic, config) as warm:
        consumer = warm.consumer
        if warm.assigned is None:
            # Serve callbacks queued since the last tick (reconnect noise). Never on an assigned
            # consumer: a poll would take a message.
            consumer.poll(0)
        warm.errors.reset()
        try:
            metadata = consumer.list_topics(topic=topic, timeout=metadata_timeout)
        except KafkaException as exc:
            raise KafkaUnavailable(
                f"Kafka unreachable: no metadata for {topic} within {metadata_timeout:g}s ({exc.args[0]})"
            ) from exc
        if warm.errors.fatal:
            raise KafkaUnavailable(f"Kafka refused the sensor's client: {'; '.join(warm.errors.fatal)}")
        controller_known = getattr(metadata, "controller_id", -1) in (getattr(metadata, "brokers", None) or {})
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            if info is not None and info.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise KafkaUnavailable(f"metadata for {topic}: {info.error}")
            if warm.assigned is not None:  # the topic was deleted since the last tick
                warm.assigned = None
                consumer.unassign()
            yield None
            return
        partitions = sorted(info.partitions)
        low_at_start: dict[int, int] = {}
        high_at_start: dict[int, int] = {}
        # A consumer still assigned to these partitions has kept fetching since the last tick, and
        # every fetch response carries the partition's watermarks: use those. Asking the broker
        # instead waits behind the consumer's in-flight fetch on the same connection, which a
        # caught-up consumer leaves waiting for data up to fetch.wait.max.ms (measured: ~11 ms a
        # partition). The metadata request above still checks that Kafka answers.
        cached = warm.assigned is not None and sorted(warm.assigned) == partitions
        try:
            for p in partitions:
                low, high = -1, -1
                if cached:
                    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
                stored = offsets.get(p)
                if low < 0 or high < 0 or (cached and stored is not None and stored > high):
                    # (A cursor past the cached end: the cache is only as new as this client's last
                    # fetch, stalled while its prefetch queue is full, and the cursor may have been
                    # moved by hand or by another code-server replica. The broker decides whether the
                    # partition really ends before the cursor, i.e. was recreated or truncated.)
                    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=metadata_timeout)
                low_at_start[p], high_at_start[p] = low, high
        except KafkaException as exc:
            raise KafkaUnavailable(f"Kafka unreachable: watermarks of {topic} ({exc.args[0]})") from exc
        start: dict[int, int] = {}
        warnings: list[str] = []
        for p in partitions:
            stored = offsets.get(p)
            low, high = low_at_start[p], high_at_start[p]
            if stored is None or stored < 0:
                start[p] = OFFSET_BEGINNING
            elif stored > high:
                warnings.append(
                    f"{topic}/{p}: cursor offset {stored} is past the end ({high}): the topic was recreated "
                    "or truncated; reading it again from the earliest offset (run keys stop duplicate runs)"
                )
                start[p] = OFFSET_BEGINNING
            elif stored < low:
                warnings.append(
                    f"{topic}/{p}: offsets {stored}..{low - 1} were deleted by retention before this sensor "
                    f"read them; continuing at {low}"
                )
                start[p] = low
            else:
                start[p] = stored
        query = [TopicPartition(topic, p) for p in partitions]
        kept = warm.assigned
        warm.assigned = None  # until the tick ends well
        if kept is not None and kept == start:
            # Still assigned from the last tick, exactly where this cursor starts: read on from
            # what the client has fetched meanwhile (a re-assign would throw that away).
            exact = True
        else:
            # A fresh consumer, or the cursor is not where the client stands (the last tick's
            # cursor was not saved, a tick stopped inside a chunk, partitions were added, retention
            # moved a start): assign exactly the cursor's offsets (this drops anything prefetched).
            consumer.assign([TopicPartition(topic, p, start[p]) for p in partitions])
            try:
                # Nothing returned yet since `assign`: every position must be unset, else don't trust them.
                exact = all(tp.offset < 0 for tp in consumer.position(query))
            except KafkaException:
                exact = False
        read = TopicRead(
            topic=topic,
            consumer=consumer,
            errors=warm.errors,
            partitions=partitions,
            start_offsets=start,
            high_at_start=high_at_start,
            low_at_start=low_at_start,
            warnings=warnings,
            controller_known=controller_known,
            positions={p: offset for p, offset in start.items() if offset >= 0},
            client_positions_exact=exact,
            _position_query=query,
        )
        yield read
        if warm.errors.fatal:
            raise KafkaUnavailable(f"Kafka refused the sensor's client: {'; '.join(warm.errors.fatal)}")
        if warm.oneoff or not read.keep_assignment:
            consumer.unassign()
            return
        # The consumer stays assigned (it keeps fetching ahead, up to queued.max.messages.kbytes)
        # for the next tick, which reads on only if its cursor is exactly where the client stands.
        try:
            delivered = {tp.partition: tp.offset for tp in consumer.position(query)}
        except KafkaException:
            consumer.unassign()
            return
        warm.assigned = {p: delivered[p] if delivered.get(p, -1) >= 0 else start[p] for p in partitions}


# --------------------------------------------------------------------------- topic identity

# How long after its request a tick may wait for the topic id: on a healthy cluster the answer
# came long before the read ended (local broker: 0.5-1.5 ms). Past this the tick goes on without it
# (the id is checked next tick) rather than hold a critical event's run for a slow cluster.
TOPIC_ID_WAIT_SECONDS = 0.25
# The request itself may take longer (a fresh connection, TLS): its late answer is not used.
TOPIC_ID_REQUEST_SECONDS = 5.0
# A cluster that cannot say a topic's id (no controller in its metadata: the librdkafka mock
# cluster; an all-zero id: Kafka before 2.8) is reported once per this many seconds, not every
# tick, and (zero id) asked again only after it.
TOPIC_ID_RECHECK_SECONDS = 300.0

_NO_TOPIC_ID = str(Uuid(0, 0))  # what a cluster without topic ids reports


@dataclass(frozen=True)
class TopicIdAnswer:
    """The id the cluster reported for a topic in this tick, or why there is none."""

    topic_id: str | None
    problem: str = ""  # when topic_id is None: why (for the tick's warning)
    quiet: bool = False  # a limitation of this cluster already reported recently: log it at debug only


class _WarmAdmin:
    def __init__(self, config: Mapping[str, Any]):
        self.config = dict(config)
        self.errors = _ClientErrors()
        self._admin: AdminClient | None = None  # made on the first request (a cluster without a controller never gets one)
        self.last_used = time.monotonic()
        self.reported: dict[str, float] = {}  # cluster limitation -> when it was last reported
        self.ask_again_at = 0.0  # the cluster reported no topic ids: don't ask before this (monotonic)

    @property
    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient({
                **self.config,
                "reconnect.backoff.ms": 50,
                "reconnect.backoff.max.ms": 1000,
                "error_cb": self.errors,
                "logger": _client_log,
            })
        return self._admin

    def limitation(self, problem: str) -> TopicIdAnswer:
        now = time.monotonic()
        quiet = now - self.reported.get(problem, -TOPIC_ID_RECHECK_SECONDS - 1) < TOPIC_ID_RECHECK_SECONDS
        if not quiet:
            self.reported[problem] = now
        return TopicIdAnswer(None, problem, quiet=quiet)


def _warm_admin(owner: str, config: Mapping[str, Any]) -> _WarmAdmin:
    # A digest of the config as the key: it holds secrets.
    warm, retired = _warm_entry(_admins, _cache_key(owner, "<admin>", config), lambda: _WarmAdmin(config))
    del retired  # destroyed here, outside the lock, with the last reference
    return warm


@dataclass
class TopicIdRequest:
    """One tick's question "which topic is `topic` now?", sent without waiting; `answer` takes the reply."""

    topic: str
    issued: float  # monotonic
    future: Future | None = None
    warm: _WarmAdmin | None = None
    unasked: TopicIdAnswer | None = None  # the answer when nothing was sent

    def answer(self, wait_until: float) -> TopicIdAnswer:
        """The id, waiting for it at most until `wait_until` (monotonic); never raises."""
        if self.unasked is not None:
            return self.unasked
        assert self.future is not None and self.warm is not None
        try:
            description = self.future.result(timeout=max(0.0, wait_until - time.monotonic()))
        except TimeoutError:  # (concurrent.futures.TimeoutError is the builtin since 3.11)
            late = time.monotonic() - self.issued
            last = f"; the admin client's last error: {self.warm.errors.last}" if self.warm.errors.last else ""
            return TopicIdAnswer(None, f"no answer to DescribeTopics after {late:.2f}s{last}")
        except CancelledError:
            return TopicIdAnswer(None, "DescribeTopics was cancelled")
        except KafkaException as exc:
            return TopicIdAnswer(None, f"DescribeTopics failed: {exc.args[0]}")
        topic_id = str(description.topic_id) if description.topic_id is not None else _NO_TOPIC_ID
        if topic_id == _NO_TOPIC_ID:
            self.warm.ask_again_at = time.monotonic() + TOPIC_ID_RECHECK_SECONDS
            return self.warm.limitation(_NO_IDS)
        return TopicIdAnswer(topic_id)


_NO_CONTROLLER = (
    "the cluster metadata names no controller, which DescribeTopics needs (librdkafka's mock cluster?)"
)
_NO_IDS = "the cluster reports no topic ids (Kafka before 2.8?)"


def request_topic_id(
    *, owner: str, topic: str, config: Mapping[str, Any], controller_known: bool = True
) -> TopicIdRequest:
    """Ask the cluster for `topic`'s id and return at once (the answer comes on a future).

    `config`: the admin client configuration (`KafkaResource.admin_config()`); one
    AdminClient is kept per (owner, config). `controller_known`: what the tick's
    metadata said (`TopicRead.controller_known`); without a controller nothing is
    sent. Never raises: a request that cannot be sent is an answer with a problem.
    """
    issued = time.monotonic()
    warm = _warm_admin(owner, config)
    if not controller_known:
        return TopicIdRequest(topic, issued, unasked=warm.limitation(_NO_CONTROLLER))
    if issued < warm.ask_again_at:
        return TopicIdRequest(topic, issued, unasked=warm.limitation(_NO_IDS))
    try:
        warm.admin.poll(0)  # serve the client's log and error callbacks queued since the last tick
        warm.errors.reset()  # (what they reported before this request says nothing about its answer)
        futures = warm.admin.describe_topics(TopicCollection([topic]), request_timeout=TOPIC_ID_REQUEST_SECONDS)
    except (KafkaException, ValueError, TypeError, RuntimeError) as exc:
        return TopicIdRequest(topic, issued, unasked=TopicIdAnswer(None, f"DescribeTopics not sent: {exc}"))
    return TopicIdRequest(topic, issued, future=futures[topic], warm=warm)


# --------------------------------------------------------------------------- dead-letter producer


@dataclass
class Parked:
    """A message to park on `dlq_topic`, already encoded."""

    dlq_topic: str
    key: bytes
    value: bytes


def _warm_producer(config: Mapping[str, Any]) -> tuple[str, Producer]:
    # An idempotent producer spends ~0.5 s getting its producer id: keep one warm.
    key = _cache_key("dlq", "*", config)
    with _cache_lock:
        producer = _producers.get(key)
        if producer is None:
            errors = _producer_errors[key] = _ClientErrors()
            producer = _producers[key] = Producer({**config, "error_cb": errors, "logger": _client_log})
    return key, producer


def _reported(key: str) -> str:
    """What librdkafka's error callback said for this DLQ producer, for the DeadLetterError."""
    errors = _producer_errors.get(key)
    if errors is None or not (errors.fatal or errors.last):
        return ""
    return f"; librdkafka reported: {'; '.join(errors.fatal) or errors.last}"


def _drop_producer(key: str, producer: Producer) -> None:
    with _cache_lock:
        if _producers.get(key) is producer:
            del _producers[key]
            _producer_errors.pop(key, None)
    try:
        producer.purge()
        producer.flush(0)
    except Exception:  # a broken producer is being thrown away; nothing to save
        log.debug("discarding the DLQ producer failed", exc_info=True)


def park_all(producer_config: Mapping[str, Any], parked: list[Parked], timeout: float) -> list[tuple[str, int, int]]:
    """Produce every parked message and wait until the broker has acknowledged all of them.

    Returns where each one landed, `(dlq topic, partition, offset)` (what `replay-dlq`
    takes). Raises `DeadLetterError` (the tick fails, its cursor is not saved, the same
    messages are read and parked again next tick) when any one is not delivered.
    """
    if not parked:
        return []
    failures: list[str] = []
    landed: list[tuple[str, int, int]] = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            failures.append(f"{msg.topic()}: {err}")
        else:
            landed.append((msg.topic(), msg.partition(), msg.offset()))

    key, producer = _warm_producer(producer_config)
    if (errors := _producer_errors.get(key)) is not None:
        errors.reset()  # diagnostics only: what an earlier tick's errors said is not this tick's cause
    deadline = time.monotonic() + timeout
    try:
        for item in parked:
            while True:
                try:
                    producer.produce(item.dlq_topic, value=item.value, key=item.key, on_delivery=on_delivery)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    if time.monotonic() > deadline:
                        raise DeadLetterError(f"DLQ producer queue stayed full for {timeout:g}s") from None
                    producer.poll(0.05)
                except KafkaException as exc:
                    raise DeadLetterError(f"could not produce to {item.dlq_topic}: {exc.args[0]}") from exc
        remaining = producer.flush(max(0.0, deadline - time.monotonic()))
        if remaining:
            raise DeadLetterError(
                f"{remaining} of {len(parked)} DLQ message(s) not acknowledged within {timeout:g}s "
                f"(is Kafka reachable?){_reported(key)}"
            )
        if failures:
            raise DeadLetterError(
                f"{len(failures)} DLQ message(s) failed: {'; '.join(sorted(set(failures))[:5])}{_reported(key)}"
            )
        if len(landed) != len(parked):  # flush() said done, yet a delivery report is missing: never assume
            raise DeadLetterError(f"{len(parked) - len(landed)} of {len(parked)} DLQ message(s) without a delivery report")
    except BaseException:
        _drop_producer(key, producer)
        raise
    return sorted(landed)


def describe_landed(landed: list[tuple[str, int, int]]) -> str:
    """`t.dlq partition 0 offsets 12-14, partition 2 offset 7` for the tick log (what replay-dlq needs)."""
    spans: dict[tuple[str, int], list[int]] = {}
    for topic, partition, offset in landed:
        spans.setdefault((topic, partition), []).append(offset)
    parts = []
    for (topic, partition), offsets in sorted(spans.items()):
        first, last = min(offsets), max(offsets)
        where = f"offset {first}" if first == last else f"offsets {first}-{last}"
        parts.append(f"{topic} partition {partition} {where}")
    return ", ".join(parts)
