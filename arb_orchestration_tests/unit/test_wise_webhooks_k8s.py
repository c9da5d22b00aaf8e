"""The Wise webhook receiver on Kubernetes: k8s/wise-webhooks-*.yaml against the schemas, the command,
the receiver, the Secrets, the release and the NetworkPolicies.

- Every document validates with `kubernetes-validate` (strict: unknown fields fail) for the
  Kubernetes versions test_k8s_objects.py targets.
- The container's args are parsed by the real `arb-orchestration` command table and the
  `wise-webhooks` parser (the console script the image installs); host, port and webhook path are
  the ones the Service, the probes, the Ingress and the NetworkPolicy use.
- The probe paths answer 200 on a real `WiseWebhookReceiver` on loopback; the Ingress's only path
  is the receiver's webhook route (an unsigned POST gets the receiver's 400) and never routes
  `/health`.
- Secrets: every secretKeyRef names a key of k8s/secrets.template.yaml, nothing secret is a literal,
  and the receiver gets no credentials beyond the database password; Wise's public key comes from
  the ConfigMap the docs tell the operator to create.
- The instance is the release's (dagster-instance ConfigMap, DAGSTER_HOME, the same password env as
  the code server), the image is the code location's.
- The selectors of the Deployment, Service and NetworkPolicy select the pod template and no other
  pod of the release; with k8s/networkpolicy.yaml, the pod is reachable from the ingress
  controller's namespace on its port only, and reaches DNS and PostgreSQL only.
- One replica, a rollout without a gap, no disruption budget that would block a drain, the
  unprivileged posture of every other pod, a service account without token or Role.

test_wise_webhooks_pod.py (integration) runs the manifest's command, env and mounts as a process
against a real PostgreSQL with the release's dagster.yaml.
"""

from __future__ import annotations

import copy
import re
import tomllib

import httpx
import kubernetes_validate
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from arb_orchestration import cli, settings
from arb_orchestration.commands import wise_webhooks as command
from arb_orchestration.resources.wise_webhooks import (
    DEFAULT_PATH,
    HEALTH_PATH,
    LIVE_PATH,
    MAX_BODY_BYTES,
    TransferStateBoard,
    WiseWebhookReceiver,
)
from arb_orchestration_tests.unit import deploy_model as model
from arb_orchestration_tests.unit import k8s_manifests as manifests
from arb_orchestration_tests.unit.test_k8s_objects import (
    K8S_VERSIONS,
    KUBE_DNS,
    _matches,
    _secret_template,
)
from arb_orchestration_tests.unit.test_k8s_objects import allowed as k8s_allowed

FILES = ("wise-webhooks-deployment.yaml", "wise-webhooks-service.yaml", "wise-webhooks-networkpolicy.yaml")
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
INGRESS_NAMESPACE = {"kubernetes.io/metadata.name": "ingress-nginx"}
APP_UID = 10001


_documents = model.k8s_documents


def _by_kind(kind: str) -> list[dict]:
    return model.k8s_of_kind(FILES, kind)


@pytest.fixture(scope="module")
def deployment() -> dict:
    return manifests.only_of_kind(FILES, "Deployment")


