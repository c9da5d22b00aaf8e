"""The dagster.yaml the chart renders from helm-values/, checked with Dagster's own code.

The chart's JSON schema leaves `runMonitoring` and `runRetries` as free-form objects and knows
nothing of what Dagster accepts inside the run launcher, so this is where those are checked:

- the whole file with Dagster's instance config validation (`dagster_instance_config`, the
  function `DagsterInstance.get()` uses to read `$DAGSTER_HOME/dagster.yaml`);
- every `module`/`class` section with that class's own `config_type()` (K8sRunLauncher,
  QueuedRunCoordinator, the Postgres storages, ...), with Dagster's `process_config`;
- the effective behaviour through a real (SQLite) DagsterInstance built with our settings: run
  monitoring, retries, the run queue's order and tag limits (Dagster's own dequeue logic), and the
  decision whether a failed run is retried (Dagster's own auto re-execution logic);
- the PostgreSQL URL that dagster-postgres builds, and the SQLAlchemy driver it resolves to.

The rendering itself is deploy_model.render_instance (a transcription of the chart's templates).
"""

from __future__ import annotations

import copy

import pytest
import sqlalchemy
import yaml
from dagster import DagsterInstance
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.events import RunFailureReason
from dagster._core.execution.retries import auto_reexecution_should_retry_run
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance_for_test import instance_for_test
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.test_utils import create_run_for_test
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)
from dagster._serdes import ConfigurableClassData, class_from_code_pointer
from dagster_postgres.utils import pg_url_from_config

from arb_orchestration.defs import k8s as tags
from arb_orchestration_tests.unit import deploy_model as model

ENVIRONMENTS = sorted(model.ENVIRONMENTS)


@pytest.fixture
def pg_password(monkeypatch):
    # The rendered storage config reads the password from this variable ({env: ...}).
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "not-a-real-password")


def _write_instance(tmp_path, instance: dict) -> None:
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance))


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_rendered_dagster_yaml_passes_dagsters_instance_validation(environment, tmp_path):
    instance = model.render_instance(model.merged_values(environment))
    _write_instance(tmp_path, instance)
    config, custom_class = dagster_instance_config(str(tmp_path))
    assert custom_class is None
    assert config["run_monitoring"]["poll_interval_seconds"] == 10
    assert config["run_launcher"]["class"] == "K8sRunLauncher"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_configurable_class_accepts_its_rendered_config(environment, pg_password):
    instance = model.render_instance(model.merged_values(environment))
    sections = {key: value for key, value in instance.items() if isinstance(value, dict) and "module" in value}
    assert set(sections) == {
        "scheduler",
        "schedule_storage",
        "run_launcher",
        "run_storage",
        "event_log_storage",
        "run_coordinator",
        "compute_logs",
    }
    for name, section in sections.items():
        klass = _configurable_class(section)
        result = process_config(klass.config_type(), section.get("config", {}))
        assert result.success, f"{name}: {[e.message for e in result.errors]}"


def _configurable_class(section: dict) -> type:
    # As DagsterInstance does: ConfigurableClassData maps `dagster.core.*` (which some chart
    # versions write) to `dagster._core.*`, then imports the class.
    data = ConfigurableClassData(section["module"], section["class"], yaml.safe_dump(section.get("config", {})))
    return class_from_code_pointer(data.module_name, data.class_name)


@pytest.mark.parametrize("module", ["dagster._core.run_coordinator", "dagster.core.run_coordinator"])
def test_both_spellings_of_the_run_coordinator_module_load(module):
    assert _configurable_class({"module": module, "class": "QueuedRunCoordinator"}) is QueuedRunCoordinator


def test_k8s_run_launcher_config_as_dagster_k8s_reads_it(pg_password):
    section = model.render_instance(model.merged_values("prod"))["run_launcher"]
    klass = _configurable_class(section)
    value = process_config(klass.config_type(), section["config"]).value
    assert value["job_namespace"] == model.NAMESPACE
    assert value["env_secrets"] == [
        "arb-exchange-credentials",
        "arb-wise-credentials",
        "arb-kafka-credentials",
        "arb-smtp-credentials",
        "arb-event-signing-key",
    ]
    assert value["env_vars"] == ["DAGSTER_DEPLOYMENT=prod"]
    assert value["postgres_password_secret"] == "arb-dagster-postgresql"
    assert value["instance_config_map"] == "dagster-instance"
    assert value["fail_pod_on_run_failure"] is True
    assert value["run_k8s_config"]["job_spec_config"]["backoffLimit"] == 0


