"""The event sensors against a real Apache Kafka broker, one scenario per test.

Each test gets its own topics (a unique prefix), builds the three sensors with
`build_event_sensors` around tiny test jobs, evaluates them with
`build_sensor_context(cursor=..., resources=...)` and asserts the run requests
AND the new cursor. Covered: nothing new, one shock, critical vs non-critical
routing, funding deviation (1 h vs 8 h venues), redelivery (run keys; one run
on a real instance through the sensor daemon's own code), a partition added
while running, a broker restart between ticks, 1,000 bad messages to the DLQ,
forged/stale/replayed critical events (DLQ + alert mail), Kafka unreachable,
and the long poll returning at once on a critical event.
"""

import json
import threading
import time
import uuid
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter, build_sensor_context, job, op

from arb_orchestration.defs.events import EventSensorSettings, EventTopics, TriggerEventConfig, build_event_sensors
from arb_orchestration.defs.events.kafka_source import drop_warm_clients
from arb_orchestration.defs.events.sensors import wait_for_alerts
from arb_orchestration.domain.events import dlq_topic, encode_event, parse_dlq_envelope, sign_event
from arb_orchestration.resources.smtp import SmtpResource
from arb_orchestration.sim.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration

KEY = "integration-signing-key"
# One rebalance request per event (no coalescing into a waiting run): these tests follow each
# event through the cursor by its run request. Coalescing: test_sensors_coalesce_rebalance_kafka.py.
SETTINGS = EventSensorSettings(long_poll_seconds=0, metadata_timeout_seconds=5, max_read_seconds=10,
                               coalesce_rebalances=False)


# --------------------------------------------------------------------------- test jobs


@op
def take_event(config: TriggerEventConfig) -> str:
    return config.event_id


@job
def rebalance_job_for_tests():
    take_event()


@job
def stop_loss_job_for_tests():
    take_event()


@job
def hedge_job_for_tests():
    take_event()


# --------------------------------------------------------------------------- helpers


def market(severity: str, *, pct: float = -3.0, ts: float | None = None, event_id: str | None = None, sign: "bool | str" = False) -> dict:
    event = {
        "schema_version": 1,
        "event_id": event_id or str(uuid.uuid4()),
        "ts": time.time() if ts is None else ts,
        "venue": "binance",
        "symbol": "BTC/USDT:USDT",
        "price_change_pct": pct,
        "window_seconds": 60,
        "severity": severity,
    }
    return sign_event(event, KEY if sign is True else sign) if sign else event


def capital(level: str, *, sign: bool = False) -> dict:
    event = {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "ts": time.time(),
        "venue": "okx",
        "asset": "USDT",
        "balance": 1200.0,
        "threshold": 5000.0,
        "level": level,
    }
    return sign_event(event, KEY) if sign else event


def funding(venue: str, rate: float, interval_hours: float, *, symbol: str = "ETH/USDT:USDT", ts: float | None = None) -> dict:
    return {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "ts": time.time() if ts is None else ts,
        "venue": venue,
        "symbol": symbol,
        "rate": rate,
        "interval_hours": interval_hours,
    }


