"""Benchmark: what the event sensors' topic-id check (recreated topics) costs a tick, on a real broker.

Starts a real Apache Kafka broker (`scripts/kafka-broker.sh` through the test
fixture's `KafkaBroker`: single-node KRaft, free loopback ports, a temporary
directory; stopped at the end) unless `--bootstrap` names one, then measures:

- `describe`: one DescribeTopics round trip on a warm AdminClient (what the
  check waits for at most, when the read ends sooner than the answer comes);
- `request`: the synchronous part of `kafka_source.request_topic_id` (the cached
  client looked up, its callbacks served, the request queued) — what the check
  adds before the read starts;
- `critical tick`: the market sensor (long poll 4 s, as deployed) evaluated on
  a topic that holds one new signed critical event: the tick reads it in its
  first chunk and returns at once, so it is the case where the read is shortest
  and the answer may still be on its way. With the check vs without it (the
  same sensor, `request_topic_id` replaced by a stub that answers the cursor's
  own id at once), alternated trial by trial;
- `idle funding tick`: the funding sensor (no long poll) on a topic with
  nothing new: same comparison.

Prints medians (p90) and the ratio with/without. Nothing here asserts a time.

    .venv/bin/python bench/topic_id_check.py [--trials 30] [--describes 200] [--bootstrap HOST:PORT]
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:7.2f} ms (p90 {_pct(values, 0.9) * 1e3:.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30, help="sensor ticks per configuration")
    parser.add_argument("--describes", type=int, default=200, help="DescribeTopics round trips to time")
    parser.add_argument("--bootstrap", help="a running broker (default: start one)")
    args = parser.parse_args(argv)

    from confluent_kafka import Producer, TopicCollection
    from confluent_kafka.admin import AdminClient
    from dagster import DagsterInstance, build_sensor_context, job, op

    from arb_orchestration.defs.events import EventSensorSettings, EventTopics, TriggerEventConfig, build_event_sensors
    from arb_orchestration.defs.events import kafka_source, sensors as sensors_module
    from arb_orchestration.domain.events import encode_event, sign_event
    from arb_orchestration.domain.triggers import SensorCursor
    from arb_orchestration_tests.fixtures.kafka import KafkaBroker

    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker = KafkaBroker(Path(tempfile.mkdtemp(prefix="bench-topic-id-")))
        print(f"starting Apache Kafka ({broker.bootstrap}) ...", flush=True)
        broker.fetch()
        broker.start()
        bootstrap = broker.bootstrap
    try:
        key = "bench-signing-key"
        from arb_orchestration.resources.kafka import KafkaResource

        kafka = KafkaResource(bootstrap_servers=bootstrap, signing_key=key)
        topics = EventTopics.with_prefix(f"bench-{uuid.uuid4().hex[:8]}-")
        kafka.create_topics([topics.market, topics.market + ".dlq", topics.funding, topics.funding + ".dlq"],
                            partitions=3)

        # --- one DescribeTopics round trip, warm client
        admin = AdminClient(kafka.admin_config())
        admin.describe_topics(TopicCollection([topics.market]), request_timeout=10)[topics.market].result()
        describe = []
        for _ in range(args.describes):
            began = time.perf_counter()
            admin.describe_topics(TopicCollection([topics.market]), request_timeout=10)[topics.market].result()
            describe.append(time.perf_counter() - began)

        # --- the synchronous part of request_topic_id (cached client)
        kafka_source.request_topic_id(owner="bench", topic=topics.market, config=kafka.admin_config())
        request = []
        for _ in range(args.describes):
            began = time.perf_counter()
            pending = kafka_source.request_topic_id(owner="bench", topic=topics.market, config=kafka.admin_config())
            request.append(time.perf_counter() - began)
            pending.answer(time.monotonic() + 5)

        # --- sensor ticks with and without the check
        @op
        def take(config: TriggerEventConfig) -> str:
            return config.event_id

        @job
        def bench_job():
            take()

        market_sensor, _, funding_sensor = build_event_sensors(
            rebalance_job=bench_job, stop_loss_job=bench_job, hedge_job=bench_job,
            settings=EventSensorSettings(long_poll_seconds=4.0, loop_reserve_seconds=0), topics=topics,
            name_prefix="bench_", alert_resource_key=None)
        instance = DagsterInstance.ephemeral()
        resources = {"kafka": kafka}
        real = sensors_module.request_topic_id

        def without_check(*, owner, topic, config, controller_known=True):
            # Answers at once with the id the cursor already holds: the tick as it was before the check.
            return kafka_source.TopicIdRequest(topic, time.monotonic(),
                                               unasked=kafka_source.TopicIdAnswer(known_ids[topic]))

        known_ids: dict[str, str] = {}
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})

        def tick(sensor, cursor, check: bool):
            sensors_module.request_topic_id = real if check else without_check
            try:
                began = time.perf_counter()
                result = sensor(build_sensor_context(instance=instance, cursor=cursor, resources=resources))
                return time.perf_counter() - began, result
            finally:
                sensors_module.request_topic_id = real

        timings: dict[str, dict[bool, list[float]]] = {"critical": {True: [], False: []}, "idle": {True: [], False: []}}
        cursors = {"critical": None, "idle": None}
        # First ticks (adopt the id, warm the consumers), not timed.
        for name, sensor in (("critical", market_sensor), ("idle", funding_sensor)):
            _, result = tick(sensor, None, True)
            cursors[name] = result.cursor
            known_ids.update(SensorCursor.parse(result.cursor).topic_ids)
        for trial in range(args.trials * 2):
            check = trial % 2 == 0
            event = sign_event({"schema_version": 1, "event_id": str(uuid.uuid4()), "ts": time.time(),
                                "venue": "binance", "symbol": "BTC/USDT:USDT", "price_change_pct": -18.0,
                                "window_seconds": 60, "severity": "critical"}, key)
            producer.produce(topics.market, value=encode_event(event), partition=trial % 3)
            producer.flush(10)
            time.sleep(0.05)  # let the kept consumer fetch it, as between two daemon ticks
            seconds, result = tick(market_sensor, cursors["critical"], check)
            assert [r.run_key for r in result.run_requests] == [event["event_id"]], result
            cursors["critical"] = result.cursor
            timings["critical"][check].append(seconds)
            seconds, result = tick(funding_sensor, cursors["idle"], check)
            cursors["idle"] = result.cursor
            timings["idle"][check].append(seconds)
        producer.flush(5)

        print(f"\nbroker {bootstrap}, {args.describes} describes, {args.trials} ticks per configuration (alternated)")
        print(f"describe (warm AdminClient round trip)        {_ms(describe)}")
        print(f"request_topic_id (synchronous part)           {_ms(request)}")
        for name, label in (("critical", "critical-event tick (market, long poll 4 s)"), ("idle", "idle funding tick")):
            with_check, without = timings[name][True], timings[name][False]
            ratio = statistics.median(with_check) / statistics.median(without)
            extra = (statistics.median(with_check) - statistics.median(without)) * 1e3
            print(f"{label}\n    with check    {_ms(with_check)}\n    without       {_ms(without)}\n"
                  f"    ratio {ratio:.2f}, {extra:+.2f} ms at the median")
        return 0
    finally:
        kafka_source.drop_warm_clients()
        if broker is not None:
            broker.stop()
            shutil.rmtree(broker.directory, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
