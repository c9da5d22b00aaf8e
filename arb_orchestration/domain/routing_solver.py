"""The planner's solver: per-asset pruning, the fixed-charge MILP, polishing, ordering, diagnostics.

Assets never interact (a rail moves one asset and charges its fee in that
asset), so each asset is its own small problem. Every pruning rule here keeps
at least one optimal executable plan; the reasons are in docs/route-planner.md
and next to each rule.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import coo_array

from arb_orchestration.domain import routing_bnb
from arb_orchestration.domain.routing import Plan, Problem, Rail, RoutingError, Transfer
from arb_orchestration.domain.routing_order import Move, funding_tolerance, order_moves

# HiGHS proves optimality to this relative gap (its default, 1e-4, is not "exact").
MIP_REL_GAP = 1e-9
_EPS = 1e-9

# HiGHS options scipy's `milp` does not expose. On these models the RINS/RENS
# sub-MIP heuristics cost most of the time (the incumbent is found early; the
# work is in the bound), and switching them off was 2-4x faster in
# bench/route_planner.py. They change speed only, never the proven optimum.
HIGHS_EXTRA_OPTIONS = {"mip_heuristic_run_rins": False, "mip_heuristic_run_rens": False}
extra_options_unavailable: str | None = None  # set (with the reason) if this scipy cannot take them
# HiGHS's MIP presolve off for every MILP the planner solves. The HiGHS scipy 1.17 bundles "proved" a plan 3 % dearer
# than the optimum on a 4-venue instance with presolve (a cheaper plan meets every row of the same model; presolve off
# finds it: unit/test_routing_highs_presolve.py); HiGHS's own tracker has the same kind of defect in its MIP presolve
# as late as 1.14 (ERGO-Code/HiGHS #3094, #3073, #1725). The compiled search proves first on every bench asset, so
# this is the fallback's correctness; its cost: 10 venues about the same, 20:1 4.2 -> 7.2 s with HiGHS alone.
HIGHS_MIP_PRESOLVE = False


def run_milp(c, *, integrality, bounds, constraints, time_limit: float, gap: float | None = MIP_REL_GAP):
    """`scipy.optimize.milp` plus HIGHS_EXTRA_OPTIONS, through scipy's own HiGHS wrapper.

    Falls back to plain `milp` (same answer, slower) if a scipy release moves
    the private entry points; `extra_options_unavailable` then says why.
    """
    global extra_options_unavailable
    options = {"time_limit": time_limit, "presolve": HIGHS_MIP_PRESOLVE}
    if gap is not None:
        options["mip_rel_gap"] = gap
    if extra_options_unavailable is None:
        try:
            from scipy.optimize import OptimizeResult
            from scipy.optimize import _milp as private

            args = private._milp_iv(c, integrality, bounds, constraints, dict(options))
            c_, integrality_, lb, ub, indptr, indices, data, b_l, b_u, opts = args
            opts.update(HIGHS_EXTRA_OPTIONS)
            raw = private._highs_wrapper(c_, indptr, indices, data, b_l, b_u, lb, ub, integrality_, opts)
            status, message = private._highs_to_scipy_status_message(raw.get("status"), raw.get("message"))
            x = raw.get("x")
            return OptimizeResult(status=status, message=message, x=None if x is None else np.array(x), fun=raw.get("fun"))
        except (ImportError, AttributeError, TypeError) as exc:
            extra_options_unavailable = f"{type(exc).__name__}: {exc}"
    return milp(c, integrality=integrality, bounds=bounds, constraints=constraints, options=options)


@dataclass
class AssetInstance:
    """One asset's slice of the problem, after pruning."""

    asset: str
    venues: list[str]
    balance: dict[str, float]
    target: dict[str, float]
    rails: list[Rail]
    big_m: list[float]  # upper bound on each rail's amount in the model
    min_eff: list[float]  # lower bound when used: max(min_amount, amount whose credit is 0)
    holdings: float
    surplus: float  # S: no single transfer can exceed it (see asset_instance)

    @property
    def needs(self) -> dict[str, float]:
        return {v: self.target[v] - self.balance[v] for v in self.venues if self.target[v] > self.balance[v] + _EPS}


@dataclass
class AssetResult:
    feasible: bool
    fee: float = 0.0
    transfers: list[Transfer] | None = None
    reason: str | None = None


# ------------------------------------------------------------------ pruning


def _min_eff(rail: Rail) -> float:
    # A transfer whose credit is negative only destroys money; dropping it
    # leaves every balance at least as high and every later transfer funded.
    return max(rail.min_amount, rail.fixed_fee / (1.0 - rail.fee_rate))


def asset_instance(problem: Problem, asset: str, *, dominance: bool = True) -> AssetInstance:
    """Slice `asset` out of `problem` and drop rails that no optimal executable plan needs.

    Amounts are bounded by the asset's total surplus S = sum of max(0,
    balance - target): under the floor rule (a transfer never takes its
    source below its own target) the total surplus over all venues never
    grows, and a transfer can only spend its source's surplus.
    """
    venues = list(problem.venues)
    balance = {v: problem.balance(v, asset) for v in venues}
    target = {v: problem.target(v, asset) for v in venues}
    surplus = sum(max(0.0, balance[v] - target[v]) for v in venues)

    def room(r: Rail) -> float:
        return surplus if r.max_amount is None else min(surplus, r.max_amount)

    rails = [
        r for r in problem.rails
        if r.asset == asset and _min_eff(r) <= room(r) + _EPS and room(r) * (1 - r.fee_rate) - r.fixed_fee > _EPS
    ]
    rails = _prune_unreachable(rails, balance, target)
    absorbed: dict[str, int] = {}
    if dominance:
        rails, absorbed = _prune_dominated(rails, surplus)
    # A kept rail may carry the merged transfers of the rails it dominates
    # (each at most S), hence the multiplier; without merging, S suffices.
    big_m = [room(r) if not absorbed.get(r.id) else (
        surplus * (1 + absorbed[r.id]) if r.max_amount is None else min(r.max_amount, surplus * (1 + absorbed[r.id])))
        for r in rails]
    return AssetInstance(asset, venues, balance, target, rails, big_m, [_min_eff(r) for r in rails],
                         sum(balance.values()), surplus)


def _prune_unreachable(rails: list[Rail], balance: dict[str, float], target: dict[str, float]) -> list[Rail]:
    """Drop rails out of venues that can never hold the asset, and into venues that lead to no deficit.

    A venue with no surplus and no usable inbound rail can never fund a
    transfer under the floor rule. A venue that cannot reach any venue with a deficit only strands
    what it receives: removing every transfer into (and so within) that set
    leaves all other venues with at least as much, for less fee.
    """
    while True:
        funded = {v for v, b in balance.items() if b > target[v] + _EPS}
        frontier = list(funded)
        out: dict[str, list[Rail]] = {}
        inn: dict[str, list[Rail]] = {}
        for r in rails:
            out.setdefault(r.from_venue, []).append(r)
            inn.setdefault(r.to_venue, []).append(r)
        while frontier:
            v = frontier.pop()
            for r in out.get(v, ()):
                if r.to_venue not in funded:
                    funded.add(r.to_venue)
                    frontier.append(r.to_venue)
        useful = {v for v in balance if target[v] > balance[v] + _EPS}
        frontier = list(useful)
        while frontier:
            v = frontier.pop()
            for r in inn.get(v, ()):
                if r.from_venue not in useful:
                    useful.add(r.from_venue)
                    frontier.append(r.from_venue)
        kept = [r for r in rails if r.from_venue in funded and r.to_venue in useful]
        if len(kept) == len(rails):
            return kept
        rails = kept


