"""`solve_problem` starts the next assets' compiled searches while it plans the current one (`PRESTART_ASSETS`):
the same plans as one asset after another, never two HiGHS runs at once, nothing left running when planning an
asset raises. HiGHS races at a lower priority (`HIGHS_RACE_NICE`), and an interrupted planner stops the race."""

from __future__ import annotations

import _thread
import os
import sys
import threading
import time

import pytest

from arb_orchestration.domain import routing_bnb, routing_solver
from arb_orchestration.domain.routing import plan_routes
from arb_orchestration_tests.unit.routing_solvers import solving_with
from arb_orchestration_tests.unit.test_review_routing_bnb import assert_executable
from arb_orchestration_tests.unit.test_routing_bnb import _bench_instance

pytestmark = pytest.mark.skipif(routing_bnb.library() is None, reason="the library is not built (test_routing_bnb fails)")


def _searches_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("routing-bnb-") and t.is_alive()]


def _instances():
    """The 10-venue bench (3 assets each), one with a whale in its USDT (planned lowered, never prestarted), and one
    whose ETH needs nothing (no search at all)."""
    cases = [_bench_instance(10, seed) for seed in range(3)]
    whale = _bench_instance(10, 3)
    whale["balances"]["venue00"]["USDT"] += 1e12
    settled = _bench_instance(10, 4)
    for venue, per in settled["targets"].items():
        per["ETH"] = min(per["ETH"], settled["balances"][venue]["ETH"])
    return cases + [whale, settled]


def test_prestarted_searches_plan_what_one_asset_after_another_plans(monkeypatch):
    for number, case in enumerate(_instances()):
        args = (case["balances"], case["targets"], case["rails"])
        plans = []
        for window in (1, 3):
            monkeypatch.setattr(routing_solver, "PRESTART_ASSETS", window)
            with solving_with("compiled"):
                plans.append(plan_routes(*args))
        one, ahead = plans
        assert one.feasible and ahead.feasible, number
        assert ahead.fee_by_asset.keys() == one.fee_by_asset.keys(), number
        for asset, fee in one.fee_by_asset.items():
            assert ahead.fee_by_asset[asset] == pytest.approx(fee, rel=1e-9), (number, asset)
        assert_executable(*args, ahead)
    assert _searches_alive() == []


def test_the_next_assets_search_runs_while_the_first_asset_is_planned(monkeypatch):
    case = _bench_instance(10, 0)
    real_solve = routing_bnb.solve
    started: list[str] = []
    second_started = threading.Event()
    seen_while_first_ran: list[bool] = []

    def solve(inst, **kwargs):
        started.append(inst.asset)
        if len(started) == 2:
            second_started.set()
        if len(started) == 1:  # the first asset's search waits (up to 10 s) for the second one to start
            seen_while_first_ran.append(second_started.wait(10))
        return real_solve(inst, **kwargs)

    monkeypatch.setattr(routing_bnb, "solve", solve)
    monkeypatch.setattr(routing_solver, "PRESTART_ASSETS", 3)
    with solving_with("compiled"):
        plan = plan_routes(case["balances"], case["targets"], case["rails"])
    assert seen_while_first_ran == [True]
    assert sorted(started) == sorted(plan.fee_by_asset)  # one search per asset, none twice
    assert_executable(case["balances"], case["targets"], case["rails"], plan)


