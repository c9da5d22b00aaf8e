"""A run left STARTED by a `make dev` that died hard must not block the next `make dev`.

Found on a clean clone: after the first `make dev` had to be killed (kill -9: it did not stop on
SIGTERM when started in the background), its in-progress rebalance stayed STARTED through two
restarts. Locally runs go through the stock DefaultRunLauncher, which has no run-worker health
check, so run monitoring never failed it (only its 5 h max_runtime would), the one-rebalance
limit held every later rebalance QUEUED, and the recovery sensors, which act on FAILURE, never
saw it. `dev` now marks such runs failed at start when none of their processes is alive.
"""

from __future__ import annotations

import os
import subprocess
import sys

from dagster import DagsterEvent, DagsterEventType, DagsterInstance, DagsterRunStatus, job, op

from arb_orchestration.commands import dev


@op
def noop():
    return None


@job
def some_saga():
    noop()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def started_run(instance: DagsterInstance, pid: int | None) -> str:
    run = instance.create_run_for_job(job_def=some_saga)
    instance.report_dagster_event(
        DagsterEvent(event_type_value=DagsterEventType.RUN_START.value, job_name=run.job_name,
                     message="Started execution of run.", pid=pid),
        run_id=run.run_id,
    )
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
    return run.run_id


def seed(home, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = DagsterInstance.from_config(str(home))
    return instance


def test_only_runs_without_a_live_process_are_marked_failed(tmp_path, monkeypatch):
    home = dev.prepare_dagster_home(tmp_path / "home")  # the instance `make dev` uses (dagster_local.yaml)
    with seed(home, monkeypatch) as instance:
        orphan = started_run(instance, dead_pid())
        alive = started_run(instance, os.getpid())  # e.g. a `dagster job execute` in another shell
        unknown = started_run(instance, None)
    assert dev.fail_orphaned_runs(home) == [orphan]
    with seed(home, monkeypatch) as instance:
        assert instance.get_run_by_id(orphan).status == DagsterRunStatus.FAILURE
        failure = [e for e in instance.all_logs(orphan) if e.dagster_event and e.dagster_event.is_run_failure]
        assert "left STARTED by an earlier session" in failure[-1].dagster_event.message
        assert instance.get_run_by_id(alive).status == DagsterRunStatus.STARTED
        assert instance.get_run_by_id(unknown).status == DagsterRunStatus.STARTED
    assert dev.fail_orphaned_runs(home) == []  # idempotent


def test_dev_checks_before_it_starts_the_world(tmp_path, monkeypatch, capsys):
    home = dev.prepare_dagster_home(tmp_path / "home")
    with seed(home, monkeypatch) as instance:
        orphan = started_run(instance, dead_pid())

    class World:
        def start(self):
            raise KeyboardInterrupt  # stop right here: what matters happened before

        def stop(self):
            pass

    monkeypatch.setattr(dev, "world_from_args", lambda args, maildir: World())
    assert dev.main(["--no-browser", "--no-generator", "--dagster-home", str(home)]) == 0
    assert f"marked 1 run(s) left STARTED by an earlier session as failed" in capsys.readouterr().out
    with seed(home, monkeypatch) as instance:
        assert instance.get_run_by_id(orphan).status == DagsterRunStatus.FAILURE