class Setup:
    """One test's topics, sensors and resources (its producer is closed by `close_all` after the test)."""

    _open: list["Setup"] = []

    def __init__(self, broker, sink: SmtpSink, partitions: int = 1, settings: EventSensorSettings = SETTINGS):
        Setup._open.append(self)
        tag = uuid.uuid4().hex[:8]
        self.broker = broker
        self.topics = EventTopics.with_prefix(f"t{tag}-")
        for name in (self.topics.market, self.topics.capital, self.topics.funding):
            broker.create_topic(name, partitions)
            broker.create_topic(dlq_topic(name), 1)
        sensors = build_event_sensors(
            rebalance_job=rebalance_job_for_tests,
            stop_loss_job=stop_loss_job_for_tests,
            hedge_job=hedge_job_for_tests,
            settings=settings,
            topics=self.topics,
            name_prefix=f"t{tag}_",
        )
        self.market_sensor, self.capital_sensor, self.funding_sensor = sensors
        self.resources = {
            "kafka": broker.resource(signing_key=KEY),
            "smtp": SmtpResource(host=sink.host, port=sink.port, sender="sensors@test", risk_team=["risk@test"]),
        }
        self.new_producer()

    def new_producer(self) -> None:
        self.close()
        self._producer = Producer({"bootstrap.servers": self.broker.bootstrap, "linger.ms": 2})

    def close(self) -> None:
        # A producer left open keeps retrying the broker after the session stops it.
        producer, self._producer = getattr(self, "_producer", None), None
        if producer is not None:
            producer.close()

    @classmethod
    def close_all(cls) -> None:
        while cls._open:
            cls._open.pop().close()

    def publish(self, topic: str, *values: dict | bytes | None, partition: int | None = None) -> None:
        for value in values:
            payload = encode_event(value) if isinstance(value, dict) else value
            extra = {} if partition is None else {"partition": partition}
            self._producer.produce(topic, value=payload, **extra)
        assert self._producer.flush(30) == 0

    def tick(self, sensor, cursor: str | None, resources: dict | None = None):
        return sensor(build_sensor_context(instance=_instance(), cursor=cursor, resources=resources or self.resources))

    def dlq(self, topic: str, expected: int, timeout: float = 20.0) -> list:
        """Read `expected` envelopes from `<topic>.dlq` (fails after `timeout`)."""
        consumer = Consumer(
            {"bootstrap.servers": self.broker.bootstrap, "group.id": "dlq-reader", "enable.auto.commit": False}
        )
        consumer.assign([TopicPartition(dlq_topic(topic), 0, 0)])
        envelopes = []
        deadline = time.monotonic() + timeout
        try:
            while len(envelopes) < expected and time.monotonic() < deadline:
                for msg in consumer.consume(500, timeout=0.5):
                    assert msg.error() is None, msg.error()
                    envelopes.append(parse_dlq_envelope(msg.value()))
            extra = consumer.consume(10, timeout=0.3)  # nothing beyond what was expected
            envelopes += [parse_dlq_envelope(m.value()) for m in extra if m.error() is None]
        finally:
            consumer.close()
        return envelopes


_instances: list[DagsterInstance] = []


def _instance() -> DagsterInstance:
    # One ephemeral instance for the module: building one per context costs ~0.4 s.
    if not _instances:
        _instances.append(DagsterInstance.ephemeral())
    return _instances[0]


def offsets(result) -> dict[str, int]:
    return json.loads(result.cursor)["offsets"]


@pytest.fixture(scope="module")
def sink():
    with SmtpSink() as smtp_sink:
        yield smtp_sink


@pytest.fixture(autouse=True)
def close_warm_clients():
    yield
    drop_warm_clients()  # each test's sensors have their own topics: their cached consumers are done
    Setup.close_all()


@pytest.fixture
def setup(kafka_broker, sink):
    return Setup(kafka_broker, sink)


# --------------------------------------------------------------------------- scenarios


def test_nothing_new_skips_and_keeps_the_cursor(setup):
    first = setup.tick(setup.market_sensor, None)
    assert first.run_requests == []
    assert "read 0, acted 0, parked 0" in first.skip_reason.skip_message
    assert offsets(first) == {}

    setup.publish(setup.topics.market, market("warning"))
    second = setup.tick(setup.market_sensor, first.cursor)
    third = setup.tick(setup.market_sensor, second.cursor)
    assert offsets(second) == {f"{setup.topics.market}/0": 1}
    assert third.run_requests == [] and offsets(third) == offsets(second)
    assert f"lag {{{setup.topics.market}/0: 0}}" in third.skip_reason.skip_message


def test_one_shock_requests_one_rebalance_with_tags_and_config(setup):
    event = market("warning", pct=-4.5)
    setup.publish(setup.topics.market, event)

    result = setup.tick(setup.market_sensor, None)

    assert [r.job_name for r in result.run_requests] == ["rebalance_job_for_tests"]
    request = result.run_requests[0]
    assert request.run_key == event["event_id"]
    assert request.tags == {
        "arb/trigger": "event",
        "arb/event_id": event["event_id"],
        "arb/source": f"{setup.topics.market}/0/0",
        "arb/saga": "auto_rebalance",
    }
    config = request.run_config["ops"]["take_event"]["config"]
    assert config["payload"]["price_change_pct"] == -4.5 and config["critical"] is False
    assert config["source"] == f"{setup.topics.market}/0/0" and config["topic"] == "market-events"
    assert offsets(result) == {f"{setup.topics.market}/0": 1}
    # The run config is valid for the job.
    assert rebalance_job_for_tests.execute_in_process(run_config=request.run_config).success


