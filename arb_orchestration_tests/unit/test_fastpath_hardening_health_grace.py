"""Fast-path hardening: a short network blip does not fail a running stop-loss on Kubernetes.

Dagster's run monitoring (`monitor_started_run`) marks a STARTED run FAILURE on any health answer
but RUNNING/SUCCESS; the saga recovery sensor may then relaunch the stop-loss next to the one
still running. Before this change a worker on another host that could not be reached for ~1 s
(3 tries) made `WarmWorkerRunLauncher.check_run_worker_health` answer UNKNOWN, so one blip failed
the run. Now an unreachable worker is tolerated for `unreachable_grace_seconds` since the last
answer about the run (RUNNING plus a WARNING engine event), then UNKNOWN; a worker that answers
is believed at once (FAILED, "no record", UNKNOWN), and a refusal (bad token) is not waited out.

A real test instance with the launcher configured, Dagster's own `monitor_started_run`, a fake
worker on a unix socket that can be taken down and brought back on the same path, a placement
on another host (as on Kubernetes: no local pid check), and a fake clock in the launcher.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest
import yaml
from dagster import DagsterEvent, DagsterEventType
from dagster._core.launcher import WorkerStatus
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.test_utils import create_run_for_test, instance_for_test

from arb_orchestration.launcher import FAST_PATH_TAG, WARM_WORKER_TAG, WarmWorkerRunLauncher
from arb_orchestration.launcher.protocol import recv_frame, send_frame
from arb_orchestration_tests.unit.test_launcher import FALLBACK

REPO_ROOT = Path(__file__).resolve().parents[2]
POLL = 10  # run_monitoring.poll_interval_seconds of these instances (prod's value)


class SwitchableWorker:
    """A fake warm worker on a unix socket: `down()` makes it unreachable, `up()` brings it back."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="arbg-", dir="/tmp")
        self.path = os.path.join(self.dir, "w.sock")
        self.status = "RUNNING"
        self.known = True
        self.error: str | None = None  # set: answer ok=false with it (a refusal)
        self.health_requests = 0
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None
        self.up()

    def up(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        sock.listen(8)
        sock.settimeout(0.05)
        self.sock = sock
        self.thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
        self.thread.start()

    def down(self):
        sock, self.sock = self.sock, None
        if self.thread is not None:
            self.thread.join(timeout=5)
        if sock is not None:
            sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)  # connect: ENOENT, as fast as a refused TCP connection

    def _serve(self, sock):
        while self.sock is sock:
            try:
                conn, _ = sock.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(5)
                request = recv_frame(conn)
                if request.get("op") == "health":
                    self.health_requests += 1
                if self.error:
                    send_frame(conn, {"ok": False, "error": self.error})
                else:
                    send_frame(conn, {"ok": True, "status": self.status, "known": self.known,
                                      "msg": f"fake says {self.status}"})

    def close(self):
        self.down()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def fake_worker():
    worker = SwitchableWorker()
    yield worker
    worker.close()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _instance(address: str, **launcher_config):
    return instance_for_test(overrides={
        "run_monitoring": {"enabled": True, "poll_interval_seconds": POLL},
        "run_launcher": {"module": "arb_orchestration.launcher", "class": "WarmWorkerRunLauncher",
                         "config": {"worker_address": address, "connect_timeout_seconds": 0.2,
                                    "request_timeout_seconds": 1.0, "fallback": FALLBACK, **launcher_config}}})


def _started_run_on_another_host(instance, address: str):
    """A stop-loss run STARTED on a warm worker pod (its placement names another host)."""
    placement = {"address": address, "host": "pod-a:boot-1", "pid": 4242, "ticks": 99, "worker_pid": 7}
    run = create_run_for_test(instance, job_name="emergency_stop_loss_saga",
                              tags={FAST_PATH_TAG: "true", WARM_WORKER_TAG: json_dumps(placement)})
    for event_type in (DagsterEventType.PIPELINE_STARTING, DagsterEventType.PIPELINE_START):
        instance.report_dagster_event(DagsterEvent(event_type_value=event_type.value, job_name=run.job_name),
                                      run_id=run.run_id)
    return instance.get_run_by_id(run.run_id)


def json_dumps(value) -> str:
    import json

    return json.dumps(value, sort_keys=True)


def _monitor(instance, run_id: str) -> DagsterRunStatus:
    """One pass of Dagster's run monitoring over this run; its status afterwards."""
    from dagster._daemon.monitoring.run_monitoring import monitor_started_run

    record = instance.get_run_records()[0]
    assert record.dagster_run.run_id == run_id
    if record.dagster_run.status == DagsterRunStatus.STARTED:
        monitor_started_run(instance, None, record, logging.getLogger("test_health_grace"))
    return instance.get_run_by_id(run_id).status


def _launcher(instance) -> WarmWorkerRunLauncher:
    launcher = instance.run_launcher
    assert isinstance(launcher, WarmWorkerRunLauncher)
    launcher._clock = clock = Clock()
    launcher.test_clock = clock
    return launcher


def _warnings(instance, run_id: str) -> list[str]:
    return [e.message or "" for e in instance.all_logs(run_id)
            if e.level == logging.WARNING and e.dagster_event is not None
            and e.dagster_event.event_type == DagsterEventType.ENGINE_EVENT]


# --------------------------------------------------------------------------- the blip


