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
`ttl / 6` for as long as the actor acts (a single long compensation call included), so the TTL
bounds how long a *dead* holder blocks recovery, not how long a compensation may take. A lease
found lost is reported at once and the actor stops at its next safe point (see `HeldClaim`). A
holder whose renewals keep *failing* (it cannot reach the database, its statements stall) fences
itself: once no renewal has been confirmed for `ttl - margin` on its own monotonic clock, it
treats the lease as lost, before anyone else may take it over.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, Iterator

from arb_orchestration.resources.errors import TransientError

if TYPE_CHECKING:
    from dagster import DagsterInstance

CLAIM_KEY_PREFIX = "arb/saga_claim/"
# A recovery actor (sensor, hook) keeps its lease alive with a heartbeat (`HeldClaim`) for as long
# as it holds it, a single long compensation call included, so the TTL only has to cover a few
# missed renewals, not the longest compensation: it bounds how long a *dead* holder (a code server
# restarted mid-compensation) delays recovery (docs/sagas.md "Claims").
DEFAULT_CLAIM_TTL_SECONDS = 60.0
# ttl / 6: with the self-fence below at ttl - 15 s = 45 s, a holder gets four more tries (at 10, 20,
# 30, 40 s) and a last one at 45 s after its last confirmed renewal before it gives the lease up.
DEFAULT_RENEW_EVERY_SECONDS = 10.0
RENEWALS_PER_TTL = 6
# Self-fencing: a holder that has not *confirmed* a renewal for `ttl - margin` (its own monotonic
# clock, counted from just before the statement that wrote the expiry) considers its lease lost.
# The margin covers what can make another actor see the lease expired, or see our write land
# after it judged so, earlier than our clock says (docs/sagas.md "Self-fencing"):
#   * wall-clock offset between hosts: the expiry is written with the holder's `time.time()` and
#     judged with the taker's; NTP/chrony keep hosts within milliseconds, alarms fire at ~1 s;
#     budget 2 s;
#   * clock *rate*: the monotonic clock may drift from real time by up to 500 ppm (NTP's maximum
#     slew), 30 ms per 60 s, on each of two hosts: budget 0.1 s;
#   * check-to-effect: after a safe point passes, the guarded action still has to land: one
#     saga-log statement (SQLite waits up to its busy timeout on a locked database; PostgreSQL has
#     no statement timeout by default, so "slow" is unbounded and anything beyond the budget is
#     the in-flight case the fence cannot cover; the *claim's* own statements are bounded, see
#     `claim_statement_timeout`) or the dispatch of a venue request: budget 10 s;
#   * scheduling: the actor's thread descheduled between a safe point and its action on a loaded
#     2-core host, a GC pause: budget ~2 s.
# That is ~14 s; rounded up to 15 s (a quarter of the 60 s TTL). For short TTLs (tests) the margin
# is a quarter of the TTL.
DEFAULT_FENCE_MARGIN_SECONDS = 15.0
# A holder stops renewing after this long, so a call hung for good cannot keep its saga forever:
# its lease then runs out and the next actor takes over (the hung one is stopped at its next safe
# point). Far above what a compensation takes with the resources' own timeouts and retries.
DEFAULT_MAX_HOLD_SECONDS = 1800.0
HEARTBEAT_THREAD_PREFIX = "saga-claim-heartbeat"
# Every claim statement is bounded (docs/saga-claims-timeouts.md): on PostgreSQL by `SET LOCAL
# statement_timeout` and `lock_timeout` in the statement's own transaction, on SQLite by the
# connection's busy timeout (Dagster's is 30 s). Without a bound, an UPDATE stuck behind a lock or
# a slow server outlives the lease: the heartbeat thread hangs in it and never reports the fence.
# The bound is the smaller of two fractions of the claim's timing (`claim_statement_timeout`):
#   * ttl / (2 * RENEWALS_PER_TTL) (5 s of a 60 s TTL): a stuck heartbeat statement gives control
#     back within half a renewal period, so the next try (or the fence) is not delayed by it; a
#     renewal is at most three statements (compare-and-swap, read, compare-and-swap: 15 s), far
#     below ttl - margin (45 s);
#   * margin / 3 (5 s of 15 s): the heartbeat's last try starts at the fence; bounded, it ends (and
#     the holder fences itself, or its renewal lands) with two thirds of the margin still left
#     before another actor may find the lease expired.
# A statement that hits its bound is cancelled by the server (rolled back, not applied) and counts
# as "could not": `ClaimStatementTimeoutError`, never as success.
STATEMENT_BOUND_RENEWAL_FRACTION = 2 * RENEWALS_PER_TTL
STATEMENT_BOUND_MARGIN_FRACTION = 3
# A continuing run's step holds the claim while it checks the log and records its start: a few
# statements, normally milliseconds, but a slow database can stretch them past any TTL, so the step
# holds it through `HeldClaim` too (heartbeat + self-fence, engine._claim_for_step).
STEP_CLAIM_TTL_SECONDS = 120.0
# How long a continuing run's step waits for a claim held by a recovery actor before failing
# (transient: its RetryPolicy tries again).
STEP_CLAIM_WAIT_SECONDS = 30.0