def test_critical_and_non_critical_routing(setup):
    critical = market("critical", pct=-18.0, sign=True)
    setup.publish(setup.topics.market, market("info", pct=-0.4), market("warning"), critical, market("warning"))
    setup.publish(setup.topics.capital, capital("warning"), capital("critical", sign=True))

    first = setup.tick(setup.market_sensor, None)
    # A critical event ends the tick at once: its stop-loss is submitted now, the rest waits a tick.
    assert [r.job_name for r in first.run_requests] == ["rebalance_job_for_tests", "stop_loss_job_for_tests"]
    stop = first.run_requests[1]
    assert stop.run_key == critical["event_id"]
    assert stop.tags["dagster/priority"] == "100" and stop.tags["arb/event_id"] == critical["event_id"]
    assert "signature" not in stop.run_config["ops"]["take_event"]["config"]["payload"]
    assert offsets(first) == {f"{setup.topics.market}/0": 3}
    assert json.loads(first.cursor)["seen"].keys() == {critical["event_id"]}

    second = setup.tick(setup.market_sensor, first.cursor)
    assert [r.job_name for r in second.run_requests] == ["rebalance_job_for_tests"]
    assert offsets(second) == {f"{setup.topics.market}/0": 4}

    capital_result = setup.tick(setup.capital_sensor, None)
    assert [r.job_name for r in capital_result.run_requests] == ["rebalance_job_for_tests", "stop_loss_job_for_tests"]
    assert offsets(capital_result) == {f"{setup.topics.capital}/0": 2}


def test_funding_deviation_normalises_1h_and_8h_venues(setup):
    topic = setup.topics.funding
    binance = "binance|ETH/USDT:USDT"
    hyper = "hyperliquid|ETH/USDT:USDT"
    # Rates at the last hedge: 1 bp per 8 h on binance, 1 bp per hour (8 bp per 8 h) on hyperliquid.
    cursor = json.dumps(
        {
            "v": 1,
            "offsets": {},
            "hedged": {
                binance: {"rate": 0.0001, "interval_hours": 8, "at": 0, "event_id": "old-b"},
                hyper: {"rate": 0.0001, "interval_hours": 1, "at": 0, "event_id": "old-h"},
            },
        }
    )
    now = time.time()
    # Below: binance +19 bps per 8 h; hyperliquid +2.4 bps per 8 h (0.3 bp per hour).
    setup.publish(topic, funding("binance", 0.0020, 8, ts=now - 2), funding("hyperliquid", 0.00013, 1, ts=now - 2))
    below = setup.tick(setup.funding_sensor, cursor)
    assert below.run_requests == []
    assert json.loads(below.cursor)["hedged"] == json.loads(cursor)["hedged"]
    assert "read 2, acted 0, parked 0, ignored 2" in below.skip_reason.skip_message

    # Above: hyperliquid 4 bp per hour = 32 bp per 8 h (+24 bps; raw +3 bp would look small);
    # binance +22 bps. The first binance rate in the batch is superseded by the newer one.
    hyper_event = funding("hyperliquid", 0.0004, 1, ts=now - 1)
    binance_old = funding("binance", 0.0050, 8, ts=now - 1.5)
    binance_new = funding("binance", 0.0023, 8, ts=now - 1)
    setup.publish(topic, binance_old, hyper_event, binance_new)
    above = setup.tick(setup.funding_sensor, below.cursor)

    requests = {r.run_key: r for r in above.run_requests}
    assert set(requests) == {hyper_event["event_id"], binance_new["event_id"]}
    for request in requests.values():
        assert request.job_name == "hedge_job_for_tests"
        assert request.tags["arb/job"] == "funding_rate_hedge" and request.tags["arb/trigger"] == "event"
    hedged = json.loads(above.cursor)["hedged"]
    assert hedged[hyper]["rate"] == 0.0004 and hedged[hyper]["event_id"] == hyper_event["event_id"]
    assert hedged[binance]["rate"] == 0.0023
    assert offsets(above) == {f"{topic}/0": 5}
    reason = requests[hyper_event["event_id"]].run_config["ops"]["take_event"]["config"]["reason"]
    assert "+24.00 bps, exceeds the 20 bps threshold" in reason