def _prune_dominated(rails: list[Rail], surplus: float) -> tuple[list[Rail], dict[str, int]]:
    """Drop a rail when a parallel rail is no worse on fixed fee, fee rate, min_amount and eta, and never runs out of room.

    Any transfer on the dropped rail can move to the dominating one (merged
    with its own transfer if it has one): same debit, no smaller credit, no
    larger fee. "Never runs out of room" means its max_amount is None or at
    least S times the number of parallel rails, i.e. above anything merging
    could put on it (each transfer is at most S).
    """
    by_edge: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(rails):
        by_edge.setdefault((r.from_venue, r.to_venue), []).append(i)
    dropped: set[int] = set()
    absorbed: dict[str, int] = {}
    for members in by_edge.values():
        if len(members) < 2:
            continue
        room = surplus * len(members)
        keys = [(rails[i].fixed_fee, rails[i].fee_rate, rails[i].min_amount, rails[i].eta_seconds) for i in members]
        roomy = [rails[j].max_amount is None or rails[j].max_amount >= room for j in members]
        for a, i in enumerate(members):
            ki = keys[a]
            for b, j in enumerate(members):
                if a == b or j in dropped or not roomy[b]:
                    continue
                kj = keys[b]
                # no worse on all four; identical rails: keep the first, so two copies never drop each other
                if kj[0] <= ki[0] and kj[1] <= ki[1] and kj[2] <= ki[2] and kj[3] <= ki[3] and (kj != ki or j < i):
                    dropped.add(i)
                    break
        kept_here = [j for j in members if j not in dropped]
        for j in kept_here:
            absorbed[rails[j].id] = len(members) - len(kept_here)
    return [r for i, r in enumerate(rails) if i not in dropped], absorbed


# ------------------------------------------------------------------ the MILP


def _flow_matrix(inst: AssetInstance, rows: list[str]) -> tuple[coo_array, int]:
    """Rows: one per venue in `rows`, net change of that venue's balance as a function of (x, y)."""
    k = len(inst.rails)
    index = {v: i for i, v in enumerate(rows)}
    ri, ci, val = [], [], []
    for j, r in enumerate(inst.rails):
        if r.to_venue in index:
            ri += [index[r.to_venue], index[r.to_venue]]
            ci += [j, k + j]
            val += [1.0 - r.fee_rate, -r.fixed_fee]
        if r.from_venue in index:
            ri.append(index[r.from_venue])
            ci.append(j)
            val.append(-1.0)
    return coo_array((val, (ri, ci)), shape=(len(rows), 2 * k)), k


def _touched_venues(inst: AssetInstance) -> list[str]:
    touched = {v for r in inst.rails for v in (r.from_venue, r.to_venue)} | set(inst.needs)
    return [v for v in inst.venues if v in touched]


def _link_constraints(inst: AssetInstance) -> list[LinearConstraint]:
    k = len(inst.rails)
    eye = np.arange(k)
    # x - M y <= 0 and x - min_eff y >= 0
    upper = coo_array((np.r_[np.ones(k), -np.asarray(inst.big_m)], (np.r_[eye, eye], np.r_[eye, k + eye])), shape=(k, 2 * k))
    lower = coo_array((np.r_[np.ones(k), -np.asarray(inst.min_eff)], (np.r_[eye, eye], np.r_[eye, k + eye])), shape=(k, 2 * k))
    return [LinearConstraint(upper, -np.inf, 0.0), LinearConstraint(lower, 0.0, np.inf)]


def _cover_cuts(inst: AssetInstance) -> LinearConstraint | None:
    # A venue with a deficit must receive at least one transfer: implied by
    # the integer model, not by its LP relaxation, so it tightens the bound.
    k = len(inst.rails)
    needs = list(inst.needs)
    if not needs:
        return None
    index = {v: i for i, v in enumerate(needs)}
    ri, ci = [], []
    for j, r in enumerate(inst.rails):
        if r.to_venue in index:
            ri.append(index[r.to_venue])
            ci.append(k + j)
    return LinearConstraint(coo_array((np.ones(len(ri)), (ri, ci)), shape=(len(needs), 2 * k)), 1.0, np.inf)


def _venue_bounds(inst: AssetInstance, rows: list[str]) -> tuple[coo_array, int]:
    """Variable upper bounds that tie each rail's amount to its two venues; two extra columns per venue.

    Columns 2k.. hold I_v (credits into v) and O_v (amounts out of v), defined
    by equality rows. Then, per rail r = u -> v:

    - source side: x_r <= surplus_u * y_r + I_u. Valid for every solution: u
      ends >= its target, so it cannot send more than its surplus plus what
      it receives.
    - destination side: credit_r <= (target_v - balance_v + mu_v) * y_r + O_v,
      mu_v the largest credit of any rail into v at its minimum amount. Valid
      for the cheapest solution that moves the least: if v ended more than
      mu_v above target, the last rail into it could be trimmed or dropped.
    """
    k, n = len(inst.rails), len(rows)
    index = {v: i for i, v in enumerate(rows)}
    inc, out = 2 * k, 2 * k + n
    mu = {v: 0.0 for v in rows}
    for j, r in enumerate(inst.rails):
        mu[r.to_venue] = max(mu[r.to_venue], r.credit(inst.min_eff[j]))
    ri: list[int] = []
    ci: list[int] = []
    val: list[float] = []
    row = 0

    def put(entries):
        nonlocal row
        for c, v in entries:
            ri.append(row)
            ci.append(c)
            val.append(v)
        row += 1

    # I_v - sum credits = 0 ; O_v - sum amounts = 0
    credits: dict[str, list] = {v: [] for v in rows}
    sends: dict[str, list] = {v: [] for v in rows}
    for j, r in enumerate(inst.rails):
        credits[r.to_venue] += [(j, -(1.0 - r.fee_rate)), (k + j, r.fixed_fee)]
        sends[r.from_venue].append((j, -1.0))
    for v in rows:
        put([(inc + index[v], 1.0), *credits[v]])
    for v in rows:
        put([(out + index[v], 1.0), *sends[v]])
    n_eq = row
    for j, r in enumerate(inst.rails):
        u, v = r.from_venue, r.to_venue
        spare = max(0.0, inst.balance[u] - inst.target[u])
        put([(j, 1.0), (k + j, -spare), (inc + index[u], -1.0)])
        room = inst.target[v] - inst.balance[v] + mu[v]
        put([(j, 1.0 - r.fee_rate), (k + j, -r.fixed_fee - room), (out + index[v], -1.0)])
    matrix = coo_array((val, (ri, ci)), shape=(row, 2 * k + 2 * n))
    return matrix, n_eq


