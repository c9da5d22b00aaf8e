"""The emergency fast path in pieces: protocol, launcher routing, queue bypass, worker decisions, tags.

- Protocol: addresses (unix/TCP, the socket-path limit), frames, tokens, `call` against a real
  socket server in a thread (answer, refusal, nobody listening).
- `WarmWorkerRunLauncher` on a test instance, with a fake worker (a socket server answering like
  the real one) and a recording fallback launcher: fast-path runs go to the worker and get the
  `arb/warm_worker` tag; other runs, an unreachable worker, a refusing worker and the fast path
  switched off all go to the fallback (with the reason in the run's event log); health checks
  and terminate follow the tag.
- `FastPathRunCoordinator`: fast-path runs are launched at once, others queued; the queue settings
  of the shipped dagster_local.yaml survive the subclass.
- `WarmWorker` decisions without forking: refusals (other module, other image, stale code, live
  threads, bad token or protocol), health from exit statuses and from (pid, start time), terminate,
  children inherited across a re-exec.
- Only the emergency stop-loss carries the fast-path tag.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.test_utils import create_run_for_test, instance_for_test
from dagster._serdes import ConfigurableClass

from arb_orchestration.launcher import (
    FAST_PATH_TAG,
    WARM_WORKER_TAG,
    FastPathRunCoordinator,
    WarmWorkerRunLauncher,
    WorkerAddress,
    WorkerUnavailable,
)
from arb_orchestration.launcher.process import host_identity, is_alive, start_ticks
from arb_orchestration.launcher.protocol import (
    MAX_UNIX_PATH_BYTES,
    PROTOCOL_VERSION,
    ProtocolError,
    call,
    default_socket_path,
    recv_frame,
    send_frame,
    token_matches,
)
from arb_orchestration.launcher.worker import Child, WarmWorker, WorkerOptions, source_fingerprint

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE = "arb_orchestration.definitions"


# --------------------------------------------------------------------------- protocol


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("unix:/run/w.sock", WorkerAddress("unix", path="/run/w.sock")),
        ("unix:///run/w.sock", WorkerAddress("unix", path="/run/w.sock")),
        ("/run/w.sock", WorkerAddress("unix", path="/run/w.sock")),
        ("tcp:arb-warm-worker:4000", WorkerAddress("tcp", host="arb-warm-worker", port=4000)),
        ("tcp://10.0.0.7:4000", WorkerAddress("tcp", host="10.0.0.7", port=4000)),
        ("arb-warm-worker.arb-orchestration.svc:4000", WorkerAddress("tcp", host="arb-warm-worker.arb-orchestration.svc", port=4000)),
        ("[::1]:4000", WorkerAddress("tcp", host="::1", port=4000)),
    ],
)
def test_worker_addresses_parse(text, expected):
    assert WorkerAddress.parse(text) == expected
    assert WorkerAddress.parse(str(expected)) == expected


@pytest.mark.parametrize("text", ["", "unix:relative.sock", "host", "host:", "host:0", "host:99999", "tcp:host:x",
                                  "unix:/" + "x" * MAX_UNIX_PATH_BYTES])
def test_bad_worker_addresses_are_refused(text):
    with pytest.raises(ValueError):
        WorkerAddress.parse(text)


def test_default_socket_lives_in_dagster_home_unless_the_path_is_too_long():
    assert default_socket_path("/srv/app/.dagster_home") == "/srv/app/.dagster_home/warm-worker.sock"
    long_home = "/srv/" + "deep/" * 30
    path = default_socket_path(long_home)
    assert len(path.encode()) <= MAX_UNIX_PATH_BYTES and path.startswith(tempfile.gettempdir())
    assert path == default_socket_path(long_home) != default_socket_path(long_home + "other")


def test_frames_round_trip_and_garbage_is_a_protocol_error():
    a, b = socket.socketpair()
    with a, b:
        send_frame(a, {"op": "hello", "n": [1, 2]})
        assert recv_frame(b) == {"op": "hello", "n": [1, 2]}
        a.sendall((5).to_bytes(4, "big") + b"nope!")
        with pytest.raises(ProtocolError, match="not JSON"):
            recv_frame(b)
        a.sendall((2 ** 31).to_bytes(4, "big"))
        with pytest.raises(ProtocolError, match="exceeds"):
            recv_frame(b)
        a.sendall((10).to_bytes(4, "big") + b"{}")
        a.close()
        with pytest.raises(ProtocolError, match="closed"):
            recv_frame(b)


def test_tokens_compare_in_constant_time_and_no_token_accepts_all():
    assert token_matches(None, None) and token_matches("", "anything")
    assert token_matches("s3cret", "s3cret")
    assert not token_matches("s3cret", "s3cre") and not token_matches("s3cret", None) and not token_matches("s", 1)


class FakeWorker:
    """A socket server answering the protocol like the worker: `answer(request) -> reply`.

    `threaded`: each connection is answered in its own thread (an answer may sleep while the
    next request is served, as the real worker's health answers do).
    """

    def __init__(self, answer, *, threaded: bool = False):
        self.threaded = threaded
        self.dir = tempfile.mkdtemp(prefix="arbf-", dir="/tmp")
        self.path = os.path.join(self.dir, "w.sock")
        self.answer = answer
        self.requests: list[dict] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"unix:{self.path}"

    def _serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            if self.threaded:
                threading.Thread(target=self._one, args=(conn, 5), daemon=True).start()
            else:
                self._one(conn, 2)

    def _one(self, conn, timeout: float):
        with conn:
            conn.settimeout(timeout)
            request = recv_frame(conn)
            self.requests.append(request)
            try:
                send_frame(conn, self.answer(request))
            except OSError:  # the client gave up waiting (timeout tests)
                pass

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=5)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def fake_worker():
    workers = []

    def make(answer):
        worker = FakeWorker(answer)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop()


def test_call_returns_the_answer_raises_on_refusal_and_when_nobody_listens(fake_worker):
    worker = fake_worker(lambda r: {"ok": r["op"] == "hello", "error": "stale: code changed", "echo": r})
    address = WorkerAddress.parse(worker.address)
    reply = call(address, {"op": "hello"}, connect_timeout=1, timeout=2, token="t")
    assert reply["echo"] == {"v": PROTOCOL_VERSION, "op": "hello", "token": "t"}
    with pytest.raises(WorkerUnavailable, match="stale") as refused:
        call(address, {"op": "launch"}, connect_timeout=1, timeout=2)
    assert refused.value.refused
    with pytest.raises(WorkerUnavailable, match="cannot connect") as absent:
        call(WorkerAddress.parse(f"unix:{worker.dir}/nobody.sock"), {"op": "hello"}, connect_timeout=1, timeout=2)
    assert not absent.value.refused


def test_call_over_tcp():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve():
        conn, _ = server.accept()
        with conn:
            request = recv_frame(conn)
            send_frame(conn, {"ok": True, "got": request["op"]})

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert call(WorkerAddress.parse(f"127.0.0.1:{port}"), {"op": "health"}, connect_timeout=1, timeout=2)["got"] == "health"
    finally:
        thread.join(timeout=5)
        server.close()


# --------------------------------------------------------------------------- the launcher


class RecordingLauncher(RunLauncher, ConfigurableClass):
    """The fallback in these tests: records what it is asked to do."""

    calls: list[tuple[str, str]] = []

    def __init__(self, inst_data=None):
        self._inst_data = inst_data
        super().__init__()

    @property
    def inst_data(self):
        return self._inst_data

    @classmethod
    def config_type(cls):
        return {}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data)

    def launch_run(self, context: LaunchRunContext) -> None:
        RecordingLauncher.calls.append(("launch", context.dagster_run.run_id))

    def terminate(self, run_id: str) -> bool:
        RecordingLauncher.calls.append(("terminate", run_id))
        return True


FALLBACK = {"module": __name__, "class": "RecordingLauncher"}


@pytest.fixture(autouse=True)
def _fresh_recording():
    RecordingLauncher.calls = []


def _origin(module: str = MODULE) -> JobPythonOrigin:
    return JobPythonOrigin(
        "emergency_stop_loss_saga",
        RepositoryPythonOrigin(executable_path=sys.executable, code_pointer=ModuleCodePointer(module, "defs", None)),
    )


def _instance(worker_address: str | None, **extra):
    config = {"fallback": FALLBACK, "connect_timeout_seconds": 0.5, **extra}
    if worker_address is not None:
        config["worker_address"] = worker_address
    return instance_for_test(overrides={"run_launcher": {
        "module": "arb_orchestration.launcher", "class": "WarmWorkerRunLauncher", "config": config}})


def _run(instance, tags=None, **kwargs):
    from arb_orchestration_tests.unit.deploy_model import remote_job_origin

    return create_run_for_test(instance, job_name="emergency_stop_loss_saga", tags=tags,
                               job_code_origin=_origin(), remote_job_origin=remote_job_origin("emergency_stop_loss_saga"),
                               **kwargs)


def _launch(instance, run):
    instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    return instance.get_run_by_id(run.run_id)


def _messages(instance, run_id) -> list[str]:
    return [(e.dagster_event.message if e.dagster_event else e.user_message) or "" for e in instance.all_logs(run_id)]


LAUNCHED = {"ok": True, "pid": 4242, "ticks": 99, "host": "pod-a", "address": "tcp:10.0.0.7:4000", "worker_pid": 7}


def test_fast_path_run_goes_to_the_worker_with_dagsters_execute_run_args(fake_worker):
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import deserialize_value

    worker = fake_worker(lambda r: LAUNCHED)
    with _instance(worker.address) as instance:
        run = _launch(instance, _run(instance, tags={FAST_PATH_TAG: "true"}))
        assert RecordingLauncher.calls == []
        (request,) = worker.requests
        assert request["op"] == "launch" and request["run_id"] == run.run_id and request["module"] == MODULE
        args = deserialize_value(request["args"], ExecuteRunArgs)
        assert args.run_id == run.run_id and args.instance_ref == instance.get_ref()
        placement = json.loads(run.tags[WARM_WORKER_TAG])
        assert placement["pid"] == 4242 and placement["address"] == "tcp:10.0.0.7:4000" and placement["host"] == "pod-a"
        assert WarmWorkerRunLauncher.placement(run) == placement


def test_runs_without_the_tag_go_to_the_fallback(fake_worker):
    worker = fake_worker(lambda r: LAUNCHED)
    with _instance(worker.address) as instance:
        for tags in (None, {FAST_PATH_TAG: "false"}, {"dagster/priority": "100"}):
            run = _launch(instance, _run(instance, tags=tags))
            assert RecordingLauncher.calls[-1] == ("launch", run.run_id)
            assert WARM_WORKER_TAG not in run.tags
        assert worker.requests == []


def test_unreachable_worker_falls_back_and_says_why():
    with _instance("unix:/tmp/arb-nobody-listens-here.sock") as instance:
        run = _launch(instance, _run(instance, tags={FAST_PATH_TAG: "true"}))
        assert RecordingLauncher.calls == [("launch", run.run_id)]
        assert WARM_WORKER_TAG not in run.tags
        assert any("did not take this run" in m and "cannot connect" in m and "RecordingLauncher" in m
                   for m in _messages(instance, run.run_id))


def test_refusing_worker_falls_back_and_says_why(fake_worker):
    worker = fake_worker(lambda r: {"ok": False, "error": "stale: code changed since the worker imported it"})
    with _instance(worker.address) as instance:
        run = _launch(instance, _run(instance, tags={FAST_PATH_TAG: "true"}))
        assert RecordingLauncher.calls == [("launch", run.run_id)]
        assert any("stale: code changed" in m for m in _messages(instance, run.run_id))


def test_garbage_answer_falls_back(fake_worker):
    worker = fake_worker(lambda r: {"ok": True, "nothing": "useful"})  # no pid
    with _instance(worker.address) as instance:
        run = _launch(instance, _run(instance, tags={FAST_PATH_TAG: "true"}))
        assert RecordingLauncher.calls == [("launch", run.run_id)] and WARM_WORKER_TAG not in run.tags


@pytest.mark.parametrize("run_starts", [True, False])
def test_lost_answer_is_not_a_second_launch_when_the_run_started(fake_worker, run_starts):
    """The request reached the worker but its answer did not come back in time."""
    from dagster import DagsterEvent, DagsterEventType

    holder = {}

    def answer_too_late(request):
        if run_starts:  # as the forked child would: the run leaves STARTING
            holder["instance"].report_dagster_event(
                DagsterEvent(event_type_value=DagsterEventType.PIPELINE_START.value, job_name="emergency_stop_loss_saga"),
                run_id=request["run_id"])
        time.sleep(1.0)
        return LAUNCHED

    worker = fake_worker(answer_too_late)
    with _instance(worker.address, request_timeout_seconds=0.3) as instance:
        holder["instance"] = instance
        run = _run(instance, tags={FAST_PATH_TAG: "true"})
        instance.report_dagster_event(  # what instance.launch_run writes before calling the launcher
            DagsterEvent(event_type_value=DagsterEventType.PIPELINE_STARTING.value, job_name=run.job_name),
            run_id=run.run_id)
        run = _launch(instance, instance.get_run_by_id(run.run_id))
        if run_starts:
            assert RecordingLauncher.calls == []
            assert WarmWorkerRunLauncher.placement(run)["pid"] is None
            assert any("but the run started there" in m for m in _messages(instance, run.run_id))
        else:
            assert RecordingLauncher.calls == [("launch", run.run_id)]


def test_fast_path_off_and_custom_tags():
    with _instance("off") as instance:
        assert instance.run_launcher.worker_address is None
        run = _launch(instance, _run(instance, tags={FAST_PATH_TAG: "true"}))
        assert RecordingLauncher.calls == [("launch", run.run_id)]
    with _instance("off", fast_path_tag="team/urgent", fast_path_value="yes") as instance:
        launcher = instance.run_launcher
        assert launcher.is_fast_path(_run(instance, tags={"team/urgent": "YES"}))
        assert not launcher.is_fast_path(_run(instance, tags={FAST_PATH_TAG: "true"}))


def test_default_address_is_the_socket_in_dagster_home():
    with _instance(None) as instance:
        assert instance.run_launcher.worker_address == WorkerAddress.parse(
            "unix:" + default_socket_path(instance.root_directory))


def _placed_run(instance, placement, **kwargs):
    return _run(instance, tags={FAST_PATH_TAG: "true", WARM_WORKER_TAG: json.dumps(placement)}, **kwargs)


@pytest.mark.parametrize(
    ("answer", "finished", "expected"),
    [
        ({"ok": True, "status": "RUNNING", "msg": "running"}, False, WorkerStatus.RUNNING),
        ({"ok": True, "status": "FAILED", "msg": "killed by signal 9"}, False, WorkerStatus.FAILED),
        ({"ok": True, "status": "SUCCESS", "msg": "exited with code 0"}, True, WorkerStatus.SUCCESS),
        # The process ended cleanly but never wrote the end of the run: that is a failure.
        ({"ok": True, "status": "SUCCESS", "msg": "exited with code 0"}, False, WorkerStatus.FAILED),
    ],
)
def test_health_follows_the_worker_that_runs_the_run(fake_worker, answer, finished, expected):
    from dagster._core.storage.dagster_run import DagsterRunStatus

    worker = fake_worker(lambda r: answer)
    with _instance("off") as instance:
        status = DagsterRunStatus.SUCCESS if finished else DagsterRunStatus.STARTED
        run = _placed_run(instance, {"address": worker.address, "host": "pod-a", "pid": 4242, "ticks": 1},
                          status=status)
        result = instance.run_launcher.check_run_worker_health(run)
        assert isinstance(result, CheckRunHealthResult) and result.status == expected, result
        assert worker.requests[-1]["op"] == "health" and worker.requests[-1]["pid"] == 4242
        assert result.run_worker_id == "pod-a:4242"


def test_health_without_the_worker_looks_at_the_process_on_the_same_host():
    # No grace for an unreachable worker on another host here (test_fastpath_hardening_health_grace.py).
    with _instance("off", unreachable_grace_seconds=0.0) as instance:
        launcher = instance.run_launcher
        me = {"address": "unix:/tmp/arb-nobody-listens-here.sock", "host": host_identity(), "pid": os.getpid(),
              "ticks": start_ticks(os.getpid())}
        assert launcher.check_run_worker_health(_placed_run(instance, me)).status == WorkerStatus.RUNNING
        gone = {**me, "ticks": (me["ticks"] or 0) + 1}  # same pid, another process
        assert launcher.check_run_worker_health(_placed_run(instance, gone)).status == WorkerStatus.FAILED
        elsewhere = {**me, "host": "another-pod"}
        result = launcher.check_run_worker_health(_placed_run(instance, elsewhere))
        assert result.status == WorkerStatus.UNKNOWN and result.transient


def test_runs_of_the_fallback_are_healthy_unless_its_timeouts_say_otherwise():
    with _instance("off") as instance:
        result = instance.run_launcher.check_run_worker_health(_run(instance, tags={FAST_PATH_TAG: "true"}))
        assert result.status == WorkerStatus.RUNNING and "RecordingLauncher" in result.msg


def test_terminate_goes_to_the_worker_or_the_fallback(fake_worker):
    from dagster._core.storage.dagster_run import DagsterRunStatus

    answers = iter([{"ok": True, "signalled": True, "msg": "SIGTERM sent to run worker pid 4242"},
                    {"ok": True, "signalled": False, "msg": "run worker pid 4243 is not running"}])
    worker = fake_worker(lambda r: next(answers))
    with _instance("off") as instance:
        launcher = instance.run_launcher
        running = _placed_run(instance, {"address": worker.address, "host": "h", "pid": 4242, "ticks": 1},
                              status=DagsterRunStatus.STARTED)
        assert launcher.terminate(running.run_id) is True
        assert instance.get_run_by_id(running.run_id).status == DagsterRunStatus.CANCELING
        assert worker.requests[-1]["op"] == "terminate"
        orphan = _placed_run(instance, {"address": worker.address, "host": "h", "pid": 4243, "ticks": 1},
                             status=DagsterRunStatus.STARTED)
        assert launcher.terminate(orphan.run_id) is True  # nothing left to stop: the run is canceled now
        assert instance.get_run_by_id(orphan.run_id).status == DagsterRunStatus.CANCELED
        stock = _run(instance, status=DagsterRunStatus.STARTED)
        assert launcher.terminate(stock.run_id) is True
        assert RecordingLauncher.calls == [("terminate", stock.run_id)]


# --------------------------------------------------------------------------- the coordinator

QUEUE = {
    "max_concurrent_runs": 10,
    "dequeue_interval_seconds": 1,
    "tag_concurrency_limits": [{"key": "arb/saga", "value": "auto_rebalance", "limit": 1}],
}


def test_coordinator_launches_fast_path_runs_at_once_and_queues_the_rest():
    from dagster._core.storage.dagster_run import DagsterRunStatus

    overrides = {
        "run_coordinator": {"module": "arb_orchestration.launcher", "class": "FastPathRunCoordinator", "config": QUEUE},
        "run_launcher": {"module": __name__, "class": "RecordingLauncher"},
    }
    with instance_for_test(overrides=overrides) as instance:
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, FastPathRunCoordinator)
        assert coordinator.dequeue_interval_seconds == 1
        assert coordinator.get_run_queue_config().tag_concurrency_limits == QUEUE["tag_concurrency_limits"]
        fast = _run(instance, tags={FAST_PATH_TAG: "true"})
        plain = _run(instance, tags={"dagster/priority": "100"})
        instance.submit_run(fast.run_id, workspace=None)
        instance.submit_run(plain.run_id, workspace=None)
        assert RecordingLauncher.calls == [("launch", fast.run_id)]
        assert instance.get_run_by_id(fast.run_id).status == DagsterRunStatus.STARTING
        assert instance.get_run_by_id(plain.run_id).status == DagsterRunStatus.QUEUED


def test_shipped_local_instance_config(monkeypatch, tmp_path):
    from dagster._core.storage.event_log import ConsolidatedSqliteEventLogStorage

    (tmp_path / "dagster.yaml").write_text((REPO_ROOT / "arb_orchestration" / "sim" / "dagster_local.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_coordinator, FastPathRunCoordinator)
        assert instance.run_coordinator.dequeue_interval_seconds == 1
        limits = {(limit["key"], limit["value"]) for limit in instance.run_coordinator.get_run_queue_config().tag_concurrency_limits}
        assert limits == {("arb/saga", "auto_rebalance"), ("arb/job", "funding_rate_hedge")}
        launcher = instance.run_launcher
        assert isinstance(launcher, WarmWorkerRunLauncher) and type(launcher.fallback).__name__ == "DefaultRunLauncher"
        assert launcher.worker_address == WorkerAddress.parse("unix:" + default_socket_path(str(tmp_path)))
        assert isinstance(instance.event_log_storage, ConsolidatedSqliteEventLogStorage)
        assert instance.run_monitoring_enabled


# --------------------------------------------------------------------------- compute logs


@pytest.mark.parametrize("in_warm_child", [False, True])
def test_compute_logs_skip_the_terminal_mirror_only_in_warm_worker_runs(tmp_path, monkeypatch, in_warm_child):
    from arb_orchestration.launcher import FastPathComputeLogManager
    from arb_orchestration.launcher.tags import WARM_CHILD_ENV

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    if in_warm_child:
        monkeypatch.setenv(WARM_CHILD_ENV, "1")
    else:
        monkeypatch.delenv(WARM_CHILD_ENV, raising=False)
    manager = FastPathComputeLogManager.from_config_value(None, {})
    assert manager._base_dir == str(tmp_path / "storage")  # Dagster's default place
    spawned = []
    real_popen = subprocess.Popen

    def recording_popen(args, *a, **kw):
        spawned.append(args[0])
        return real_popen(args, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    with manager.capture_logs(["run-1", "compute_logs", "step"]):
        os.write(sys.stdout.fileno(), b"captured line\n")
    out = Path(manager.get_captured_local_path(["run-1", "compute_logs", "step"], "out"))
    assert _wait(lambda: "captured line" in out.read_text())
    assert manager.is_capture_complete(["run-1", "compute_logs", "step"])
    assert ("tail" in spawned) is (not in_warm_child)


# --------------------------------------------------------------------------- worker decisions


@pytest.fixture
def worker(tmp_path):
    watched = tmp_path / "code.py"
    watched.write_text("x = 1\n")
    w = WarmWorker(WorkerOptions(address=WorkerAddress.parse("unix:/tmp/arb-unit-never-bound.sock"),
                                 modules=[MODULE], image="reg/app:1", watch_paths=[watched], token="tok"))
    w.watched = watched
    return w


def _ask(worker, **request):
    return worker.handle({"v": PROTOCOL_VERSION, "token": "tok", **request})


def test_worker_checks_protocol_and_token(worker):
    assert "protocol version" in worker.handle({"v": 99, "op": "hello", "token": "tok"})["error"]
    assert "token" in worker.handle({"v": PROTOCOL_VERSION, "op": "hello", "token": "nope"})["error"]
    assert "unknown op" in _ask(worker, op="reboot")["error"]
    hello = _ask(worker, op="hello")
    assert hello["ok"] and hello["modules"] == [MODULE] and hello["stale"] is None and hello["image"] == "reg/app:1"


@pytest.mark.parametrize(
    ("request_fields", "reason"),
    [
        ({"module": "other.location"}, "is not one this worker imported"),
        ({"module": None}, "is not one this worker imported"),  # a python-file code location
        ({"module": MODULE, "image": "reg/app:2"}, "differs from the worker's"),
    ],
)
def test_worker_refuses_runs_it_cannot_run(worker, request_fields, reason):
    answer = _ask(worker, op="launch", run_id="r1", args="{}", **request_fields)
    assert not answer["ok"] and reason in answer["error"]
    assert worker.children == {}


def test_worker_refuses_to_fork_with_a_thread_alive(worker):
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="some-client-thread")
    thread.start()
    try:
        answer = _ask(worker, op="launch", run_id="r1", args="{}", module=MODULE, image="reg/app:1")
        assert not answer["ok"] and "some-client-thread" in answer["error"]
    finally:
        stop.set()
        thread.join()


def test_worker_turns_stale_when_its_code_changes(worker):
    assert worker.check_stale() is None
    worker.watched.write_text("x = 22\n")
    assert "changed since this worker imported it" in worker.check_stale()
    answer = _ask(worker, op="launch", run_id="r1", args="{}", module=MODULE)
    assert not answer["ok"] and answer["error"].startswith("stale:")
    assert _ask(worker, op="hello")["stale"]


def test_fingerprint_follows_python_files_only(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("a = 1\n")
    before = source_fingerprint([tmp_path / "pkg"])
    (tmp_path / "pkg" / "notes.txt").write_text("not code")
    assert source_fingerprint([tmp_path / "pkg"]) == before
    (tmp_path / "pkg" / "b.py").write_text("b = 1\n")
    assert source_fingerprint([tmp_path / "pkg"]) != before


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "30"])
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def _wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return None


def test_health_reports_how_a_known_child_ended(worker, sleeper):
    worker.children["ok"] = Child("ok", pid=1, ticks=None, launched_at=0, exit_code=0)
    assert _ask(worker, op="health", run_id="ok")["status"] == "SUCCESS"
    worker.children["kill"] = Child("kill", pid=sleeper.pid, ticks=start_ticks(sleeper.pid), launched_at=time.time())
    assert _ask(worker, op="health", run_id="kill")["status"] == "RUNNING"
    os.kill(sleeper.pid, signal.SIGKILL)
    answer = _wait(lambda: (a := _ask(worker, op="health", run_id="kill"))["status"] != "RUNNING" and a)
    assert answer["status"] == "FAILED" and "killed by signal 9 (SIGKILL)" in answer["msg"]


def test_health_of_a_run_the_worker_does_not_remember(worker, sleeper):
    ticks = start_ticks(sleeper.pid)
    alive = _ask(worker, op="health", run_id="old", pid=sleeper.pid, ticks=ticks, host=worker.host)
    assert alive["status"] == "RUNNING" and "before a worker restart" in alive["msg"]
    reused = _ask(worker, op="health", run_id="old", pid=sleeper.pid, ticks=ticks + 1, host=worker.host)
    assert reused["status"] == "FAILED"  # that pid now belongs to another process
    other_host = _ask(worker, op="health", run_id="old", pid=sleeper.pid, ticks=ticks, host="another-pod")
    assert other_host["status"] == "UNKNOWN"


def test_terminate_signals_the_run_process(worker, sleeper):
    worker.children["r"] = Child("r", pid=sleeper.pid, ticks=start_ticks(sleeper.pid), launched_at=time.time())
    answer = _ask(worker, op="terminate", run_id="r")
    assert answer["signalled"] is True
    assert _wait(lambda: not is_alive(sleeper.pid, None))
    assert _ask(worker, op="terminate", run_id="r")["signalled"] is False


def test_children_survive_a_re_exec(monkeypatch, tmp_path):
    inherited = [{"run_id": "r", "pid": 4242, "ticks": 7, "launched_at": 1.0, "exit_code": None, "exited_at": None}]
    monkeypatch.setenv("ARB_WARM_WORKER_INHERITED_CHILDREN", json.dumps(inherited))
    w = WarmWorker(WorkerOptions(address=WorkerAddress.parse("unix:/tmp/arb-unit-never-bound.sock"),
                                 modules=[MODULE], watch_paths=[tmp_path]))
    assert w.children["r"] == Child("r", 4242, 7, 1.0)
    assert "ARB_WARM_WORKER_INHERITED_CHILDREN" not in os.environ


def test_process_identity():
    me = start_ticks(os.getpid())
    assert isinstance(me, int) and is_alive(os.getpid(), me)
    assert not is_alive(os.getpid(), me + 1)
    done = subprocess.Popen(["true"])
    done.wait()
    assert start_ticks(done.pid) is None and not is_alive(done.pid, None)


# --------------------------------------------------------------------------- tags


def test_only_the_emergency_stop_loss_takes_the_fast_path():
    from arb_orchestration.defs import k8s
    from arb_orchestration.definitions import defs

    assert k8s.FAST_PATH_TAG == FAST_PATH_TAG
    fast = sorted(job.name for job in defs.resolve_all_job_defs() if job.tags.get(FAST_PATH_TAG) == "true")
    assert fast == ["emergency_stop_loss_saga"]
    assert k8s.STOP_LOSS_RUN_TAGS[FAST_PATH_TAG] == "true"
