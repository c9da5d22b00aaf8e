"""Claim statements are bounded: a locked claim table makes them give up, never hang past the lease.

The checks below take a `locked()` context manager that makes every claim statement of the
storage block (another connection holding a lock) and run on SQLite here (a real instance, a
second connection holding `BEGIN EXCLUSIVE` on the runs database, where the claims live) and on
PostgreSQL in integration/test_claim_statement_timeouts_postgres.py:

* an acquire gives up within its bound (not after the TTL, not after Dagster's 30 s SQLite busy
  timeout), raises `ClaimStatementTimeoutError` and leaves nothing stored: the actor does not act;
* a holder whose heartbeat renewals block is fenced *by its heartbeat* (no safe point needed)
  before its lease can expire, says why at ERROR, and its next safe point refuses; once the lock
  is gone its lease can be freed and another actor takes the saga.

Plus the derivation of the bound from the claim's timing (pure).
"""

from __future__ import annotations

import contextlib
import glob
import os
import sqlite3
import threading
import time
from typing import Any, Callable, ContextManager

import pytest
from dagster import instance_for_test

from arb_orchestration.saga.claim import (
    DEFAULT_CLAIM_TTL_SECONDS,
    DEFAULT_FENCE_MARGIN_SECONDS,
    ClaimLostError,
    ClaimStatementTimeoutError,
    HeldClaim,
    InMemoryClaimStore,
    InstanceSagaClaims,
    SagaClaims,
    claim_statement_timeout,
)
from arb_orchestration_tests.unit.test_saga_claim_heartbeat import ListLogger, wait_for

Locked = Callable[[], ContextManager[Any]]


def run_with_limit(fn: Callable[[], Any], limit: float, release: Callable[[], None]) -> tuple[bool, float, Any]:
    """Run `fn` in a thread; (finished within `limit`, seconds taken, its result or exception).

    If it has not finished by then, `release()` (the lock) lets a hung statement go on, so the test
    fails on its assertion instead of hanging."""
    out: dict[str, Any] = {}

    def target() -> None:
        began = time.monotonic()
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed to the test
            out["value"] = exc
        out["took"] = time.monotonic() - began

    thread = threading.Thread(target=target, daemon=True, name="claim-statement-under-lock")
    thread.start()
    thread.join(limit)
    finished = not thread.is_alive()
    if not finished:
        release()
        thread.join(60)
    return finished, out.get("took", float("inf")), out.get("value")


def check_acquire_gives_up_within_its_bound(claims: SagaClaims, locked: Callable[[], Any],
                                            unlock: Callable[[], None], ttl: float = 2.0) -> None:
    bound = claims.statement_bound(ttl)
    assert bound < ttl / 4
    with locked():
        finished, took, value = run_with_limit(
            lambda: claims.acquire("s-locked", "sensor a", ttl_seconds=ttl), limit=ttl, release=unlock)
    assert finished, f"acquire was still blocked after the TTL ({ttl:g} s): its statements are not bounded"
    assert isinstance(value, ClaimStatementTimeoutError), f"expected a timeout, got {value!r}"
    assert took < bound + 1.0, f"gave up after {took:.2f} s, bound {bound:.3f} s"
    assert claims.holder("s-locked") is None  # cancelled, not applied: nobody holds the saga
    # The bound is for our statements only, and the storage works again once the lock is gone.
    assert claims.acquire("s-locked", "sensor a", ttl_seconds=ttl).acquired