def test_a_blip_shorter_than_the_grace_does_not_fail_the_running_stop_loss(fake_worker):
    address = f"unix:{fake_worker.path}"
    with _instance(address, unreachable_grace_seconds=25) as instance:
        launcher = _launcher(instance)
        run = _started_run_on_another_host(instance, address)
        assert _monitor(instance, run.run_id) == DagsterRunStatus.STARTED  # answered RUNNING at t=0

        fake_worker.down()  # the network between the daemon and the worker pod hiccups
        launcher.test_clock.now += POLL
        assert _monitor(instance, run.run_id) == DagsterRunStatus.STARTED, "one blip failed the stop-loss"
        warnings = _warnings(instance, run.run_id)
        assert len(warnings) == 1 and "unreachable" in warnings[0] and "unreachable_grace_seconds" in warnings[0]
        launcher.test_clock.now += POLL  # still down at the next pass: 20 s < 25 s
        assert _monitor(instance, run.run_id) == DagsterRunStatus.STARTED

        fake_worker.up()  # back: its answer restarts the window
        launcher.test_clock.now += POLL
        assert _monitor(instance, run.run_id) == DagsterRunStatus.STARTED
        fake_worker.down()
        launcher.test_clock.now += 20
        assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING  # 20 s after the answer


def test_a_worker_unreachable_past_the_grace_is_unknown_and_the_run_fails(fake_worker):
    address = f"unix:{fake_worker.path}"
    with _instance(address, unreachable_grace_seconds=25) as instance:
        launcher = _launcher(instance)
        run = _started_run_on_another_host(instance, address)
        assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
        fake_worker.down()  # the pod is gone, and its run processes with it
        launcher.test_clock.now += 24
        assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING  # just inside
        launcher.test_clock.now += 2
        late = launcher.check_run_worker_health(run)
        assert late.status == WorkerStatus.UNKNOWN and "26.0 s" in late.msg
        launcher.test_clock.now += 1
        assert _monitor(instance, run.run_id) == DagsterRunStatus.FAILURE


def test_without_any_answer_in_this_process_the_window_starts_at_the_first_failed_check(fake_worker):
    """The daemon restarted while the worker is unreachable: no answer to count from."""
    address = f"unix:{fake_worker.path}"
    fake_worker.down()
    with _instance(address, unreachable_grace_seconds=25) as instance:
        launcher = _launcher(instance)
        run = _started_run_on_another_host(instance, address)
        first = launcher.check_run_worker_health(run)
        assert first.status == WorkerStatus.RUNNING and "first failed check" in first.msg
        launcher.test_clock.now += 26
        assert launcher.check_run_worker_health(run).status == WorkerStatus.UNKNOWN


# --------------------------------------------------------------------------- answers are believed at once


@pytest.mark.parametrize(("status", "known"), [("FAILED", True), ("FAILED", False), ("UNKNOWN", False)])
def test_a_worker_that_answers_not_running_is_believed_at_once_even_inside_the_grace(fake_worker, status, known):
    address = f"unix:{fake_worker.path}"
    with _instance(address, unreachable_grace_seconds=25) as instance:
        launcher = _launcher(instance)
        run = _started_run_on_another_host(instance, address)
        fake_worker.down()
        launcher.test_clock.now += 5
        assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING  # a blip, within grace
        fake_worker.status, fake_worker.known = status, known  # e.g. "no record" of the run
        fake_worker.up()
        launcher.test_clock.now += 1
        assert launcher.check_run_worker_health(run).status == WorkerStatus(status)
        assert _monitor(instance, run.run_id) == DagsterRunStatus.FAILURE


def test_a_refusal_is_an_answer_not_a_blip(fake_worker):
    address = f"unix:{fake_worker.path}"
    with _instance(address, unreachable_grace_seconds=25) as instance:
        launcher = _launcher(instance)
        run = _started_run_on_another_host(instance, address)
        assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
        fake_worker.error = "bad or missing token"
        refused = launcher.check_run_worker_health(run)
        assert refused.status == WorkerStatus.UNKNOWN and "refused" in refused.msg
        assert fake_worker.health_requests == 2  # asked once, not retried


# --------------------------------------------------------------------------- the knob


def test_default_grace_is_twice_the_monitoring_poll_interval_plus_a_margin():
    with _instance("unix:/tmp/arb-never-bound.sock") as instance:
        assert instance.run_launcher.unreachable_grace_seconds == 2 * POLL + 5
    with instance_for_test(overrides={"run_monitoring": {"enabled": True, "poll_interval_seconds": 5},
                                      "run_launcher": {"module": "arb_orchestration.launcher",
                                                       "class": "WarmWorkerRunLauncher", "config": {}}}) as local:
        assert local.run_launcher.unreachable_grace_seconds == 15
    with _instance("unix:/tmp/arb-never-bound.sock", unreachable_grace_seconds=40) as configured:
        assert configured.run_launcher.unreachable_grace_seconds == 40


def test_the_fast_path_overlay_sets_a_grace_above_two_prod_monitoring_polls():
    overlay = yaml.safe_load((REPO_ROOT / "helm-values" / "values-fast-path.yaml").read_text())
    control = yaml.safe_load((REPO_ROOT / "helm-values" / "values-control-plane.yaml").read_text())
    config = overlay["runLauncher"]["config"]["customRunLauncher"]["config"]
    poll = control["dagsterDaemon"]["runMonitoring"]["pollIntervalSeconds"]
    grace = config["unreachable_grace_seconds"]
    assert 2 * poll < grace <= 3 * poll, (grace, poll)  # tolerates two missed passes, fails at the third
