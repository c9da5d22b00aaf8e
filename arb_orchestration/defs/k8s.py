"""Per-job run tags for Kubernetes: pod resources, queue priority, concurrency lanes, timeouts.

Job authors attach these to their jobs, e.g. ``@job(tags=STOP_LOSS_RUN_TAGS)``. They are read by
three parts of the deployment:

- ``dagster-k8s/config`` by the ``K8sRunLauncher`` (dagster-k8s), which deep-merges it over the
  run defaults from ``helm-values/`` when it builds the run's Kubernetes Job;
- ``dagster/priority`` and the ``arb/*`` lane tags by the ``QueuedRunCoordinator`` in the daemon
  (``tagConcurrencyLimits`` in ``helm-values/values-control-plane.yaml`` names the same tags);
- ``dagster/max_runtime`` / ``dagster/max_retries`` by run monitoring and run retries;
- ``arb/fast_path`` by the run coordinator and launcher of ``arb_orchestration.launcher`` (the
  run skips the queue and starts on the warm worker: docs/emergency-path.md).

Every value is a string: the ``dagster-k8s/config`` value is JSON, exactly what
``dagster_k8s.job.get_user_defined_k8s_config`` parses, so the same dict works as job tags and as
``RunRequest`` tags without Dagster's "non-string tag value" normalisation.

Nothing here imports Dagster: the tag keys are Dagster's documented strings, and
``arb_orchestration_tests/unit/test_k8s_tags.py`` checks them against Dagster's own constants.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType

# Tag keys (Dagster's and dagster-k8s's; checked against their constants in the tests).
K8S_CONFIG_TAG = "dagster-k8s/config"
PRIORITY_TAG = "dagster/priority"
MAX_RUNTIME_TAG = "dagster/max_runtime"
MAX_RETRIES_TAG = "dagster/max_retries"
RETRY_ON_ASSET_OR_OP_FAILURE_TAG = "dagster/retry_on_asset_or_op_failure"

# Our own lane tags. The run queue limits `arb/saga=auto_rebalance` and `arb/job=funding_rate_hedge`
# to one run each (helm-values/values-control-plane.yaml); nothing limits the stop-loss lane.
SAGA_TAG = "arb/saga"
JOB_TAG = "arb/job"
FAST_PATH_TAG = "arb/fast_path"  # = arb_orchestration.launcher.FAST_PATH_TAG (checked in test_launcher.py)

STOP_LOSS_JOB = "emergency_stop_loss_saga"
REBALANCE_JOB = "auto_rebalance_saga"
HEDGE_JOB = "funding_rate_hedge"

REBALANCE_SAGA_LANE = "auto_rebalance"
STOP_LOSS_SAGA_LANE = "emergency_stop_loss"

# Queue order: higher runs first when a slot frees. Untagged runs are priority 0.
STOP_LOSS_PRIORITY = 100
HEDGE_PRIORITY = 50
REBALANCE_PRIORITY = 10

# A rebalance waits for deposits to land (up to an hour) and may park its Wise pivot for up to
# 4 h until a person funds the transfer (SCA; the default `human_funding_timeout_seconds` of
# defs/rebalance/config.py is this allowance). Past the sum the run is terminated by run monitoring
# and the saga recovery sensor takes over from the saga log. A hedge must finish well before the
# next 15-minute schedule tick.
REBALANCE_ARRIVAL_RUNTIME_SECONDS = 3600
REBALANCE_HUMAN_FUNDING_SECONDS = 4 * 3600
REBALANCE_MAX_RUNTIME_SECONDS = REBALANCE_ARRIVAL_RUNTIME_SECONDS + REBALANCE_HUMAN_FUNDING_SECONDS
HEDGE_MAX_RUNTIME_SECONDS = 600

# Kubernetes PriorityClass (k8s/priorityclass.yaml) that lets a stop-loss pod preempt lower-priority
# pods when the cluster is full. It must exist before the first stop-loss run: a pod naming a
# missing PriorityClass is rejected by the API server (see docs/deployment.md, install step 1).
CRITICAL_PRIORITY_CLASS = "arb-orchestration-critical"

# Requests == limits for every resource of the only container: Kubernetes gives the pod the
# Guaranteed QoS class, so it is the last to be evicted under node memory pressure.
STOP_LOSS_RESOURCES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "requests": MappingProxyType({"cpu": "1", "memory": "1Gi"}),
        "limits": MappingProxyType({"cpu": "1", "memory": "1Gi"}),
    }
)
# The route planner solves a small MILP; give it room to burst.
REBALANCE_RESOURCES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "requests": MappingProxyType({"cpu": "500m", "memory": "1Gi"}),
        "limits": MappingProxyType({"cpu": "2", "memory": "2Gi"}),
    }
)
HEDGE_RESOURCES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "requests": MappingProxyType({"cpu": "250m", "memory": "512Mi"}),
        "limits": MappingProxyType({"cpu": "1", "memory": "1Gi"}),
    }
)


def _plain(value):
    if isinstance(value, Mapping):
        return {key: _plain(inner) for key, inner in value.items()}
    return value


def k8s_config_tag_value(
    *,
    resources: Mapping[str, Mapping[str, str]],
    pod_spec_config: Mapping[str, object] | None = None,
) -> str:
    """The JSON value of a `dagster-k8s/config` tag (snake_case keys, as dagster-k8s documents)."""
    config: dict[str, object] = {"container_config": {"resources": _plain(resources)}}
    if pod_spec_config:
        config["pod_spec_config"] = _plain(pod_spec_config)
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def _no_automatic_run_retry() -> dict[str, str]:
    # Money-moving sagas recover from their own log (saga recovery sensor), never by Dagster
    # re-running the whole job: a re-executed run could repeat a side effect whose outcome the
    # crashed run never recorded. Explicit here so raising the instance default cannot change it.
    return {MAX_RETRIES_TAG: "0", RETRY_ON_ASSET_OR_OP_FAILURE_TAG: "false"}


STOP_LOSS_RUN_TAGS: Mapping[str, str] = MappingProxyType(
    {
        K8S_CONFIG_TAG: k8s_config_tag_value(
            resources=STOP_LOSS_RESOURCES,
            pod_spec_config={"priority_class_name": CRITICAL_PRIORITY_CLASS},
        ),
        PRIORITY_TAG: str(STOP_LOSS_PRIORITY),
        SAGA_TAG: STOP_LOSS_SAGA_LANE,
        JOB_TAG: STOP_LOSS_JOB,
        FAST_PATH_TAG: "true",
        **_no_automatic_run_retry(),
    }
)

REBALANCE_RUN_TAGS: Mapping[str, str] = MappingProxyType(
    {
        K8S_CONFIG_TAG: k8s_config_tag_value(resources=REBALANCE_RESOURCES),
        PRIORITY_TAG: str(REBALANCE_PRIORITY),
        MAX_RUNTIME_TAG: str(REBALANCE_MAX_RUNTIME_SECONDS),
        SAGA_TAG: REBALANCE_SAGA_LANE,
        JOB_TAG: REBALANCE_JOB,
        **_no_automatic_run_retry(),
    }
)

HEDGE_RUN_TAGS: Mapping[str, str] = MappingProxyType(
    {
        K8S_CONFIG_TAG: k8s_config_tag_value(resources=HEDGE_RESOURCES),
        PRIORITY_TAG: str(HEDGE_PRIORITY),
        MAX_RUNTIME_TAG: str(HEDGE_MAX_RUNTIME_SECONDS),
        JOB_TAG: HEDGE_JOB,
        **_no_automatic_run_retry(),
    }
)

RUN_TAGS_BY_JOB: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        STOP_LOSS_JOB: STOP_LOSS_RUN_TAGS,
        REBALANCE_JOB: REBALANCE_RUN_TAGS,
        HEDGE_JOB: HEDGE_RUN_TAGS,
    }
)
