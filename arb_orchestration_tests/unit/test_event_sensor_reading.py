"""The sensors' reading layer with a fake confluent-kafka Consumer: where the cursor moves and when errors surface.

Covers `TopicRead.mark_read` (the client's positions while every batch is
handled whole, per-message offsets otherwise, the same answers both ways),
`consume(check=False)`/`check_errors`, and the funding sensor end to end on
fakes: a clean backlog read in chunks (run requests and cursor), a chunk
holding a librdkafka error event failing the tick (its cursor is not saved),
and the consumer kept assigned between ticks (read on only from exactly the
cursor; re-assigned at the cursor when it differs or partitions were added;
dropped after a tick that raised).
The real broker is exercised by the integration tests.
"""


import json
import random
import time
import uuid
from dataclasses import dataclass

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError
from dagster import build_sensor_context, job, op

from arb_orchestration.defs.events import EventSensorSettings, EventTopics, TriggerEventConfig, build_event_sensors
from arb_orchestration.defs.events import kafka_source
from arb_orchestration.defs.events.kafka_source import KafkaUnavailable, TopicRead
from arb_orchestration.domain.events import encode_event
from arb_orchestration.resources.kafka import KafkaResource


@dataclass
class FakeMessage:
    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None
    _error: KafkaError | None = None

    def topic(self):
        return self._topic

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset

    def value(self):
        return self._value

    def key(self):
        return None

    def error(self):
        return self._error

    def timestamp(self):
        return (1, 0)


class _TP:
    def __init__(self, topic, partition, offset=-1001):
        self.topic, self.partition, self.offset = topic, partition, offset


class FakeConsumer:
    """Partitions of one topic in memory; `consume` interleaves them in runs, like fetch responses."""

    def __init__(self, topic: str, logs: dict[int, list[bytes]], *, run: int = 7, seed: int = 0):
        self.topic, self.logs, self.run = topic, logs, run
        self.rng = random.Random(seed)
        self.next: dict[int, int] = {}
        self.app: dict[int, int] = {}  # what position() reports: last returned + 1
        self.errors_after: int | None = None  # inject an error event after this many messages
        self.returned = 0
        self.position_calls = 0
        self.assigned_at: list[dict[int, int]] = []  # the offsets of each assign() call
        self.watermark_asks: list[str] = []
        self.no_cached_watermarks = False
        self.polled = 0

    # --- what open_topic_read and TopicRead use
    def poll(self, timeout):
        self.polled += 1
        return None

    def list_topics(self, topic=None, timeout=None):
        info = type("T", (), {"partitions": {p: None for p in self.logs}, "error": None})()
        return type("M", (), {"topics": {self.topic: info}})()

    def get_watermark_offsets(self, tp, timeout=None, cached=False):
        self.watermark_asks.append("cached" if cached else "broker")
        if cached and self.no_cached_watermarks:
            return -1001, -1001  # librdkafka before the first fetch response
        return 0, len(self.logs[tp.partition])

    def assign(self, tps):
        self.next = {tp.partition: (0 if tp.offset == OFFSET_BEGINNING else tp.offset) for tp in tps}
        self.app = {}
        self.assigned_at.append({tp.partition: tp.offset for tp in tps})

    def unassign(self):
        self.next, self.app = {}, {}

    def position(self, tps):
        self.position_calls += 1
        return [_TP(tp.topic, tp.partition, self.app.get(tp.partition, -1001)) for tp in tps]

    def consume(self, num_messages, timeout):
        out = []
        while len(out) < num_messages:
            ready = [p for p, at in self.next.items() if at < len(self.logs[p])]
            if not ready:
                break
            p = self.rng.choice(ready)
            for _ in range(min(self.run, num_messages - len(out))):
                at = self.next[p]
                if at >= len(self.logs[p]):
                    break
                if self.errors_after is not None and self.returned >= self.errors_after:
                    self.errors_after = None
                    out.append(FakeMessage(self.topic, p, -1001, b"Broker: Not leader for partition",
                                           KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)))
                    continue
                out.append(FakeMessage(self.topic, p, at, self.logs[p][at]))
                self.next[p] = at + 1
                self.app[p] = at + 1
                self.returned += 1
        return out

    def close(self):
        pass


def _read(consumer: FakeConsumer, exact: bool = True) -> TopicRead:
    parts = sorted(consumer.logs)
    consumer.assign([_TP(consumer.topic, p, OFFSET_BEGINNING) for p in parts])
    return TopicRead(
        topic=consumer.topic, consumer=consumer, errors=kafka_source._ClientErrors(), partitions=parts,
        start_offsets={p: OFFSET_BEGINNING for p in parts}, high_at_start={p: len(consumer.logs[p]) for p in parts},
        low_at_start={p: 0 for p in parts}, client_positions_exact=exact,
        _position_query=[_TP(consumer.topic, p) for p in parts],
    )


