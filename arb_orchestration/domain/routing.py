"""Exact rebalancing route planner: which rails to use, how much to send, and in what order.

The public surface of the planner (the rebalance saga and the `plan-route`
command import only from here):

- `plan_routes(balances, targets, rails) -> Plan`: the proven cheapest set of
  transfers that leaves every venue at or above its target, ordered so that
  each transfer is funded when it runs — and never takes its source below
  the source's own target (the floor rule, see docs/route-planner.md);
- `naive_plan(...) -> Plan`: direct transfers only, cheapest direct rail per
  deficit (the comparison baseline);
- `parse_problem(...)`/`RoutingInputError`: input validation that names the
  offending field, e.g. ``rails[3].fee_rate must be between 0 and 1``.

The model (a fixed-charge generalised min-cost flow solved per asset with
`scipy.optimize.milp`), the pruning rules and the ordering are explained in
`docs/route-planner.md`; the solver lives in `routing_solver.py` and the
ordering in `routing_order.py`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Plan",
    "Problem",
    "Rail",
    "RoutingError",
    "RoutingInputError",
    "Transfer",
    "naive_plan",
    "parse_problem",
    "plan_routes",
]


class RoutingInputError(ValueError):
    """The instance is malformed; `field` names the offending input, e.g. ``rails[3].fee_rate``."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field} {message}")
        self.field = field


class RoutingError(RuntimeError):
    """The solver failed to prove an answer (time limit, numerical trouble): never a silent guess."""


@dataclass(frozen=True)
class Rail:
    """One way to move `asset` from `from_venue` to `to_venue` (a withdrawal network).

    Sending `amount` debits `amount` at the source and credits
    ``amount * (1 - fee_rate) - fixed_fee`` at the destination. `max_amount`
    None means unbounded.
    """

    id: str
    from_venue: str
    to_venue: str
    asset: str
    fixed_fee: float
    fee_rate: float
    min_amount: float = 0.0
    max_amount: float | None = None
    eta_seconds: float = 0.0

    def fee(self, amount: float) -> float:
        return self.fixed_fee + self.fee_rate * amount

    @classmethod
    def _trusted(cls, rail_id: str, from_venue: str, to_venue: str, asset: str, fixed_fee: float, fee_rate: float,
                 min_amount: float, max_amount: float | None, eta_seconds: float) -> "Rail":
        """A rail from field values `_rail` has already validated and converted, without the frozen dataclass's
        nine `object.__setattr__` calls (~4 us a rail; a 20-venue plan parses 4,560). Still frozen, equal and hashed
        like any other."""
        rail = object.__new__(cls)
        rail.__dict__.update(id=rail_id, from_venue=from_venue, to_venue=to_venue, asset=asset, fixed_fee=fixed_fee,
                             fee_rate=fee_rate, min_amount=min_amount, max_amount=max_amount, eta_seconds=eta_seconds)
        return rail

    def credit(self, amount: float) -> float:
        return amount * (1.0 - self.fee_rate) - self.fixed_fee


@dataclass(frozen=True)
class Transfer:
    """One planned move on one rail."""

    rail: str
    from_venue: str
    to_venue: str
    asset: str
    amount: float
    fee: float

    @property
    def credited(self) -> float:
        return self.amount - self.fee

    def to_dict(self) -> dict[str, Any]:
        return {
            "rail": self.rail,
            "from": self.from_venue,
            "to": self.to_venue,
            "asset": self.asset,
            "amount": self.amount,
            "fee": self.fee,
        }


@dataclass(frozen=True)
class Plan:
    """The planner's answer.

    Feasible: `transfers` in executable order and their `total_fee` (the sum of
    fees across assets, each in its own asset's units; `fee_by_asset` splits it).
    Infeasible: `reason` says which venue/asset cannot be covered and by how much.
    `optimal` is True when the fee is a proven optimum (always, for
    `plan_routes`; never claimed for `naive_plan`).
    """

    feasible: bool
    total_fee: float = 0.0
    transfers: tuple[Transfer, ...] = ()
    reason: str | None = None
    optimal: bool = False
    fee_by_asset: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        if not self.feasible:
            return {"feasible": False, "reason": self.reason}
        return {
            "feasible": True,
            "total_fee": self.total_fee,
            "transfers": [t.to_dict() for t in self.transfers],
        }


