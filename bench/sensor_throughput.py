"""Benchmark: `funding_deviation_sensor` evaluation vs raw confluent-kafka consumption, on a real broker.

Starts a real Apache Kafka broker (`scripts/kafka-broker.sh`, single-node
KRaft, free loopback ports, temporary directory; stopped at the end, and tied
to this process with KAFKA_PARENT_PID so a killed bench leaves no broker),
creates a funding-rate topic (3 partitions, like `arb-orchestration topics
create`) and produces `--events` funding-rate events (fresh timestamps, the
local world's 13 perps, the event generator's rate walk; unsigned: funding
events need no signature). Then reads the whole topic three ways, in the same
run, repeated `--trials` times:

- `raw`: a plain confluent-kafka Consumer with the project's consumer config,
  the topic's metadata asked for first (`list_topics`, as the sensor does: a
  fresh consumer that assigns OFFSET_BEGINNING before it knows the partition
  leaders waits ~0.5 s before its first fetch, measured, which the sensor
  never pays), manual assignment of every partition from the beginning,
  `poll()` until all messages are in (touching each value);
- `raw-batch@N` (`--raw-batch`, default 500,100,1000): the same consumer reading with
  `consume(num_messages=N, timeout=1.0)` instead of one `poll()` per message,
  the faster way to read with confluent-kafka (and how the sensor reads);
- `raw-batch@N+sensor-client`: the same again, with the librdkafka overrides
  the sensor's own consumer uses (`kafka_source._CONSUMER_OVERRIDES`, e.g. a
  20 ms `fetch.queue.backoff.ms` instead of 1 s), so the client tuning that
  helps the sensor helps its baseline too. The goal ratio is taken against
  the FASTEST of `raw` and every `raw-batch` reader;
- `raw+json`: `raw` plus `json.loads` of each value;
- `validate-only@N` (not a baseline, a ceiling): `raw-batch@N+sensor-client`
  plus what the sensor cannot skip, validating every message against the event
  schema (`FundingScreen`, the sensor's own bulk validator: msgspec against a
  Struct derived from the pydantic model, venue/symbol narrowed to the names
  seen so far, one C-level map per chunk)
  and nothing else: no dedupe, no cursor, no Dagster. No sensor that parks every
  malformed message can beat it;
- `scan-only@N` (not a baseline, the sensor's ceiling since round 11):
  `raw-batch@N+sensor-client` plus the sensor's first try on each chunk, the C
  chunk scanner (`FundingChunkScan`: validates every value and picks each
  market's newest; `FundingScreen` for a chunk it declines), nothing else;
- `sensor-python-path` (`--no-python-path` skips it): the same sensor with its
  C chunk scanner switched off, i.e. the sensor before round 11, in the same run;
- `sensor`: the real sensor — built by `build_event_sensors` exactly as
  `arb_orchestration/defs/events` builds it (real jobs, `domain_run_config`,
  settings from the environment: 50,000 messages per tick by default), only on
  this topic — evaluated tick after tick with `build_sensor_context(cursor=...,
  resources=..., instance=...)`, each tick's returned cursor fed into the next
  as the daemon does, until its cursor reaches the end of every partition.
  Like the code server (`dagster/_grpc/impl.py`), each tick gets only the
  resources the sensor requires. The instance is a real SQLite one on tmpfs
  (the sensor reads the hedge baselines recorded by hedge runs from it every
  tick). What the daemon adds
  around a tick (gRPC to the code server, storing the tick and the cursor,
  creating runs for the requests) is not in this number.

Prints events/s of each, the ratio sensor/raw (goal >= 0.5), and the memory
of the sensor part, measured in a fresh child process (the raw readers'
prefetch buffers would otherwise set the process's peak): ru_maxrss after setup
and after a full sensor pass over the topic, and the tracemalloc peak (Python
allocations) of a pass over the first `--trace-events` events (tracemalloc
slows Python down, so neither pass is timed). `--also-max-messages 5000` adds
sensor passes with more messages per tick (ARB_SENSOR_MAX_MESSAGES).

    .venv/bin/python bench/sensor_throughput.py [--events 200000] [--trials 1] [--partitions 3]
        [--trace-events 20000] [--also-max-messages 1000,5000] [--raw-batch 500,100,1000]
        [--bootstrap HOST:PORT  (a running broker)]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BROKER_SCRIPT = REPO_ROOT / "scripts" / "kafka-broker.sh"
GOAL_RATIO = 0.5
_DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process


# ----------------------------------------------------------------------------- the broker


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Broker:
    """A real Apache Kafka broker in a temporary directory, through scripts/kafka-broker.sh."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
        self.port = _free_port()
        self.controller_port = _free_port()
        while self.controller_port == self.port:
            self.controller_port = _free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.started = False

    def _script(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        env = {**os.environ, "KAFKA_PARENT_PID": str(os.getpid())}
        return subprocess.run(["bash", str(BROKER_SCRIPT), *args], capture_output=True, text=True,
                              timeout=timeout, cwd=REPO_ROOT, env=env)

    def start(self) -> float:
        began = time.monotonic()
        for args, timeout in ((("fetch",), 900), (("start", str(self.directory), str(self.port),
                                                     str(self.controller_port)), 120)):
            result = self._script(*args, timeout=timeout)
            if result.returncode != 0:
                raise RuntimeError(f"scripts/kafka-broker.sh {args[0]} failed:\n{result.stdout}\n{result.stderr}")
        self.started = True
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if admin.list_topics(timeout=2).brokers:
                    return time.monotonic() - began
            except Exception:  # the listener is still coming up
                time.sleep(0.1)
        raise RuntimeError(f"broker at {self.bootstrap} did not answer within 60 s")

    def stop(self) -> None:
        try:
            if self.started:
                result = self._script("stop", str(self.directory), timeout=60)
                if result.returncode != 0:
                    print(f"warning: broker stop failed: {result.stderr}", file=sys.stderr)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


# ----------------------------------------------------------------------------- the events


def produce_funding_events(kafka, topic: str, count: int, seed: int = 5) -> float:
    """`count` fresh funding-rate events on `topic`, keyed per market; returns seconds taken."""
    from arb_orchestration.domain.events import FUNDING_RATE_EVENTS, encode_event, partition_key
    from arb_orchestration.sim.event_generator import EventFactory

    factory = EventFactory(seed=seed, weights=(0.0, 1.0, 0.0))  # funding rates only
    rng = random.Random(seed)
    # Larger batches than the platform's producer (linger 5 ms): only the reading is measured.
    producer = kafka.producer(linger_ms=50, batch_num_messages=10_000)
    failures: list[str] = []

    def on_delivery(err, _msg) -> None:
        if err is not None:
            failures.append(str(err))

    started = time.perf_counter()
    for _ in range(count):
        kind, payload = factory.next_event()
        if kind != FUNDING_RATE_EVENTS:
            raise RuntimeError(f"the event factory made a {kind} event")
        # A few extra fields a real feed carries (mark, next funding time), ignored by the schema.
        payload["mark_price"] = round(rng.uniform(0.5, 70_000), 2)
        while True:
            try:
                producer.produce(topic, value=encode_event(payload), key=partition_key(payload),
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining or failures:
        raise RuntimeError(f"producing failed: {remaining} not delivered, errors {failures[:3]}")
    return time.perf_counter() - started


def partitions_of(kafka, topic: str) -> list[int]:
    return kafka.partitions_for(topic)


# ----------------------------------------------------------------------------- the readers


@dataclass
class Pass:
    """One read of the whole topic."""

    name: str
    events: int
    seconds: float
    ticks: int = 0
    run_requests: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


def read_raw(kafka, topic: str, partitions: list[int], expected: int, *, decode: bool) -> Pass:
    """A plain consumer: manual assignment from the beginning, poll until every message is in."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(kafka.consumer_config())
    try:
        started = time.perf_counter()
        consumer.list_topics(topic, timeout=10)  # leaders known before assign (see the module docstring)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        read = 0
        size = 0
        deadline = time.monotonic() + 300
        while read < expected:
            msg = consumer.poll(1.0)
            if msg is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"raw consumer stuck at {read}/{expected}")
                continue
            if msg.error() is not None:
                raise RuntimeError(f"raw consumer: {msg.error()}")
            value = msg.value()
            if decode:
                size += len(json.loads(value))
            else:
                size += len(value)
            read += 1
        seconds = time.perf_counter() - started
    finally:
        consumer.close()
    return Pass("raw+json" if decode else "raw", read, seconds)


def read_raw_batch(kafka, topic: str, partitions: list[int], expected: int, *, batch: int,
                   sensor_client: bool = False) -> Pass:
    """The same plain consumer reading with `consume(num_messages=batch)`: one call per batch, not per message.

    `sensor_client`: with the librdkafka overrides of the sensor's own consumer.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from arb_orchestration.defs.events.kafka_source import _CONSUMER_OVERRIDES

    overrides = {k: v for k, v in _CONSUMER_OVERRIDES.items() if k not in ("error_cb", "logger")} if sensor_client else {}
    consumer = Consumer({**kafka.consumer_config(), **overrides})
    try:
        started = time.perf_counter()
        consumer.list_topics(topic, timeout=10)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        read = 0
        size = 0
        deadline = time.monotonic() + 300
        while read < expected:
            messages = consumer.consume(num_messages=batch, timeout=1.0)
            if not messages and time.monotonic() > deadline:
                raise RuntimeError(f"raw batch consumer stuck at {read}/{expected}")
            for msg in messages:
                if msg.error() is not None:
                    raise RuntimeError(f"raw batch consumer: {msg.error()}")
                size += len(msg.value())
            read += len(messages)
        seconds = time.perf_counter() - started
    finally:
        consumer.close()
    return Pass(f"raw-batch@{batch}" + ("+sensor-client" if sensor_client else ""), read, seconds)


def read_validate_only(kafka, topic: str, partitions: list[int], expected: int, *, batch: int,
                       scan: bool = False) -> Pass:
    """Consume like `raw-batch@N+sensor-client` and validate every value, nothing more.

    `scan=False` (`validate-only@N`): with `FundingScreen`, the sensor's Python path.
    `scan=True` (`scan-only@N`): with `FundingChunkScan` (C), the sensor's first try for a chunk,
    and `FundingScreen` for a chunk it declines.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from arb_orchestration.defs.events.kafka_source import _CONSUMER_OVERRIDES
    from arb_orchestration.domain.events import FundingChunkScan, FundingScreen

    consumer = Consumer({**kafka.consumer_config(), **_CONSUMER_OVERRIDES})
    screen = FundingScreen()  # the sensor's validator (it learns the venues and symbols on the first chunk)
    scanner = FundingChunkScan() if scan else None
    declined = 0
    try:
        started = time.perf_counter()
        consumer.list_topics(topic, timeout=10)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        read = valid = 0
        deadline = time.monotonic() + 300
        while read < expected:
            messages = consumer.consume(num_messages=batch, timeout=1.0)
            if not messages and time.monotonic() > deadline:
                raise RuntimeError(f"validate-only reader stuck at {read}/{expected}")
            for msg in messages:
                if msg.error() is not None:
                    raise RuntimeError(f"validate-only reader: {msg.error()}")
            values = [msg.value() for msg in messages]
            if scanner is not None and values and scanner(values, fresher_than=0.0) is not None:
                valid += len(values)
            else:
                declined += scanner is not None and bool(values)
                rows = screen(values)
                valid += len(rows) - rows.count(None)
            read += len(messages)
        seconds = time.perf_counter() - started
    finally:
        consumer.close()
    name = f"{'scan' if scan else 'validate'}-only@{batch}"
    if valid != read:
        raise RuntimeError(f"{name} reader: {read - valid} of {read} values did not validate")
    if declined:
        log_line = f"{name}: the C scanner declined {declined} chunk(s) (read in time order per partition?)"
        print(log_line, file=sys.stderr)
    return Pass(name, read, seconds)


def build_funding_sensor(topic_prefix: str, **setting_changes: Any):
    """The funding sensor exactly as `arb_orchestration.defs.events` builds it, reading `<prefix>funding-rate-events`."""
    from arb_orchestration.defs import hedging, rebalance, stop_loss
    from arb_orchestration.defs.events import (
        FUNDING_DEVIATION_SENSOR,
        EventSensorSettings,
        EventTopics,
        build_event_sensors,
        domain_run_config,
    )

    settings = EventSensorSettings.from_env()
    if setting_changes:
        settings = settings.but(**setting_changes)
    sensors = build_event_sensors(
        rebalance_job=rebalance.auto_rebalance_saga,
        stop_loss_job=stop_loss.emergency_stop_loss_saga,
        hedge_job=hedging.funding_rate_hedge,
        settings=settings,
        topics=EventTopics.with_prefix(topic_prefix),
        run_config=domain_run_config,
    )
    [sensor] = [s for s in sensors if s.name == FUNDING_DEVIATION_SENSOR]
    return sensor, settings


def python_path_sensor(topic_prefix: str):
    """The same sensor with its C chunk scanner switched off: every chunk takes the Python path.

    What the sensor was before the scanner (bench/README.md round 11), measured in the same run.
    """
    sensor, _settings = build_funding_sensor(topic_prefix)
    evaluators = [cell.cell_contents for cell in sensor._raw_fn.__closure__ or ()
                  if hasattr(cell.cell_contents, "scan")]
    if len(evaluators) != 1:
        raise RuntimeError("cannot find the funding sensor's evaluator to switch its C scanner off")
    evaluators[0].scan = lambda values, **_kwargs: None
    return sensor


def cursor_position(cursor: str | None, topic: str) -> int:
    """Messages the cursor says were read from `topic` (sum of next offsets; topics start at 0)."""
    if not cursor:
        return 0
    offsets = json.loads(cursor).get("offsets", {})
    return sum(v for k, v in offsets.items() if k.rsplit("/", 1)[0] == topic)


def run_sensor(sensor, resources: dict, instance, topic: str, expected: int, *, limit: int | None = None,
               max_ticks: int = 100_000) -> Pass:
    """Tick the sensor, cursor to cursor, until it has read `limit` (default: all `expected`) events."""
    from dagster import build_sensor_context

    target = min(expected, limit) if limit else expected
    # The code server builds only the resources a sensor requires (dagster/_grpc/impl.py:
    # `resources_to_build`); build_sensor_context would build every one it is given.
    resources = {key: value for key, value in resources.items() if key in sensor.required_resource_keys}
    cursor: str | None = None
    ticks = requests = 0
    started = time.perf_counter()
    position = 0
    while position < target:
        context = build_sensor_context(cursor=cursor, resources=resources, instance=instance)
        # Each tick logs its summary (and up to 10 lines per kind) through a console logger on stderr,
        # as in the code server: formatted and written, to /dev/null here.
        with contextlib.redirect_stderr(_DEVNULL):
            result = sensor(context)
        ticks += 1
        requests += len(result.run_requests or [])
        cursor = result.cursor
        new_position = cursor_position(cursor, topic)
        if new_position == position and ticks > 3 and result.skip_reason and "read 0" in result.skip_reason:
            raise RuntimeError(f"sensor made no progress at {position}/{target}: {result.skip_reason}")
        position = new_position
        if ticks >= max_ticks:
            raise RuntimeError(f"sensor did not finish within {max_ticks} ticks ({position}/{target})")
    seconds = time.perf_counter() - started
    return Pass("sensor", position, seconds, ticks=ticks, run_requests=requests,
                extra={"cursor_bytes": len(cursor or "")})


def memory_probe(bootstrap: str, topic_prefix: str, events: int, trace_events: int) -> dict[str, Any]:
    """The sensor's memory, measured in a fresh process so the raw readers' buffers do not hide it.

    In the child: ru_maxrss after imports and setup, then after a full untimed sensor pass
    over the topic (its growth is the sensor's peak, librdkafka's buffers included), then the
    tracemalloc peak (Python allocations only) of a second pass over the first `trace_events`.
    """
    spec = json.dumps({"bootstrap": bootstrap, "prefix": topic_prefix, "events": events, "trace": trace_events})
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--memory-probe", spec],
                          capture_output=True, text=True, timeout=1800, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _memory_probe_child(spec: dict[str, Any]) -> dict[str, Any]:
    from dagster import instance_for_test

    from arb_orchestration.defs.events.kafka_source import drop_warm_clients

    sensor, _settings = build_funding_sensor(spec["prefix"])
    topic = spec["prefix"] + "funding-rate-events"
    resources = _resources(spec["bootstrap"])
    tmp = tempfile.mkdtemp(prefix="bench-sensor-mem-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        with instance_for_test(temp_dir=tmp) as instance:
            before, rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, _rss_kb()
            full = run_sensor(sensor, resources, instance, topic, spec["events"])
            after, rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, _rss_kb()
            drop_warm_clients()
            tracemalloc.start()
            try:
                traced = run_sensor(sensor, resources, instance, topic, spec["events"], limit=spec["trace"])
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            drop_warm_clients()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"maxrss_before_kb": before, "maxrss_after_kb": after, "rss_before_kb": rss_before,
            "rss_after_kb": rss_after, "events": full.events, "ticks": full.ticks,
            "tracemalloc_peak": peak, "traced_events": traced.events, "traced_ticks": traced.ticks}


def _rss_kb() -> int:
    """Current resident set size (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _resources(bootstrap: str) -> dict[str, Any]:
    from arb_orchestration.resources.kafka import KafkaResource
    from arb_orchestration.resources.smtp import SmtpResource

    # The deployment's resources; each sensor tick gets the ones its sensor requires (run_sensor).
    return {"kafka": KafkaResource(bootstrap_servers=bootstrap, client_id="bench-sensor"),
            "smtp": SmtpResource(host="127.0.0.1", port=9, sender="bench@localhost", risk_team=["risk@localhost"])}


# ----------------------------------------------------------------------------- the benchmark


def measure(*, events: int = 200_000, trials: int = 1, partitions: int = 3, trace_events: int = 20_000,
            also_max_messages: tuple[int, ...] = (), raw_batches: tuple[int, ...] = (500, 100, 1000),
            bootstrap: str | None = None, python_path: bool = True, log=print) -> dict[str, Any]:
    """Produce `events`, then time raw / raw-batch / raw+json / sensor reads `trials` times each; returns every pass.

    `also_max_messages`: extra sensor passes with that many messages per tick (`sensor@N`).
    `raw_batches`: a `raw-batch@N` reader per value (`consume(num_messages=N)`).
    """
    from dagster import instance_for_test

    from arb_orchestration.defs.events.kafka_source import drop_warm_clients

    broker = None
    tmp = tempfile.mkdtemp(prefix="bench-sensor-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        if bootstrap is None:
            broker = Broker()
            log(f"starting Apache Kafka ({broker.bootstrap}) ...")
            log(f"broker up in {broker.start():.1f}s")
            bootstrap = broker.bootstrap
        resources = _resources(bootstrap)
        kafka = resources["kafka"]
        prefix = f"bench-{uuid.uuid4().hex[:8]}-"
        sensor, settings = build_funding_sensor(prefix)
        sensors = {"sensor": sensor}
        if python_path:
            sensors["sensor-python-path"] = python_path_sensor(prefix)
        for n in also_max_messages:
            sensors[f"sensor@{n}"] = build_funding_sensor(prefix, max_messages=n)[0]
        topic = prefix + "funding-rate-events"
        kafka.create_topics([topic, topic + ".dlq"], partitions=partitions)
        produce_s = produce_funding_events(kafka, topic, events)
        parts = partitions_of(kafka, topic)
        log(f"produced {events:,} funding-rate events on {topic} ({len(parts)} partitions) "
            f"in {produce_s:.1f}s ({events / produce_s:,.0f}/s)")
        passes: list[Pass] = []
        began = time.monotonic()
        batch_readers = {f"raw-batch@{n}{suffix}": (n, bool(suffix)) for n in raw_batches
                         for suffix in ("", "+sensor-client")}
        ceiling = f"validate-only@{raw_batches[0]}" if raw_batches else None
        scan_only = f"scan-only@{raw_batches[0]}" if raw_batches else None
        names = ["raw", *batch_readers, "raw+json", *([ceiling, scan_only] if ceiling else []), *sensors]
        with instance_for_test(temp_dir=tmp) as instance:
            # Warm-up: imports, first connection, the broker's page cache (all read the same bytes).
            read_raw(kafka, topic, parts, events, decode=False)
            run_sensor(sensor, resources, instance, topic, events, limit=min(events, 2 * settings.max_messages))
            for trial in range(trials):
                for name in names if trial % 2 == 0 else reversed(names):
                    if name in sensors:
                        drop_warm_clients()  # every pass starts without a cached consumer
                        result = run_sensor(sensors[name], resources, instance, topic, events)
                        result.name = name
                    elif name in (ceiling, scan_only):
                        result = read_validate_only(kafka, topic, parts, events, batch=raw_batches[0],
                                                    scan=name == scan_only)
                    elif name in batch_readers:
                        size, tuned = batch_readers[name]
                        result = read_raw_batch(kafka, topic, parts, events, batch=size, sensor_client=tuned)
                    else:
                        result = read_raw(kafka, topic, parts, events, decode=name == "raw+json")
                    passes.append(result)
                    log(f"  trial {trial + 1} {name:<27} {result.events:>9,} events in {result.seconds:7.2f}s "
                        f"= {result.rate:>9,.0f}/s" + (f" ({result.ticks} ticks, {result.run_requests} run "
                                                      f"requests)" if name in sensors else ""))
            drop_warm_clients()
        memory = memory_probe(bootstrap, prefix, events, min(events, trace_events))
        if time.monotonic() - began > settings.event_max_age_seconds * 0.9:
            log(f"warning: the later passes read events older than {settings.event_max_age_seconds:g}s "
                "(counted, not acted on): lower --events or --trials")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if broker is not None:
            broker.stop()
            log("broker stopped")
    return {"events": events, "partitions": partitions, "max_messages": settings.max_messages, "passes": passes,
            "memory": memory, "summary": summarize(passes)}


def summarize(passes: list[Pass]) -> dict[str, Any]:
    """Median rate per reader; each sensor against the FASTEST plain reader (`raw` or a `raw-batch@N`)."""
    names = list(dict.fromkeys(p.name for p in passes))
    median = {name: statistics.median(p.rate for p in passes if p.name == name) for name in names}
    plain = [name for name in names if name == "raw" or name.startswith("raw-batch")]
    best = max(plain, key=lambda name: median[name])
    sensors = {}
    for name in names:
        if not name.startswith("sensor"):
            continue
        picked = [p for p in passes if p.name == name]
        sensors[name] = {
            "rate": median[name],
            "ratio_vs_raw": median[name] / median[best],
            "ratio_vs_poll": median[name] / median["raw"],
            "ratio_vs_raw_json": median[name] / median["raw+json"],
            "ticks": picked[0].ticks,
            "run_requests": picked[0].run_requests,
            "cursor_bytes": picked[-1].extra.get("cursor_bytes"),
        }
    return {"rate": median, "sensors": sensors, "best_raw": best, "ratio_vs_raw": sensors["sensor"]["ratio_vs_raw"]}


def print_summary(result: dict[str, Any]) -> None:
    s = result["summary"]
    print(f"sensor throughput: {result['events']:,} funding-rate events, {result['partitions']} partitions "
          f"(medians over trials; 'sensor' = deployment settings, {result['max_messages']} messages per tick)")
    best = s["best_raw"]
    print(f"  {'reader':<27} {'events/s':>9} {'/best raw':>9} {'/raw':>6} {'/raw+json':>9} {'ticks':>6} {'runs req.':>9}")
    for name, rate in s["rate"].items():
        row = s["sensors"].get(name)
        if row is None:
            print(f"  {name:<27} {rate:>9,.0f}" + ("   <- best raw" if name == best else ""))
            continue
        print(f"  {name:<27} {rate:>9,.0f} {row['ratio_vs_raw']:>9.3f} {row['ratio_vs_poll']:>6.3f} "
              f"{row['ratio_vs_raw_json']:>9.3f} {row['ticks']:>6} {row['run_requests']:>9}")
    ceiling = next((name for name in s["rate"] if name.startswith("validate-only")), None)
    scan_only = next((name for name in s["rate"] if name.startswith("scan-only")), None)
    if ceiling:
        print(f"  {ceiling} = {s['rate'][ceiling] / s['rate'][best]:.3f} of the best raw "
              f"(consume + validate every message with the Python path's screen, nothing else)")
    if scan_only:
        print(f"  {scan_only} = {s['rate'][scan_only] / s['rate'][best]:.3f} of the best raw "
              f"(consume + the C chunk scanner, nothing else: the sensor's ceiling)")
    per_message = {name: 1e6 / rate for name, rate in s["rate"].items()}
    print(f"  per message: best raw {per_message[best]:.2f} us"
          + (f", validate-only {per_message[ceiling]:.2f} us" if ceiling else "")
          + (f", scan-only {per_message[scan_only]:.2f} us" if scan_only else "")
          + f", sensor {per_message['sensor']:.2f} us"
          + (f", sensor-python-path {per_message['sensor-python-path']:.2f} us"
             if "sensor-python-path" in per_message else ""))
    if "sensor-python-path" in s["sensors"]:
        print(f"  the C chunk scanner: sensor / sensor-python-path = "
              f"{s['rate']['sensor'] / s['rate']['sensor-python-path']:.2f}x (same run, same topic)")
    verdict = "meets" if s["ratio_vs_raw"] >= GOAL_RATIO else "is BELOW"
    print(f"  ratio sensor/best raw ({best}) = {s['ratio_vs_raw']:.3f}: {verdict} the {GOAL_RATIO} goal "
          f"(sensor/raw poll = {s['sensors']['sensor']['ratio_vs_poll']:.3f})")
    print(f"  (back-to-back ticks; the daemon ticks a sensor at most once per 5 s loop, so deployed: at most "
          f"{result['max_messages'] / 5:,.0f} events/s at {result['max_messages']} messages per tick)")
    m = result["memory"]
    mib = 1024.0
    print(f"  sensor memory (fresh process, deployment settings, all {m['events']:,} events in {m['ticks']} ticks):")
    print(f"    ru_maxrss {m['maxrss_before_kb'] / mib:.1f} -> {m['maxrss_after_kb'] / mib:.1f} MiB "
          f"(+{(m['maxrss_after_kb'] - m['maxrss_before_kb']) / mib:.1f}); RSS {m['rss_before_kb'] / mib:.1f} -> "
          f"{m['rss_after_kb'] / mib:.1f} MiB (+{(m['rss_after_kb'] - m['rss_before_kb']) / mib:.1f})")
    print(f"    tracemalloc peak {m['tracemalloc_peak'] / 2**20:.2f} MiB over {m['traced_events']:,} events "
          f"({m['traced_ticks']} ticks); final cursor {s['sensors']['sensor']['cursor_bytes']} bytes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--trials", type=int, default=1, help="timed passes of each reader")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--trace-events", type=int, default=20_000, help="events in the tracemalloc pass")
    parser.add_argument("--also-max-messages", default="",
                        help="comma-separated messages-per-tick values for extra sensor passes (e.g. 5000)")
    parser.add_argument("--raw-batch", default="500,100,1000",
                        help="comma-separated num_messages values for raw consume() readers (raw-batch@N)")
    parser.add_argument("--bootstrap", default=None, help="use this running broker instead of starting one")
    parser.add_argument("--no-python-path", action="store_true",
                        help="skip the sensor-python-path passes (the sensor with its C chunk scanner off)")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)  # the child of memory_probe()
    args = parser.parse_args(argv)
    if args.memory_probe:
        print(json.dumps(_memory_probe_child(json.loads(args.memory_probe))))
        return 0
    also = tuple(int(x) for x in args.also_max_messages.split(",") if x.strip())
    raw_batches = tuple(int(x) for x in args.raw_batch.split(",") if x.strip())
    if args.events < 1 or args.trials < 1 or args.partitions < 1:
        parser.error("--events, --trials and --partitions must be >= 1")
    import logging

    # Each tick logs a summary line through the context's logger; keep the table readable.
    logging.getLogger("dagster").setLevel(logging.WARNING)
    result = measure(events=args.events, trials=args.trials, partitions=args.partitions,
                     trace_events=args.trace_events, also_max_messages=also, raw_batches=raw_batches,
                     bootstrap=args.bootstrap, python_path=not args.no_python_path)
    print_summary(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