def test_redelivered_event_has_the_same_run_key(setup):
    event = market("warning")
    setup.publish(setup.topics.market, event, event)  # the producer retried: the same event twice

    once = setup.tick(setup.market_sensor, None)
    assert [r.run_key for r in once.run_requests] == [event["event_id"], event["event_id"]]
    # Re-reading from the old cursor (a tick whose cursor was never saved) asks for the same key again.
    again = setup.tick(setup.market_sensor, None)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in once.run_requests]
    assert offsets(again) == offsets(once) == {f"{setup.topics.market}/0": 2}


def test_partition_added_while_running_is_read_from_its_start(setup):
    topic = setup.topics.market
    setup.publish(topic, market("warning"))
    first = setup.tick(setup.market_sensor, None)
    assert offsets(first) == {f"{topic}/0": 1}

    admin = AdminClient({"bootstrap.servers": setup.broker.bootstrap})
    admin.create_partitions([NewPartitions(topic, 3)])[topic].result(30)
    deadline = time.monotonic() + 30
    while len(admin.list_topics(topic, timeout=5).topics[topic].partitions) < 3:
        assert time.monotonic() < deadline, "partitions did not appear"
        time.sleep(0.05)
    late = [market("warning"), market("warning")]
    setup.new_producer()  # the old one's metadata still says one partition
    setup.publish(topic, late[0], partition=2)
    setup.publish(topic, late[1], partition=1)

    second = setup.tick(setup.market_sensor, first.cursor)
    assert {r.run_key for r in second.run_requests} == {e["event_id"] for e in late}
    assert offsets(second) == {f"{topic}/0": 1, f"{topic}/1": 1, f"{topic}/2": 1}


def test_a_cursor_past_the_end_of_a_partition_rereads_it_once(setup):
    topic = setup.topics.market
    events = [market("warning"), market("warning")]
    setup.publish(topic, *events)
    stale_cursor = json.dumps({"v": 1, "offsets": {f"{topic}/0": 50}})  # e.g. the topic was recreated

    first = setup.tick(setup.market_sensor, stale_cursor)
    second = setup.tick(setup.market_sensor, first.cursor)

    assert [r.run_key for r in first.run_requests] == [e["event_id"] for e in events]
    assert offsets(first) == offsets(second) == {f"{topic}/0": 2}
    assert second.run_requests == []


def test_broker_restart_between_ticks_loses_nothing(setup):
    topic = setup.topics.market
    before = [market("warning") for _ in range(3)]
    setup.publish(topic, *before)
    first = setup.tick(setup.market_sensor, None)  # the consumer is now warm, connected to the old process
    assert len(first.run_requests) == 3

    between = [market("warning") for _ in range(2)]
    setup.publish(topic, *between)
    setup.broker.restart()
    after = [market("warning") for _ in range(2)]
    setup.publish(topic, *after)

    second = setup.tick(setup.market_sensor, first.cursor)
    assert [r.run_key for r in second.run_requests] == [e["event_id"] for e in between + after]
    assert offsets(second) == {f"{topic}/0": 7}


