"""Kubernetes objects in helm-values/ and k8s/: schemas, security posture, secrets, network reach.

- The pods the chart builds from our values (webserver, read-only webserver, daemon, code server:
  deploy_model.control_plane_pods) and every manifest in k8s/ are validated with
  `kubernetes-validate` in strict mode (unknown fields fail) for the oldest and newest Kubernetes
  versions we target. The run pods are validated in test_k8s_run_job.py.
- Every pod runs as non-root with a read-only root filesystem, no privilege escalation, no
  capabilities, RuntimeDefault seccomp, and emptyDir mounts where Dagster writes.
- The Secret template covers every secret setting of arb_orchestration/settings.py exactly once,
  holds placeholders only, and every Secret a pod loads is in it; the code location's non-secret
  settings are known names that parse.
- The NetworkPolicies are evaluated (a small evaluator of the NetworkPolicy rules, below) against
  the real labels of our pods and of the run Job dagster-k8s constructs.
"""

from __future__ import annotations

import copy

import kubernetes
import kubernetes_validate
import pytest
from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job

from arb_orchestration import settings
from arb_orchestration_tests.unit import deploy_model as model

K8S_VERSIONS = ("1.30", "1.37")
ENVIRONMENTS = sorted(model.ENVIRONMENTS)
MANIFESTS = sorted(model.K8S_DIR.glob("*.yaml"))
PLACEHOLDER = "REPLACE_ME"
APP_UID = 10001