def claim_key(saga_id: str) -> str:
    return f"{CLAIM_KEY_PREFIX}{saga_id}"


def claim_statement_timeout(ttl_seconds: float = DEFAULT_CLAIM_TTL_SECONDS,
                            fence_margin_seconds: float | None = None) -> float:
    """The bound on one claim statement for a lease of `ttl_seconds` (see `STATEMENT_BOUND_*`): 5 s by default."""
    margin = default_fence_margin(ttl_seconds) if fence_margin_seconds is None else fence_margin_seconds
    return min(ttl_seconds / STATEMENT_BOUND_RENEWAL_FRACTION, margin / STATEMENT_BOUND_MARGIN_FRACTION)


# The bound in force for claim statements made by this thread (`claim_statement_bound`). A context
# variable rather than a parameter of `ClaimStore`'s methods, so stores that wrap another (tests)
# need not pass it on; each thread (the heartbeat's included) sets its own.
_STATEMENT_BOUND: contextvars.ContextVar[float | None] = contextvars.ContextVar("saga_claim_statement_bound",
                                                                               default=None)


@contextlib.contextmanager
def claim_statement_bound(seconds: float) -> Iterator[float]:
    """Bound the claim statements made inside (nested bounds: the smallest wins)."""
    current = _STATEMENT_BOUND.get()
    bound = seconds if current is None else min(current, seconds)
    token = _STATEMENT_BOUND.set(bound)
    try:
        yield bound
    finally:
        _STATEMENT_BOUND.reset(token)


def current_statement_bound() -> float:
    """The bound in force here, or the default claim's (5 s)."""
    bound = _STATEMENT_BOUND.get()
    return claim_statement_timeout() if bound is None else bound


