"""The compiled branch-and-bound the planner tries first (`routing_bnb`): built, used, exact, and never trusted
beyond what it proves (anything it does not settle goes to HiGHS)."""

from __future__ import annotations

import ctypes
import importlib.util
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from arb_orchestration.domain import routing_bnb, routing_solver
from arb_orchestration.domain.routing import parse_problem, plan_routes
from arb_orchestration.domain.routing_solver import MIP_REL_GAP, asset_instance
from arb_orchestration_tests.unit.routing_solvers import random_small_instance, solving_with

CRATE = Path(routing_bnb.__file__).with_name("routing_bnb_rust")
BENCH = Path(__file__).resolve().parents[2] / "bench" / "route_planner.py"


def _bench_instance(venues: int, seed: int) -> dict:
    spec = importlib.util.spec_from_file_location("bench_route_planner_for_tests", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.make_instance(venues, seed)


def _with_highs_answer(seed: int) -> tuple[tuple, object]:
    """A 10-venue bench instance's plan_routes arguments and the HiGHS-only planner's plan for it."""
    instance = _bench_instance(10, seed)
    args = (instance["balances"], instance["targets"], instance["rails"])
    with solving_with("highs"):
        return args, plan_routes(*args)


class _Spy:
    """Wraps `routing_bnb.solve` and keeps what it answered per asset."""

    def __init__(self, monkeypatch, replace=None):
        self.outcomes: dict[str, routing_bnb.Outcome] = {}
        real = routing_bnb.solve

        def spy(inst, **kwargs):
            outcome = (replace or real)(inst, **kwargs)
            self.outcomes[inst.asset] = outcome
            return outcome

        monkeypatch.setattr(routing_bnb, "solve", spy)


def test_the_library_is_built():
    # `pip install` builds it (optional there, so an install without cargo still works at HiGHS's speed);
    # CI and the image must have it, or every plan silently takes seconds instead of milliseconds.
    assert routing_bnb.library() is not None, "the compiled branch-and-bound was not built (is cargo installed?)"


def test_the_built_library_is_not_older_than_its_source():
    # An editable install builds it in place; after a pull that changed the Rust, only `make` (or
    # `pip install -e .`) rebuilds it, and the tests would silently run the old solver.
    built = routing_bnb.library_path()
    assert built is not None
    sources = [CRATE / "Cargo.toml", *sorted((CRATE / "src").glob("*.rs"))]
    stale = [s.name for s in sources if s.stat().st_mtime > built.stat().st_mtime]
    assert not stale, f"{built.name} is older than {stale}: rebuild with `make install` or `pip install -e .`"


def test_amount_scale_is_an_exact_power_of_two():
    for largest in (3e-9, 0.004, 1.0, 1000.0, 123456.7, 2.4e9):
        # sized by the largest deficit (positive lo), whatever the surpluses (negative lo)
        scale = routing_bnb.amount_scale(np.array([-1e6 * largest, largest, 0.5 * largest]))
        mantissa, _ = np.frexp(scale)
        assert mantissa == 0.5  # a power of two: scaling and unscaling lose no bit
        assert routing_bnb.AMOUNT_MAGNITUDE / 2 <= largest * scale <= routing_bnb.AMOUNT_MAGNITUDE * 2
    assert routing_bnb.amount_scale(np.zeros(3)) == 1.0
    assert routing_bnb.amount_scale(np.array([-5.0, 0.0])) == 1.0


def test_a_ten_venue_bench_instance_is_proven_by_the_compiled_solver_with_highs_fees(monkeypatch):
    instance = _bench_instance(10, 0)
    args = (instance["balances"], instance["targets"], instance["rails"])
    spy = _Spy(monkeypatch)
    with solving_with("compiled"):
        compiled = plan_routes(*args)
    with solving_with("highs"):
        highs = plan_routes(*args)
    assert {a: o.status for a, o in spy.outcomes.items()} == {"ETH": "optimal", "USDC": "optimal", "USDT": "optimal"}
    assert compiled.feasible and compiled.optimal
    assert compiled.fee_by_asset.keys() == highs.fee_by_asset.keys()
    for asset, fee in highs.fee_by_asset.items():
        assert compiled.fee_by_asset[asset] == pytest.approx(fee, rel=1e-8), asset
    assert compiled.total_fee == pytest.approx(3.1515, abs=5e-5)  # the bench's documented optimum


def test_on_random_small_instances_both_solvers_agree(monkeypatch):
    rng = random.Random(20261128)
    proven = 0
    spy = _Spy(monkeypatch)
    for _ in range(150):
        balances, targets, rails = random_small_instance(rng)
        spy.outcomes.clear()
        with solving_with("compiled"):
            compiled = plan_routes(balances, targets, rails)
        with solving_with("highs"):
            highs = plan_routes(balances, targets, rails)
        assert compiled.feasible == highs.feasible, (balances, targets, rails)
        if highs.feasible:
            assert compiled.total_fee == pytest.approx(highs.total_fee, rel=1e-7, abs=1e-9), (balances, targets, rails)
        else:
            assert compiled.reason == highs.reason  # infeasibility is always proven and explained by HiGHS
        proven += spy.outcomes.get("X") is not None and spy.outcomes["X"].status == "optimal"
    assert proven >= 50  # the comparison is not vacuous: the compiled solver settled many of them itself


@pytest.mark.parametrize("status", ["limit", "lp_failure", "infeasible", "error"])
def test_anything_but_a_proven_optimum_goes_to_highs(monkeypatch, status):
    args, expected = _with_highs_answer(1)
    calls = []
    real_milp = routing_solver._solve_milp
    monkeypatch.setattr(routing_solver, "_solve_milp",
                        lambda inst, limit, **kw: calls.append(inst.asset) or real_milp(inst, limit, **kw))
    spy = _Spy(monkeypatch, replace=lambda inst, **kw: routing_bnb.Outcome(status, None, 7, 0.0))
    with solving_with("compiled"):
        plan = plan_routes(*args)
    assert sorted(calls) == sorted(spy.outcomes) == ["ETH", "USDC", "USDT"]
    assert plan.fee_by_asset == pytest.approx(expected.fee_by_asset, rel=1e-8)


def test_a_spent_budget_is_reported_as_a_limit_and_never_as_an_answer():
    instance = _bench_instance(10, 0)
    inst = asset_instance(parse_problem(instance["balances"], instance["targets"], instance["rails"]), "ETH")
    outcome = routing_bnb.solve(inst, gap=MIP_REL_GAP, max_nodes=5)  # ETH seed 0 needs ~120 nodes
    assert outcome.status == "limit" and outcome.solution is None


def test_a_claimed_optimum_that_breaks_the_model_is_not_taken(monkeypatch):
    # Defence in depth: the library's amounts are checked against the venue rows and rail bounds here; a
    # plan that would leave a venue short (a numerical failure it did not notice) is solved again by HiGHS.
    args, expected = _with_highs_answer(2)
    real = routing_bnb.solve

    def short_by_a_percent(inst, **kwargs):
        outcome = real(inst, **kwargs)
        k = len(inst.rails)
        bad = outcome.solution.copy()
        bad[:k] *= 0.99
        return routing_bnb.Outcome(outcome.status, bad, outcome.nodes, outcome.seconds)

    checked = []
    real_check = routing_solver._meets_model
    monkeypatch.setattr(routing_solver, "_meets_model", lambda inst, s: checked.append(real_check(inst, s)) or checked[-1])
    _Spy(monkeypatch, replace=short_by_a_percent)
    with solving_with("compiled"):
        plan = plan_routes(*args)
    assert checked == [False, False, False]
    assert plan.fee_by_asset == pytest.approx(expected.fee_by_asset, rel=1e-8)


def test_the_model_check_accepts_the_libraries_own_answers():
    instance = _bench_instance(10, 2)
    problem = parse_problem(instance["balances"], instance["targets"], instance["rails"])
    for asset in problem.assets:
        inst = asset_instance(problem, asset)
        outcome = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=10.0)
        assert outcome.status == "optimal", asset
        assert routing_solver._meets_model(inst, outcome.solution), asset
        k = len(inst.rails)
        off = outcome.solution.copy()
        used = np.flatnonzero(off[k:] == 1)
        off[k + used[0]] = 0  # a used rail that claims to be unused: carries flow without paying its fee
        assert not routing_solver._meets_model(inst, off), asset


