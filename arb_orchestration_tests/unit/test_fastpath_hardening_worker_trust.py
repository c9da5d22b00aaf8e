"""Fast-path hardening: the warm worker trusts a launch request for nothing but a run id.

Before this change a token holder could make the worker fork ANY job of its module (only the
request's `module` field was checked, not the run's stored origin), a run that did not exist or
had finished, and a request whose `instance_ref` differed from the worker's made the child build
an instance from it (import whatever ConfigurableClass the client named, read runs from the
client's storage) with the trading secrets in its environment. Now the worker loads the run from
its OWN instance and forks it only when the stored run exists, is waiting to start, carries the
fast-path tag, is one of the jobs the worker serves (default: the fast-path jobs of its code
location, i.e. emergency_stop_loss_saga) and its stored origin is a module the worker imported;
a request naming another instance is refused with a reason the launcher writes to the run's
event log before falling back.

A real `WarmWorker` (not warmed up) with a real test instance; `os.fork` is replaced by a
recorder, so no run process is started. The child's entry point is checked separately with
Dagster's run-worker body replaced by a recorder.
"""

from __future__ import annotations

import os
import sys
import threading

import pytest
from dagster import DagsterEvent, DagsterEventType
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.test_utils import create_run_for_test, instance_for_test
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import serialize_value

from arb_orchestration.launcher.__main__ import build_parser
from arb_orchestration.launcher.protocol import PROTOCOL_VERSION, WorkerAddress
from arb_orchestration.launcher.tags import FAST_PATH_TAG
from arb_orchestration.launcher.worker import WarmWorker, WorkerOptions

MODULE = "arb_orchestration.definitions"
STOP_LOSS = "emergency_stop_loss_saga"


def job_origin(job_name: str, module: str = MODULE) -> JobPythonOrigin:
    return JobPythonOrigin(job_name, RepositoryPythonOrigin(
        executable_path=sys.executable, code_pointer=ModuleCodePointer(module, "defs", None)))


def stored_run(instance, job_name: str = STOP_LOSS, *, module: str = MODULE, fast: bool = True,
               run_id: str | None = None, starting: bool = True):
    """A run stored in `instance` the way the launcher sees it (STARTING, as instance.launch_run leaves it)."""
    tags = {FAST_PATH_TAG: "true"} if fast else {}
    run = create_run_for_test(instance, job_name=job_name, run_id=run_id, tags=tags,
                              job_code_origin=job_origin(job_name, module))
    if starting:
        instance.report_dagster_event(
            DagsterEvent(event_type_value=DagsterEventType.PIPELINE_STARTING.value, job_name=job_name),
            run_id=run.run_id)
    return instance.get_run_by_id(run.run_id)


def launch_request(run, instance, *, module: str = MODULE, run_id: str | None = None) -> dict:
    """What `WarmWorkerRunLauncher._launch_on_worker` sends for `run` (from the launcher's `instance`)."""
    args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=instance.get_ref())
    return {"v": PROTOCOL_VERSION, "op": "launch", "run_id": run_id or run.run_id, "args": serialize_value(args),
            "module": module, "image": None}


def give_instance(worker: WarmWorker, instance) -> WarmWorker:
    """What the warm-up does: the worker's own instance and its serialized ref."""
    worker.instance = instance
    worker.instance_key = serialize_value(instance.get_ref())
    return worker


@pytest.fixture
def fake_fork(monkeypatch):
    """os.fork replaced: records the call and 'forks' a pid that does not exist (the parent's path)."""
    forks: list[int] = []

    def fork():
        forks.append(1)
        return 2 ** 22 + 23  # above pid_max's default: no such process

    monkeypatch.setattr(os, "fork", fork)
    monkeypatch.setattr(threading, "enumerate", lambda: [threading.main_thread()])
    return forks


@pytest.fixture
def instance():
    with instance_for_test() as inst:
        yield inst


@pytest.fixture
def worker(tmp_path, instance):
    watched = tmp_path / "code.py"
    watched.write_text("x = 1\n")
    w = WarmWorker(WorkerOptions(address=WorkerAddress.parse("unix:/tmp/arb-hardening-never-bound.sock"),
                                 modules=[MODULE], watch_paths=[watched]))
    return give_instance(w, instance)


def _refused(answer: dict, reason: str, forks: list[int], worker: WarmWorker) -> None:
    assert answer["ok"] is False, answer
    assert reason in answer["error"], answer["error"]
    assert forks == [] and worker.children == {} and worker.launches == 0


# --------------------------------------------------------------------------- what is served


def test_by_default_the_worker_serves_the_fast_path_jobs_of_its_code_location(worker):
    assert worker.jobs_served() == {MODULE: frozenset({STOP_LOSS})}


def test_jobs_can_be_named_on_the_command_line(tmp_path, instance):
    args = build_parser().parse_args(["--address", "unix:/tmp/x.sock", "--job", "a", "--job", "b"])
    assert args.jobs == ["a", "b"]
    named = WarmWorker(WorkerOptions(address=WorkerAddress.parse("unix:/tmp/x.sock"), modules=[MODULE],
                                     watch_paths=[tmp_path], jobs=["pause_trading_job"]))
    assert named.jobs_served() == {MODULE: frozenset({"pause_trading_job"})}


