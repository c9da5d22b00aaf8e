"""The Kubernetes Job that dagster-k8s creates for our runs, built by dagster-k8s itself.

A real `K8sRunLauncher` is constructed from the run-launcher section the chart renders from
helm-values/ (only `load_incluster_config` is swapped for an offline kubeconfig), with a recording
stand-in for the Kubernetes API client. `launch_run` then goes through dagster-k8s's own code:
container context of the code location (what `includeConfigInLaunchedRuns` sends) merged with the
launcher defaults and the run's `dagster-k8s/config` tag, `construct_dagster_k8s_job`, and the
create call, whose body we capture and check field by field and with `kubernetes-validate`.

The recorded API calls of launch, run-monitoring health check, termination and failure debug
info are compared with the least-privilege Role in k8s/rbac-least-privilege.yaml.
"""

from __future__ import annotations

import datetime
from types import SimpleNamespace

import kubernetes
import kubernetes_validate
import pytest
from dagster._config import process_config
from dagster._core.instance_for_test import instance_for_test
from dagster._core.launcher import LaunchRunContext
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.test_utils import create_run_for_test
from dagster_k8s import K8sRunLauncher
from dagster_k8s.job import (
    DagsterK8sJobConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)

from arb_orchestration.defs import k8s as tags
from arb_orchestration_tests.unit import deploy_model as model

K8S_VERSIONS = ("1.30", "1.37")
APP_SECRETS = [
    "arb-exchange-credentials",
    "arb-wise-credentials",
    "arb-kafka-credentials",
    "arb-smtp-credentials",
    "arb-event-signing-key",
]

OFFLINE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
  - name: offline
    cluster: {server: "https://127.0.0.1:6443"}
users:
  - name: offline
    user: {token: not-a-token}
contexts:
  - name: offline
    context: {cluster: offline, user: offline, namespace: arb-orchestration}
current-context: offline
"""


class RecordingKubernetesApi:
    """Stands in for kubernetes.client.BatchV1Api / CoreV1Api: records every call, answers a few."""

    def __init__(self, pods_exist: bool = True):
        self.calls: list[str] = []
        self.created: list[tuple[str, kubernetes.client.V1Job]] = []
        self.pods_exist = pods_exist

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args, **kwargs):
            self.calls.append(name)
            return self._answer(name, args, kwargs)

        return call

    def _answer(self, name, args, kwargs):
        client = kubernetes.client
        if name == "create_namespaced_job":
            self.created.append((kwargs["namespace"], kwargs["body"]))
            return kwargs["body"]
        if name == "read_namespaced_job_status":
            return client.V1Job(status=client.V1JobStatus(active=1))
        if name in ("delete_namespaced_job", "delete_namespaced_pod"):
            return client.V1Status(status="Success")
        if name == "list_namespaced_pod":
            return client.V1PodList(items=[_failed_pod()] if self.pods_exist else [])
        if name == "read_namespaced_pod_log":
            return SimpleNamespace(data=b"Traceback ...\n")
        if name == "list_namespaced_event":
            return SimpleNamespace(items=[])
        if name == "list_namespaced_job":
            status = client.V1JobStatus(start_time=datetime.datetime.now(datetime.UTC), failed=1)
            return SimpleNamespace(items=[client.V1Job(status=status)])
        raise AssertionError(f"unexpected Kubernetes API call {name}: add it to the RBAC check")


def _failed_pod():
    client = kubernetes.client
    terminated = client.V1ContainerState(
        terminated=client.V1ContainerStateTerminated(exit_code=137, reason="OOMKilled")
    )
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name="dagster-run-x-abcde"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="dagster")]),
        status=client.V1PodStatus(
            phase="Failed",
            container_statuses=[
                client.V1ContainerStatus(
                    name="dagster", state=terminated, ready=False, restart_count=0, image="i", image_id="i"
                )
            ],
        ),
    )


@pytest.fixture(scope="module")
def instance():
    with instance_for_test() as instance:
        yield instance


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory):
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(OFFLINE_KUBECONFIG)
    return str(path)


@pytest.fixture(scope="module")
def prod_values():
    return model.merged_values("prod")


def make_launcher(values, kubeconfig, instance, api: RecordingKubernetesApi) -> K8sRunLauncher:
    section = model.render_instance(values)["run_launcher"]
    config = dict(section["config"], load_incluster_config=False, kubeconfig_file=kubeconfig)
    processed = process_config(K8sRunLauncher.config_type(), config)
    assert processed.success, processed.errors
    launcher = K8sRunLauncher(
        **processed.value, k8s_client_batch_api=api, k8s_client_core_api=api
    )
    launcher.register_instance(instance)
    return launcher


def user_code_image(values) -> str:
    return model.image_name(model.user_deployments(values)[0]["image"])


def launch(
    values, kubeconfig, instance, job_name, run_tags, *, include_container_context=True, status=None
):
    """Launch one run through the real launcher; return (run, namespace, job as a dict, api)."""
    api = RecordingKubernetesApi()
    launcher = make_launcher(values, kubeconfig, instance, api)
    deployment = model.user_deployments(values)[0]
    context = (
        model.user_code_container_context(values, deployment) if include_container_context else None
    )
    run = create_run_for_test(
        instance,
        job_name=job_name,
        tags=dict(run_tags),
        job_code_origin=model.job_code_origin(job_name, user_code_image(values), context),
        remote_job_origin=model.remote_job_origin(job_name),
        status=status,
    )
    launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    assert len(api.created) == 1
    namespace, job = api.created[0]
    as_dict = kubernetes.client.ApiClient().sanitize_for_serialization(job)
    return run, namespace, as_dict, api


def qos_class(pod_spec: dict) -> str:
    """Kubernetes' QoS class of a pod (as the kubelet computes it) from its containers."""
    guaranteed, any_set = True, False
    for container in pod_spec["containers"]:
        resources = container.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        any_set = any_set or bool(limits or requests)
        for name in ("cpu", "memory"):
            if name not in limits or requests.get(name, limits[name]) != limits[name]:
                guaranteed = False
    return "Guaranteed" if guaranteed else ("Burstable" if any_set else "BestEffort")


