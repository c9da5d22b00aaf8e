"""HiGHS's MIP presolve "proved" a dearer plan on this 4-venue instance (found by bench/planner_bnb/random_check.py,
seed 18, instance 262, in the sixteenth session): v3 needs 50; r12 alone (80 at its minimum, fee 0.0801) covers it,
yet HiGHS with presolve returned r12 plus a useless r7 (5, fee 0.0501) as optimal, 3 % above the optimum, although the
cheaper plan meets every row of the same model; with presolve off HiGHS finds it. So the planner solves its MILPs with
HiGHS's presolve off (`routing_solver.HIGHS_MIP_PRESOLVE`); these tests fail with it on."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import Bounds, LinearConstraint

from arb_orchestration.domain import routing_solver
from arb_orchestration.domain.routing import parse_problem, plan_routes
from arb_orchestration_tests.unit.routing_solvers import SOLVERS, solving_with


def _rail(rid, src, dst, fixed, rate, lo, hi):
    return {"id": rid, "from": src, "to": dst, "asset": "X", "fixed_fee": fixed, "fee_rate": rate, "min_amount": lo,
            "max_amount": hi, "eta_seconds": 1}


BALANCES = {"v0": {"X": 500.0}, "v1": {"X": 0.0}, "v2": {"X": 600.5}, "v3": {"X": 100.0}}
TARGETS = {"v0": {"X": 0.0}, "v1": {"X": 150.0}, "v2": {"X": 150.0}, "v3": {"X": 150.0}}
RAILS = [
    _rail("r0", "v0", "v3", 0.0, 0.01, 1.0, 25.0), _rail("r1", "v0", "v2", 0.0, 0.0, 0.0, 60.0),
    _rail("r2", "v0", "v2", 0.5, 0.1, 30.0, 150.0), _rail("r3", "v1", "v0", 0.5, 0.001, 80.0, None),
    _rail("r4", "v0", "v1", 0.0001, 0.01, 80.0, None), _rail("r5", "v3", "v0", 1.0, 0.0, 0.0, None),
    _rail("r6", "v2", "v1", 3.0, 0.001, 0.0, 150.0), _rail("r7", "v0", "v3", 0.0001, 0.01, 5.0, 25.0),
    _rail("r8", "v0", "v2", 0.5, 0.01, 5.0, None), _rail("r9", "v2", "v3", 0.5, 0.0, 0.0, None),
    _rail("r10", "v3", "v1", 1.0, 0.0, 0.0, 150.0), _rail("r11", "v0", "v2", 1.0, 0.001, 1.0, None),
    _rail("r12", "v0", "v3", 0.0001, 0.001, 80.0, None), _rail("r13", "v3", "v0", 1.0, 0.001, 80.0, None),
    _rail("r14", "v2", "v0", 3.0, 0.0, 0.0, None), _rail("r15", "v3", "v2", 0.5, 0.0, 30.0, None),
    _rail("r16", "v1", "v2", 3.0, 0.001, 30.0, 60.0), _rail("r17", "v0", "v3", 1.0, 0.1, 30.0, None),
]
# r4 carries 151.5153 (v1's 150 after its 1 % rate and 0.0001) and r12 80: 1.5151529 + 0.0801
OPTIMUM = 1.5953525252525254


@pytest.mark.parametrize("solver", SOLVERS)
def test_both_solver_paths_find_the_optimum_highs_presolve_missed(solver):
    with solving_with(solver):
        plan = plan_routes(BALANCES, TARGETS, RAILS)
    assert plan.feasible and plan.optimal
    assert plan.total_fee == pytest.approx(OPTIMUM, rel=1e-9)
    assert sorted(t.rail for t in plan.transfers) == ["r12", "r4"]


def test_the_scipy_wrapper_path_too():
    # run_milp, the path the planner takes when scipy moves the HiGHS object it drives directly
    inst = routing_solver.asset_instance(parse_problem(BALANCES, TARGETS, RAILS), "X")
    a = routing_solver._arrays(routing_solver._milp_model(inst))
    integrality = np.zeros(a.matrix.shape[1])
    integrality[len(inst.rails):2 * len(inst.rails)] = 1
    result = routing_solver.run_milp(a.cost, integrality=integrality, bounds=Bounds(a.lower, a.upper),
                                     constraints=LinearConstraint(a.matrix, a.row_lower, a.row_upper), time_limit=30.0)
    assert result.status == 0
    assert float(a.cost @ result.x) == pytest.approx(OPTIMUM, rel=1e-9)
