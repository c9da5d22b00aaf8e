"""The route planner's compiled exact branch-and-bound: it races HiGHS on every asset, and the first proof wins.

The library is Rust, standard library only (`routing_bnb_rust/src/lib.rs`), built by `pip install`
(setuptools-rust, `pyproject.toml`) into `_routing_bnb.<ext suffix>` beside this file and loaded with ctypes.
It solves exactly the planner's per-asset model (`AssetInstance`: the pruned rails, their big-M bounds and
minimums) by best-first branch-and-bound with its own small dual simplex per node, to the planner's relative
gap (`MIP_REL_GAP`). Only a proven optimum is taken from it; on anything else (infeasible, the time limit, an LP
that failed numerically, a panic, no library) the asset's answer is HiGHS's, as before
(`routing_solver._solve_exactly`). docs/route-planner.md "The compiled branch-and-bound" says why it is exact
and what it measured.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import math
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

# Branch-and-bound options (a bit mask the library reads): 1 node big-M tightening, 4 reduced-cost fixing,
# 8 the periodic "fix the rails that carry flow" heuristic, 256 a cover row per deficit venue, 8192 a small
# sub-B&B on the root's most promising rails, 16384 that heuristic every 10 nodes instead of 100, 32768 a
# RINS-like sub-search every 100 nodes (the node's LP support + the incumbent's rails), 65536 reliability
# branching (the best 8 candidates probed both ways with 25 dual simplex iterations until each has 4 probes).
# 131072 (TWO_THREADS): after the root, two threads search the tree, sharing the open nodes and the incumbent's
# value (1.3-2.2x on the trees of 20-30 venues on two idle cores; the proofs are the same, the plans among equal
# fees may differ).
# The combination measured fastest on the bench's instances (docs/route-planner.md, tenth and eleventh sessions).
# 16777216 (RC_FEE): reduced-cost fixing (4) that counts each rail's fee column as well as its amount column (the
# node LP puts most of a rail's fixed fee in its fee column, which the plain rule left out); 33554432 (RC_CAPS): the same
# bound caps a rail's amount in the subtree (a smaller big-M there). Together 2.5-4x fewer nodes and 2.5-3.5x faster
# at 20-30 venues (twelfth session).
# 1073741824 (CORE_BY_AMOUNT): the root's core sub-search (8192) runs a second time, with the incumbent the first one
# found, on rails ranked by the reduced-cost bound on sending the mean deficit over them: the optimum's relay rails
# rank near the top there (not among the cheapest to switch on), so the root often holds the optimum before the
# search starts. Two threads, 20-30-venue bench: 1.35x faster in all (30:2 4.5 -> 2.7 s, 20:0 0.78 -> 0.58 s), 10
# venues unchanged (thirteenth session).
TWO_THREADS = 131072
RC_FEE = 16777216
RC_CAPS = 33554432
CORE_BY_AMOUNT = 1073741824
# When the branching rail was chosen by its pseudo-costs and they predict a child cannot beat the incumbent, that
# child is probed (up to 50 dual simplex iterations, stopping once its bound reaches the prune level) and, if the probe
# proves it, not created. 35-45 % fewer nodes on the 20-30-venue bench assets, `plan_routes` up to 16 % faster there
# (20:2 0.83 -> 0.76 s, 30:2 2.10 -> 1.76 s; 20:4 and 30:0 the same), 10 venues unchanged (sixteenth session).
VERIFY_DEAD = 4194304
OPTIONS = (1 | 4 | 8 | 256 | 8192 | 16384 | 32768 | 65536 | TWO_THREADS | RC_FEE | RC_CAPS | CORE_BY_AMOUNT
           | VERIFY_DEAD)
# The root's venue-bound cuts (1024: the planner's source/destination bound rows, separated at the root; 524288 drop
# the rows the LP leaves slack after each round; 1048576 run the root heuristics before the cuts; 2097152 the core
# sub-search once more on the cut LP's support): trees 2-20x smaller, nodes dearer. They pay from about
# CUTS_FROM_VENUES venues (30 venues: 1.4-1.5x faster; 20: about even; 10: up to 1.6x slower), so `options_for`
# adds them from there.
# 262144 (CORE_OVERLAP): with two search threads, that last core sub-search is not run at the root but by the first
# search thread while the other starts on the tree (the second core sat idle through it: 40-100 ms of a 0.1-0.2 s
# root; fifteenth session: 0.93x the solve time over the 20- and 30-venue bench assets).
CORE_OVERLAP = 262144
ROOT_CUTS = 1024 | 524288 | 1048576 | 2097152 | CORE_OVERLAP
CUTS_FROM_VENUES = 20
# A diagnostic, never in the planner's options: the library checks every basis inverse it updates instead of
# refactoring against its basis and counts checks and failures process-wide (`bnb_inverse_checks`); the tests use it.
CHECK_INVERSE = 67108864
# The planner races this solver against HiGHS within the asset's time limit (routing_solver._solve_exactly); the
# time limit is what binds, this only bounds memory (a few hundred bytes a node).
MAX_NODES = 10_000_000
# Amounts are scaled by a power of two (exact in binary floating point) so that the largest deficit is about
# this size (`amount_scale`): the library's tolerances are absolute, tuned for amounts of that order.
AMOUNT_MAGNITUDE = 1024.0

_STATUS = {0: "optimal", 1: "infeasible", 2: "limit", 3: "lp_failure"}
_D = ctypes.POINTER(ctypes.c_double)
_I = ctypes.POINTER(ctypes.c_int32)


@dataclass(frozen=True)
class Outcome:
    status: str  # optimal | infeasible | limit | lp_failure | error
    solution: np.ndarray | None  # the planner's layout: amounts of every rail, then the 0/1 "used" flags
    nodes: int
    seconds: float


def library_path() -> Path | None:
    """The built library beside this module, if any."""
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = here / f"_routing_bnb{suffix}"
        if candidate.exists():
            return candidate
    return None


@cache
def library() -> ctypes.CDLL | None:
    """The loaded library, or None when it was not built (the planner then uses HiGHS alone)."""
    path = library_path()
    return None if path is None else load(path)


def load(path: str | Path) -> ctypes.CDLL:
    """Load a build of the library (the shipped one through `library()`; bench/planner_bnb loads experiments)."""
    lib = ctypes.CDLL(str(path))
    arguments = [ctypes.c_int32, ctypes.c_int32, _I, _I, _D, _D, _D, _D, _D, _D,
                 ctypes.c_double, ctypes.c_double, ctypes.c_double, ctypes.c_int64, ctypes.c_int32,
                 _D, ctypes.POINTER(ctypes.c_uint8), _D]
    lib.bnb_solve.restype = ctypes.c_int32
    lib.bnb_solve.argtypes = arguments
    lib.bnb_solve_cancellable.restype = ctypes.c_int32
    lib.bnb_solve_cancellable.argtypes = [*arguments, _I]
    return lib


def amount_scale(lo: np.ndarray) -> float:
    """A power of two bringing the largest deficit (positive `lo`) to about AMOUNT_MAGNITUDE.

    Sized by the deficits, not the surpluses: a whale's 1e12 surplus would otherwise push a hub's 0.5 deficit
    below the library's absolute tolerances, and it would plan as if the hub needed nothing."""
    largest = float(np.max(lo)) if lo.size else 0.0
    if not math.isfinite(largest) or largest <= 0.0:
        return 1.0
    return math.ldexp(1.0, round(math.log2(AMOUNT_MAGNITUDE / largest)))