def _logs(sizes=(40, 25, 33)) -> dict[int, list[bytes]]:
    return {p: [b"m%d-%d" % (p, i) for i in range(n)] for p, n in enumerate(sizes)}


@pytest.mark.parametrize("seed", range(5))
def test_positions_from_the_client_and_from_the_messages_agree(seed):
    by_client, by_messages = _read(FakeConsumer("t", _logs(), seed=seed)), _read(FakeConsumer("t", _logs(), seed=seed), exact=False)
    while True:
        a, b = by_client.consume(11, 0.0), by_messages.consume(11, 0.0)
        assert [(m.partition(), m.offset()) for m in a] == [(m.partition(), m.offset()) for m in b]
        if not a:
            break
        assert by_client.mark_read(a) == by_messages.mark_read(b)
    assert by_client.positions == by_messages.positions == {0: 40, 1: 25, 2: 33}
    assert by_client.consumer.position_calls > 0 and by_messages.consumer.position_calls == 0
    assert by_client.behind() == 0


def test_a_chunk_handled_in_part_stops_trusting_the_client():
    read = _read(FakeConsumer("t", _logs(), seed=1))
    first = read.consume(10, 0.0)
    assert read.mark_read(first) and read.client_positions_exact
    second = read.consume(10, 0.0)
    handled = second[:4]
    touched = read.mark_read(handled)  # the client's positions are past what was handled now
    last = {}
    for m in handled:
        last[m.partition()] = m.offset() + 1
    assert touched == last and not read.client_positions_exact
    calls = read.consumer.position_calls
    third = read.consume(10, 0.0)
    read.mark_read(third)
    assert read.consumer.position_calls == calls  # per-message offsets from now on


def test_a_batch_never_marked_stops_trusting_the_client():
    read = _read(FakeConsumer("t", _logs(), seed=2))
    read.consume(10, 0.0)  # returned, never handed to mark_read
    batch = read.consume(10, 0.0)
    assert not read.client_positions_exact
    expected = {}
    for m in batch:
        expected[m.partition()] = m.offset() + 1
    assert read.mark_read(batch) == expected


def test_error_events_raise_unless_the_caller_checks_them_later():
    consumer = FakeConsumer("t", _logs())
    consumer.errors_after = 5
    read = _read(consumer)
    with pytest.raises(KafkaUnavailable, match="Not leader"):
        read.consume(20, 0.0)
    consumer2 = FakeConsumer("t", _logs())
    consumer2.errors_after = 5
    read2 = _read(consumer2)
    batch = read2.consume(20, 0.0, check=False)
    assert any(m.error() is not None for m in batch)
    with pytest.raises(KafkaUnavailable, match="Not leader"):
        read2.check_errors(batch)
    read2.check_errors([m for m in batch if m.error() is None])  # nothing to say


# --------------------------------------------------------------------------- the funding sensor on fakes


@op
def _take(config: TriggerEventConfig) -> str:
    return config.event_id


@job
def _hedge_job():
    _take()


def _rate(venue: str, symbol: str, ts: float, rate: float) -> bytes:
    return encode_event({"schema_version": 1, "event_id": str(uuid.uuid4()), "ts": ts, "venue": venue,
                         "symbol": symbol, "rate": rate, "interval_hours": 8})


@pytest.fixture
def funding_sensor(monkeypatch):
    topics = EventTopics.with_prefix(f"u{uuid.uuid4().hex[:6]}-")
    made: list[FakeConsumer] = []
    now = time.time()
    logs = {p: [_rate("v%d" % (i % 3), "S%d" % p, now - 60 + i * 0.01, 0.001 * (i % 5)) for i in range(1200)]
            for p in range(3)}

    def consumer(config):
        made.append(FakeConsumer(topics.funding, logs, run=150))
        return made[-1]

    monkeypatch.setattr(kafka_source, "Consumer", consumer)
    kafka_source.drop_warm_clients()
    sensors = build_event_sensors(rebalance_job=_hedge_job, stop_loss_job=_hedge_job, hedge_job=_hedge_job,
                                  settings=EventSensorSettings(long_poll_seconds=0, max_messages=2000),
                                  topics=topics, name_prefix="u_")
    yield sensors[2], topics, logs, made
    kafka_source.drop_warm_clients()


def _evaluate(sensor, cursor):
    return sensor(build_sensor_context(cursor=cursor, resources={"kafka": KafkaResource(bootstrap_servers="fake:9")}))


def test_the_funding_sensor_reads_a_clean_backlog_in_whole_chunks(funding_sensor):
    sensor, topics, logs, made = funding_sensor
    first = _evaluate(sensor, None)
    offsets = json.loads(first.cursor)["offsets"]
    assert sum(offsets.values()) == 2000  # max_messages
    # 9 markets (3 venues x 3 symbols), each hedged once (no baseline yet), newest rate of each.
    assert len(first.run_requests) == 9
    second = _evaluate(sensor, first.cursor)
    assert json.loads(second.cursor)["offsets"] == {f"{topics.funding}/{p}": 1200 for p in range(3)}
    assert made[0].position_calls > 0  # clean chunks: positions from the client