@pytest.mark.parametrize(
    ("section_path", "bad_key"),
    [
        (("run_launcher", "config"), "env_secret"),
        (("run_launcher", "config", "run_k8s_config"), "pod_spec"),
        (("run_coordinator", "config"), "max_concurent_runs"),
    ],
)
def test_dagster_rejects_a_misspelled_key_in_a_configurable_class(section_path, bad_key, pg_password):
    instance = model.render_instance(model.merged_values("prod"))
    section = instance[section_path[0]]
    node = section
    for part in section_path[1:]:
        node = node[part]
    node[bad_key] = ["x"]
    klass = _configurable_class(section)
    result = process_config(klass.config_type(), section["config"])
    assert not result.success
    assert bad_key in " ".join(error.message for error in result.errors)


@pytest.mark.parametrize(
    ("section", "bad_key"),
    [("run_monitoring", "poll_interval_second"), ("run_retries", "max_retry"), ("sensors", "num_worker")],
)
def test_dagster_rejects_a_misspelled_daemon_setting(section, bad_key, tmp_path):
    # These sections are free-form objects in the chart's schema: only Dagster catches typos.
    instance = model.render_instance(model.merged_values("prod"))
    instance[section][bad_key] = 1
    _write_instance(tmp_path, instance)
    with pytest.raises(DagsterInvalidConfigError, match=bad_key):
        dagster_instance_config(str(tmp_path))


# --------------------------------------------------------------------------------------------
# Behaviour: a real DagsterInstance (SQLite storage, default launcher) with our daemon settings.


def _daemon_settings(values: dict) -> dict:
    rendered = model.render_instance(values)
    keep = ("run_coordinator", "run_monitoring", "run_retries", "sensors", "schedules", "retention")
    return {key: copy.deepcopy(rendered[key]) for key in keep}


@pytest.fixture(scope="module")
def _prod_instance():
    with instance_for_test(overrides=_daemon_settings(model.merged_values("prod"))) as instance:
        yield instance


@pytest.fixture
def instance(_prod_instance):
    _prod_instance.wipe()  # one instance per module (creating one takes seconds), empty per test
    return _prod_instance


def test_instance_settings_are_what_the_values_say(instance):
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_poll_interval_seconds == 10
    assert instance.run_monitoring_start_timeout_seconds == 180
    assert instance.run_monitoring_max_resume_run_attempts == 0
    assert instance.run_retries_enabled
    assert instance.run_retries_max_retries == 0
    assert instance.run_retries_retry_on_asset_or_op_failure is False
    assert instance.get_sensor_settings() == {"use_threads": True, "num_workers": 13}  # one thread per sensor (test_sensor_worker_threads)
    coordinator = instance.run_coordinator
    assert isinstance(coordinator, QueuedRunCoordinator)
    assert coordinator.dequeue_interval_seconds == 1
    assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 25


def test_tick_retention_keeps_failures_longer_than_skips(instance):
    from dagster._core.definitions.run_request import InstigatorType
    from dagster._core.scheduler.instigation import TickStatus

    sensor = instance.get_tick_retention_settings(InstigatorType.SENSOR)
    assert sensor[TickStatus.SKIPPED] == 3
    assert sensor[TickStatus.FAILURE] == 90
    assert instance.get_tick_retention_settings(InstigatorType.SCHEDULE)[TickStatus.SUCCESS] == 90


def _dequeue(instance) -> list:
    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
    try:
        runs = daemon._get_runs_to_dequeue(  # Dagster's own choice of the next runs to launch
            instance, instance.get_concurrency_config(), fixed_iteration_time=None
        )
    finally:
        daemon.__exit__(None, None, None)
    return [run.job_name for run in runs]


def _queue(instance, job_name: str, run_tags, status=DagsterRunStatus.QUEUED):
    return create_run_for_test(
        instance,
        job_name=job_name,
        tags=dict(run_tags),
        status=status,
        remote_job_origin=model.remote_job_origin(job_name),
    )


def test_queue_one_rebalance_at_a_time_and_stop_loss_first(instance):
    _queue(instance, tags.REBALANCE_JOB, tags.REBALANCE_RUN_TAGS, DagsterRunStatus.STARTED)
    _queue(instance, tags.REBALANCE_JOB, tags.REBALANCE_RUN_TAGS)
    _queue(instance, "observe_balances", {})
    _queue(instance, tags.HEDGE_JOB, tags.HEDGE_RUN_TAGS)
    _queue(instance, tags.HEDGE_JOB, tags.HEDGE_RUN_TAGS)
    _queue(instance, tags.STOP_LOSS_JOB, tags.STOP_LOSS_RUN_TAGS)
    # Highest priority first; the second rebalance and the second hedge wait for their lane.
    assert _dequeue(instance) == [tags.STOP_LOSS_JOB, tags.HEDGE_JOB, "observe_balances"]