def test_no_two_highs_calls_run_at_once_while_searches_run(monkeypatch):
    """HiGHS joins every asset at once (no head start) while the other assets' compiled searches run: every HiGHS
    entry point the planner has runs alone (never two at once), on the planning thread or, for the race itself, on
    the race's own thread while the planning thread waits for it."""
    calls: list[str] = []
    active, most = [0], [0]
    lock = threading.Lock()

    def spy(name, real):
        def call(*args, **kwargs):
            with lock:
                active[0] += 1
                most[0] = max(most[0], active[0])
            calls.append(threading.current_thread().name)
            try:
                return real(*args, **kwargs)
            finally:
                with lock:
                    active[0] -= 1
        monkeypatch.setattr(routing_solver, name, call)

    for name in ("_highs_run", "linprog", "milp", "run_milp"):
        spy(name, getattr(routing_solver, name))
    real_solve = routing_bnb.solve

    def slow_solve(inst, **kwargs):  # searches stay busy a while, so HiGHS runs while they do
        time.sleep(0.05)
        return real_solve(inst, **kwargs)

    monkeypatch.setattr(routing_bnb, "solve", slow_solve)
    monkeypatch.setattr(routing_solver, "HEAD_START_SECONDS", 0.0)
    monkeypatch.setattr(routing_solver, "PRESTART_ASSETS", 3)
    case = _bench_instance(10, 1)
    with solving_with("compiled"):
        plan = plan_routes(case["balances"], case["targets"], case["rails"])
    assert plan.feasible
    assert most[0] == 1
    planner = threading.current_thread().name
    races = set(calls) - {planner}
    assert races and races <= {f"routing-highs-{asset}" for asset in plan.fee_by_asset}  # each race its own thread
    assert planner in calls  # the polishing LPs
    assert _searches_alive() == []


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priorities are a Linux feature")
def test_highs_races_at_a_lower_priority_and_the_planner_keeps_its_own(monkeypatch):
    seen: list[int] = []
    real = routing_solver._solve_milp

    def spy(inst, limit, **kwargs):
        seen.append(_nice())
        return real(inst, limit, **kwargs)

    real_solve = routing_bnb.solve

    def slow_solve(inst, **kwargs):  # no search is done before its asset's turn: HiGHS joins every asset
        time.sleep(0.05)
        return real_solve(inst, **kwargs)

    monkeypatch.setattr(routing_bnb, "solve", slow_solve)
    monkeypatch.setattr(routing_solver, "_solve_milp", spy)
    monkeypatch.setattr(routing_solver, "HEAD_START_SECONDS", 0.0)
    monkeypatch.setattr(routing_solver, "PRESTART_ASSETS", 1)
    before = _nice()
    case = _bench_instance(10, 2)
    with solving_with("compiled"):
        plan = plan_routes(case["balances"], case["targets"], case["rails"])
    assert plan.feasible and len(seen) == 3
    assert seen == [min(before + routing_solver.HIGHS_RACE_NICE, 19)] * 3
    assert _nice() == before and routing_solver.race_priority_unavailable is None
    monkeypatch.setattr(routing_solver, "HIGHS_RACE_NICE", 0)  # off: HiGHS on the planning thread, as before
    seen.clear()
    with solving_with("compiled"):
        plan_routes(case["balances"], case["targets"], case["rails"])
    assert seen == [before] * 3


def test_an_interrupted_planner_stops_the_highs_race_before_it_goes_on(monkeypatch):
    """A run being stopped interrupts the planning thread while it waits for the race: HiGHS is told to stop (its
    interrupt callback says so) and waited for, then the interruption goes on."""
    told_to_stop = threading.Event()

    def highs(inst, limit, *, interrupt):
        deadline = time.monotonic() + 10
        while not interrupt() and time.monotonic() < deadline:
            time.sleep(0.002)
        if interrupt():
            told_to_stop.set()
        return "interrupted", None

    class NeverProven:
        proven = threading.Event()

    class Inst:
        asset = "X"

    monkeypatch.setattr(routing_solver, "_solve_milp", highs)
    threading.Timer(0.2, _thread.interrupt_main).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        routing_solver._highs_in_race(Inst(), 5.0, NeverProven())
    assert told_to_stop.is_set() and time.monotonic() - started < 5
    time.sleep(0.05)  # (the race thread returns right after it said it stopped)
    assert not [t for t in threading.enumerate() if t.name.startswith("routing-highs-") and t.is_alive()]


def test_an_error_while_planning_an_asset_stops_the_searches_started_for_the_others(monkeypatch):
    case = _bench_instance(10, 2)
    cancelled: list[str] = []
    first: list[str] = []

    def solve(inst, *, cancel=None, **kwargs):
        if not first:
            first.append(inst.asset)
            return routing_bnb.Outcome("limit", None, 0, 0.0)  # the first asset: no proof, HiGHS takes over
        deadline = time.monotonic() + 10  # the others: run until cancelled
        while cancel is not None and not cancel.value and time.monotonic() < deadline:
            time.sleep(0.002)
        cancelled.append(inst.asset)
        return routing_bnb.Outcome("limit", None, 0, 0.0)

    def broken(inst, limit, **kwargs):
        raise RuntimeError("HiGHS fell over")

    monkeypatch.setattr(routing_bnb, "solve", solve)
    monkeypatch.setattr(routing_solver, "_solve_milp", broken)
    monkeypatch.setattr(routing_solver, "HEAD_START_SECONDS", 0.0)
    monkeypatch.setattr(routing_solver, "PRESTART_ASSETS", 3)
    started = time.monotonic()
    with solving_with("compiled"), pytest.raises(RuntimeError, match="HiGHS fell over"):
        plan_routes(case["balances"], case["targets"], case["rails"])
    assert time.monotonic() - started < 5  # cancelled, not run out
    assert len(first) == 1 and len(cancelled) == 2 and first[0] not in cancelled
    assert _searches_alive() == []
