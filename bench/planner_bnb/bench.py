"""Benchmark: the Rust B&B vs the planner's solve_asset, same process, same instances."""
import sys, time, json
import os
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE)); sys.path.insert(0, HERE)  # bench/ (route_planner) and this folder
from route_planner import make_instance
from arb_orchestration.domain.routing import parse_problem
from arb_orchestration.domain.routing_solver import solve_asset, _solve_milp, asset_instance
from arb_orchestration.domain import routing_solver

routing_solver.COMPILED_FIRST = False  # the reference: the planner with HiGHS alone
import bnb
from bnb import solve_asset_bnb, check_feasible
import numpy as np

def raw_milp_fee(prob, asset):
    inst = asset_instance(prob, asset)
    status, sol = _solve_milp(inst, 120)
    k = len(inst.rails)
    return sum(inst.rails[j].fee(sol[j]) for j in range(k) if sol[k + j] > 0.5 and sol[j] > 1e-9)

cases = [c.split(":") for c in sys.argv[1].split(",")]
opts = int(sys.argv[2]); tl = float(sys.argv[3])
rows = []
for n, seed, fam in cases:
    d = make_instance(int(n), int(seed), family=fam)
    t = time.perf_counter(); prob = parse_problem(d["balances"], d["targets"], d["rails"]); tparse = time.perf_counter() - t
    tot_ref = tot_b = 0.0
    for a in prob.assets:
        t = time.perf_counter(); ref = solve_asset(prob, a, 120); tr = time.perf_counter() - t
        t = time.perf_counter(); r = solve_asset_bnb(prob, a, time_limit=tl, opts=opts); tb = time.perf_counter() - t
        tot_ref += tr; tot_b += tb
        feas = (check_feasible(r) or "ok") if r.status == "optimal" else "-"
        rel = abs(r.fee - ref.fee) / max(abs(ref.fee), 1e-300) if r.status == "optimal" else float("nan")
        rawrel = float("nan")
        if r.status == "optimal" and rel > 1e-12:
            raw = raw_milp_fee(prob, a); rawrel = abs(r.fee - raw) / raw
        row = dict(n=n, seed=seed, fam=fam, asset=a, rails=len(r.inst.rails), ref_fee=ref.fee, ref_s=tr, fee=r.fee, status=r.status,
                   bound=r.bound, nodes=r.nodes, iters=r.lp_iters, s=tb, pre=r.t_pre, call=r.t_call, rel=rel, rawrel=rawrel, feas=feas)
        rows.append(row)
        print(f"{fam:6} {n:>2}/{seed} {a:5} rails={row['rails']:5} planner {tr:7.3f}s bnb {tb:7.3f}s (pre+arrays {r.t_pre*1e3:.1f}ms) "
              f"{r.status:8} nodes={r.nodes:7} fee={r.fee:.10g} ref={ref.fee:.10g} rel={rel:.1e} vs-raw-milp={rawrel:.1e} feas={feas} bound={r.bound:.6g}", flush=True)
    print(f"{fam:6} {n:>2}/{seed} TOTAL planner {tot_ref:7.3f}s bnb {tot_b:7.3f}s (parse {tparse*1e3:.0f} ms, not in either)", flush=True)
json.dump(rows, open(sys.argv[4], "w"), indent=1)
