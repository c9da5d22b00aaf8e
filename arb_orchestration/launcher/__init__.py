"""The emergency fast path: a run queue bypass and a launcher that hands runs to a warm worker.

See docs/emergency-path.md. Configured in the instance (arb_orchestration/sim/dagster_local.yaml):

    run_coordinator: {module: arb_orchestration.launcher, class: FastPathRunCoordinator, config: {...}}
    run_launcher:    {module: arb_orchestration.launcher, class: WarmWorkerRunLauncher, config: {...}}
    compute_logs:    {module: arb_orchestration.launcher, class: FastPathComputeLogManager}

and the worker runs beside Dagster: `python -m arb_orchestration.launcher -m arb_orchestration.definitions`.
"""

from arb_orchestration.launcher.compute_logs import FastPathComputeLogManager
from arb_orchestration.launcher.coordinator import FastPathRunCoordinator
from arb_orchestration.launcher.protocol import WorkerAddress, WorkerUnavailable
from arb_orchestration.launcher.run_launcher import WarmWorkerRunLauncher
from arb_orchestration.launcher.tags import FAST_PATH_TAG, FAST_PATH_VALUE, WARM_WORKER_TAG, is_fast_path

__all__ = [
    "FAST_PATH_TAG",
    "FAST_PATH_VALUE",
    "WARM_WORKER_TAG",
    "FastPathComputeLogManager",
    "FastPathRunCoordinator",
    "WarmWorkerRunLauncher",
    "WorkerAddress",
    "WorkerUnavailable",
    "is_fast_path",
]
