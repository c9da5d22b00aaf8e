"""The trading kill switch: durable state in the instance, the accessor other jobs call, the
pause/resume jobs, and resume refusing while a stop-loss is unfinished (unless forced)."""

from __future__ import annotations

import pytest
from dagster import DagsterRunStatus, build_sensor_context

from arb_orchestration.defs.ops_control import (
    pause_trading_job,
    resume_trading_job,
    skip_if_trading_paused,
    trading_paused,
)
from arb_orchestration.defs.stop_loss import emergency_stop_loss_saga
from arb_orchestration.saga import InstanceTradingSwitch, pause_trading, resume_trading
from arb_orchestration.saga.kill_switch import TRADING_PAUSE_KEY, parse_state
from arb_orchestration_tests.unit.test_saga_dagster import temp_instance


@pytest.fixture
def instance():
    with temp_instance() as inst:
        yield inst


def test_state_is_durable_in_the_instance_and_defaults_to_trading(instance):
    assert trading_paused(instance) == (False, "never paused")
    pause_trading(instance, "stop-loss s1", by="emergency_stop_loss_saga", run_id="r1")
    # Another process (a sensor, the webserver) sees it through the same storage.
    again = InstanceTradingSwitch(instance).get()
    assert again.paused and again.reason == "stop-loss s1" and again.run_id == "r1" and again.changed_at
    resume_trading(instance, "reviewed", by="alice")
    assert trading_paused(instance) == (False, "reviewed")


def test_unreadable_state_counts_as_paused(instance):
    instance.run_storage.set_cursor_values({TRADING_PAUSE_KEY: "{not json"})
    paused, reason = trading_paused(instance)
    assert paused and "unreadable" in reason
    assert parse_state(None).paused is False


def test_pause_and_resume_jobs(instance):
    result = pause_trading_job.execute_in_process(
        instance=instance, run_config={"ops": {"pause_trading": {"config": {"reason": "exchange incident",
                                                                          "operator": "bob"}}}})
    assert result.success and trading_paused(instance) == (True, "exchange incident")
    with build_sensor_context(instance=instance) as ctx:
        assert "exchange incident" in skip_if_trading_paused(ctx).skip_message
    result = resume_trading_job.execute_in_process(
        instance=instance, run_config={"ops": {"resume_trading": {"config": {"reason": "resolved", "operator": "bob"}}}})
    assert result.success and trading_paused(instance) == (False, "resolved")
    with build_sensor_context(instance=instance) as ctx:
        assert skip_if_trading_paused(ctx) is None


def test_resume_is_refused_while_a_stop_loss_is_unfinished_unless_forced(instance):
    pause_trading(instance, "stop-loss", by="emergency_stop_loss_saga")
    run = instance.create_run_for_job(emergency_stop_loss_saga, run_config={})
    instance.report_run_failed(run, "not flat")  # latest stop-loss ended badly
    config = {"ops": {"resume_trading": {"config": {"reason": "trust me", "operator": "carol"}}}}
    refused = resume_trading_job.execute_in_process(instance=instance, run_config=config, raise_on_error=False)
    assert not refused.success
    assert "latest stop-loss run" in refused.failure_data_for_node("resume_trading").error.message
    assert trading_paused(instance)[0]
    config["ops"]["resume_trading"]["config"]["force"] = True
    forced = resume_trading_job.execute_in_process(instance=instance, run_config=config)
    assert forced.success and not trading_paused(instance)[0]
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
