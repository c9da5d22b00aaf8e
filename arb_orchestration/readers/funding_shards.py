"""Reading a funding-rate backlog in parallel: worker processes, each with its own consumer for a set of partitions.

Why: a funding tick is bound by its one Python thread (decoding and screening every
message, keeping the newest per market), while the machine usually has a second core
that only librdkafka's fetch thread and the broker touch (bench/README.md, sensor
rounds 7-9). When a backlog waits (after an outage, a burst), the funding sensor hands
each worker a set of partitions, an offset range and a share of its message budget;
each worker reads, screens and keeps the newest rate per market exactly as the sensor
would (`FundingScreen`, `NewestPerMarket.offer_fresh_rows`) and returns only the few
kept rates and where it stopped. The sensor merges them and goes on in its own process
from there.

What a worker takes is only the fast path: whole chunks of valid, unsigned rates inside
the admission age limit, for at most `max_markets` markets. At the first chunk that is
anything else (a malformed or oversized message, a signed or stale one, an error event,
a market beyond the bound) it stops *before* that chunk and says so; the sensor reads
on from there in-process, where parking, alerts and the per-tick limits live. So a worker
never decides anything the sensor would decide differently, and it commits nothing: the
Dagster cursor stays the only record of what was read, and a result the sensor cannot
use (a worker that died or overran, a merge beyond the markets bound) is dropped and
that range read again in-process.

Nothing here imports Dagster: a worker is `python -m arb_orchestration.readers.funding_shards FD`,
a fresh interpreter that imports confluent-kafka and the domain's event model only
(~0.3 s), talking to the sensor's process over a socket pair (`multiprocessing.connection`
framing, pickle: both ends are this code). The consumer configuration, which may hold
SASL credentials, travels only over that socket; it is never logged.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from operator import methodcaller
from typing import Any

log = logging.getLogger("arb_orchestration.readers.funding_shards")

# A worker with no job for this long exits (the sensor starts it again when a backlog next waits).
WORKER_IDLE_EXIT_SECONDS = 900.0
# A cached consumer in a worker unused for this long is closed (the partitions went to another worker).
CONSUMER_IDLE_SECONDS = 300.0
# How long the sensor waits past a job's read budget for its answer before it gives the worker up.
ANSWER_GRACE_SECONDS = 2.0
# Messages per `consume()` call in a worker: the sensor's own chunk size (defs/events/sensors.py).
CHUNK_MESSAGES = 500
# What `stopped` says when a worker read every span to its end (nothing for the sensor to do in-process).
DONE = "done"

_PARTITION_OF = methodcaller("partition")
_OFFSET_OF = methodcaller("offset")
_ERROR_OF = methodcaller("error")


# --------------------------------------------------------------------------- what travels


@dataclass(frozen=True)
class ShardSpan:
    """One partition of a job: read from `start` (an offset) up to `end` (the high watermark at the tick's start)."""

    partition: int
    start: int
    end: int


@dataclass(frozen=True)
class ShardJob:
    """What one worker reads in one tick."""

    config: dict[str, Any]  # consumer configuration (no callbacks: they do not cross processes)
    topic: str
    spans: tuple[ShardSpan, ...]
    limit: int  # messages at most
    seconds: float  # read budget
    max_age_seconds: float  # the admission age limit (older rates are not this path's)
    max_markets: int
    max_bytes: int
    chunk: int = CHUNK_MESSAGES

    def describe(self) -> str:
        spans = ", ".join(f"{s.partition}:{s.start}..{s.end}" for s in self.spans)
        return f"{self.topic} [{spans}] up to {self.limit} messages"


class ShardMessage:
    """A kept rate's Kafka message, as the sensor's own `Message` answers for it (the accessors `Record.of` uses)."""

    __slots__ = ("_topic", "_partition", "_offset", "_key", "_value", "_timestamp", "_headers")

    def __init__(self, topic, partition, offset, key, value, timestamp, headers):
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._timestamp, self._headers = key, value, timestamp, headers

    @classmethod
    def of(cls, msg: Any) -> "ShardMessage":
        return cls(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), msg.timestamp(), msg.headers())

    def __reduce__(self):
        return (ShardMessage, (self._topic, self._partition, self._offset, self._key, self._value,
                               self._timestamp, self._headers))

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers

    def error(self) -> None:
        return None


