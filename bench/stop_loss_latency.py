"""Emergency path latency: signed critical event produced -> first reduce-only order at the exchange.

Runs the platform the way `arb-orchestration dev` does, headless: the local
world (exchange and Wise simulators, SMTP sink, the embedded Kafka-protocol
broker unless --kafka-bootstrap), the Dagster daemon with its code server on a
fresh DAGSTER_HOME, and for the fast configuration the warm worker. For each
trial it resets the simulator (POST /admin/reset), waits a random 0-5 s (so
events land anywhere in the sensor daemon's 5 s loop), produces one signed
critical market shock, and reads the simulator's `received_at` of every
reduce-only order: first order and all positions flat (the last closing
order), relative to the moment just before the produce call. Then it waits for
the stop-loss run to finish and the risk mail to arrive before the next trial.

Configurations, measured in the same invocation:
  fast   arb_orchestration/sim/dagster_local.yaml as shipped: FastPathRunCoordinator
         (fast-path runs skip the queue), WarmWorkerRunLauncher + warm worker,
         consolidated SQLite event log, long-polling sensors (in_process executor).
  stock  stock Dagster: QueuedRunCoordinator (default 5 s dequeue), DefaultRunLauncher,
         default per-run SQLite event logs, sensors without long poll (still every
         5 s: their minimum interval), the multiprocess executor.
  fast-no-worker  (optional) fast yaml, no worker running: every launch falls back.
  fast-queued     (optional) fast, but Dagster's QueuedRunCoordinator (1 s dequeue): no queue bypass.
  fast-fixed-poll (optional) fast, but the sensors long-poll a fixed ARB_SENSOR_LONG_POLL_SECONDS
                  instead of until just before the daemon's next loop (loop_reserve_seconds=0).
One untimed warm-up trial precedes each configuration's trials.

  .venv/bin/python bench/stop_loss_latency.py --trials 20 [--stock-trials 10] [--kafka-bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import FAST_INSTANCE_YAML, REPO_ROOT, STOCK_INSTANCE_YAML, Platform, percentile, wait_for  # noqa: E402

EVENT = {"venue": "binance", "symbol": "BTC/USDT:USDT", "price_change_pct": -14.2, "window_seconds": 60,
         "severity": "critical"}
STOP_LOSS_JOB = "emergency_stop_loss_saga"


@dataclass
class Trial:
    config: str
    event_id: str
    first_order: float | None = None  # seconds after the produce call
    all_flat: float | None = None
    run_status: str = "?"
    stages: dict | None = None  # seconds after the produce call: run created, launch, run start, liquidate
    launched_by: str = "?"  # "warm worker" or "stock launcher"
    error: str | None = None


def configs(names: list[str]) -> dict[str, dict]:
    fast_yaml = FAST_INSTANCE_YAML.read_text()
    table = {
        "fast": dict(instance_yaml=fast_yaml, extra_env={}, code_args=["-m", "arb_orchestration.definitions"],
                     warm_worker=True),
        "fast-no-worker": dict(instance_yaml=fast_yaml, extra_env={},
                               code_args=["-m", "arb_orchestration.definitions"], warm_worker=False),
        # The queue bypass off: Dagster's QueuedRunCoordinator with the same 1 s dequeue interval.
        "fast-queued": dict(instance_yaml=fast_yaml.replace(
                                "module: arb_orchestration.launcher\n  class: FastPathRunCoordinator",
                                "module: dagster.core.run_coordinator\n  class: QueuedRunCoordinator"),
                            extra_env={}, code_args=["-m", "arb_orchestration.definitions"], warm_worker=True),
        # The same, with the market/capital sensors' fixed 4 s long poll instead of the poll that
        # ends just before the daemon's next loop (A/B of defs/events/daemon_loop.py).
        # (bench/fixed_poll_site/sitecustomize.py sets loop_reserve_seconds=0 in every process.)
        "fast-fixed-poll": dict(instance_yaml=fast_yaml,
                                extra_env={"PYTHONPATH": os.pathsep.join(
                                    filter(None, [str(Path(__file__).resolve().parent / "fixed_poll_site"),
                                                  os.environ.get("PYTHONPATH")]))},
                                code_args=["-m", "arb_orchestration.definitions"], warm_worker=True),
        "stock": dict(instance_yaml=STOCK_INSTANCE_YAML, extra_env={"ARB_SENSOR_LONG_POLL_SECONDS": "0"},
                      code_args=["-f", str(Path(__file__).resolve().parent / "_common.py"), "-a", "stock_defs"],
                      warm_worker=False),
    }
    unknown = set(names) - set(table)
    if unknown:
        raise SystemExit(f"unknown configuration(s) {sorted(unknown)}; choose from {sorted(table)}")
    return {name: table[name] for name in names}


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.rng = random.Random(args.seed)
        self.world = None
        self.producer = None
        self.maildir: Path | None = None
        self.last_created: float | None = None  # when the previous trial's run was created

    # ------------------------------------------------------------------ world

    def start_world(self) -> None:
        from arb_orchestration.sim.world import LocalWorld

        self.maildir = Path(tempfile.mkdtemp(prefix="arb-bench-mail-"))
        self.world = LocalWorld(
            ports={"exchange": 0, "wise": 0, "mailbox": 0, "smtp": 0},
            maildir=self.maildir,
            kafka_bootstrap=self.args.kafka_bootstrap,
            seed=42,
        )
        self.world.start()
        from confluent_kafka import Producer

        self.producer = Producer({"bootstrap.servers": self.world.kafka_bootstrap, "linger.ms": 0, "acks": "all"})

    def reset_world(self) -> None:
        request = urllib.request.Request(f"{self.world.exchange_url}/admin/reset", data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        self.world.smtp.clear()

    def positions_open(self) -> int:
        state = self.world.exchange.state
        return sum(1 for v in state.venue_names() for p in state.positions(v) if p.size > 1e-9)

    def reduce_only_orders(self) -> list:
        state = self.world.exchange.state
        return [o for v in state.venue_names() for o in state.orders(v, status="all") if o.reduce_only]

    # ------------------------------------------------------------------ one configuration

    def run_config(self, name: str, spec: dict, trials: int) -> list[Trial]:
        from arb_orchestration.commands.topics import create_all_topics
        from arb_orchestration.domain.events import MARKET_EVENTS, topic_name

        prefix = f"bench{os.getpid()}-{name}."
        env = {**os.environ, **self.world.env(), "ARB_EVENT_TOPIC_PREFIX": prefix, **spec["extra_env"]}
        env.pop("DAGSTER_HOME", None)
        create_all_topics(self.world.kafka_bootstrap, partitions=4, replication=1, prefix=prefix)
        topic = topic_name(MARKET_EVENTS, prefix)
        platform = Platform(name, spec["instance_yaml"], env, spec["code_args"], spec["warm_worker"])
        results: list[Trial] = []
        print(f"\n[{name}] starting (DAGSTER_HOME {platform.home}) ...", flush=True)
        try:
            platform.start()
            if spec["warm_worker"]:
                hello = platform.wait_for_worker(timeout=180)
                if hello is None:
                    raise RuntimeError(f"the warm worker did not come up:\n{platform.log_tail('worker')}")
                print(f"[{name}] warm worker ready, warm-up {hello.get('warm_up')}", flush=True)
            instance = platform.instance()
            self.last_created = None
            for index in range(trials + 1):
                trial = self.one_trial(name, platform, instance, topic, warm_up=index == 0)
                if index == 0:
                    print(f"[{name}] warm-up trial: first order {_fmt(trial.first_order)}, "
                          f"flat {_fmt(trial.all_flat)} ({trial.run_status}{', ' + trial.error if trial.error else ''})",
                          flush=True)
                    if trial.error:
                        raise RuntimeError(f"warm-up trial failed: {trial.error}\n{platform.log_tail('daemon')}")
                    continue
                results.append(trial)
                print(f"[{name}] {index:2d}/{trials}: first order {_fmt(trial.first_order)}  "
                      f"all flat {_fmt(trial.all_flat)}  {trial.run_status} via {trial.launched_by}"
                      f"{'  ERROR ' + trial.error if trial.error else ''}{_slow_stages(trial)}", flush=True)
                if not platform.alive():
                    raise RuntimeError(f"a platform process died:\n{platform.log_tail('daemon')}")
        finally:
            platform.stop()
            if not self.args.keep_home:
                platform.cleanup()
        return results

    def one_trial(self, name: str, platform: Platform, instance, topic: str, *, warm_up: bool) -> Trial:
        from dagster import RunsFilter

        from arb_orchestration.domain.events import encode_event, new_event_id, partition_key, sign_event

        self.reset_world()
        # A tick that returned early for the previous event leaves the sensor deaf until the daemon's
        # next 5 s loop: start from a steady sensor (a tick begun after that), then land anywhere in
        # its cycle. Back-to-back critical events are described in docs/emergency-path.md.
        if self.last_created is not None:
            wait_for(lambda: (sensor_tick_start(instance) or 0) > self.last_created, 30, interval=0.1)
        time.sleep(self.rng.uniform(0.0, 5.0))
        event = {**EVENT, "schema_version": 1, "event_id": new_event_id(), "ts": round(time.time(), 3)}
        signed = sign_event(event, self.world.secrets.event_signing_key)
        trial = Trial(config=name, event_id=event["event_id"])
        t0 = time.time()
        self.producer.produce(topic, encode_event(signed), key=partition_key(signed))
        self.producer.flush(10)
        deadline = 180 if warm_up else self.args.trial_timeout
        if not wait_for(lambda: self.positions_open() == 0, deadline):
            trial.error = f"not flat after {deadline}s"

        def finished_run():
            runs = instance.get_runs(filters=RunsFilter(tags={"arb/event_id": trial.event_id}))
            return runs[0] if runs and runs[0].is_finished else None

        run = wait_for(finished_run, deadline, interval=0.1)
        if run is None:
            trial.error = trial.error or f"the stop-loss run did not finish within {deadline}s"
        else:
            trial.run_status = run.status.value
            trial.launched_by = "warm worker" if "arb/warm_worker" in run.tags else "stock launcher"
            trial.stages = stages(instance, run, t0)
            self.last_created = t0 + trial.stages["run created"]
            mails = wait_for(lambda: [m for m in self.world.smtp.messages() if m.subject.startswith("[stop-loss]")],
                             30, interval=0.1)
            if not mails:
                trial.error = trial.error or "no risk mail"
        orders = self.reduce_only_orders()
        if orders:
            trial.first_order = min(o.received_at for o in orders) - t0
            trial.all_flat = max(o.received_at for o in orders) - t0
        elif not trial.error:
            trial.error = "no reduce-only order reached the exchange"
        return trial


def sensor_tick_start(instance, name: str = "market_shock_sensor") -> float | None:
    """When the sensor's latest tick started (epoch seconds), from the instance's sensor state."""
    from dagster._core.scheduler.instigation import InstigatorType

    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.name == name and state.instigator_data is not None:
            return getattr(state.instigator_data, "last_tick_start_timestamp", None)
    return None


def stages(instance, run, t0: float) -> dict:
    """When Dagster reached each milestone of the run, seconds after the produce call."""
    from dagster import DagsterEventType

    record = instance.get_run_record_by_id(run.run_id)
    out = {"run created": record.create_timestamp.timestamp() - t0}
    wanted = {
        DagsterEventType.PIPELINE_STARTING: "launching",
        DagsterEventType.PIPELINE_START: "run started",
        DagsterEventType.STEP_START: "liquidate started",
    }
    for entry in instance.all_logs(run.run_id):
        event = entry.dagster_event
        if event is None:
            continue
        label = wanted.get(event.event_type)
        if label and label not in out:
            out[label] = entry.timestamp - t0
    return out


SLOW_TRIAL_SECONDS = 0.7  # a trial slower than the p50 goal prints when each stage was reached


def _slow_stages(trial) -> str:
    """For a slow trial, when Dagster reached each stage (so a tail can be told apart: sensor vs launch vs run)."""
    if trial.first_order is None or trial.first_order <= SLOW_TRIAL_SECONDS or not trial.stages:
        return ""
    return "  (slow: " + ", ".join(f"{label} {_fmt(value)}" for label, value in trial.stages.items()) + ")"


def _fmt(value: float | None) -> str:
    return "   -   " if value is None else f"{value:6.3f}s"


def summarise(results: dict[str, list[Trial]]) -> str:
    lines = ["", "=" * 96,
             "signed critical event produced -> first reduce-only order received by the exchange simulator",
             f"{'config':<16}{'n':>4}  {'first p50':>10}{'first p99':>10}{'first max':>10}"
             f"  {'flat p50':>9}{'flat p99':>9}{'flat max':>9}  errors"]
    stats = {}
    for name, trials in results.items():
        ok = [t for t in trials if t.first_order is not None and t.all_flat is not None and not t.error]
        errors = len(trials) - len(ok)
        if not ok:
            lines.append(f"{name:<16}{len(trials):>4}  no successful trial ({errors} errors)")
            continue
        first = [t.first_order for t in ok]
        flat = [t.all_flat for t in ok]
        stats[name] = {"first_p50": percentile(first, 50), "first_p99": percentile(first, 99),
                       "flat_p50": percentile(flat, 50), "flat_p99": percentile(flat, 99)}
        lines.append(f"{name:<16}{len(ok):>4}  {percentile(first, 50):>9.3f}s{percentile(first, 99):>9.3f}s"
                     f"{max(first):>9.3f}s  {percentile(flat, 50):>8.3f}s{percentile(flat, 99):>8.3f}s"
                     f"{max(flat):>8.3f}s  {errors}")
    lines.append("")
    lines.append("median seconds after the produce call at which Dagster reached each stage:")
    labels = ["run created", "launching", "run started", "liquidate started"]
    lines.append(f"{'config':<16}" + "".join(f"{label:>19}" for label in labels) + f"{'first order':>14}")
    for name, trials in results.items():
        ok = [t for t in trials if t.stages and t.first_order is not None and not t.error]
        if not ok:
            continue
        cells = []
        for label in labels:
            values = [t.stages[label] for t in ok if label in t.stages]
            cells.append(f"{statistics.median(values):>18.3f}s" if values else f"{'-':>19}")
        lines.append(f"{name:<16}" + "".join(cells) + f"{statistics.median(t.first_order for t in ok):>13.3f}s")
    if "fast" in stats and "stock" in stats:
        f, s = stats["fast"], stats["stock"]
        lines.append("")
        lines.append(f"stock / fast: first order p50 {s['first_p50'] / f['first_p50']:.1f}x, "
                     f"p99 {s['first_p99'] / f['first_p99']:.1f}x; all flat p50 {s['flat_p50'] / f['flat_p50']:.1f}x, "
                     f"p99 {s['flat_p99'] / f['flat_p99']:.1f}x")
        lines.append(f"target p50 <= 0.7 s: {'met' if f['first_p50'] <= 0.7 else 'NOT met'}; "
                     f"p99 <= 1.5 s: {'met' if f['first_p99'] <= 1.5 else 'NOT met'}")
    lines.append("=" * 96)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="timed trials of the fast configuration")
    parser.add_argument("--stock-trials", type=int, default=10,
                        help="timed trials of the stock configuration (each takes ~15 s)")
    parser.add_argument("--configs", default="fast,stock",
                        help="comma-separated: fast, stock, fast-no-worker, fast-queued, fast-fixed-poll")
    parser.add_argument("--kafka-bootstrap", default=None, help="a real broker instead of the embedded mock")
    parser.add_argument("--long-poll", type=float, default=None,
                        help="ARB_SENSOR_LONG_POLL_SECONDS for the fast configurations (default: the sensors' own)")
    parser.add_argument("--trial-timeout", type=float, default=90.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep-home", action="store_true", help="keep each DAGSTER_HOME (logs) for inspection")
    parser.add_argument("--json", type=Path, default=None, help="also write every trial as JSON here")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    table = configs(names)
    if args.long_poll is not None:
        for name, spec in table.items():
            if name.startswith("fast"):
                spec["extra_env"]["ARB_SENSOR_LONG_POLL_SECONDS"] = str(args.long_poll)
    bench = Bench(args)
    results: dict[str, list[Trial]] = {}
    load_before = os.getloadavg()
    started = time.monotonic()
    print(f"load average {load_before[0]:.2f} on {os.cpu_count()} CPUs; repo {REPO_ROOT}", flush=True)
    try:
        bench.start_world()
        print(f"world: exchange {bench.world.exchange_url}, Kafka {bench.world.kafka_bootstrap} "
              f"({'external' if args.kafka_bootstrap else 'embedded mock'})", flush=True)
        for name, spec in table.items():
            trials = args.stock_trials if name == "stock" else args.trials
            results[name] = bench.run_config(name, spec, trials)
    finally:
        if bench.producer is not None:
            bench.producer.flush(5)
        if bench.world is not None:
            bench.world.stop()
        if bench.maildir is not None:
            shutil.rmtree(bench.maildir, ignore_errors=True)
    print(summarise(results))
    load_after = os.getloadavg()
    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
          f"{time.monotonic() - started:.0f} s in all", flush=True)
    if args.json:
        args.json.write_text(json.dumps({name: [t.__dict__ for t in trials] for name, trials in results.items()},
                                        indent=2))
    return 0 if all(t.first_order is not None and not t.error for ts in results.values() for t in ts) else 1


if __name__ == "__main__":
    sys.exit(main())
