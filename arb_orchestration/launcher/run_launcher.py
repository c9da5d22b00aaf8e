"""`WarmWorkerRunLauncher`: fast-path runs to the warm worker, everything else to the stock launcher.

Configured in the instance's dagster.yaml:

    run_launcher:
      module: arb_orchestration.launcher
      class: WarmWorkerRunLauncher
      config:
        worker_address: unix:/path/warm-worker.sock   # default: <DAGSTER_HOME>/warm-worker.sock
        # Kubernetes: worker_address: tcp:arb-warm-worker:4000, token: {env: ARB_WARM_WORKER_TOKEN},
        # fallback: {module: dagster_k8s, class: K8sRunLauncher, config: {...}}

A run tagged `arb/fast_path=true` is sent to the worker (`launcher.protocol`),
which forks a child running Dagster's own `dagster api execute_run` with the
same `ExecuteRunArgs` a container launcher would send: the run is an ordinary
run of the instance (status, event log, UI, saga log). If the worker cannot
take it — not running, timed out, stale code, another code location — the
launcher writes why into the run's event log and hands the run to the
fallback launcher (`DefaultRunLauncher` unless configured), so a run is never
lost to the fast path. Runs without the tag go to the fallback directly.

Where a worker run lives is written to its `arb/warm_worker` tag; health
checks (run monitoring) and terminate go to that worker, and when it cannot be
reached from the same host, to the process itself by (pid, start time). From
another host (Kubernetes) an unreachable worker is tolerated for
`unreachable_grace_seconds` since the last answer about the run (RUNNING, with
a warning in the run's event log), then reported UNKNOWN; a worker that
answers is believed at once, whatever it says.
"""

from __future__ import annotations

import json
import logging
import os
import math
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from dagster import Field, Permissive, StringSource
from dagster import _check as check
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._core.launcher.default_run_launcher import DefaultRunLauncher
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value

from arb_orchestration.launcher.process import host_identity, is_alive
from arb_orchestration.launcher.protocol import WorkerAddress, WorkerUnavailable, call, default_socket_path
from arb_orchestration.launcher.tags import FAST_PATH_TAG, FAST_PATH_VALUE, WARM_WORKER_TAG, is_fast_path

_HEALTH_ATTEMPTS = 3  # a blip must not fail a running stop-loss: retry before answering UNKNOWN
# Default unreachable grace = 2 x run_monitoring.poll_interval_seconds + this margin (see
# `unreachable_grace_seconds`): survives two monitoring passes that cannot reach the worker.
_GRACE_MARGIN_SECONDS = 5.0
_GRACE_FALLBACK_SECONDS = 25.0  # no instance to read the poll interval from (2 x 10 s prod poll + 5)
_HEALTH_MEMORY = 4096  # runs whose last health answer is remembered

log = logging.getLogger(__name__)


def run_module(run: DagsterRun) -> str | None:
    """The module of the run's code location (`-m`/package pointers), None for file pointers."""
    origin = run.job_code_origin
    pointer = origin.repository_origin.code_pointer if origin is not None else None
    return getattr(pointer, "module", None)


def run_image(run: DagsterRun) -> str | None:
    origin = run.job_code_origin
    image = origin.repository_origin.container_image if origin is not None else None
    return image or run.tags.get("dagster/image") or None