def test_a_thousand_bad_messages_are_parked_and_the_sensor_stays_healthy(setup):
    topic = setup.topics.capital
    good = capital("warning")
    bad: list[bytes | None] = []
    for i in range(1000):
        kind = i % 5
        if kind == 0:
            bad.append(b"\xff\xfe not utf-8 %d" % i)
        elif kind == 1:
            bad.append(b'{"schema_version": 1, "event_id": "x%d", "ts": "yesterday"' % i)  # truncated JSON
        elif kind == 2:
            wrong = capital("warning")
            wrong["balance"] = "1200"  # a string where a number belongs
            bad.append(encode_event(wrong))
        elif kind == 3:
            bad.append(b"[" + b"1," * 33_000 + b"1]")  # oversized (> 64 KiB)
        else:
            bad.append(None)  # a tombstone: no value at all
    # Too big to copy into a DLQ envelope even as base64 alone (the broker takes ~1 MB); 500 kB
    # now keeps its base64 copy (test_review_sensors_dlq).
    bad[999] = b"x" * 700_000
    setup.publish(topic, *bad[:500], good, *bad[500:])

    requests = []
    cursor = None
    for _ in range(3):  # the batch bound (1,000 per tick) needs two ticks for 1,001 messages
        result = setup.tick(setup.capital_sensor, cursor)
        requests += result.run_requests
        cursor = result.cursor
        if offsets(result).get(f"{topic}/0") == 1001:
            break
    assert offsets(result) == {f"{topic}/0": 1001}
    # The one good event among them still started its run.
    assert [r.run_key for r in requests] == [good["event_id"]]

    envelopes = setup.dlq(topic, 1000)
    assert len(envelopes) == 1000
    assert sorted(e.source.offset for e in envelopes) == [o for o in range(1001) if o != 500]
    reasons = " | ".join(e.reason for e in envelopes)
    for expected in ("not UTF-8", "not JSON", "field 'balance'", "oversized", "empty message"):
        assert expected in reasons
    assert all(e.source.topic == topic and e.source.partition == 0 for e in envelopes)
    huge = next(e for e in envelopes if e.source.offset == 1000)
    assert huge.original.value_b64 is None and "700000 bytes not copied" in huge.reason


def test_forged_stale_and_replayed_critical_events_never_stop_loss(setup, sink):
    topic = setup.topics.market
    sink.clear()
    genuine = market("critical", pct=-25.0, sign=True)
    forged = market("critical", pct=-25.0, sign="not-the-key")
    unsigned = market("critical", pct=-25.0)
    stale = market("critical", pct=-25.0, ts=time.time() - 600, sign=True)
    tampered = dict(genuine, event_id=str(uuid.uuid4()), price_change_pct=-99.0)  # signature of another payload
    setup.publish(topic, genuine)
    first = setup.tick(setup.market_sensor, None)
    assert [r.run_key for r in first.run_requests] == [genuine["event_id"]]

    setup.publish(topic, forged, unsigned, stale, tampered, genuine)  # genuine again = a replay
    second = setup.tick(setup.market_sensor, first.cursor)

    assert second.run_requests == []
    assert offsets(second) == {f"{topic}/0": 6}
    envelopes = setup.dlq(topic, 5)
    reasons = [e.reason for e in sorted(envelopes, key=lambda e: e.source.offset)]
    assert len(reasons) == 5
    assert reasons[0].startswith("bad signature")
    assert reasons[1] == "missing signature"
    assert reasons[2].startswith("stale")
    assert reasons[3].startswith("bad signature")
    assert reasons[4].startswith("replayed")
    assert wait_for_alerts(30)
    mails = sink.wait_for(1, timeout=10)
    assert "5 critical event(s) refused" in mails[-1].subject
    assert genuine["event_id"] in mails[-1].body and "replayed" in mails[-1].body


def test_kafka_unreachable_fails_the_tick(setup):
    from arb_orchestration.resources.kafka import KafkaResource
    from arb_orchestration_tests.fixtures.kafka import free_port

    quick = EventSensorSettings(long_poll_seconds=0, metadata_timeout_seconds=1)
    sensors = build_event_sensors(
        rebalance_job=rebalance_job_for_tests,
        stop_loss_job=stop_loss_job_for_tests,
        hedge_job=hedge_job_for_tests,
        settings=quick,
        topics=setup.topics,
        name_prefix="unreachable_",
    )
    resources = dict(setup.resources, kafka=KafkaResource(bootstrap_servers=f"127.0.0.1:{free_port()}", signing_key=KEY))
    started = time.monotonic()
    with pytest.raises(Exception, match="Kafka unreachable"):
        sensors[0](build_sensor_context(instance=_instance(), cursor='{"v":1,"offsets":{}}', resources=resources))
    assert time.monotonic() - started < 10


