"""Claim statements on PostgreSQL (the production storage) are bounded: a lock cannot hold them past the lease.

Real embedded PostgreSQL, dagster-postgres storage; a second psycopg2 connection holds a lock on
the claims' table (`kvs`) in an open transaction, so the claim statements block the way they do
behind a migration, a `VACUUM FULL` or a stuck session:

* `LOCK TABLE kvs IN ACCESS EXCLUSIVE MODE`: an acquire (its INSERT, then every other statement)
  gives up within its bound (`SET LOCAL statement_timeout`/`lock_timeout`), raises
  `ClaimStatementTimeoutError` and stores nothing;
* `SELECT ... FOR UPDATE` on an expired lease's row: a takeover's compare-and-swap UPDATE gives up
  the same way and the old value stays (not applied);
* `SELECT ... FOR UPDATE` on a held lease's row: the holder's heartbeat renewals time out and the
  heartbeat itself fences the holder before the lease can expire (unit/test_claim_statement_timeouts.py
  runs the same checks on SQLite);
* the bound is `SET LOCAL`: the pooled connection Dagster uses afterwards has no statement timeout.
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse

import psycopg2
import pytest

from arb_orchestration.saga.claim import ClaimStatementTimeoutError, InstanceSagaClaims, claim_key
from arb_orchestration_tests.unit.test_claim_statement_timeouts import (
    check_acquire_gives_up_within_its_bound,
    check_blocked_heartbeat_fences_the_holder_before_expiry,
    run_with_limit,
)

pytestmark = pytest.mark.integration


class PgLock:
    """Another session holding a lock on `kvs` in an open transaction until `unlock()`."""

    def __init__(self, instance, postgres_server) -> None:
        db = urllib.parse.urlsplit(instance.run_storage.postgres_url).path.lstrip("/")
        self.dsn = postgres_server.dsn(db)
        self.conn = None

    @contextlib.contextmanager
    def _open(self, sql: str, params: tuple = ()):
        conn = psycopg2.connect(self.dsn)  # not autocommit: the lock lives until rollback
        with conn.cursor() as cur:
            cur.execute(sql, params)
        self.conn = conn
        try:
            yield
        finally:
            self.unlock()

    def table(self):
        return self._open("LOCK TABLE kvs IN ACCESS EXCLUSIVE MODE")

    def row(self, key: str):
        return self._open("SELECT value FROM kvs WHERE key = %s FOR UPDATE", (key,))

    def unlock(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.rollback()
            conn.close()


def test_acquire_gives_up_within_its_bound_when_the_claim_table_is_locked(pg_dagster_instance, postgres_server):
    assert "postgres" in type(pg_dagster_instance.run_storage).__module__
    lock = PgLock(pg_dagster_instance, postgres_server)
    check_acquire_gives_up_within_its_bound(InstanceSagaClaims(pg_dagster_instance), lock.table, lock.unlock)


def test_a_takeover_blocked_on_the_expired_leases_row_gives_up_and_changes_nothing(
        pg_dagster_instance, postgres_server):
    claims = InstanceSagaClaims(pg_dagster_instance)
    old = claims.acquire("s-row", "sensor old", ttl_seconds=0.2).lease
    assert old is not None
    while time.time() < old.expires_at + 0.05:
        time.sleep(0.01)
    lock = PgLock(pg_dagster_instance, postgres_server)
    ttl = 2.0
    bound = claims.statement_bound(ttl)
    with lock.row(claim_key("s-row")):
        finished, took, value = run_with_limit(
            lambda: claims.acquire("s-row", "sensor new", ttl_seconds=ttl), limit=ttl, release=lock.unlock)
    assert finished, f"the takeover was still blocked after the TTL ({ttl:g} s)"
    assert isinstance(value, ClaimStatementTimeoutError) and "lock_timeout" in str(value), repr(value)
    assert took < bound + 1.0, f"gave up after {took:.2f} s, bound {bound:.3f} s"
    assert claims.store.read(claim_key("s-row")) == old.raw  # cancelled: the expired lease is untouched
    # Nothing of ours leaked into Dagster's connections: its own statements run without our bound.
    with pg_dagster_instance.run_storage.connect() as conn:
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "0"


def test_a_heartbeat_blocked_on_its_row_fences_the_holder_before_the_lease_expires(
        pg_dagster_instance, postgres_server):
    lock = PgLock(pg_dagster_instance, postgres_server)
    check_blocked_heartbeat_fences_the_holder_before_expiry(
        InstanceSagaClaims(pg_dagster_instance), InstanceSagaClaims(pg_dagster_instance),
        lambda: lock.row(claim_key("s-held")), lock.unlock)