def check_blocked_heartbeat_fences_the_holder_before_expiry(claims: SagaClaims, other: SagaClaims,
                                                            locked: Callable[[], Any], unlock: Callable[[], None],
                                                            ttl: float = 3.0) -> None:
    saga_id = "s-held"
    lease = claims.acquire(saga_id, "sensor a", ttl_seconds=ttl).lease
    assert lease is not None
    logger = ListLogger()
    held = HeldClaim(claims, lease, ttl_seconds=ttl, logger=logger)
    bound = held.statement_timeout_seconds
    assert bound < held.fence_margin_seconds / 2
    try:
        held.start_heartbeat()
        wait_for(lambda: held.renewals >= 1, timeout=ttl, what="a first renewal")
        with locked():
            confirmed = held.lease  # no renewal lands from here on
            expires_local = confirmed.local_expires_at
            assert expires_local is not None
            deadline = expires_local + 2.0
            while not held.self_fenced and time.monotonic() < deadline:
                time.sleep(0.005)
            seen = time.monotonic()
            assert held.self_fenced, ("the heartbeat never fenced its holder while its renewals were blocked "
                                      "(stuck in a statement)")
            # Before the lease could expire (the holder's own clock, from before the statement that
            # wrote it), and by at most one bound after the fence.
            assert seen < expires_local, f"fenced {seen - expires_local:.2f} s after the lease expired"
            assert seen < expires_local - held.fence_margin_seconds + bound + 0.5
            assert held.renewal_errors >= 1
            warnings = logger.at("warning")
            assert any("gave up after" in m and "could not replace" in m for m in warnings), warnings
            errors = logger.at("error")
            assert len(errors) == 1 and "SELF-FENCED" in errors[0] and "gave up after" in errors[0], errors
            with pytest.raises(ClaimLostError, match="SELF-FENCED"):
                held.renew("hedge")  # the next safe point refuses: the actor stops
            try:  # the other actor cannot take it while the lock is held either
                assert not other.acquire(saga_id, "sensor b", ttl_seconds=ttl).acquired
            except ClaimStatementTimeoutError:
                pass
    finally:
        unlock()
        released = held.release()
    assert released is False  # it was no longer ours to hold ...
    assert claims.holder(saga_id) is None  # ... but, fenced, it freed the lease once storage let it
    assert other.acquire(saga_id, "sensor b", ttl_seconds=ttl).acquired


# -------------------------------------------------------------------------------------------- pure


def test_the_bound_is_derived_from_the_claims_timing():
    assert claim_statement_timeout() == 5.0  # 60 s ttl: min(60 / 12, 15 / 3)
    assert claim_statement_timeout(DEFAULT_CLAIM_TTL_SECONDS, DEFAULT_FENCE_MARGIN_SECONDS) == 5.0
    assert claim_statement_timeout(120.0) == 5.0  # a step's claim: the margin (15 s) decides
    assert claim_statement_timeout(60.0, 6.0) == 2.0  # a smaller margin, a smaller bound
    assert claim_statement_timeout(2.0) == pytest.approx(2.0 / 12)
    # a renewal (at most three statements) always fits well before the fence
    for ttl in (2.0, 60.0, 120.0, 300.0):
        assert 3 * claim_statement_timeout(ttl) < ttl - min(DEFAULT_FENCE_MARGIN_SECONDS, ttl / 4)
    claims = SagaClaims(InMemoryClaimStore())
    held = HeldClaim(claims, claims.acquire("s", "a", ttl_seconds=60).lease, ttl_seconds=60,
                     fence_margin_seconds=9)
    assert held.statement_timeout_seconds == 3.0
    assert SagaClaims(InMemoryClaimStore(), statement_timeout_seconds=0.5).statement_bound(60) == 0.5
    with pytest.raises(ValueError, match="statement_timeout_seconds"):
        SagaClaims(InMemoryClaimStore(), statement_timeout_seconds=0)


# ------------------------------------------------------------------------------------------ SQLite


def _runs_db(instance) -> str:
    [path] = glob.glob(os.path.join(instance.root_directory, "**", "runs.db"), recursive=True)
    return path


class SqliteLock:
    """A second connection holding SQLite's write lock on the runs database (`BEGIN EXCLUSIVE`)."""

    def __init__(self, instance) -> None:
        self.path = _runs_db(instance)
        self.conn: sqlite3.Connection | None = None

    @contextlib.contextmanager
    def locked(self):
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN EXCLUSIVE")
        self.conn = conn
        try:
            yield
        finally:
            self.unlock()

    def unlock(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.execute("ROLLBACK")
            conn.close()


def test_acquire_on_a_locked_sqlite_database_gives_up_within_its_bound(tmp_path):
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        lock = SqliteLock(instance)
        check_acquire_gives_up_within_its_bound(InstanceSagaClaims(instance), lock.locked, lock.unlock)


def test_a_heartbeat_locked_out_of_sqlite_fences_its_holder_before_the_lease_expires(tmp_path):
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        lock = SqliteLock(instance)
        check_blocked_heartbeat_fences_the_holder_before_expiry(
            InstanceSagaClaims(instance), InstanceSagaClaims(instance), lock.locked, lock.unlock)