def test_long_poll_returns_at_once_on_a_critical_event(kafka_broker, sink):
    poll = 3.0
    setup = Setup(kafka_broker, sink, settings=SETTINGS.but(long_poll_seconds=poll))
    topic = setup.topics.market
    started = time.monotonic()
    primed = setup.tick(setup.market_sensor, None)  # nothing to read: it waits out the whole poll
    assert primed.run_requests == [] and time.monotonic() - started >= poll
    critical = market("critical", pct=-30.0, sign=True)

    def publish_later() -> None:
        time.sleep(0.5)
        setup.publish(topic, critical)

    thread = threading.Thread(target=publish_later)
    started = time.monotonic()
    thread.start()
    result = setup.tick(setup.market_sensor, primed.cursor)
    elapsed = time.monotonic() - started
    thread.join()

    assert [r.run_key for r in result.run_requests] == [critical["event_id"]]
    assert elapsed < poll - 0.5, f"the tick took {elapsed:.2f}s: it waited for the end of the long poll"
    assert offsets(result) == {f"{topic}/0": 1}


# --------------------------------------------------------------------------- one run on a real instance


def daemon_definitions():
    """Loaded by the daemon test below as an in-process code location (env gives broker and topics)."""
    import os

    from dagster import Definitions

    from arb_orchestration.resources.kafka import KafkaResource

    topics = EventTopics.with_prefix(os.environ["ARB_TEST_SENSOR_PREFIX"])
    sensors = build_event_sensors(
        rebalance_job=rebalance_job_for_tests,
        stop_loss_job=stop_loss_job_for_tests,
        hedge_job=hedge_job_for_tests,
        settings=SETTINGS.but(minimum_interval_seconds=1),
        topics=topics,
        alert_resource_key=None,
    )
    return Definitions(
        sensors=sensors,
        resources={"kafka": KafkaResource(bootstrap_servers=os.environ["ARB_TEST_SENSOR_BOOTSTRAP"], signing_key=KEY)},
    )


def test_redelivered_event_creates_one_run_through_the_sensor_daemon(kafka_broker, sink, monkeypatch):
    """The sensor daemon's own iteration (private API, pinned Dagster) against a real instance."""
    import logging

    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import create_test_daemon_workspace_context, instance_for_test
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster._daemon.sensor import execute_sensor_iteration

    setup = Setup(kafka_broker, sink)
    prefix = setup.topics.market[: -len("market-events")]
    monkeypatch.setenv("ARB_TEST_SENSOR_PREFIX", prefix)
    monkeypatch.setenv("ARB_TEST_SENSOR_BOOTSTRAP", kafka_broker.bootstrap)
    event = market("warning")
    setup.publish(setup.topics.market, event)

    target = InProcessWorkspaceLoadTarget(
        InProcessCodeLocationOrigin(
            LoadableTargetOrigin(python_file=__file__, attribute="daemon_definitions"),
            location_name="sensor_test",
        )
    )
    overrides = {"run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}}
    logger = logging.getLogger("sensor-daemon-test")
    with instance_for_test(overrides=overrides) as instance:
        with create_test_daemon_workspace_context(target, instance) as workspace:

            def iterate_until_ticks(count: int) -> list:
                deadline = time.monotonic() + 30
                while True:
                    list(execute_sensor_iteration(workspace, logger, None, None))
                    ticks = [
                        t
                        for state in instance.all_instigator_state()
                        if state.name == "market_shock_sensor"
                        for t in instance.get_ticks(state.instigator_origin_id, state.selector_id)
                    ]
                    if len(ticks) >= count:
                        return ticks
                    assert time.monotonic() < deadline, "the sensor did not tick"
                    time.sleep(0.2)

            iterate_until_ticks(1)
            setup.publish(setup.topics.market, event)  # redelivered
            ticks = iterate_until_ticks(2)

            runs = instance.get_runs(filters=RunsFilter(tags={"arb/event_id": event["event_id"]}))
            assert len(runs) == 1
            assert runs[0].status == DagsterRunStatus.QUEUED
            assert runs[0].tags["dagster/run_key"] == event["event_id"]
            newest = ticks[0]
            assert json.loads(newest.cursor)["offsets"] == {f"{setup.topics.market}/0": 2}
