"""Execution order for planned transfers: each transfer must be funded when it runs.

A transfer of `amount` from venue u can run when u currently holds at least
`amount` plus its floor (its target: a rebalance never draws a venue below
its own target mid-way; with floor 0 this is plain "is funded"). If the
transfers form no cycle, any topological order works (every venue receives
everything before it sends, and its final balance is >= its target). Cycles are rare in optimal plans (only min_amount can force
them) and need a search: greedy choices can strand money (send to v first,
then have nothing left for the leg that comes back), so we fall back to an
exhaustive depth-first search over executed sets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Move:
    """What ordering needs to know about a transfer (one asset)."""

    source: str
    dest: str
    amount: float
    credit: float


def funding_tolerance(amount: float) -> float:
    # The MILP's solution satisfies its rows to HiGHS's primal feasibility
    # tolerance (1e-7, on scaled rows): a venue holding amount*(1 - 1e-7) is
    # funded; anything short by more is a real shortfall.
    return 1e-7 * max(1.0, abs(amount))


def order_moves(
    balances: Mapping[str, float], moves: Sequence[Move], floors: Mapping[str, float] | None = None, *, budget: int = 200_000
) -> list[int] | None:
    """Indices of `moves` in an executable order, or None if no order exists (or the search budget ran out)."""
    floor = dict(floors or {})
    held = {v: b - floor.get(v, 0.0) for v, b in balances.items()}
    remaining = set(range(len(moves)))
    order: list[int] = []
    inbound: dict[str, int] = {}
    for m in moves:
        inbound[m.dest] = inbound.get(m.dest, 0) + 1

    def run(i: int) -> None:
        m = moves[i]
        held[m.source] = held.get(m.source, 0.0) - m.amount
        held[m.dest] = held.get(m.dest, 0.0) + m.credit
        inbound[m.dest] -= 1
        remaining.discard(i)
        order.append(i)

    # Topological pass: a venue sends only once everything bound for it has
    # arrived. This completes whenever the transfers are acyclic.
    progress = True
    while remaining and progress:
        progress = False
        for i in sorted(remaining, key=lambda k: (moves[k].source, moves[k].dest, k)):
            m = moves[i]
            if inbound.get(m.source, 0) == 0 and held.get(m.source, 0.0) >= m.amount - funding_tolerance(m.amount):
                run(i)
                progress = True
    if not remaining:
        return order
    rest = _search(held, moves, frozenset(remaining), budget)
    return None if rest is None else order + rest


def _search(start: Mapping[str, float], moves: Sequence[Move], todo: frozenset[int], budget: int) -> list[int] | None:
    """Depth-first search over which transfers have run; a dead set is never revisited."""
    dead: set[frozenset[int]] = set()
    visits = 0

    def held_after(done: list[int]) -> dict[str, float]:
        held = dict(start)
        for i in done:
            m = moves[i]
            held[m.source] = held.get(m.source, 0.0) - m.amount
            held[m.dest] = held.get(m.dest, 0.0) + m.credit
        return held

    def dfs(left: frozenset[int], done: list[int]) -> list[int] | None:
        nonlocal visits
        if not left:
            return done
        if left in dead:
            return None
        visits += 1
        if visits > budget:
            raise _BudgetExceeded
        held = held_after(done)
        # Prefer moves that return money to a venue with pending sends: they unblock others.
        senders = {moves[i].source for i in left}
        candidates = [i for i in left if held.get(moves[i].source, 0.0) >= moves[i].amount - funding_tolerance(moves[i].amount)]
        candidates.sort(key=lambda i: (moves[i].dest not in senders, -moves[i].credit, i))
        for i in candidates:
            found = dfs(left - {i}, done + [i])
            if found is not None:
                return found
        dead.add(left)
        return None

    try:
        return dfs(todo, [])
    except _BudgetExceeded:
        return None


class _BudgetExceeded(Exception):
    pass