def test_without_the_library_the_planner_uses_highs_alone(monkeypatch):
    instance = _bench_instance(10, 1)
    args = (instance["balances"], instance["targets"], instance["rails"])
    with solving_with("compiled"):
        expected = plan_routes(*args)
    monkeypatch.setattr(routing_bnb, "library", lambda: None)
    assert routing_bnb.solve(asset_instance(parse_problem(*args), "USDT"), gap=MIP_REL_GAP).status == "error"
    with solving_with("highs"):  # what an install without cargo runs
        routing_solver.COMPILED_FIRST = True
        plan = plan_routes(*args)
    assert plan.fee_by_asset == pytest.approx(expected.fee_by_asset, rel=1e-8)


def test_highs_stops_at_once_when_interrupted():
    instance = _bench_instance(10, 0)
    inst = asset_instance(parse_problem(instance["balances"], instance["targets"], instance["rails"]), "ETH")
    assert routing_solver._solve_milp(inst, 60.0, interrupt=lambda: True) == ("interrupted", None)
    status, solution = routing_solver._solve_milp(inst, 60.0, interrupt=lambda: False)
    assert status == "optimal" and solution is not None


def test_a_cancelled_compiled_search_stops_at_its_next_node():
    instance = _bench_instance(20, 2)  # its USDT takes the compiled solver seconds (~23,000 nodes)
    inst = asset_instance(parse_problem(instance["balances"], instance["targets"], instance["rails"]), "USDT")
    cancel = ctypes.c_int32(0)
    threading.Timer(0.2, lambda: setattr(cancel, "value", 1)).start()
    started = time.thread_time()
    outcome = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=60.0, cancel=cancel)
    assert outcome.status == "limit" and outcome.solution is None
    assert time.thread_time() - started < 5.0  # this thread's CPU: stopped soon after the flag, not at 60 s


