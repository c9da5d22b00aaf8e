"""The saga log on PostgreSQL (the production storage): a saga run in a child process is SIGKILLed
before its pivot; what it wrote before dying is in PostgreSQL, and recovery compensates it once."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from arb_orchestration_tests.unit.test_saga_crash import check_compensated_after_kill, run_and_kill

pytestmark = pytest.mark.integration


def test_sigkilled_saga_on_postgres_is_compensated_once(postgres_server, _dagster_pg_template, monkeypatch):
    db = postgres_server.fresh_database("saga", template=_dagster_pg_template)
    monkeypatch.setenv("SAGA_TEST_PG_URL", postgres_server.url(db))
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    try:
        with tempfile.TemporaryDirectory(dir=shm) as tmp:
            instance, ledger, mailbox, run_id = run_and_kill(Path(tmp), block_in="withdraw")
            try:
                assert "postgres" in type(instance.event_log_storage).__module__
                check_compensated_after_kill(instance, ledger, mailbox, run_id)
            finally:
                instance.dispose()
    finally:
        postgres_server.drop_database(db)
