"""Compensation notes in the saga log on PostgreSQL (the production storage), embedded server, no mocks.

The instance scenarios of unit/test_saga_compensation_notes.py on dagster-postgres storage:

* a recovery actor's compensation killed after moving money leaves its notes in the failed run's event
  log; the next actor's attempt reads them back (in order) and does not move that money again;
* an actor whose claim was taken over writes no note, sends nothing after it, records no failure.
"""

from __future__ import annotations

import pytest

from arb_orchestration_tests.unit.test_saga_compensation_notes import (
    check_a_lost_claim_writes_no_note,
    check_notes_survive_and_a_second_attempt_repeats_nothing,
)

pytestmark = pytest.mark.integration


def test_compensation_notes_survive_and_a_second_attempt_repeats_nothing_on_postgres(pg_dagster_instance):
    assert "postgres" in type(pg_dagster_instance.event_log_storage).__module__
    check_notes_survive_and_a_second_attempt_repeats_nothing(pg_dagster_instance)


def test_a_lost_claim_writes_no_compensation_note_on_postgres(pg_dagster_instance):
    assert "postgres" in type(pg_dagster_instance.run_storage).__module__
    check_a_lost_claim_writes_no_note(pg_dagster_instance)