@dataclass(frozen=True)
class Problem:
    """A validated instance: non-negative finite numbers, known venues, unique rail ids."""

    balances: Mapping[str, Mapping[str, float]]
    targets: Mapping[str, Mapping[str, float]]
    rails: tuple[Rail, ...]

    @property
    def venues(self) -> tuple[str, ...]:
        return tuple(self.balances)

    @property
    def assets(self) -> tuple[str, ...]:
        found = {r.asset for r in self.rails}
        for table in (self.balances, self.targets):
            for per_asset in table.values():
                found.update(per_asset)
        return tuple(sorted(found))

    def balance(self, venue: str, asset: str) -> float:
        return self.balances.get(venue, {}).get(asset, 0.0)

    def target(self, venue: str, asset: str) -> float:
        return self.targets.get(venue, {}).get(asset, 0.0)


# ---------------------------------------------------------------- validation

_RAIL_FIELDS = ("id", "from", "to", "asset", "fixed_fee", "fee_rate", "min_amount", "max_amount", "eta_seconds")
_RAIL_FIELD_SET = frozenset(_RAIL_FIELDS)


def _number(value: Any, name: str, field: str = "", *, minimum: float = 0.0) -> float:
    """`value` as a finite float >= minimum; the error names `name` + `field` (joined only on error: a plan
    validates thousands of rails)."""
    # bool is an int subclass: `true` in JSON is not an amount.
    if value.__class__ is not float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise RoutingInputError(name + field, f"must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float (JSON allows any number of digits)
        raise RoutingInputError(name + field, "must be finite (too large for a float)") from None
    if not math.isfinite(number):
        raise RoutingInputError(name + field, "must be finite")
    if number < minimum:
        raise RoutingInputError(name + field, f"must be >= {minimum:g}, got {number:g}")
    return number


def _name(value: Any, name: str, field: str = "") -> str:
    if not isinstance(value, str) or not value:
        raise RoutingInputError(name + field, "must be a non-empty string")
    return value


def _amount_table(table: Any, name: str, venues: Iterable[str] | None) -> dict[str, dict[str, float]]:
    if not isinstance(table, Mapping):
        raise RoutingInputError(name, "must be an object {venue: {asset: amount}}")
    known = None if venues is None else set(venues)
    out: dict[str, dict[str, float]] = {}
    for venue, per_asset in table.items():
        _name(venue, f"{name} key")
        if known is not None and venue not in known:
            raise RoutingInputError(f"{name}.{venue}", "is an unknown venue (not in balances)")
        if not isinstance(per_asset, Mapping):
            raise RoutingInputError(f"{name}.{venue}", "must be an object {asset: amount}")
        out[venue] = {}
        for asset, amount in per_asset.items():
            _name(asset, f"{name}.{venue} key")
            out[venue][asset] = _number(amount, f"{name}.{venue}.{asset}")
    return out


def _plain(value: Any) -> bool:
    """A finite int or float >= 0 that is not a bool: what `_number` accepts with its default minimum (an int too
    large for a float is not: `_number` names it)."""
    return (value.__class__ is float or value.__class__ is int) and 0.0 <= value <= sys.float_info.max


def _rail(raw: Any, index: int, venues: set[str]) -> Rail:
    """One rail from its raw form; the error names the field (`_rail_checked`).

    The common case first: a plain dict whose fields all pass `_rail_checked`'s checks, tested without building
    any message (a 20-venue plan has 4,560 rails: this about halves their parsing). Anything else,
    valid or not, goes through `_rail_checked`, which gives the same rail or the error.
    """
    if raw.__class__ is dict and raw.keys() <= _RAIL_FIELD_SET:
        get = raw.get
        rail_id, source, dest, asset = get("id"), get("from"), get("to"), get("asset")
        fixed, rate, low, high, eta = get("fixed_fee"), get("fee_rate"), get("min_amount", 0.0), get("max_amount"), get("eta_seconds")
        if (rail_id.__class__ is str and rail_id and source.__class__ is str and source in venues
                and dest.__class__ is str and dest in venues and source != dest and asset.__class__ is str and asset
                and _plain(fixed) and _plain(rate) and rate < 1.0 and _plain(low)
                and (high is None or (_plain(high) and high >= low)) and (eta is None or _plain(eta))):
            return Rail._trusted(rail_id, source, dest, asset, float(fixed), float(rate), float(low),
                                 None if high is None else float(high), 0.0 if eta is None else float(eta))
    return _rail_checked(raw, index, venues)


def _rail_checked(raw: Any, index: int, venues: set[str]) -> Rail:
    where = "rails[%d]" % index
    if isinstance(raw, Rail):
        raw = {
            "id": raw.id, "from": raw.from_venue, "to": raw.to_venue, "asset": raw.asset,
            "fixed_fee": raw.fixed_fee, "fee_rate": raw.fee_rate, "min_amount": raw.min_amount,
            "max_amount": raw.max_amount, "eta_seconds": raw.eta_seconds,
        }
    if not isinstance(raw, Mapping):
        raise RoutingInputError(where, "must be an object")
    for required in ("id", "from", "to", "asset", "fixed_fee", "fee_rate"):
        if required not in raw:
            raise RoutingInputError(f"{where}.{required}", "is missing")
    if not raw.keys() <= _RAIL_FIELD_SET:
        unknown = sorted(set(raw) - _RAIL_FIELD_SET)
        raise RoutingInputError(f"{where}.{unknown[0]}", f"is not a rail field (expected {', '.join(_RAIL_FIELDS)})")
    rail_id = _name(raw["id"], where, ".id")
    source = _name(raw["from"], where, ".from")
    dest = _name(raw["to"], where, ".to")
    for key, venue in (("from", source), ("to", dest)):
        if venue not in venues:
            raise RoutingInputError(f"{where}.{key}", f"is an unknown venue {venue!r} (not in balances)")
    if source == dest:
        raise RoutingInputError(f"{where}.to", "must differ from from")
    fee_rate = _number(raw["fee_rate"], where, ".fee_rate")
    if fee_rate >= 1.0:
        raise RoutingInputError(f"{where}.fee_rate", f"must be between 0 and 1 (exclusive of 1), got {fee_rate:g}")
    min_amount = _number(raw.get("min_amount", 0.0), where, ".min_amount")
    max_raw = raw.get("max_amount")
    max_amount = None if max_raw is None else _number(max_raw, where, ".max_amount")
    if max_amount is not None and max_amount < min_amount:
        raise RoutingInputError(f"{where}.max_amount", f"must be >= min_amount ({min_amount:g}), got {max_amount:g}")
    eta_raw = raw.get("eta_seconds")
    return Rail(
        id=rail_id,
        from_venue=source,
        to_venue=dest,
        asset=_name(raw["asset"], where, ".asset"),
        fixed_fee=_number(raw["fixed_fee"], where, ".fixed_fee"),
        fee_rate=fee_rate,
        min_amount=min_amount,
        max_amount=max_amount,
        eta_seconds=0.0 if eta_raw is None else _number(eta_raw, where, ".eta_seconds"),
    )


def parse_problem(balances: Any, targets: Any, rails: Any) -> Problem:
    """Validate raw input (parsed JSON or `Rail` objects); raise `RoutingInputError` naming the field.

    Every venue must appear in `balances` (possibly as ``{}``); targets and
    rails may only name those venues.
    """
    balance_table = _amount_table(balances, "balances", None)
    target_table = _amount_table({} if targets is None else targets, "targets", balance_table)
    if isinstance(rails, (str, bytes)) or not isinstance(rails, Iterable) or isinstance(rails, Mapping):
        raise RoutingInputError("rails", "must be a list of rail objects")
    venues = set(balance_table)
    parsed = tuple(_rail(raw, i, venues) for i, raw in enumerate(rails))
    seen: dict[str, int] = {}
    for i, rail in enumerate(parsed):
        if rail.id in seen:
            raise RoutingInputError(f"rails[{i}].id", f"duplicates rails[{seen[rail.id]}].id ({rail.id!r})")
        seen[rail.id] = i
    return Problem(balance_table, target_table, parsed)


# ---------------------------------------------------------------- entry points


def plan_routes(balances: Any, targets: Any, rails: Any, *, time_limit: float = 60.0) -> Plan:
    """The proven-cheapest executable plan (see the module docstring and docs/route-planner.md).

    `balances` may also be an already validated `Problem` (then `targets` and
    `rails` are ignored). Raises `RoutingInputError` for malformed input and `RoutingError` if the
    solver cannot prove an answer within `time_limit` seconds per asset.
    """
    from arb_orchestration.domain.routing_solver import solve_problem

    problem = balances if isinstance(balances, Problem) else parse_problem(balances, targets, rails)
    return solve_problem(problem, time_limit=time_limit)


def naive_plan(balances: Any, targets: Any, rails: Any) -> Plan:
    """Baseline: cover each deficit with direct transfers from surplus venues, cheapest rail first.

    Never relays, never uses a venue's money below its own target; infeasible
    when a deficit cannot be covered that way even if `plan_routes` can.
    """
    from arb_orchestration.domain.routing_solver import solve_naive

    problem = balances if isinstance(balances, Problem) else parse_problem(balances, targets, rails)
    return solve_naive(problem)