class ClaimStatementTimeoutError(TransientError):
    """A claim statement hit its bound and was cancelled (not applied): the claim could not be
    acquired, renewed, released or read. Never a success: an acquirer does not act, a holder counts
    it as a failed renewal (and fences itself if none succeeds before its fence)."""


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
    # Local only (not stored): when this lease's expiry passes by the holder's monotonic clock, counted
    # from a reading taken just *before* the statement that wrote it (so a slow statement eats into it).
    local_expires_at: float | None = field(default=None, compare=False, repr=False)

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

    Each call below is one statement, atomic on its own, in a transaction of its own, and bounded
    (`current_statement_bound`): PostgreSQL run storage runs AUTOCOMMIT, so the connection is
    switched to READ COMMITTED for the call (back to the pool's setting when it returns: NullPool
    closes it, the webserver's pool resets it) to open a transaction in which `SET LOCAL
    statement_timeout` and `lock_timeout` apply to our statement only, never to Dagster's own; SQLite
    run storage wraps each `connect()` in a transaction already, and its connection (NullPool, not
    reused) gets `PRAGMA busy_timeout` in place of Dagster's 30 s. A statement cancelled by its bound
    was rolled back: `ClaimStatementTimeoutError`, logged at WARNING.
    """

    def __init__(self, instance: "DagsterInstance"):
        self.instance = instance

    def _connect(self):
        storage = self.instance.run_storage
        connect = getattr(storage, "connect", None)
        if connect is None:  # not SQL run storage: there is no atomic primitive we can reach
            raise RuntimeError(f"saga claims need SQL run storage (SQLite or PostgreSQL), not {type(storage).__name__}")
        return connect()

    @contextlib.contextmanager
    def _bounded(self, what: str, key: str):
        from sqlalchemy import exc as db_exc

        bound = current_statement_bound()
        millis = max(1, int(bound * 1000))
        began = time.monotonic()
        try:
            with self._connect() as conn:
                dialect = conn.dialect.name
                if dialect == "postgresql":
                    conn.execution_options(isolation_level="READ COMMITTED")
                    with conn.begin():
                        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {millis}")
                        # A little below the statement's: a wait for a lock is reported as such
                        # (55P03), not as a slow statement (57014); both mean "not applied".
                        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {max(1, millis * 9 // 10)}")
                        yield conn
                else:
                    if dialect == "sqlite":
                        conn.exec_driver_sql(f"PRAGMA busy_timeout = {millis}")
                    yield conn
        except db_exc.DBAPIError as exc:
            if not _statement_timed_out(exc):
                raise
            message = (f"saga claim statement ({what} {key}) gave up after {time.monotonic() - began:.2f} s "
                       f"(bound {bound:g} s: {_bound_name(exc)}); cancelled and not applied, so it counts as "
                       f"could not {what}: {type(exc.orig).__name__}: {str(exc.orig).strip()[:200]}")
            logging.getLogger("arb_orchestration.saga").warning(message)
            raise ClaimStatementTimeoutError(message) from exc

    def read(self, key: str) -> str | None:
        from dagster._core.storage.runs.schema import KeyValueStoreTable
        from sqlalchemy import select

        table = KeyValueStoreTable
        with self._bounded("read", key) as conn:
            row = conn.execute(select(table.c.value).where(table.c.key == key)).first()
        return None if row is None else row[0]

    def insert(self, key: str, value: str) -> bool:
        from dagster._core.storage.runs.schema import KeyValueStoreTable
        from sqlalchemy import exc as db_exc

        try:
            with self._bounded("insert", key) as conn:
                conn.execute(KeyValueStoreTable.insert().values(key=key, value=value))
        except db_exc.IntegrityError:
            return False
        return True

    def replace(self, key: str, seen: str, value: str) -> bool:
        from dagster._core.storage.runs.schema import KeyValueStoreTable

        table = KeyValueStoreTable
        with self._bounded("replace", key) as conn:
            result = conn.execute(
                table.update().where((table.c.key == key) & (table.c.value == seen)).values(value=value)
            )
            return result.rowcount == 1

    def delete(self, key: str, seen: str) -> bool:
        from dagster._core.storage.runs.schema import KeyValueStoreTable

        table = KeyValueStoreTable
        with self._bounded("delete", key) as conn:
            result = conn.execute(table.delete().where((table.c.key == key) & (table.c.value == seen)))
            return result.rowcount == 1


# PostgreSQL: 57014 query_canceled (statement_timeout), 55P03 lock_not_available (lock_timeout).
_PG_TIMEOUT_CODES = {"57014": "PostgreSQL statement_timeout", "55P03": "PostgreSQL lock_timeout"}


def _statement_timed_out(exc: Exception) -> bool:
    orig = getattr(exc, "orig", None)
    if getattr(orig, "pgcode", None) in _PG_TIMEOUT_CODES:
        return True
    text = str(orig).lower()
    return type(orig).__module__.startswith("sqlite3") and ("locked" in text or "busy" in text)


def _bound_name(exc: Exception) -> str:
    code = getattr(getattr(exc, "orig", None), "pgcode", None)
    return _PG_TIMEOUT_CODES.get(code, "SQLite busy timeout")


class ClaimLostError(Exception):
    """Our lease was taken over (it expired, or was judged dead): stop acting on the saga."""


class SagaClaims:
    """Acquire, renew and release per-saga leases on a `ClaimStore`.

    `holder_alive(lease)` says whether the holder of an unexpired lease is still there (default:
    yes — only expiry ends it); `InstanceSagaClaims` ends a run-bound lease when its run ended.

    Each store statement is bounded by `statement_timeout_seconds`, or (None) by
    `claim_statement_timeout` of the lease's TTL (5 s for 60 s); one that hits its bound raises
    `ClaimStatementTimeoutError` (an acquire logs it at ERROR: the actor does not act).
    """

    def __init__(self, store: ClaimStore, *, holder_alive: Callable[[Lease], bool] | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic, statement_timeout_seconds: float | None = None):
        if statement_timeout_seconds is not None and not statement_timeout_seconds > 0:
            raise ValueError(f"statement_timeout_seconds ({statement_timeout_seconds:g}) must be above 0")
        self.store = store
        self.statement_timeout_seconds = statement_timeout_seconds
        self._holder_alive = holder_alive
        self._clock = clock  # wall clock: expiries are stored in it and compared across hosts
        self._monotonic = monotonic  # the holder's own clock for self-fencing (never jumps)
        self._sleep = sleep

    def statement_bound(self, ttl_seconds: float = DEFAULT_CLAIM_TTL_SECONDS,
                        fence_margin_seconds: float | None = None) -> float:
        """The bound on each statement for a lease of `ttl_seconds` (the explicit one if set)."""
        if self.statement_timeout_seconds is not None:
            return self.statement_timeout_seconds
        return claim_statement_timeout(ttl_seconds, fence_margin_seconds)

    def holder(self, saga_id: str) -> Lease | None:
        with claim_statement_bound(self.statement_bound()):
            raw = self.store.read(claim_key(saga_id))
        return _parse(raw, saga_id) if raw is not None else None

    def acquire(self, saga_id: str, actor: str, *, ttl_seconds: float = DEFAULT_CLAIM_TTL_SECONDS,
                run_id: str | None = None, wait_seconds: float = 0.0, poll_seconds: float = 0.2) -> ClaimResult:
        """Take the claim, or report who holds it. Waits up to `wait_seconds` for a live holder to let go.

        `ClaimStatementTimeoutError` if a statement hit its bound: not acquired (the caller must not act)."""
        bound = self.statement_bound(ttl_seconds)
        try:
            with claim_statement_bound(bound):
                return self._acquire(saga_id, actor, ttl_seconds, run_id, wait_seconds, poll_seconds)
        except ClaimStatementTimeoutError as exc:
            logging.getLogger("arb_orchestration.saga").error(
                f"saga {saga_id}: {actor} could NOT acquire its claim: a claim statement hit its bound of {bound:g} s "
                f"(the database is locked or too slow); it does not act on the saga ({exc})")
            raise

    def _acquire(self, saga_id: str, actor: str, ttl_seconds: float, run_id: str | None, wait_seconds: float,
                 poll_seconds: float) -> ClaimResult:
        key = claim_key(saga_id)
        deadline = self._clock() + wait_seconds
        while True:
            now, mono = self._clock(), self._monotonic()
            mine = Lease(saga_id, f"{uuid.uuid4().hex[:12]}", actor, now, now + ttl_seconds, run_id,
                         socket.gethostname(), os.getpid())
            mine = replace(mine, raw=mine.to_json(), local_expires_at=mono + ttl_seconds)
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
        """Push our expiry out; `ClaimLostError` if the lease is no longer ours, `ClaimStatementTimeoutError`
        if a statement hit its bound (not renewed: the lease keeps its old expiry)."""
        with claim_statement_bound(self.statement_bound(ttl_seconds)):
            return self._renew(lease, ttl_seconds)

    def _renew(self, lease: Lease, ttl_seconds: float) -> Lease:
        mono = self._monotonic()  # before the statement: a slow one shortens what we may count on
        renewed = replace(lease, expires_at=self._clock() + ttl_seconds)
        renewed = replace(renewed, raw=renewed.to_json(), local_expires_at=mono + ttl_seconds)
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
        with claim_statement_bound(self.statement_bound()):
            return self.store.delete(claim_key(lease.saga_id), lease.raw)

    def _alive(self, lease: Lease) -> bool:
        return True if self._holder_alive is None else self._holder_alive(lease)


def default_fence_margin(ttl_seconds: float) -> float:
    """`DEFAULT_FENCE_MARGIN_SECONDS`, or a quarter of a shorter TTL's (tests use TTLs of a second or two)."""
    return min(DEFAULT_FENCE_MARGIN_SECONDS, ttl_seconds / 4)


def check_claim_timing(ttl_seconds: float, renew_every_seconds: float, fence_margin_seconds: float,
                       who: str = "the claim") -> None:
    """ValueError unless the heartbeat gets at least one renewal in before the holder would fence itself."""
    if not 0 < renew_every_seconds < ttl_seconds:
        raise ValueError(f"{who}: renew_every_seconds ({renew_every_seconds:g}) must be above 0 and below "
                         f"ttl_seconds ({ttl_seconds:g})")
    if not 0 <= fence_margin_seconds < ttl_seconds - renew_every_seconds:
        raise ValueError(f"{who}: fence_margin_seconds ({fence_margin_seconds:g}) must be at least 0 and leave a "
                         f"renewal period before the fence (ttl_seconds {ttl_seconds:g} - renew_every_seconds "
                         f"{renew_every_seconds:g})")


class HeldClaim:
    """A lease we hold, kept alive by a background heartbeat while we act on the saga.

    It is the one owner of the lease's current value: the heartbeat, the actor's own renewals at
    its safe points (`renew`, e.g. before each compensation) and `release` all go through it one
    statement at a time, so every compare-and-swap compares the latest value (a stale one would
    make the release fail and leave the lease to expire, blocking recovery for a TTL).

    The lease is lost in two ways, and both end the same way (logged at ERROR once, remembered;
    every later `renew` raises `ClaimLostError`, so the actor does nothing more: the recovery
    actors renew before every write to the saga log and before every compensation call, see
    `recovery.holding_claim`):

    * **taken over**: a renewal's compare-and-swap finds another value;
    * **self-fenced**: no renewal has been *confirmed* for `ttl - fence_margin_seconds` by the
      holder's own monotonic clock, counted from just before the statement that wrote the last
      expiry. Past that point another actor may soon find the lease expired, and the holder, whose
      renewals only *errored* (database unreachable for it, statements stalling, a partition),
      would never learn it was taken over. A renewal that succeeds but whose statement started too
      long ago (a slow statement) fences too. A safe point never waits past the fence for a
      renewal stuck in a statement.

    A storage error in one renewal is not a loss while the fence is ahead: the heartbeat logs it
    and tries again (every `renew_every_seconds`, and once more at the fence); a safe point logs it
    and carries on, since the last confirmed renewal still covers it. What neither can stop is a
    call already in flight: a compensation that started before the fence may still be running
    after the lease expired (docs/sagas.md "Self-fencing").

    Threads and connections: `InstanceClaimStore` opens a fresh connection for each statement
    (`run_storage.connect()` is NullPool on SQLite and on PostgreSQL), so the heartbeat thread shares
    no connection with the actor's thread; on SQLite a renewal can meet "database is locked" and is
    retried like any storage error. The thread is a daemon: it dies with its process (SIGKILL, OOM,
    a code server restart), which is what lets a dead holder's lease run out. After
    `max_hold_seconds` it stops renewing, so a call hung for good cannot keep its saga forever.
    """

    def __init__(self, claims: SagaClaims, lease: Lease, *, ttl_seconds: float = DEFAULT_CLAIM_TTL_SECONDS,
                 renew_every_seconds: float | None = None, fence_margin_seconds: float | None = None,
                 max_hold_seconds: float | None = DEFAULT_MAX_HOLD_SECONDS, logger=None):
        if renew_every_seconds is None:
            renew_every_seconds = ttl_seconds / RENEWALS_PER_TTL
        if fence_margin_seconds is None:
            fence_margin_seconds = default_fence_margin(ttl_seconds)
        check_claim_timing(ttl_seconds, renew_every_seconds, fence_margin_seconds, f"claim of {lease.actor}")
        self.claims = claims
        self.ttl_seconds = ttl_seconds
        self.renew_every_seconds = renew_every_seconds
        self.fence_margin_seconds = fence_margin_seconds
        self.max_hold_seconds = max_hold_seconds
        # Each renewal/release statement is bounded by this (`claim_statement_timeout`: the smaller of
        # ttl / 12 and margin / 3), so a heartbeat stuck behind a lock gets control back in time to
        # try again and to fence itself before the lease can expire.
        self.statement_timeout_seconds = claims.statement_bound(ttl_seconds, fence_margin_seconds)
        self._logger = logger or logging.getLogger("arb_orchestration.saga")
        self._held_since = claims._clock()
        self._statement = threading.Lock()  # one renewal/release statement at a time, latest value
        self._lock = threading.Lock()  # the fields below; never held across a statement
        self._lease = lease
        self._fence_at = self._fence_for(lease)
        self._confirmed_at = self._fence_at + fence_margin_seconds - ttl_seconds
        self._lost: str | None = None
        self._self_fenced = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_beat_failed = False
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

    @property
    def self_fenced(self) -> bool:
        """The lease was given up by the fence (no confirmed renewal in time), not found taken over."""
        with self._lock:
            return self._self_fenced

    def fence_in(self) -> float:
        """Seconds (holder's monotonic clock) until the fence; <= 0 once it has passed."""
        with self._lock:
            return self._fence_at - self.claims._monotonic()

    def renew(self, _step: str | None = None) -> Lease:
        """A safe point: renew now; `ClaimLostError` if the lease is no longer ours (taken over or fenced)."""
        self._raise_if_lost()
        # A renewal stuck in a statement (the heartbeat's, on a stalled connection) holds the statement
        # lock: wait for it only until the fence, then stop without it.
        while not self._statement.acquire(timeout=0.05):
            self._raise_if_lost()
            if self.fence_in() <= 0:
                raise ClaimLostError(self._fence("a renewal has been stuck in a statement since before the fence"))
        try:
            return self._renew_locked()
        except ClaimLostError:
            raise
        except Exception as exc:  # storage trouble inside the fence: the last confirmed renewal covers us
            self._say("warning",
                f"saga {self.lease.saga_id}: {self.lease.actor} could not renew its claim at a safe point "
                f"({type(exc).__name__}: {exc}); carrying on under its last confirmed renewal (fence in "
                f"{max(0.0, self.fence_in()):.1f} s)")
            return self.lease
        finally:
            self._statement.release()

    def _renew_locked(self) -> Lease:
        """One renewal (statement lock held). Raises `ClaimLostError` (taken over, or fenced) or the storage error."""
        self._raise_if_lost()
        lease = self.lease
        try:
            with claim_statement_bound(self.statement_timeout_seconds):
                renewed = self.claims.renew(lease, self.ttl_seconds)
        except ClaimLostError as exc:
            if self._mark_lost(str(exc), self_fenced=False):
                self._say("error", self._lost_message(str(exc)))
            raise ClaimLostError(self.lost or str(exc)) from exc
        except Exception as exc:
            with self._lock:
                self.renewal_errors += 1
            if self.fence_in() <= 0:
                raise ClaimLostError(self._fence(f"last renewal error: {type(exc).__name__}: {exc}")) from exc
            raise
        with self._lock:
            self._lease = renewed  # ours in storage even if we fence below: release can still free it
            if self._lost is None:
                self._fence_at = self._fence_for(renewed)
                self._confirmed_at = self._fence_at + self.fence_margin_seconds - self.ttl_seconds
        self._raise_if_lost()
        if self.fence_in() <= 0:  # confirmed, but the statement took so long that too little is left
            raise ClaimLostError(self._fence("the renewal that succeeded last took too long to leave a margin"))
        return renewed

    def _fence_for(self, lease: Lease) -> float:
        local = lease.local_expires_at
        if local is None:  # a lease made elsewhere: count from now what is left of its stored expiry
            local = self.claims._monotonic() + max(0.0, lease.expires_at - self.claims._clock())
        return local - self.fence_margin_seconds

    def _fence(self, why: str) -> str:
        """Give the lease up (self-fence); returns the reason. Logged at ERROR the first time."""
        lease = self.lease
        with self._lock:
            since = self.claims._monotonic() - self._confirmed_at
        reason = (f"saga {lease.saga_id}: {lease.actor} (owner {lease.owner}) SELF-FENCED: no renewal of its claim "
                  f"confirmed for {since:.1f} s (fence at ttl {self.ttl_seconds:g} s - margin "
                  f"{self.fence_margin_seconds:g} s; {why}); it treats the lease as lost before another actor may "
                  f"find it expired")
        if self._mark_lost(reason, self_fenced=True):
            self._say("error", self._lost_message(reason))
        return self.lost or reason

    def _lost_message(self, reason: str) -> str:
        lease = self.lease
        return (f"CLAIM LOST: {reason}. {lease.actor} stops acting on saga {lease.saga_id} at its next safe point: "
                f"the call in flight (if any) cannot be aborted; its outcome will not be recorded and nothing "
                f"more will be done by this actor (the new holder repeats it, idempotent by key)")

    def _mark_lost(self, reason: str, *, self_fenced: bool) -> bool:
        with self._lock:
            if self._lost is not None:
                return False
            self._lost = reason
            self._self_fenced = self_fenced
            return True

    def _raise_if_lost(self) -> None:
        lost = self.lost
        if lost is not None:
            raise ClaimLostError(lost)

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
        if self.lost is not None:
            return False
        try:
            with self._statement:
                self._renew_locked()
        except ClaimLostError:
            return False  # said at ERROR where it was found
        except Exception as exc:  # storage trouble: the lease still has time; try again next period
            self._last_beat_failed = True
            self._say("warning",
                f"saga {lease.saga_id}: the heartbeat of {lease.actor} could not renew its claim "
                f"({type(exc).__name__}: {exc}); trying again in {min(self.renew_every_seconds, max(0.0, self.fence_in())):g} s "
                f"(self-fence in {max(0.0, self.fence_in()):.1f} s, lease ends in "
                f"{max(0.0, lease.expires_at - self.claims._clock()):.0f} s)")
            return True
        self._last_beat_failed = False
        self.renewals += 1
        return True

    def _next_wait(self) -> float:
        # After a failed renewal the next try comes no later than the fence: a last chance, and the
        # loss is reported when it happens, not at the next period.
        if self._last_beat_failed:
            return max(0.0, min(self.renew_every_seconds, self.fence_in()))
        return self.renew_every_seconds

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._next_wait()):
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
        """Stop the heartbeat and let go; False if the lease was no longer ours.

        A self-fenced holder has stopped acting, so it still frees its lease if storage lets it (a
        compare-and-swap on our own value: it cannot touch a new holder's lease); the next actor then
        need not wait for the expiry."""
        self.stop_heartbeat()
        with self._statement:
            with self._lock:
                lost, self_fenced, lease = self._lost, self._self_fenced, self._lease
            if lost is None:
                with claim_statement_bound(self.statement_timeout_seconds):
                    return self.claims.release(lease)
            if self_fenced:
                try:
                    with claim_statement_bound(self.statement_timeout_seconds):
                        self.claims.release(lease)
                except Exception as exc:
                    self._say("warning", f"saga {lease.saga_id}: {lease.actor} could not free its fenced claim "
                                         f"({type(exc).__name__}: {exc}); it runs out at its expiry")
            return False

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
