"""Review: a kept consumer's cached watermarks must not call a valid cursor "past the end".

A consumer kept assigned between ticks takes the partition's watermarks from its
own last fetch response instead of asking the broker. That cache is as old as
the last fetch (fetching stalls while the prefetch queue is full), and the cursor
need not come from this client (moved by hand with `dagster sensor cursor --set`,
as docs/sensors.md shows; another code-server replica). A cursor beyond the
cached high watermark was taken for a recreated topic: warning, and the whole
partition re-read from its earliest offset. Now the broker is asked before that
verdict; a cursor really past the broker's end is still re-read from the start.
"""

import json
import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING
from dagster import build_sensor_context

from arb_orchestration.defs.events import EventSensorSettings, EventTopics, build_event_sensors
from arb_orchestration.defs.events import kafka_source
from arb_orchestration.domain.events import encode_event
from arb_orchestration.resources.kafka import KafkaResource
from arb_orchestration_tests.unit.test_event_sensor_reading import FakeConsumer
from arb_orchestration_tests.unit.test_review_sensors_poison import FakeProducer, _review_job, use_headered_messages


class StaleCacheConsumer(FakeConsumer):
    """Its cached watermarks stay where they were when `freeze()` was called (a stalled fetcher)."""

    frozen: dict[int, int] | None = None

    def freeze(self):
        self.frozen = {p: len(log) for p, log in self.logs.items()}

    def get_watermark_offsets(self, tp, timeout=None, cached=False):
        if cached and self.frozen is not None:
            self.watermark_asks.append("cached")
            return 0, self.frozen[tp.partition]
        return super().get_watermark_offsets(tp, timeout=timeout, cached=cached)


@pytest.fixture
def funding(monkeypatch):
    topics = EventTopics.with_prefix(f"wm{uuid.uuid4().hex[:6]}-")
    logs: dict[int, list[bytes]] = {0: []}
    made: list[StaleCacheConsumer] = []

    def consumer(config):
        made.append(StaleCacheConsumer(topics.funding, logs))
        return made[-1]

    monkeypatch.setattr(kafka_source, "Consumer", consumer)
    monkeypatch.setattr(kafka_source, "Producer", FakeProducer)
    use_headered_messages(monkeypatch)
    kafka_source.drop_warm_clients()
    sensor = build_event_sensors(rebalance_job=_review_job, stop_loss_job=_review_job, hedge_job=_review_job,
                                 settings=EventSensorSettings(long_poll_seconds=0), topics=topics,
                                 name_prefix="wm_")[2]

    def evaluate(cursor):
        return sensor(build_sensor_context(cursor=cursor, resources={"kafka": KafkaResource(bootstrap_servers="fake:9")}))

    yield evaluate, logs, topics, made
    kafka_source.drop_warm_clients()


def _rates(n):
    return [encode_event({"schema_version": 1, "event_id": str(uuid.uuid4()), "ts": time.time(), "venue": "okx",
                          "symbol": f"S{i}/USDT:USDT", "rate": 0.0001, "interval_hours": 8}) for i in range(n)]


def test_a_cursor_moved_past_the_cached_end_is_read_from_where_it_points(funding):
    evaluate, logs, topics, made = funding
    logs[0] += _rates(5)
    first = evaluate(None)
    assert json.loads(first.cursor)["offsets"] == {f"{topics.funding}/0": 5}
    made[0].freeze()  # the kept consumer's cache stays at high watermark 5
    logs[0] += _rates(5)
    moved = json.dumps({"v": 1, "offsets": {f"{topics.funding}/0": 8}})  # an operator skips ahead
    second = evaluate(moved)
    assert made[0].assigned_at[-1] == {0: 8}  # not OFFSET_BEGINNING: the topic was not recreated
    assert json.loads(second.cursor)["offsets"] == {f"{topics.funding}/0": 10}
    assert len(second.run_requests) == 2  # the two rates after offset 8, nothing re-read


def test_a_cursor_past_the_brokers_end_is_still_read_from_the_start(funding):
    evaluate, logs, topics, made = funding
    logs[0] += _rates(3)
    first = evaluate(None)
    made[0].freeze()
    past = json.dumps({"v": 1, "offsets": {f"{topics.funding}/0": 50}})  # the topic was recreated smaller
    second = evaluate(past)
    assert made[0].assigned_at[-1] == {0: OFFSET_BEGINNING}
    assert json.loads(second.cursor)["offsets"] == {f"{topics.funding}/0": 3}
