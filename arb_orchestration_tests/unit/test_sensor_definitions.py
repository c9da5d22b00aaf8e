"""The event sensors' Dagster definitions: names, status, interval, targets, settings, run config.

No broker: evaluation is covered by integration/test_sensors_kafka.py.
"""

import json
from typing import Any

import pytest
from dagster import DefaultSensorStatus, job, op, validate_run_config

from arb_orchestration.defs.events import (
    CAPITAL_THRESHOLD_SENSOR,
    FUNDING_DEVIATION_SENSOR,
    MARKET_SHOCK_SENSOR,
    EventSensorSettings,
    EventTopics,
    TriggerEventConfig,
    build_event_sensors,
    domain_run_config,
    event_run_config,
)
from arb_orchestration.defs.events.tuning import topics_from_env
from arb_orchestration.settings import SettingError


@op
def entry(config: TriggerEventConfig) -> str:
    return config.event_id


@op
def other(x: str) -> None:
    pass


@job
def saga_job():
    other(entry())


@job
def plain_job():
    other(entry.alias("not_this")())  # an aliased op is addressed by its alias


def test_the_code_location_has_the_three_sensors_running_every_daemon_loop():
    from arb_orchestration.definitions import defs as code_location

    repo = code_location.get_repository_def()
    names = {s.name for s in repo.sensor_defs}
    assert {MARKET_SHOCK_SENSOR, CAPITAL_THRESHOLD_SENSOR, FUNDING_DEVIATION_SENSOR} <= names
    for name in (MARKET_SHOCK_SENSOR, CAPITAL_THRESHOLD_SENSOR, FUNDING_DEVIATION_SENSOR):
        definition = repo.get_sensor_def(name)
        assert definition.default_status == DefaultSensorStatus.RUNNING
        # Below the daemon's 5 s loop, so the loop alone sets the pace (5 would skip every other loop).
        assert definition.minimum_interval_seconds == 1
    # The emergency sensors alert the risk team by mail; the funding topic carries no critical
    # events, so its sensor never mails and must not make Dagster build `smtp` every tick.
    for name in (MARKET_SHOCK_SENSOR, CAPITAL_THRESHOLD_SENSOR):
        assert {"kafka", "smtp"} <= set(repo.get_sensor_def(name).required_resource_keys)
    assert set(repo.get_sensor_def(FUNDING_DEVIATION_SENSOR).required_resource_keys) == {"kafka"}


def test_the_shipped_sensors_start_the_real_sagas():
    # defs/events imports the three sagas from their domains (a missing one fails the load);
    # every sensor must target exactly its real jobs, and no stand-in job may be registered.
    from arb_orchestration.definitions import defs as code_location

    repo = code_location.get_repository_def()
    targets = {name: sorted(j.name for j in repo.get_sensor_def(name).jobs)
               for name in (MARKET_SHOCK_SENSOR, CAPITAL_THRESHOLD_SENSOR, FUNDING_DEVIATION_SENSOR)}
    assert targets == {
        MARKET_SHOCK_SENSOR: ["auto_rebalance_saga", "emergency_stop_loss_saga"],
        CAPITAL_THRESHOLD_SENSOR: ["auto_rebalance_saga", "emergency_stop_loss_saga"],
        FUNDING_DEVIATION_SENSOR: ["funding_rate_hedge"],
    }
    assert [j.name for j in repo.get_all_jobs() if j.tags.get("arb/placeholder")] == []


def test_sensors_target_the_given_jobs():
    market, capital, funding = build_event_sensors(
        rebalance_job=saga_job, stop_loss_job=plain_job, hedge_job=saga_job, topics=EventTopics.with_prefix("x-")
    )
    assert {j.name for j in market.jobs} == {j.name for j in capital.jobs} == {"saga_job", "plain_job"}
    assert [j.name for j in funding.jobs] == ["saga_job"]
    assert "x-market-events.dlq" in market.description