def model_arrays(inst) -> dict[str, np.ndarray]:
    """The per-asset model as the library reads it (unscaled).

    `lo[v]` = target - balance (the least net inflow venue v needs); `hi[v]` = max(lo + mu, 0) with `mu` the
    largest credit any rail into v delivers at its minimum: some optimum leaves no venue higher (if one ended
    more than mu above its target, the last rail into it could be trimmed or dropped at no extra cost and less
    moved; a venue that only sends ends no higher than it started). The HiGHS model states the same argument as
    its destination-bound rows.
    """
    venues = list(inst.venues)
    index = {v: i for i, v in enumerate(venues)}
    rails = inst.rails
    frm = np.array([index[r.from_venue] for r in rails], dtype=np.int32)
    to = np.array([index[r.to_venue] for r in rails], dtype=np.int32)
    f = np.array([r.fixed_fee for r in rails], dtype=float)
    p = np.array([r.fee_rate for r in rails], dtype=float)
    me = np.array(inst.min_eff, dtype=float)
    mm = np.array(inst.big_m, dtype=float)
    lo = np.array([inst.target[v] - inst.balance[v] for v in venues], dtype=float)
    mu = np.zeros(len(venues))
    with np.errstate(invalid="ignore"):  # non-finite input (an overflowed sum) gets here: the library refuses it
        if len(rails):
            np.maximum.at(mu, to, (1 - p) * me - f)
        hi = np.maximum(lo + mu, 0.0)
    return {"from": frm, "to": to, "f": f, "p": p, "me": me, "mm": mm, "lo": lo, "hi": hi}


