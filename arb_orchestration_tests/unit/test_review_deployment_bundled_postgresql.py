"""Deployment review: with the bundled PostgreSQL, our NetworkPolicies must let Dagster reach it.

values-postgresql-bundled.yaml turns on the chart's PostgreSQL subchart (bitnami `postgresql`
8.1.0, a dependency of the dagster chart): the database is then a pod in our namespace. The
install procedure applies k8s/networkpolicy.yaml after the release, whose `arb-default-deny`
selects every pod of the namespace, the database included. Unless a policy admits 5432 on that
pod, every Dagster pod's connection is dropped (egress is allowed, ingress is not): the webserver
and daemon init containers wait on `pg_isready` forever.

The subchart's pod labels (bitnami postgresql 8.x, statefulset template): `app: postgresql`,
`release: <release>`, `role: master`, plus `chart` and `heritage`. Reach is evaluated with
test_k8s_objects.allowed over every NetworkPolicy shipped in k8s/.
"""

from __future__ import annotations

from arb_orchestration_tests.unit import deploy_model as model
from arb_orchestration_tests.unit.test_k8s_objects import allowed

BUNDLED_POSTGRESQL_POD = {
    "app": "postgresql",
    "chart": "postgresql-8.1.0",
    "release": model.RELEASE_NAME,
    "heritage": "Helm",
    "role": "master",
}


def _all_policies() -> list[dict]:
    return [
        document
        for path in sorted(model.K8S_DIR.glob("*.yaml"))
        for document in model.load_yaml_documents(path)
        if document["kind"] == "NetworkPolicy"
    ]


def _run_pod_labels() -> dict[str, str]:
    launcher = model.merged_values("bundled-postgresql")["runLauncher"]["config"]["k8sRunLauncher"]
    # dagster-k8s's labels on a run pod (test_k8s_objects builds them with construct_dagster_k8s_job).
    return {
        "app.kubernetes.io/component": "run_worker",
        "app.kubernetes.io/part-of": "dagster",
        "app.kubernetes.io/name": "dagster",
        **launcher["labels"],
    }


def test_the_bundled_environment_uses_the_subchart():
    values = model.merged_values("bundled-postgresql")
    assert values["postgresql"]["enabled"] is True
    hostname = model.render_postgres_config(values)["postgres_db"]["hostname"]
    assert hostname == f"{model.RELEASE_NAME}-postgresql"  # the subchart's Service


def test_every_dagster_pod_reaches_the_bundled_database():
    values = model.merged_values("bundled-postgresql")
    port = values["postgresql"]["service"]["port"]
    policies = _all_policies()
    clients = {name: pod["metadata"]["labels"] for name, pod in model.control_plane_pods(values).items()}
    clients["run-worker"] = _run_pod_labels()
    blocked = []
    for name, labels in clients.items():
        assert allowed("Egress", labels, BUNDLED_POSTGRESQL_POD, port, policies=policies), f"{name} egress"
        if not allowed("Ingress", BUNDLED_POSTGRESQL_POD, labels, port, policies=policies):
            blocked.append(name)
    assert not blocked, f"the bundled PostgreSQL pod refuses {', '.join(blocked)} on {port}"


def test_the_bundled_database_is_not_opened_to_other_namespaces_or_ports():
    policies = _all_policies()
    webserver = model.control_plane_pods(model.merged_values("bundled-postgresql"))["webserver"]
    labels = webserver["metadata"]["labels"]
    elsewhere = {"kubernetes.io/metadata.name": "elsewhere"}
    assert not allowed("Ingress", BUNDLED_POSTGRESQL_POD, labels, 5432, peer_ns=elsewhere, policies=policies)
    assert not allowed("Ingress", BUNDLED_POSTGRESQL_POD, labels, 22, policies=policies)
    assert not allowed("Egress", BUNDLED_POSTGRESQL_POD, None, 443, policies=policies)
