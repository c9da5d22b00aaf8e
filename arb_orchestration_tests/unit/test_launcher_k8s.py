"""The warm worker on Kubernetes: k8s/warm-worker-*.yaml against the schemas, the release and the launcher.

- Every document validates with `kubernetes-validate` (strict: unknown fields fail) for the oldest
  and newest Kubernetes versions the other manifests target.
- The Deployment runs exactly what a run pod runs: the code location's image (bumped together:
  this fails when one is forgotten), its env ConfigMaps and Secrets, the release's instance
  ConfigMap and PostgreSQL password, the critical PriorityClass, the same unprivileged posture.
- Its arguments are the worker's own command line (parsed with its parser): a TCP address on the
  container port, the pod IP advertised, a drain shorter than the grace period.
- The Service and the NetworkPolicies connect exactly the daemon and the editing webserver to it.
- The run launcher config documented for the control plane (docs/emergency-path.md) is valid for
  `WarmWorkerRunLauncher`, and its fallback is valid `K8sRunLauncher` config built from our values.
"""

from __future__ import annotations

import pytest

from arb_orchestration.defs.k8s import CRITICAL_PRIORITY_CLASS
from arb_orchestration.launcher.__main__ import build_parser
from arb_orchestration.launcher.protocol import WorkerAddress
from arb_orchestration_tests.unit import deploy_model as model
from arb_orchestration_tests.unit import k8s_manifests as manifests
from arb_orchestration_tests.unit.test_k8s_objects import K8S_VERSIONS

FILES = ("warm-worker-deployment.yaml", "warm-worker-networkpolicy.yaml")


def _by_kind(kind: str) -> list[dict]:
    return model.k8s_of_kind(FILES, kind)


@pytest.fixture(scope="module")
def deployment() -> dict:
    return manifests.only_of_kind(FILES, "Deployment")


@pytest.fixture(scope="module")
def container(deployment) -> dict:
    (found,) = deployment["spec"]["template"]["spec"]["containers"]
    return found


@pytest.fixture(scope="module")
def release() -> dict:
    return manifests.prod_release()


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", FILES)
def test_manifests_are_valid_kubernetes(name, version):
    manifests.assert_valid_kubernetes(name, version)


def test_worker_runs_the_code_locations_image_with_its_settings_and_secrets(container, release):
    code_server = release["pods"]["code-server/arb-orchestration"]["spec"]["containers"][0]
    (user_code,) = model.user_deployments(release["values"])
    image = model.image_name(user_code["image"])
    assert container["image"] == image
    env = {item["name"]: item for item in container["env"]}
    assert env["DAGSTER_CURRENT_IMAGE"]["value"] == image  # runs of another image are refused
    assert container["envFrom"] == code_server["envFrom"]
    pg_password = next(item for item in code_server["env"] if item["name"] == "DAGSTER_PG_PASSWORD")
    assert env["DAGSTER_PG_PASSWORD"] == pg_password
    assert env["DAGSTER_HOME"]["value"] == model.dagster_home(release["values"])


def test_worker_uses_the_release_instance_and_the_run_pod_posture(deployment, container, release):
    pod = deployment["spec"]["template"]["spec"]
    instance = next(v for v in pod["volumes"] if v["name"] == "dagster-instance")
    assert instance["configMap"]["name"] == model.render_run_launcher(release["values"])["config"]["instance_config_map"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "dagster-instance")
    assert mount["mountPath"] == f"{model.dagster_home(release['values'])}/dagster.yaml"
    assert pod["priorityClassName"] == CRITICAL_PRIORITY_CLASS
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    resources = container["resources"]
    assert resources["requests"] == resources["limits"]  # Guaranteed QoS, like a stop-loss run pod
    strategy = deployment["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0  # a warm worker stays available through a rollout


def test_worker_arguments_are_its_own_command_line(deployment, container):
    args = container["args"]
    assert args[:3] == ["python", "-m", "arb_orchestration.launcher"]
    parsed = build_parser().parse_args([a.replace("$(POD_IP)", "10.0.0.7") for a in args[3:]])
    listen = WorkerAddress.parse(parsed.address)
    (port,) = container["ports"]
    assert listen.kind == "tcp" and listen.host == "0.0.0.0" and listen.port == port["containerPort"]
    assert WorkerAddress.parse(parsed.advertise) == WorkerAddress("tcp", host="10.0.0.7", port=listen.port)
    assert any(item["name"] == "POD_IP" and item["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
               for item in container["env"])
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert 0 < parsed.drain_seconds < grace
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"]["port"] == port["name"]  # bound only once warm


def _matches(selector: dict, labels: dict) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def test_service_and_policies_connect_the_daemon_and_webserver_only(deployment, container, release):
    (service,) = _by_kind("Service")
    worker_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _matches({"matchLabels": service["spec"]["selector"]}, worker_labels)
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == container["ports"][0]["name"]
    pods = {name: pod["metadata"]["labels"] for name, pod in release["pods"].items()}

    ingress, reach = sorted(_by_kind("NetworkPolicy"), key=lambda p: p["metadata"]["name"] != "arb-warm-worker")
    assert _matches(ingress["spec"]["podSelector"], worker_labels)
    (rule,) = ingress["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [port["port"]]
    callers = {name for name, labels in pods.items() if any(_matches(f["podSelector"], labels) for f in rule["from"])}
    assert callers == {"daemon", "webserver"}

    selected = {name for name, labels in pods.items() if _matches(reach["spec"]["podSelector"], labels)}
    assert selected == {"daemon", "webserver"}
    (out,) = reach["spec"]["egress"]
    assert _matches(out["to"][0]["podSelector"], worker_labels) and out["ports"][0]["port"] == port["port"]

    env = model.user_deployments(release["values"])[0]["env"]
    egress_ports = {p["port"] for r in ingress["spec"]["egress"] for p in r["ports"]}
    kafka_ports = {int(server.rsplit(":", 1)[1]) for server in env["KAFKA_BOOTSTRAP_SERVERS"].split(",")}
    assert {5432, 443, int(env["SMTP_PORT"])} | kafka_ports <= egress_ports  # what its runs reach


def test_documented_control_plane_launcher_config_is_valid(release, monkeypatch):
    from dagster._config import Shape, process_config
    from dagster_k8s import K8sRunLauncher

    from arb_orchestration.launcher import WarmWorkerRunLauncher

    monkeypatch.setenv("ARB_WARM_WORKER_TOKEN", "t")  # resolved from the pod's environment

    fallback_config = model.render_run_launcher(release["values"])["config"]
    config = {
        "worker_address": "tcp:arb-warm-worker:4000",
        "token": {"env": "ARB_WARM_WORKER_TOKEN"},
        "fallback": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": fallback_config},
    }
    result = process_config(Shape(WarmWorkerRunLauncher.config_type()), config)
    assert result.success, result.errors
    fallback = process_config(Shape(K8sRunLauncher.config_type()), fallback_config)
    assert fallback.success, fallback.errors