def options_for(inst) -> int:
    """The options the planner solves `inst` with: OPTIONS, plus ROOT_CUTS from CUTS_FROM_VENUES venues."""
    venues = {r.from_venue for r in inst.rails} | {r.to_venue for r in inst.rails}
    return OPTIONS | (ROOT_CUTS if len(venues) >= CUTS_FROM_VENUES else 0)


def solve(inst, *, gap: float, time_limit: float = 10.0, max_nodes: int | None = None,
          options: int | None = None, cancel: ctypes.c_int32 | None = None) -> Outcome:
    """Solve one asset's model; `Outcome.solution` is set only for a proven optimum.

    `options`: the library's option bits; None is `options_for(inst)`.

    `cancel`: set its value to non-zero from another thread to stop the search at its next node (status
    "limit"); the library runs without the GIL, so a race against HiGHS in another thread is real parallelism.
    """
    lib = library()
    started = time.perf_counter()
    if lib is None:
        return Outcome("error", None, 0, 0.0)
    a = model_arrays(inst)
    n, k = len(inst.venues), len(inst.rails)
    scale = amount_scale(a["lo"])
    f, me, mm, lo, hi = (np.ascontiguousarray(a[key] * scale) for key in ("f", "me", "mm", "lo", "hi"))
    frm, to, p = (np.ascontiguousarray(a[key]) for key in ("from", "to", "p"))
    x = np.zeros(k)
    y = np.zeros(k, dtype=np.uint8)
    info = np.zeros(6)
    dp = lambda arr: arr.ctypes.data_as(_D)  # noqa: E731
    ip = lambda arr: arr.ctypes.data_as(_I)  # noqa: E731
    arguments = (n, k, ip(frm), ip(to), dp(f), dp(p), dp(me), dp(mm), dp(lo), dp(hi), math.inf, gap, float(time_limit),
                 int(MAX_NODES if max_nodes is None else max_nodes), int(options_for(inst) if options is None else options), dp(x),
                 y.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), dp(info))
    if cancel is None:
        code = lib.bnb_solve(*arguments)
    else:
        code = lib.bnb_solve_cancellable(*arguments, ctypes.byref(cancel))
    seconds = time.perf_counter() - started
    status = _STATUS.get(int(code), "error")
    if status != "optimal":
        return Outcome(status, None, int(info[3]), seconds)
    used = y.astype(float)
    return Outcome(status, np.r_[np.where(used > 0, x / scale, 0.0), used], int(info[3]), seconds)
