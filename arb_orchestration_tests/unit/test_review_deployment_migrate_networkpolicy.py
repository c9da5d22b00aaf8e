"""Deployment review: the chart's schema-migration Job can reach PostgreSQL under our NetworkPolicies.

docs/deployment.md upgrades Dagster with `helm upgrade ... --set migrate.enabled=true`, which runs
`dagster instance migrate` in a Job of the chart (templates/job-instance-migrate.yaml). Its pod
template carries no label of its own: the only labels are the ones the Job controller adds
(`batch.kubernetes.io/job-name`, `job-name`, and the controller uid). k8s/networkpolicy.yaml denies
everything by default, so unless a policy selects that pod by its Job name, the migration cannot
open its database connection and the upgrade hangs until the Job fails.

The Job's name is the chart's `dagster.webserver.migrate`: `<release>-<webserver name>-instance-migrate`
(`dagsterWebserver.nameOverride`, default `dagster-webserver`). Reach is evaluated with
test_k8s_objects.allowed over every NetworkPolicy shipped in k8s/.
"""

from __future__ import annotations

import pytest

from arb_orchestration_tests.unit import deploy_model as model
from arb_orchestration_tests.unit.test_k8s_objects import allowed


def _migrate_job_name(values: dict) -> str:
    webserver = (values.get("dagsterWebserver") or {}).get("nameOverride") or "dagster-webserver"
    return f"{model.RELEASE_NAME}-{webserver}-instance-migrate"[:63]


def _migrate_pod_labels(values: dict) -> dict[str, str]:
    """What the Job controller puts on the pod (Kubernetes >= 1.27 adds the batch.kubernetes.io ones)."""
    name = _migrate_job_name(values)
    uid = "00000000-0000-0000-0000-000000000000"
    return {
        "batch.kubernetes.io/job-name": name,
        "job-name": name,
        "batch.kubernetes.io/controller-uid": uid,
        "controller-uid": uid,
    }


def _all_policies() -> list[dict]:
    return [
        document
        for path in sorted(model.K8S_DIR.glob("*.yaml"))
        for document in model.load_yaml_documents(path)
        if document["kind"] == "NetworkPolicy"
    ]


@pytest.mark.parametrize("environment", ["prod", "staging"])
def test_the_migrate_job_reaches_postgresql(environment):
    values = model.merged_values(environment)
    pod = _migrate_pod_labels(values)
    port = values["postgresql"]["service"]["port"]
    assert allowed("Egress", pod, None, port, policies=_all_policies()), (
        f"{_migrate_job_name(values)} cannot reach PostgreSQL {port}: `dagster instance migrate` hangs"
    )


def test_the_migrate_job_gets_nothing_else():
    values = model.merged_values("prod")
    pod = _migrate_pod_labels(values)
    policies = _all_policies()
    for port in (443, 3030, 6443, 8080, 9093, 587):
        assert not allowed("Egress", pod, None, port, policies=policies), port
    webserver = model.control_plane_pods(values)["webserver"]["metadata"]["labels"]
    assert not allowed("Ingress", pod, webserver, 8080, policies=policies)


def test_the_policy_follows_the_job_name_the_chart_derives():
    # The name moves with the release and dagsterWebserver.nameOverride: a policy keyed on a stale
    # name would select nothing, silently. Our values keep the chart's default name.
    values = model.merged_values("prod")
    assert "nameOverride" not in values["dagsterWebserver"]
    assert _migrate_job_name(values) == "dagster-dagster-webserver-instance-migrate"
    selected = [
        policy["metadata"]["name"]
        for policy in _all_policies()
        if policy["spec"]["podSelector"].get("matchLabels", {}).get("batch.kubernetes.io/job-name")
        == _migrate_job_name(values)
    ]
    assert selected, "no NetworkPolicy selects the migrate Job's pod by its name"
