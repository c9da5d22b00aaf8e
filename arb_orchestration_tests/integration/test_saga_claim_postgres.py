"""Per-saga claims on PostgreSQL (the production storage), real concurrency, no mocks.

The same scenarios as unit/test_saga_claim.py, on dagster-postgres storage in the embedded
server: threads and processes racing for one saga's claim (one winner, the others told who
holds it); recovery actors racing on one crashed saga (one compensates, the others skip naming
it, a second pass does nothing); a dead holder's expired lease taken over.

Why not Dagster's op-concurrency slots: `bench/saga_claim_cost.py --slots-probe` (docs/sagas.md).
"""

from __future__ import annotations

import pytest

from arb_orchestration_tests.unit.test_saga_claim import (
    check_expired_lease_is_taken_over,
    check_processes_racing_for_a_claim,
    check_recovery_actors_racing,
    check_threads_racing_for_a_claim,
)

pytestmark = pytest.mark.integration


def test_storage_is_postgres(pg_dagster_instance):
    assert "postgres" in type(pg_dagster_instance.run_storage).__module__


def test_threads_racing_for_one_saga_on_postgres_exactly_one_wins(pg_dagster_instance):
    check_threads_racing_for_a_claim(pg_dagster_instance, rounds=5, n=8)


def test_processes_racing_for_one_saga_on_postgres_exactly_one_wins(pg_dagster_instance, tmp_path):
    check_processes_racing_for_a_claim(pg_dagster_instance, tmp_path, n=3)


def test_recovery_actors_racing_on_postgres_one_compensates_the_others_skip_naming_it(pg_dagster_instance):
    check_recovery_actors_racing(pg_dagster_instance, n=3)


def test_expired_recovery_lease_on_postgres_is_taken_over_and_the_saga_recovered(pg_dagster_instance):
    check_expired_lease_is_taken_over(pg_dagster_instance)
