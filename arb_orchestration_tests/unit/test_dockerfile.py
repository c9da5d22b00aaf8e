"""The Dockerfile and .dockerignore, parsed (there is no Docker engine here to build with).

Covers: the base image is pinned (exact Python patch, Debian release, digest); the final stage
runs as a numeric non-root user, the same UID the pods' runAsUser names; nothing secret is copied
or set (no ADD, no .env, no secret-named ARG/ENV); the dependency layer is built from
pyproject.toml alone before the code is copied, with a stub package that matches pyproject.toml;
DAGSTER_HOME, the exposed port and the default command match helm-values/; the build context
excludes the virtualenv, git data, local Dagster state, caches and .env files.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from dataclasses import dataclass, field

import pytest

from arb_orchestration import settings
from arb_orchestration_tests.unit import deploy_model as model

DOCKERFILE = model.REPO_ROOT / "Dockerfile"
DOCKERIGNORE = model.REPO_ROOT / ".dockerignore"


@dataclass
class Instruction:
    keyword: str
    value: str
    line: int

    def exec_form(self) -> list[str] | None:
        import json

        text = self.value.strip()
        return json.loads(text) if text.startswith("[") else None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def of(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined and comments dropped."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, value = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip(), start))
    assert not pending, "the Dockerfile ends inside a continued line"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            parts = instruction.value.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif not stages:
            assert instruction.keyword == "ARG", "only ARG may precede the first FROM"
            key, _, default = instruction.value.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(instruction)
    return global_args, stages


def _expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables[m.group(1) or m.group(2)], text)


@pytest.fixture(scope="module")
def dockerfile():
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final_stage(dockerfile):
    return dockerfile[1][-1]


def _env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage.of("ENV"):
        for token in shlex.split(instruction.value):
            key, _, value = token.partition("=")
            env[key] = value
    return env


def test_parser_joins_continuations_and_skips_comments():
    args, stages = parse_dockerfile("ARG A=x\n# c\nFROM ${A} AS s\nRUN a \\\n  # note\n  && b\n")
    assert args == {"A": "x"}
    assert [(i.keyword, i.value) for i in stages[0].instructions] == [("RUN", "a && b")]


def test_base_image_is_pinned_by_version_and_digest(dockerfile):
    global_args, stages = dockerfile
    assert len(stages) >= 2, "multi-stage: build tools stay out of the runtime image"
    for stage in stages:
        image = _expand(stage.base, global_args)
        match = re.fullmatch(r"python:(3\.11\.\d+)-slim-(bookworm|trixie)@sha256:[0-9a-f]{64}", image)
        assert match, f"unpinned base image {image}"
    requires = tomllib.loads((model.REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"


def test_final_stage_runs_as_numeric_non_root_user_matching_the_pods(final_stage):
    users = final_stage.of("USER")
    assert users, "no USER in the final stage"
    last = users[-1]
    assert final_stage.instructions.index(last) > max(
        final_stage.instructions.index(i) for i in final_stage.of("RUN")
    ), "nothing runs as root after USER"
    uid, _, gid = last.value.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or gid.isdigit() and int(gid) != 0)
    values = model.merged_values("prod")
    for pod in model.control_plane_pods(values).values():
        if pod["metadata"]["labels"]["component"] == "user-deployments":
            assert pod["spec"]["securityContext"]["runAsUser"] == int(uid)
    run_pod = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]
    assert run_pod["securityContext"]["runAsUser"] == int(uid)


SECRET_WORDS = re.compile(r"(PASSWORD|PASSWD|TOKEN|SECRET|API_KEY|SIGNING_KEY|PRIVATE)", re.I)


def test_nothing_secret_is_added_copied_or_set(dockerfile):
    _, stages = dockerfile
    secret_settings = {name for name, setting in settings.SETTINGS.items() if setting.secret}
    for stage in stages:
        assert not stage.of("ADD"), "use COPY (ADD fetches URLs and unpacks archives)"
        for copy in stage.of("COPY"):
            sources = [part for part in copy.value.split()[:-1] if not part.startswith("--")]
            for source in sources:
                assert ".env" not in source and not SECRET_WORDS.search(source), copy.value
                assert source in {"pyproject.toml", "README.md", "arb_orchestration", "/opt/venv"}, (
                    f"line {copy.line}: unexpected COPY source {source}"
                )
        for instruction in stage.of("ARG") + stage.of("ENV"):
            for token in shlex.split(instruction.value):
                name = token.partition("=")[0]
                assert name not in secret_settings, f"line {instruction.line}: {name} baked in"
                assert not SECRET_WORDS.search(name), f"line {instruction.line}: {name}"
        for run in stage.of("RUN"):
            assert "--mount=type=secret" not in run.value and ".env" not in run.value


def test_dependencies_are_installed_from_pyproject_before_the_code_is_copied(dockerfile):
    _, stages = dockerfile
    build = next(stage for stage in stages if stage.name == "build")
    steps = [(i.keyword, i.value) for i in build.instructions]

    def index(predicate) -> int:
        return next(n for n, step in enumerate(steps) if predicate(step))

    copy_pyproject = index(lambda s: s[0] == "COPY" and s[1].split()[0] == "pyproject.toml")
    install_deps = index(lambda s: s[0] == "RUN" and "pip install ." in s[1] and "--no-deps" not in s[1])
    copy_code = index(lambda s: s[0] == "COPY" and s[1].split()[0] == "arb_orchestration")
    install_code = index(lambda s: s[0] == "RUN" and "pip install --no-deps ." in s[1])
    assert copy_pyproject < install_deps < copy_code < install_code
    assert not any(k == "COPY" for k, _ in steps[:copy_pyproject]), "pyproject.toml is the first input"
    assert all(k != "COPY" or v.split()[0] == "pyproject.toml" for k, v in steps[: copy_code - 1])


def test_the_stub_package_matches_pyproject(dockerfile):
    # `pip install .` on the stub must build: the package directory pyproject includes, the readme
    # it names, and the distribution name the stub is uninstalled by.
    project = tomllib.loads((model.REPO_ROOT / "pyproject.toml").read_text())
    _, stages = dockerfile
    build = next(stage for stage in stages if stage.name == "build")
    stub = next(i.value for i in build.of("RUN") if "pip uninstall" in i.value)
    assert project["project"]["readme"] == "README.md" and "README.md" in stub
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["arb_orchestration*"]
    assert "touch arb_orchestration/__init__.py" in stub
    assert f"pip uninstall --yes {project['project']['name']}" in stub
    assert (model.REPO_ROOT / "README.md").is_file(), "COPY README.md needs it"


def test_the_build_stage_compiles_the_extension_and_the_image_requires_it(dockerfile):
    # pyproject.toml builds the C chunk scanner optionally; the image must not ship without it.
    project = tomllib.loads((model.REPO_ROOT / "pyproject.toml").read_text())
    [extension] = project["tool"]["setuptools"]["ext-modules"]
    assert extension["name"] == "arb_orchestration.domain._fastfunding"
    assert all((model.REPO_ROOT / source).is_file() and not ignored(source) for source in extension["sources"])
    _, stages = dockerfile
    build = next(stage for stage in stages if stage.name == "build")
    runs = [i.value for i in build.of("RUN")]
    compiler = next(n for n, run in enumerate(runs) if "apt-get install" in run and " gcc" in run)
    install_code = next(n for n, run in enumerate(runs) if "pip install --no-deps ." in run)
    assert compiler < install_code and "libc6-dev" in runs[compiler]
    assert "assert FAST_CHUNK_SCAN" in runs[install_code]
    final = stages[-1]
    assert not any(" gcc" in i.value for i in final.of("RUN")), "no compiler in the runtime image"
    assert ignored("arb_orchestration/domain/_fastfunding.cpython-311-x86_64-linux-gnu.so")


def test_runtime_matches_the_chart_and_the_code_location(final_stage):
    env = _env(final_stage)
    values = model.merged_values("prod")
    assert env["DAGSTER_HOME"] == model.dagster_home(values)
    assert env["MPLCONFIGDIR"].startswith("/tmp/"), "matplotlib writes its cache under a writable mount"
    assert env["PYTHONUNBUFFERED"] == "1"
    deployment = model.user_deployments(values)[0]
    (expose,) = final_stage.of("EXPOSE")
    assert int(expose.value) == deployment["port"]
    (entrypoint,) = final_stage.of("ENTRYPOINT")
    assert entrypoint.exec_form() == ["/usr/bin/tini", "--"], "args from the chart follow tini"
    (cmd,) = final_stage.of("CMD")
    assert cmd.exec_form() == [
        "dagster", "code-server", "start", "-h", "0.0.0.0", "-p", str(deployment["port"]),
        *deployment["codeServerArgs"],
    ]
    copies = final_stage.of("COPY")
    assert [c.value for c in copies] == ["--from=build /opt/venv /opt/venv"], "no source tree in runtime"


# --------------------------------------------------------------------------------------------
# .dockerignore, with Docker's rules: last matching pattern wins, `!` re-includes, a pattern
# matching a directory excludes everything under it.


def _patterns() -> list[tuple[bool, str]]:
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        patterns.append((negate, line.lstrip("!").strip("/")))
    return patterns


def _pattern_matches(pattern: str, path: str) -> bool:
    regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
    regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    return re.fullmatch(regex, path) is not None or fnmatch.fnmatch(path, pattern) and "/" not in path


def ignored(path: str) -> bool:
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negate, pattern in _patterns():
        if any(_pattern_matches(pattern, candidate) for candidate in candidates):
            result = not negate
    return result


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/config",
        ".dagster_home/dagster.yaml",
        ".env",
        ".env.local",
        "arb_orchestration/.env",
        "arb_orchestration/__pycache__/settings.cpython-311.pyc",
        ".pytest_cache/v/cache/nodeids",
        ".hypothesis/examples/x",
        "build/lib/x.py",
        "arb_orchestration.egg-info/PKG-INFO",
        "k8s/secrets.template.yaml",
        "arb_orchestration_tests/unit/test_dockerfile.py",
    ],
)
def test_dockerignore_keeps_out(path):
    assert ignored(path), path


@pytest.mark.parametrize(
    "path",
    ["pyproject.toml", "README.md", "arb_orchestration/definitions.py", "arb_orchestration/defs/k8s.py"],
)
def test_dockerignore_lets_the_build_inputs_in(path):
    assert not ignored(path), path


def test_every_package_file_reaches_the_build_context():
    for path in (model.REPO_ROOT / "arb_orchestration").rglob("*.py"):
        relative = path.relative_to(model.REPO_ROOT).as_posix()
        if "__pycache__" not in relative:
            assert not ignored(relative), relative


def test_the_build_stage_builds_the_planners_branch_and_bound_and_the_image_requires_it(dockerfile):
    # pyproject.toml builds the Rust library optionally (setuptools-rust); the image must not ship without it,
    # or every rebalance plan takes HiGHS's seconds instead of milliseconds.
    project = tomllib.loads((model.REPO_ROOT / "pyproject.toml").read_text())
    assert any(req.startswith("setuptools-rust") for req in project["build-system"]["requires"])
    [library] = project["tool"]["setuptools-rust"]["ext-modules"]
    assert library["target"] == "arb_orchestration.domain._routing_bnb" and library["binding"] == "NoBinding"
    assert library["debug"] is False  # an editable install would otherwise build the unoptimised profile
    manifest = library["path"]
    assert (model.REPO_ROOT / manifest).is_file() and not ignored(manifest)
    assert not ignored("arb_orchestration/domain/routing_bnb_rust/src/lib.rs")
    crate = tomllib.loads((model.REPO_ROOT / manifest).read_text())
    assert crate.get("dependencies", {}) == {}, "no crates: the build runs with --offline"
    _, stages = dockerfile
    build = next(stage for stage in stages if stage.name == "build")
    runs = [i.value for i in build.of("RUN")]
    toolchain = next(n for n, run in enumerate(runs) if "apt-get install" in run and " cargo" in run)
    install_code = next(n for n, run in enumerate(runs) if "pip install --no-deps ." in run)
    assert toolchain < install_code
    assert "routing_bnb import library; assert library()" in runs[install_code]
    assert not any(" cargo" in i.value for i in stages[-1].of("RUN")), "no toolchain in the runtime image"
    assert ignored("arb_orchestration/domain/_routing_bnb.cpython-311-x86_64-linux-gnu.so")
    assert ignored("arb_orchestration/domain/routing_bnb_rust/target/release/librouting_bnb.so")