def _milp_model(inst: AssetInstance):
    """The asset's MILP as (cost, integrality, bounds, constraints); columns x (k), y (k), I (n), O (n)."""
    k = len(inst.rails)
    rows = _touched_venues(inst)
    n = len(rows)

    def widen(c: LinearConstraint) -> LinearConstraint:
        from scipy.sparse import hstack

        return LinearConstraint(hstack([c.A, coo_array((c.A.shape[0], 2 * n))]), c.lb, c.ub)

    flow, _ = _flow_matrix(inst, rows)
    need = np.array([inst.target[v] - inst.balance[v] for v in rows])
    constraints = [widen(LinearConstraint(flow, need, np.inf)), *(widen(c) for c in _link_constraints(inst))]
    cover = _cover_cuts(inst)
    if cover is not None:
        constraints.append(widen(cover))
    vub, n_eq = _venue_bounds(inst, rows)
    lower = np.r_[np.zeros(n_eq), np.full(vub.shape[0] - n_eq, -np.inf)]
    constraints.append(LinearConstraint(vub, lower, np.zeros(vub.shape[0])))
    n_cols = 2 * k + 2 * n
    upper = np.r_[inst.big_m, np.ones(k), np.full(2 * n, np.inf)]
    cost = np.r_[[r.fee_rate for r in inst.rails], [r.fixed_fee for r in inst.rails], np.zeros(n_cols - 2 * k)]
    integrality = np.r_[np.zeros(k), np.ones(k), np.zeros(n_cols - 2 * k)]
    return cost, integrality, Bounds(np.zeros(n_cols), upper), constraints


# Set to False to prove every optimum with HiGHS alone (tests compare the two; the planner never needs it).
COMPILED_FIRST = True
# The compiled solver (two threads) runs alone this long before HiGHS joins the race. Most assets are proven in
# milliseconds; on the bench's 20-30-venue instances it won every race by 4x or more, and HiGHS joining at 0.5 s
# only took a core from it (20 venues 1.5/0.6/2.1 s with 5 s against 2.3/0.6/3.4 s with 0.5 s, same run).
HEAD_START_SECONDS = 5.0


class _CompiledSearch:
    """The compiled branch-and-bound on one asset's model, in a thread of its own (it runs without the GIL).

    `proven` is set once it has a proof whose amounts pass the model's rows here (`_meets_model`), `done` once it
    has stopped for any reason; `stop()` cancels it at its next node and waits for the thread. It never calls
    HiGHS: the planner's HiGHS calls are made by the thread that plans, or while it waits (`_highs_in_race`), so
    searches of several assets may run at once (`_Prestarted`) while no two HiGHS instances ever do.
    """

    def __init__(self, inst: AssetInstance, time_limit: float):
        self.inst = inst
        self.started = time.monotonic()
        self.proofs: list[np.ndarray] = []
        self.done, self.proven = threading.Event(), threading.Event()
        self._cancel = ctypes.c_int32(0)
        self._thread = threading.Thread(target=self._run, args=(time_limit,), name=f"routing-bnb-{inst.asset}",
                                        daemon=True)
        self._thread.start()

    def _run(self, time_limit: float) -> None:
        try:
            outcome = routing_bnb.solve(self.inst, gap=MIP_REL_GAP, time_limit=time_limit, cancel=self._cancel)
            if outcome.solution is not None and _meets_model(self.inst, outcome.solution):
                self.proofs.append(outcome.solution)
                self.proven.set()
        finally:
            self.done.set()

    def stop(self) -> None:
        self._cancel.value = 1
        self._thread.join()


def _solve_exactly(inst: AssetInstance, time_limit: float,
                   search: _CompiledSearch | None = None) -> tuple[str, np.ndarray | None, str]:
    """Min-fee plan ignoring order, proven optimal: ("optimal", x_and_y, solver) or ("infeasible", None, "highs"),
    `solver` being "compiled" or "highs".

    The compiled branch-and-bound (`routing_bnb`, `_CompiledSearch`; `search` when `_Prestarted` started it
    already) runs in a thread. If it has not proven the asset within HEAD_START_SECONDS of its start, HiGHS
    (`_solve_milp`, at a lower priority: `_highs_in_race`) starts here and the two race: the first proof wins and the other is stopped (the compiled
    solver through its cancel flag, HiGHS through its interrupt callback). Only a compiled proof whose amounts pass
    the model's rows counts; anything else from it (infeasible included: HiGHS then proves it, and
    `_shortfall_reason` explains it) leaves the asset to HiGHS, unchanged. Neither solver ever returns a best guess.
    """
    if not COMPILED_FIRST or routing_bnb.library() is None:
        if search is not None:
            search.stop()
        return (*_solve_milp(inst, time_limit), "highs")
    deadline = time.monotonic() + time_limit
    if search is None:
        search = _CompiledSearch(inst, time_limit)
    try:
        search.done.wait(max(min(HEAD_START_SECONDS, time_limit) - (time.monotonic() - search.started), 0.0))
        if search.proven.is_set():
            return "optimal", search.proofs[0], "compiled"
        status, solution = _highs_in_race(inst, max(deadline - time.monotonic(), 0.01), search)
    finally:
        search.stop()  # HiGHS answered first (or raised): stop the compiled search at its next node
    if status == "interrupted":  # HiGHS is interrupted only once the compiled solver has a checked proof
        return "optimal", search.proofs[0], "compiled"
    return status, solution, "highs"


# When HiGHS joins the race it runs in a thread of its own whose scheduling priority is this much lower (a higher nice
# value; Linux keeps one per thread), so the compiled search keeps the cores it had and HiGHS takes what is left:
# where the compiled search finishes first (every race on the bench since the eleventh session) HiGHS no longer
# slows it down (30:1, the one bench instance that gets there: 22.7 s -> 17.5-20.5 s); where it fails or stops,
# HiGHS has the machine. 0: HiGHS at the planner's own priority.
HIGHS_RACE_NICE = 10
race_priority_unavailable: str | None = None  # set (with the reason) if a race thread could not lower its priority


def _highs_in_race(inst: AssetInstance, time_limit: float, search: _CompiledSearch) -> tuple[str, np.ndarray | None]:
    """`_solve_milp` racing `search`: interrupted once the search has a checked proof. It runs in a thread at a lower
    priority (HIGHS_RACE_NICE) while this one waits, so HiGHS still never runs twice at once. If this thread is
    interrupted meanwhile (a run being stopped), HiGHS is told to stop and waited for before the exception goes on."""
    if HIGHS_RACE_NICE <= 0:
        return _solve_milp(inst, time_limit, interrupt=search.proven.is_set)
    abandon, finished = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def race() -> None:
        try:
            _lower_own_priority(HIGHS_RACE_NICE)
            outcome["result"] = _solve_milp(inst, time_limit,
                                            interrupt=lambda: search.proven.is_set() or abandon.is_set())
        except BaseException as exc:  # handed to the planning thread, which raises it
            outcome["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=race, name=f"routing-highs-{inst.asset}", daemon=True).start()
    try:
        # an Event, not Thread.join: on Python 3.11 a join interrupted by KeyboardInterrupt can mark the thread
        # stopped while it still runs, and the next join returns at once
        while not finished.wait(0.05):  # (short waits: an interrupt of this thread is seen at once)
            pass
    except BaseException:
        abandon.set()
        finished.wait()
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _lower_own_priority(step: int) -> None:
    """Raise the calling thread's nice value by `step` (at most 19). Linux only: elsewhere a thread id is no process
    id, and `setpriority` would address something else. Where it is not possible the reason is kept in
    `race_priority_unavailable` and the thread runs at its priority as before."""
    global race_priority_unavailable
    if sys.platform != "linux":
        race_priority_unavailable = f"per-thread priorities are a Linux feature (platform {sys.platform})"
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + step, 19))
    except OSError as exc:
        race_priority_unavailable = f"{type(exc).__name__}: {exc}"