# --------------------------------------------------------------------------- refusals


def test_the_stop_loss_stored_in_the_workers_instance_is_forked(worker, instance, fake_fork):
    run = stored_run(instance)
    answer = worker.handle(launch_request(run, instance))
    assert answer["ok"] is True, answer
    assert fake_fork == [1] and run.run_id in worker.children


def test_a_job_that_is_not_fast_path_is_refused_even_with_the_tag(worker, instance, fake_fork):
    # A token holder stores (or names) a run of another job of the same module, tagged fast-path.
    run = stored_run(instance, "pause_trading_job")
    _refused(worker.handle(launch_request(run, instance)), "is not one this worker runs", fake_fork, worker)


def test_a_stop_loss_run_without_the_fast_path_tag_is_refused(worker, instance, fake_fork):
    run = stored_run(instance, fast=False)
    _refused(worker.handle(launch_request(run, instance)), f"not tagged {FAST_PATH_TAG}", fake_fork, worker)


def test_the_stored_origin_decides_the_module_not_the_request(worker, instance, fake_fork):
    # The request says MODULE; the run's stored origin points at another module.
    run = stored_run(instance, module="somebody_elses.code")
    _refused(worker.handle(launch_request(run, instance, module=MODULE)), "'somebody_elses.code' is not one",
             fake_fork, worker)


def test_a_run_that_is_not_in_the_workers_instance_is_refused(worker, fake_fork):
    with instance_for_test() as elsewhere:  # the client's own storage
        run = stored_run(elsewhere)
        request = launch_request(run, elsewhere)
    # Its instance_ref names another instance: refused before anything is read from it.
    _refused(worker.handle(request), "is not this worker's instance", fake_fork, worker)


def test_an_instance_ref_other_than_the_workers_is_refused_even_for_a_valid_run(worker, instance, fake_fork):
    run = stored_run(instance)
    with instance_for_test() as other:
        args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=other.get_ref())
    request = {**launch_request(run, instance), "args": serialize_value(args)}
    _refused(worker.handle(request), "is not this worker's instance", fake_fork, worker)
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTING


def test_an_unknown_run_id_is_refused(worker, instance, fake_fork):
    run = stored_run(instance)
    args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id="no-such-run", instance_ref=instance.get_ref())
    request = {**launch_request(run, instance, run_id="no-such-run"), "args": serialize_value(args)}
    _refused(worker.handle(request), "is not in this worker's instance", fake_fork, worker)


def test_args_naming_another_run_than_the_request_are_refused(worker, instance, fake_fork):
    stop_loss = stored_run(instance)
    other = stored_run(instance)
    request = {**launch_request(stop_loss, instance), "run_id": other.run_id}
    _refused(worker.handle(request), "launch args name run", fake_fork, worker)


def test_a_finished_run_is_not_run_again(worker, instance, fake_fork):
    run = stored_run(instance, starting=False)
    instance.handle_run_event(run.run_id, DagsterEvent(  # the run ended
        event_type_value=DagsterEventType.PIPELINE_SUCCESS.value, job_name=run.job_name))
    _refused(worker.handle(launch_request(run, instance)), "not waiting to start", fake_fork, worker)


def test_garbage_args_are_refused(worker, instance, fake_fork):
    run = stored_run(instance)
    _refused(worker.handle({**launch_request(run, instance), "args": "{}"}), "not ExecuteRunArgs", fake_fork,
             worker)


def test_a_worker_without_an_instance_refuses_every_launch(tmp_path, instance, fake_fork):
    bare = WarmWorker(WorkerOptions(address=WorkerAddress.parse("unix:/tmp/x.sock"), modules=[MODULE],
                                    watch_paths=[tmp_path]))
    run = stored_run(instance)
    _refused(bare.handle(launch_request(run, instance)), "no instance of its own", fake_fork, bare)


# --------------------------------------------------------------------------- what the child runs


class _Exited(Exception):
    pass


def test_the_child_runs_the_checked_run_with_the_workers_own_instance(worker, instance, monkeypatch):
    """The child never builds an instance: it runs Dagster's run-worker body with the worker's."""
    import dagster._cli.api as api

    calls = []
    monkeypatch.setattr(api, "_execute_run_command_body",
                        lambda run_id, inst, _write, set_exit_code_on_failure: calls.append((run_id, inst)) or 0)

    def no_command(*_a, **_k):  # the command builds an instance from the args' instance_ref
        raise AssertionError("the child ran `dagster api execute_run`, which builds an instance from the request")

    monkeypatch.setattr(api.execute_run_command, "main", no_command)
    exits = []

    def fake_exit(code):
        exits.append(code)
        raise _Exited

    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setattr("signal.signal", lambda *_a: None)  # keep the test process's handlers
    monkeypatch.setenv("ARB_WARM_WORKER_CHILD", "")  # the child sets it; restored after the test
    run = stored_run(instance)
    with pytest.raises(_Exited):
        worker._run_child(run.run_id, False, None)
    assert exits == [0]
    assert calls == [(run.run_id, instance)]

