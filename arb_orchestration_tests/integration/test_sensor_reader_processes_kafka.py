"""The funding sensor's reader processes against a real Apache Kafka broker, one scenario per test.

With `read_processes` > 0 and a backlog of at least `parallel_min_backlog`, worker
processes read the partitions first and take whole chunks of fresh, valid rates; the
sensor reads on in-process from where they stopped. What must hold is that nothing
changes for the operator: the same newest rate per market hedged, every bad message
parked once, every stale rate counted, the cursor at the end, nothing read twice,
whether the processes took all of it, part of it, or died.
"""

import logging
import os
import signal
import time

import pytest
from dagster import build_sensor_context

from arb_orchestration.defs.events.kafka_source import drop_warm_clients
from arb_orchestration.domain.events import encode_event
from arb_orchestration.readers.funding_shards import ShardJob, ShardSpan, close_shard_pool, shard_pool
from arb_orchestration_tests.integration.test_sensors_kafka import SETTINGS, Setup, _instance, funding, offsets

pytestmark = pytest.mark.integration

PROCESSES = 2
PARALLEL = SETTINGS.but(read_processes=PROCESSES, parallel_min_backlog=20)
MARKETS = [(venue, symbol) for venue in ("binance", "okx", "bybit") for symbol in ("BTC/USDT:USDT", "ETH/USDT:USDT")]


@pytest.fixture(scope="module")
def sink():
    from arb_orchestration.sim.smtp_sink import SmtpSink

    with SmtpSink() as smtp_sink:
        yield smtp_sink


@pytest.fixture(scope="module")
def pool():
    pool = shard_pool(PROCESSES)
    assert pool.wait_ready(60) == PROCESSES, "the funding reader processes did not start"
    yield pool
    close_shard_pool()


@pytest.fixture(autouse=True)
def close_warm_clients():
    yield
    drop_warm_clients()
    Setup.close_all()


def rates(count: int, *, start: float) -> list[dict]:
    """`count` fresh rates over MARKETS, one market per partition pair, times increasing by 1 ms."""
    values = []
    for i in range(count):
        venue, symbol = MARKETS[i % len(MARKETS)]
        values.append(funding(venue, 0.0001 + (i % 7) * 1e-6, 8, symbol=symbol, ts=start + i / 1000))
    return values


def publish_by_market(setup: Setup, topic: str, values: list) -> dict[int, int]:
    """Publish each value to its market's partition (as a keyed producer would); returns messages per partition."""
    counts: dict[int, int] = {}
    for value in values:
        if isinstance(value, dict):
            partition = MARKETS.index((value["venue"], value["symbol"])) % 3
        else:
            partition = 1
        setup._producer.produce(topic, value=encode_event(value) if isinstance(value, dict) else value,
                                partition=partition)
        counts[partition] = counts.get(partition, 0) + 1
    assert setup._producer.flush(30) == 0
    return counts


def newest_event_ids(values: list) -> set[str]:
    newest: dict[tuple[str, str], dict] = {}
    for value in values:
        if isinstance(value, dict):
            market = (value["venue"], value["symbol"])
            if market not in newest or value["ts"] >= newest[market]["ts"]:
                newest[market] = value
    return {value["event_id"] for value in newest.values()}


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def tick(setup: Setup, cursor: str | None):
    """One funding tick; its result and what it logged."""
    context = build_sensor_context(instance=_instance(), cursor=cursor, resources=setup.resources)
    lines = Lines()
    context.log.addHandler(lines)
    return setup.funding_sensor(context), lines.lines


def summary(lines: list[str]) -> str:
    (line,) = [line for line in lines if ": read " in line]
    return line


def read_count(lines: list[str]) -> int:
    return int(summary(lines).split(": read ")[1].split(",")[0])


def test_the_processes_read_a_backlog_as_the_sensor_itself_would(kafka_broker, sink, pool):
    parallel = Setup(kafka_broker, sink, partitions=3, settings=PARALLEL)
    alone = Setup(kafka_broker, sink, partitions=3, settings=SETTINGS)
    values = rates(600, start=time.time() - 60)
    counts = publish_by_market(parallel, parallel.topics.funding, values)
    publish_by_market(alone, alone.topics.funding, values)
    taken = pool.taken

    with_processes, logged = tick(parallel, None)
    in_process, logged_alone = tick(alone, None)

    assert pool.taken - taken == 600  # the processes took all of it
    expected = newest_event_ids(values)
    assert {r.run_key for r in with_processes.run_requests} == expected
    assert {r.run_key for r in in_process.run_requests} == expected
    assert offsets(with_processes) == {f"{parallel.topics.funding}/{p}": n for p, n in counts.items()}
    assert "read 600, acted 6, parked 0, ignored 594" in summary(logged)
    assert any("reader process(es) took 600 of 600" in line for line in logged)
    assert summary(logged_alone).split(" in ")[0].replace(alone.topics.funding, "") == \
        summary(logged).split(" in ")[0].replace(parallel.topics.funding, "")
    again, logged_again = tick(parallel, with_processes.cursor)
    assert again.run_requests == [] and read_count(logged_again) == 0  # nothing read twice