# How many assets' compiled searches `solve_problem` keeps running at once: the one being planned and the next ones,
# started early so that their searches use the cores the current asset leaves idle (its root phase runs on one
# thread; its Python side holds the GIL). Each search uses two threads. 1 plans strictly one asset after another.
PRESTART_ASSETS = 3


class _Prestarted:
    """Compiled searches started ahead of the asset loop in `solve_problem` (the usual case only: an asset whose
    balances need no whale lowering, see `solve_asset`). `take(asset)` hands an asset's instance and running search
    to the planner, who then owns it; `close()` stops whatever was never taken (an error in an earlier asset)."""

    def __init__(self, problem: Problem, time_limit: float):
        self._problem, self._time_limit = problem, time_limit
        self._queue = list(problem.assets)
        self._running: dict[str, tuple[AssetInstance, _CompiledSearch | None] | None] = {}

    def fill(self, window: int) -> None:
        """Start searches for the next assets until `window` of the queue's head are started."""
        while self._queue and len(self._running) < window:
            asset = self._queue.pop(0)
            if _whale_lift(self._problem, asset) is not None:
                self._running[asset] = None  # the whale path builds its own instances
                continue
            inst = asset_instance(self._problem, asset)
            usable = COMPILED_FIRST and inst.needs and inst.rails and routing_bnb.library() is not None
            self._running[asset] = (inst, _CompiledSearch(inst, self._time_limit) if usable else None)

    def take(self, asset: str) -> tuple[AssetInstance, _CompiledSearch | None] | None:
        return self._running.pop(asset, None)

    def close(self) -> None:
        for entry in self._running.values():
            if entry is not None and entry[1] is not None:
                entry[1].stop()
        self._running.clear()


def _meets_model(inst: AssetInstance, solution: np.ndarray, tol: float = 1e-7) -> bool:
    """Does `solution` (amounts, then 0/1 flags) respect every rail's bounds and leave every venue at or above its
    target? The same relative tolerance as the HiGHS path's check of its MIP start (`_satisfies`)."""
    k = len(inst.rails)
    x, y = solution[:k], solution[k:]
    a = routing_bnb.model_arrays(inst)
    if not (np.all((y == 0) | (y == 1)) and np.all(x[y == 0] == 0)):
        return False
    if np.any((y == 1) & ((x < a["me"] * (1 - tol) - tol) | (x > a["mm"] * (1 + tol) + tol))):
        return False
    n = len(inst.venues)
    inflow = np.bincount(a["to"], weights=(1 - a["p"]) * x - a["f"] * y, minlength=n)
    outflow = np.bincount(a["from"], weights=x, minlength=n)
    moved = np.bincount(a["to"], weights=x, minlength=n) + outflow
    return bool(np.all(inflow - outflow >= a["lo"] - tol * (1 + np.abs(a["lo"]) + moved)))


def _solve_milp(inst: AssetInstance, time_limit: float,
                interrupt: Callable[[], bool] | None = None) -> tuple[str, np.ndarray | None]:
    """Min-fee plan ignoring order. Returns ("optimal", x_and_y) or ("infeasible", None); ("interrupted", None)
    when `interrupt()` said True (asked at HiGHS's interrupt points; the scipy fallback path cannot be).

    Through the HiGHS object scipy bundles (`_solve_with_start`) when this
    scipy has it: same model, same proof, plus a MIP start; else `run_milp`.
    """
    global direct_highs_unavailable
    k = len(inst.rails)
    model = _milp_model(inst)
    highs = _highs_module()
    if highs is not None:
        try:
            status, x = _solve_with_start(highs, inst, model, time_limit, interrupt)
            return status, (None if x is None else x[: 2 * k])
        except _DirectHighsUnusable as exc:  # e.g. a HiGHS release renamed an option: slower, still exact
            direct_highs_unavailable = str(exc)
    cost, integrality, bounds, constraints = model
    cost = cost * _objective_scale(fee_magnitude(inst))  # as on the direct path, sized without the LP
    result = run_milp(cost, integrality=integrality, bounds=bounds, constraints=constraints, time_limit=time_limit)
    if result.status == 2:
        return "infeasible", None
    if result.status != 0 or result.x is None:
        raise RoutingError(f"{inst.asset}: solver did not prove an optimum ({result.message})")
    return "optimal", result.x[: 2 * k]


# ------------------------------------------------------------------ HiGHS driven directly: MIP start from a core
#
# Where the time went (bench/route_planner.py, spec family, 10-20 venues):
# in HiGHS's root node, and much of that in its primal heuristics (the
# root-reduced-cost sub-MIP, feasibility jump) hunting for an incumbent.
# Handing HiGHS a good incumbent and switching those heuristics off cut the
# per-asset time 2-5x at 10 venues. The incumbent comes from the same MILP
# restricted to a small "core" of rails (the LP relaxation's support plus the
# rails with the smallest LP reduced cost), which HiGHS solves in tens of ms.
#
# Why this stays exact: the final solve is the unchanged full model and
# HiGHS proves its optimum to MIP_REL_GAP as before; the start is only an
# incumbent (a feasible plan of the full model: the core's rows are the full
# model's rows restricted to the core, the destination bound only looser in
# the full model), so it can prune nothing better than itself. If the core
# misses the optimal rails, the start is merely worse and the search finds
# the optimum anyway (test_core_missing_the_optimal_rails_...). The objective
# is multiplied by a power of ten (OBJECTIVE_MAGNITUDE) so that HiGHS's
# absolute tolerances (1e-6 in objective units) stay below 1e-9 of the fee:
# without it an ETH-sized optimum (~0.004) could be missed by ~1e-6 ETH.

CORE_EXTRA = 30  # rails added to the LP support by smallest reduced cost
OBJECTIVE_MAGNITUDE = 1e3  # scale the objective to about this size (never down, at most 1e9)
# With an incumbent in hand these only cost time (they hunt for incumbents).
HIGHS_NO_HEURISTICS = {"mip_heuristic_run_root_reduced_cost": False, "mip_heuristic_run_feasibility_jump": False,
                       "mip_heuristic_effort": 0.0}
direct_highs_unavailable: str | None = None  # set (with the reason) if this scipy has no HiGHS object


class _DirectHighsUnusable(RuntimeError):
    """This HiGHS build does not take what the direct path needs; `_solve_milp` falls back to `run_milp`."""


def _highs_module():
    global direct_highs_unavailable
    if direct_highs_unavailable is not None:
        return None
    try:
        from scipy.optimize._highspy import _core

        _core._Highs, _core.HighsLp, _core.HighsSolution, _core.HighsModelStatus, _core.HighsVarType  # noqa: B018
        return _core
    except (ImportError, AttributeError) as exc:
        direct_highs_unavailable = f"{type(exc).__name__}: {exc}"
        return None


