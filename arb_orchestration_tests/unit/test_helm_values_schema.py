"""helm-values/ against the Dagster chart's own values.schema.json (shared/dagster-chart/).

The schema is prepared as shared/dagster-chart/README.md says (remote Kubernetes $refs and every
`required` list dropped) and applied with jsonschema's Draft7Validator, to each file alone and to
each environment's merged values. Two strengths:

- "chart": exactly what Helm enforces. It closes many objects (the daemon, the run coordinator,
  the K8sRunLauncher block, the webserver), so a misspelled key there fails;
- "strict": additionally closes the objects the chart leaves open (the top level, each user
  deployment, `postgresql`, ...), where Helm would ignore a misspelled key without a word.

The negative tests prove both catch what they claim, with a deliberately wrong file.
The Kubernetes objects inside the values are checked in test_k8s_objects.py.
"""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
import yaml

from arb_orchestration_tests.unit import deploy_model as model

STRENGTHS = ("chart", "strict")


@pytest.fixture(scope="module")
def validators() -> dict[str, jsonschema.Draft7Validator]:
    return {
        "chart": jsonschema.Draft7Validator(model.chart_schema(strict=False)),
        "strict": jsonschema.Draft7Validator(model.chart_schema(strict=True)),
    }


def _flatten(errors) -> list[jsonschema.ValidationError]:
    # Under anyOf (most chart objects are "X or null") the useful message is in error.context.
    out = []
    for error in errors:
        out.append(error)
        out.extend(_flatten(error.context or []))
    return out


def _errors(validator: jsonschema.Draft7Validator, values) -> list[str]:
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in _flatten(validator.iter_errors(values))
    ]


def test_the_chart_schema_is_found_beside_the_repository():
    path = model.chart_schema_path()
    assert path == model.REPO_ROOT.parent / "shared" / "dagster-chart" / "values.schema.json"
    assert "dagster-user-deployments" in json.loads(path.read_text())["properties"]


def test_schema_preparation_drops_only_remote_refs_and_required_lists():
    text = json.dumps(model.chart_schema())
    assert '"$ref": "http' not in text
    assert '"required": [' not in text
    assert text.count('"additionalProperties": false') >= 10
    # Local references stay, or nothing below the top level would be checked.
    assert '"$ref": "#/definitions/Daemon"' in text


@pytest.mark.parametrize("strength", STRENGTHS)
@pytest.mark.parametrize("path", model.values_files(), ids=lambda p: p.name)
def test_each_values_file_is_valid(validators, strength, path):
    values = model.load_yaml(path)
    assert isinstance(values, dict) and values, f"{path.name} is empty"
    assert _errors(validators[strength], values) == []


@pytest.mark.parametrize("strength", STRENGTHS)
@pytest.mark.parametrize("environment", sorted(model.ENVIRONMENTS))
def test_each_environment_merged_is_valid(validators, strength, environment):
    assert _errors(validators[strength], model.merged_values(environment)) == []


def test_all_values_files_belong_to_an_environment():
    used = {name for envs in (model.ENVIRONMENTS, model.OPT_IN_ENVIRONMENTS) for files in envs.values() for name in files}
    assert {path.name for path in model.values_files()} == used


# --------------------------------------------------------------------------------------------
# A deliberately wrong file: each mistake below must be reported.

WRONG_FILE = """
dagsterDeamon:                     # top level: Helm ignores it, strict catches it
  enabled: true
dagsterWebserver:
  enableReadonly: true             # misspelled enableReadOnly (webserver is closed in the chart)
dagsterDaemon:
  runCoordinator:
    enabled: true
    type: QueuedRunCoordinator
    config:
      queuedRunCoordinator:
        maxConcurentRuns: 25       # misspelled maxConcurrentRuns
        tagConcurrencyLimits:
          - key: arb/saga
            value: auto_rebalance
            limit: "1"             # a string where an integer belongs
runLauncher:
  type: K8SRunLauncher             # not one of the enum values
  config:
    k8sRunLauncher:
      envSecret:                   # misspelled envSecrets
        - name: arb-wise-credentials
postgresql:
  postgresqlPasword: hunter2       # misspelled; the chart leaves postgresql open
dagster-user-deployments:
  deployments:
    - name: arb-orchestration
      includeConfigInLaunchedRun:  # misspelled; the chart leaves deployments open
        enabled: true
"""


