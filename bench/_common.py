"""Shared pieces of the latency benches: a headless platform, percentiles, the stock code location.

`Platform` runs what `arb-orchestration dev` runs minus the web UI: the Dagster
daemon (`dagster-daemon run`, which starts the code server) on a fresh
DAGSTER_HOME and, for the fast configuration, the warm worker. Everything it
starts it stops.

`stock_defs` (loaded by the stock configuration with `-f bench/_common.py -a
stock_defs`) is the project's code location with Dagster's default executor
(multiprocess) in place of the in-process one the jobs ask for: the stock
baseline the brief compares against. It is built on first access so that
importing this file for its helpers never imports the definitions.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
FAST_INSTANCE_YAML = REPO_ROOT / "arb_orchestration" / "sim" / "dagster_local.yaml"

# Stock Dagster 1.13 as documented: queued coordinator with its default 5 s dequeue interval,
# DefaultRunLauncher, per-run SQLite event logs; the same queue limits and run monitoring as dev.
STOCK_INSTANCE_YAML = """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 10
    tag_concurrency_limits:
      - {key: arb/saga, value: auto_rebalance, limit: 1}
      - {key: arb/job, value: funding_rate_hedge, limit: 1}
run_monitoring:
  enabled: true
  poll_interval_seconds: 5
  start_timeout_seconds: 60
sensors:
  use_threads: true
  num_workers: 4
schedules:
  use_threads: true
  num_workers: 2
"""


def __getattr__(name: str) -> Any:
    if name == "stock_defs":
        return _stock_definitions()
    raise AttributeError(name)


_stock: Any = None


def _stock_definitions():
    global _stock
    if _stock is None:
        import dagster

        if "arb_orchestration.definitions" in sys.modules:
            raise RuntimeError("stock_defs must be loaded in a fresh process (the code server)")
        # Every `in_process_executor` the project's jobs name (imported from `dagster` at their import)
        # becomes Dagster's default multiprocess executor.
        dagster.in_process_executor = dagster.multiprocess_executor
        from arb_orchestration.definitions import defs

        _stock = defs
    return _stock


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Platform:
    """One configuration of the platform, headless, on its own DAGSTER_HOME."""

    name: str
    instance_yaml: str
    env: dict[str, str]
    code_args: list[str]  # how the daemon loads the code location (-m module | -f file -a attr)
    warm_worker: bool
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="arbb-")))
    processes: list[subprocess.Popen] = field(default_factory=list)
    worker: subprocess.Popen | None = None
    daemon: subprocess.Popen | None = None

    @property
    def home(self) -> Path:
        return self.root / self.name

    def start(self) -> None:
        from arb_orchestration.launcher.local import initialize_instance

        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "dagster.yaml").write_text(self.instance_yaml)
        env = {**self.env, "DAGSTER_HOME": str(self.home)}
        initialize_instance(self.home)  # before the processes below race to create the databases
        if self.warm_worker:
            from arb_orchestration.launcher.local import start_worker

            # Others edit this checkout while the bench runs; a worker restarting on their edits would
            # send trials down the fallback path. Pin its code watch to a file that does not change
            # (restart on change is covered by the integration tests).
            pinned = self.home / "pinned-code.py"
            pinned.write_text("")
            self.worker = start_worker(env, dagster_home=self.home, cwd=REPO_ROOT, extra_args=["--watch", str(pinned)],
                                       stdout=self._log("worker"), stderr=subprocess.STDOUT)
            self.processes.append(self.worker)
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "dagster._daemon", "run", *self.code_args],
            env=env, cwd=REPO_ROOT, stdout=self._log("daemon"), stderr=subprocess.STDOUT,
            start_new_session=True,  # its code server and run processes go down with its group
        )
        self.processes.append(self.daemon)

    def _log(self, what: str):
        return open(self.home / f"{what}.log", "ab")

    def wait_for_worker(self, timeout: float) -> dict | None:
        from arb_orchestration.launcher.local import socket_address, wait_until_ready

        return wait_until_ready(socket_address(self.home), timeout, proc=self.worker)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.processes)

    def log_tail(self, what: str, lines: int = 40) -> str:
        path = self.home / f"{what}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def instance(self):
        from dagster import DagsterInstance

        # dagster_local.yaml places its databases at {env: DAGSTER_HOME}: resolved once, at load.
        previous = os.environ.get("DAGSTER_HOME")
        os.environ["DAGSTER_HOME"] = str(self.home)
        try:
            return DagsterInstance.from_config(str(self.home))
        finally:
            if previous is None:
                os.environ.pop("DAGSTER_HOME", None)
            else:
                os.environ["DAGSTER_HOME"] = previous

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            try:
                os.killpg(self.daemon.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                self.daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.daemon.pid, signal.SIGKILL)
                self.daemon.wait(timeout=5)
        if self.worker is not None:
            from arb_orchestration.launcher.local import stop_worker

            stop_worker(self.worker)
        # The daemon's group (code server, run processes) must be gone even if the daemon died first.
        if self.daemon is not None:
            try:
                os.killpg(self.daemon.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def wait_for(predicate, timeout: float, interval: float = 0.02):
    """Poll `predicate()` until it returns something truthy; that value, or None at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)
