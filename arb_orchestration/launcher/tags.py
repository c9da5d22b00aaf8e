"""Run tags of the emergency fast path (no Dagster here, so job definitions can import them).

A run carrying `arb/fast_path=true` (the stop-loss job's tags, `defs/k8s.py`)
skips the run queue (`FastPathRunCoordinator`) and is launched on the warm
worker (`WarmWorkerRunLauncher`). `arb/warm_worker` is written by the launcher
when the worker took the run: where it runs, so health checks and terminate
find it again (JSON: address, host, pid, ticks, worker_pid).
"""

FAST_PATH_TAG = "arb/fast_path"
FAST_PATH_VALUE = "true"
WARM_WORKER_TAG = "arb/warm_worker"
# Set in the environment of each run process the warm worker forks (read by FastPathComputeLogManager).
WARM_CHILD_ENV = "ARB_WARM_WORKER_CHILD"


def is_fast_path(tags, key: str = FAST_PATH_TAG, value: str = FAST_PATH_VALUE) -> bool:
    return str((tags or {}).get(key, "")).strip().lower() == value.lower()
