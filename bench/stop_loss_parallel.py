"""Benchmark: the emergency stop-loss on 5 venues x 20 positions, venues in parallel vs one after another.

What is timed: from the start of the liquidation to "every position flat",
twice per trial:
- `confirmed`: until the runner returns, i.e. until a fresh position snapshot
  and open-order check on every venue showed it flat (what the job waits for);
- `last close`: until the venue filled the last close order (its receipt time
  plus the injected latency: when the book actually became flat).

Variants, alternated within each trial so drift hits both alike:
- `parallel`: `liquidate_all` — the function the job's `liquidate` step calls
  (one thread per venue; inside a venue, cancel-all + positions at once, then
  the venue's close orders concurrently on 8 threads);
- `sequential`: the same per-venue function (`liquidate_venue`) called for one
  venue after another.
Each variant gets a fresh `SimExchangeResource` per trial (a run builds its own,
so new TCP connections are part of the time), and the seeded book is restored
before each (`state.reset()` + `state.set_positions`).

The world is the real exchange simulator (HTTP on a free loopback port, no
price ticker), with each venue listing 20 perps. Every trial is repeated with
an injected per-request latency (the simulator's `latency` fault on every
endpoint, 20 and 50 ms by default, as a real exchange round trip): on loopback
a request costs ~1 ms, so without it the test mostly measures Python and the GIL.

The simulator's HTTP server used socketserver's default listen backlog of 5;
a parallel stop-loss opens ~45 connections at once, the kernel dropped the
extra SYNs and each dropped connection waited for the client's 1 s SYN retry
(parallel became slower than sequential in some runs). The backlog is now 128
(`SimHTTPServer.request_queue_size`); `--listen-backlog 5` reproduces the old
behaviour, and the "SYN drops" column counts such drops (Linux, system-wide).

Optionally (`--job-trials`, default 2) the whole `emergency_stop_loss_saga` is
run with `execute_in_process` against the same world (SQLite instance on
tmpfs, SMTP sink), to show what Dagster adds around the parallel runner.

    .venv/bin/python bench/stop_loss_parallel.py [--venues 5] [--positions 20] [--trials 7]
        [--latency-ms 0,20,50] [--job-trials 2] [--listen-backlog N]

Prints one row per (latency, variant) with median and p90 and the
sequential/parallel ratio measured in this run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

# 20 liquid perps with rough index prices (USDT). The simulator prices every market off an index,
# and `ExchangeSimulator` does not take index prices (only `ExchangeState(index_prices=)` does).
EXTRA_INDEX_PRICES = {
    "BNB": 580.0, "XRP": 0.55, "DOGE": 0.12, "ADA": 0.45, "AVAX": 28.0, "LINK": 14.0, "DOT": 6.5,
    "LTC": 80.0, "BCH": 380.0, "TRX": 0.12, "NEAR": 5.5, "APT": 8.5, "ARB": 0.9, "OP": 1.8,
    "SUI": 1.1, "TON": 5.6, "ATOM": 7.5,
}
PERP_BASES = ["BTC", "ETH", "SOL", *EXTRA_INDEX_PRICES]  # 20
VARIANTS = ("parallel", "sequential")


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# ----------------------------------------------------------------------------- the world


def venue_specs(n_venues: int, n_positions: int) -> list:
    """The local world's venues (balances, fees, leverage as seeded), each listing `n_positions` perps."""
    from arb_orchestration.sim.exchange_specs import PerpSpec, default_venues

    if not 1 <= n_positions <= len(PERP_BASES):
        raise ValueError(f"positions per venue must be within 1..{len(PERP_BASES)}, got {n_positions}")
    base_specs = default_venues()
    if not 1 <= n_venues <= len(base_specs):
        raise ValueError(f"venues must be within 1..{len(base_specs)}, got {n_venues}")
    specs = []
    for spec in base_specs[:n_venues]:
        perps = tuple(
            PerpSpec(f"{base}/USDT:USDT", 0.0001, 8.0, basis=0.0002) for base in PERP_BASES[:n_positions]
        )
        specs.append(dataclasses.replace(spec, perps=perps, positions=()))
    return specs


