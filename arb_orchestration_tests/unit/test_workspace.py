"""The operator's entry points: `dagster definitions validate -w workspace.yaml` and the README's configuration table."""

import os
import subprocess
import sys
from pathlib import Path

from arb_orchestration import settings

ROOT = Path(__file__).resolve().parents[2]


def test_workspace_validates_with_the_dagster_cli():
    env = {k: v for k, v in os.environ.items() if k not in settings.SETTINGS}
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr


def test_readme_configuration_table_lists_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in settings.SETTINGS if f"`{name}`" not in readme]
    assert not missing, f"README's configuration table is stale; regenerate with `arb-orchestration settings`: {missing}"


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme
    assert [line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))] == ["make test"]
