"""Start, wait for and stop a local warm worker (for `arb-orchestration dev`, the bench and the tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from arb_orchestration.launcher.protocol import WorkerAddress, WorkerUnavailable, call, default_socket_path


def socket_address(dagster_home: str | Path) -> WorkerAddress:
    """The address `WarmWorkerRunLauncher` uses by default for this DAGSTER_HOME."""
    return WorkerAddress.parse("unix:" + default_socket_path(str(dagster_home)))


def initialize_instance(dagster_home: str | Path) -> None:
    """Create the instance's SQLite databases here, once, before several processes open them.

    Dagster's SQLite storages create their tables and stamp the alembic revision on first use;
    two processes doing that at once (the worker's warm-up and `dagster dev` starting on a fresh
    DAGSTER_HOME) can stamp twice, after which no process can load the instance ("more than one
    head"). Idempotent and quick when the databases exist.
    """
    from dagster import DagsterInstance

    home = str(Path(dagster_home).resolve())
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = home  # dagster_local.yaml places its databases at {env: DAGSTER_HOME}
    try:
        with DagsterInstance.from_config(home) as instance:
            instance.get_runs(limit=1)
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous


def start_worker(
    env: Mapping[str, str],
    *,
    dagster_home: str | Path,
    modules: Sequence[str] = ("arb_orchestration.definitions",),
    extra_args: Sequence[str] = (),
    cwd: str | Path | None = None,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
) -> subprocess.Popen:
    """`python -m arb_orchestration.launcher` with DAGSTER_HOME set; returns once it is started, not warm.

    The instance's databases are created first (`initialize_instance`), so start the worker
    before anything else that opens the instance.
    """
    initialize_instance(dagster_home)
    command = [sys.executable, "-m", "arb_orchestration.launcher",
               "--address", str(socket_address(dagster_home))]
    for module in modules:
        command += ["-m", module]
    command += list(extra_args)
    return subprocess.Popen(
        command,
        env={**env, "DAGSTER_HOME": str(Path(dagster_home).resolve())},
        cwd=str(cwd) if cwd else None,
        stdout=stdout,
        stderr=stderr,
    )


def wait_until_ready(
    address: WorkerAddress | str, timeout: float, proc: subprocess.Popen | None = None, token: str | None = None
) -> dict[str, Any] | None:
    """The worker's `hello` once it answers; None if it did not within `timeout` (or exited)."""
    address = WorkerAddress.parse(address) if isinstance(address, str) else address
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return None
        try:
            return call(address, {"op": "hello"}, connect_timeout=0.5, timeout=2.0, token=token)
        except WorkerUnavailable:
            time.sleep(0.1)
    return None


def stop_worker(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`. Runs it already forked finish on their own."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
