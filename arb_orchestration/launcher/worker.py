"""The warm worker: a standing, single-threaded, pre-imported process that forks one child per run.

At start it imports Dagster and the code location(s) it serves, resolves their
definitions, builds an execution plan for every job that needs no config, runs
a throwaway job in process and touches the instance's storage (then closes it),
so a forked child starts with everything a run worker spends its first second
on already in memory. Then it serves the protocol of `launcher.protocol`:

* `launch` — fork; the child resets the signal dispositions it inherited,
  drops the worker's sockets and runs Dagster's own run-worker entry point
  (`dagster api execute_run <ExecuteRunArgs>`) in process, then `os._exit`s.
  Refused (and the launcher falls back to the stock path) when the code
  changed since the import, the run belongs to a code location this worker did
  not import, the image differs, or a thread is alive (fork is only safe with
  none: no thread, no gRPC channel, no open database connection is held here).
  The request is not trusted beyond naming a run id: the worker loads that run
  from its OWN instance and forks only a stored run that is not started yet,
  carries the fast-path tag, is one of the jobs this worker serves (default:
  the jobs of its code locations whose definition carries the fast-path tag,
  i.e. the stop-loss) and whose stored code origin is a module it imported.
  The request's `instance_ref` must be this worker's own instance: the child
  always runs with the instance the worker opened, never with one built from
  the request (which would import whatever class the client names and read
  runs from the client's storage, with the trading secrets in its environment).
* `health` — RUNNING / SUCCESS / FAILED of a run's child, from the exit status
  it reaped, or, for a child it does not remember (it restarted since), from
  the (pid, start time) pair recorded in the run's tags.
* `terminate` — SIGTERM to the child; Dagster inside it turns that into a
  clean cancellation.

Code changes: the worker fingerprints the source files of the packages it
serves; when they change (`dagster dev` reloads, a deploy) it refuses new runs
and re-executes itself as soon as it is idle, picking up the new code. Its
in-memory table of children is lost then, which is why health falls back to
(pid, start time). On SIGTERM it refuses new runs but keeps answering `health`
and `terminate` for up to `drain_seconds`, until its running children are done
(Kubernetes: a rollout does not cut a stop-loss short, and run monitoring keeps
seeing it RUNNING instead of failing it), and exits; children it leaves behind
finish their runs on their own (on Kubernetes they end with the container).

A launch request the launcher stopped waiting for (this worker was hung or
busy past the launcher's request timeout, so the launcher falls back) is not
forked: the run would get a second run worker.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import importlib
import json
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from arb_orchestration.launcher.process import host_identity, is_alive, start_ticks
from arb_orchestration.launcher.tags import FAST_PATH_TAG, FAST_PATH_VALUE, WARM_CHILD_ENV, is_fast_path
from arb_orchestration.launcher.protocol import (
    PROTOCOL_VERSION,
    ProtocolError,
    WorkerAddress,
    peer_uid,
    recv_frame,
    send_frame,
    token_matches,
    uid_trusted,
)

log = logging.getLogger("arb_orchestration.launcher.worker")

_KEEP_FINISHED = 2000  # exit statuses remembered for health checks
_UNKNOWN_EXIT = 255  # a child we cannot wait for any more ended: how is not known
_INHERITED_ENV = "ARB_WARM_WORKER_INHERITED_CHILDREN"
PROFILE_ENV = "ARB_WARM_WORKER_PROFILE_DIR"  # set: each child writes a cProfile of its run there


@dataclass
class Child:
    """One forked run worker."""

    run_id: str
    pid: int
    ticks: int | None
    launched_at: float
    exit_code: int | None = None  # >= 0 exit code, < 0 killed by that signal
    exited_at: float | None = None

    def describe(self) -> str:
        if self.exit_code is None:
            return f"run worker pid {self.pid} running"
        if self.exit_code == _UNKNOWN_EXIT:
            return f"run worker pid {self.pid} ended (exit status unknown)"
        if self.exit_code < 0:
            name = signal.Signals(-self.exit_code).name if -self.exit_code in signal.valid_signals() else "?"
            return f"run worker pid {self.pid} killed by signal {-self.exit_code} ({name})"
        return f"run worker pid {self.pid} exited with code {self.exit_code}"


@dataclass
class WorkerOptions:
    """How a `WarmWorker` is started (the command line of `python -m arb_orchestration.launcher`)."""

    address: WorkerAddress
    modules: list[str]
    advertise: str | None = None  # the address the launcher should use for this very process
    token: str | None = None
    image: str | None = None  # refuse runs whose image differs (Kubernetes)
    warm: bool = True
    drain_seconds: float = 0.0
    stale_check_seconds: float = 2.0
    restart_when_stale: bool = True
    watch_paths: list[Path] = field(default_factory=list)  # default: the packages of `modules`
    warm_imports: list[str] = field(default_factory=list)  # lazily imported by runs (e.g. ccxt): import now
    # The jobs this worker may run (in any of `modules`); empty: the fast-path jobs of `modules`,
    # i.e. those whose definition tags carry arb/fast_path=true (the stop-loss saga).
    jobs: list[str] = field(default_factory=list)


def _inherited_children() -> list[Child]:
    raw = os.environ.pop(_INHERITED_ENV, None)
    if not raw:
        return []
    try:
        return [Child(**item) for item in json.loads(raw)]
    except (TypeError, ValueError):
        log.warning("ignoring unreadable %s", _INHERITED_ENV)
        return []


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 1


def source_fingerprint(paths: list[Path]) -> str:
    """Hash of (path, size, mtime) of every .py file under `paths`: changes when the code does."""
    digest = hashlib.sha256()
    for root in paths:
        if root.is_file():
            files = [root]
        else:
            files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
        for path in files:
            try:
                stat = path.stat()
            except OSError:
                continue
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def package_paths(modules: list[str]) -> list[Path]:
    """Directories (or files) of the top-level packages of `modules`, found without importing them."""
    import importlib.util

    paths: list[Path] = []
    for module in modules:
        spec = importlib.util.find_spec(module.split(".")[0])
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        paths.append(origin.parent if origin.name == "__init__.py" else origin)
    return sorted(set(paths))


class WarmWorker:
    """See the module docstring. `serve_forever()` runs it; `warm_up()` is separate for tests."""

    def __init__(self, options: WorkerOptions):
        self.options = options
        self.address = options.address
        self.advertise = options.advertise or str(options.address)
        self.host = host_identity()
        self.started_at = time.time()
        self.children: OrderedDict[str, Child] = OrderedDict()
        # Children forked by this process before it re-executed itself are still its children.
        for child in _inherited_children():
            self.children[child.run_id] = child
        self.watch_paths = options.watch_paths or package_paths(options.modules)
        self.fingerprint = source_fingerprint(self.watch_paths)
        self.stale_reason: str | None = None
        self.warm_timings: dict[str, float] = {}
        # The instance of this DAGSTER_HOME, built once; a child whose run names the same instance
        # uses it instead of building its own (no connection is open between calls: NullPool).
        self.instance = None
        self.instance_key: str | None = None
        # module -> names of the jobs of that code location this worker runs (see WorkerOptions.jobs);
        # filled by the warm-up, or on the first launch when there was none.
        self.served_jobs: dict[str, frozenset[str]] | None = None
        self.launches = 0
        self._listener: socket.socket | None = None
        self._stopping = False
        self._last_stale_check = time.monotonic()

    # ------------------------------------------------------------------ warm-up

    def warm_up(self) -> dict[str, float]:
        """Import and exercise everything a run worker needs, leaving no thread or connection behind."""
        timings = self.warm_timings

        def timed(name: str, fn) -> Any:
            began = time.perf_counter()
            try:
                return fn()
            finally:
                timings[name] = round(time.perf_counter() - began, 3)

        timed("import_dagster", _import_run_worker_machinery)
        served: dict[str, frozenset[str]] = {}
        for module in self.options.modules:
            fast = timed(f"load:{module}", lambda m=module: _load_code_location(m))
            served[module] = frozenset(self.options.jobs or fast)
        self.served_jobs = served
        if self.options.warm:
            timed("throwaway_run", _throwaway_run)
            timed("http_client", _warm_http_client)
        for name in self.options.warm_imports:
            timed(f"import:{name}", lambda n=name: importlib.import_module(n))
        self.instance, self.instance_key = timed("instance", _open_instance)
        gc.collect()
        gc.freeze()  # children never collect the warm heap, so they do not copy it page by page
        threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        if threads:
            log.warning("warm-up left threads alive (%s): launches are refused until they end", threads)
        return timings

    # ------------------------------------------------------------------ serving

    def check_address_free(self) -> None:
        if self.address.kind == "unix" and os.path.exists(self.address.path):
            if _unix_socket_answers(self.address.path):
                raise RuntimeError(f"another warm worker is already listening on {self.address}")

    def bind(self) -> None:
        address = self.address
        if address.kind == "unix":
            path = Path(address.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.check_address_free()
            if path.exists():
                path.unlink()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(path))
            os.chmod(path, 0o600)  # only the user running Dagster may launch runs through it
        else:
            if not self.options.token:
                # Anyone who can reach the port could make this process run a job with the
                # credentials it holds: over TCP a shared token is mandatory.
                raise RuntimeError(f"refusing to listen on {address} without a token "
                                   "(set ARB_WARM_WORKER_TOKEN, or --token-env)")
            family = socket.AF_INET6 if ":" in (address.host or "") else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address.host, address.port))
            if address.port == 0:
                host, port = sock.getsockname()[:2]
                self.address = WorkerAddress("tcp", host=host, port=port)
                if not self.options.advertise:
                    self.advertise = str(self.address)
        sock.listen(64)
        sock.setblocking(False)
        self._listener = sock

    def serve_forever(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit code. Re-executes itself when the code changed."""
        if self._listener is None:
            self.bind()
        self._install_signal_handlers()
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ)
        log.info("warm worker %s listening on %s (advertised %s), modules %s, warm-up %s",
                 os.getpid(), self.address, self.advertise, self.options.modules, self.warm_timings)
        drain_until: float | None = None
        try:
            while True:
                if self._stopping:
                    # Draining: keep answering health and terminate for the runs still running
                    # (run monitoring would otherwise fail them while they run, and the saga
                    # recovery sensor relaunch them); launches are refused ("shutting down").
                    if drain_until is None:
                        drain_until = time.monotonic() + self.options.drain_seconds
                    if self._drained(drain_until):
                        break
                for _key, _mask in selector.select(timeout=0.25):
                    self._accept_one()
                self.reap()
                if self._stopping:
                    continue
                if time.monotonic() - self._last_stale_check >= self.options.stale_check_seconds:
                    self.check_stale()
                if self.stale_reason and self.options.restart_when_stale:
                    selector.close()
                    self._reexec()
        finally:
            selector.close()
            self._close_listener()
        return 0

    def _accept_one(self) -> None:
        try:
            conn, _peer = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        with conn:
            uid = peer_uid(conn)
            if not uid_trusted(uid):  # the socket is 0600, but only after bind(): never trust a stranger
                log.warning("refused a connection from uid %s (this worker runs as uid %s)", uid, os.getuid())
                return
            conn.setblocking(True)
            conn.settimeout(5.0)  # a stuck client must not hold the (single-threaded) worker
            try:
                request = recv_frame(conn)
            except (OSError, ProtocolError) as exc:
                log.warning("bad request: %s", exc)
                return
            reply = self.handle(request, conn)
            try:
                send_frame(conn, reply)
            except OSError as exc:
                log.warning("could not answer %s: %s", request.get("op"), exc)

    # ------------------------------------------------------------------ requests

    def handle(self, request: dict[str, Any], conn: socket.socket | None = None) -> dict[str, Any]:
        if request.get("v") != PROTOCOL_VERSION:
            return {"ok": False, "error": f"protocol version {request.get('v')!r} not supported (want {PROTOCOL_VERSION})"}
        if not token_matches(self.options.token, request.get("token")):
            return {"ok": False, "error": "bad or missing token"}
        op = request.get("op")
        try:
            if op == "hello":
                return {"ok": True, **self.info()}
            if op == "launch":
                return self._launch(request, conn)
            if op == "health":
                return self._health(request)
            if op == "terminate":
                return self._terminate(request)
        except Exception as exc:  # a bad request must not take the worker down
            log.exception("request %s failed", op)
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def info(self) -> dict[str, Any]:
        self.reap()
        return {
            "worker_pid": os.getpid(),
            "host": self.host,
            "address": self.advertise,
            "modules": list(self.options.modules),
            "image": self.options.image,
            "fingerprint": self.fingerprint,
            "stale": self.stale_reason,
            "started_at": self.started_at,
            "warm_up": self.warm_timings,
            "launches": self.launches,
            "running": sorted(c.run_id for c in self.children.values() if c.exit_code is None),
            "jobs": {m: sorted(j) for m, j in (self.served_jobs or {}).items()},
        }

    def jobs_served(self) -> dict[str, frozenset[str]]:
        """module -> the job names this worker runs; resolved once (the warm-up does it already)."""
        if self.served_jobs is None:
            self.served_jobs = {
                module: frozenset(self.options.jobs or _load_code_location(module, plans=False))
                for module in self.options.modules
            }
        return self.served_jobs

    def check_run(self, run_id: str, payload: str) -> tuple[str | None, bool]:
        """(why this run must not be forked here or None, set_exit_code_on_failure).

        Only the run id of the request is used: the run itself is read from this worker's own
        instance, and the request's instance_ref must name that instance.
        """
        from dagster._core.storage.dagster_run import DagsterRunStatus
        from dagster._grpc.types import ExecuteRunArgs
        from dagster._serdes import deserialize_value, serialize_value

        if self.instance is None or self.instance_key is None:
            return "this worker has no instance of its own (DAGSTER_HOME unset): it cannot check the run", False
        try:
            args = deserialize_value(payload, ExecuteRunArgs)
        except Exception as exc:
            return f"launch args are not ExecuteRunArgs ({type(exc).__name__})", False
        if args.run_id != run_id:
            return f"launch args name run {args.run_id!r}, the request {run_id!r}", False
        if args.instance_ref is None or serialize_value(args.instance_ref) != self.instance_key:
            # The child would have to build that instance: import the storage classes the request
            # names and read the run from storage this worker does not know. Never.
            return ("the run's instance (instance_ref) is not this worker's instance: it only runs runs of its "
                    "own DAGSTER_HOME"), False
        run = self.instance.get_run_by_id(run_id)
        if run is None:
            return f"run {run_id} is not in this worker's instance", False
        if run.status not in (DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING):
            return f"run {run_id} is {run.status.value}, not waiting to start", False
        if not is_fast_path(run.tags, FAST_PATH_TAG, FAST_PATH_VALUE):
            return f"run {run_id} is not tagged {FAST_PATH_TAG}={FAST_PATH_VALUE}", False
        origin = run.job_code_origin
        pointer = origin.repository_origin.code_pointer if origin is not None else None
        module = getattr(pointer, "module", None)
        served = self.jobs_served()
        if module not in served:
            return (f"the stored run's code location module {module!r} is not one this worker imported "
                    f"({self.options.modules})"), False
        if run.job_name not in served[module]:
            return f"job {run.job_name!r} is not one this worker runs ({sorted(served[module])})", False
        image = (origin.repository_origin.container_image if origin is not None else None) or run.tags.get(
            "dagster/image")
        if image and self.options.image and image != self.options.image:
            return f"run image {image} differs from the worker's {self.options.image}", False
        return None, bool(args.set_exit_code_on_failure)

    def refusal(self, request: dict[str, Any]) -> str | None:
        """Why this worker must not run this request (None: it may)."""
        self.check_stale()
        if self.stale_reason:
            return f"stale: {self.stale_reason}"
        if self._stopping:
            return "shutting down"
        module = request.get("module")
        if module not in self.options.modules:
            return f"code location module {module!r} is not one this worker imported ({self.options.modules})"
        image = request.get("image")
        if image and self.options.image and image != self.options.image:
            return f"run image {image} differs from the worker's {self.options.image}"
        threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        if threads:
            return f"threads alive in the worker ({', '.join(threads)}): fork would be unsafe"
        return None

    def _launch(self, request: dict[str, Any], conn: socket.socket | None) -> dict[str, Any]:
        run_id = str(request.get("run_id") or "")
        payload = request.get("args")
        if not run_id or not isinstance(payload, str):
            return {"ok": False, "error": "launch needs run_id and args"}
        existing = self.children.get(run_id)
        if existing is not None and existing.exit_code is None:
            return {"ok": False, "error": f"run {run_id} is already running here (pid {existing.pid})"}
        why = self.refusal(request)
        if why:
            return {"ok": False, "error": why}
        why, set_exit_code = self.check_run(run_id, payload)
        if why:
            log.warning("run %s refused: %s", run_id, why)
            return {"ok": False, "error": why}
        if conn is not None and _peer_gone(conn):
            # The launcher stopped waiting (this worker was hung or busy past its request timeout)
            # and hands the run to its fallback launcher: forking now would start it twice.
            log.warning("run %s: the launcher stopped waiting for this launch; not starting it here", run_id)
            return {"ok": False, "error": "the launcher stopped waiting for the answer; not started here"}
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            self._run_child(run_id, set_exit_code, conn)
        self.launches += 1
        child = Child(run_id=run_id, pid=pid, ticks=start_ticks(pid), launched_at=time.time())
        self.children[run_id] = child
        self.children.move_to_end(run_id)
        self._forget_old()
        return {"ok": True, "pid": pid, "ticks": child.ticks, "host": self.host, "address": self.advertise,
                "worker_pid": os.getpid()}

    def _run_child(self, run_id: str, set_exit_code: bool, conn: socket.socket | None) -> None:
        code = 1
        try:
            # Dispositions are inherited: the worker's handlers would swallow a terminate.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            for sock in (self._listener, conn):
                if sock is not None:
                    try:
                        sock.close()
                    except OSError:
                        pass
            import random

            random.seed()  # the worker's RNG state is shared by every child otherwise (retry jitter)
            os.environ[WARM_CHILD_ENV] = "1"
            profile_dir = os.environ.get(PROFILE_ENV)
            if profile_dir:  # diagnosis: where a run's first second goes (docs/emergency-path.md)
                import cProfile

                profiler = cProfile.Profile()
                try:
                    code = profiler.runcall(run_worker_entry_point, run_id, self.instance, set_exit_code)
                finally:
                    profiler.dump_stats(os.path.join(profile_dir, f"run-{os.getpid()}.prof"))
            else:
                code = run_worker_entry_point(run_id, self.instance, set_exit_code)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def _health(self, request: dict[str, Any]) -> dict[str, Any]:
        self.reap()
        run_id = str(request.get("run_id") or "")
        child = self.children.get(run_id)
        if child is not None:
            # `known`: this worker forked the run (the launcher asks when a launch answer was lost).
            mine = {"ok": True, "known": True, "pid": child.pid, "ticks": child.ticks, "host": self.host,
                    "address": self.advertise, "worker_pid": os.getpid()}
            if child.exit_code is None:
                if is_alive(child.pid, child.ticks):
                    return {**mine, "status": "RUNNING", "msg": child.describe()}
                self.reap()  # it ended between the reap above and the liveness check: collect how
            if child.exit_code is None:
                return {**mine, "status": "FAILED", "msg": f"run worker pid {child.pid} vanished"}
            status = "SUCCESS" if child.exit_code == 0 else "FAILED"
            return {**mine, "status": status, "msg": child.describe()}
        pid, ticks = int(request.get("pid") or 0), request.get("ticks")
        if request.get("host") and request["host"] != self.host:
            return {"ok": True, "known": False, "status": "UNKNOWN",
                    "msg": f"run launched on {request['host']}, this worker runs on {self.host}"}
        if pid and is_alive(pid, ticks):
            return {"ok": True, "known": False, "status": "RUNNING",
                    "msg": f"run worker pid {pid} alive (launched before a worker restart)"}
        return {"ok": True, "known": False, "status": "FAILED",
                "msg": f"run worker pid {pid or '?'} is gone and this worker has no record of how it ended"}

    def _terminate(self, request: dict[str, Any]) -> dict[str, Any]:
        self.reap()
        run_id = str(request.get("run_id") or "")
        child = self.children.get(run_id)
        pid, ticks = (child.pid, child.ticks) if child else (int(request.get("pid") or 0), request.get("ticks"))
        if child is not None and child.exit_code is not None:
            return {"ok": True, "signalled": False, "msg": child.describe()}
        if not pid or not is_alive(pid, ticks):
            return {"ok": True, "signalled": False, "msg": f"run worker pid {pid or '?'} is not running"}
        os.kill(pid, signal.SIGTERM)
        return {"ok": True, "signalled": True, "msg": f"SIGTERM sent to run worker pid {pid}"}

    # ------------------------------------------------------------------ children, staleness, shutdown

    def reap(self) -> None:
        """Collect the exit status of our children that ended (only ours: never waitpid(-1))."""
        for child in list(self.children.values()):
            if child.exit_code is not None:
                continue
            try:
                pid, status = os.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:  # not (or no longer) our child: only its liveness can be told
                if not is_alive(child.pid, child.ticks):
                    child.exit_code, child.exited_at = _UNKNOWN_EXIT, time.time()
                continue
            if pid == child.pid:
                child.exit_code, child.exited_at = _exit_code(status), time.time()
                log.info("run %s: %s", child.run_id, child.describe())

    def _forget_old(self) -> None:
        while len(self.children) > _KEEP_FINISHED:
            oldest_id, oldest = next(iter(self.children.items()))
            if oldest.exit_code is None:
                break
            del self.children[oldest_id]

    def check_stale(self) -> str | None:
        self._last_stale_check = time.monotonic()
        if self.stale_reason is None and self.watch_paths:
            now = source_fingerprint(self.watch_paths)
            if now != self.fingerprint:
                self.stale_reason = (f"code under {', '.join(map(str, self.watch_paths))} changed since this worker "
                                     f"imported it ({self.fingerprint} -> {now}); restarting")
                log.warning("warm worker: %s", self.stale_reason)
        return self.stale_reason

    def _reexec(self) -> None:
        self._close_listener()
        self.reap()
        running = [asdict(c) for c in self.children.values() if c.exit_code is None]
        os.environ[_INHERITED_ENV] = json.dumps(running)  # exec keeps the pid: they stay our children
        argv = [sys.executable, "-m", "arb_orchestration.launcher", *sys.argv[1:]]
        log.warning("warm worker %s re-executing to load the new code: %s", os.getpid(), " ".join(argv))
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, argv)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def stop(signum, _frame):
            self._stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def stop(self) -> None:
        self._stopping = True

    def _close_listener(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            except OSError:
                pass
            self._listener = None
            if self.address.kind == "unix":
                try:
                    os.unlink(self.address.path)
                except OSError:
                    pass

    def _drained(self, deadline: float) -> bool:
        """Stopping: may the worker exit now (no run left, or `drain_seconds` are over)?"""
        self.reap()
        running = [c for c in self.children.values() if c.exit_code is None]
        if not running:
            return True
        if time.monotonic() >= deadline:
            if self.options.drain_seconds:
                log.warning("warm worker exiting with %d run(s) still running: %s", len(running),
                            ", ".join(f"{c.run_id} (pid {c.pid})" for c in running))
            return True
        return False


# --------------------------------------------------------------------------- what the child runs


def run_worker_entry_point(run_id: str, instance, set_exit_code_on_failure: bool = False) -> int:
    """Dagster's own run worker, in this process, with the worker's instance.

    The body of `dagster api execute_run` (`_execute_run_command_body`, the function the command
    calls once it has built the instance) for a run the worker checked in its own instance
    (`WarmWorker.check_run`). Never an instance built from the request.
    """
    from dagster._cli.api import _execute_run_command_body
    from dagster._utils.interrupts import capture_interrupts

    with capture_interrupts():
        return _execute_run_command_body(
            run_id, instance, lambda _event: None, set_exit_code_on_failure=set_exit_code_on_failure,
        )


# --------------------------------------------------------------------------- warm-up steps


def _import_run_worker_machinery() -> None:
    # The run worker entry point, the execution API and the executors the project's jobs use.
    importlib.import_module("dagster._cli.api")
    importlib.import_module("dagster._core.execution.api")
    importlib.import_module("dagster._core.executor.in_process")
    importlib.import_module("dagster._core.executor.multiprocess")


def _load_code_location(module: str, plans: bool = True) -> list[str]:
    """Import the module and resolve what a run worker resolves: repository, jobs, execution plans.

    Returns the names of its fast-path jobs (definition tags carry arb/fast_path=true): the jobs
    the worker runs unless told otherwise (`--job`).
    """
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.execution.api import create_execution_plan
    from dagster._core.workspace.autodiscovery import loadable_targets_from_python_module

    fast: list[str] = []
    for target in loadable_targets_from_python_module(module, working_directory=os.getcwd()):
        recon_repo = ReconstructableRepository.for_module(module, target.attribute, os.getcwd())
        repo = recon_repo.get_definition()
        for job in repo.get_all_jobs():
            if is_fast_path({**(job.tags or {}), **(job.run_tags or {})}):
                fast.append(job.name)
            if not plans:
                continue
            try:
                # The same config machinery a run uses; jobs that require config just fail here.
                create_execution_plan(recon_repo.get_reconstructable_job(job.name), run_config={})
            except Exception:
                pass
    return fast


def _throwaway_run() -> None:
    """One in-process run on an ephemeral instance: executor, event and log machinery, imported and used."""
    from dagster import DagsterInstance, job, op

    @op
    def _warm_op(context) -> int:
        context.log.info("warming")
        return 1

    @job
    def _warm_job():
        _warm_op()

    with DagsterInstance.ephemeral() as instance:
        _warm_job.execute_in_process(instance=instance)


def _warm_http_client() -> None:
    """httpx builds its transport stack (and imports it) on a run's first client: ~30 ms, done here once."""
    try:
        import httpx
    except ImportError:
        return
    httpx.Client(verify=False).close()


def _open_instance():
    """(instance, serialized ref) of DAGSTER_HOME, its storage stack imported and queried once; else (None, None).

    Every storage Dagster ships (SQLite, PostgreSQL) uses NullPool: between calls no connection is
    open, so the instance can be inherited by forked children.
    """
    if not os.environ.get("DAGSTER_HOME"):
        return None, None
    from dagster import DagsterInstance
    from dagster._serdes import serialize_value

    instance = DagsterInstance.get()
    instance.get_run_by_id("00000000-0000-0000-0000-000000000000")
    instance.get_runs(limit=1)
    instance.all_logs("00000000-0000-0000-0000-000000000000")
    return instance, serialize_value(instance.get_ref())


def _peer_gone(conn: socket.socket) -> bool:
    """Has the client closed its end (it will not read our answer)? Never blocks."""
    timeout = conn.gettimeout()
    conn.settimeout(0)
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except (BlockingIOError, InterruptedError):
        return False  # nothing to read and not closed: the client is waiting
    except OSError:
        return True  # reset
    finally:
        conn.settimeout(timeout)


def _unix_socket_answers(path: str) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(0.5)
    try:
        sock.connect(path)
        return True
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        sock.close()


