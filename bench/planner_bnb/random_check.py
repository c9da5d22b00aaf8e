"""Correctness: the Rust B&B vs the planner on random small instances (4-7 venues, caps, minimums, zero fees)."""
import sys, random, time
import os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from arb_orchestration.domain.routing import parse_problem
from arb_orchestration.domain.routing_solver import solve_asset, asset_instance, _solve_milp
from arb_orchestration.domain import routing_solver

routing_solver.COMPILED_FIRST = False  # the reference: the planner with HiGHS alone
from bnb import solve_asset_bnb, check_feasible
from arb_orchestration_tests.unit.routing_solvers import random_small_instance

def instance(rng):
    # the generator the tests use too (4-7 venues, parallel rails, caps, minimums, zero and tiny fees)
    return random_small_instance(rng)

def main(count, seed, opts):
    rng = random.Random(seed)
    stats = dict(n=0, feasible=0, infeasible=0, trivial=0, mismatch=0, infeas_disagree=0, bad_plan=0, limit=0, seq=0)
    worst = 0.0
    tb = tp = 0.0
    for i in range(count):
        bal, tgt, rails = instance(rng)
        prob = parse_problem(bal, tgt, rails)
        t = time.perf_counter()
        try:
            ref = solve_asset(prob, "X", 30)
        except Exception as exc:  # the planner itself failing is reported, not hidden
            print("PLANNER RAISED", i, type(exc).__name__, exc, "| instance:", bal, tgt, rails)
            stats["planner_raised"] = stats.get("planner_raised", 0) + 1
            r = solve_asset_bnb(prob, "X", time_limit=30, opts=opts)
            print("   bnb on it:", r.status, r.fee, check_feasible(r, 1e-9) if r.status == "optimal" else "")
            continue
        tp += time.perf_counter() - t
        t = time.perf_counter(); r = solve_asset_bnb(prob, "X", time_limit=30, opts=opts); tb += time.perf_counter() - t
        stats["n"] += 1
        if r.status == "trivial":
            stats["trivial"] += 1
            ok = ref.feasible and ref.fee == 0.0
            if not ok:
                stats["mismatch"] += 1; print("TRIVIAL MISMATCH", i, ref)
            continue
        if r.status not in ("optimal", "infeasible"):
            stats["limit"] += 1; print("STATUS", i, r.status); continue
        if (r.status == "optimal") != ref.feasible:
            if r.status == "optimal":
                # the planner's MILP may be feasible while no execution order exists (its sequencing step then says infeasible)
                inst = asset_instance(prob, "X")
                st, sol = _solve_milp(inst, 30)
                if st == "optimal":
                    k = len(inst.rails)
                    raw = sum(inst.rails[j].fee(sol[j]) for j in range(k) if sol[k + j] > 0.5 and sol[j] > 1e-9)
                    if abs(raw - r.fee) <= 1e-7 * max(raw, 1e-12) + 1e-12:
                        stats["unorderable_same_milp"] = stats.get("unorderable_same_milp", 0) + 1
                        print("unorderable MILP optimum, same MILP fee", i, r.fee, raw)
                        continue
            stats["infeas_disagree"] += 1; print("FEASIBILITY DISAGREES", i, r.status, ref.feasible, ref.reason); continue
        if r.status == "infeasible":
            stats["infeasible"] += 1; continue
        stats["feasible"] += 1
        bad = check_feasible(r, tol=1e-9)
        if bad:
            stats["bad_plan"] += 1; print("BAD PLAN", i, bad)
        # the planner's fee is after polishing (<= MILP fee + 1e-9*max(1,fee)); compare to its raw MILP too
        inst = asset_instance(prob, "X")
        st, sol = _solve_milp(inst, 30)
        k = len(inst.rails)
        raw = sum(inst.rails[j].fee(sol[j]) for j in range(k) if sol[k + j] > 0.5 and sol[j] > 1e-9)
        rel = abs(r.fee - ref.fee) / max(abs(ref.fee), 1e-12)
        relraw = abs(r.fee - raw) / max(abs(raw), 1e-12)
        d = min(rel, relraw) if ref.fee > 0 else abs(r.fee - ref.fee)
        worst = max(worst, min(rel, max(relraw, 0)))
        if ref.fee > raw * (1 + 1e-7) + 1e-9:
            stats["seq"] += 1; print("planner fee above its raw MILP fee (sequencing fallback?)", i, r.fee, ref.fee, raw)
            if relraw > 1e-7: stats["mismatch"] += 1; print("FEE MISMATCH vs raw", i)
            continue
        if rel > 1e-7 and r.fee > ref.fee:
            # is the planner's plan itself short somewhere? (then its fee is below the exact optimum)
            held = dict(inst.balance)
            for t in ref.transfers:
                held[t.from_venue] -= t.amount
                held[t.to_venue] += t.amount - t.fee
            short = max(inst.target[v] - held[v] for v in held)
            if short > 1e-9 * max(1.0, max(inst.target.values())):
                stats["planner_plan_short"] = stats.get("planner_plan_short", 0) + 1
                print(f"planner plan leaves a venue short by {short:.3g}; bnb fee {r.fee!r} (exactly feasible) vs planner {ref.fee!r}: rel {rel:.2e}", i)
                continue
        if rel > 1e-7 and not (abs(r.fee - ref.fee) <= 1e-9 * max(1, ref.fee) + 1e-12):
            stats["mismatch"] += 1; print("FEE MISMATCH", i, r.fee, ref.fee, raw, r.nodes)
    print(stats, f"worst rel diff {worst:.2e}; planner {tp:.2f}s, bnb {tb:.2f}s total", flush=True)

if __name__ == '__main__':
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
