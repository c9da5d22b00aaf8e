"""Robustness review of the fast path with a real warm worker process (docs/emergency-path.md).

Same platform as test_launcher_worker.py (the shipped local instance, a real worker serving that
module, a real code server, GraphQL launches), no mocks:

- a HUNG worker (SIGSTOP) when the stop-loss is launched: the launcher times out and the stock
  launcher runs it; when the worker wakes up it must not start the run a second time from its
  backlog (one "Started process for run" event, the worker's launch count unchanged);
- two critical events within milliseconds: two runs, both on the worker, in two processes at the
  same time, each terminable on its own.
"""

from __future__ import annotations

import os
import signal

import pytest

from arb_orchestration_tests.integration.test_launcher_worker import _placement, _wait, platform  # noqa: F401

pytestmark = pytest.mark.integration


def _run_worker_processes(platform, run_id: str) -> list[str]:  # noqa: F811
    return [m for m in platform.messages(run_id) if m.startswith("Started process for run")]


def test_hung_worker_does_not_start_the_run_again_after_the_fallback_did(platform):  # noqa: F811
    before = platform.hello()
    worker_pid = before["worker_pid"]
    os.kill(worker_pid, signal.SIGSTOP)
    try:
        # Blocks for request_timeout_seconds (5 s) + the launcher's checks, then falls back.
        run_id = platform.launch("fast_hello_job")
        assert _placement(platform.run(run_id)) is None
        assert any("did not take this run" in m for m in platform.messages(run_id))
    finally:
        os.kill(worker_pid, signal.SIGCONT)
    run = platform.finished(run_id)
    assert run is not None and run.status.value == "SUCCESS"
    # The worker is awake and has read its backlog: it accepts in order, so the abandoned launch (queued while
    # it was stopped) was handled before this hello, and the hello's launch count already says whether it forked
    # the run (no need to sleep for a second run worker's first event).
    after = _wait(platform.hello, timeout=30)
    assert after is not None and after["worker_pid"] == worker_pid
    assert after["launches"] == before["launches"], "the worker forked the run the fallback launched"
    assert len(_run_worker_processes(platform, run_id)) == 1, platform.messages(run_id)
    assert not any("duplicate run" in m or "already finished" in m for m in platform.messages(run_id))


def test_two_stop_losses_within_milliseconds_both_run_on_the_worker_at_once(platform):  # noqa: F811
    from dagster._core.launcher import WorkerStatus

    first = platform.launch("fast_sleeper_job")
    second = platform.launch("fast_sleeper_job")
    assert platform.wait_for_message(first, "sleeping in pid")
    assert platform.wait_for_message(second, "sleeping in pid")
    one, two = _placement(platform.run(first)), _placement(platform.run(second))
    assert one is not None and two is not None and one["pid"] != two["pid"]
    # Both are running at the same time, each in its own run process.
    for run_id in (first, second):
        health = platform.instance.run_launcher.check_run_worker_health(platform.run(run_id))
        assert health.status == WorkerStatus.RUNNING, health
        assert len(_run_worker_processes(platform, run_id)) == 1
    assert platform.terminate(first)["__typename"] == "TerminateRunSuccess"
    assert platform.finished(first).status.value == "CANCELED"
    assert platform.run(second).status.value == "STARTED"  # the other one is untouched
    assert platform.terminate(second)["__typename"] == "TerminateRunSuccess"
    assert platform.finished(second).status.value == "CANCELED"
