"""A run worker that dies between the health check's reap and its liveness check is reported with its exit.

`_health` reaped ended children, then asked whether the still-unreaped one was alive. A child
that died in between (not yet a zombie at the reap, gone at the liveness check) was reported
"vanished" instead of "killed by signal 9 (SIGKILL)": the status was right (FAILED), the reason
lost. CI caught it once in test_launcher's SIGKILL test. Here the race is made certain: the first
reap of the health call collects nothing.
"""

from __future__ import annotations

import os
import signal
import time

from arb_orchestration.launcher.worker import Child, start_ticks
from arb_orchestration_tests.unit.test_launcher import _ask, _wait, sleeper, worker  # noqa: F401 (fixtures)


def test_a_child_that_dies_during_the_health_check_is_reported_with_its_exit(worker, sleeper, monkeypatch):
    worker.children["kill"] = Child("kill", pid=sleeper.pid, ticks=start_ticks(sleeper.pid), launched_at=time.time())
    os.kill(sleeper.pid, signal.SIGKILL)
    assert _wait(lambda: open(f"/proc/{sleeper.pid}/stat").read().split(")")[1].split()[0] == "Z")  # a zombie now
    real_reap, calls = worker.reap, []

    def reap_late():  # the first reap of the call ran just before the child died
        calls.append(1)
        if len(calls) > 1:
            real_reap()

    monkeypatch.setattr(worker, "reap", reap_late)
    answer = _ask(worker, op="health", run_id="kill")
    assert answer["status"] == "FAILED"
    assert "killed by signal 9 (SIGKILL)" in answer["msg"], answer["msg"]
