"""Saga-log forward compatibility on PostgreSQL (the production storage), embedded server, no mocks.

The instance scenario of unit/test_saga_log_forward_compat.py on dagster-postgres storage: a saga whose log
holds a record kind from a newer version that is not marked ignorable is refused (every load raises
`SagaLogTooNewError` naming the kind; the recovery sweep reports it and compensates nothing of it), while a
plain saga and one whose unknown record is marked ignorable are recovered in the same sweep.
"""

from __future__ import annotations

import pytest

from arb_orchestration_tests.unit.test_saga_log_forward_compat import check_a_too_new_saga_is_refused_and_the_others_recover

pytestmark = pytest.mark.integration


def test_a_too_new_saga_is_refused_and_the_others_recover_on_postgres(pg_dagster_instance):
    assert "postgres" in type(pg_dagster_instance.event_log_storage).__module__
    check_a_too_new_saga_is_refused_and_the_others_recover(pg_dagster_instance)
