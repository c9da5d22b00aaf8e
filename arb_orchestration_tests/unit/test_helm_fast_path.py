"""helm-values/values-fast-path.yaml: the emergency fast path on the official chart, opt-in.

Applied after the prod files (deploy_model.OPT_IN_ENVIRONMENTS["prod-fast-path"]), it must:

- validate against the chart's values.schema.json (as Helm enforces it, and strict), alone and
  merged;
- render (deploy_model) a dagster.yaml that Dagster's instance config validation accepts, where
  FastPathRunCoordinator and WarmWorkerRunLauncher accept their config through their own
  `config_type()` and the fallback through K8sRunLauncher's;
- keep the queue exactly as prod has it (limits, priorities, dequeue settings; checked on a real
  instance too) and a fallback equal to the K8sRunLauncher config the chart renders for prod;
- run the daemon and both webservers on the code location's image with ARB_WARM_WORKER_TOKEN
  from the Secret the warm worker reads, as valid Kubernetes pods.
"""

from __future__ import annotations

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance_for_test import instance_for_test
from dagster_k8s import K8sRunLauncher

from arb_orchestration.launcher import FastPathRunCoordinator, WarmWorkerRunLauncher
from arb_orchestration.launcher.protocol import WorkerAddress
from arb_orchestration_tests.unit import deploy_model as model

OVERLAY = model.HELM_VALUES_DIR / "values-fast-path.yaml"
ENV = "prod-fast-path"
TOKEN_ENV = "ARB_WARM_WORKER_TOKEN"
K8S_VERSIONS = ("1.30", "1.37")


@pytest.fixture(scope="module")
def prod() -> dict:
    return model.merged_values("prod")


@pytest.fixture(scope="module")
def fast() -> dict:
    return model.merged_values(ENV)


@pytest.fixture(scope="module")
def instance_yaml(fast) -> dict:
    return model.render_instance(fast)


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "not-a-real-token")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "not-a-real-password")


def _errors(values: dict, *, strict: bool) -> list[str]:
    validator = jsonschema.Draft7Validator(model.chart_schema(strict=strict))
    out, pending = [], list(validator.iter_errors(values))
    while pending:  # under anyOf the useful message is in error.context
        error = pending.pop()
        out.append(f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}")
        pending.extend(error.context or [])
    return out


def test_overlay_is_the_last_file_of_the_opt_in_environment():
    assert model.OPT_IN_ENVIRONMENTS[ENV] == (*model.ENVIRONMENTS["prod"], OVERLAY.name)


@pytest.mark.parametrize("strict", [False, True], ids=["chart", "strict"])
def test_overlay_and_merged_values_match_the_chart_schema(fast, strict):
    assert _errors(model.load_yaml(OVERLAY), strict=strict) == []
    assert _errors(fast, strict=strict) == []


def test_the_schema_checks_the_custom_blocks(fast):
    # Proof the validation above reaches into them: a misspelled block key is reported.
    import copy

    wrong = copy.deepcopy(fast)
    wrong["runLauncher"]["config"]["customRunLauncher"]["klass"] = "WarmWorkerRunLauncher"
    wrong["dagsterDaemon"]["runCoordinator"]["type"] = "FastPathRunCoordinator"
    errors = _errors(wrong, strict=False)
    assert any("klass" in error for error in errors), errors
    assert any("FastPathRunCoordinator" in error for error in errors), errors


def test_rendered_dagster_yaml_passes_dagsters_instance_validation(instance_yaml, tmp_path):
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml))
    config, custom_class = dagster_instance_config(str(tmp_path))
    assert custom_class is None
    assert (config["run_coordinator"]["module"], config["run_coordinator"]["class"]) == (
        "arb_orchestration.launcher", "FastPathRunCoordinator")
    assert (config["run_launcher"]["module"], config["run_launcher"]["class"]) == (
        "arb_orchestration.launcher", "WarmWorkerRunLauncher")