def _manifest_documents():
    for path in MANIFESTS:
        for index, document in enumerate(model.load_yaml_documents(path)):
            yield pytest.param(document, id=f"{path.name}[{index}]:{document['kind']}/{document['metadata']['name']}")


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_control_plane_pods_are_valid_kubernetes(environment, version):
    pods = model.control_plane_pods(model.merged_values(environment))
    assert set(pods) == {"webserver", "webserver-read-only", "daemon", "code-server/arb-orchestration"}
    for name, pod in pods.items():
        try:
            kubernetes_validate.validate(pod, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{environment} {name}: {error.message} at {list(error.absolute_path)}")


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("document", list(_manifest_documents()))
def test_extra_manifests_are_valid_kubernetes(document, version):
    kubernetes_validate.validate(document, version, strict=True)


def test_every_manifest_file_has_documents():
    assert {path.name for path in MANIFESTS} == {
        "networkpolicy.yaml",
        "secrets.template.yaml",
        "rbac-least-privilege.yaml",
        "priorityclass.yaml",
        # The emergency fast path's warm worker (tested in test_launcher_k8s.py).
        "warm-worker-deployment.yaml",
        "warm-worker-networkpolicy.yaml",
        # The Wise webhook receiver (tested in test_wise_webhooks_k8s.py).
        "wise-webhooks-deployment.yaml",
        "wise-webhooks-service.yaml",
        "wise-webhooks-networkpolicy.yaml",
        # Only with the bundled PostgreSQL (test_review_deployment_bundled_postgresql.py).
        "postgresql-bundled-networkpolicy.yaml",
    }
    for path in MANIFESTS:
        assert model.load_yaml_documents(path), path.name


@pytest.mark.parametrize(
    ("component", "section", "bad"),
    [
        ("webserver", "securityContext", {"readOnlyRootFileSystem": True}),
        ("webserver", "readinessProbe", {"periodSecond": 10}),
        ("daemon", "resources", {"limit": {"cpu": "1"}}),
        ("daemon", "podSecurityContext", {"runAsNonroot": True}),
    ],
)
def test_a_misspelled_kubernetes_field_in_the_values_is_caught(component, section, bad):
    # The chart's schema cannot see these (its Kubernetes $refs are remote); kubernetes-validate can.
    values = copy.deepcopy(model.merged_values("prod"))
    key = "dagsterWebserver" if component == "webserver" else "dagsterDaemon"
    values[key][section] = {**values[key][section], **bad}
    pod = model.control_plane_pods(values)[component]
    with pytest.raises(kubernetes_validate.ValidationError, match=next(iter(bad))):
        kubernetes_validate.validate(pod, K8S_VERSIONS[-1], strict=True)


# --------------------------------------------------------------------------------------------
# Security posture of every long-running pod.


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_pods_run_unprivileged_on_a_read_only_root(environment):
    values = model.merged_values(environment)
    home = model.dagster_home(values)
    for name, pod in model.control_plane_pods(values).items():
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == APP_UID, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        assert len(volumes) == len(spec.get("volumes", [])), f"{name}: duplicate volume names"
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            mounts = {mount["mountPath"]: mount for mount in container.get("volumeMounts", [])}
            assert len(mounts) == len(container.get("volumeMounts", [])), f"{name}: duplicate mounts"
            for path in ("/tmp", home):
                assert path in mounts, f"{name}: nothing writable at {path}"
                assert "emptyDir" in volumes[mounts[path]["name"]], f"{name}: {path} is not an emptyDir"
            assert all(mount["name"] in volumes for mount in mounts.values()), name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{name}: {kind}"


def test_webserver_probes_use_the_port_it_listens_on():
    values = model.merged_values("prod")
    port = values["dagsterWebserver"]["service"]["port"]
    assert port > 1024  # a non-root process without NET_BIND_SERVICE
    container = model.webserver_pod(values)["spec"]["containers"][0]
    assert container["ports"][0]["containerPort"] == port
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/server_info", "port": port}, probe


def test_code_server_probes_are_the_charts_grpc_health_check():
    values = model.merged_values("prod")
    deployment = model.user_deployments(values)[0]
    container = model.user_code_pod(values, deployment)["spec"]["containers"][0]
    check = ["dagster", "api", "grpc-health-check", "-p", str(deployment["port"])]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["exec"]["command"] == check, probe
    assert container["args"] == [
        "dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "3030",
        "-m", "arb_orchestration.definitions",
    ]


# --------------------------------------------------------------------------------------------
# Secrets and settings.


def _secret_template() -> dict[str, dict[str, str]]:
    documents = model.load_yaml_documents(model.K8S_DIR / "secrets.template.yaml")
    assert all(doc["kind"] == "Secret" and "data" not in doc for doc in documents)
    return {doc["metadata"]["name"]: doc["stringData"] for doc in documents}


def test_secret_template_holds_placeholders_only():
    for name, data in _secret_template().items():
        assert data and all(value == PLACEHOLDER for value in data.values()), name


def _concrete_secret_names() -> list[str]:
    """Secret settings by name; per-venue patterns (CCXT_<VENUE>_...) once per venue the values deploy."""
    (deployment,) = model.user_deployments(model.merged_values("prod"))
    venues = [v.strip() for v in deployment["env"]["EXCHANGE_VENUES"].split(",")]
    names = []
    for name, setting in settings.SETTINGS.items():
        if not setting.secret:
            continue
        if "<VENUE>" in name:
            names += [name.replace("<VENUE>", venue.upper()) for venue in venues]
        else:
            names.append(name)
    return names


def test_every_secret_setting_is_in_exactly_one_secret():
    keys = [key for data in _secret_template().values() for key in data]
    secret_names = _concrete_secret_names()
    optional = {"CCXT_" + v + "_PASSWORD" for v in ("BINANCE", "BYBIT", "KRAKEN", "HYPERLIQUID")}
    for name in secret_names:
        if name in optional:
            assert keys.count(name) <= 1, name  # only venues with a passphrase need one
        else:
            assert keys.count(name) == 1, name
    assert set(keys) - set(secret_names) == {"postgresql-password"}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_secret_a_pod_loads_is_in_the_template(environment):
    values = model.merged_values(environment)
    template = _secret_template()
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    loaded = [ref["name"] for ref in launcher["envSecrets"]]
    for deployment in model.user_deployments(values):
        loaded += [ref["name"] for ref in deployment["envSecrets"]]
        assert [ref["name"] for ref in deployment["envSecrets"]] == [
            ref["name"] for ref in launcher["envSecrets"]
        ], "runs and the code server load the same secrets"
    assert set(loaded) <= set(template)
    if not values["generatePostgresqlPasswordSecret"]:
        assert "postgresql-password" in template[model.postgresql_secret_name(values)]


@pytest.mark.parametrize("environment", ["base", "staging", "prod"])
def test_code_location_settings_are_known_and_parse(environment, monkeypatch):
    values = model.merged_values(environment)
    (deployment,) = model.user_deployments(values)
    env = deployment["env"]
    assert set(env) <= set(settings.SETTINGS), f"unknown settings: {set(env) - set(settings.SETTINGS)}"
    assert not [name for name in env if settings.SETTINGS[name].secret], "a secret in plain env"
    for name in settings.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for data in _secret_template().values():  # what envFrom will provide
        for name in data:
            monkeypatch.setenv(name, "x")
    assert settings.deployment_name() == "prod"
    skip = {"EXCHANGE_SIM_URL"} if env["EXCHANGE_BACKEND"] == "ccxt" else set()
    for name, setting in settings.SETTINGS.items():
        if setting.secret:
            settings.require_secret_present(name)
        elif name not in skip:
            settings.raw(name)  # raises naming the variable when prod lacks it
    assert settings.get_url("WISE_API_URL").startswith("https://")
    assert settings.get_int("WISE_PROFILE_ID") > 0
    assert settings.get_int("SMTP_PORT") in {465, 587}
    assert settings.get_bool("SMTP_STARTTLS") is True
    assert len(settings.get_list("EXCHANGE_VENUES")) >= 1
    assert settings.get_list("RISK_TEAM_EMAILS")
    assert env["KAFKA_SECURITY_PROTOCOL"] in {"SSL", "SASL_SSL"}, "credentials never in clear text"


# --------------------------------------------------------------------------------------------
# NetworkPolicy: who may talk to whom, with the labels our pods really carry.

NAMESPACE_LABELS = {"kubernetes.io/metadata.name": model.NAMESPACE}


def _matches(selector: dict | None, labels: dict) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _peer_matches(peer: dict, labels: dict, namespace_labels: dict) -> bool:
    assert "ipBlock" not in peer, "extend the evaluator for ipBlock peers"
    if "namespaceSelector" in peer:
        if not _matches(peer["namespaceSelector"], namespace_labels):
            return False
    elif namespace_labels != NAMESPACE_LABELS:
        return False  # a bare podSelector means: pods of the policy's own namespace
    return "podSelector" not in peer or _matches(peer["podSelector"], labels)


def _port_matches(rule: dict, port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    return not ports or any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports)


def _policies():
    return model.load_yaml_documents(model.K8S_DIR / "networkpolicy.yaml")


def allowed(kind: str, pod: dict, peer: dict | None, port: int, protocol: str = "TCP", peer_ns=None,
            policies: list[dict] | None = None) -> bool:
    """May `pod` receive from (kind=Ingress) or send to (kind=Egress) `peer` on this port?

    `peer` is a pod's labels, or None for an address outside the cluster;
    `policies` defaults to k8s/networkpolicy.yaml's.
    """
    peer_ns = NAMESPACE_LABELS if peer_ns is None else peer_ns
    selecting = [
        policy
        for policy in (_policies() if policies is None else policies)
        if kind in policy["spec"]["policyTypes"] and _matches(policy["spec"]["podSelector"], pod)
    ]
    if not selecting:
        return True  # not isolated
    direction, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
    for policy in selecting:
        for rule in policy["spec"].get(direction) or []:
            if not _port_matches(rule, port, protocol):
                continue
            peers = rule.get(peers_key)
            if not peers:
                return True
            if peer is not None and any(_peer_matches(p, peer, peer_ns) for p in peers):
                return True
    return False


@pytest.fixture(scope="module")
def pod_labels() -> dict[str, dict[str, str]]:
    values = model.merged_values("prod")
    labels = {name: pod["metadata"]["labels"] for name, pod in model.control_plane_pods(values).items()}
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    job = construct_dagster_k8s_job(  # dagster-k8s's own labels for a run pod
        DagsterK8sJobConfig(job_image="i", dagster_home="/d", instance_config_map="c", labels=launcher["labels"]),
        args=[],
        job_name="dagster-run-x",
        component="run_worker",
        labels={"dagster/job": "emergency_stop_loss_saga"},
        user_defined_k8s_config=UserDefinedDagsterK8sConfig(),
    )
    labels["run-worker"] = kubernetes.client.ApiClient().sanitize_for_serialization(job)["spec"]["template"][
        "metadata"
    ]["labels"]
    # The chart's `migrate` Job (dagster instance migrate): only the Job controller's labels.
    labels["instance-migrate"] = {"batch.kubernetes.io/job-name": "dagster-dagster-webserver-instance-migrate"}
    labels["stranger"] = {"app": "something-else"}
    return labels


KUBE_DNS = ({"k8s-app": "kube-dns"}, {"kubernetes.io/metadata.name": "kube-system"})


def test_every_policy_selects_one_of_our_pods(pod_labels):
    ours = [labels for name, labels in pod_labels.items() if name != "stranger"]
    for policy in _policies():
        assert any(_matches(policy["spec"]["podSelector"], labels) for labels in ours), policy["metadata"]["name"]


def test_code_server_is_reached_only_by_the_webservers_and_the_daemon(pod_labels):
    code_server = pod_labels["code-server/arb-orchestration"]
    for source in ("webserver", "webserver-read-only", "daemon"):
        assert allowed("Ingress", code_server, pod_labels[source], 3030), source
        assert allowed("Egress", pod_labels[source], code_server, 3030), source
    # Run pods load the code from their image and never call the code server.
    assert not allowed("Ingress", code_server, pod_labels["run-worker"], 3030)
    assert not allowed("Ingress", code_server, pod_labels["stranger"], 3030)
    assert not allowed("Ingress", code_server, pod_labels["webserver"], 8080)
    other_namespace = {"kubernetes.io/metadata.name": "elsewhere"}
    assert not allowed("Ingress", code_server, pod_labels["webserver"], 3030, peer_ns=other_namespace)


def _host_ports(servers: str) -> set[int]:
    return {int(server.rsplit(":", 1)[1]) for server in servers.split(",")}


def test_run_pods_reach_database_kafka_https_and_smtp_only(pod_labels):
    values = model.merged_values("prod")
    env = model.user_deployments(values)[0]["env"]
    run = pod_labels["run-worker"]
    needed = {values["postgresql"]["service"]["port"], 443, int(env["SMTP_PORT"])}
    needed |= _host_ports(env["KAFKA_BOOTSTRAP_SERVERS"])
    for port in needed:
        assert allowed("Egress", run, None, port), port
    assert allowed("Egress", run, KUBE_DNS[0], 53, "UDP", peer_ns=KUBE_DNS[1])
    for port in (22, 80, 3030, 6443, 8080):
        assert not allowed("Egress", run, None, port), port
    assert not allowed("Ingress", run, pod_labels["webserver"], 8080)


def test_code_server_reaches_what_its_sensors_need(pod_labels):
    values = model.merged_values("prod")
    env = model.user_deployments(values)[0]["env"]
    code_server = pod_labels["code-server/arb-orchestration"]
    # SMTP: the market and capital sensors mail the risk team about refused critical events, and
    # sensors are evaluated in the code server.
    for port in {5432, 443, int(env["SMTP_PORT"])} | _host_ports(env["KAFKA_BOOTSTRAP_SERVERS"]):
        assert allowed("Egress", code_server, None, port), port
    assert not allowed("Egress", code_server, None, 22)


def test_webservers_take_http_only_from_the_ingress_controller(pod_labels):
    values = model.merged_values("prod")
    port = values["dagsterWebserver"]["service"]["port"]
    controller_ns = {"kubernetes.io/metadata.name": "ingress-nginx"}
    for name in ("webserver", "webserver-read-only"):
        assert allowed("Ingress", pod_labels[name], {"app": "controller"}, port, peer_ns=controller_ns)
        assert not allowed("Ingress", pod_labels[name], pod_labels["stranger"], port)
        assert not allowed("Ingress", pod_labels[name], pod_labels["run-worker"], port)


def test_daemon_accepts_nothing_and_reaches_the_kubernetes_api(pod_labels):
    daemon = pod_labels["daemon"]
    assert not allowed("Ingress", daemon, pod_labels["webserver"], 8080)
    assert allowed("Egress", daemon, None, 443) and allowed("Egress", daemon, None, 5432)
    assert not allowed("Egress", daemon, None, 9093)  # Kafka is the sensors' business, in the code server