def _container(job: dict) -> dict:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container per run pod (QoS and resources assume it)"
    return containers[0]


def _secret_refs(container: dict) -> list[str]:
    return [ref["secretRef"]["name"] for ref in container["envFrom"] if "secretRef" in ref]


@pytest.fixture(scope="module")
def stop_loss(prod_values, kubeconfig, instance):
    return launch(prod_values, kubeconfig, instance, tags.STOP_LOSS_JOB, tags.STOP_LOSS_RUN_TAGS)


def test_stop_loss_job_runs_our_image_in_our_namespace(stop_loss, prod_values):
    run, namespace, job, _ = stop_loss
    assert namespace == prod_values["runLauncher"]["config"]["k8sRunLauncher"]["jobNamespace"]
    assert job["metadata"]["name"] == f"dagster-run-{run.run_id}"
    container = _container(job)
    assert container["image"] == user_code_image(prod_values)
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["args"][:3] == ["dagster", "api", "execute_run"]
    assert "command" not in container  # the image's ENTRYPOINT (tini) stays in front


def test_stop_loss_job_gets_secrets_only_by_reference(stop_loss):
    _, _, job, _ = stop_loss
    container = _container(job)
    assert _secret_refs(container) == APP_SECRETS  # each once: launcher + code location deduplicated
    env = {item["name"]: item for item in container["env"]}
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "arb-dagster-postgresql",
        "key": "postgresql-password",
    }
    assert env["DAGSTER_DEPLOYMENT"]["value"] == "prod"
    assert env["DAGSTER_HOME"]["value"] == "/opt/dagster/dagster_home"
    config_maps = [ref["configMapRef"]["name"] for ref in container["envFrom"] if "configMapRef" in ref]
    assert config_maps == [model.user_env_configmap_name(model.user_deployments(model.merged_values("prod"))[0])]
    # No literal value of any secret setting appears anywhere in the Job.
    from arb_orchestration import settings

    secret_names = {name for name, setting in settings.SETTINGS.items() if setting.secret}
    assert not secret_names & set(env)