@dataclass
class ShardResult:
    """What one worker read: where it stopped and the newest rate per market it kept."""

    handled: int = 0  # messages read and taken (every one a fresh, valid rate)
    offered: int = 0  # rates offered to its newest-per-market (== handled)
    next_offsets: dict[int, int] = field(default_factory=dict)  # partition -> offset after the last one taken
    # (venue, symbol), epoch seconds, read order within this worker, the message
    winners: list[tuple[tuple[str, str], float, int, ShardMessage]] = field(default_factory=list)
    stopped: str = DONE  # done | limit | deadline | idle | unclean | error
    detail: str = ""  # for unclean and error: what the worker saw
    seconds: float = 0.0


# --------------------------------------------------------------------------- the worker (child process)


class _Errors:
    """librdkafka's error callback in a worker: fatal ones and refusals end the job as `error`."""

    def __init__(self) -> None:
        self.fatal: list[str] = []
        self.last = ""

    def __call__(self, error: Any) -> None:
        self.last = str(error)
        if error.fatal() and len(self.fatal) < 5:
            self.fatal.append(str(error))


class _Reader:
    def __init__(self, config: dict[str, Any]):
        from confluent_kafka import Consumer

        self.errors = _Errors()
        quiet = logging.getLogger("arb_orchestration.readers.librdkafka")
        self.consumer = Consumer({**config, "error_cb": self.errors, "logger": quiet})
        self.next: dict[int, int] | None = None  # where the client delivers from next, per partition (None: unknown)
        self.last_used = time.monotonic()

    def close(self) -> None:
        try:
            self.consumer.close()
        except Exception:  # a client whose broker is gone may fail to close; nothing to keep
            pass