@dataclass
class _Arrays:
    cost: np.ndarray
    integrality: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    matrix: object  # csc_array
    row_lower: np.ndarray
    row_upper: np.ndarray


def _arrays(model) -> _Arrays:
    from scipy.sparse import csc_array, vstack

    cost, integrality, bounds, constraints = model
    matrix = csc_array(vstack([c.A for c in constraints]))
    row_lower = np.concatenate([np.broadcast_to(np.asarray(c.lb, float), c.A.shape[0]) for c in constraints])
    row_upper = np.concatenate([np.broadcast_to(np.asarray(c.ub, float), c.A.shape[0]) for c in constraints])
    return _Arrays(np.asarray(cost, float), np.asarray(integrality), np.asarray(bounds.lb, float),
                   np.asarray(bounds.ub, float), matrix, row_lower, row_upper)


@dataclass
class _Run:
    status: str  # "optimal" | "infeasible" | "other: <HiGHS status>"
    x: np.ndarray | None
    col_dual: np.ndarray | None


def _highs_run(highs, a: _Arrays, *, integral: bool, time_limit: float, options: dict,
               start: np.ndarray | None = None, cost_scale: float = 1.0,
               interrupt: Callable[[], bool] | None = None) -> _Run:
    lp = highs.HighsLp()
    lp.num_col_ = a.cost.size
    lp.num_row_ = a.row_lower.size
    lp.a_matrix_.num_col_ = a.cost.size
    lp.a_matrix_.num_row_ = a.row_lower.size
    lp.a_matrix_.format_ = highs.MatrixFormat.kColwise
    lp.a_matrix_.start_ = a.matrix.indptr
    lp.a_matrix_.index_ = a.matrix.indices
    lp.a_matrix_.value_ = a.matrix.data
    lp.col_cost_ = a.cost * cost_scale
    lp.col_lower_ = a.lower
    lp.col_upper_ = a.upper
    lp.row_lower_ = a.row_lower
    lp.row_upper_ = a.row_upper
    if integral:
        lp.integrality_ = [highs.HighsVarType(int(i)) for i in a.integrality]
    solver = highs._Highs()
    settings = {"output_flag": False, "time_limit": max(time_limit, 0.01), "mip_rel_gap": MIP_REL_GAP,
                **({} if HIGHS_MIP_PRESOLVE or not integral else {"presolve": "off"}), **HIGHS_EXTRA_OPTIONS, **options}
    for key, value in settings.items():
        if solver.setOptionValue(key, value) != highs.HighsStatus.kOk:
            raise _DirectHighsUnusable(f"HiGHS refused option {key}={value!r}")
    solver.passModel(lp)
    if interrupt is not None:  # asked at HiGHS's interrupt points; True stops it ("interrupted")
        def _callback(kind, message, data_out, data_in, user_data):
            if data_in is not None and interrupt():
                data_in.user_interrupt = True

        try:
            kinds = highs.cb.HighsCallbackType
            solver.setCallback(_callback, None)
            for kind in (kinds.kCallbackMipInterrupt, kinds.kCallbackSimplexInterrupt, kinds.kCallbackIpmInterrupt):
                solver.startCallback(kind)
        except AttributeError:  # a HiGHS without callbacks: it runs to its own end (the race is then only slower)
            pass
    if start is not None:
        given = highs.HighsSolution()
        given.col_value = [float(v) for v in start]
        given.value_valid = True
        solver.setSolution(given)
    solver.run()
    status = solver.getModelStatus()
    if status == highs.HighsModelStatus.kInfeasible:
        return _Run("infeasible", None, None)
    if status == highs.HighsModelStatus.kInterrupt:
        return _Run("interrupted", None, None)
    solution = solver.getSolution()
    if status != highs.HighsModelStatus.kOptimal or not solution.value_valid:
        return _Run(f"other: {solver.modelStatusToString(status)}", None, None)
    dual = np.array(solution.col_dual) * (1.0 / cost_scale) if (not integral and solution.dual_valid) else None
    return _Run("optimal", np.array(solution.col_value), dual)


def fee_magnitude(inst: AssetInstance) -> float:
    """A rough size of the asset's optimal fee (the cheapest single rail into each deficit venue), for scaling only."""
    return sum(min((r.fixed_fee + r.fee_rate * d for r in inst.rails if r.to_venue == v), default=0.0)
               for v, d in inst.needs.items())


def _objective_scale(lp_value: float) -> float:
    if not lp_value > 0.0:
        return 1.0
    return float(min(1e9, max(1.0, 10.0 ** np.ceil(np.log10(OBJECTIVE_MAGNITUDE / lp_value)))))


def _core_rails(inst: AssetInstance, lp: _Run) -> list[int]:
    """The LP relaxation's support plus the CORE_EXTRA rails whose LP reduced cost says they are cheapest to switch on."""
    k = len(inst.rails)
    x = lp.x
    core = set(np.flatnonzero((x[:k] > _EPS) | (x[k:2 * k] > _EPS)).tolist())
    if lp.col_dual is not None and CORE_EXTRA > 0:
        dx, dy = lp.col_dual[:k], lp.col_dual[k:2 * k]
        switch_on = dy + np.minimum(dx * np.asarray(inst.min_eff), dx * np.asarray(inst.big_m))
        core.update(np.argsort(switch_on, kind="stable")[:CORE_EXTRA].tolist())
    return sorted(core)


def _restricted(inst: AssetInstance, keep: Sequence[int]) -> AssetInstance:
    return AssetInstance(inst.asset, inst.venues, inst.balance, inst.target, [inst.rails[j] for j in keep],
                         [inst.big_m[j] for j in keep], [inst.min_eff[j] for j in keep], inst.holdings, inst.surplus)


def _full_start(inst: AssetInstance, keep: Sequence[int], x_core: np.ndarray) -> np.ndarray:
    """A core solution as a point of the full model: x and y on the core rails, zero elsewhere, I and O recomputed."""
    k, kk = len(inst.rails), len(keep)
    rows = _touched_venues(inst)
    index = {v: i for i, v in enumerate(rows)}
    x, y = np.zeros(k), np.zeros(k)
    x[list(keep)] = x_core[:kk]
    y[list(keep)] = np.round(x_core[kk:2 * kk])
    credits, sends = np.zeros(len(rows)), np.zeros(len(rows))
    for j in keep:
        r = inst.rails[j]
        credits[index[r.to_venue]] += (1.0 - r.fee_rate) * x[j] - r.fixed_fee * y[j]
        sends[index[r.from_venue]] += x[j]
    return np.r_[x, y, credits, sends]


def _satisfies(a: _Arrays, z: np.ndarray, tol: float = 1e-7) -> bool:
    activity = a.matrix @ z
    scale = 1.0 + np.abs(activity)
    return bool(np.all(activity >= a.row_lower - tol * scale) and np.all(activity <= a.row_upper + tol * scale)
                and np.all(z >= a.lower - tol) and np.all(z <= a.upper + tol * (1.0 + np.abs(a.upper))))


