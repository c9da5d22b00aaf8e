"""Python side of the prototype: the planner's pruned per-asset instance -> the Rust B&B (ctypes)."""

from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass

import numpy as np

from arb_orchestration.domain import routing_bnb
from arb_orchestration.domain.routing_solver import MIP_REL_GAP, asset_instance

# The library the planner ships (built by `pip install -e .`); BNB_LIB points at another build (an experiment).
_LIB = routing_bnb.load(os.environ["BNB_LIB"]) if os.environ.get("BNB_LIB") else routing_bnb.library()
if _LIB is None:
    raise SystemExit("the compiled branch-and-bound is not built: `make install` (needs cargo)")
_D = ctypes.POINTER(ctypes.c_double)
_I = ctypes.POINTER(ctypes.c_int32)

DEFAULT_OPTS = 1 | 4 | 8 | 256 | 8192  # = 8461, the measured config; 1 node big-M tightening, 2 fee-weighted branching score, 4 reduced-cost fixing, 8 periodic support heuristic, 32 underpaid-fee branching, 64 node-local mu, 128 reduced-cost caps, 256 cover rows, 512 knapsack cover rhs


@dataclass
class BnbResult:
    status: str  # optimal | infeasible | limit | lp_failure | trivial
    fee: float
    bound: float
    nodes: int
    lp_iters: int
    x: np.ndarray | None
    y: np.ndarray | None
    inst: object
    t_pre: float
    t_call: float


def arrays(inst):
    a = routing_bnb.model_arrays(inst)
    return list(inst.venues), a["from"], a["to"], a["f"], a["p"], a["me"], a["mm"], a["lo"], a["hi"]


def solve_asset_bnb(problem, asset, *, time_limit=60.0, max_nodes=10**7, opts=DEFAULT_OPTS, init_ub=float("inf")):
    t0 = time.perf_counter()
    inst = asset_instance(problem, asset)
    if not inst.needs:
        return BnbResult("trivial", 0.0, 0.0, 0, 0, None, None, inst, time.perf_counter() - t0, 0.0)
    if not inst.rails:
        return BnbResult("infeasible", float("nan"), float("nan"), 0, 0, None, None, inst, time.perf_counter() - t0, 0.0)
    venues, frm, to, f, p, me, mm, lo, hi = arrays(inst)
    n, k = len(venues), len(frm)
    x = np.zeros(k)
    y = np.zeros(k, dtype=np.uint8)
    info = np.zeros(6)
    t1 = time.perf_counter()
    dp = lambda a: a.ctypes.data_as(_D)
    ip = lambda a: a.ctypes.data_as(_I)
    rc = _LIB.bnb_solve(n, k, ip(frm), ip(to), dp(f), dp(p), dp(me), dp(mm), dp(lo), dp(hi), init_ub, MIP_REL_GAP,
                        time_limit, max_nodes, opts, dp(x), y.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), dp(info))
    t2 = time.perf_counter()
    status = {0: "optimal", 1: "infeasible", 2: "limit", 3: "lp_failure"}.get(rc, f"error {rc}")
    fee = float(np.sum(f * y + p * x)) if status == "optimal" else float("nan")
    return BnbResult(status, fee, float(info[2]), int(info[3]), int(info[4]), x, y, inst, t1 - t0, t2 - t1)


def check_feasible(res: BnbResult, tol=1e-7) -> str | None:
    """None if the plan meets every venue row and rail bound (relative tolerance), else what fails."""
    inst = res.inst
    venues, frm, to, f, p, me, mm, lo, hi = arrays(inst)
    x, y = res.x, res.y.astype(float)
    for j in range(len(x)):
        if y[j] not in (0.0, 1.0):
            return f"y[{j}]={y[j]}"
        if y[j] == 0 and abs(x[j]) > 1e-12:
            return f"rail {j} off but x={x[j]}"
        if y[j] == 1:
            if x[j] < me[j] - tol * (1 + me[j]):
                return f"rail {j} below min: {x[j]} < {me[j]}"
            if x[j] > mm[j] + tol * (1 + mm[j]):
                return f"rail {j} above max: {x[j]} > {mm[j]}"
    net = np.zeros(len(venues))
    np.add.at(net, to, (1 - p) * x - f * y)
    np.add.at(net, frm, -x)
    scale = 1 + np.abs(lo) + np.bincount(to, weights=x, minlength=len(venues)) + np.bincount(frm, weights=x, minlength=len(venues))
    bad = np.flatnonzero(net < lo - tol * scale)
    if bad.size:
        v = bad[0]
        return f"venue {venues[v]} net {net[v]} < need {lo[v]}"
    return None