def _config_key(job: ShardJob) -> str:
    digest = hashlib.sha256(json.dumps(job.config, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{digest}|{job.topic}|{','.join(str(s.partition) for s in job.spans)}"


class ShardWorker:
    """The worker's state: its consumers (one per configuration, topic and partition set) and its screen."""

    def __init__(self) -> None:
        from arb_orchestration.domain.events import FundingScreen

        self.screen = FundingScreen()  # learns the venues and symbols it sees, like the sensor's
        self.readers: dict[str, _Reader] = {}

    def drop(self) -> None:
        for reader in self.readers.values():
            reader.close()
        self.readers.clear()

    def retire_idle(self) -> None:
        now = time.monotonic()
        for key in [k for k, r in self.readers.items() if now - r.last_used > CONSUMER_IDLE_SECONDS]:
            self.readers.pop(key).close()

    def read(self, job: ShardJob) -> ShardResult:
        started = time.monotonic()
        try:
            result = self._read(job, started)
        except Exception as exc:  # reported to the sensor, which reads these partitions itself
            reader = self.readers.pop(_config_key(job), None)
            if reader is not None:
                reader.close()
            result = ShardResult(stopped="error", detail=f"{type(exc).__name__}: {exc}")
        result.seconds = time.monotonic() - started
        return result

    def _read(self, job: ShardJob, started: float) -> ShardResult:
        from confluent_kafka import TopicPartition

        from arb_orchestration.domain.triggers import NewestPerMarket

        key = _config_key(job)
        reader = self.readers.get(key)
        if reader is None:
            reader = self.readers[key] = _Reader(job.config)
            # Learn the partitions' leaders before assigning: a consumer that assigns first waits
            # ~0.5 s for its first fetch (measured; bench/README.md "Baselines").
            reader.consumer.list_topics(job.topic, timeout=max(1.0, job.seconds))
        reader.last_used = started
        consumer = reader.consumer
        starts = {s.partition: s.start for s in job.spans}
        if reader.next != starts:
            # Not where the client stands (a fresh consumer, another tick's range): assign exactly these
            # offsets. Reading on without a re-assign keeps what the client prefetched meanwhile.
            consumer.assign([TopicPartition(job.topic, p, offset) for p, offset in starts.items()])
        reader.next = None  # until this job ends with every returned message accounted for
        ends = {s.partition: s.end for s in job.spans}
        positions = dict(starts)
        newest = NewestPerMarket(max_markets=job.max_markets)
        screen = self.screen
        deadline = started + job.seconds
        result = ShardResult()
        handled = 0
        while True:
            behind = sum(max(0, ends[p] - positions[p]) for p in ends)
            if behind <= 0:
                result.stopped = DONE
                break
            want = min(job.chunk, job.limit - handled, behind)
            if want <= 0:
                result.stopped = "limit"
                break
            left = deadline - time.monotonic()
            if left <= 0:
                result.stopped = "deadline"
                break
            batch = consumer.consume(want, 0.0) or consumer.consume(want, min(left, 0.2))
            if reader.errors.fatal:
                raise RuntimeError(f"Kafka refused the reader: {'; '.join(reader.errors.fatal)}")
            if not batch:
                # Nothing came although the watermarks said there is more (offset gaps: transaction
                # markers, compaction; or a slow broker): the sensor's own loop deals with that.
                result.stopped = "idle"
                reader.next = positions
                break
            if any(map(_ERROR_OF, batch)):
                first = next(m.error() for m in batch if m.error() is not None)
                result.stopped, result.detail = "unclean", f"an error event: {first}"
                break  # (the client is past this chunk: the next job re-assigns)
            rows = screen([m.value() for m in batch], max_bytes=job.max_bytes)
            # The sensor's admission age limit (AdmissionCheck.fresh_after_epoch), now.
            fresher_than = time.time() - job.max_age_seconds + 0.001
            if not newest.offer_fresh_rows(rows, batch, fresher_than=fresher_than):
                result.stopped = "unclean"
                result.detail = "a chunk with a message the screen did not take, a stale rate or too many markets"
                break
            positions.update((p, o + 1) for p, o in dict(zip(map(_PARTITION_OF, batch), map(_OFFSET_OF, batch))).items())
            handled += len(batch)
        if result.stopped in (DONE, "limit", "deadline"):
            reader.next = dict(positions)  # every message returned was taken: the next job may read on
        result.handled = result.offered = handled
        result.next_offsets = {p: o for p, o in positions.items() if o != starts[p]}
        held = newest._held  # market -> [epoch, datetime, message, read order]
        result.winners = [(market, h[0], h[3], ShardMessage.of(h[2])) for market, h in held.items()]
        return result


def serve(conn: Connection) -> None:
    """A worker's loop: answer jobs until the sensor's process closes the socket (or nothing comes for long)."""
    worker = ShardWorker()
    conn.send(("ready", os.getpid()))
    while True:
        if not conn.poll(60.0):
            worker.retire_idle()
            if time.monotonic() - max((r.last_used for r in worker.readers.values()), default=_started) > WORKER_IDLE_EXIT_SECONDS:
                break
            continue
        try:
            request = conn.recv()
        except (EOFError, OSError):
            break  # the sensor's process is gone
        kind = request[0]
        if kind == "read":
            answer: Any = worker.read(request[1])
        elif kind == "drop":
            worker.drop()
            answer = "dropped"
        elif kind == "stop":
            break
        else:
            answer = ShardResult(stopped="error", detail=f"unknown request {kind!r}")
        try:
            conn.send(answer)
        except (BrokenPipeError, OSError):
            break
    worker.drop()


_started = time.monotonic()


# --------------------------------------------------------------------------- the pool (sensor's process)


class _Process:
    """One worker process and the sensor's end of its socket."""

    def __init__(self) -> None:
        parent, child = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "arb_orchestration.readers.funding_shards", str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                close_fds=True,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.conn = Connection(parent.detach())
        self.ready = False
        self.started = time.monotonic()

    def check_ready(self) -> bool:
        if not self.ready and self.process.poll() is None:
            try:
                if self.conn.poll(0):
                    self.ready = self.conn.recv()[0] == "ready"
            except (EOFError, OSError):
                pass
        return self.ready

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        try:
            self.conn.close()
        finally:
            if self.process.poll() is None:
                self.process.kill()
                try:
                    self.process.wait(5)
                except subprocess.TimeoutExpired:
                    pass


class ShardPool:
    """Up to `processes` worker processes, started on demand, kept for the code server's life."""

    def __init__(self, processes: int):
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        self.processes = processes
        self._slots: list[_Process | None] = [None] * processes
        self._busy = threading.Lock()
        self.failures = 0  # workers given up (died, overran): for the tick log and tests
        self.taken = 0  # messages the workers took, over the pool's life

    def ready(self) -> int:
        """How many workers can take a job now; starts the missing ones (without waiting for them)."""
        count = 0
        for index, slot in enumerate(self._slots):
            if slot is not None and not slot.alive():
                slot.kill()
                slot = None
            if slot is None:
                try:
                    slot = self._slots[index] = _Process()
                except OSError as exc:
                    log.warning("could not start a funding reader process: %s", exc)
                    continue
            if slot.check_ready():
                count += 1
        return count

    def wait_ready(self, timeout: float) -> int:
        """Start the workers and wait up to `timeout` seconds for all of them (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while (count := self.ready()) < self.processes and time.monotonic() < deadline:
            time.sleep(0.02)
        return count

    def pids(self) -> list[int]:
        return [slot.process.pid for slot in self._slots if slot is not None]

    def try_acquire(self) -> bool:
        return self._busy.acquire(blocking=False)

    def release(self) -> None:
        self._busy.release()

    def read(self, jobs: list[ShardJob]) -> list[ShardResult | None]:
        """Run each job on its own ready worker; None for a job whose worker failed or overran (it is replaced).

        Call with the pool acquired (`try_acquire`), with at most `ready()` jobs.
        """
        workers = [slot for slot in self._slots if slot is not None and slot.ready]
        if len(jobs) > len(workers):
            raise ValueError(f"{len(jobs)} jobs for {len(workers)} ready reader processes")
        sent: list[_Process | None] = []
        for job, worker in zip(jobs, workers):
            try:
                worker.conn.send(("read", job))
                sent.append(worker)
            except (OSError, ValueError):
                self._give_up(worker, "could not send it a job")
                sent.append(None)
        results: list[ShardResult | None] = []
        for job, worker in zip(jobs, sent):
            if worker is None:
                results.append(None)
                continue
            deadline = time.monotonic() + job.seconds + ANSWER_GRACE_SECONDS
            try:
                answered = worker.conn.poll(max(0.0, deadline - time.monotonic()))
                answer = worker.conn.recv() if answered else None
            except (EOFError, OSError):
                answer = None
            if not isinstance(answer, ShardResult):
                self._give_up(worker, "no answer within its read budget" if answer is None else "a garbled answer")
                results.append(None)
            else:
                self.taken += answer.handled
                results.append(answer)
        return results

    def drop_clients(self) -> None:
        """Every worker closes its consumers (the next job starts with fresh ones)."""
        for slot in self._slots:
            if slot is None or not slot.ready:
                continue
            try:
                slot.conn.send(("drop",))
                if not (slot.conn.poll(10) and slot.conn.recv() == "dropped"):
                    self._give_up(slot, "did not drop its consumers")
            except (EOFError, OSError):
                self._give_up(slot, "is gone")

    def close(self) -> None:
        for index, slot in enumerate(self._slots):
            if slot is not None:
                try:
                    slot.conn.send(("stop",))
                except (OSError, ValueError):
                    pass
                try:
                    slot.process.wait(2)
                except subprocess.TimeoutExpired:
                    pass
                slot.kill()
                self._slots[index] = None

    def _give_up(self, worker: _Process, why: str) -> None:
        self.failures += 1
        log.warning("funding reader process %s %s: stopped; its partitions are read in the sensor's process",
                    worker.process.pid, why)
        for index, slot in enumerate(self._slots):
            if slot is worker:
                self._slots[index] = None
        worker.kill()


_pool_lock = threading.Lock()
_pool: ShardPool | None = None


def shard_pool(processes: int) -> ShardPool:
    """The process-wide pool (re-made with another size when the setting changed)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool.processes != processes:
            if _pool is not None:
                _pool.close()
            _pool = ShardPool(processes)
        return _pool


def drop_shard_clients() -> None:
    """Close every worker's consumers (tests, benchmarks: each pass starts without warm clients)."""
    with _pool_lock:
        pool = _pool
    if pool is not None and pool.try_acquire():
        try:
            pool.drop_clients()
        finally:
            pool.release()


def close_shard_pool() -> None:
    """Stop every worker process (a code server shutting down; tests)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.close()


atexit.register(close_shard_pool)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity; a container's cgroup quota when one is set)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as handle:
            quota, period = handle.read().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return count


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m arb_orchestration.readers.funding_shards FD (started by the funding sensor)",
              file=sys.stderr)
        return 2
    serve(Connection(int(args[0])))
    return 0


if __name__ == "__main__":
    # Run from the module under its own name: what it pickles must say `funding_shards.ShardResult`,
    # which the sensor's process can load, not `__main__.ShardResult`.
    from arb_orchestration.readers import funding_shards

    sys.exit(funding_shards.main())
