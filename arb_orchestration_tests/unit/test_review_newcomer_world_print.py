"""What `dev` / `world` print for the simulators: a newcomer opening the printed URL got a bare 401.

Both simulators want a key generated at every start; the banner now names the header and the
variable holding it (from `.dagster_home/world.env`), and still never prints a secret.
"""

from __future__ import annotations

import httpx

from arb_orchestration.commands.world import print_world
from arb_orchestration.sim.world import LocalWorld


def test_banner_names_the_headers_and_the_printed_urls_answer_with_them(capsys):
    world = LocalWorld(ports={"exchange": 0, "wise": 0, "smtp": 0, "mailbox": 0}, start_mock_kafka=False,
                       kafka_bootstrap="127.0.0.1:9")
    with world:
        print_world(world)
        out = capsys.readouterr().out
        env = world.env()
        for secret in (env["EXCHANGE_SIM_API_KEY"], env["WISE_API_TOKEN"], env["EVENT_SIGNING_KEY"]):
            assert secret not in out
        exchange_line = next(line for line in out.splitlines() if "exchange simulator" in line)
        wise_line = next(line for line in out.splitlines() if "Wise simulator" in line)
        assert "X-API-Key: $EXCHANGE_SIM_API_KEY" in exchange_line
        assert "Authorization: Bearer $WISE_API_TOKEN" in wise_line
        venues_url, wise_url = exchange_line.split()[2], wise_line.split()[2]
        assert httpx.get(venues_url, timeout=5).status_code == 401  # why the hint is needed
        assert httpx.get(venues_url, headers={"X-API-Key": env["EXCHANGE_SIM_API_KEY"]}, timeout=5).status_code == 200
        profiles = httpx.get(f"{wise_url}/v2/profiles", headers={"Authorization": f"Bearer {env['WISE_API_TOKEN']}"},
                             timeout=5)
        assert profiles.status_code == 200


def test_environment_line_names_a_cli_the_second_shell_can_run(monkeypatch, tmp_path):
    """The banner said `arb-orchestration publish ...`; with .venv not activated: command not found."""
    import os
    import sys
    from pathlib import Path

    from arb_orchestration.commands.world import cli_command, environment_line

    bin_dir = Path(sys.executable).parent
    script = bin_dir / "arb-orchestration"
    assert script.exists(), "the test runs from the project's virtualenv"
    monkeypatch.chdir(bin_dir.parent.parent)  # the project root, where `make dev` runs
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # a fresh shell: .venv not activated
    command = cli_command()
    assert command != "arb-orchestration"
    assert Path(command).resolve() == script.resolve() and os.access(command, os.X_OK)
    assert f"(then e.g. {command} publish ...)" in environment_line(tmp_path / "world.env")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")  # activated: the short name works
    assert cli_command() == "arb-orchestration"