def test_an_error_event_in_a_funding_chunk_fails_the_tick(funding_sensor, monkeypatch):
    sensor, topics, logs, made = funding_sensor
    first = _evaluate(sensor, None)
    made[-1].errors_after = made[-1].returned + 700
    with pytest.raises(KafkaUnavailable, match="Not leader"):
        _evaluate(sensor, first.cursor)


def _offsets(result) -> dict[str, int]:
    return json.loads(result.cursor)["offsets"]


def test_the_consumer_stays_assigned_and_reads_on_from_the_cursor(funding_sensor):
    sensor, topics, logs, made = funding_sensor
    first = _evaluate(sensor, None)
    second = _evaluate(sensor, first.cursor)
    assert len(made) == 1 and made[0].assigned_at == [{p: OFFSET_BEGINNING for p in range(3)}]  # not re-assigned
    assert made[0].polled == 1  # only before the first assignment: a poll would take a message
    assert _offsets(second) == {f"{topics.funding}/{p}": 1200 for p in range(3)}
    # The same two ticks on a fresh consumer each time read exactly the same.
    kafka_source.drop_warm_clients()
    again = _evaluate(sensor, first.cursor)
    assert made[1].assigned_at == [{p: o for p, o in enumerate(_offsets(first).values())}]
    assert _offsets(again) == _offsets(second)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in second.run_requests]


def test_a_cursor_that_is_not_where_the_consumer_stands_is_assigned_again(funding_sensor):
    sensor, topics, logs, made = funding_sensor
    first = _evaluate(sensor, None)
    # The daemon did not save the first tick's cursor: the next evaluation starts from None again.
    redo = _evaluate(sensor, None)
    assert len(made) == 1 and made[0].assigned_at == [{p: OFFSET_BEGINNING for p in range(3)}] * 2
    # Read from the beginning again (the fake interleaves partitions at random: compare totals).
    assert sum(_offsets(redo).values()) == sum(_offsets(first).values()) == 2000
    # A cursor behind the consumer in one partition only: every partition is assigned at the cursor.
    behind = {**_offsets(redo), f"{topics.funding}/1": 5}
    third = _evaluate(sensor, json.dumps({"v": 1, "offsets": behind}))
    assert made[0].assigned_at[-1] == {p: behind[f"{topics.funding}/{p}"] for p in range(3)}
    assert _offsets(third)[f"{topics.funding}/1"] > 5


def test_a_partition_added_between_ticks_is_assigned_from_its_start(funding_sensor):
    sensor, topics, logs, made = funding_sensor
    first = _evaluate(sensor, None)
    logs[3] = [_rate("v9", "S9", time.time(), 0.001) for _ in range(4)]  # the topic grew a partition
    second = _evaluate(sensor, first.cursor)
    assert len(made) == 1 and made[0].assigned_at[-1] == {**{p: o for p, o in enumerate(_offsets(first).values())},
                                                           3: OFFSET_BEGINNING}
    assert _offsets(second)[f"{topics.funding}/3"] == 4


def test_a_tick_that_raised_drops_the_kept_consumer(funding_sensor):
    sensor, topics, logs, made = funding_sensor
    first = _evaluate(sensor, None)
    made[-1].errors_after = made[-1].returned + 10
    with pytest.raises(KafkaUnavailable):
        _evaluate(sensor, first.cursor)
    retry = _evaluate(sensor, first.cursor)  # Dagster kept the old cursor
    assert len(made) == 2 and made[1].assigned_at == [{p: o for p, o in enumerate(_offsets(first).values())}]
    assert _offsets(retry) == {f"{topics.funding}/{p}": 1200 for p in range(3)}


def test_a_kept_consumer_takes_the_watermarks_its_fetches_brought(funding_sensor):
    sensor, topics, logs, made = funding_sensor
    first = _evaluate(sensor, None)
    assert made[0].watermark_asks[:3] == ["broker"] * 3  # a fresh consumer asks the broker
    made[0].watermark_asks.clear()
    second = _evaluate(sensor, first.cursor)
    assert "broker" not in made[0].watermark_asks  # no request queued behind the consumer's own fetch
    made[0].watermark_asks.clear()
    made[0].no_cached_watermarks = True  # nothing cached (yet): ask the broker
    third = _evaluate(sensor, second.cursor)
    assert made[0].watermark_asks[:6] == ["cached", "broker"] * 3
    assert _offsets(third) == _offsets(second) == {f"{topics.funding}/{p}": 1200 for p in range(3)}
