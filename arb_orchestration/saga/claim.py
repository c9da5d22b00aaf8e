"""Per-saga claims: a lease with an owner and an expiry, taken atomically before acting on a saga.

Whoever compensates a saga, relaunches it, or starts a step of a run that continues it (a
re-execution, a forward-recovery run) first takes the saga's claim; whoever finds it held
steps back and says by whom. Actors: the run-failure recovery sensor, the recovery sweep,
the failure hook inside a run, and the first moments of a continuing run's step.

Why a compare-and-swap row in the instance's key-value table (see docs/sagas.md, "Claims"):
the saga log is append-only engine events (no compare-and-swap), the kill switch's
`set_cursor_values` is an unconditional upsert, and Dagster's op-concurrency slots
(`claim_concurrency_slot`) are *not* a mutex on PostgreSQL: their storage runs on an
AUTOCOMMIT engine, so the `SELECT ... FOR UPDATE` that picks a free slot holds no lock by
the time the `UPDATE` that takes it runs (a probe gave two winners for one slot in 16 of 30
six-thread races). What is atomic on both storages is one SQL statement on one row with a
unique key: `INSERT` (the unique index on `kvs.key` lets exactly one insert win),
`UPDATE ... WHERE key = :k AND value = :seen` and `DELETE ... WHERE key = :k AND value = :mine`
(at most one writer sees the value it read). The value is the lease as JSON; every change
compares the exact string it read, so a takeover, a renewal and a release are each one
conditional statement. No schema of our own: the `kvs` table and `run_storage.connect()`
exist on SQLite and PostgreSQL run storage alike.

A lease dies when its expiry passes, or — for a holder inside a run (hook, step) — as soon
as that run has ended (its worker is gone), except for a run that run monitoring stopped for
exceeding its maximum runtime: its worker may still be shutting down, so its lease runs out
its time.

A recovery actor holds its lease through `HeldClaim`: a heartbeat thread renews it every
`ttl / 4` for as long as the actor acts (a single long compensation call included), so the TTL
bounds how long a *dead* holder blocks recovery, not how long a compensation may take. A lease
found lost is reported at once and the actor stops at its next safe point (see `HeldClaim`).
"""

from __future__ import annotations

import abc
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from dagster import DagsterInstance

CLAIM_KEY_PREFIX = "arb/saga_claim/"
# A recovery actor (sensor, hook) keeps its lease alive with a heartbeat (`HeldClaim`) for as long
# as it holds it, a single long compensation call included, so the TTL only has to cover a few
# missed renewals, not the longest compensation: it bounds how long a *dead* holder (a code server
# restarted mid-compensation) delays recovery. 60 s with a renewal every 15 s survives three
# renewals in a row failing (a database blip, a stalled process) before anyone may take over
# (docs/sagas.md "Claims").
DEFAULT_CLAIM_TTL_SECONDS = 60.0
DEFAULT_RENEW_EVERY_SECONDS = 15.0
# A holder stops renewing after this long, so a call hung for good cannot keep its saga forever:
# its lease then runs out and the next actor takes over (the hung one is stopped at its next safe
# point). Far above what a compensation takes with the resources' own timeouts and retries.
DEFAULT_MAX_HOLD_SECONDS = 1800.0
HEARTBEAT_THREAD_PREFIX = "saga-claim-heartbeat"
# A continuing run's step holds the claim only while it checks the log and records its start.
STEP_CLAIM_TTL_SECONDS = 120.0
# How long a continuing run's step waits for a claim held by a recovery actor before failing
# (transient: its RetryPolicy tries again).
STEP_CLAIM_WAIT_SECONDS = 30.0


