"""`arb-orchestration dev`: the whole platform on embedded defaults, with the Dagster UI.

Starts the local world (exchange and Wise simulators, SMTP sink, and an embedded
Kafka-protocol broker unless KAFKA_BOOTSTRAP_SERVERS is set), creates the topics,
starts the demo event generator, then runs `dagster dev` on a project-local
SQLite instance (.dagster_home/) with every definition loaded and sensors and
schedules running. Ctrl-C stops everything.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import webbrowser
from pathlib import Path

from arb_orchestration.commands import _flags
from arb_orchestration.commands.world import add_world_arguments, environment_line, print_world, world_from_args

LOCAL_INSTANCE_YAML = Path(__file__).resolve().parent.parent / "sim" / "dagster_local.yaml"
# The demo generator's pace (--events-per-second). At its default mix this asks for a rebalance
# every ~20 s; the rebalance saga runs one at a time, so the queue stays short.
DEMO_EVENTS_PER_SECOND = 2.0


def install_stop_signals() -> dict:
    """Make Ctrl-C and SIGTERM stop everything, even when started with SIGINT ignored.

    A shell starts background jobs (`make dev &`, `nohup`, a container entrypoint script) with
    SIGINT ignored, and an ignored signal stays ignored across exec: `dagster dev` then ignored
    the SIGINT it is stopped with (and, mapping SIGTERM to its SIGINT handler, SIGTERM too), so
    nothing stopped. A handled SIGINT is reset to the default at exec, so the children are
    interruptible again. SIGTERM raises KeyboardInterrupt, also while starting up, so the
    `finally` below stops the children instead of leaving them behind.
    Returns the previous handlers (for `restore_signals`).
    """
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    if previous[signal.SIGINT] in (signal.SIG_IGN, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def _terminate(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    return previous


def restore_signals(previous: dict) -> None:
    for sig, handler in previous.items():
        if handler is not None:
            signal.signal(sig, handler)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    return True


def fail_orphaned_runs(dagster_home: Path, *, is_alive=_pid_alive) -> list[str]:
    """Mark FAILURE every STARTED run of this instance none of whose processes is alive; their ids.

    A run's worker lives in `dagster dev`'s code server (or the warm worker): when the previous
    `dev` died without stopping it (kill -9, OOM, a crash, a closed laptop lid), its runs stay
    STARTED for good. The stock DefaultRunLauncher has no run-worker health check, so run
    monitoring does not notice them and the new code server does not know them: a rebalance left
    STARTED held the one-rebalance-at-a-time limit, so no rebalance ran for up to the 5 h of its
    max_runtime, and the saga recovery sensors (which act on FAILURE) never looked at it. Marked
    failed, the recovery sensors take over as after any crash. A run with a live process (a
    `dagster job execute` in another shell) or without any recorded pid is left alone.
    """
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    home = str(Path(dagster_home).resolve())
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = home  # dagster_local.yaml places its databases at {env: DAGSTER_HOME}
    failed = []
    try:
        with DagsterInstance.from_config(home) as instance:
            for run in instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED])):
                pids = {
                    entry.dagster_event.pid
                    for entry in instance.all_logs(run.run_id)
                    if entry.dagster_event is not None and entry.dagster_event.pid
                }
                if not pids or any(is_alive(pid) for pid in pids):
                    continue
                instance.report_run_failed(
                    run,
                    message="arb-orchestration dev: this run was left STARTED by an earlier session and none of "
                    f"its processes (pid {', '.join(map(str, sorted(pids)))}) is alive: marked failed so the "
                    "saga recovery sensors can act on it",
                )
                failed.append(run.run_id)
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous
    return failed


def prepare_dagster_home(path: Path) -> Path:
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(LOCAL_INSTANCE_YAML, path / "dagster.yaml")
    return path


def write_env_file(path: Path, values: dict[str, str]) -> Path:
    """The world's environment (including this session's generated local secrets) for other shells.

    Readable by the owner only; it lives in the git-ignored .dagster_home/ and is
    rewritten at every start, since the simulators' keys are new each time.
    """
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        for key, value in values.items():
            handle.write(f"{key}={value}\n")
    return path


def wait_for_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def main(argv: list[str]) -> int:
    parser = _flags.CommandParser(prog="arb-orchestration dev", description=__doc__)
    add_world_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="Dagster UI host (default 127.0.0.1)")
    parser.add_argument("--port", type=_flags.fixed_port, default=3000, help="Dagster UI port (default 3000)")
    parser.add_argument("--dagster-home", type=_flags.directory, default=Path(".dagster_home"),
                        help="project-local Dagster instance directory (default .dagster_home)")
    parser.add_argument("--no-generator", action="store_true", help="do not publish demo traffic")
    parser.add_argument("--events-per-second", type=_flags.positive_number, default=DEMO_EVENTS_PER_SECOND,
                        help=f"demo traffic, events per second (default {DEMO_EVENTS_PER_SECOND:g}; "
                             "--no-generator for none)")
    parser.add_argument("--no-browser", action="store_true", help="do not try to open a browser")
    args = parser.parse_args(argv)

    previous_signals = install_stop_signals()
    dagster_home = prepare_dagster_home(args.dagster_home)
    world = world_from_args(args, dagster_home / "mail")
    generator = None
    dagster = None
    warm_worker = None
    try:
        try:
            orphans = fail_orphaned_runs(dagster_home)
        except Exception as exc:  # never a reason not to start; the UI still shows such runs
            print(f"arb-orchestration dev: could not check for runs left STARTED: {exc}", file=sys.stderr)
        else:
            if orphans:
                print(f"marked {len(orphans)} run(s) left STARTED by an earlier session as failed (no process "
                      f"alive; the saga recovery sensors take over): {', '.join(orphans)}", flush=True)
        world.start()
        env = {**os.environ, **world.env(), "DAGSTER_HOME": str(dagster_home)}
        os.environ.update(world.env())
        env_file = write_env_file(dagster_home / "world.env", {**world.env(), "DAGSTER_HOME": str(dagster_home)})

        from arb_orchestration.commands.topics import create_all_topics

        create_all_topics(env["KAFKA_BOOTSTRAP_SERVERS"], partitions=4, replication=1, verbose=True)
        if not args.no_generator:
            from arb_orchestration.sim.event_generator import EventGenerator

            generator = EventGenerator(
                bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
                signing_key=env["EVENT_SIGNING_KEY"],
                events_per_second=args.events_per_second,
                seed=args.seed,
            )
            generator.start()

        # The emergency fast path's warm worker (docs/emergency-path.md); it warms up while Dagster
        # starts, and until it answers, stop-loss runs take the stock launch path.
        from arb_orchestration.launcher.local import start_worker

        warm_worker = start_worker(env, dagster_home=dagster_home)
        dagster = subprocess.Popen(
            [
                sys.executable, "-m", "dagster", "dev",
                "-m", "arb_orchestration.definitions",
                "-h", args.host, "-p", str(args.port),
            ],
            env=env,
        )
        ui = f"http://{args.host}:{args.port}"
        if not wait_for_http(f"{ui}/server_info", timeout=120, proc=dagster):
            print("arb-orchestration dev: the Dagster UI did not come up; see the output above", file=sys.stderr)
            return 1
        print("\narb-orchestration is running on embedded defaults:")
        print(f"  Dagster UI          {ui}")
        print_world(world)
        print(f"  Dagster instance    {dagster_home} (SQLite)")
        print(environment_line(env_file))
        print("Ctrl-C to stop.\n", flush=True)
        if not args.no_browser:
            try:
                webbrowser.open(ui)
            except Exception:
                pass
        return dagster.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
        if dagster is not None and dagster.poll() is None:
            dagster.send_signal(signal.SIGINT)
            try:
                dagster.wait(timeout=20)
            except subprocess.TimeoutExpired:
                dagster.kill()
        if warm_worker is not None:
            from arb_orchestration.launcher.local import stop_worker

            stop_worker(warm_worker)
        if generator is not None:
            generator.stop()
        world.stop()
        restore_signals(previous_signals)