def test_a_deliberately_wrong_file_is_rejected(validators, tmp_path):
    path = tmp_path / "values-wrong.yaml"
    path.write_text(WRONG_FILE)
    values = model.load_yaml(path)

    chart_errors = "\n".join(_errors(validators["chart"], values))
    assert "'enableReadonly' was unexpected" in chart_errors
    assert "'maxConcurentRuns' was unexpected" in chart_errors
    assert "'1' is not of type 'integer'" in chart_errors
    assert "'K8SRunLauncher' is not one of" in chart_errors
    assert "'envSecret' was unexpected" in chart_errors
    # What Helm itself would let through:
    assert "dagsterDeamon" not in chart_errors
    assert "postgresqlPasword" not in chart_errors
    assert "includeConfigInLaunchedRun" not in chart_errors

    strict_errors = "\n".join(_errors(validators["strict"], values))
    assert "'dagsterDeamon' was unexpected" in strict_errors
    assert "'postgresqlPasword' was unexpected" in strict_errors
    assert "'includeConfigInLaunchedRun' was unexpected" in strict_errors


@pytest.mark.parametrize(
    ("path", "key", "caught_by"),
    [
        (("dagsterDaemon",), "heartbeatTolerence", "chart"),
        (("dagsterDaemon", "runCoordinator", "config", "queuedRunCoordinator"), "dequeueIntervalSecond", "chart"),
        (("runLauncher", "config", "k8sRunLauncher"), "jobNameSpace", "chart"),
        (("runLauncher", "config", "k8sRunLauncher", "runK8sConfig"), "podSpecConf", "chart"),
        (("retention",), "sensors", "chart"),
        (("ingress", "dagsterWebserver", "tls"), "secretname", "strict"),
        (("dagster-user-deployments",), "deployment", "strict"),
    ],
)
def test_a_misspelled_key_in_our_real_values_fails(validators, path, key, caught_by):
    values = copy.deepcopy(model.merged_values("prod"))
    node = values
    for part in path:
        node = node[part]
    node[key] = 1
    errors = _errors(validators[caught_by], values)
    assert any(f"'{key}' was unexpected" in error for error in errors), errors
    if caught_by == "strict":  # Helm alone would not notice: that is why the strict check exists
        assert _errors(validators["chart"], values) == []


# --------------------------------------------------------------------------------------------
# Environment files restate the user deployment (Helm replaces lists); they may not drift.

ALLOWED_TO_DIFFER = {"env", "resources"}


@pytest.mark.parametrize("environment_file", ["values-staging.yaml", "values-prod.yaml"])
def test_environment_files_change_only_tag_env_and_resources(environment_file):
    base = model.user_deployments(model.load_yaml(model.HELM_VALUES_DIR / "values-user-code.yaml"))
    override = model.user_deployments(model.load_yaml(model.HELM_VALUES_DIR / environment_file))
    assert [d["name"] for d in override] == [d["name"] for d in base]
    for base_entry, env_entry in zip(base, override, strict=True):
        assert set(env_entry) == set(base_entry)
        for key in base_entry:
            if key in ALLOWED_TO_DIFFER:
                continue
            if key == "image":
                assert {k: v for k, v in env_entry[key].items() if k != "tag"} == {
                    k: v for k, v in base_entry[key].items() if k != "tag"
                }
                continue
            assert env_entry[key] == base_entry[key], f"{environment_file}: {key} drifted"
        assert set(env_entry["env"]) == set(base_entry["env"]), "same settings, other values"


def test_helm_merge_model_replaces_lists_and_merges_maps():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1, "c": {"k": "v"}}
    override = {"a": {"y": [3]}, "b": None, "c": {}}
    assert model.helm_merge(base, override) == {"a": {"x": 1, "y": [3]}, "c": {"k": "v"}}


def test_values_files_parse_as_plain_yaml_without_duplicate_keys():
    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
        duplicates = {k for k in keys if keys.count(k) > 1}
        assert not duplicates, f"duplicate keys {duplicates} at line {node.start_mark.line + 1}"
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    UniqueKeyLoader.add_constructor(
        yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping
    )
    for path in model.values_files():
        with open(path, encoding="utf-8") as handle:
            assert yaml.load(handle, Loader=UniqueKeyLoader) is not None  # noqa: S506