def claim_key(saga_id: str) -> str:
    return f"{CLAIM_KEY_PREFIX}{saga_id}"


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Lease:
    """One holder's claim on one saga."""

    saga_id: str
    owner: str  # unique per acquisition
    actor: str  # who, for people: "sensor transfer_saga_recovery_sensor", "step b of run 1234"
    acquired_at: float
    expires_at: float
    run_id: str | None = None  # set when the holder lives inside that run: the lease dies with the run
    host: str = ""
    pid: int = 0
    raw: str = field(default="", compare=False, repr=False)  # the exact stored value (for the CAS)

    def to_json(self) -> str:
        return json.dumps(
            {
                "saga_id": self.saga_id,
                "owner": self.owner,
                "actor": self.actor,
                "acquired_at": self.acquired_at,
                "expires_at": self.expires_at,
                "run_id": self.run_id,
                "host": self.host,
                "pid": self.pid,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, raw: str) -> "Lease":
        data = json.loads(raw)
        return cls(
            saga_id=str(data["saga_id"]),
            owner=str(data["owner"]),
            actor=str(data.get("actor", "?")),
            acquired_at=float(data["acquired_at"]),
            expires_at=float(data["expires_at"]),
            run_id=data.get("run_id"),
            host=str(data.get("host", "")),
            pid=int(data.get("pid") or 0),
            raw=raw,
        )

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        where = f"{self.host}:{self.pid}" if self.host else "?"
        return (f"{self.actor} (owner {self.owner} on {where}, since {_utc(self.acquired_at)}, "
                f"lease ends in {max(0.0, self.expires_at - now):.0f} s)")


@dataclass(frozen=True)
class ClaimResult:
    """`acquired` and our `lease`; else the `holder` that has it. `took_over`: the dead lease we replaced."""

    acquired: bool
    lease: Lease | None = None
    holder: Lease | None = None
    took_over: Lease | None = None

    def __bool__(self) -> bool:
        return self.acquired


class ClaimStore(abc.ABC):
    """Four single-row operations, each atomic against concurrent callers (processes included)."""

    @abc.abstractmethod
    def read(self, key: str) -> str | None: ...

    @abc.abstractmethod
    def insert(self, key: str, value: str) -> bool:
        """Store `value` under `key` if there is none; False if there is one."""

    @abc.abstractmethod
    def replace(self, key: str, seen: str, value: str) -> bool:
        """Set `key` to `value` only if it still holds `seen`."""

    @abc.abstractmethod
    def delete(self, key: str, seen: str) -> bool:
        """Remove `key` only if it still holds `seen`."""


class InMemoryClaimStore(ClaimStore):
    """For unit tests (threads): a dict under a lock."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._lock = threading.Lock()

    def read(self, key: str) -> str | None:
        with self._lock:
            return self._values.get(key)

    def insert(self, key: str, value: str) -> bool:
        with self._lock:
            if key in self._values:
                return False
            self._values[key] = value
            return True

    def replace(self, key: str, seen: str, value: str) -> bool:
        with self._lock:
            if self._values.get(key) != seen:
                return False
            self._values[key] = value
            return True

    def delete(self, key: str, seen: str) -> bool:
        with self._lock:
            if self._values.get(key) != seen:
                return False
            del self._values[key]
            return True


class InstanceClaimStore(ClaimStore):
    """The Dagster instance's key-value table (`kvs`, unique `key`) through its run storage's connection.

    SQLite run storage wraps each `connect()` in a transaction; PostgreSQL's runs in AUTOCOMMIT:
    either way each call below is one statement, atomic on its own.
    """

    def __init__(self, instance: "DagsterInstance"):
        self.instance = instance

    def _connect(self):
        storage = self.instance.run_storage
        connect = getattr(storage, "connect", None)
        if connect is None:  # not SQL run storage: there is no atomic primitive we can reach
            raise RuntimeError(f"saga claims need SQL run storage (SQLite or PostgreSQL), not {type(storage).__name__}")
        return connect()

    def read(self, key: str) -> str | None:
        return self.instance.run_storage.get_cursor_values({key}).get(key)

    def insert(self, key: str, value: str) -> bool:
        from dagster._core.storage.runs.schema import KeyValueStoreTable
        from sqlalchemy import exc as db_exc

        try:
            with self._connect() as conn:
                conn.execute(KeyValueStoreTable.insert().values(key=key, value=value))
        except db_exc.IntegrityError:
            return False
        return True

    def replace(self, key: str, seen: str, value: str) -> bool:
        from dagster._core.storage.runs.schema import KeyValueStoreTable

        table = KeyValueStoreTable
        with self._connect() as conn:
            result = conn.execute(
                table.update().where((table.c.key == key) & (table.c.value == seen)).values(value=value)
            )
            return result.rowcount == 1

    def delete(self, key: str, seen: str) -> bool:
        from dagster._core.storage.runs.schema import KeyValueStoreTable

        table = KeyValueStoreTable
        with self._connect() as conn:
            result = conn.execute(table.delete().where((table.c.key == key) & (table.c.value == seen)))
            return result.rowcount == 1


class ClaimLostError(Exception):
    """Our lease was taken over (it expired, or was judged dead): stop acting on the saga."""


class SagaClaims:
    """Acquire, renew and release per-saga leases on a `ClaimStore`.

    `holder_alive(lease)` says whether the holder of an unexpired lease is still there (default:
    yes — only expiry ends it); `InstanceSagaClaims` ends a run-bound lease when its run ended.
    """

    def __init__(self, store: ClaimStore, *, holder_alive: Callable[[Lease], bool] | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        self.store = store
        self._holder_alive = holder_alive
        self._clock = clock
        self._sleep = sleep

    def holder(self, saga_id: str) -> Lease | None:
        raw = self.store.read(claim_key(saga_id))
        return _parse(raw, saga_id) if raw is not None else None

    def acquire(self, saga_id: str, actor: str, *, ttl_seconds: float = DEFAULT_CLAIM_TTL_SECONDS,
                run_id: str | None = None, wait_seconds: float = 0.0, poll_seconds: float = 0.2) -> ClaimResult:
        """Take the claim, or report who holds it. Waits up to `wait_seconds` for a live holder to let go."""
        key = claim_key(saga_id)
        deadline = self._clock() + wait_seconds
        while True:
            now = self._clock()
            mine = Lease(saga_id, f"{uuid.uuid4().hex[:12]}", actor, now, now + ttl_seconds, run_id,
                         socket.gethostname(), os.getpid())
            mine = replace(mine, raw=mine.to_json())
            # Insert first: an unclaimed saga (the usual case) costs one statement.
            if self.store.insert(key, mine.raw):
                return ClaimResult(True, lease=mine)
            raw = self.store.read(key)
            if raw is None:
                continue  # released between our insert and our read: try again
            current = _parse(raw, saga_id)
            if current.expired(now) or not self._alive(current):
                if self.store.replace(key, raw, mine.raw):
                    return ClaimResult(True, lease=mine, took_over=current)
                continue  # someone else took it over, renewed or released it first
            if now >= deadline:
                return ClaimResult(False, holder=current)
            self._sleep(min(poll_seconds, max(0.0, deadline - now)))

    def renew(self, lease: Lease, ttl_seconds: float = DEFAULT_CLAIM_TTL_SECONDS) -> Lease:
        """Push our expiry out; `ClaimLostError` if the lease is no longer ours."""
        renewed = replace(lease, expires_at=self._clock() + ttl_seconds)
        renewed = replace(renewed, raw=renewed.to_json())
        key = claim_key(lease.saga_id)
        if self.store.replace(key, lease.raw, renewed.raw):
            return renewed
        raw = self.store.read(key)
        holder = _parse(raw, lease.saga_id) if raw is not None else None
        if holder is not None and holder.owner == lease.owner and self.store.replace(key, raw, renewed.raw):
            # Still ours in a version we never saw: an earlier renewal committed but its reply was
            # lost (a dropped connection). Owners are unique per acquisition, so nobody took it over.
            return renewed
        raise ClaimLostError(f"saga {lease.saga_id}: our claim ({lease.actor}, owner {lease.owner}) was taken "
                             f"over by {holder.describe(self._clock()) if holder else 'nobody (released)'}")

    def release(self, lease: Lease) -> bool:
        """Let go; False if it was no longer ours (taken over after expiring)."""
        return self.store.delete(claim_key(lease.saga_id), lease.raw)

    def _alive(self, lease: Lease) -> bool:
        return True if self._holder_alive is None else self._holder_alive(lease)


class HeldClaim:
    """A lease we hold, kept alive by a background heartbeat while we act on the saga.

    It is the one owner of the lease's current value: the heartbeat, the actor's own renewals at
    its safe points (`renew`, e.g. before each compensation) and `release` all go through it under
    one lock, so every compare-and-swap compares the latest value (a stale one would make the
    release fail and leave the lease to expire, blocking recovery for a TTL).

    The heartbeat cannot stop a call in flight. When a renewal finds the lease taken over it logs
    that at ERROR at once and remembers it; the actor's next `renew` raises `ClaimLostError`, so it
    does nothing more (the recovery actors also renew before every write to the saga log: see
    `recovery.holding_claim`). A storage error in one heartbeat is logged and retried at the next:
    the lease has TTL minus one period to spare, and only a failed compare means it is lost.

    Threads and connections: `InstanceClaimStore` opens a fresh connection for each statement
    (`run_storage.connect()` is NullPool on SQLite and on PostgreSQL), so the heartbeat thread shares
    no connection with the actor's thread; on SQLite a renewal can meet "database is locked" and is
    retried like any storage error. The thread is a daemon: it dies with its process (SIGKILL, OOM,
    a code server restart), which is what lets a dead holder's lease run out. After
    `max_hold_seconds` it stops renewing, so a call hung for good cannot keep its saga forever.
    """

    def __init__(self, claims: SagaClaims, lease: Lease, *, ttl_seconds: float = DEFAULT_CLAIM_TTL_SECONDS,
                 renew_every_seconds: float | None = None,
                 max_hold_seconds: float | None = DEFAULT_MAX_HOLD_SECONDS, logger=None):
        if renew_every_seconds is None:
            renew_every_seconds = ttl_seconds / 4
        if not 0 < renew_every_seconds < ttl_seconds:
            raise ValueError(f"renew_every_seconds ({renew_every_seconds:g}) must be above 0 and well below the "
                             f"lease's ttl_seconds ({ttl_seconds:g})")
        self.claims = claims
        self.ttl_seconds = ttl_seconds
        self.renew_every_seconds = renew_every_seconds
        self.max_hold_seconds = max_hold_seconds
        self._logger = logger or logging.getLogger("arb_orchestration.saga")
        self._lease = lease
        self._held_since = claims._clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: str | None = None
        self.renewals = 0  # by the heartbeat
        self.renewal_errors = 0

    @property
    def lease(self) -> Lease:
        with self._lock:
            return self._lease

    @property
    def lost(self) -> str | None:
        """Why the lease is no longer ours (None while it is, as far as we know)."""
        with self._lock:
            return self._lost

    def renew(self, _step: str | None = None) -> Lease:
        """Renew now (a safe point); `ClaimLostError` if the lease is no longer ours."""
        with self._lock:
            if self._lost is not None:
                raise ClaimLostError(self._lost)
            try:
                self._lease = self.claims.renew(self._lease, self.ttl_seconds)
            except ClaimLostError as exc:
                self._lost = str(exc)
                raise
            return self._lease

    def beat(self) -> bool:
        """One heartbeat; False once there is nothing more to renew (lost, or held past `max_hold_seconds`)."""
        lease = self.lease
        held_for = self.claims._clock() - self._held_since
        if self.max_hold_seconds is not None and held_for >= self.max_hold_seconds:
            self._say("error",
                f"saga {lease.saga_id}: {lease.actor} has held its claim for {held_for:.0f} s (max_hold_seconds "
                f"{self.max_hold_seconds:g}): its heartbeat stops renewing, so the lease runs out "
                f"{max(0.0, lease.expires_at - self.claims._clock()):.0f} s from now and another actor may take "
                f"over; the call in flight is probably hung")
            return False
        try:
            self.renew()
        except ClaimLostError as exc:
            self._say("error",
                f"CLAIM LOST: {exc}. {lease.actor} stops acting on saga {lease.saga_id} at its next safe point: "
                f"the call in flight (if any) cannot be aborted; its outcome will not be recorded and nothing "
                f"more will be done by this actor (the new holder repeats it, idempotent by key)")
            return False
        except Exception as exc:  # storage trouble: the lease still has time; try again next period
            self.renewal_errors += 1
            self._say("warning",
                f"saga {lease.saga_id}: the heartbeat of {lease.actor} could not renew its claim "
                f"({type(exc).__name__}: {exc}); trying again in {self.renew_every_seconds:g} s "
                f"(lease ends in {max(0.0, lease.expires_at - self.claims._clock()):.0f} s)")
            return True
        self.renewals += 1
        return True

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.renew_every_seconds):
                if not self.beat():
                    return
        except BaseException as exc:  # never die silently: the lease would run out unexplained
            self._say("error", f"saga {self._lease.saga_id}: claim heartbeat crashed: {type(exc).__name__}: {exc}")

    def _say(self, level: str, message: str) -> None:
        # The actor's logger may stop working under the heartbeat (a sensor tick that timed out and
        # whose log capture was closed while its compensation runs on): that must not stop renewals.
        try:
            getattr(self._logger, level)(message)
        except Exception:
            getattr(logging.getLogger("arb_orchestration.saga"), level)(message)

    def start_heartbeat(self) -> "HeldClaim":
        if self._thread is None:
            lease = self.lease
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"{HEARTBEAT_THREAD_PREFIX} {lease.saga_id} ({lease.actor})")
            self._thread.start()
        return self

    def stop_heartbeat(self) -> None:
        """Stop renewing (waits for a renewal in progress to finish). The lease stays until released or expired."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def release(self) -> bool:
        """Stop the heartbeat and let go; False if the lease was no longer ours."""
        self.stop_heartbeat()
        with self._lock:
            if self._lost is not None:
                return False
            return self.claims.release(self._lease)

    def __enter__(self) -> "HeldClaim":
        return self.start_heartbeat()

    def __exit__(self, *exc_info) -> None:
        self.release()


def _parse(raw: str, saga_id: str) -> Lease:
    try:
        return Lease.from_json(raw)
    except (ValueError, KeyError, TypeError):
        # Unreadable: treat as an expired lease, so it can be replaced (compare-and-swap on this raw).
        return Lease(saga_id, "?", f"unreadable claim {raw[:60]!r}", 0.0, 0.0, raw=raw)


class InstanceSagaClaims(SagaClaims):
    """Claims in a Dagster instance; a lease held from inside a run dies when that run has ended."""

    def __init__(self, instance: "DagsterInstance", **kwargs):
        super().__init__(InstanceClaimStore(instance), holder_alive=self._run_alive, **kwargs)
        self.instance = instance

    def _run_alive(self, lease: Lease) -> bool:
        if lease.run_id is None:
            return True  # a sensor: only expiry tells
        from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES

        run = self.instance.get_run_by_id(lease.run_id)
        if run is None:
            return False
        if run.status in IN_PROGRESS_RUN_STATUSES:
            return True
        # Ended. Its worker is gone — unless run monitoring marked it failed for exceeding its
        # maximum runtime while asking the worker to stop (it may still be compensating in its hook).
        from arb_orchestration.saga.sensors import stopped_for_max_runtime

        return stopped_for_max_runtime(self.instance, lease.run_id) is not None


class InMemorySagaClaims(SagaClaims):
    """Claims for pure tests; `run_alive` maps a run id to whether that run is still in progress."""

    def __init__(self, run_alive: Callable[[str], bool] | None = None, **kwargs):
        def alive(lease: Lease) -> bool:
            return True if lease.run_id is None or run_alive is None else run_alive(lease.run_id)

        super().__init__(InMemoryClaimStore(), holder_alive=alive, **kwargs)
