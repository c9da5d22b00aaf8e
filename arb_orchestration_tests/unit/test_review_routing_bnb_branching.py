"""Adversarial review of the compiled branch-and-bound's newer options (helper-84).

`routing_bnb.OPTIONS` gained 16384 (the flow heuristic every 10 nodes), 32768 (a RINS-like sub-search every 100
nodes) and 65536 (reliability branching: 25-iteration dual simplex probes from the node's basis, which fix the other
branching direction when a probe is infeasible or cannot beat the incumbent). These tests look for a wrong answer from
them: a proven "optimal" fee above the true optimum (HiGHS's, or the library's own without the new bits), a false
"infeasible", a crash, a time limit overrun.

What was found is two defects of one kind, and it is not the probes' logic (an instrumented build checked every probe-based fix,
~27,000 of them, and every solved probe value against the child's own LP solved from scratch: none was wrong except
when the node LP itself was, below). It is the node LP's tolerances against a whale's magnitudes (first tests); the new
options change which instances they strike. The rest keeps what held, seeded and small.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
import importlib.util
import sys

import pytest

from arb_orchestration.domain import routing_bnb
from arb_orchestration.domain.routing import parse_problem, plan_routes
from arb_orchestration.domain.routing_solver import MIP_REL_GAP, _meets_model, _solve_milp, asset_instance
from arb_orchestration_tests.unit.routing_solvers import random_small_instance, solving_with

NEW_BITS = 16384 | 32768 | 65536
# One search thread throughout: with two (routing_bnb.TWO_THREADS, shipped since) which of several equal-bound
# nodes is searched first varies between runs, and the whale defects below show in some runs and not in others
# (a strict xfail cannot hold on that). The defects are the one-thread search's, documented as such.
ONE_THREAD = routing_bnb.OPTIONS & ~routing_bnb.TWO_THREADS
WITHOUT_NEW = ONE_THREAD & ~NEW_BITS
BENCH = Path(__file__).resolve().parents[2] / "bench" / "route_planner.py"


def rail(rid, src, dst, fixed, rate=0.0, lo=0.0, hi=None):
    return {"id": rid, "from": src, "to": dst, "asset": "X", "fixed_fee": fixed, "fee_rate": rate,
            "min_amount": lo, "max_amount": hi, "eta_seconds": 1}


def instance(balances, targets, rails):
    return asset_instance(parse_problem(balances, targets, rails), "X")


def fee_of(inst, solution) -> float:
    k = len(inst.rails)
    return sum(inst.rails[j].fee(solution[j]) for j in range(k) if solution[k + j] > 0.5)


def proven(inst, options=ONE_THREAD, time_limit=5.0):
    """(status, fee or None) of the library on `inst`; an "optimal" must also pass the planner's model check."""
    outcome = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=time_limit, options=options)
    if outcome.status != "optimal":
        return outcome.status, None
    assert _meets_model(inst, outcome.solution), "an 'optimal' the planner's model check rejects"
    return "optimal", fee_of(inst, outcome.solution)


