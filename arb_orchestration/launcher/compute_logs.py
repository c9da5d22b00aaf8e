"""`FastPathComputeLogManager`: Dagster's local compute logs, without the terminal mirror in warm-worker runs.

Dagster's `LocalComputeLogManager` captures a run's stdout/stderr into files (what the UI shows)
and *mirrors* them back to the terminal: for each of the two streams it starts a `tail -F`
process and a Python interpreter that watches for orphans, four processes at the start of every
run. On the 2-core dev machine that spawning competed with the stop-loss for the CPU and cost
~0.2 s before the first order (bench/stop_loss_latency.py, docs/emergency-path.md).

In a process forked by the warm worker (`ARB_WARM_WORKER_CHILD` is set there) this manager writes
the same files without the mirror: the UI shows the same stdout/stderr, the `dagster dev`
terminal does not echo that run's output. Every other run is captured exactly as Dagster does.
`base_dir` defaults to Dagster's own default, `<DAGSTER_HOME>/storage`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator, Sequence
from contextlib import contextmanager

from dagster import Field, StringSource
from dagster._core.execution.compute_logs import redirect_to_file
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.local_compute_log_manager import IO_TYPE_EXTENSION, LocalComputeLogManager
from dagster._utils import ensure_file, touch_file

from arb_orchestration.launcher.tags import WARM_CHILD_ENV


class FastPathComputeLogManager(LocalComputeLogManager):
    """`LocalComputeLogManager` that skips the tail processes in warm-worker runs (module docstring)."""

    @classmethod
    def config_type(cls) -> dict:
        return {**LocalComputeLogManager.config_type(), "base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> "FastPathComputeLogManager":
        config = dict(config_value)
        if not config.get("base_dir"):
            config["base_dir"] = os.path.join(os.environ["DAGSTER_HOME"], "storage")
        return cls(inst_data=inst_data, **config)

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Generator[CapturedLogContext, None, None]:
        if not os.environ.get(WARM_CHILD_ENV):
            with super().capture_logs(log_key) as context:
                yield context
            return
        outpath = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDOUT])
        errpath = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDERR])
        ensure_file(outpath)
        ensure_file(errpath)
        with redirect_to_file(sys.stdout, outpath), redirect_to_file(sys.stderr, errpath):
            yield CapturedLogContext(log_key)
        touch_file(self.complete_artifact_path(log_key))