def test_each_custom_class_accepts_its_rendered_config(instance_yaml, token):
    coordinator = process_config(FastPathRunCoordinator.config_type(), instance_yaml["run_coordinator"]["config"])
    assert coordinator.success, coordinator.errors
    launcher_config = instance_yaml["run_launcher"]["config"]
    launcher = process_config(WarmWorkerRunLauncher.config_type(), launcher_config)
    assert launcher.success, launcher.errors
    assert launcher.value["token"] == "not-a-real-token"  # resolved from the pod's environment
    assert WorkerAddress.parse(launcher.value["worker_address"]) == WorkerAddress("tcp", host="arb-warm-worker", port=4000)
    fallback = launcher_config["fallback"]
    assert (fallback["module"], fallback["class"]) == ("dagster_k8s", "K8sRunLauncher")
    result = process_config(K8sRunLauncher.config_type(), fallback["config"])
    assert result.success, result.errors


def test_config_types_reject_a_misspelled_key(instance_yaml, token):
    coordinator = {**instance_yaml["run_coordinator"]["config"], "max_concurent_runs": 25}
    assert not process_config(FastPathRunCoordinator.config_type(), coordinator).success
    fallback = {**instance_yaml["run_launcher"]["config"]["fallback"]["config"], "env_secret": []}
    assert not process_config(K8sRunLauncher.config_type(), fallback).success


def test_fallback_is_the_k8s_run_launcher_the_chart_renders_for_prod(instance_yaml, prod):
    assert instance_yaml["run_launcher"]["config"]["fallback"] == model.render_run_launcher(prod)


def test_queue_settings_are_prods(instance_yaml, prod):
    queued = model.render_run_coordinator(prod)["config"]
    fast_path = instance_yaml["run_coordinator"]["config"]
    assert fast_path["tag_concurrency_limits"] == queued["tag_concurrency_limits"]
    assert {k: v for k, v in fast_path.items() if not k.startswith("fast_path_")} == queued


def test_the_instance_builds_the_fast_path_coordinator_with_prods_queue(instance_yaml, prod):
    with instance_for_test(overrides={"run_coordinator": model.render_run_coordinator(prod)}) as base:
        expected = base.run_coordinator.get_run_queue_config()
    with instance_for_test(overrides={"run_coordinator": instance_yaml["run_coordinator"]}) as instance:
        coordinator = instance.run_coordinator
        assert type(coordinator) is FastPathRunCoordinator
        assert coordinator.get_run_queue_config() == expected
        assert coordinator.get_run_queue_config().tag_concurrency_limits  # not vacuous


def test_everything_else_in_dagster_yaml_is_unchanged(instance_yaml, prod):
    rendered_prod = model.render_instance(prod)
    changed = {key for key in rendered_prod.keys() | instance_yaml.keys() if rendered_prod.get(key) != instance_yaml.get(key)}
    assert changed == {"run_coordinator", "run_launcher"}


def _container(pod: dict) -> dict:
    (container,) = pod["spec"]["containers"]
    return container


def test_daemon_and_webservers_run_the_project_image_with_the_token(fast):
    pods = model.control_plane_pods(fast)
    (user_code,) = model.user_deployments(fast)
    image = model.image_name(user_code["image"])
    warm_worker = next(
        doc for doc in model.load_yaml_documents(model.K8S_DIR / "warm-worker-deployment.yaml")
        if doc["kind"] == "Deployment"
    )
    worker_env = {e["name"]: e for e in _container(warm_worker["spec"]["template"])["env"]}
    assert _container(warm_worker["spec"]["template"])["image"] == image
    for role in ("daemon", "webserver", "webserver-read-only"):
        container = _container(pods[role])
        assert container["image"] == image, role
        env = {e["name"]: e for e in container["env"]}
        assert env[TOKEN_ENV] == worker_env[TOKEN_ENV] == {
            "name": TOKEN_ENV,
            "valueFrom": {"secretKeyRef": {"name": "arb-warm-worker-token", "key": "token"}},
        }, role
        assert "DAGSTER_PG_PASSWORD" in env, role
    # The launcher reads the token from exactly that variable.
    assert model.render_instance(fast)["run_launcher"]["config"]["token"] == {"env": TOKEN_ENV}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_control_plane_pods_are_valid_kubernetes(fast, version):
    for name, pod in model.control_plane_pods(fast).items():
        try:
            kubernetes_validate.validate(pod, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name}: {error.message} at {list(error.absolute_path)}")