def test_bad_and_stale_messages_inside_the_backlog_are_left_to_the_sensor_and_nothing_is_lost(kafka_broker, sink, pool):
    setup = Setup(kafka_broker, sink, partitions=3, settings=PARALLEL)
    topic = setup.topics.funding
    now = time.time()
    # 1,000 a partition, so each process takes whole 500-message chunks before it meets them.
    values: list = rates(3000, start=now - 60)
    values[2400] = b'{"schema_version": 1, "event_id": "broken"'  # truncated JSON (published to partition 1)
    stale = rates(12, start=now - 10 * SETTINGS.event_max_age_seconds)
    values[2500:2500] = stale  # older than the age limit: read, counted, not acted on
    counts = publish_by_market(setup, topic, values)
    taken = pool.taken

    result, logged = tick(setup, None)

    assert 0 < pool.taken - taken < len(values)  # the processes stopped at the bad and the stale ones
    assert offsets(result) == {f"{topic}/{p}": n for p, n in counts.items()}
    assert {r.run_key for r in result.run_requests} == newest_event_ids([v for v in values if v not in stale])
    read = len(values)
    assert f"read {read}, acted 6, parked 1, ignored {read - 7}" in summary(logged)
    (envelope,) = setup.dlq(topic, 1)
    assert envelope.source.partition == 1 and envelope.reason.startswith("not JSON")


def test_a_reader_process_killed_before_a_tick_costs_nothing_but_speed(kafka_broker, sink, pool):
    setup = Setup(kafka_broker, sink, partitions=3, settings=PARALLEL)
    topic = setup.topics.funding
    values = rates(240, start=time.time() - 60)
    counts = publish_by_market(setup, topic, values)
    for pid in pool.pids():
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pool.pids()) and time.monotonic() < deadline:
        time.sleep(0.02)

    result, logged = tick(setup, None)  # the pool replaces them; this tick reads in-process

    assert offsets(result) == {f"{topic}/{p}": n for p, n in counts.items()}
    assert {r.run_key for r in result.run_requests} == newest_event_ids(values)
    assert "read 240, acted 6, parked 0" in summary(logged)
    assert any("starting 2 funding reader process(es)" in line for line in logged)
    assert pool.wait_ready(60) == PROCESSES  # and they are back for the next backlog


def test_a_process_that_dies_during_its_job_gives_no_result_and_is_replaced(kafka_broker, sink, pool):
    setup = Setup(kafka_broker, sink, partitions=1, settings=PARALLEL)
    topic = setup.topics.funding
    setup.publish(topic, *rates(50, start=time.time() - 60))
    assert pool.wait_ready(60) == PROCESSES
    victim = pool.pids()[0]
    failures = pool.failures
    job = ShardJob(config={"bootstrap.servers": kafka_broker.bootstrap, "group.id": "shard-test"}, topic=topic,
                   spans=(ShardSpan(0, 0, 50),), limit=50, seconds=5.0, max_age_seconds=900.0, max_markets=10,
                   max_bytes=65536)
    os.kill(victim, signal.SIGKILL)
    assert pool.try_acquire()
    try:
        (result,) = pool.read([job])
    finally:
        pool.release()

    assert result is None and pool.failures == failures + 1
    assert victim not in pool.pids()
    assert pool.wait_ready(60) == PROCESSES


def test_beyond_the_markets_bound_the_processes_results_are_dropped_and_the_sensor_keeps_the_bound(kafka_broker, sink, pool):
    setup = Setup(kafka_broker, sink, partitions=3, settings=PARALLEL.but(max_run_requests=2))
    topic = setup.topics.funding
    values = rates(120, start=time.time() - 60)  # 6 markets over 3 partitions, 2 per partition
    counts = publish_by_market(setup, topic, values)

    cursor, ticks, hedged, read = None, 0, [], 0
    while ticks < 10:
        result, logged = tick(setup, cursor)
        ticks += 1
        cursor = result.cursor
        assert len(result.run_requests) <= 2
        hedged += [r.run_key for r in result.run_requests]
        read += read_count(logged)
        if offsets(result) == {f"{topic}/{p}": n for p, n in counts.items()}:
            break
    assert read == len(values)  # every message read once
    assert ticks >= 3  # 6 markets, at most 2 a tick
    assert len(hedged) == len(set(hedged))
    hedged_markets = {(v["venue"], v["symbol"]) for v in values if v["event_id"] in hedged}
    assert hedged_markets == set(MARKETS)  # each market hedged (never hedged before: first rate counts)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