@contextlib.contextmanager
def _extra_index_prices() -> Iterator[None]:
    # Only while the simulator's state is built: it copies the table, and reset() reuses the copy.
    from arb_orchestration.sim import exchange_state

    saved = exchange_state.DEFAULT_INDEX_PRICES, exchange_state.DEFAULT_INDEX_VOLATILITY
    exchange_state.DEFAULT_INDEX_PRICES = {**saved[0], **EXTRA_INDEX_PRICES}
    exchange_state.DEFAULT_INDEX_VOLATILITY = {**saved[1], **{b: 0.0005 for b in EXTRA_INDEX_PRICES}}
    try:
        yield
    finally:
        exchange_state.DEFAULT_INDEX_PRICES, exchange_state.DEFAULT_INDEX_VOLATILITY = saved


def seed_positions(state, specs, seed: int) -> int:
    """Every perp of every venue gets a position (alternating long/short, 20k-200k USDT notional)."""
    rng = random.Random(seed)
    count = 0
    for spec in specs:
        marks = state.mark_prices(spec.name)
        rows = []
        for i, perp in enumerate(spec.perps):
            notional = rng.uniform(20_000, 200_000)
            rows.append({"symbol": perp.symbol, "side": "long" if i % 2 == 0 else "short",
                         "size": round(notional / marks[perp.symbol], 6)})
        count += len(state.set_positions(spec.name, rows))
    return count


@dataclasses.dataclass
class World:
    """The exchange simulator (and, for the job, the SMTP sink and a Dagster instance)."""

    specs: list
    sim: Any = None
    api_key: str = "bench-key"
    smtp: Any = None
    instance: Any = None
    _instance_cm: Any = None
    _tmp: str | None = None

    def start(self, with_job: bool) -> "World":
        from arb_orchestration.sim.exchange import ExchangeSimulator

        with _extra_index_prices():
            self.sim = ExchangeSimulator(self.specs, seed=7, api_key=self.api_key, tick_interval=None)
        self.sim.start(port=0)
        if with_job:
            from dagster import instance_for_test

            from arb_orchestration.sim.smtp_sink import SmtpSink

            self.smtp = SmtpSink()
            self.smtp.start(port=0)
            shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
            self._tmp = tempfile.mkdtemp(prefix="bench-stop-loss-", dir=shm)
            self._instance_cm = instance_for_test(temp_dir=self._tmp)
            self.instance = self._instance_cm.__enter__()
        return self

    def stop(self) -> None:
        if self._instance_cm is not None:
            self._instance_cm.__exit__(None, None, None)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
        for part in (self.smtp, self.sim):
            if part is not None:
                part.stop()

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    def prepare(self, latency_ms: float, seed: int) -> int:
        """Seeded book back, orders gone, breakers closed, latency fault (if any) on every endpoint."""
        from arb_orchestration.resources.resilience import reset_breakers

        self.sim.faults.clear()
        self.sim.state.reset()
        reset_breakers()
        if self.smtp is not None:
            self.smtp.clear()
        positions = seed_positions(self.sim.state, self.specs, seed)
        if latency_ms > 0:
            self.sim.faults.add({"kind": "latency", "latency_ms": latency_ms})
        return positions

    def exchange(self):
        from arb_orchestration.resources.sim_venue import SimExchangeResource

        # The local deployment's settings (defs/resources.py): timeouts and retries as in a run.
        return SimExchangeResource(base_url=self.sim.url, api_key=self.api_key, venue_list=self.names)

    def open_exposure(self) -> tuple[int, int]:
        state = self.sim.state
        positions = sum(1 for v in self.names for p in state.positions(v) if p.size > 1e-9)
        orders = sum(len(state.orders(v, status="open")) for v in self.names)
        return positions, orders

    def close_orders(self) -> list:
        return [o for v in self.names for o in self.sim.state.orders(v)]


# ----------------------------------------------------------------------------- one trial


@dataclasses.dataclass
class Trial:
    variant: str
    latency_ms: float
    confirmed_s: float  # runner returned, every venue verified flat
    last_close_s: float  # venue received the last close order
    orders: int
    flat: bool
    listen_overflows: int = 0  # SYNs the kernel dropped meanwhile (system-wide counter; Linux only)


