"""The per-job run tags of arb_orchestration/defs/k8s.py, read with Dagster's and dagster-k8s's code.

Covers: the tag keys are the ones Dagster reads; dagster-k8s parses each `dagster-k8s/config`
value; the stop-loss pod is Guaranteed-QoS and first in the queue; the rebalance saga has a
maximum runtime; no money-moving job can be retried by the daemon; the lanes the queue limits in
helm-values/ are the lanes these tags name; a job defined with the tags carries them on its runs.
"""

from __future__ import annotations

import json

import pytest
from dagster import job, op
from dagster._core.storage import tags as dagster_tags
from dagster._utils.tags import TagConcurrencyLimitsCounter, is_valid_tag_key, normalize_tags
from dagster_k8s.job import USER_DEFINED_K8S_CONFIG_KEY, get_user_defined_k8s_config

from arb_orchestration.defs import k8s as tags
from arb_orchestration_tests.unit import deploy_model as model


def test_tag_keys_are_the_ones_dagster_reads():
    assert tags.K8S_CONFIG_TAG == USER_DEFINED_K8S_CONFIG_KEY
    assert tags.PRIORITY_TAG == dagster_tags.PRIORITY_TAG
    assert tags.MAX_RUNTIME_TAG == dagster_tags.MAX_RUNTIME_SECONDS_TAG
    assert tags.MAX_RETRIES_TAG == dagster_tags.MAX_RETRIES_TAG
    assert tags.RETRY_ON_ASSET_OR_OP_FAILURE_TAG == dagster_tags.RETRY_ON_ASSET_OR_OP_FAILURE_TAG


@pytest.mark.parametrize("job_name", sorted(tags.RUN_TAGS_BY_JOB))
def test_tags_are_plain_valid_strings(job_name):
    run_tags = tags.RUN_TAGS_BY_JOB[job_name]
    assert all(isinstance(value, str) for value in run_tags.values())
    assert all(is_valid_tag_key(key) for key in run_tags)
    assert normalize_tags(run_tags) == dict(run_tags)
    assert run_tags[tags.JOB_TAG] == job_name
    with pytest.raises(TypeError):
        run_tags["x"] = "y"  # type: ignore[index]  - shared constants are read-only


@pytest.mark.parametrize("job_name", sorted(tags.RUN_TAGS_BY_JOB))
def test_dagster_k8s_parses_every_k8s_config_tag(job_name):
    config = get_user_defined_k8s_config(dict(tags.RUN_TAGS_BY_JOB[job_name]))
    resources = config.container_config["resources"]
    assert set(resources) == {"requests", "limits"}
    for kind in ("requests", "limits"):
        assert set(resources[kind]) == {"cpu", "memory"}


def test_stop_loss_is_guaranteed_qos_with_the_critical_priority_class():
    config = get_user_defined_k8s_config(dict(tags.STOP_LOSS_RUN_TAGS))
    resources = config.container_config["resources"]
    assert resources["requests"] == resources["limits"]
    assert config.pod_spec_config == {"priority_class_name": tags.CRITICAL_PRIORITY_CLASS}
    assert tags.MAX_RUNTIME_TAG not in tags.STOP_LOSS_RUN_TAGS  # never cut the emergency path short


def test_priorities_put_stop_loss_first_then_hedge_then_rebalance():
    priority = {name: int(run_tags[tags.PRIORITY_TAG]) for name, run_tags in tags.RUN_TAGS_BY_JOB.items()}
    assert priority[tags.STOP_LOSS_JOB] > priority[tags.HEDGE_JOB] > priority[tags.REBALANCE_JOB] > 0


def test_rebalance_and_hedge_have_a_maximum_runtime():
    assert int(tags.REBALANCE_RUN_TAGS[tags.MAX_RUNTIME_TAG]) == tags.REBALANCE_MAX_RUNTIME_SECONDS
    # The hedge must be done before the next 15-minute schedule tick.
    assert int(tags.HEDGE_RUN_TAGS[tags.MAX_RUNTIME_TAG]) < 15 * 60


@pytest.mark.parametrize("job_name", sorted(tags.RUN_TAGS_BY_JOB))
def test_money_moving_jobs_opt_out_of_run_retries(job_name):
    run_tags = tags.RUN_TAGS_BY_JOB[job_name]
    assert run_tags[tags.MAX_RETRIES_TAG] == "0"
    assert run_tags[tags.RETRY_ON_ASSET_OR_OP_FAILURE_TAG] == "false"


def _limits() -> list[dict]:
    queued = model.merged_values("prod")["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    return queued["tagConcurrencyLimits"]


class _Run:
    def __init__(self, run_tags):
        self.tags = dict(run_tags)


def test_queue_limits_name_the_lanes_these_tags_use():
    limits = {(limit["key"], limit.get("value")): limit["limit"] for limit in _limits()}
    assert limits[(tags.SAGA_TAG, tags.REBALANCE_SAGA_LANE)] == 1
    assert limits[(tags.JOB_TAG, tags.HEDGE_JOB)] == 1
    assert tags.REBALANCE_RUN_TAGS[tags.SAGA_TAG] == tags.REBALANCE_SAGA_LANE
    assert tags.HEDGE_RUN_TAGS[tags.JOB_TAG] == tags.HEDGE_JOB


def test_stop_loss_matches_no_queue_limit_however_many_run():
    running = [_Run(tags.STOP_LOSS_RUN_TAGS) for _ in range(20)]
    counter = TagConcurrencyLimitsCounter(_limits(), running)
    assert not counter.is_blocked(_Run(tags.STOP_LOSS_RUN_TAGS))
    # ... while the limited lanes do block (the counter is Dagster's own).
    counter = TagConcurrencyLimitsCounter(_limits(), [_Run(tags.REBALANCE_RUN_TAGS), _Run(tags.HEDGE_RUN_TAGS)])
    assert counter.is_blocked(_Run(tags.REBALANCE_RUN_TAGS))
    assert counter.is_blocked(_Run(tags.HEDGE_RUN_TAGS))


def test_a_job_defined_with_the_tags_carries_them_on_its_runs():
    @op
    def noop():
        return None

    @job(tags=tags.STOP_LOSS_RUN_TAGS)
    def emergency_stop_loss_saga():
        noop()

    assert emergency_stop_loss_saga.run_tags == dict(tags.STOP_LOSS_RUN_TAGS)
    parsed = json.loads(emergency_stop_loss_saga.run_tags[tags.K8S_CONFIG_TAG])
    assert parsed["container_config"]["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}


def test_priority_class_manifest_matches_the_tag():
    (priority_class,) = model.load_yaml_documents(model.K8S_DIR / "priorityclass.yaml")
    assert priority_class["metadata"]["name"] == tags.CRITICAL_PRIORITY_CLASS
    assert priority_class["globalDefault"] is False
    assert priority_class["value"] >= 1_000_000


def test_the_rebalance_job_carries_the_table_s_tags_and_its_runtime_leaves_room_for_the_default_sca_wait():
    from arb_orchestration.defs.rebalance import RebalanceConfig, auto_rebalance_saga

    assert dict(auto_rebalance_saga.tags) == dict(tags.RUN_TAGS_BY_JOB[tags.REBALANCE_JOB])
    default_wait = RebalanceConfig.model_fields["human_funding_timeout_seconds"].default
    runtime = int(auto_rebalance_saga.tags[tags.MAX_RUNTIME_TAG])
    assert runtime == tags.REBALANCE_ARRIVAL_RUNTIME_SECONDS + default_wait == 18_000
