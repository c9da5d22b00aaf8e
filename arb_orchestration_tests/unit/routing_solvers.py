"""The planner's two exact solvers, for tests that must hold for both.

`plan_routes` tries the compiled branch-and-bound first and proves with HiGHS whatever it does not settle
(`routing_solver._solve_exactly`). On small test instances the compiled one settles nearly everything, so the
HiGHS path would go untested: tests that state what the planner answers run once per solver.
"""

from __future__ import annotations

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