def test_stop_loss_is_not_held_back_by_running_stop_losses_or_a_backfill(instance):
    for _ in range(3):
        _queue(instance, tags.STOP_LOSS_JOB, tags.STOP_LOSS_RUN_TAGS, DagsterRunStatus.STARTED)
    for index in range(12):
        _queue(instance, "observe_balances", {"dagster/backfill": f"bf{index // 6}"})
    _queue(instance, tags.STOP_LOSS_JOB, tags.STOP_LOSS_RUN_TAGS)
    dequeued = _dequeue(instance)
    assert dequeued[0] == tags.STOP_LOSS_JOB
    # The backfill lane (limit 5) leaves room under the global cap.
    assert dequeued.count("observe_balances") == 5


def test_rebalance_lane_is_free_again_once_the_running_saga_ends(instance):
    running = _queue(instance, tags.REBALANCE_JOB, tags.REBALANCE_RUN_TAGS, DagsterRunStatus.STARTED)
    _queue(instance, tags.REBALANCE_JOB, tags.REBALANCE_RUN_TAGS)
    assert _dequeue(instance) == []
    instance.report_run_failed(instance.get_run_by_id(running.run_id))
    assert _dequeue(instance) == [tags.REBALANCE_JOB]


@pytest.mark.parametrize("job_name", sorted(tags.RUN_TAGS_BY_JOB))
@pytest.mark.parametrize(
    "reason",
    [RunFailureReason.RUN_EXCEPTION, RunFailureReason.STEP_FAILURE, RunFailureReason.UNEXPECTED_TERMINATION],
)
def test_money_moving_runs_are_never_retried_automatically(instance, job_name, reason):
    run = _queue(instance, job_name, tags.RUN_TAGS_BY_JOB[job_name], DagsterRunStatus.FAILURE)
    assert auto_reexecution_should_retry_run(instance, run, reason) is False


def test_a_read_only_job_can_opt_in_to_retries_after_a_crash_only(instance):
    opted_in = {"dagster/max_retries": "2"}
    crashed = _queue(instance, "observe_balances", opted_in, DagsterRunStatus.FAILURE)
    assert auto_reexecution_should_retry_run(instance, crashed, RunFailureReason.RUN_EXCEPTION)
    op_failed = _queue(instance, "observe_balances", opted_in, DagsterRunStatus.FAILURE)
    assert not auto_reexecution_should_retry_run(instance, op_failed, RunFailureReason.STEP_FAILURE)


def test_sagas_stay_unretried_even_if_someone_raises_the_instance_default():
    # Older chart templates render only `enabled` and `max_retries`, and an operator may raise
    # max_retries for everything: the jobs' own tags must be enough on their own.
    permissive = DagsterInstance.ephemeral(
        settings={"run_retries": {"enabled": True, "max_retries": 3}}
    )
    assert permissive.run_retries_max_retries == 3
    assert permissive.run_retries_retry_on_asset_or_op_failure is True
    untagged = _queue(permissive, "observe_balances", {}, DagsterRunStatus.FAILURE)
    assert auto_reexecution_should_retry_run(permissive, untagged, RunFailureReason.STEP_FAILURE)
    for job_name, run_tags in tags.RUN_TAGS_BY_JOB.items():
        for reason in (RunFailureReason.RUN_EXCEPTION, RunFailureReason.STEP_FAILURE):
            run = _queue(permissive, job_name, run_tags, DagsterRunStatus.FAILURE)
            assert not auto_reexecution_should_retry_run(permissive, run, reason)


# --------------------------------------------------------------------------------------------
# PostgreSQL: the URL dagster-postgres builds from the rendered config.


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_postgres_url_names_the_psycopg2_driver(environment):
    config = model.render_postgres_config(model.merged_values(environment))
    config["postgres_db"]["password"] = "pw"
    url = pg_url_from_config(config)
    assert url.startswith("postgresql+psycopg2://dagster:pw@")
    # SQLAlchemy (any version) resolves this scheme to psycopg2, never to psycopg 3.
    assert sqlalchemy.engine.make_url(url).get_dialect().driver == "psycopg2"


def test_external_database_is_the_default_and_requires_tls():
    values = model.merged_values("prod")
    assert values["postgresql"]["enabled"] is False
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["postgresql"]["postgresqlParams"] == {"sslmode": "require", "connect_timeout": 10}
    assert "postgresqlPassword" not in values["postgresql"]


def test_the_database_url_bounds_the_connect_and_libpq_accepts_it():
    """connect_timeout reaches the URL Dagster builds, and psycopg2/libpq parses it as a connection option."""
    import psycopg2.extensions

    config = model.render_postgres_config(model.merged_values("prod"))
    config["postgres_db"]["password"] = "pw"
    url = sqlalchemy.engine.make_url(pg_url_from_config(config))
    assert url.query == {"sslmode": "require", "connect_timeout": "10"}
    dsn = psycopg2.extensions.make_dsn(host=url.host, dbname=url.database, **url.query)
    assert psycopg2.extensions.parse_dsn(dsn)["connect_timeout"] == "10"