def test_when_highs_races_a_compiled_proof_it_is_interrupted_and_the_proof_is_taken(monkeypatch):
    args, expected = _with_highs_answer(1)
    statuses = []
    real_milp = routing_solver._solve_milp
    real_solve = routing_bnb.solve
    joined = {asset: threading.Event() for asset in expected.fee_by_asset}

    def held(inst, **kwargs):  # the compiled search starts only once HiGHS has joined (some assets take 1-2 ms)
        assert joined[inst.asset].wait(10)
        return real_solve(inst, **kwargs)

    def slow_start(inst, limit, **kwargs):  # HiGHS joins at once (no head start) and gives the compiled solver time
        joined[inst.asset].set()
        interrupt = kwargs["interrupt"]
        deadline = time.monotonic() + 10
        while not interrupt() and time.monotonic() < deadline:
            time.sleep(0.005)
        statuses.append(real_milp(inst, limit, **kwargs)[0])
        return (statuses[-1], None) if statuses[-1] == "interrupted" else real_milp(inst, limit)

    monkeypatch.setattr(routing_solver, "HEAD_START_SECONDS", 0.0)
    monkeypatch.setattr(routing_solver, "_solve_milp", slow_start)
    monkeypatch.setattr(routing_bnb, "solve", held)
    with solving_with("compiled"):
        plan = plan_routes(*args)
    assert statuses == ["interrupted"] * 3
    assert plan.fee_by_asset == pytest.approx(expected.fee_by_asset, rel=1e-8)
