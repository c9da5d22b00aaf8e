"""`arb-orchestration sagas` on PostgreSQL (the production storage): embedded server, no mocks.

The scenario of unit/test_sagas_cli.py with DAGSTER_HOME pointing at a dagster.yaml whose storage is
dagster-postgres: sagas escalated and compensation-failed by the real recovery sweep are listed and shown by
the CLI's `main(argv)`, a completed and a running saga are refused, `resolve` writes one `operator_resolved`
record (twice is harmless) and the sweep then leaves the resolved sagas alone while still compensating an
unresolved one; no secret reaches the output.
"""

from __future__ import annotations

import json

import pytest
from dagster import DagsterInstance

from arb_orchestration_tests.unit.test_sagas_cli import TOKEN, check_the_sagas_command

pytestmark = pytest.mark.integration


def test_list_show_resolve_and_the_sweep_leaves_resolved_sagas_alone_on_postgres(
        postgres_server, _dagster_pg_template, tmp_path, monkeypatch, capsys):
    db = postgres_server.fresh_database("sagas_cli", template=_dagster_pg_template)
    try:
        home = tmp_path / "dagster_home"
        home.mkdir()
        url = postgres_server.url(db)
        (home / "dagster.yaml").write_text(
            f"storage:\n  postgres:\n    postgres_url: {json.dumps(url)}\ntelemetry:\n  enabled: false\n")
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("WISE_API_TOKEN", TOKEN)
        with DagsterInstance.get() as instance:
            assert "postgres" in type(instance.event_log_storage).__module__
            assert "postgres" in type(instance.run_storage).__module__
            check_the_sagas_command(instance, capsys)
    finally:
        postgres_server.drop_database(db)
