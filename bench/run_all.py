"""Run every benchmark in bench/ one after another, with small defaults, and print their outputs.

Each `bench/*.py` (not `_*.py`, not this file) runs as its own process, with the
small arguments below when it is known here and with its own defaults
otherwise; its output streams through unchanged under a header. One failing
benchmark does not stop the others; the exit status is 1 if any failed. Each
runs in its own process group, which is killed on timeout or Ctrl-C, so
nothing it started outlives it.

    .venv/bin/python bench/run_all.py                 # small defaults (a few minutes on 2 cores)
    .venv/bin/python bench/run_all.py --full          # every benchmark with its own (full) defaults
    .venv/bin/python bench/run_all.py --only sensor_throughput,stop_loss_parallel
    .venv/bin/python bench/run_all.py --list
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent

# Small arguments per benchmark: enough to show the ratios, quick on a shared 2-core machine.
SMALL_ARGS: dict[str, list[str]] = {
    "route_planner": ["--sizes", "10", "--seeds", "1", "--generic-limit", "10"],
    "stop_loss_latency": ["--trials", "3", "--stock-trials", "2"],
    "stop_loss_parallel": ["--trials", "3", "--latency-ms", "0,30", "--job-trials", "1"],
    "sensor_throughput": ["--events", "20000", "--trace-events", "5000"],
}


def discover() -> list[str]:
    """Benchmark names (file stems) in bench/, sorted."""
    return sorted(p.stem for p in BENCH_DIR.glob("*.py") if not p.name.startswith("_") and p.stem != "run_all")


def run_one(name: str, args: list[str], timeout: float) -> tuple[int, float]:
    """Run bench/<name>.py with `args`; returns (exit status, seconds). Output goes straight to ours."""
    command = [sys.executable, str(BENCH_DIR / f"{name}.py"), *args]
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    began = time.monotonic()
    proc = subprocess.Popen(command, cwd=REPO_ROOT, start_new_session=True)
    try:
        status = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"=== {name}: timed out after {timeout:g}s; stopping it", flush=True)
        _stop(proc)
        status = 124
    except BaseException:  # Ctrl-C: take the benchmark (and what it started) down with us
        _stop(proc)
        raise
    return status, time.monotonic() - began


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)  # its own group (start_new_session): only what it started
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="run each benchmark with its own defaults")
    parser.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per benchmark")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and the arguments they would get")
    args = parser.parse_args(argv)
    names = discover()
    if args.only:
        wanted = [n.strip().removesuffix(".py") for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(names)}")
        names = [n for n in names if n in wanted]
    plan = [(n, [] if args.full else SMALL_ARGS.get(n, [])) for n in names]
    if args.list:
        for name, bench_args in plan:
            print(f"{name}: {' '.join(bench_args) or '(its own defaults)'}")
        return 0
    results = []
    for name, bench_args in plan:
        status, seconds = run_one(name, bench_args, args.timeout)
        results.append((name, status, seconds))
    print("\n=== summary")
    for name, status, seconds in results:
        print(f"  {name:<22} {'ok' if status == 0 else f'FAILED (exit {status})':<16} {seconds:7.1f}s")
    return 0 if all(status == 0 for _, status, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