def test_stop_loss_job_has_guaranteed_resources_and_the_critical_priority_class(stop_loss):
    _, _, job, _ = stop_loss
    pod_spec = job["spec"]["template"]["spec"]
    resources = _container(job)["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert qos_class(pod_spec) == "Guaranteed"
    assert pod_spec["priorityClassName"] == tags.CRITICAL_PRIORITY_CLASS


def test_stop_loss_job_security_context(stop_loss):
    _, _, job, _ = stop_loss
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert _container(job)["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod_spec["automountServiceAccountToken"] is False
    # The code location's container context names the user-deployments service account.
    assert pod_spec["serviceAccountName"] == model.user_deployments_service_account()


def test_stop_loss_job_writable_mounts_are_emptydirs_without_duplicates(stop_loss):
    _, _, job, _ = stop_loss
    pod_spec = job["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod_spec["volumes"]}
    assert len(volumes) == len(pod_spec["volumes"]) == 2
    assert all("emptyDir" in volume for volume in volumes.values())
    mounts = _container(job)["volumeMounts"]
    assert sorted(mount["mountPath"] for mount in mounts) == ["/opt/dagster/dagster_home", "/tmp"]
    assert len({mount["mountPath"] for mount in mounts}) == len(mounts)


def test_stop_loss_job_spec_never_restarts_a_run_and_labels_it(stop_loss):
    run, _, job, _ = stop_loss
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == 259200
    template = job["spec"]["template"]
    assert template["spec"]["restartPolicy"] == "Never"
    assert template["metadata"]["annotations"] == {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
    labels = template["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "run_worker"
    assert labels["app.kubernetes.io/part-of"] == "dagster"
    assert labels["dagster/job"] == tags.STOP_LOSS_JOB
    assert labels["dagster/run-id"] == run.run_id
    assert labels["dagster/code-location"] == model.CODE_LOCATION_NAME
    assert labels["arb-orchestration/role"] == "run-worker"
    assert job["metadata"]["labels"]["arb-orchestration/role"] == "run-worker"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_stop_loss_job_is_a_valid_kubernetes_job(stop_loss, version):
    _, _, job, _ = stop_loss
    kubernetes_validate.validate(job, version, strict=True)


def test_rebalance_job_resources_come_from_its_tags(prod_values, kubeconfig, instance):
    _, _, job, _ = launch(prod_values, kubeconfig, instance, tags.REBALANCE_JOB, tags.REBALANCE_RUN_TAGS)
    resources = _container(job)["resources"]
    assert resources == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}
    assert qos_class(job["spec"]["template"]["spec"]) == "Burstable"
    assert "priorityClassName" not in job["spec"]["template"]["spec"]
    kubernetes_validate.validate(job, K8S_VERSIONS[-1], strict=True)


def test_untagged_job_gets_the_code_locations_resources(prod_values, kubeconfig, instance):
    # includeConfigInLaunchedRuns sends the code server's resources; they win over the launcher's.
    _, _, job, _ = launch(prod_values, kubeconfig, instance, "observe_balances", {})
    deployment = model.user_deployments(prod_values)[0]
    assert _container(job)["resources"] == deployment["resources"]


def test_without_the_code_locations_context_the_launcher_defaults_apply(prod_values, kubeconfig, instance):
    _, namespace, job, _ = launch(
        prod_values, kubeconfig, instance, "observe_balances", {}, include_container_context=False
    )
    launcher_values = prod_values["runLauncher"]["config"]["k8sRunLauncher"]
    container = _container(job)
    assert namespace == launcher_values["jobNamespace"]
    assert container["resources"] == launcher_values["resources"]
    assert _secret_refs(container) == APP_SECRETS
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "dagster"
    assert {item["name"]: item.get("value") for item in container["env"]}["DAGSTER_DEPLOYMENT"] == "prod"
    kubernetes_validate.validate(job, K8S_VERSIONS[-1], strict=True)


def test_tags_alone_through_construct_dagster_k8s_job():
    """The minimal path: DagsterK8sJobConfig + the tag's user-defined config, nothing merged."""
    job_config = DagsterK8sJobConfig(
        job_image="registry.example.internal/arb/arb-orchestration:0.1.0",
        dagster_home="/opt/dagster/dagster_home",
        instance_config_map="dagster-instance",
        postgres_password_secret="arb-dagster-postgresql",
        env_secrets=APP_SECRETS,
    )
    job = construct_dagster_k8s_job(
        job_config,
        args=["dagster", "api", "execute_run", "{}"],
        job_name="dagster-run-stop-loss",
        user_defined_k8s_config=get_user_defined_k8s_config(dict(tags.STOP_LOSS_RUN_TAGS)),
        component="run_worker",
        labels={"dagster/job": tags.STOP_LOSS_JOB},
    )
    as_dict = kubernetes.client.ApiClient().sanitize_for_serialization(job)
    pod_spec = as_dict["spec"]["template"]["spec"]
    assert qos_class(pod_spec) == "Guaranteed"
    assert pod_spec["priorityClassName"] == tags.CRITICAL_PRIORITY_CLASS
    assert _secret_refs(_container(as_dict)) == APP_SECRETS
    assert as_dict["spec"]["template"]["metadata"]["labels"]["dagster/job"] == tags.STOP_LOSS_JOB
    kubernetes_validate.validate(as_dict, K8S_VERSIONS[-1], strict=True)


# --------------------------------------------------------------------------------------------
# RBAC: every API call the launcher makes must be allowed by k8s/rbac-least-privilege.yaml.

_VERBS = {"create": "create", "read": "get", "list": "list", "delete": "delete", "patch": "patch", "replace": "update"}
_RESOURCES = {
    "namespaced_job": ("batch", "jobs"),
    "namespaced_job_status": ("batch", "jobs/status"),
    "namespaced_pod": ("", "pods"),
    "namespaced_pod_log": ("", "pods/log"),
    "namespaced_event": ("", "events"),
}


def _permission(method: str) -> tuple[str, str, str]:
    verb, _, resource = method.partition("_")
    group, plural = _RESOURCES[resource]
    return group, plural, _VERBS[verb]


def _role_permissions() -> set[tuple[str, str, str]]:
    documents = model.load_yaml_documents(model.K8S_DIR / "rbac-least-privilege.yaml")
    (role,) = [doc for doc in documents if doc["kind"] == "Role"]
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_rbac_role_covers_every_api_call_of_the_launcher(prod_values, kubeconfig, instance):
    run, _, _, api = launch(
        prod_values,
        kubeconfig,
        instance,
        tags.STOP_LOSS_JOB,
        tags.STOP_LOSS_RUN_TAGS,
        status=DagsterRunStatus.STARTED,  # run monitoring looks at STARTED runs
    )
    launcher = make_launcher(prod_values, kubeconfig, instance, api)
    assert launcher.check_run_worker_health(run).status.value == "RUNNING"  # run monitoring
    launcher.get_run_worker_debug_info(run)  # failure message of a dead run, pods present
    api.pods_exist = False
    launcher.get_run_worker_debug_info(run)  # ... and when its pod is already gone
    api.pods_exist = True
    assert launcher.terminate(run.run_id)  # "Terminate" in the UI
    used = {_permission(method) for method in api.calls}
    granted = _role_permissions()
    assert used - granted == set(), "the Role misses permissions the launcher uses"
    # Nothing beyond what is used, except reading (get/watch) the same resources.
    extra = {perm for perm in granted - used if perm[2] not in {"get", "list", "watch"}}
    assert extra == set(), f"the Role grants unused write permissions: {sorted(extra)}"
    assert {resource for _, resource, _ in granted} == {resource for _, resource, _ in used}
    assert ("batch", "jobs", "create") in used and ("", "pods/log", "get") in used


def test_rbac_binding_names_the_chart_service_account(prod_values):
    documents = model.load_yaml_documents(model.K8S_DIR / "rbac-least-privilege.yaml")
    (binding,) = [doc for doc in documents if doc["kind"] == "RoleBinding"]
    (subject,) = binding["subjects"]
    assert subject == {
        "kind": "ServiceAccount",
        "name": model.service_account_name(prod_values),
        "namespace": model.NAMESPACE,
    }
    section = model.render_instance(prod_values)["run_launcher"]["config"]
    assert section["service_account_name"] == subject["name"]
