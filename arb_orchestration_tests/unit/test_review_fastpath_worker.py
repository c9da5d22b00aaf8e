"""Robustness review of the warm worker (docs/emergency-path.md): exactly-once launches and draining.

- A launch request the launcher already gave up on (the worker was hung or busy past
  `request_timeout_seconds`; the launcher then hands the run to the fallback launcher) must not
  be forked when the worker gets to it: that would be a second run worker for the same run.
- A worker that was told to stop (SIGTERM: a rollout on Kubernetes) and drains its running
  stop-losses must keep answering `health` and `terminate` for them while it drains. Otherwise
  run monitoring gets UNKNOWN for a run that is still running, Dagster marks it FAILURE, and the
  saga recovery sensor relaunches the stop-loss while the first one is still running.

These use a real `WarmWorker` on a real unix socket; `os.fork` is replaced by a recorder so no
run process is started.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time

import pytest
from dagster._core.test_utils import instance_for_test

from arb_orchestration.launcher.process import start_ticks
from arb_orchestration.launcher.protocol import (
    PROTOCOL_VERSION,
    WorkerAddress,
    WorkerUnavailable,
    call,
    recv_frame,
    send_frame,
)
from arb_orchestration.launcher.worker import Child, WarmWorker, WorkerOptions
from arb_orchestration_tests.unit.test_fastpath_hardening_worker_trust import (  # noqa: F401 (fake_fork: a fixture)
    fake_fork,
    give_instance,
    launch_request,
    stored_run,
)
from arb_orchestration_tests.unit.test_launcher import _wait

MODULE = "arb_orchestration.definitions"


@pytest.fixture
def socket_dir(tmp_path_factory):
    # A short path: sun_path is 108 bytes.
    import tempfile

    path = tempfile.mkdtemp(prefix="arbr-", dir="/tmp")
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _worker(socket_dir, tmp_path, **options) -> WarmWorker:
    watched = tmp_path / "code.py"
    watched.write_text("x = 1\n")
    return WarmWorker(WorkerOptions(address=WorkerAddress.parse(f"unix:{socket_dir}/w.sock"), modules=[MODULE],
                                    watch_paths=[watched], **options))


def _launch_request(run_id: str, instance=None) -> dict:
    if instance is None:  # refused before the run is looked at (draining)
        return {"v": PROTOCOL_VERSION, "op": "launch", "run_id": run_id, "args": "{}", "module": MODULE}
    # The worker forks only a fast-path run stored in its own instance (test_fastpath_hardening_worker_trust).
    return launch_request(stored_run(instance), instance)


@pytest.fixture
def instance():
    with instance_for_test() as inst:
        yield inst


def test_worker_does_not_fork_a_launch_the_launcher_stopped_waiting_for(socket_dir, tmp_path, fake_fork, instance):
    worker = give_instance(_worker(socket_dir, tmp_path), instance)
    worker.bind()
    try:
        # The launcher sent the request, waited request_timeout_seconds for a worker that was hung
        # (SIGSTOP, swapping, busy with a stuck client), gave up and closed: it now falls back.
        abandoned = worker.address.connect(1.0)
        abandoned_request = _launch_request("run-abandoned", instance)
        send_frame(abandoned, abandoned_request)
        abandoned.close()
        # The worker comes back and reads the request from its backlog.
        worker._accept_one()
        assert fake_fork == [], "the worker forked a run the launcher had already handed to the fallback"
        assert abandoned_request["run_id"] not in worker.children and worker.launches == 0

        # Control: a launcher that is still waiting gets its run.
        waiting = worker.address.connect(1.0)
        try:
            waiting_request = _launch_request("run-waiting", instance)
            send_frame(waiting, waiting_request)
            worker._accept_one()
            waiting.settimeout(5)
            reply = recv_frame(waiting)
        finally:
            waiting.close()
        assert reply["ok"] and fake_fork == [1] and waiting_request["run_id"] in worker.children
    finally:
        worker._close_listener()


def test_draining_worker_keeps_answering_health_and_terminate_and_refuses_launches(socket_dir, tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    worker = _worker(socket_dir, tmp_path, drain_seconds=30.0)
    worker.children["stop-loss"] = Child("stop-loss", pid=sleeper.pid, ticks=start_ticks(sleeper.pid),
                                         launched_at=time.time())
    worker.bind()
    address = worker.address
    thread = threading.Thread(target=worker.serve_forever, daemon=True)
    thread.start()
    try:
        assert _wait(lambda: call(address, {"op": "hello"}, connect_timeout=0.5, timeout=2)["ok"])
        worker.stop()  # what SIGTERM does

        # Run monitoring asks about the running stop-loss: it must be told RUNNING, not "unreachable".
        try:
            health = call(address, {"op": "health", "run_id": "stop-loss"}, connect_timeout=0.5, timeout=2)
        except WorkerUnavailable as exc:
            pytest.fail(f"a draining worker does not answer health for its running run: {exc}")
        assert health["status"] == "RUNNING"
        # No new run is taken while draining (the launcher falls back for it).
        with pytest.raises(WorkerUnavailable, match="shutting down") as refused:
            call(address, _launch_request("new-run"), connect_timeout=0.5, timeout=2)
        assert refused.value.refused
        # Two requests answered after stop(): the serve loop went through its drain check at least once
        # between them (no sleep needed), and is still serving: the stop-loss is still running.
        assert thread.is_alive()
        # Terminate from the UI still reaches the run.
        answer = call(address, {"op": "terminate", "run_id": "stop-loss"}, connect_timeout=0.5, timeout=2)
        assert answer["signalled"] is True

        # Once its last run is gone the worker exits, well before drain_seconds.
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert not os.path.exists(address.path)
    finally:
        worker.stop()
        if sleeper.poll() is None:
            sleeper.kill()
        try:
            sleeper.wait(timeout=5)
        except ChildProcessError:
            pass
        thread.join(timeout=10)
