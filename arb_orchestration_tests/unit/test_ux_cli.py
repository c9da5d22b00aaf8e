"""The `arb-orchestration` dispatcher as an operator meets it: `help COMMAND`, and output piped into `head`."""

from __future__ import annotations

import os
import subprocess
import sys

from arb_orchestration import cli


def test_help_command_shows_that_commands_own_help(capsys):
    try:
        cli.main(["help", "plan-route"])
    except SystemExit as exc:  # argparse exits 0 after printing --help
        assert exc.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: arb-orchestration plan-route")
    assert "Exit codes" in out


def test_help_alone_and_help_of_an_unknown_command(capsys):
    assert cli.main(["help"]) == 0
    assert "commands:" in capsys.readouterr().out
    assert cli.main(["help", "nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err


def test_output_into_a_closed_pipe_exits_quietly_without_a_traceback():
    # `arb-orchestration settings | head -1`: the reader is gone before the table is written.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "arb_orchestration.cli", "settings"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "BrokenPipeError" not in proc.stderr
    assert proc.returncode == 141