def _solve_with_start(highs, inst: AssetInstance, model, time_limit: float,
                      interrupt: Callable[[], bool] | None = None) -> tuple[str, np.ndarray | None]:
    deadline = time.monotonic() + time_limit
    full = _arrays(model)
    lp = _highs_run(highs, full, integral=False, time_limit=time_limit, options={}, interrupt=interrupt)
    if lp.status == "infeasible":  # the LP relaxation is infeasible, so is the MILP
        return "infeasible", None
    if lp.status == "interrupted":
        return "interrupted", None
    start = None
    scale = 1.0
    if lp.status == "optimal":
        scale = _objective_scale(float(full.cost @ lp.x))
        keep = _core_rails(inst, lp)
        if len(keep) < len(inst.rails):
            core = _highs_run(highs, _arrays(_milp_model(_restricted(inst, keep))), integral=True,
                              time_limit=deadline - time.monotonic(), options={}, interrupt=interrupt)
            if core.status == "interrupted":
                return "interrupted", None
            if core.status == "optimal":
                candidate = _full_start(inst, keep, core.x)
                if _satisfies(full, candidate):
                    start = candidate
    options = HIGHS_NO_HEURISTICS if start is not None else {}
    final = _highs_run(highs, full, integral=True, time_limit=deadline - time.monotonic(), options=options,
                       start=start, cost_scale=scale, interrupt=interrupt)
    if final.status in ("infeasible", "interrupted"):
        return final.status, None
    if final.status != "optimal":
        raise RoutingError(f"{inst.asset}: solver did not prove an optimum ({final.status})")
    return "optimal", final.x


def _venue_rows(inst: AssetInstance, used: list[int]) -> tuple[list[Rail], np.ndarray, np.ndarray]:
    """The rails `used` and the venue rows over their amounts: `a @ x >= rhs` says every venue ends at or above
    its target (fixed fees moved to the right-hand side: every rail in `used` is paid)."""
    rails = [inst.rails[j] for j in used]
    rows = _touched_venues(inst)
    index = {v: i for i, v in enumerate(rows)}
    a = np.zeros((len(rows), len(used)))
    rhs = np.array([inst.target[v] - inst.balance[v] for v in rows])
    for c, r in enumerate(rails):
        a[index[r.to_venue], c] += 1.0 - r.fee_rate
        a[index[r.from_venue], c] -= 1.0
        rhs[index[r.to_venue]] += r.fixed_fee
    return rails, a, rhs


