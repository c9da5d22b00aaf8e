"""The saga claim's heartbeat on PostgreSQL (the production storage), real processes, no mocks.

The scenarios of unit/test_saga_claim_heartbeat.py on dagster-postgres storage in the embedded
server, with a lease shortened to 2-3 s:

* a recovery actor whose compensation blocks for 2 TTLs keeps its lease through its heartbeat
  (a thread of its own, opening its own connections while the actor's thread is busy) and a
  second actor trying all along is refused every time, naming it; the saga is compensated once;
* the same with the holder in another process, which is then SIGKILLed mid-call: its renewals
  stop, and the second actor takes the saga over only once the lease has run out, then compensates
  it (newest first, each step once).
"""

from __future__ import annotations

import pytest

from arb_orchestration_tests.unit.test_saga_claim_heartbeat import (
    check_killed_holder_is_taken_over_after_its_ttl,
    check_long_compensation_keeps_its_lease,
)

pytestmark = pytest.mark.integration


def test_long_compensation_keeps_its_lease_on_postgres(pg_dagster_instance):
    assert "postgres" in type(pg_dagster_instance.run_storage).__module__
    check_long_compensation_keeps_its_lease(pg_dagster_instance, ttl=2.0)


def test_killed_holder_is_taken_over_after_its_ttl_on_postgres(pg_dagster_instance, tmp_path):
    check_killed_holder_is_taken_over_after_its_ttl(pg_dagster_instance, tmp_path, ttl=3.0)
