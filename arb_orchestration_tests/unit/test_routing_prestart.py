"""`solve_problem` starts the next assets' compiled searches while it plans the current one (`PRESTART_ASSETS`):
the same plans as one asset after another, every HiGHS call still on the planning thread, and nothing left running
when planning an asset raises."""

from __future__ import annotations

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


def test_every_highs_call_stays_on_the_planning_thread_while_searches_run(monkeypatch):
    """HiGHS joins every asset at once (no head start) while the other assets' compiled searches run: each HiGHS
    entry point the planner has is still called only from the thread that plans."""
    threads: list[str] = []

    def spy(name, real):
        def call(*args, **kwargs):
            threads.append(threading.current_thread().name)
            return real(*args, **kwargs)
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
    assert len(threads) >= 3  # a HiGHS race per asset at least
    assert set(threads) == {threading.current_thread().name}
    assert _searches_alive() == []


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