def _polish(inst: AssetInstance, used: list[int], fee: float) -> np.ndarray | None:
    """Among plans on the same rails and no higher fee, the one that moves the least.

    The MILP is indifferent to sending more than needed on a rail without a
    proportional fee; this LP removes that slack (and zero-fee circulations).
    """
    if not used:
        return np.zeros(0)
    rails, a, rhs = _venue_rows(inst, used)
    fixed = sum(r.fixed_fee for r in rails)
    rates = np.array([r.fee_rate for r in rails])
    # The fee row is scaled to coefficients of about 1 (HiGHS holds a row to ~1e-7 absolute: with rates of 1e-10
    # the unscaled row let the plan cost a third more) and its slack is relative to the fee.
    unit = float(rates.max()) if rates.size and rates.max() > 0 else 1.0
    a_ub = np.vstack([-a, rates[None, :] / unit])
    b_ub = np.r_[-rhs, (fee - fixed + 1e-10 * abs(fee)) / unit]
    bounds = [(inst.min_eff[j], inst.big_m[j]) for j in used]
    result = linprog(np.ones(len(used)), A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    if result.status != 0:
        return None
    if fixed + float(rates @ result.x) > fee * (1 + 1e-9) + 1e-15:  # never a polish that costs more than proven
        return None
    return result.x


def _exact_amounts(inst: AssetInstance, used: list[int]) -> np.ndarray | None:
    """The cheapest amounts on exactly the rails `used` (each between its minimum and its bound) that leave every
    venue at or above its target; None if there are none.

    Why: the MILP solver accepts a binary within its integrality tolerance of 0 (~1e-6) while `x <= M*y` lets that
    rail carry `M*y` (~1e-4 with M in the thousands). Such a rail is not in `used` (`y > 0.5`), and the sliver
    it carried is missing from the other rails' amounts: a venue ended 1.65e-4 short, or the plan could not be
    ordered (`unit/test_routing_slivers.py`). Solved on the rails alone, the sliver goes where it must.
    """
    if not used:
        return np.zeros(0)
    rails, a, rhs = _venue_rows(inst, used)
    rates = np.array([r.fee_rate for r in rails])
    scale = _objective_scale(max(fee_magnitude(inst), 1e-12))
    bounds = [(inst.min_eff[j], inst.big_m[j]) for j in used]
    # The fees first; among equal fees, the least moved (the 1e-9 weight is far below any rate that matters).
    result = linprog(scale * (rates + 1e-9), A_ub=-a, b_ub=-rhs, bounds=bounds, method="highs")
    return result.x if result.status == 0 else None


def _shortfalls(inst: AssetInstance, transfers: Sequence[Transfer]) -> dict[str, float]:
    """Venues the transfers leave below their targets by more than the funding tolerance: venue -> shortfall.

    The tolerance is relative to the largest amount summed at the venue (its balance, target, everything in and
    everything out), as `order_moves` is to each transfer: a hub with a target of 0 that passes 1.2e9 units
    ends at -2.4e-7 from float rounding alone (unit/test_review_2026_11_28.py)."""
    held = dict(inst.balance)
    scale = {v: max(abs(inst.balance.get(v, 0.0)), abs(inst.target.get(v, 0.0))) for v in inst.target}
    for t in transfers:
        held[t.from_venue] = held.get(t.from_venue, 0.0) - t.amount
        held[t.to_venue] = held.get(t.to_venue, 0.0) + t.amount - t.fee
        for venue in (t.from_venue, t.to_venue):
            scale[venue] = max(scale.get(venue, 0.0), abs(t.amount))
    return {v: inst.target[v] - held.get(v, 0.0) for v in inst.target
            if held.get(v, 0.0) < inst.target[v] - funding_tolerance(scale[v])}


def _checked(inst: AssetInstance, result: AssetResult) -> AssetResult:
    """A feasible result is returned only if executing it leaves no venue short (never a plan that misses a
    target by more than the solver's tolerance)."""
    if result.feasible:
        short = _shortfalls(inst, result.transfers)
        if short:
            raise RoutingError(f"{inst.asset}: the plan would leave " + ", ".join(
                f"{v} short by {gap:g}" for v, gap in sorted(short.items())) + " (numerical trouble in the solver)")
    return result


def _shortfall_reason(inst: AssetInstance, time_limit: float) -> str:
    """Why the targets cannot be met: the smallest total shortfall any plan leaves, and where."""
    needs = inst.needs
    total_needed = sum(inst.target.values())
    if total_needed > inst.holdings + _EPS:
        return (
            f"{inst.asset}: targets total {total_needed:g} but only {inst.holdings:g} is held across venues "
            f"(short {total_needed - inst.holdings:g})"
        )
    deficit = sum(needs.values())
    if deficit > inst.surplus + _EPS:
        return (
            f"{inst.asset}: deficits total {deficit:g} ("
            + ", ".join(f"{v} needs {d:g}" for v, d in needs.items())
            + f") but venues above target hold only {inst.surplus:g} spare (short {deficit - inst.surplus:g})"
        )
    inbound = {r.to_venue for r in inst.rails}
    stranded = [v for v in needs if v not in inbound]
    if stranded:
        return f"{inst.asset}: no usable rail (existing, fundable from the {inst.surplus:g} spare above targets, min_amount within reach) can bring funds to " + ", ".join(
            f"{v} (needs {needs[v]:g} more)" for v in stranded
        )
    k = len(inst.rails)
    rows = _touched_venues(inst)
    flow, _ = _flow_matrix(inst, rows)
    short_cols = [i for i, v in enumerate(rows) if v in needs]
    slack = coo_array((np.ones(len(short_cols)), (short_cols, range(len(short_cols)))), shape=(len(rows), len(short_cols)))
    from scipy.sparse import hstack

    n = len(short_cols)
    need = np.array([inst.target[v] - inst.balance[v] for v in rows])
    constraints = [LinearConstraint(hstack([flow, slack]), need, np.inf)]
    for link in _link_constraints(inst):
        constraints.append(LinearConstraint(hstack([link.A, coo_array((k, n))]), link.lb, link.ub))
    result = milp(
        np.r_[np.zeros(2 * k), np.ones(n)],
        integrality=np.r_[np.zeros(k), np.ones(k), np.zeros(n)],
        bounds=Bounds(np.zeros(2 * k + n), np.r_[inst.big_m, np.ones(k), np.full(n, np.inf)]),
        constraints=constraints,
        options={"time_limit": time_limit},
    )
    if result.status != 0 or result.x is None:
        return f"{inst.asset}: the rails cannot cover the deficits at " + ", ".join(f"{v} (needs {d:g} more)" for v, d in needs.items())
    shorts = {rows[c]: result.x[2 * k + i] for i, c in enumerate(short_cols) if result.x[2 * k + i] > 1e-7}
    detail = ", ".join(f"{v} short {s:g}" for v, s in sorted(shorts.items(), key=lambda kv: -kv[1]))
    return (
        f"{inst.asset}: the rails (fees, min/max amounts) cannot cover every deficit; "
        f"the best plan still leaves a total shortfall of {sum(shorts.values()):g} ({detail})"
    )


def _transfers(inst: AssetInstance, used: list[int], amounts: Sequence[float]) -> list[Transfer]:
    out = []
    for j, amount in zip(used, amounts):
        r = inst.rails[j]
        out.append(Transfer(r.id, r.from_venue, r.to_venue, r.asset, float(amount), r.fee(float(amount))))
    return out


def _ordered(inst: AssetInstance, transfers: list[Transfer]) -> list[Transfer] | None:
    moves = [Move(t.from_venue, t.to_venue, t.amount, t.amount - t.fee) for t in transfers]
    order = order_moves(inst.balance, moves, inst.target)
    return None if order is None else [transfers[i] for i in order]


def _plan_from(inst: AssetInstance, solution: np.ndarray) -> list[Transfer] | str:
    """The transfers of a proven order-free optimum, polished and in executable order; or why there are none:
    "no_amounts" (the chosen rails admit no amounts meeting the targets) or "unorderable"."""
    k = len(inst.rails)
    used = [j for j in range(k) if solution[k + j] > 0.5 and solution[j] > _EPS]
    fee = sum(inst.rails[j].fee(solution[j]) for j in used)
    amounts = _polish(inst, used, fee)
    if amounts is None:
        # The MILP's amounts do not meet the targets on these rails alone (a sliver on a rail it counts as
        # unused, see _exact_amounts), or the LP had numerical trouble: the cheapest amounts on the rails.
        amounts = _exact_amounts(inst, used)
    if amounts is None:  # the rails need the sliver's rail: take every rail that carries flow, and pay its fee
        used = [j for j in range(k) if solution[j] > _EPS]
        amounts = _exact_amounts(inst, used)
    if amounts is None:
        return "no_amounts"
    keep = [c for c, a in enumerate(amounts) if a > _EPS]
    ordered = _ordered(inst, _transfers(inst, [used[c] for c in keep], [amounts[c] for c in keep]))
    return "unorderable" if ordered is None else ordered


# A venue whose spare exceeds what any optimal plan can take from it by this factor is planned as if it held
# only that much (`_without_whales`).
WHALE_RATIO = 100.0


def _whale_terms(problem: Problem, asset: str) -> tuple[float, dict[str, float], dict[str, float]]:
    """`lift` (the most all venues together can end above their balances in a least-moving optimum, fees aside:
    the sum of max(0, target - balance + mu)), each venue's spare, and each venue's `mu` (the largest credit a
    rail into it delivers at its minimum)."""
    mu: dict[str, float] = {}
    for r in problem.rails:
        if r.asset == asset:
            mu[r.to_venue] = max(mu.get(r.to_venue, 0.0), r.credit(_min_eff(r)))
    lift = sum(max(0.0, problem.target(v, asset) - problem.balance(v, asset) + mu.get(v, 0.0)) for v in problem.venues)
    spare = {v: problem.balance(v, asset) - problem.target(v, asset) for v in problem.venues}
    return lift, spare, mu


def _without_whales(problem: Problem, asset: str, give: float) -> Problem | None:
    """`problem` with every "whale" (a venue whose spare exceeds `give` by WHALE_RATIO and by its `mu`) lowered to
    hold `give` above its target; None when there is no such venue.

    Why it is exact when `give` >= K = F + lift (F the optimal fee, `lift` from `_whale_terms`). Let Q be, among
    the executable optimal plans, one that moves the least. (1) A venue that receives in Q ends at most `mu` above
    its target: otherwise its last receipt could be trimmed, or dropped if at its minimum, which keeps every later
    send funded (after its last receipt a venue only sends, so it holds at least its final balance), costs no
    more and moves less. A venue that only sends ends no higher than it started. So every venue v ends at most
    max(0, target - balance + mu) above its balance. (2) Every transfer loses its fee, so the balances change by
    -F in total, and any venue gives away, net, at most K. (3) A venue whose spare exceeds K + mu therefore ends
    more than mu above its target and, by (1), receives nothing in Q: it only sends, K at most in all. (4) With
    its balance lowered to target + K (or more), Q is still executable, so the optimum is unchanged; and every
    plan of the lowered problem is executable in the original one (a venue holding more never funds less).
    `solve_asset` only trusts a lowered answer whose own fee proves `give` was large enough.
    """
    lift, spare, mu = _whale_terms(problem, asset)
    whales = {v for v, s in spare.items() if s > WHALE_RATIO * give and s > give + mu.get(v, 0.0)}
    if not whales:
        return None
    balances = {v: dict(per) for v, per in problem.balances.items()}
    for v in whales:
        balances[v][asset] = problem.target(v, asset) + give
    return Problem(balances, problem.targets, problem.rails)


def _whale_lift(problem: Problem, asset: str) -> float | None:
    """`lift` (`_whale_terms`) when some venue holds more than WHALE_RATIO times what any optimal plan can take from
    it, else None (no whale can exist: the usual case)."""
    lift, spare, _ = _whale_terms(problem, asset)
    return lift if any(s > WHALE_RATIO * lift for s in spare.values()) else None


def solve_asset(problem: Problem, asset: str, time_limit: float,
                started: tuple[AssetInstance, _CompiledSearch | None] | None = None) -> AssetResult:
    """One asset's plan; `started`: its instance and compiled search, already running (`_Prestarted`)."""
    if started is not None:  # (only ever started for the usual case below)
        return _solve_lowered(problem, asset, time_limit, started)
    lift = _whale_lift(problem, asset)
    if lift is None:  # no whale can exist (K >= lift): the usual case
        return _solve_lowered(problem, asset, time_limit)
    # A whale: plan it as holding only what an optimal plan can take from it (`_without_whales`), so that no
    # solver sees its size (their tolerances are absolute: a 1e12 whale made both prove dearer plans). The fee
    # bound comes from the direct plan when there is one, else from a guess that the answer itself certifies:
    # the lowered problem's plan is executable in the real one, so its fee F' bounds F, and if F' + lift <= give
    # the lowering was exact; otherwise the next round uses F' + lift, which is a bound, or a larger guess.
    deadline = time.monotonic() + time_limit
    direct = _naive_asset(problem, asset)
    margin = 1 + 1e-6
    give = (sum(t.fee for t in direct) if not isinstance(direct, str) else lift) + lift
    give = give * margin + 1e-9 * max(1.0, lift)
    while True:
        lowered = _without_whales(problem, asset, give)
        if lowered is None:  # the bound grew past every whale: the problem as it is
            return _solve_lowered(problem, asset, max(deadline - time.monotonic(), 0.01))
        result = _solve_lowered(lowered, asset, max(deadline - time.monotonic(), 0.01))
        if result.feasible and (result.fee + lift) * margin <= give:
            return result
        give = (result.fee + lift) * margin + 1e-9 * max(1.0, lift) if result.feasible else give * 1000.0


def _solve_lowered(problem: Problem, asset: str, time_limit: float,
                   started: tuple[AssetInstance, _CompiledSearch | None] | None = None) -> AssetResult:
    inst, search = started if started is not None else (asset_instance(problem, asset), None)
    if not inst.needs:
        return AssetResult(True, 0.0, [])
    if not inst.rails:
        return AssetResult(False, reason=_shortfall_reason(inst, time_limit))
    deadline = time.monotonic() + time_limit
    status, solution, solver = _solve_exactly(inst, time_limit, search)
    if status == "infeasible":
        return AssetResult(False, reason=_shortfall_reason(inst, time_limit))
    assert solution is not None
    plan = _plan_from(inst, solution)
    if isinstance(plan, str) and solver == "compiled":
        # The compiled optimum's rails admit no exact amounts (a deficit below its tolerances, e.g. 13 orders of
        # magnitude under the largest) or its ties chose rails that cannot be ordered (free rails held at their
        # minimums in a cycle): HiGHS's optimum is as cheap and may not share the trouble.
        status, solution = _solve_milp(inst, max(deadline - time.monotonic(), 0.01))
        if status == "infeasible":
            return AssetResult(False, reason=_shortfall_reason(inst, time_limit))
        plan = _plan_from(inst, solution)
    if plan == "no_amounts":
        raise RoutingError(f"{asset}: the solver's plan does not meet the targets on its own rails (numerical trouble)")
    if plan == "unorderable":
        from arb_orchestration.domain.routing_sequenced import solve_sequenced

        return _checked(inst, solve_sequenced(problem, asset, max(deadline - time.monotonic(), 0.01)))
    return _checked(inst, AssetResult(True, sum(t.fee for t in plan), plan))


def solve_problem(problem: Problem, *, time_limit: float = 60.0) -> Plan:
    """Every asset's plan, one asset after another; the compiled searches of the next assets run meanwhile
    (`PRESTART_ASSETS`). `time_limit` holds per asset as before: for its compiled search from the search's start,
    for the rest (HiGHS, polishing) from when the asset's turn comes."""
    transfers: list[Transfer] = []
    fees: dict[str, float] = {}
    reasons: list[str] = []
    prestarted = _Prestarted(problem, time_limit)
    try:
        for asset in problem.assets:
            prestarted.fill(max(PRESTART_ASSETS, 1))
            result = solve_asset(problem, asset, time_limit, prestarted.take(asset))
            if not result.feasible:
                reasons.append(result.reason or f"{asset}: infeasible")
                continue
            if result.transfers:
                transfers.extend(result.transfers)
                fees[asset] = result.fee
    finally:
        prestarted.close()
    if reasons:
        return Plan(False, reason="; ".join(reasons))
    return Plan(True, sum(fees.values()), tuple(transfers), optimal=True, fee_by_asset=fees)


# ------------------------------------------------------------------ naive baseline


def solve_naive(problem: Problem) -> Plan:
    """Direct transfers only: each deficit, largest first, from the cheapest single direct rail that covers it.

    A source never goes below its own target. When no single rail covers a
    deficit, the cheapest-per-unit rails are combined, each used once.
    """
    transfers: list[Transfer] = []
    fees: dict[str, float] = {}
    for asset in problem.assets:
        planned = _naive_asset(problem, asset)
        if isinstance(planned, str):
            return Plan(False, reason=planned)
        transfers.extend(planned)
        if planned:
            fees[asset] = sum(t.fee for t in planned)
    return Plan(True, sum(fees.values()), tuple(transfers), fee_by_asset=fees)


def _naive_asset(problem: Problem, asset: str) -> list[Transfer] | str:
    """`solve_naive` for one asset: its transfers, or why direct transfers cannot do it."""
    transfers: list[Transfer] = []
    surplus = {v: problem.balance(v, asset) - problem.target(v, asset) for v in problem.venues}
    needs = sorted(((-s, v) for v, s in surplus.items() if s < -_EPS), reverse=True)
    used: set[str] = set()
    for need, venue in needs:
        remaining = need
        while remaining > _EPS:
            best: tuple[tuple[float, float], float, Rail] | None = None
            for r in problem.rails:
                if r.asset != asset or r.to_venue != venue or r.id in used:
                    continue
                room = surplus[r.from_venue]
                if r.max_amount is not None:
                    room = min(room, r.max_amount)
                wanted = max((remaining + r.fixed_fee) / (1 - r.fee_rate), r.min_amount)
                amount = min(wanted, room)
                if amount < r.min_amount - _EPS or r.credit(amount) <= _EPS:
                    continue
                delivered = min(r.credit(amount), remaining)
                # Covering the whole deficit beats any partial cover; then cheapest per unit delivered.
                key = (0.0 if delivered >= remaining - _EPS else 1.0, r.fee(amount) / delivered)
                if best is None or key < best[0]:
                    best = (key, amount, r)
            if best is None:
                return f"{asset}: direct transfers cannot cover {venue} (still needs {remaining:g})"
            _, amount, r = best
            used.add(r.id)
            surplus[r.from_venue] -= amount
            remaining -= r.credit(amount)
            transfers.append(Transfer(r.id, r.from_venue, r.to_venue, asset, amount, r.fee(amount)))
    return transfers
