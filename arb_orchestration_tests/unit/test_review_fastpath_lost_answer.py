"""Robustness review: the launch answer is lost after the worker forked the run (docs/emergency-path.md).

The launcher sent `launch`, the worker forked the run, but the answer did not come back within
`request_timeout_seconds` (worker slow to answer, connection cut). Before this review the launcher
only waited up to 3 s for the run to leave STARTING; a run process slower than that (a loaded
machine, a slow database) made it launch the run a second time with the fallback launcher, and
the placement it recorded had no pid. The worker knows its children by run id: the launcher now
asks it, and only a worker that does not know the run (or cannot be reached) leads to the old
STARTING check.

Fakes: a threaded socket server answering like the worker, a recording fallback launcher.
"""

from __future__ import annotations

import os
import sys
import time

import pytest
from dagster import DagsterEvent, DagsterEventType
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.launcher import LaunchRunContext
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.test_utils import create_run_for_test, instance_for_test

from arb_orchestration.launcher import FAST_PATH_TAG, WarmWorkerRunLauncher
from arb_orchestration.launcher.protocol import PROTOCOL_VERSION
from arb_orchestration.launcher.worker import Child, WarmWorker, WorkerOptions
from arb_orchestration.launcher.protocol import WorkerAddress
from arb_orchestration_tests.unit.test_launcher import FALLBACK, FakeWorker, RecordingLauncher

MODULE = "arb_orchestration.definitions"


@pytest.fixture
def fake_worker():
    made = []

    def make(answer):
        made.append(FakeWorker(answer, threaded=True))
        return made[-1]

    yield make
    for worker in made:
        worker.stop()


@pytest.fixture(autouse=True)
def _fresh():
    RecordingLauncher.calls = []


def _starting_run(instance):
    from arb_orchestration_tests.unit.deploy_model import remote_job_origin

    origin = JobPythonOrigin("emergency_stop_loss_saga", RepositoryPythonOrigin(
        executable_path=sys.executable, code_pointer=ModuleCodePointer(MODULE, "defs", None)))
    run = create_run_for_test(instance, job_name="emergency_stop_loss_saga", tags={FAST_PATH_TAG: "true"},
                              job_code_origin=origin, remote_job_origin=remote_job_origin("emergency_stop_loss_saga"))
    instance.report_dagster_event(  # what instance.launch_run writes before calling the launcher
        DagsterEvent(event_type_value=DagsterEventType.PIPELINE_STARTING.value, job_name=run.job_name),
        run_id=run.run_id)
    return instance.get_run_by_id(run.run_id)


def _instance(address):
    return instance_for_test(overrides={"run_launcher": {
        "module": "arb_orchestration.launcher", "class": "WarmWorkerRunLauncher",
        "config": {"worker_address": address, "connect_timeout_seconds": 0.5, "request_timeout_seconds": 0.3,
                   "fallback": FALLBACK}}})


def test_lost_answer_for_a_run_the_worker_forked_is_not_launched_again(fake_worker):
    """The run process is slow: the run is still STARTING when the launcher gives up waiting."""
    forked = {}

    def worker(request):
        if request["op"] == "launch":
            forked[request["run_id"]] = {"pid": 4242, "ticks": 99}
            time.sleep(1.0)  # the answer comes too late
            return {"ok": True, "pid": 4242, "ticks": 99, "host": "pod-a", "address": "tcp:10.0.0.7:4000"}
        if request["op"] == "health":  # what WarmWorker._health answers for a child it knows
            child = forked.get(request["run_id"])
            if child is None:
                return {"ok": True, "status": "FAILED", "known": False, "msg": "no record"}
            return {"ok": True, "status": "RUNNING", "known": True, **child, "host": "pod-a",
                    "address": "tcp:10.0.0.7:4000", "msg": "running"}
        return {"ok": False, "error": "unexpected"}

    server = fake_worker(worker)
    with _instance(f"unix:{server.path}") as instance:
        run = _starting_run(instance)
        began = time.monotonic()
        instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        assert RecordingLauncher.calls == [], "the run was launched a second time by the fallback launcher"
        placement = WarmWorkerRunLauncher.placement(instance.get_run_by_id(run.run_id))
        assert placement["pid"] == 4242 and placement["ticks"] == 99 and placement["host"] == "pod-a"
        assert time.monotonic() - began < 2.5  # no blind wait for STARTING to change


def test_lost_answer_for_a_run_the_worker_does_not_know_still_falls_back(fake_worker):
    """The worker died (or refused) before forking: the fallback launches the run once."""
    def worker(request):
        if request["op"] == "launch":
            time.sleep(1.0)
            return {"ok": False, "error": "too late"}
        return {"ok": True, "status": "FAILED", "known": False, "msg": "no record"}

    server = fake_worker(worker)
    with _instance(f"unix:{server.path}") as instance:
        run = _starting_run(instance)
        instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        assert RecordingLauncher.calls == [("launch", run.run_id)]
        assert WarmWorkerRunLauncher.placement(instance.get_run_by_id(run.run_id)) is None


def test_worker_health_says_whether_it_knows_the_run(tmp_path):
    watched = tmp_path / "code.py"
    watched.write_text("x = 1\n")
    worker = WarmWorker(WorkerOptions(address=WorkerAddress.parse("unix:/tmp/arb-review-never-bound.sock"),
                                      modules=[MODULE], watch_paths=[watched]))
    worker.children["r"] = Child("r", pid=os.getpid(), ticks=None, launched_at=time.time())
    known = worker.handle({"v": PROTOCOL_VERSION, "op": "health", "run_id": "r"})
    assert known["known"] is True and known["pid"] == os.getpid() and known["status"] == "RUNNING"
    unknown = worker.handle({"v": PROTOCOL_VERSION, "op": "health", "run_id": "other"})
    assert unknown["known"] is False