@pytest.fixture(scope="module")
def pod(deployment) -> dict:
    return deployment["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod) -> dict:
    (found,) = pod["spec"]["containers"]
    return found


@pytest.fixture(scope="module")
def service() -> dict:
    return manifests.only_of_kind(FILES, "Service")


@pytest.fixture(scope="module")
def ingress() -> dict:
    return manifests.only_of_kind(FILES, "Ingress")


@pytest.fixture(scope="module")
def release() -> dict:
    return manifests.prod_release()


@pytest.fixture(scope="module")
def parsed(container):
    """The container's args as the image's `arb-orchestration` console script parses them."""
    seen = []
    mp = pytest.MonkeyPatch()
    mp.setattr(command, "_serve", lambda args: seen.append(args) or 0)  # parse, do not serve
    try:
        assert cli.main(container["args"][1:]) == 0
    except SystemExit as exc:  # argparse: an unknown option or a bad value
        pytest.fail(f"the command's parser rejects {container['args']}: exit {exc.code}")
    finally:
        mp.undo()
    (args,) = seen
    return args


@pytest.fixture(scope="module")
def public_key_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _env(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container["env"]}


def _container_port(container: dict, ref) -> int:
    """A port reference (name or number) resolved against the container's ports."""
    for port in container["ports"]:
        if ref in (port["name"], port["containerPort"]):
            return port["containerPort"]
    raise AssertionError(f"{ref!r} is not a port of the container")


# --------------------------------------------------------------------------------------------
# Schemas.


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", FILES)
def test_manifests_are_valid_kubernetes(name, version):
    manifests.assert_valid_kubernetes(name, version)


def test_a_misspelled_probe_field_is_caught(deployment):
    broken = copy.deepcopy(deployment)
    (probed,) = broken["spec"]["template"]["spec"]["containers"]
    probed["readinessProbe"]["httpGet"]["paht"] = HEALTH_PATH
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


# --------------------------------------------------------------------------------------------
# The command, its port and its paths.


def test_args_are_the_receivers_own_command_line(container, parsed):
    pyproject = tomllib.loads((model.REPO_ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"][container["args"][0]] == "arb_orchestration.cli:main"
    assert "command" not in container  # the image's ENTRYPOINT (tini) stays and forwards SIGTERM
    assert parsed.action == "serve"
    assert parsed.host == "0.0.0.0"  # the Service and the kubelet reach it on the pod IP
    assert parsed.port == _container_port(container, "webhooks") == command.DEFAULT_PORT
    assert parsed.path == DEFAULT_PATH
    assert parsed.public_key is None  # so the command reads WISE_WEBHOOK_PUBLIC_KEY


def test_service_probes_and_policy_use_the_port_it_listens_on(container, parsed, service, ingress):
    (service_port,) = service["spec"]["ports"]
    assert _container_port(container, service_port["targetPort"]) == parsed.port
    for probe in PROBES:
        assert _container_port(container, container[probe]["httpGet"]["port"]) == parsed.port, probe
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"].get("name", service_port["name"]) == service_port["name"]
            assert backend["port"].get("number", service_port["port"]) == service_port["port"]
    (policy,) = _by_kind("NetworkPolicy")
    (rule,) = policy["spec"]["ingress"]
    # NetworkPolicy ports are the pod's ports, not the Service's.
    assert [p["port"] for p in rule["ports"]] == [parsed.port]


def _ingress_routes(ingress: dict, path: str) -> bool:
    """Does any rule of the Ingress send `path` to a backend (Kubernetes' Exact/Prefix semantics)?"""
    for rule in ingress["spec"]["rules"]:
        for entry in rule["http"]["paths"]:
            if entry["pathType"] == "Exact" and path == entry["path"]:
                return True
            if entry["pathType"] == "Prefix":
                prefix = [p for p in entry["path"].split("/") if p]
                if [p for p in path.split("/") if p][: len(prefix)] == prefix:
                    return True
            assert entry["pathType"] in {"Exact", "Prefix"}, "ImplementationSpecific: unknown matching"
    return False


def test_readiness_checks_the_database_and_liveness_does_not(container):
    # Not ready while the instance's database is unreadable (out of the Service, Wise retries);
    # never restarted for it: a restart does not bring the database back.
    assert container["startupProbe"]["httpGet"]["path"] == HEALTH_PATH
    assert container["readinessProbe"]["httpGet"]["path"] == HEALTH_PATH
    assert container["livenessProbe"]["httpGet"]["path"] == LIVE_PATH


def test_ingress_routes_the_webhook_path_only(ingress, parsed):
    assert _ingress_routes(ingress, parsed.path)
    for hidden in (HEALTH_PATH, LIVE_PATH, "/", parsed.path + "/x", "/wise"):
        assert not _ingress_routes(ingress, hidden), hidden


def test_probe_paths_answer_200_and_the_ingress_path_is_the_webhook_route(container, parsed, ingress, public_key_pem):
    probe_paths = {container[probe]["httpGet"]["path"] for probe in PROBES}
    public_paths = {p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    with WiseWebhookReceiver(public_key_pem, TransferStateBoard(), host="127.0.0.1", port=0, path=parsed.path) as receiver:
        with httpx.Client(base_url=receiver.base_url, timeout=5.0) as http:
            for path in probe_paths:
                answer = http.get(path)
                assert answer.status_code == 200, path
                assert answer.json()["status"] in {"ok", "alive"}
            for path in public_paths:
                # Routed to the receiver, which verifies: an unsigned delivery is refused, not unknown.
                answer = http.post(path, content=b"{}", headers={"Content-Type": "application/json"})
                assert (answer.status_code, answer.json()["status"]) == (400, "invalid signature"), path
            assert http.post("/not-the-route", content=b"{}").status_code == 404


def _bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (or an nginx size: 64k) in bytes."""
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity).groups()
    factor = {"": 1, "k": 1024, "K": 1024, "m": 1024**2, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "M": 10**6, "G": 10**9}
    return int(number) * factor[unit]


def _cpu(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_ingress_is_tls_only_with_placeholders_and_the_receivers_body_limit(ingress):
    spec = ingress["spec"]
    hosts = {rule["host"] for rule in spec["rules"]}
    assert hosts and all(host.endswith(".example.internal") for host in hosts)  # placeholders to replace
    assert {h for tls in spec["tls"] for h in tls["hosts"]} == hosts
    assert all(tls["secretName"] not in _secret_template() for tls in spec["tls"])  # certificate tooling's
    assert spec["ingressClassName"] == "nginx"
    annotations = ingress["metadata"]["annotations"]
    assert _bytes(annotations["nginx.ingress.kubernetes.io/proxy-body-size"]) == MAX_BODY_BYTES


# --------------------------------------------------------------------------------------------
# Secrets, settings, instance, image.


def _strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def test_secret_refs_name_template_keys_and_nothing_secret_is_literal(pod, container):
    template = _secret_template()
    refs = [item["valueFrom"]["secretKeyRef"] for item in container["env"] if "secretKeyRef" in item.get("valueFrom", {})]
    assert refs, "the database password comes from a Secret"
    for ref in refs:
        assert ref["key"] in template.get(ref["name"], {}), ref
    # Least privilege: the database password and nothing else (no Wise token, no venue keys).
    assert refs == [{"name": "arb-dagster-postgresql", "key": "postgresql-password"}]
    assert "envFrom" not in container
    assert not [v for v in pod["spec"]["volumes"] if "secret" in v or "projected" in v]
    secret_keys = {key for data in template.values() for key in data}
    for name, item in _env(container).items():
        if "value" in item:
            assert name not in secret_keys and name != "DAGSTER_PG_PASSWORD", name
            assert not (name in settings.SETTINGS and settings.SETTINGS[name].secret), name
            assert not re.search(r"PASSWORD|TOKEN|SECRET", name), name
    assert not _by_kind("Secret")
    for text in (s for name in FILES for doc in _documents(name) for s in _strings(doc)):
        assert "-----BEGIN" not in text and "REPLACE_ME" not in text, text[:40]


def test_public_key_is_the_file_of_the_documented_configmap(pod, container):
    assert settings.SETTINGS[command.PUBLIC_KEY_SETTING].secret is False  # public: a ConfigMap, not a Secret
    path = _env(container)[command.PUBLIC_KEY_SETTING]["value"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    assert mount.get("readOnly") is True and "subPath" not in mount  # a directory: a new key arrives
    config_map = volumes[mount["name"]]["configMap"]
    (item,) = config_map["items"]  # a missing key fails the mount instead of starting without a key
    assert f"{mount['mountPath']}/{item['path']}" == path
    assert config_map.get("optional") is not True
    docs = (model.REPO_ROOT / "docs" / "deployment.md").read_text()
    assert f"create configmap {config_map['name']}" in docs
    assert f"--from-file={item['key']}=" in docs


def test_receiver_opens_the_releases_instance_with_the_code_locations_image(pod, container, release):
    values = release["values"]
    home = model.dagster_home(values)
    env = _env(container)
    assert env["DAGSTER_HOME"]["value"] == home
    code_server = release["pods"]["code-server/arb-orchestration"]["spec"]["containers"][0]
    password = next(item for item in code_server["env"] if item["name"] == "DAGSTER_PG_PASSWORD")
    assert env["DAGSTER_PG_PASSWORD"] == password  # what dagster.yaml's `password: {env: ...}` reads
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == f"{home}/dagster.yaml")
    assert mount["subPath"] == "dagster.yaml"
    instance_map = model.render_run_launcher(values)["config"]["instance_config_map"]
    assert volumes[mount["name"]]["configMap"]["name"] == instance_map
    (user_code,) = model.user_deployments(values)
    assert container["image"] == model.image_name(user_code["image"])
    assert container["imagePullPolicy"] == user_code["image"]["pullPolicy"]


# --------------------------------------------------------------------------------------------
# Labels and network reach.


def _warm_worker_labels() -> dict:
    (warm,) = [d for d in _documents("warm-worker-deployment.yaml") if d["kind"] == "Deployment"]
    return warm["spec"]["template"]["metadata"]["labels"]


def test_selectors_pick_the_receiver_and_no_other_pod(deployment, pod, service, release):
    labels = pod["metadata"]["labels"]
    (policy,) = _by_kind("NetworkPolicy")
    selectors = {
        "Deployment": deployment["spec"]["selector"],
        "Service": {"matchLabels": service["spec"]["selector"]},
        "NetworkPolicy": policy["spec"]["podSelector"],
    }
    others = {name: p["metadata"]["labels"] for name, p in release["pods"].items()}
    others["warm-worker"] = _warm_worker_labels()
    for kind, selector in selectors.items():
        assert selector and _matches(selector, labels), kind
        assert not [name for name, other in others.items() if _matches(selector, other)], kind
    # The namespace-wide policies with a selector are for other pods; only default deny and DNS apply.
    for other in model.load_yaml_documents(model.K8S_DIR / "networkpolicy.yaml"):
        selector = other["spec"]["podSelector"]
        assert not selector or not _matches(selector, labels), other["metadata"]["name"]


def _policies() -> list[dict]:
    return [*model.load_yaml_documents(model.K8S_DIR / "networkpolicy.yaml"), *_by_kind("NetworkPolicy")]


def allowed(kind: str, pod: dict, peer: dict | None, port: int, protocol: str = "TCP", peer_ns=None) -> bool:
    """test_k8s_objects.allowed over k8s/networkpolicy.yaml plus the receiver's policy."""
    return k8s_allowed(kind, pod, peer, port, protocol, peer_ns, policies=_policies())


def test_reached_by_the_ingress_controller_only_and_reaches_dns_and_postgresql_only(pod, parsed, release):
    receiver = pod["metadata"]["labels"]
    controller = {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"}
    assert allowed("Ingress", receiver, controller, parsed.port, peer_ns=INGRESS_NAMESPACE)
    assert not allowed("Ingress", receiver, controller, 8080, peer_ns=INGRESS_NAMESPACE)
    assert not allowed("Ingress", receiver, controller, parsed.port, peer_ns={"kubernetes.io/metadata.name": "elsewhere"})
    for name, other in release["pods"].items():
        assert not allowed("Ingress", receiver, other["metadata"]["labels"], parsed.port), name
    assert not allowed("Ingress", receiver, _warm_worker_labels(), parsed.port)

    database_port = release["values"]["postgresql"]["service"]["port"]
    assert allowed("Egress", receiver, None, database_port)
    assert allowed("Egress", receiver, KUBE_DNS[0], 53, "UDP", peer_ns=KUBE_DNS[1])
    assert allowed("Egress", receiver, KUBE_DNS[0], 53, "TCP", peer_ns=KUBE_DNS[1])
    for port in (443, 6443, 9093, 587, 3030, 4000, 8080):  # Wise, the API server, Kafka, SMTP, Dagster
        assert not allowed("Egress", receiver, None, port), port


# --------------------------------------------------------------------------------------------
# Replicas, rollout, posture.


def _pdb_allows_one_eviction(pdb: dict, replicas: int) -> bool:
    spec = pdb["spec"]
    if "maxUnavailable" in spec:
        return int(spec["maxUnavailable"]) >= 1
    return int(spec.get("minAvailable", 0)) <= replicas - 1


def test_one_replica_that_rolls_without_a_gap_and_never_blocks_a_drain(deployment, pod, container):
    assert deployment["spec"]["replicas"] == 1  # docs/real-venues.md: the board has no compare-and-set
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert (rolling["maxSurge"], rolling["maxUnavailable"]) == (1, 0)
    labels = pod["metadata"]["labels"]
    for path in model.K8S_DIR.glob("*.yaml"):
        for doc in model.load_yaml_documents(path):
            if doc["kind"] == "PodDisruptionBudget" and _matches(doc["spec"]["selector"], labels):
                assert _pdb_allows_one_eviction(doc, deployment["spec"]["replicas"]), path.name
    (sleep, seconds) = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == "sleep" and 0 < int(seconds) <= pod["spec"]["terminationGracePeriodSeconds"] - 10


def test_pod_runs_unprivileged_on_a_read_only_root_without_api_access(pod, container, release):
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == APP_UID
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert len(volumes) == len(spec["volumes"]) and len(mounts) == len(container["volumeMounts"])
    assert all(m["name"] in volumes for m in mounts.values())
    for path in ("/tmp", model.dagster_home(release["values"])):
        assert "emptyDir" in volumes[mounts[path]["name"]], path
    resources = container["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind]), kind
    assert _cpu(resources["requests"]["cpu"]) <= _cpu(resources["limits"]["cpu"])
    assert _bytes(resources["requests"]["memory"]) <= _bytes(resources["limits"]["memory"])

    (account,) = _by_kind("ServiceAccount")
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert spec["automountServiceAccountToken"] is False and account["automountServiceAccountToken"] is False
    for path in model.K8S_DIR.glob("*.yaml"):
        for doc in model.load_yaml_documents(path):
            if doc["kind"] in {"RoleBinding", "ClusterRoleBinding"}:
                assert account["metadata"]["name"] not in {s["name"] for s in doc["subjects"]}, path.name
