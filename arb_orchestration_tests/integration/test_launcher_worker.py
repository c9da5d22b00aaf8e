"""The emergency fast path on a real Dagster instance: warm worker, launcher, coordinator, monitoring.

One real instance (the shipped arb_orchestration/sim/dagster_local.yaml: FastPathRunCoordinator,
WarmWorkerRunLauncher, SQLite), one real warm worker process (`python -m arb_orchestration.launcher`
serving this module), and a real gRPC code server for this module (as `dagster dev` runs it). Runs
are launched through Dagster's GraphQL `launchPipelineExecution` mutation and terminated with
`terminateRun`, the calls the UI makes. Covers: a fast-path run skips the queue, runs in a child
of the worker and completes with its events in the instance; other runs are queued and then
launched by the stock DefaultRunLauncher; an unreachable worker falls back; SIGKILL of the run's
process is turned into a failed run by Dagster's own run-monitoring iteration; terminate cancels;
a code change makes the worker refuse (fallback) and re-execute itself, after which a run it
started before the restart is still its child, seen as alive, and can still be terminated.

The jobs below are this module's code location (the worker and the code server import it).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from dagster import Definitions, in_process_executor, job, op
from dagster._core.storage.tags import GRPC_INFO_TAG  # set by DefaultRunLauncher

FAST = {"arb/fast_path": "true"}


@op
def say_hello(context) -> None:
    context.log.info(f"hello from pid {os.getpid()}")
    print(f"stdout of pid {os.getpid()}", flush=True)


@op
def sleep_long(context) -> None:
    context.log.info(f"sleeping in pid {os.getpid()}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.05)


@job(tags=FAST, executor_def=in_process_executor)
def fast_hello_job():
    say_hello()


@job(tags=FAST, executor_def=in_process_executor)
def fast_sleeper_job():
    sleep_long()


@job(executor_def=in_process_executor)
def plain_job():
    say_hello()


defs = Definitions(jobs=[fast_hello_job, fast_sleeper_job, plain_job])

# --------------------------------------------------------------------------- the platform

THIS_MODULE = __name__
REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_YAML = REPO_ROOT / "arb_orchestration" / "sim" / "dagster_local.yaml"
DEADLINE = 60.0  # generous: a loaded 2-core machine


def _wait(predicate, timeout: float = DEADLINE, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


class Platform:
    def __init__(self, home: Path, watch: Path):
        self.home = home
        self.watch = watch
        self.worker = None
        self.instance = None
        self.process_context = None

    def start_worker(self):
        from arb_orchestration.launcher.local import socket_address, start_worker, wait_until_ready

        self.worker = start_worker(
            dict(os.environ), dagster_home=self.home, modules=[THIS_MODULE], cwd=REPO_ROOT,
            extra_args=["--watch", str(self.watch)],
        )
        hello = wait_until_ready(socket_address(self.home), timeout=120, proc=self.worker)
        assert hello is not None, "the warm worker did not come up"
        return hello

    def hello(self):
        from arb_orchestration.launcher.local import socket_address
        from arb_orchestration.launcher.protocol import WorkerUnavailable, call

        try:
            return call(socket_address(self.home), {"op": "hello"}, connect_timeout=0.5, timeout=2)
        except WorkerUnavailable:
            return None

    def request_context(self):
        return self.process_context.create_request_context()

    def launch(self, job_name: str) -> str:
        from dagster_graphql.client.client_queries import CLIENT_SUBMIT_PIPELINE_RUN_MUTATION
        from dagster_graphql.test.utils import execute_dagster_graphql, infer_job_selector

        context = self.request_context()
        result = execute_dagster_graphql(
            context, CLIENT_SUBMIT_PIPELINE_RUN_MUTATION,
            {"executionParams": {"selector": infer_job_selector(context, job_name), "runConfigData": {}}},
        )
        payload = result.data["launchPipelineExecution"]
        assert payload["__typename"] == "LaunchRunSuccess", payload
        return payload["run"]["runId"]

    def terminate(self, run_id: str) -> dict:
        from dagster_graphql.client.client_queries import TERMINATE_RUN_JOB_MUTATION
        from dagster_graphql.test.utils import execute_dagster_graphql

        return execute_dagster_graphql(self.request_context(), TERMINATE_RUN_JOB_MUTATION,
                                       {"runId": run_id}).data["terminateRun"]

    def run(self, run_id: str):
        return self.instance.get_run_by_id(run_id)

    def finished(self, run_id: str):
        return _wait(lambda: self.run(run_id) if self.run(run_id).is_finished else None)

    def messages(self, run_id: str) -> list[str]:
        out = []
        for entry in self.instance.all_logs(run_id):
            event = entry.dagster_event
            out.append((event.message if event is not None and event.message else entry.user_message) or "")
        return out

    def wait_for_message(self, run_id: str, text: str) -> bool:
        return bool(_wait(lambda: any(text in m for m in self.messages(run_id))))

    def monitor_once(self) -> None:
        """One iteration of Dagster's run monitoring (what the daemon's MonitoringDaemon runs)."""
        from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration

        for _ in execute_run_monitoring_iteration(self.process_context, logging.getLogger("test_launcher")):
            pass


def _reap_code_servers(registry, timeout: float = 60.0) -> None:
    """Wait for the module's code servers to exit before their DAGSTER_HOME is deleted; kill what will not.

    Leaving the workspace only asks them to shut down once their runs are done; their cleanup thread then
    opens the instance to check those runs, and dies if the directory is gone, leaving the server running
    for good (seen: two `dagster api grpc` processes alive 40 min after the suite).
    """
    if registry is None:
        return
    deadline = time.monotonic() + timeout
    for server in list(getattr(registry, "_all_processes", [])):
        process = server.server_process
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def platform():
    from dagster import DagsterInstance
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import ModuleTarget

    from arb_orchestration.launcher.local import stop_worker

    home = Path(tempfile.mkdtemp(prefix="arbl-", dir="/tmp"))
    watch = home / "code-version.txt"
    watch.write_text("1")
    (home / "dagster.yaml").write_text(SHIPPED_YAML.read_text())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(home))
        p = Platform(home, watch)
        servers = None
        try:
            p.start_worker()
            p.instance = DagsterInstance.get()
            target = ModuleTarget(module_name=THIS_MODULE, attribute="defs", working_directory=str(REPO_ROOT),
                                  location_name="launcher_test")
            with WorkspaceProcessContext(p.instance, target) as process_context:
                p.process_context = process_context
                servers = process_context._grpc_server_registry  # the code servers this module started
                yield p
        finally:
            _reap_code_servers(servers)
            stop_worker(p.worker)
            if p.instance is not None:
                p.instance.dispose()
            shutil.rmtree(home, ignore_errors=True)


pytestmark = pytest.mark.integration


def _placement(run):
    from arb_orchestration.launcher import WarmWorkerRunLauncher

    return WarmWorkerRunLauncher.placement(run)


# --------------------------------------------------------------------------- tests


def test_shipped_instance_uses_the_fast_path_classes(platform):
    from arb_orchestration.launcher import FastPathRunCoordinator, WarmWorkerRunLauncher

    assert isinstance(platform.instance.run_coordinator, FastPathRunCoordinator)
    assert isinstance(platform.instance.run_launcher, WarmWorkerRunLauncher)
    assert platform.instance.run_monitoring_enabled
    assert platform.instance.run_launcher.supports_check_run_worker_health


def test_fast_path_run_skips_the_queue_runs_on_the_worker_and_completes(platform):
    hello = platform.hello()
    run_id = platform.launch("fast_hello_job")
    run = platform.finished(run_id)
    assert run is not None and run.status.value == "SUCCESS"
    placement = _placement(run)
    assert placement is not None, run.tags
    assert placement["worker_pid"] == hello["worker_pid"]
    messages = platform.messages(run_id)
    assert f"Started process for run (pid: {placement['pid']})." in messages
    assert f"hello from pid {placement['pid']}" in messages  # the op ran in the forked child
    assert not any("enqueued" in m.lower() for m in messages)
    statuses = [e.dagster_event.event_type_value for e in platform.instance.all_logs(run_id) if e.dagster_event]
    assert "PIPELINE_ENQUEUED" not in statuses and "PIPELINE_SUCCESS" in statuses
    assert platform.wait_for_message(run_id, f"Process for run exited (pid: {placement['pid']}).")
    # Its stdout is captured for the UI (FastPathComputeLogManager, without the terminal mirror).
    captured = "".join(p.read_text() for p in (platform.home / "storage" / run_id).rglob("*.out"))
    assert f"stdout of pid {placement['pid']}" in captured


def test_other_runs_are_queued_then_launched_by_the_stock_launcher(platform):
    run_id = platform.launch("plain_job")
    assert platform.run(run_id).status.value == "QUEUED"  # no daemon here: it waits in the queue
    platform.instance.launch_run(run_id, platform.request_context())  # what the queue daemon does
    run = platform.finished(run_id)
    assert run is not None and run.status.value == "SUCCESS"
    assert _placement(run) is None
    assert GRPC_INFO_TAG in run.tags  # DefaultRunLauncher: the code server started the run


def test_unreachable_worker_falls_back_to_the_stock_launcher(platform):
    # Nothing listens where the launcher looks: the worker's socket file is moved out of the way
    # (its listening socket stays open), then put back for the tests after this one.
    from arb_orchestration.launcher.local import socket_address

    path = socket_address(platform.home).path
    os.rename(path, path + ".away")
    try:
        assert platform.hello() is None
        run_id = platform.launch("fast_hello_job")
        run = platform.finished(run_id)
    finally:
        os.rename(path + ".away", path)
    assert platform.hello() is not None  # the worker itself was never touched
    assert run is not None and run.status.value == "SUCCESS"
    assert _placement(run) is None and GRPC_INFO_TAG in run.tags
    assert any("the warm worker did not take this run" in m and f"cannot connect to unix:{path}" in m
               for m in platform.messages(run_id))


def test_sigkill_of_the_run_process_is_marked_failed_by_run_monitoring(platform):
    run_id = platform.launch("fast_sleeper_job")
    assert platform.wait_for_message(run_id, "sleeping in pid")
    placement = _placement(platform.run(run_id))
    assert placement is not None
    assert platform.run(run_id).status.value == "STARTED"
    os.kill(placement["pid"], signal.SIGKILL)

    def failed():
        platform.monitor_once()
        run = platform.run(run_id)
        return run if run.status.value == "FAILURE" else None

    run = _wait(failed, interval=0.3)
    assert run is not None, platform.run(run_id).status
    assert any("killed by signal 9" in m for m in platform.messages(run_id))


def test_terminate_from_the_ui_cancels_a_worker_run(platform):
    from arb_orchestration.launcher.process import is_alive

    run_id = platform.launch("fast_sleeper_job")
    assert platform.wait_for_message(run_id, "sleeping in pid")
    placement = _placement(platform.run(run_id))
    answer = platform.terminate(run_id)
    assert answer["__typename"] == "TerminateRunSuccess", answer
    run = platform.finished(run_id)
    assert run is not None and run.status.value == "CANCELED"
    assert _wait(lambda: not is_alive(placement["pid"], placement["ticks"]), timeout=15)


def test_code_change_refuses_then_restarts_and_keeps_track_of_running_runs(platform):
    from dagster._core.launcher import WorkerStatus

    before = platform.hello()
    sleeper = platform.launch("fast_sleeper_job")
    assert platform.wait_for_message(sleeper, "sleeping in pid")
    platform.watch.write_text("2")  # "deploy": the worker's fingerprint changes

    # Until it has re-executed, a new fast-path run is refused and takes the stock path.
    run_id = platform.launch("fast_hello_job")
    run = platform.finished(run_id)
    assert run is not None and run.status.value == "SUCCESS"
    if _placement(run) is None:
        assert any("did not take this run" in m for m in platform.messages(run_id))
        launches_on_the_new_image = 0
    else:  # a slow launch: the worker had already restarted, and only the new image may take it
        launches_on_the_new_image = 1

    # Same pid (exec), new image with a new start time; the run it forked before is still its child.
    after = _wait(lambda: (h := platform.hello()) and h["started_at"] > before["started_at"] and h, timeout=120)
    assert after is not None and after["worker_pid"] == before["worker_pid"] and after["stale"] is None
    # `launches` counts the forks of this image: a run the stale image took would be missing here.
    assert after["launches"] == launches_on_the_new_image
    assert sleeper in after["running"]
    health = platform.instance.run_launcher.check_run_worker_health(platform.run(sleeper))
    assert health.status == WorkerStatus.RUNNING, health

    assert platform.terminate(sleeper)["__typename"] == "TerminateRunSuccess"
    run = platform.finished(sleeper)
    assert run is not None and run.status.value == "CANCELED"

    run_id = platform.launch("fast_hello_job")  # and the restarted worker takes new runs again
    run = platform.finished(run_id)
    assert run is not None and run.status.value == "SUCCESS" and _placement(run) is not None
