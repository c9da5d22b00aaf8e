"""`FastPathRunCoordinator`: the stock run queue, except that fast-path runs skip it.

The `QueuedRunCoordinator` only marks a run QUEUED; the daemon launches it on
its next dequeue pass (`dequeue_interval_seconds`, 1 s at best since the
setting is an integer): up to a second on the emergency path for nothing, as
the stop-loss lane has no limit and the highest priority anyway. This
coordinator launches runs tagged `arb/fast_path=true` at once, the way the
`DefaultRunCoordinator` does, in the process that submits them (the sensor
daemon, the webserver), and queues every other run exactly as before: tag
concurrency limits, priorities and `max_concurrent_runs` keep working, and
the daemon still counts the fast-path runs as in progress.

By design a fast-path run also ignores `max_concurrent_runs: 0` (a paused
queue): an emergency stop-loss is not something the queue may hold back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import Field
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

from arb_orchestration.launcher.tags import FAST_PATH_TAG, FAST_PATH_VALUE, is_fast_path


class FastPathRunCoordinator(QueuedRunCoordinator):
    """`QueuedRunCoordinator` whose fast-path runs bypass the queue (see the module docstring)."""

    def __init__(self, fast_path_tag: str = FAST_PATH_TAG, fast_path_value: str = FAST_PATH_VALUE, **kwargs: Any):
        self.fast_path_tag = fast_path_tag
        self.fast_path_value = fast_path_value
        super().__init__(**kwargs)

    @classmethod
    def config_type(cls) -> dict:
        return {
            **QueuedRunCoordinator.config_type(),
            "fast_path_tag": Field(str, is_required=False, default_value=FAST_PATH_TAG),
            "fast_path_value": Field(str, is_required=False, default_value=FAST_PATH_VALUE),
        }

    @classmethod
    def from_config_value(cls, inst_data, config_value: Mapping[str, Any]):
        config = dict(config_value)
        fast = {key: config.pop(key) for key in ("fast_path_tag", "fast_path_value") if key in config}
        # QueuedRunCoordinator's keyword arguments are its config keys.
        return cls(inst_data=inst_data, **fast, **config)

    def is_fast_path(self, run: DagsterRun) -> bool:
        return is_fast_path(run.tags, self.fast_path_tag, self.fast_path_value)

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        if run.status != DagsterRunStatus.NOT_STARTED or not self.is_fast_path(run):
            return super().submit_run(context)
        self._instance.launch_run(run.run_id, context.workspace)
        reloaded = self._instance.get_run_by_id(run.run_id)
        return reloaded if reloaded is not None else run
