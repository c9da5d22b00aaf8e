"""Exact fallback when the cheapest flow cannot be funded in any order.

The main model ignores order: it is a relaxation, and its optimum is the true
optimum whenever `routing_order` can sequence it (almost always: only a cycle
forced by min_amount can stall every venue). Otherwise this model adds the
order itself: a position per rail, a precedence binary per pair of rails that
meet at a venue, and a funding constraint per rail — the source's balance
just before the rail runs (its start, plus credits of inbound rails placed
earlier, minus outbound rails placed earlier) covers the amount. Quadratic in
the rails per venue, so it is only built for small asset slices.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint
from scipy.sparse import coo_array

from arb_orchestration.domain.routing import Problem, RoutingError
from arb_orchestration.domain.routing_order import Move, order_moves

MAX_PAIRS = 4000


def solve_sequenced(problem: Problem, asset: str, time_limit: float):
    from arb_orchestration.domain.routing_solver import (
        AssetResult,
        _exact_amounts,
        _shortfall_reason,
        _flow_matrix,
        _touched_venues,
        _objective_scale,
        _transfers,
        asset_instance,
        fee_magnitude,
        run_milp,
    )

    # No dominance pruning here: merging parallel transfers is not always
    # possible once the order matters.
    inst = asset_instance(problem, asset, dominance=False)
    rails = inst.rails
    k = len(rails)
    if not inst.needs:
        return AssetResult(True, 0.0, [])
    if k == 0:
        return AssetResult(False, reason=_shortfall_reason(inst, time_limit))
    out_degree: dict[str, int] = {}
    in_degree: dict[str, int] = {}
    for r in rails:
        out_degree[r.from_venue] = out_degree.get(r.from_venue, 0) + 1
        in_degree[r.to_venue] = in_degree.get(r.to_venue, 0) + 1
    n_pairs_needed = sum(n_out * (in_degree.get(v, 0) + n_out - 1) for v, n_out in out_degree.items())
    if n_pairs_needed > MAX_PAIRS:
        raise RoutingError(
            f"{asset}: the cheapest flow cannot be funded in any order and the instance is too large "
            f"for the exact sequencing model ({n_pairs_needed} rail pairs > {MAX_PAIRS})"
        )
    pairs: list[tuple[int, int, str]] = []  # (s, r, kind): s placed relative to r; kind "in" or "out"
    for r_idx, r in enumerate(rails):
        for s_idx, s in enumerate(rails):
            if s_idx == r_idx:
                continue
            if s.to_venue == r.from_venue:
                pairs.append((s_idx, r_idx, "in"))
            elif s.from_venue == r.from_venue:
                pairs.append((s_idx, r_idx, "out"))
    n_pairs = len(pairs)
    # Column layout: x[k] y[k] pos[k] o[n] aux[n] (aux = w for inbound pairs, v for outbound pairs)
    X, Y, POS, O, AUX = 0, k, 2 * k, 3 * k, 3 * k + n_pairs
    n_cols = 3 * k + 2 * n_pairs
    rows, cols, vals, lo, hi = [], [], [], [], []
    row = 0

    def add(entries: list[tuple[int, float]], lower: float, upper: float) -> None:
        nonlocal row
        for c, v in entries:
            rows.append(row)
            cols.append(c)
            vals.append(v)
        lo.append(lower)
        hi.append(upper)
        row += 1

    venue_rows = _touched_venues(inst)
    flow, _ = _flow_matrix(inst, venue_rows)
    flow = flow.tocoo()
    for rr, cc, vv in zip(flow.row, flow.col, flow.data):
        rows.append(row + int(rr))
        cols.append(int(cc))
        vals.append(float(vv))
    for v in venue_rows:
        lo.append(inst.target[v] - inst.balance[v])
        hi.append(np.inf)
    row += len(venue_rows)
    for j in range(k):
        add([(X + j, 1.0), (Y + j, -inst.big_m[j])], -np.inf, 0.0)
        add([(X + j, 1.0), (Y + j, -inst.min_eff[j])], 0.0, np.inf)
    cap = [inst.big_m[j] * (1 - rails[j].fee_rate) for j in range(k)]
    funding: dict[int, list[tuple[int, float]]] = {j: [(X + j, -1.0)] for j in range(k)}
    for p, (s, r, kind) in enumerate(pairs):
        o, aux = O + p, AUX + p
        # o = 1: s runs before r; o = 0: r runs before s.
        add([(POS + s, 1.0), (POS + r, -1.0), (o, k + 1.0)], -np.inf, float(k))
        add([(POS + r, 1.0), (POS + s, -1.0), (o, -(k + 1.0))], -np.inf, -1.0)
        if kind == "in":
            # aux <= credit of s, and aux <= 0 unless s came first
            add([(aux, 1.0), (X + s, -(1 - rails[s].fee_rate)), (Y + s, rails[s].fixed_fee)], -np.inf, 0.0)
            add([(aux, 1.0), (o, -cap[s])], -np.inf, 0.0)
            funding[r].append((aux, 1.0))
        else:
            # aux >= amount of s if s came first
            add([(aux, 1.0), (X + s, -1.0), (o, -inst.big_m[s])], -inst.big_m[s], np.inf)
            funding[r].append((aux, -1.0))
    for j in range(k):
        # Used: the source keeps at least its target after sending; unused: no constraint beyond >= 0.
        source = rails[j].from_venue
        add(funding[j] + [(Y + j, -inst.target[source])], -inst.balance[source], np.inf)

    upper = np.r_[inst.big_m, np.ones(k), np.full(k, float(k)), np.ones(n_pairs),
                  [cap[s] if kind == "in" else inst.big_m[s] for s, _, kind in pairs]]
    # Objective scaled to ~1e3 (see routing_solver): HiGHS's 1e-6 absolute tolerances stay below 1e-9 of the fee.
    scale = _objective_scale(fee_magnitude(inst))
    result = run_milp(
        scale * np.r_[[r.fee_rate for r in rails], [r.fixed_fee for r in rails], np.zeros(k + 2 * n_pairs)],
        integrality=np.r_[np.zeros(k), np.ones(k), np.zeros(k), np.ones(n_pairs), np.zeros(n_pairs)],
        bounds=Bounds(np.zeros(n_cols), upper),
        constraints=[LinearConstraint(coo_array((vals, (rows, cols)), shape=(row, n_cols)), lo, hi)],
        time_limit=time_limit,
    )
    if result.status == 2:
        return AssetResult(False, reason=(
            f"{asset}: every plan that meets the targets needs a cycle of transfers that no venue can fund first "
            f"(min_amount too large for the balances involved)"
        ))
    if result.status != 0 or result.x is None:
        raise RoutingError(f"{asset}: sequencing solver did not prove an optimum ({result.message})")
    x = result.x
    used = sorted((j for j in range(k) if x[Y + j] > 0.5 and x[X + j] > 1e-9), key=lambda j: x[POS + j])
    transfers = _transfers(inst, used, [x[X + j] for j in used])
    moves = [Move(t.from_venue, t.to_venue, t.amount, t.amount - t.fee) for t in transfers]
    order = order_moves(inst.balance, moves, inst.target)
    if order is None:
        # A sliver on a rail the solver counts as unused (see routing_solver._exact_amounts): the cheapest amounts
        # on exactly these rails, if they can be ordered.
        amounts = _exact_amounts(inst, used)
        if amounts is not None:
            transfers = _transfers(inst, used, list(amounts))
            moves = [Move(t.from_venue, t.to_venue, t.amount, t.amount - t.fee) for t in transfers]
            order = order_moves(inst.balance, moves, inst.target)
    if order is None:
        raise RoutingError(f"{asset}: the sequencing model's plan failed the funding check (numerical trouble)")
    ordered = [transfers[i] for i in order]
    return AssetResult(True, sum(t.fee for t in ordered), ordered)
