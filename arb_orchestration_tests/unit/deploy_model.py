"""What the Dagster Helm chart makes of helm-values/, modelled in Python for the offline tests.

There is no Helm, no cluster and no copy of the chart's templates here. This module transcribes
the parts of the chart's templates (dagster-io/dagster, helm/dagster/templates/...) that turn our
values into:

- `dagster.yaml` (configmap-instance.yaml, helpers/instance/_run-launcher.tpl,
  _run-coordinator.tpl, _postgresql.tpl, _scheduler.tpl, _compute-log-manager.tpl);
- the code location's container context that the chart passes to `dagster code-server start`
  (charts/dagster-user-deployments/templates/helpers/_helpers.tpl, "k8sContainerContext");
- the pod specs of the webserver, the daemon and the code server, as far as our values reach
  into them (deployment-webserver, deployment-daemon, deployment-user templates).

The tests then validate these with Dagster's own config schemas and the Kubernetes schemas. On a
machine with Helm, compare `helm template` with `python -m arb_orchestration_tests.unit.deploy_model
instance prod` (docs/deployment.md, "Before the first install").
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
HELM_VALUES_DIR = REPO_ROOT / "helm-values"
K8S_DIR = REPO_ROOT / "k8s"

# One release named `dagster` per cluster, in this namespace (docs/deployment.md).
RELEASE_NAME = "dagster"
NAMESPACE = "arb-orchestration"
CHART_NAME = "dagster"
USER_DEPLOYMENTS_CHART_NAME = "dagster-user-deployments"

BASE_FILES = ("values-control-plane.yaml", "values-user-code.yaml")
ENVIRONMENTS: Mapping[str, tuple[str, ...]] = {
    "base": BASE_FILES,
    "staging": (*BASE_FILES, "values-staging.yaml"),
    "prod": (*BASE_FILES, "values-prod.yaml"),
    "bundled-postgresql": (*BASE_FILES, "values-postgresql-bundled.yaml"),
}
# Opt-in overlays on top of an environment. Kept apart from ENVIRONMENTS, whose tests assert the
# chart's default K8sRunLauncher/QueuedRunCoordinator; test_helm_fast_path.py checks these.
OPT_IN_ENVIRONMENTS: Mapping[str, tuple[str, ...]] = {
    "prod-fast-path": (*ENVIRONMENTS["prod"], "values-fast-path.yaml"),
}


def shared_dir() -> Path:
    """`shared/` beside the repository: /work/shared here, `<clone>/../shared` in CI."""
    candidate = REPO_ROOT.parent / "shared"
    schema = candidate / "dagster-chart" / "values.schema.json"
    if not schema.is_file():
        raise FileNotFoundError(
            f"the Dagster chart schema is expected at {schema} (shared/ beside the repository)"
        )
    return candidate


def chart_schema_path() -> Path:
    return shared_dir() / "dagster-chart" / "values.schema.json"


def load_yaml(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def load_yaml_documents(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def k8s_documents(name: str) -> list[dict]:
    """The documents of one manifest in k8s/."""
    return load_yaml_documents(K8S_DIR / name)


def k8s_of_kind(files: tuple[str, ...], kind: str) -> list[dict]:
    """Every document of `kind` in these k8s/ manifests."""
    return [doc for name in files for doc in k8s_documents(name) if doc["kind"] == kind]


def values_files() -> list[Path]:
    return sorted(HELM_VALUES_DIR.glob("*.yaml"))


# --------------------------------------------------------------------------------------------
# Helm's merge of -f files: maps merge key by key, anything else (lists included) is replaced,
# and a null deletes the key.


def helm_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def merged_values(environment: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name in {**ENVIRONMENTS, **OPT_IN_ENVIRONMENTS}[environment]:
        merged = helm_merge(merged, load_yaml(HELM_VALUES_DIR / name) or {})
    return merged


# --------------------------------------------------------------------------------------------
# The chart's JSON schema, prepared as shared/dagster-chart/README.md describes.


def _relax(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("http"):
                continue  # remote Kubernetes schema: checked with kubernetes-validate instead
            if key == "required" and isinstance(value, list):
                continue  # a values file overrides only part of the chart's defaults
            out[key] = _relax(value)
        return out
    if isinstance(node, list):
        return [_relax(item) for item in node]
    return node


def _has_remote_ref(node: Mapping[str, Any]) -> bool:
    ref = node.get("$ref")
    return isinstance(ref, str) and ref.startswith("http")


def _close_objects(original: Any, relaxed: Any) -> Any:
    """Forbid unknown keys in every chart-defined object that does not already say otherwise."""
    if isinstance(original, dict) and isinstance(relaxed, dict):
        out = {key: _close_objects(original.get(key), value) for key, value in relaxed.items()}
        if (
            isinstance(original.get("properties"), dict)
            and original["properties"]
            and "additionalProperties" not in original
            and not _has_remote_ref(original)
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(original, list) and isinstance(relaxed, list):
        return [_close_objects(o, r) for o, r in zip(original, relaxed, strict=True)]
    return relaxed


def chart_schema(*, strict: bool = False) -> dict[str, Any]:
    """The chart's schema with remote $refs and `required` dropped.

    strict=False is what Helm enforces (keys the chart declares closed are closed).
    strict=True also closes the objects the chart leaves open (the top level, each user
    deployment, `postgresql`, ...), where Helm would silently ignore a misspelled key.
    """
    with open(chart_schema_path(), encoding="utf-8") as handle:
        original = json.load(handle)
    relaxed = _relax(original)
    return _close_objects(original, relaxed) if strict else relaxed


# --------------------------------------------------------------------------------------------
# Names the chart derives (helpers/_helpers.tpl).


def fullname(release: str = RELEASE_NAME, chart: str = CHART_NAME) -> str:
    # `contains $name .Release.Name`: the release name already contains the chart name.
    return release[:63] if chart in release else f"{release}-{chart}"[:63]


def service_account_name(values: Mapping[str, Any], release: str = RELEASE_NAME) -> str:
    glob = values.get("global") or {}
    account = values.get("serviceAccount") or {}
    return glob.get("serviceAccountName") or account.get("name") or fullname(release)


def postgresql_secret_name(values: Mapping[str, Any], release: str = RELEASE_NAME) -> str:
    return (values.get("global") or {}).get("postgresqlSecretName") or (
        f"{fullname(release)}-postgresql-secret"
    )


def dagster_home(values: Mapping[str, Any]) -> str:
    return (values.get("global") or {}).get("dagsterHome") or "/opt/dagster/dagster_home"


def user_deployments(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((values.get("dagster-user-deployments") or {}).get("deployments") or [])


def image_name(image: Mapping[str, Any]) -> str:
    return f"{image['repository']}:{image['tag']}"


# --------------------------------------------------------------------------------------------
# dagster.yaml (configmap-instance.yaml)


def render_postgres_config(values: Mapping[str, Any], release: str = RELEASE_NAME) -> dict:
    pg = values["postgresql"]
    if pg.get("enabled"):  # the bundled subchart, unless a host is given anyway
        host = pg.get("postgresqlHost") or f"{release}-postgresql"
    else:
        host = pg["postgresqlHost"]
    db: dict[str, Any] = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": host,
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg.get("postgresqlParams") or {},
    }
    if pg.get("postgresqlScheme"):
        db["scheme"] = pg["postgresqlScheme"]
    return {"postgres_db": db}


def _names(refs: Iterable[Mapping[str, Any]] | None) -> list[str]:
    return [ref["name"] for ref in refs or [] if "name" in ref]


_RUN_K8S_CONFIG_KEYS = {
    "containerConfig": "container_config",
    "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata",
    "jobSpecConfig": "job_spec_config",
    "jobMetadata": "job_metadata",
}


def _render_custom(configurable: Mapping[str, Any]) -> dict:
    return {
        "module": configurable["module"],
        "class": configurable["class"],
        "config": copy.deepcopy(configurable.get("config") or {}),
    }


def render_run_launcher(
    values: Mapping[str, Any], release: str = RELEASE_NAME, namespace: str = NAMESPACE
) -> dict:
    launcher = values["runLauncher"]
    if launcher["type"] == "CustomRunLauncher":  # _run-launcher.tpl: module, class, config as given
        return _render_custom(launcher["config"]["customRunLauncher"])
    assert launcher["type"] == "K8sRunLauncher", launcher["type"]
    k8s = launcher["config"]["k8sRunLauncher"]
    config: dict[str, Any] = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": k8s.get("jobNamespace") or namespace,
        "image_pull_policy": k8s["imagePullPolicy"],
        "service_account_name": service_account_name(values, release),
        "dagster_home": dagster_home(values),
        "instance_config_map": f"{fullname(release)}-instance",
        "postgres_password_secret": postgresql_secret_name(values, release),
    }
    if k8s.get("kubeconfigFile"):
        config["kubeconfig_file"] = k8s["kubeconfigFile"]
    if values.get("imagePullSecrets"):
        config["image_pull_secrets"] = values["imagePullSecrets"]
    if "image" in k8s:
        config["job_image"] = image_name(k8s["image"])
    if _names(k8s.get("envConfigMaps")):
        config["env_config_maps"] = _names(k8s.get("envConfigMaps"))
    if _names(k8s.get("envSecrets")):
        config["env_secrets"] = _names(k8s.get("envSecrets"))
    for value_key, config_key in (
        ("envVars", "env_vars"),
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
        ("securityContext", "security_context"),
    ):
        if k8s.get(value_key):
            config[config_key] = copy.deepcopy(k8s[value_key])
    if k8s.get("failPodOnRunFailure"):
        config["fail_pod_on_run_failure"] = True
    if k8s.get("schedulerName"):
        config["scheduler_name"] = k8s["schedulerName"]
    if k8s.get("runK8sConfig"):
        config["run_k8s_config"] = {
            snake: copy.deepcopy(k8s["runK8sConfig"][camel])
            for camel, snake in _RUN_K8S_CONFIG_KEYS.items()
            if k8s["runK8sConfig"].get(camel)
        }
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def render_run_coordinator(values: Mapping[str, Any]) -> dict | None:
    daemon = values["dagsterDaemon"]
    coordinator = daemon["runCoordinator"]
    if not (daemon.get("enabled") and coordinator.get("enabled")):
        return None
    if coordinator["type"] == "CustomRunCoordinator":  # _run-coordinator.tpl, as given
        return _render_custom(coordinator["config"]["customRunCoordinator"])
    assert coordinator["type"] == "QueuedRunCoordinator", coordinator["type"]
    queued = coordinator["config"]["queuedRunCoordinator"] or {}
    rendered: dict[str, Any] = {
        "module": "dagster._core.run_coordinator",
        "class": "QueuedRunCoordinator",
    }
    if any(value is not None for value in queued.values()):
        config: dict[str, Any] = {
            # The chart writes -1 (no limit) when maxConcurrentRuns is unset.
            "max_concurrent_runs": queued.get("maxConcurrentRuns", -1),
        }
        for value_key, config_key in (
            ("tagConcurrencyLimits", "tag_concurrency_limits"),
            ("dequeueIntervalSeconds", "dequeue_interval_seconds"),
            ("dequeueUseThreads", "dequeue_use_threads"),
            ("dequeueNumWorkers", "dequeue_num_workers"),
        ):
            if queued.get(value_key):
                config[config_key] = copy.deepcopy(queued[value_key])
        block = queued.get("blockOpConcurrencyLimitedRuns")
        if block:
            config["block_op_concurrency_limited_runs"] = {
                "enabled": block["enabled"],
                "op_concurrency_slot_buffer": block["opConcurrencySlotBuffer"],
            }
        rendered["config"] = config
    return rendered


def render_instance(
    values: Mapping[str, Any], release: str = RELEASE_NAME, namespace: str = NAMESPACE
) -> dict:
    """dagster.yaml as configmap-instance.yaml renders it from these values."""
    pg = render_postgres_config(values, release)
    daemon = values["dagsterDaemon"]
    instance: dict[str, Any] = {
        "scheduler": {"module": "dagster._core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": pg,
        },
        "run_launcher": render_run_launcher(values, release, namespace),
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            "config": pg,
        },
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": pg,
        },
    }
    coordinator = render_run_coordinator(values)
    if coordinator:
        instance["run_coordinator"] = coordinator
    compute_logs = (values.get("computeLogManager") or {}).get("type", "NoOpComputeLogManager")
    assert compute_logs == "NoOpComputeLogManager", compute_logs
    instance["compute_logs"] = {
        "module": "dagster._core.storage.noop_compute_log_manager",
        "class": "NoOpComputeLogManager",
    }

    monitoring = daemon.get("runMonitoring") or {}
    if daemon.get("enabled") and monitoring.get("enabled"):
        instance["run_monitoring"] = {"enabled": True}
        for value_key, config_key in (
            ("startTimeoutSeconds", "start_timeout_seconds"),
            ("cancelTimeoutSeconds", "cancel_timeout_seconds"),
            ("maxResumeRunAttempts", "max_resume_run_attempts"),
            ("pollIntervalSeconds", "poll_interval_seconds"),
            ("maxRuntimeSeconds", "max_runtime_seconds"),
            ("freeSlotsAfterRunEndSeconds", "free_slots_after_run_end_seconds"),
        ):
            if monitoring.get(value_key):  # the chart skips falsy values (0 == Dagster default)
                instance["run_monitoring"][config_key] = monitoring[value_key]

    retries = daemon.get("runRetries") or {}
    if daemon.get("enabled") and retries.get("enabled"):
        instance["run_retries"] = {"enabled": True}
        if retries.get("maxRetries"):
            instance["run_retries"]["max_retries"] = retries["maxRetries"]
        if retries.get("retryOnAssetOrOpFailure") is not None:
            instance["run_retries"]["retry_on_asset_or_op_failure"] = retries[
                "retryOnAssetOrOpFailure"
            ]

    for section in ("sensors", "schedules"):
        threads = daemon.get(section) or {}
        if daemon.get("enabled") and threads.get("useThreads"):
            instance[section] = {"use_threads": True}
            if threads.get("numWorkers"):
                instance[section]["num_workers"] = threads["numWorkers"]
            if threads.get("numSubmitWorkers"):
                instance[section]["num_submit_workers"] = threads["numSubmitWorkers"]

    instance["telemetry"] = {"enabled": bool((values.get("telemetry") or {}).get("enabled"))}

    retention = values.get("retention") or {}
    if retention.get("enabled"):
        instance["retention"] = {
            kind: {"purge_after_days": copy.deepcopy(retention[kind]["purgeAfterDays"])}
            for kind in ("sensor", "schedule")
            if retention.get(kind)
        }
    return instance


# --------------------------------------------------------------------------------------------
# The code location's container context (dagster-user-deployments _helpers.tpl), which the
# K8sRunLauncher merges into every run of that location when includeConfigInLaunchedRuns is on.


def user_env_configmap_name(deployment: Mapping[str, Any], release: str = RELEASE_NAME) -> str:
    return f"{fullname(release, USER_DEPLOYMENTS_CHART_NAME)}-{deployment['name']}-user-env"


def user_deployments_service_account(release: str = RELEASE_NAME) -> str:
    return f"{fullname(release, USER_DEPLOYMENTS_CHART_NAME)}-user-deployments"


def user_code_container_context(
    values: Mapping[str, Any],
    deployment: Mapping[str, Any],
    release: str = RELEASE_NAME,
    namespace: str = NAMESPACE,
) -> dict | None:
    include = deployment.get("includeConfigInLaunchedRuns") or {"enabled": True}
    if not include.get("enabled"):
        return None
    k8s: dict[str, Any] = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [
            user_env_configmap_name(deployment, release),
            *_names(deployment.get("envConfigMaps")),
        ],
        "namespace": namespace,
        "service_account_name": user_deployments_service_account(release),
    }
    if values.get("imagePullSecrets"):
        k8s["image_pull_secrets"] = values["imagePullSecrets"]
    if _names(deployment.get("envSecrets")):
        k8s["env_secrets"] = _names(deployment.get("envSecrets"))
    for value_key, config_key in (
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
        ("schedulerName", "scheduler_name"),
    ):
        if deployment.get(value_key):
            k8s[config_key] = copy.deepcopy(deployment[value_key])
    if isinstance(deployment.get("env"), list) and deployment["env"]:
        k8s["env"] = copy.deepcopy(deployment["env"])
    return {"k8s": k8s}


# --------------------------------------------------------------------------------------------
# Pods of the chart's Deployments, with what our values put into them, as Kubernetes objects.


def _env_from(config_maps: Iterable[str], secrets: Iterable[Mapping[str, Any]] | None) -> list:
    refs: list[dict[str, Any]] = [{"configMapRef": {"name": name}} for name in config_maps]
    refs.extend({"secretRef": copy.deepcopy(dict(secret))} for secret in secrets or [])
    return refs


def _probe_without_chart_keys(probe: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in probe.items() if key != "enabled"}


def _pod(name: str, labels: Mapping[str, str], spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": dict(spec),
    }


def selector_labels(release: str = RELEASE_NAME) -> dict[str, str]:
    return {"app.kubernetes.io/name": CHART_NAME, "app.kubernetes.io/instance": release}


def _control_plane_env(values: dict, release: str, component: dict) -> list[dict]:
    """The webserver's and daemon's container `env`: the database password from its Secret, then a
    list-form `env` as is (a map-form `env` goes into the component's -env ConfigMap instead)."""
    password = {
        "name": "DAGSTER_PG_PASSWORD",
        "valueFrom": {
            "secretKeyRef": {"name": postgresql_secret_name(values, release), "key": "postgresql-password"}
        },
    }
    listed = component["env"] if isinstance(component.get("env"), list) else []
    return [password, *copy.deepcopy(listed)]


def webserver_pod(
    values: Mapping[str, Any], *, read_only: bool = False, release: str = RELEASE_NAME
) -> dict[str, Any]:
    web = values["dagsterWebserver"]
    home = dagster_home(values)
    component = "dagster-webserver-read-only" if read_only else "dagster-webserver"
    container: dict[str, Any] = {
        "name": CHART_NAME,
        "image": image_name(web["image"]),
        "imagePullPolicy": web["image"]["pullPolicy"],
        "securityContext": copy.deepcopy(web.get("securityContext") or {}),
        "env": _control_plane_env(values, release, web),
        "envFrom": _env_from(
            [f"{fullname(release)}-webserver-env", *_names(web.get("envConfigMaps"))],
            web.get("envSecrets"),
        ),
        "volumeMounts": [
            {"name": "dagster-instance", "mountPath": f"{home}/dagster.yaml", "subPath": "dagster.yaml"},
            {"name": "dagster-workspace-yaml", "mountPath": "/dagster-workspace/"},
            *copy.deepcopy(web.get("volumeMounts") or []),
        ],
        "ports": [{"name": "http", "containerPort": web["service"]["port"], "protocol": "TCP"}],
        "resources": copy.deepcopy(web.get("resources") or {}),
    }
    for probe in ("readinessProbe", "livenessProbe"):
        if web.get(probe):
            container[probe] = _probe_without_chart_keys(web[probe])
    if (web.get("startupProbe") or {}).get("enabled"):
        container["startupProbe"] = _probe_without_chart_keys(web["startupProbe"])
    labels = {**selector_labels(release), "component": component, **(web.get("labels") or {})}
    return _pod(
        f"{release}-webserver{'-read-only' if read_only else ''}",
        labels,
        {
            "serviceAccountName": service_account_name(values, release),
            "securityContext": copy.deepcopy(web.get("podSecurityContext") or {}),
            "containers": [container],
            "volumes": [
                {"name": "dagster-instance", "configMap": {"name": f"{fullname(release)}-instance"}},
                {
                    "name": "dagster-workspace-yaml",
                    "configMap": {"name": f"{fullname(release)}-workspace-yaml"},
                },
                *copy.deepcopy(web.get("volumes") or []),
            ],
        },
    )


def daemon_pod(values: Mapping[str, Any], release: str = RELEASE_NAME) -> dict[str, Any]:
    daemon = values["dagsterDaemon"]
    home = dagster_home(values)
    container: dict[str, Any] = {
        "name": CHART_NAME,
        "image": image_name(daemon["image"]),
        "imagePullPolicy": daemon["image"]["pullPolicy"],
        "command": ["dagster-daemon"],
        "args": ["run", "-w", "/dagster-workspace/workspace.yaml"],
        "securityContext": copy.deepcopy(daemon.get("securityContext") or {}),
        "env": _control_plane_env(values, release, daemon),
        "envFrom": _env_from(
            [f"{fullname(release)}-daemon-env", *_names(daemon.get("envConfigMaps"))],
            daemon.get("envSecrets"),
        ),
        "volumeMounts": [
            {"name": "dagster-instance", "mountPath": f"{home}/dagster.yaml", "subPath": "dagster.yaml"},
            {"name": "dagster-workspace-yaml", "mountPath": "/dagster-workspace/"},
            *copy.deepcopy(daemon.get("volumeMounts") or []),
        ],
        "resources": copy.deepcopy(daemon.get("resources") or {}),
    }
    if daemon.get("livenessProbe"):
        container["livenessProbe"] = _probe_without_chart_keys(daemon["livenessProbe"])
    if (daemon.get("startupProbe") or {}).get("enabled"):
        container["startupProbe"] = _probe_without_chart_keys(daemon["startupProbe"])
    labels = {
        **selector_labels(release),
        "component": "dagster-daemon",
        "deployment": "daemon",
        **(daemon.get("labels") or {}),
    }
    return _pod(
        f"{release}-daemon",
        labels,
        {
            "serviceAccountName": service_account_name(values, release),
            "securityContext": copy.deepcopy(daemon.get("podSecurityContext") or {}),
            "containers": [container],
            "volumes": [
                {"name": "dagster-instance", "configMap": {"name": f"{fullname(release)}-instance"}},
                {
                    "name": "dagster-workspace-yaml",
                    "configMap": {"name": f"{fullname(release)}-workspace-yaml"},
                },
                *copy.deepcopy(daemon.get("volumes") or []),
            ],
        },
    )


def _grpc_health_check(port: int) -> dict[str, Any]:
    return {"exec": {"command": ["dagster", "api", "grpc-health-check", "-p", str(port)]}}


def user_code_pod(
    values: Mapping[str, Any], deployment: Mapping[str, Any], release: str = RELEASE_NAME
) -> dict[str, Any]:
    port = deployment["port"]
    args = None
    if deployment.get("dagsterApiGrpcArgs"):
        args = ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", str(port), *deployment["dagsterApiGrpcArgs"]]
    elif deployment.get("codeServerArgs"):
        args = ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", str(port), *deployment["codeServerArgs"]]
    env: list[dict[str, Any]] = [
        {"name": "DAGSTER_CURRENT_IMAGE", "value": image_name(deployment["image"])},
        {
            "name": "DAGSTER_PG_PASSWORD",
            "valueFrom": {
                "secretKeyRef": {
                    "name": postgresql_secret_name(values, release),
                    "key": "postgresql-password",
                }
            },
        },
    ]
    context = user_code_container_context(values, deployment, release)
    if context is not None:
        env.append(
            {
                "name": "DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT"
                if deployment.get("dagsterApiGrpcArgs")
                else "DAGSTER_CONTAINER_CONTEXT",
                "value": json.dumps(context),
            }
        )
    if isinstance(deployment.get("env"), list):
        env.extend(copy.deepcopy(deployment["env"]))
    container: dict[str, Any] = {
        "name": USER_DEPLOYMENTS_CHART_NAME,
        "image": image_name(deployment["image"]),
        "imagePullPolicy": deployment["image"]["pullPolicy"],
        "securityContext": copy.deepcopy(deployment.get("securityContext") or {}),
        "env": env,
        "envFrom": _env_from(
            [
                f"{fullname(release, USER_DEPLOYMENTS_CHART_NAME)}-user-deployments-shared-env",
                user_env_configmap_name(deployment, release),
                *_names(deployment.get("envConfigMaps")),
            ],
            deployment.get("envSecrets"),
        ),
        "resources": copy.deepcopy(deployment.get("resources") or {}),
    }
    if args:
        container["args"] = args
    readiness = deployment.get("readinessProbe")
    if not readiness:
        container["readinessProbe"] = {
            **_grpc_health_check(port),
            "periodSeconds": 20,
            "timeoutSeconds": 10,
            "successThreshold": 1,
            "failureThreshold": 15,
        }
    elif readiness.get("enabled") is not False:
        container["readinessProbe"] = {
            **(_grpc_health_check(port) if "exec" not in readiness else {}),
            **_probe_without_chart_keys(readiness),
        }
    liveness = deployment.get("livenessProbe")
    if liveness:
        container["livenessProbe"] = {
            **(_grpc_health_check(port) if "exec" not in liveness else {}),
            **_probe_without_chart_keys(liveness),
        }
    startup = deployment.get("startupProbe")
    if startup and startup.get("enabled"):
        container["startupProbe"] = {
            **_probe_without_chart_keys(startup),
            **(_grpc_health_check(port) if "exec" not in startup else {}),
        }
    if deployment.get("volumeMounts"):
        container["volumeMounts"] = copy.deepcopy(deployment["volumeMounts"])
    labels = {
        **selector_labels(release),
        "component": "user-deployments",
        "deployment": deployment["name"],
        **(deployment.get("labels") or {}),
    }
    spec: dict[str, Any] = {
        "serviceAccountName": user_deployments_service_account(release),
        "automountServiceAccountToken": True,
        "securityContext": copy.deepcopy(deployment.get("podSecurityContext") or {}),
        "containers": [container],
    }
    if deployment.get("volumes"):
        spec["volumes"] = copy.deepcopy(deployment["volumes"])
    return _pod(f"{fullname(release, USER_DEPLOYMENTS_CHART_NAME)}-{deployment['name']}", labels, spec)


def control_plane_pods(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every long-running pod of the release, by a short role name."""
    pods = {"webserver": webserver_pod(values), "daemon": daemon_pod(values)}
    if values["dagsterWebserver"].get("enableReadOnly"):
        pods["webserver-read-only"] = webserver_pod(values, read_only=True)
    for deployment in user_deployments(values):
        pods[f"code-server/{deployment['name']}"] = user_code_pod(values, deployment)
    return pods


# --------------------------------------------------------------------------------------------
# Where a run comes from, as Dagster records it for a run of our code location in the cluster.

CODE_LOCATION_NAME = "arb-orchestration"  # the deployment's name; the chart's workspace uses it


def remote_job_origin(job_name: str):
    from dagster._core.remote_origin import (
        GrpcServerCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )

    location = GrpcServerCodeLocationOrigin(
        host=CODE_LOCATION_NAME, port=3030, location_name=CODE_LOCATION_NAME
    )
    return RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=location, repository_name="__repository__"
        ),
        job_name=job_name,
    )


def job_code_origin(job_name: str, container_image: str, container_context: Mapping | None):
    """What the code server reports: its image (DAGSTER_CURRENT_IMAGE) and container context."""
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin

    return JobPythonOrigin(
        job_name=job_name,
        repository_origin=RepositoryPythonOrigin(
            executable_path="/opt/venv/bin/python",
            code_pointer=ModuleCodePointer(
                module="arb_orchestration.definitions", fn_name="defs", working_directory=None
            ),
            container_image=container_image,
            entry_point=["dagster"],
            container_context=container_context,
        ),
    )


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


def _main(argv: list[str]) -> int:
    usage = "usage: python -m arb_orchestration_tests.unit.deploy_model instance|context ENV"
    if len(argv) != 2 or argv[1] not in {**ENVIRONMENTS, **OPT_IN_ENVIRONMENTS}:
        print(usage, file=sys.stderr)
        return 2
    values = merged_values(argv[1])
    if argv[0] == "instance":
        print(yaml.dump(render_instance(values), Dumper=_NoAliasDumper, sort_keys=False), end="")
    elif argv[0] == "context":
        for deployment in user_deployments(values):
            print(json.dumps(user_code_container_context(values, deployment), indent=2))
    else:
        print(usage, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
