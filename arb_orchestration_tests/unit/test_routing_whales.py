"""A "whale" (one venue holding far more than any optimal plan can take from it) is planned as if it held only
that much (`routing_solver._without_whales`): same optimum, and no solver sees the whale's size."""

from __future__ import annotations

import random

import pytest

from arb_orchestration.domain.routing import parse_problem, plan_routes
from arb_orchestration.domain import routing_solver
from arb_orchestration.domain.routing_solver import _without_whales
from arb_orchestration_tests.unit.routing_solvers import random_small_instance, solving_with
from arb_orchestration_tests.unit.test_review_routing_bnb import assert_executable


def _with_whale(balances, targets, rails, size):
    """The instance with its richest venue holding `size` more."""
    richest = max(balances, key=lambda v: balances[v]["X"] - targets.get(v, {}).get("X", 0.0))
    grown = {v: dict(per) for v, per in balances.items()}
    grown[richest]["X"] += size
    return grown, richest


def _seen_whale_sizes(monkeypatch, whale: str) -> list[float]:
    """What the solvers are given as `whale`'s balance, one entry per solve of the (lowered) problem."""
    seen: list[float] = []
    real = routing_solver._solve_lowered

    def spy(problem, asset, limit):
        seen.append(problem.balance(whale, "X"))
        return real(problem, asset, limit)

    monkeypatch.setattr(routing_solver, "_solve_lowered", spy)
    return seen


def _relay_only(deficit: float, fee: float):
    """A 1e12 whale W that reaches D only through H (no direct plan), each leg costing `fee`."""
    balances = {"W": {"X": 1e12}, "H": {"X": 0.0}, "D": {"X": 0.0}}
    rails = [{"id": "wh", "from": "W", "to": "H", "asset": "X", "fixed_fee": fee, "fee_rate": 0.0},
             {"id": "hd", "from": "H", "to": "D", "asset": "X", "fixed_fee": fee, "fee_rate": 0.0}]
    return balances, {"D": {"X": deficit}}, rails


def test_a_whale_is_lowered_to_what_it_can_give_and_nothing_else_changes(monkeypatch):
    balances = {"W": {"X": 1e12}, "A": {"X": 50.0}, "D": {"X": 0.0}}
    targets = {"D": {"X": 100.0}}
    rails = [{"id": "wd", "from": "W", "to": "D", "asset": "X", "fixed_fee": 1.0, "fee_rate": 0.001},
             {"id": "ad", "from": "A", "to": "D", "asset": "X", "fixed_fee": 0.5, "fee_rate": 0.0}]
    problem = parse_problem(balances, targets, rails)
    lift, spare, _ = routing_solver._whale_terms(problem, "X")
    assert lift == pytest.approx(100.0, abs=0.01)  # D's deficit (plus the ~0 it can gain at a rail's minimum)
    lowered = _without_whales(problem, "X", 200.0)
    assert lowered.balance("W", "X") == 200.0
    assert lowered.balance("A", "X") == 50.0 and lowered.targets == problem.targets and lowered.rails == problem.rails
    assert problem.balance("W", "X") == 1e12  # the caller's problem is untouched
    assert _without_whales(problem, "X", 1e11) is None  # not WHALE_RATIO times what it can give
    solved = _seen_whale_sizes(monkeypatch, "W")
    plan = plan_routes(balances, targets, rails)
    assert solved and solved[0] < 110.0  # the solvers saw a W of about 100 (direct plan 1.1 + lift 100)
    assert plan.feasible and plan.total_fee == pytest.approx(1.0 + 0.001 * 101.0 / 0.999, rel=1e-9)  # W alone


def test_without_a_direct_plan_a_guess_is_certified_by_the_answer(monkeypatch):
    # W reaches D only through H (no direct rail), so there is no direct plan to bound the fee: the first guess
    # (2 x lift) is checked by the plan it gives, here enough at once.
    solved = _seen_whale_sizes(monkeypatch, "W")
    plan = plan_routes(*_relay_only(100.0, 1.0))
    assert plan.feasible and plan.total_fee == pytest.approx(2.0)
    assert len(solved) == 1 and solved[0] < 250.0


def test_a_guess_too_small_is_raised_until_the_plan_certifies_it(monkeypatch):
    # Fees far above the deficit: the guess 2 x lift (~2) leaves the lowered problem infeasible, then a larger
    # guess gives a plan whose fee (10 + 10) shows the guess was enough.
    solved = _seen_whale_sizes(monkeypatch, "W")
    plan = plan_routes(*_relay_only(1.0, 10.0))
    assert plan.feasible and plan.total_fee == pytest.approx(20.0)
    assert len(solved) >= 2 and solved[0] < 25.0 < solved[-1] < 1e12


@pytest.mark.parametrize("exact_solver", ["compiled", "highs"])
def test_random_instances_plan_the_same_with_a_whale_of_any_size(exact_solver):
    # Exactness of the lowering, checked: the same instance with its richest venue 1e4 richer (no lowering: below
    # WHALE_RATIO) and 1e6 / 1e12 richer (lowered) must cost the same, and the plan must run on the real balances.
    rng = random.Random(20261128)
    lowered_seen = compared = 0
    for _ in range(60):
        balances, targets, rails = random_small_instance(rng)
        small, _ = _with_whale(balances, targets, rails, 1e4)
        with solving_with(exact_solver):
            reference = plan_routes(small, targets, rails)
        if not reference.feasible:
            continue
        for size in (1e6, 1e12):
            grown, whale = _with_whale(balances, targets, rails, size)
            with pytest.MonkeyPatch.context() as patch, solving_with(exact_solver):
                seen = _seen_whale_sizes(patch, whale)
                plan = plan_routes(grown, targets, rails)
            lowered_seen += seen[-1] < grown[whale]["X"]
            assert plan.feasible, plan.reason
            assert_executable(grown, targets, rails, plan)
            assert plan.total_fee == pytest.approx(reference.total_fee, rel=1e-7, abs=1e-9), (grown, targets, rails)
            compared += 1
    assert compared >= 40 and lowered_seen >= compared // 2  # not vacuous: most whales were lowered