def _bench():
    spec = importlib.util.spec_from_file_location("bench_route_planner", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ the defect found

# A 1e12 whale (v0) feeds five small deficits (0.003-4.4) through v2 and a v1/v5/v6 web. The optimum is 0.00813188
# (HiGHS's order-free MILP optimum; the library without the new bits; the HiGHS-only planner's plan, 0.0081318780).
# With the shipped OPTIONS the library "proves" 0.00879123 (+8.1%), and the planner as shipped plans that: a fee
# 8.1% above the HiGHS-only planner's.
# Cause (lib.rs `Lp::fix_dual` / the dual simplex's optimality test): a nonbasic column counts as dual feasible when its
# reduced cost is within 1e-9 of the right sign, absolutely. The whale's rails have big-M ~2.6e14 after scaling, so a
# column left on the wrong bound with a reduced cost of 1e-12 moves the objective by a whole fixed fee; the node LP
# returns "optimal" with a value ABOVE its true minimum, and the node (here the child with v1->v5 on, which holds the
# optimum: 2.338 reported, 2.0818 solved from a slack basis, in scaled units) is pruned. Which wrong bound a column
# starts on is whatever the previous LP left in `at_upper` (solve_node restores the basis, not the bound sides), so
# the probes, which solve many more LPs between nodes, change where it strikes: over 3,000 random whale instances
# (helper-83's mixed/whale family) the shipped options were above the old ones' optimum 3 times and the old options
# above the shipped ones' 3 times; a 1e8 or smaller whale gives the optimum on both instances here.
# Tested fix (NOT applied: lib.rs is being edited by someone else in this checkout right now): in fix_dual, a
# tolerance relative to the column's range, `tol = 1e-9 / (ub - lb).max(1.0)` in place of 1e-9. On the 3,000 whale
# instances it removed all 7 wrong optima (with and without the new bits), and it fixes WHALE_FREE below, but it turned
# 11 (shipped options) and 15 (old) proven whale assets into "lp_failure" (HiGHS then plans them, and HiGHS has its own
# whale trouble), and on the bench (stress, 20 venues, seed 0) two assets went from "limit" to "lp_failure" at about
# half the node throughput; it does not fix WHALE_SLIVER. A lead, not a finished fix. Bounding the whale's big-M in the
# model (no plan needs the whole 1e12 surplus on one rail) is the other.
WHALE_WEB = (
    {"v0": {"X": 1e12}, "v1": {"X": 0.0}, "v2": {"X": 0.0}, "v3": {"X": 0.0}, "v4": {"X": 0.0}, "v5": {"X": 0.0},
     "v6": {"X": 0.2217593162288502}},
    {"v0": {"X": 0.0}, "v1": {"X": 0.8383825074308318}, "v2": {"X": 0.06491764861102269},
     "v3": {"X": 0.0026006339873821424}, "v4": {"X": 1.5001105665583863}, "v5": {"X": 4.416146786439141},
     "v6": {"X": 0.0}},
    [rail("r0", "v0", "v2", 0.001, 0.001, 0.001, 1e6), rail("r1", "v2", "v6", 0.0001, 0.0, 0.001, 5.0),
     rail("r2", "v2", "v5", 0.5), rail("r3", "v2", "v0", 0.001, 0.001), rail("r4", "v4", "v6", 0.5, 0.0001, 0.001),
     rail("r5", "v6", "v5", 0.0001, 0.0, 0.1, 5.0), rail("r6", "v5", "v6", 0.001, 0.001, 0.0, 1e6),
     rail("r7", "v6", "v1", 0.0, 0.001), rail("r8", "v2", "v1", 0.0, 0.0001, 0.001, 5.0),
     rail("r9", "v5", "v3", 0.0), rail("r10", "v2", "v1", 0.0001, 0.0001), rail("r11", "v1", "v4", 0.001, 0.0, 0.001),
     rail("r12", "v1", "v5", 0.0, 0.0001), rail("r13", "v3", "v5", 0.001),
     rail("r14", "v1", "v3", 0.0001, 0.0001, 0.001), rail("r15", "v2", "v4", 0.5, 0.0001, 0.0, 1e6),
     rail("r16", "v6", "v4", 0.0001), rail("r17", "v6", "v0", 0.5, 0.0, 0.001),
     rail("r18", "v2", "v0", 0.001, 0.001, 0.0, 1e6), rail("r19", "v2", "v4", 0.0001, 0.001, 0.1, 1e6),
     rail("r20", "v5", "v2", 0.5, 0.001), rail("r21", "v3", "v2", 0.001, 0.0, 0.0, 5.0)],
)
WHALE_WEB_OPTIMUM = 0.008131877999102916

# Same cause, smaller: a 1e9 whale; shipped options "prove" 0.50914 (one useless 0.001 rail, r1 at 0.001), the optimum
# is 0.50813 (HiGHS's MILP and the old options). The HiGHS-only planner plans 0.50955 here (its whale trouble, see
# test_review_routing_bnb), so the planner as shipped is not above it on this one: a library-level defect only.
WHALE_CYCLE = (
    {"v0": {"X": 1e9}, "v1": {"X": 0.0}, "v2": {"X": 0.0}, "v3": {"X": 0.0}, "v4": {"X": 0.6171088673709231},
     "v5": {"X": 1.0280793817569733}},
    {"v0": {"X": 0.0}, "v1": {"X": 4.824788854131984}, "v2": {"X": 2.926769243844253},
     "v3": {"X": 2.1139697387543546}, "v4": {"X": 0.0}, "v5": {"X": 0.0}},
    [rail("r0", "v2", "v4", 0.001, 0.001, 0.001), rail("r1", "v5", "v2", 0.001), rail("r2", "v1", "v3", 0.001, 0.0001, 0.1),
     rail("r3", "v5", "v4", 0.001, 0.0, 0.1), rail("r4", "v2", "v5", 0.0, 0.0, 0.1),
     rail("r5", "v0", "v3", 0.5, 0.0001, 0.001), rail("r6", "v0", "v2", 0.5, 0.0001, 0.0, 5.0),
     rail("r7", "v3", "v0", 0.0001), rail("r8", "v2", "v4", 0.5, 0.0001, 0.0, 5.0), rail("r9", "v3", "v4", 0.5, 0.001),
     rail("r10", "v0", "v4", 0.0, 0.001, 0.0, 1e6), rail("r11", "v4", "v1", 0.001, 0.0001, 0.001),
     rail("r12", "v1", "v3", 0.0001, 0.001, 0.1, 5.0)],
)
WHALE_CYCLE_OPTIMUM = 0.5081341582993312

WHALE_DEFECT = pytest.mark.xfail(strict=True, reason=(
    "lib.rs: with a 1e9-1e12 whale the node LP's absolute tolerances (1e-9 on a reduced cost, against big-M columns "
    "spanning ~1e14 and a row bound of ~1e15) let a node LP report 'optimal' above its true minimum, and the node "
    "holding the optimum is pruned; with or without the new options. Not fixed here (a fix_dual tolerance relative "
    "to the column's range fixes web, cycle and free, not sliver, and costs LP failures elsewhere)"))


@WHALE_DEFECT
@pytest.mark.parametrize("name", ["web_1e12", "cycle_1e9"])
def test_a_whales_big_m_does_not_make_the_library_prove_a_dearer_plan(name):
    data, optimum = {"web_1e12": (WHALE_WEB, WHALE_WEB_OPTIMUM), "cycle_1e9": (WHALE_CYCLE, WHALE_CYCLE_OPTIMUM)}[name]
    inst = instance(*data)
    status, fee = proven(inst)
    assert status == "optimal"
    assert fee <= optimum * (1 + 1e-9), (fee, optimum)


# A third whale (1e12; deficits 0.0015 and 0.0028, fixed fees up to 0.5): the shipped options prove 0.50214, the
# optimum is ~0.50150 (HiGHS's MILP 0.501504; the HiGHS-only planner 0.5015524); the library WITHOUT the new bits
# proves 1.00105 (2x). A 1e10 whale: 0.5015524 with the shipped options. The fix_dual change does not help this one.
WHALE_SLIVER = (
    {"v0": {"X": 1e12}, "v1": {"X": 0.6473475368714967}, "v2": {"X": 0.0}, "v3": {"X": 1.195716492455908},
     "v4": {"X": 41.51918822471666}, "v5": {"X": 0.0}, "v6": {"X": 0.01505340931748021}},
    {"v0": {"X": 0.0}, "v1": {"X": 0.0}, "v2": {"X": 0.001535407155239899}, "v3": {"X": 0.0}, "v4": {"X": 0.0},
     "v5": {"X": 0.0027734244605317647}, "v6": {"X": 0.0}},
    [rail("r0", "v5", "v6", 0.001, 0.0001), rail("r1", "v0", "v6", 0.0, 0.0001), rail("r2", "v0", "v3", 0.001, 0.001, 0.1),
     rail("r3", "v4", "v1", 0.5, 0.0001, 0.001, 1e6), rail("r4", "v6", "v3", 0.0, 0.001, 0.001, 5.0),
     rail("r5", "v4", "v0", 0.001, 0.0001, 0.0, 1e6), rail("r6", "v1", "v3", 0.0, 0.0, 0.0, 5.0),
     rail("r7", "v5", "v1", 0.0001, 0.0, 0.001, 1e6), rail("r8", "v6", "v2", 0.001, 0.0001),
     rail("r9", "v3", "v2", 0.5, 0.001), rail("r10", "v4", "v3", 0.5, 0.001), rail("r11", "v6", "v5", 0.5, 0.001),
     rail("r12", "v4", "v3", 0.5, 0.0001, 0.001), rail("r13", "v2", "v6", 0.0001, 0.001, 0.0, 1e6),
     rail("r14", "v3", "v6", 0.5, 0.0001, 0.001, 5.0), rail("r15", "v0", "v6", 0.0001, 0.0001),
     rail("r16", "v4", "v2", 0.001, 0.0001, 0.0, 5.0), rail("r17", "v0", "v4", 0.0001, 0.0, 0.001, 1e6),
     rail("r18", "v5", "v4", 0.5, 0.001, 0.001), rail("r19", "v4", "v0", 0.0001, 0.001), rail("r20", "v6", "v0", 0.5, 0.001)],
)

# A fourth (1e9 whale; 3 plans at plan level out of 600 random whale instances were above the HiGHS-only planner, this
# the worst): v3 needs 0.0494, v1 holds 0.0451, and free rails v0->v1 (r2, capped 1e6) and v1->v3 (r5) make a plan of
# fee 0. Both option sets prove 0.001 (10x the HiGHS-only planner's 0.0001, itself not the optimum 0); with a 1e6
# whale both prove 0.
WHALE_FREE = (
    {"v0": {"X": 1e9}, "v1": {"X": 0.0451187593153146}, "v2": {"X": 14.821924955884263}, "v3": {"X": 0.0}},
    {"v0": {"X": 0.0}, "v1": {"X": 0.0}, "v2": {"X": 0.0}, "v3": {"X": 0.04936105412838828}},
    [rail("r0", "v0", "v3", 0.001, 0.0, 0.0, 1e6), rail("r1", "v0", "v1", 0.0001), rail("r2", "v0", "v1", 0.0, 0.0, 0.0, 1e6),
     rail("r3", "v1", "v0", 0.0001, 0.0001, 0.1, 5.0), rail("r4", "v2", "v1", 0.5, 0.0001),
     rail("r5", "v1", "v3", 0.0, 0.0, 0.001), rail("r6", "v1", "v2", 0.0001, 0.001, 0.1),
     rail("r7", "v0", "v2", 0.0001, 0.001, 0.001, 5.0), rail("r8", "v1", "v0", 0.0001, 0.001),
     rail("r9", "v2", "v3", 0.001, 0.001, 0.001, 1e6), rail("r10", "v3", "v0", 0.001), rail("r11", "v2", "v0", 0.001, 0.0, 0.001),
     rail("r12", "v0", "v3", 0.0001, 0.0, 0.001), rail("r13", "v1", "v3", 0.0001, 0.001, 0.001, 5.0)],
)


@pytest.mark.parametrize("name", ["web_1e12", "sliver_1e12", "free_1e9"])
def test_the_planner_is_not_dearer_than_the_highs_only_planner_with_a_whale(name):
    # the user-visible side of the defect: the compiled proof takes a millisecond, well inside its 0.5 s head start
    # in the race with HiGHS, so the planner planned the dearer plan (web: 0.0087912 against 0.0081319, +8.1%;
    # sliver: 0.5021412 against 0.5015524, +0.12%; free: 0.001 against 0.0001, 10x). Fixed in the planner (the
    # lead, routing_solver._without_whales: a whale is planned as holding what an optimal plan can take from it,
    # so no solver sees its size); the library-level defect above stays.
    data = {"web_1e12": WHALE_WEB, "sliver_1e12": WHALE_SLIVER, "free_1e9": WHALE_FREE}[name]
    with solving_with("highs"):
        reference = plan_routes(*data)
    with solving_with("compiled"):
        plan = plan_routes(*data)
    assert reference.feasible and plan.feasible
    assert plan.total_fee <= reference.total_fee * (1 + 1e-9), (plan.total_fee, reference.total_fee)


# Also a whale (1e12), also only with 65536, and NOT removed by the fix_dual change above: one rail (v3->v1, rate 1e-4)
# carried 0.1446049 where 0.1445078 covers v1's deficit, so the library "proved" a fee 0.067% above the optimum
# (1.44605e-05 against 1.44508e-05). Taken for rounding against the whale's row bound until the sixteenth session
# found the cause: a strong-branching probe stopped at its iteration limit left the LP with the inverse of the basis
# its pivots had reached, and the next LP on the node's basis updated that inverse as if it were the node's
# (test_routing_bnb_inverse.py). Fixed there (an LP stopped short forgets its factorisation); this was a strict xfail
# until then, and fails again with the library built without the fix. The planner's polishing had hidden it (the
# plan was right, 1.44508e-05, with either option set).
WHALE_AMOUNT = (
    {"v0": {"X": 1e12}, "v1": {"X": 0.0}, "v2": {"X": 0.012235013499074212}, "v3": {"X": 0.6208238166649452},
     "v4": {"X": 0.01568780287807235}},
    {"v0": {"X": 0.0}, "v1": {"X": 0.1444933293756516}, "v2": {"X": 0.0}, "v3": {"X": 0.0}, "v4": {"X": 0.0}},
    [rail("r0", "v1", "v0", 0.5, 0.001, 0.1), rail("r1", "v2", "v4", 0.0001, 0.0001, 0.0, 5.0),
     rail("r2", "v2", "v1", 0.0001, 0.0001, 0.001, 5.0), rail("r3", "v3", "v1", 0.0001, 0.0, 0.1),
     rail("r4", "v3", "v1", 0.0, 0.0001, 0.001, 5.0), rail("r5", "v0", "v1", 0.0001, 0.0001, 0.1, 5.0),
     rail("r6", "v3", "v1", 0.0001, 0.0001, 0.0, 5.0), rail("r7", "v0", "v1", 0.0001, 0.0001, 0.1),
     rail("r8", "v2", "v4", 0.0001, 0.001, 0.0, 1e6), rail("r9", "v1", "v2", 0.0001, 0.001),
     rail("r10", "v4", "v1", 0.001, 0.0001, 0.1, 5.0), rail("r11", "v1", "v4", 0.5, 0.0, 0.1),
     rail("r12", "v4", "v3", 0.0, 0.0001)],
)


def test_a_whale_does_not_leave_extra_amount_on_a_proven_plan():
    status, fee = proven(instance(*WHALE_AMOUNT))
    assert status == "optimal"
    assert fee <= 1.4450778015366694e-05 * (1 + 1e-9), fee


def test_the_planner_polishes_the_whales_extra_amount_away():
    assert proven(instance(*WHALE_AMOUNT), WITHOUT_NEW)[1] == pytest.approx(1.4450778015366694e-05, rel=1e-9)
    with solving_with("compiled"):
        plan = plan_routes(*WHALE_AMOUNT)
    assert plan.total_fee == pytest.approx(1.4450778015366694e-05, rel=1e-9)


@pytest.mark.parametrize("name", ["web_1e12", "cycle_1e9"])
def test_the_whale_instances_optimum_is_what_the_defect_test_says(name):
    """The reference the xfail above holds the library to: HiGHS's MILP optimum, and the library without the new
    bits, and the same instance with a 1e6 whale under the shipped options (the defect needs a big-M ~1e11+)."""
    data, optimum = {"web_1e12": (WHALE_WEB, WHALE_WEB_OPTIMUM), "cycle_1e9": (WHALE_CYCLE, WHALE_CYCLE_OPTIMUM)}[name]
    inst = instance(*data)
    status, solution = _solve_milp(inst, 30.0)
    assert status == "optimal" and fee_of(inst, solution) == pytest.approx(optimum, rel=1e-6)
    assert proven(inst, WITHOUT_NEW)[1] == pytest.approx(optimum, rel=1e-9)
    balances = {v: dict(a) for v, a in data[0].items()}
    balances["v0"]["X"] = 1e6
    assert proven(instance(balances, data[1], data[2]))[1] == pytest.approx(optimum, rel=1e-9)


# ------------------------------------------------------------------ what held (seeded, small)


def _ties(rng):
    """Every ordered pair joined by 1-4 identical rails: the LPs are as degenerate as they get (probes tie)."""
    venues = [f"v{i}" for i in range(rng.randint(3, 6))]
    balances = {v: {"X": 0.0} for v in venues}
    targets = {v: {"X": 0.0} for v in venues}
    sources = rng.sample(venues, rng.randint(1, len(venues) - 1))
    for v in venues:
        if v in sources:
            balances[v]["X"] = 100.0
        else:
            targets[v]["X"] = float(rng.choice([30, 50, 100, 150]))
    fixed, rate, low = rng.choice([0.0, 1.0]), rng.choice([0.0, 0.001]), rng.choice([0.0, 10.0])
    high = rng.choice([None, 60.0, 35.0])
    rails = [rail(f"r{a}{b}{i}", a, b, fixed, rate, low, high)
             for a in venues for b in venues if a != b for i in range(rng.randint(1, 4))]
    return balances, targets, rails


def _dense(rng):
    """8-15 venues, most pairs joined, minimums and caps: trees deep enough for the probes, heuristic and sub-search."""
    venues = [f"v{i}" for i in range(rng.randint(8, 15))]
    balances, targets = {}, {}
    for v in venues:
        target = rng.uniform(50, 150)
        role = rng.random()
        held = target + rng.uniform(10, 100) if role < 0.4 else (max(0.0, target - rng.uniform(5, 60)) if role < 0.75
                                                                    else target)
        balances[v], targets[v] = {"X": held}, {"X": target}
    surplus = sum(max(0.0, balances[v]["X"] - targets[v]["X"]) for v in venues)
    deficit = sum(max(0.0, targets[v]["X"] - balances[v]["X"]) for v in venues)
    if surplus < 1.2 * deficit:
        balances[venues[0]]["X"] += 1.2 * deficit - surplus
    rails = []
    for a in venues:
        for b in venues:
            if a != b and rng.random() < 0.8:
                for i in range(rng.randint(1, 2)):
                    rails.append(rail(f"r{a}{b}{i}", a, b, rng.choice([0, 0.2, 1, 1, 3]),
                                      rng.choice([0, 0, 0.0005, 0.001]), rng.choice([0, 1, 10]),
                                      rng.choice([None, None, 40.0, 80.0])))
    return balances, targets, rails


def _agree(inst, *, highs: bool):
    """The shipped options against the library without the new bits: same status, and a proven fee no higher (1e-9
    relative). Against HiGHS's MILP only the status: its order-free optimum can be far cheaper through slivers its
    1e-7 row tolerance allows (0.0002 against 0.8002 on one instance here, the library with and without the new bits
    agreeing), which the planner's polishing and sequencing then handle; test_review_routing_bnb compares plans."""
    status, fee = proven(inst)
    old_status, old_fee = proven(inst, WITHOUT_NEW)
    assert status == old_status or "limit" in (status, old_status), (status, old_status)
    if status == old_status == "optimal":
        assert fee <= old_fee * (1 + 1e-9) + 1e-12, (fee, old_fee)
    if highs:
        highs_status, solution = _solve_milp(inst, 30.0)
        if highs_status == "optimal":
            assert status != "infeasible", "the library says infeasible where HiGHS plans"
        elif highs_status == "infeasible":
            assert status != "optimal" or _meets_model(inst, routing_bnb.solve(inst, gap=MIP_REL_GAP).solution)
    return status


@pytest.mark.parametrize("family,count,seed", [("small", 150, 84), ("ties", 12, 841), ("dense", 6, 842)])
def test_new_options_agree_with_the_library_without_them(family, count, seed):
    # Held over 3,000 random_small_instance, 2,000 small, 300 ties, 150 dense (8-15 venues) and 1,000 mixed-magnitude
    # instances in the review (only the whale defect above differed); seeded, much smaller here.
    rng = random.Random(seed)
    statuses = []
    for _ in range(count):
        data = {"small": random_small_instance, "ties": _ties, "dense": _dense}[family](rng)
        inst = instance(*data)
        if not inst.needs or not inst.rails:
            continue
        statuses.append(_agree(inst, highs=family != "dense"))
    assert "optimal" in statuses  # the families reach the branch-and-bound, not only trivial or infeasible assets


@pytest.mark.parametrize("bit", [16384, 32768, 65536])
def test_each_new_bit_alone_agrees_with_the_library_without_them(bit):
    rng = random.Random(8400 + bit % 97)
    for _ in range(60):
        inst = instance(*random_small_instance(rng))
        if not inst.needs or not inst.rails:
            continue
        status, fee = proven(inst, WITHOUT_NEW | bit)
        old_status, old_fee = proven(inst, WITHOUT_NEW)
        assert status == old_status
        if status == "optimal":
            assert fee == pytest.approx(old_fee, rel=1e-9, abs=1e-12)


def test_bench_assets_at_ten_venues_get_the_same_proven_fee_with_and_without_the_new_options():
    # spec and stress, 10 venues: every asset proven both ways, the same fee (the review ran 10-20 venues, seeds 0-2,
    # plus an instrumented build checking each probe-based fix against the child's LP: 11,893 fixes on the bench
    # instances, none wrong)
    bench = _bench()
    proved = 0
    for family in ("spec", "stress"):
        data = bench.make_instance(10, 0, family=family)
        problem = parse_problem(data["balances"], data["targets"], data["rails"])
        for asset in ("USDT", "USDC", "ETH"):
            inst = asset_instance(problem, asset)
            status, fee = proven(inst, time_limit=3.0)
            old_status, old_fee = proven(inst, WITHOUT_NEW, time_limit=3.0)
            if status == old_status == "optimal":
                proved += 1
                assert fee == pytest.approx(old_fee, rel=1e-9)
            else:
                assert "infeasible" not in (status, old_status)
    assert proved >= 4


def test_the_root_with_its_probes_stays_near_the_time_limit_at_thirty_venues():
    # the time limit is read between nodes; the root (LP, flow heuristic, core sub-search, 16 probes) ran 0.07-0.14 s
    # past a 0.05 s limit at 30 venues (2,465-2,791 rails), no more than the options before them
    data = _bench().make_instance(30, 0, family="stress")
    inst = asset_instance(parse_problem(data["balances"], data["targets"], data["rails"]), "USDT")
    started = time.perf_counter()
    outcome = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=0.05)
    elapsed = time.perf_counter() - started
    assert outcome.status in ("limit", "optimal")
    assert elapsed < 2.0, elapsed
