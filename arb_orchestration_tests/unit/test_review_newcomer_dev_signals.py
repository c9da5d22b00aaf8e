"""`arb-orchestration dev` (make dev) must stop on SIGTERM / Ctrl-C however it was started.

Found by following the README on a clean clone with `make dev` started in the background (as a
shell script, `nohup` or a container entrypoint does): the shell starts such jobs with SIGINT
ignored, `dagster dev` inherited the ignored SIGINT (and maps SIGTERM to it), so `kill <dev pid>`
left the webserver, the daemon, the code server and every run process running. And a SIGTERM
during the ~30 s start-up killed `dev` before its cleanup could stop what it had started.

Each scenario runs in its own interpreter: under the old code a SIGTERM kills the process.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

CHILD_SEES_SIGINT = (
    "import signal, subprocess, sys\n"
    "code = 'import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)'\n"
)


def run_ignoring_sigint(script: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `script` in a fresh interpreter started the way a shell starts a background job."""
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, timeout=timeout,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )


def test_children_started_by_dev_are_interruptible_even_if_dev_was_started_with_sigint_ignored():
    child = "print(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True).stdout.strip())\n"
    before = run_ignoring_sigint(CHILD_SEES_SIGINT + child)
    assert before.stdout.strip() == "False", before  # the situation: an ignored SIGINT is inherited
    after = run_ignoring_sigint(
        CHILD_SEES_SIGINT + "from arb_orchestration.commands.dev import install_stop_signals\n"
        "install_stop_signals()\n" + child
    )
    assert after.returncode == 0, after.stderr
    assert after.stdout.strip() == "True", "dagster dev would ignore the SIGINT that stops it"


def test_sigterm_while_starting_up_still_stops_what_was_started(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, signal, sys, time
        from arb_orchestration.commands import dev

        class World:
            stopped = False
            def start(self):
                os.kill(os.getpid(), signal.SIGTERM)  # the operator gives up while it starts
                time.sleep(30)
            def stop(self):
                World.stopped = True

        dev.world_from_args = lambda args, maildir: World()
        code = dev.main(["--no-browser", "--no-generator", "--dagster-home", {str(tmp_path / "home")!r}])
        print("exit", code, "world stopped", World.stopped)
        print("sigterm restored", signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
        """
    )
    done = run_ignoring_sigint(script)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "exit 0 world stopped True" in done.stdout, done.stdout
    assert "sigterm restored True" in done.stdout