class WarmWorkerRunLauncher(RunLauncher, ConfigurableClass):
    """Launches fast-path runs on the warm worker and all other runs with the fallback launcher."""

    def __init__(
        self,
        worker_address: str | None = None,
        fast_path_tag: str = FAST_PATH_TAG,
        fast_path_value: str = FAST_PATH_VALUE,
        connect_timeout_seconds: float = 0.5,
        request_timeout_seconds: float = 5.0,
        token: str | None = None,
        fallback: Mapping[str, Any] | None = None,
        unreachable_grace_seconds: float | None = None,
        inst_data: ConfigurableClassData | None = None,
    ):
        for key, value, least in (("connect_timeout_seconds", connect_timeout_seconds, 0.0),
                                  ("request_timeout_seconds", request_timeout_seconds, 0.0),
                                  ("unreachable_grace_seconds", unreachable_grace_seconds, None)):
            # Fail the instance load: a bad timeout made every fast-path launch fall back to the stock launcher.
            # (A grace of 0 is allowed: no grace. The timeouts must be > 0.)
            if value is not None and not (math.isfinite(value) and (value > least if least is not None else value >= 0)):
                raise ValueError(f"WarmWorkerRunLauncher: {key} must be a finite number of seconds "
                                 f"{'> 0' if least is not None else '>= 0'}, got {value!r}")
        self._inst_data = inst_data
        self._configured_address = worker_address
        self.fast_path_tag = fast_path_tag
        self.fast_path_value = fast_path_value
        self.connect_timeout = connect_timeout_seconds
        self.request_timeout = request_timeout_seconds
        self._token = token or None
        self._fallback_config = dict(fallback) if fallback else None
        self._fallback: RunLauncher | None = None
        self._configured_grace = unreachable_grace_seconds
        # run id -> monotonic time of the last health answer from its worker, or of the first
        # unreachable check when this process never had one (it started after the run did).
        self._health_since: OrderedDict[str, tuple[float, bool]] = OrderedDict()
        self._health_lock = threading.Lock()
        self._clock = time.monotonic
        super().__init__()

    # ------------------------------------------------------------------ configuration

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict:
        return {
            "worker_address": Field(
                StringSource, is_required=False,
                description="unix:/path or host:port of the warm worker; default <DAGSTER_HOME>/warm-worker.sock. "
                "'off' disables the fast path.",
            ),
            "fast_path_tag": Field(str, is_required=False, default_value=FAST_PATH_TAG),
            "fast_path_value": Field(str, is_required=False, default_value=FAST_PATH_VALUE),
            "connect_timeout_seconds": Field(float, is_required=False, default_value=0.5),
            "request_timeout_seconds": Field(float, is_required=False, default_value=5.0),
            "token": Field(StringSource, is_required=False, description="Shared secret; use {env: VAR}."),
            "unreachable_grace_seconds": Field(
                float, is_required=False,
                description="How long a run's warm worker may be unreachable from another host (network "
                "blip, busy pod) before its health is UNKNOWN (run monitoring then fails the run); until "
                "then it is reported RUNNING with a warning. Counted from the last answer about the run. "
                "Default: 2 x run_monitoring.poll_interval_seconds + 5.",
            ),
            "fallback": Field(
                {"module": str, "class": str, "config": Field(Permissive(), is_required=False)},
                is_required=False,
                description="The stock launcher for every other run (default DefaultRunLauncher).",
            ),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data, **config_value)

    def register_instance(self, instance) -> None:
        super().register_instance(instance)
        self.fallback.register_instance(instance)

    @property
    def fallback(self) -> RunLauncher:
        if self._fallback is None:
            if self._fallback_config:
                import yaml

                data = ConfigurableClassData(
                    self._fallback_config["module"],
                    self._fallback_config["class"],
                    yaml.safe_dump(dict(self._fallback_config.get("config") or {})),
                )
                self._fallback = check.inst(data.rehydrate(as_type=RunLauncher), RunLauncher)
            else:
                self._fallback = DefaultRunLauncher()
        return self._fallback

    @property
    def worker_address(self) -> WorkerAddress | None:
        """Where to launch; None when the fast path is off or no address can be derived."""
        text = self._configured_address
        if text is not None and text.strip().lower() in ("", "off", "none", "disabled"):
            return None
        if text is None:
            root = getattr(self._instance, "root_directory", None) if self.has_instance else None
            if not root:
                return None
            text = "unix:" + default_socket_path(root)
        return WorkerAddress.parse(text)

    @property
    def unreachable_grace_seconds(self) -> float:
        """The configured grace, else 2 x the instance's run-monitoring poll interval + 5 s."""
        if self._configured_grace is not None:
            return float(self._configured_grace)
        if self.has_instance:
            return 2.0 * float(self._instance.run_monitoring_poll_interval_seconds) + _GRACE_MARGIN_SECONDS
        return _GRACE_FALLBACK_SECONDS

    def is_fast_path(self, run: DagsterRun) -> bool:
        return is_fast_path(run.tags, self.fast_path_tag, self.fast_path_value)

    def _call(self, address: WorkerAddress, request: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        return call(address, request, connect_timeout=self.connect_timeout,
                    timeout=timeout or self.request_timeout, token=self._token)

    # ------------------------------------------------------------------ launching

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if not self.is_fast_path(run):
            self.fallback.launch_run(context)
            return
        try:
            placement = self._launch_on_worker(run)
        except WorkerUnavailable as exc:
            if exc.sent and not exc.refused:
                # The worker got the request but its answer was lost: it may have forked the run.
                # Launching it again would run the saga twice. Ask the worker first (it knows its
                # children by run id, and it does not fork a launch whose caller stopped waiting);
                # if it cannot say, see whether the run started.
                placement = self._forked_there(run)
                if placement is None and self._started_anyway(run):
                    placement = {"address": str(self.worker_address), "host": None, "pid": None, "ticks": None}
                if placement is not None:
                    self._instance.add_run_tags(run.run_id, {WARM_WORKER_TAG: json.dumps(placement, sort_keys=True)})
                    self._instance.report_engine_event(
                        f"Fast path: no answer from the warm worker ({exc}), but the run started there.", run,
                        cls=type(self))
                    return
            self._fall_back(context, exc)
            return
        except Exception as exc:  # a bad answer or a bad address must never cost the run its launch
            self._fall_back(context, exc)
            return
        # The tag is the record (shown in the UI); no engine event here: the run's own process is
        # writing its first events right now, and "Started process for run (pid)" names it anyway.
        self._instance.add_run_tags(run.run_id, {WARM_WORKER_TAG: json.dumps(placement, sort_keys=True)})

    def _fall_back(self, context: LaunchRunContext, why: Exception) -> None:
        run = context.dagster_run
        self._instance.report_engine_event(
            f"Fast path: the warm worker did not take this run ({why}); launching it with "
            f"{type(self.fallback).__name__} instead.",
            run,
            cls=type(self),
        )
        self.fallback.launch_run(context)

    def _forked_there(self, run: DagsterRun) -> dict[str, Any] | None:
        """The run's placement if the worker says it forked it; None if it does not know it or cannot say."""
        address = self.worker_address
        if address is None:
            return None
        try:  # short: a worker that is hung already cost request_timeout_seconds
            reply = self._call(address, {"op": "health", "run_id": run.run_id}, timeout=min(self.request_timeout, 1.0))
        except WorkerUnavailable:
            return None
        if reply.get("known") is not True or not reply.get("pid"):
            return None
        return {"address": str(reply.get("address") or address), "host": reply.get("host"),
                "pid": int(reply["pid"]), "ticks": reply.get("ticks"), "worker_pid": reply.get("worker_pid")}

    def _started_anyway(self, run: DagsterRun, wait_seconds: float = 3.0) -> bool:
        """Did the run leave STARTING (its process wrote RUN_START) within `wait_seconds`?"""
        deadline = time.monotonic() + wait_seconds
        while True:
            current = self._instance.get_run_by_id(run.run_id)
            if current is not None and current.status not in (DagsterRunStatus.STARTING, DagsterRunStatus.NOT_STARTED):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _launch_on_worker(self, run: DagsterRun) -> dict[str, Any]:
        from dagster._grpc.types import ExecuteRunArgs

        address = self.worker_address
        if address is None:
            raise WorkerUnavailable("the fast path is off (no worker address)")
        if run.job_code_origin is None:
            raise WorkerUnavailable("the run has no code origin")
        args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=self._instance.get_ref())
        began = time.perf_counter()
        reply = self._call(address, {
            "op": "launch",
            "run_id": run.run_id,
            "args": serialize_value(args),
            "module": run_module(run),
            "image": run_image(run),
        })
        return {
            "address": str(reply.get("address") or address),
            "host": reply.get("host"),
            "pid": int(reply["pid"]),
            "ticks": reply.get("ticks"),
            "worker_pid": reply.get("worker_pid"),
            "launch_ms": round((time.perf_counter() - began) * 1000, 1),
        }

    @staticmethod
    def placement(run: DagsterRun) -> dict[str, Any] | None:
        """Where the warm worker runs this run (its `arb/warm_worker` tag), None if it did not take it."""
        raw = run.tags.get(WARM_WORKER_TAG)
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) and value.get("address") else None

    def _ask_worker(self, placement: dict[str, Any], request: dict[str, Any], attempts: int = 1) -> dict[str, Any]:
        address = WorkerAddress.parse(placement["address"])
        last: WorkerUnavailable | None = None
        for attempt in range(attempts):
            try:
                return self._call(address, {**request, "pid": placement["pid"], "ticks": placement.get("ticks"),
                                            "host": placement.get("host")})
            except WorkerUnavailable as exc:
                last = exc
                if exc.refused:
                    break
                if attempt + 1 < attempts:
                    time.sleep(0.2 * (attempt + 1))
        assert last is not None
        raise last

    @staticmethod
    def _same_host(placement: dict[str, Any]) -> bool:
        return placement.get("host") == host_identity()

    # ------------------------------------------------------------------ health (run monitoring)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        placement = self.placement(run)
        if placement is None:
            if self.fallback.supports_check_run_worker_health:
                return self.fallback.check_run_worker_health(run)
            # What stock monitoring does for a launcher without health checks: nothing but timeouts.
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"launched by {type(self.fallback).__name__}")
        worker_id = f"{placement.get('host')}:{placement['pid']}"
        try:
            reply = self._ask_worker(placement, {"op": "health", "run_id": run.run_id}, attempts=_HEALTH_ATTEMPTS)
        except WorkerUnavailable as exc:
            if placement.get("pid") and self._same_host(placement):
                alive = is_alive(int(placement["pid"]), placement.get("ticks"))
                status = WorkerStatus.RUNNING if alive else WorkerStatus.FAILED
                return CheckRunHealthResult(
                    status, f"warm worker unreachable ({exc}); run worker pid {placement['pid']} "
                    f"{'alive' if alive else 'gone'}", run_worker_id=worker_id)
            if exc.refused:  # it answered, and said no (token, protocol): not a blip to wait out
                self._forget_health(run.run_id)
                return CheckRunHealthResult(WorkerStatus.UNKNOWN, f"warm worker refused the health check: {exc}",
                                            run_worker_id=worker_id)
            return self._unreachable(run, exc, worker_id)
        self._answered(run.run_id)
        status = WorkerStatus(reply.get("status", "UNKNOWN"))
        message = reply.get("msg")
        if status == WorkerStatus.SUCCESS and not run.is_finished:
            # The process is gone but never wrote the end of the run.
            status, message = WorkerStatus.FAILED, f"{message}, without finishing the run"
        if status in (WorkerStatus.SUCCESS, WorkerStatus.FAILED):
            self._forget_health(run.run_id)
        return CheckRunHealthResult(status, message, run_worker_id=worker_id)

    def _answered(self, run_id: str) -> None:
        with self._health_lock:
            self._health_since[run_id] = (self._clock(), True)
            self._health_since.move_to_end(run_id)
            while len(self._health_since) > _HEALTH_MEMORY:
                self._health_since.popitem(last=False)

    def _forget_health(self, run_id: str) -> None:
        with self._health_lock:
            self._health_since.pop(run_id, None)

    def _unreachable(self, run: DagsterRun, exc: WorkerUnavailable, worker_id: str) -> CheckRunHealthResult:
        """RUNNING (with a warning) while within the grace since the last answer about the run, then UNKNOWN.

        Dagster's run monitoring fails a STARTED run on anything but RUNNING/SUCCESS, after which
        the saga recovery sensor may relaunch the stop-loss next to the one still running: a short
        network blip between the daemon and the worker pod must not do that. A worker that is
        really gone (its pod, with its children) is reported UNKNOWN once the grace is over.
        """
        now = self._clock()
        grace = self.unreachable_grace_seconds
        with self._health_lock:
            since, answered = self._health_since.get(run.run_id, (now, False))
            self._health_since.setdefault(run.run_id, (since, answered))
            while len(self._health_since) > _HEALTH_MEMORY:
                self._health_since.popitem(last=False)
        elapsed = now - since
        reference = "the last answer about this run" if answered else "the first failed check in this process"
        if elapsed < grace:  # 0: no grace
            message = (f"warm worker unreachable ({exc}) for {elapsed:.1f} s since {reference}; "
                       f"assuming the run is still running for up to {grace:.0f} s (unreachable_grace_seconds)")
            log.warning("run %s: %s", run.run_id, message)
            self._warn(run, f"Fast path health check: {message}.")
            return CheckRunHealthResult(WorkerStatus.RUNNING, message, run_worker_id=worker_id)
        message = (f"warm worker unreachable: {exc}; no answer for {elapsed:.1f} s since {reference} "
                   f"(unreachable_grace_seconds {grace:.0f})")
        log.warning("run %s: %s", run.run_id, message)
        return CheckRunHealthResult(WorkerStatus.UNKNOWN, message, transient=True, run_worker_id=worker_id)

    def _warn(self, run: DagsterRun, message: str) -> None:
        """An engine event at WARNING level in the run's event log (report_engine_event is INFO)."""
        from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData

        try:
            event = DagsterEvent(event_type_value=DagsterEventType.ENGINE_EVENT.value, job_name=run.job_name,
                                 message=f"[{type(self).__name__}] {message}", event_specific_data=EngineEventData({}))
            self._instance.report_dagster_event(event, run_id=run.run_id, log_level=logging.WARNING)
        except Exception:  # the event log is best effort here; the answer to monitoring is what matters
            log.exception("could not write the health warning to run %s", run.run_id)

    def get_run_worker_debug_info(self, run: DagsterRun, include_container_logs: bool | None = True) -> str | None:
        placement = self.placement(run)
        if placement is None:
            return self.fallback.get_run_worker_debug_info(run, include_container_logs)
        try:
            reply = self._ask_worker(placement, {"op": "health", "run_id": run.run_id})
            state = f"{reply.get('status')}: {reply.get('msg')}"
        except WorkerUnavailable as exc:
            state = f"worker unreachable: {exc}"
        return f"warm worker {placement['address']} on {placement.get('host')}, run worker pid {placement['pid']}: {state}"

    # ------------------------------------------------------------------ terminate

    def terminate(self, run_id: str) -> bool:
        check.str_param(run_id, "run_id")
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        placement = self.placement(run)
        if placement is None:
            return self.fallback.terminate(run_id)
        self._instance.report_run_canceling(run)
        try:
            reply = self._ask_worker(placement, {"op": "terminate", "run_id": run_id}, attempts=2)
            signalled, message = bool(reply.get("signalled")), str(reply.get("msg") or "")
        except WorkerUnavailable as exc:
            pid = int(placement.get("pid") or 0)
            if pid and self._same_host(placement) and is_alive(pid, placement.get("ticks")):
                os.kill(pid, signal.SIGTERM)
                signalled, message = True, f"warm worker unreachable ({exc}); SIGTERM sent to pid {pid} directly"
            else:
                self._instance.report_engine_event(
                    f"Could not reach the warm worker to terminate the run: {exc}", run, cls=type(self))
                return False
        if signalled:
            self._instance.report_engine_event(f"Terminate: {message}", run, cls=type(self))
            return True
        # Nothing left to signal: the run worker is already gone, so the run cannot end by itself.
        self._instance.report_run_canceled(run, f"Terminate: {message}")
        return True

    # ------------------------------------------------------------------ the rest is the fallback's

    @property
    def supports_resume_run(self) -> bool:
        return self.fallback.supports_resume_run

    def resume_run(self, context) -> None:
        self.fallback.resume_run(context)

    def join(self, timeout: int = 30) -> None:
        self.fallback.join(timeout)

    def dispose(self) -> None:
        self.fallback.dispose()
