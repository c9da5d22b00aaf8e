"""The planner's two exact solvers, for tests that must hold for both.

`plan_routes` tries the compiled branch-and-bound first and proves with HiGHS whatever it does not settle
(`routing_solver._solve_exactly`). On small test instances the compiled one settles nearly everything, so the
HiGHS path would go untested: tests that state what the planner answers run once per solver.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from arb_orchestration.domain import routing_bnb, routing_solver

SOLVERS = ("compiled", "highs")


@contextmanager
def solving_with(name: str) -> Iterator[None]:
    """`compiled`: the compiled branch-and-bound first (what ships; it must be built). `highs`: HiGHS alone."""
    assert name in SOLVERS, name
    if name == "compiled":
        assert routing_bnb.library() is not None, "the compiled branch-and-bound was not built (pip install -e .)"
    saved = routing_solver.COMPILED_FIRST
    routing_solver.COMPILED_FIRST = name == "compiled"
    try:
        yield
    finally:
        routing_solver.COMPILED_FIRST = saved


@pytest.fixture(params=SOLVERS)
def solver(request) -> Iterator[str]:
    with solving_with(request.param):
        yield request.param


def random_small_instance(rng: random.Random) -> tuple[dict, dict, list[dict]]:
    """4-7 venues, parallel rails, caps, minimums, zero and tiny fees: where exactness is easy to get wrong."""
    venues = [f"v{i}" for i in range(rng.randint(4, 7))]
    balances = {v: {"X": float(rng.choice([0, 0, 10, 50, 100, 200, 400]) + rng.choice([0, 0.5, 3.25]))} for v in venues}
    targets = {v: {"X": float(rng.choice([0, 0, 20, 60, 100, 150, 300]))} for v in venues}
    for v in rng.sample(venues, 2):
        balances[v]["X"] += float(rng.choice([100, 300, 600]))
    rails = []
    for i in range(rng.randint(6, 24)):
        src, dst = rng.sample(venues, 2)
        low = float(rng.choice([0, 0, 1, 5, 30, 80]))
        high = rng.choice([None, None, None, 25.0, 60.0, 150.0])
        rails.append({"id": f"r{i}", "from": src, "to": dst, "asset": "X",
                      "fixed_fee": float(rng.choice([0, 0, 0.5, 1, 3, 0.0001])),
                      "fee_rate": float(rng.choice([0, 0, 0.001, 0.01, 0.1])),
                      "min_amount": low, "max_amount": None if high is not None and high < low else high,
                      "eta_seconds": 1})
    return balances, targets, rails