def liquidate(world: World, variant: str):
    """Run one variant against the world; returns the `LiquidationReport`."""
    from arb_orchestration.defs.stop_loss.liquidator import LiquidationSettings, liquidate_all, liquidate_venue
    from arb_orchestration.domain.liquidation import LiquidationReport

    exchange = world.exchange()
    settings = LiquidationSettings(deadline_seconds=60.0)
    try:
        if variant == "parallel":
            return liquidate_all(world.names, exchange.venue, saga_id="bench", base_key="bench", settings=settings)
        if variant == "sequential":
            outcomes = [liquidate_venue(exchange.venue(name), base_key="bench", settings=settings)
                        for name in world.names]
            return LiquidationReport(saga_id="bench", dry_run=False, venues=outcomes)
        raise ValueError(f"unknown variant {variant!r}")
    finally:
        exchange.close()


def listen_overflows() -> int:
    """Linux's count of connections dropped because a listen backlog was full (0 elsewhere)."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split())).get("ListenOverflows", 0))
    return 0


def run_trial(world: World, variant: str, latency_ms: float, seed: int) -> Trial:
    expected = world.prepare(latency_ms, seed)
    overflows = listen_overflows()
    wall0, t0 = time.time(), time.perf_counter()
    report = liquidate(world, variant)
    confirmed = time.perf_counter() - t0
    trial = _trial(world, variant, latency_ms, wall0, confirmed, expected, report.flat)
    trial.listen_overflows = listen_overflows() - overflows
    return trial


def _trial(world, variant, latency_ms, wall0, confirmed, expected, reported_flat) -> Trial:
    orders = world.close_orders()
    positions_left, orders_left = world.open_exposure()
    flat = reported_flat and positions_left == 0 and orders_left == 0
    if not flat or len(orders) != expected:
        raise RuntimeError(f"{variant} @ {latency_ms:g} ms: not a clean liquidation "
                           f"({positions_left} positions and {orders_left} orders left, "
                           f"{len(orders)} close orders for {expected} positions)")
    # received_at is stamped before the injected latency; the fill happens after it.
    last = max(o.received_at for o in orders) + latency_ms / 1000.0 - wall0
    return Trial(variant, latency_ms, confirmed, last, len(orders), flat)


def run_job_trial(world: World, latency_ms: float, seed: int) -> Trial:
    """The whole `emergency_stop_loss_saga` (liquidate + notify) with `execute_in_process`."""
    from arb_orchestration.defs.stop_loss import emergency_stop_loss_saga
    from arb_orchestration.resources.smtp import SmtpResource

    expected = world.prepare(latency_ms, seed)
    resources = {
        "exchange": world.exchange(),
        "smtp": SmtpResource(host="127.0.0.1", port=world.smtp.port, sender="bench@localhost",
                             risk_team=["risk@localhost"]),
    }
    overflows = listen_overflows()
    # The job's console logger writes every event to stderr (run config cannot lower it through the
    # saga's config mapping); keep it for a failure, drop it otherwise.
    captured = io.StringIO()
    wall0, t0 = time.time(), time.perf_counter()
    with contextlib.redirect_stderr(captured):
        result = emergency_stop_loss_saga.execute_in_process(
            instance=world.instance, run_config={"reason": "bench"}, resources=resources, raise_on_error=False,
        )
    elapsed = time.perf_counter() - t0
    if not result.success:
        sys.stderr.write(captured.getvalue()[-5000:])
        raise RuntimeError(f"emergency_stop_loss_saga failed in the bench (run {result.run_id})")
    trial = _trial(world, "job", latency_ms, wall0, elapsed, expected, True)
    trial.listen_overflows = listen_overflows() - overflows
    return trial


# ----------------------------------------------------------------------------- the benchmark


def measure(*, venues: int = 5, positions: int = 20, trials: int = 7, latencies: tuple[float, ...] = (0.0, 20.0, 50.0),
            job_trials: int = 2, warmup: bool = True, seed: int = 11) -> dict[str, Any]:
    """Run every variant `trials` times per latency; returns the raw trials and a summary per (latency, variant)."""
    world = World(venue_specs(venues, positions))
    world.start(with_job=job_trials > 0)
    results: list[Trial] = []
    try:
        if warmup:  # imports, first connections, pydantic schemas: not what we compare
            for variant in VARIANTS:
                run_trial(world, variant, 0.0, seed)
        for latency in latencies:
            for i in range(trials):
                order = VARIANTS if i % 2 == 0 else tuple(reversed(VARIANTS))
                for variant in order:
                    results.append(run_trial(world, variant, latency, seed + i))
            if job_trials > 0:
                run_job_trial(world, latency, seed)  # warm: first run compiles the job, builds tables
                for i in range(job_trials):
                    results.append(run_job_trial(world, latency, seed + i))
    finally:
        world.stop()
    return {"venues": venues, "positions_per_venue": positions, "trials": results,
            "summary": summarize(results, latencies)}


def summarize(results: list[Trial], latencies) -> list[dict[str, Any]]:
    rows = []
    for latency in latencies:
        medians = {}
        for variant in (*VARIANTS, "job"):
            picked = [t for t in results if t.latency_ms == latency and t.variant == variant]
            if not picked:
                continue
            confirmed = [t.confirmed_s for t in picked]
            last = [t.last_close_s for t in picked]
            medians[variant] = statistics.median(confirmed)
            rows.append({
                "latency_ms": latency, "variant": variant, "n": len(picked),
                "confirmed_median": statistics.median(confirmed), "confirmed_p90": percentile(confirmed, 90),
                "last_close_median": statistics.median(last), "last_close_p90": percentile(last, 90),
                "orders": picked[0].orders,
                "listen_overflows": sum(t.listen_overflows for t in picked),
            })
        if "parallel" in medians and "sequential" in medians:
            last_med = {r["variant"]: r["last_close_median"] for r in rows if r["latency_ms"] == latency}
            rows.append({"latency_ms": latency, "variant": "ratio",
                         "confirmed_ratio": medians["sequential"] / medians["parallel"],
                         "last_close_ratio": last_med["sequential"] / last_med["parallel"]})
    return rows


def print_summary(result: dict[str, Any]) -> None:
    print(f"stop-loss: {result['venues']} venues x {result['positions_per_venue']} positions "
          f"(times in seconds, from start to flat)")
    print(f"{'latency':>8} {'variant':<11} {'n':>3} {'confirmed med':>14} {'p90':>7} {'last close med':>15} {'p90':>7}"
          f" {'SYN drops':>9}")
    for row in result["summary"]:
        if row["variant"] == "ratio":
            print(f"{row['latency_ms']:>6g}ms {'seq/par':<11} {'':>3} {row['confirmed_ratio']:>13.2f}x {'':>7} "
                  f"{row['last_close_ratio']:>14.2f}x")
            continue
        print(f"{row['latency_ms']:>6g}ms {row['variant']:<11} {row['n']:>3} {row['confirmed_median']:>14.3f} "
              f"{row['confirmed_p90']:>7.3f} {row['last_close_median']:>15.3f} {row['last_close_p90']:>7.3f}"
              f" {row['listen_overflows']:>9}")
    if any(r["variant"] == "job" for r in result["summary"]):
        print("job = emergency_stop_loss_saga.execute_in_process (parallel runner + saga log + kill switch + "
              "verification + risk mail); 'confirmed' is the whole run")
    print("SYN drops: connections the kernel dropped on a full listen backlog during those trials "
          "(system-wide counter; each one costs the client a 1 s SYN retry)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venues", type=int, default=5)
    parser.add_argument("--positions", type=int, default=20, help=f"per venue (1..{len(PERP_BASES)})")
    parser.add_argument("--trials", type=int, default=7, help="per variant and latency")
    parser.add_argument("--latency-ms", default="0,20,50", help="comma-separated injected latencies per request")
    parser.add_argument("--job-trials", type=int, default=2, help="execute_in_process runs per latency (0: skip)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--listen-backlog", type=int, default=None,
                        help="override the simulator's listen backlog (5 reproduces socketserver's default)")
    args = parser.parse_args(argv)
    latencies = tuple(float(x) for x in args.latency_ms.split(",") if x.strip())
    if args.trials < 1 or not latencies:
        parser.error("--trials must be >= 1 and --latency-ms must name at least one latency")
    import logging

    logging.getLogger("arb_orchestration").setLevel(logging.ERROR)  # retries would be noise in the table
    if args.listen_backlog is not None:
        from arb_orchestration.sim.exchange_http import SimHTTPServer

        SimHTTPServer.request_queue_size = args.listen_backlog
    result = measure(venues=args.venues, positions=args.positions, trials=args.trials, latencies=latencies,
                     job_trials=args.job_trials, seed=args.seed)
    print_summary(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