def test_run_config_goes_to_the_ops_that_take_the_trigger():
    trigger = TriggerEventConfig(
        event_id="e1", topic="market-events", source="market-events/0/3", kind="market_shock",
        critical=False, reason="why", payload={"severity": "warning"},
    )
    config: dict[str, Any] = event_run_config(saga_job, trigger)
    assert config == {"ops": {"entry": {"config": trigger.model_dump()}}}
    assert saga_job.execute_in_process(run_config=config).success
    assert event_run_config(plain_job, trigger) == {"ops": {"not_this": {"config": trigger.model_dump()}}}


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("ARB_SENSOR_LONG_POLL_SECONDS", "2.5")
    monkeypatch.setenv("ARB_FUNDING_DEVIATION_BPS", "35")
    monkeypatch.setenv("ARB_CRITICAL_EVENT_MAX_AGE_SECONDS", "30")
    monkeypatch.setenv("ARB_EVENT_TOPIC_PREFIX", "bench-")
    monkeypatch.setenv("ARB_SENSOR_LOOP_RESERVE_SECONDS", "0.5")
    settings = EventSensorSettings.from_env("local")
    assert settings.long_poll_seconds == 2.5 and settings.funding_deviation_bps == 35
    assert settings.loop_reserve_seconds == 0.5
    assert settings.critical_window.max_age_seconds == 30
    assert topics_from_env("local") == EventTopics("bench-market-events", "bench-capital-events", "bench-funding-rate-events")


@pytest.mark.parametrize("value", ["45", "-1", "soon"])
def test_a_bad_long_poll_fails_the_load_with_the_variable_name(monkeypatch, value):
    monkeypatch.setenv("ARB_SENSOR_LONG_POLL_SECONDS", value)
    with pytest.raises(SettingError, match="ARB_SENSOR_LONG_POLL_SECONDS|long_poll"):
        EventSensorSettings.from_env("local")


def test_the_loop_reserve_defaults_on_and_a_bad_one_names_the_variable(monkeypatch):
    assert EventSensorSettings.from_env("local").loop_reserve_seconds == 0.35
    monkeypatch.setenv("ARB_SENSOR_LOOP_RESERVE_SECONDS", "5")  # a whole daemon loop: the poll would never run
    with pytest.raises(SettingError, match="loop_reserve_seconds"):
        EventSensorSettings.from_env("local")
    monkeypatch.setenv("ARB_SENSOR_LOOP_RESERVE_SECONDS", "soon")
    with pytest.raises(SettingError, match="ARB_SENSOR_LOOP_RESERVE_SECONDS"):
        EventSensorSettings.from_env("local")


def test_a_tick_budget_near_the_sensor_timeout_is_refused():
    with pytest.raises(ValueError, match="sensor timeout"):
        EventSensorSettings(long_poll_seconds=25, metadata_timeout_seconds=10, dlq_timeout_seconds=15)


def test_each_targeted_job_accepts_the_run_config_the_sensors_build(monkeypatch):
    from arb_orchestration import settings
    from arb_orchestration.definitions import defs as code_location

    for name, setting in settings.SETTINGS.items():  # validation resolves the resources' EnvVars
        if setting.secret:
            monkeypatch.setenv(name, "unit-test-value")

    repo = code_location.get_repository_def()
    trigger = TriggerEventConfig(
        event_id="e2", topic="capital-events", source="capital-events/1/9", kind="capital_threshold",
        critical=True, reason="critical capital threshold: USDT on okx", payload={"venue": "okx", "level": "critical"},
    )
    targeted = {j.name for name in (MARKET_SHOCK_SENSOR, FUNDING_DEVIATION_SENSOR) for j in repo.get_sensor_def(name).jobs}
    assert targeted == {"auto_rebalance_saga", "emergency_stop_loss_saga", "funding_rate_hedge"}
    for name in targeted:
        job_def = repo.get_job(name)
        config = domain_run_config(job_def, trigger)
        validate_run_config(job_def, config)  # raises on a config the job would refuse
        assert "e2" in json.dumps(config), f"{name} would not see the event in its run config"
