"""Rebalancing policy, rails and guardrails (pure Python: no Dagster, no I/O).

The `auto_rebalance_saga` (defs/rebalance) observes balances, then asks this
module three questions before any money moves:

1. **What should every venue hold?** `compute_targets(policy, balances)` turns a
   `TargetPolicy` (per venue and asset: a floor and/or a share of the asset's
   total) into the route planner's targets. Three levels per venue and asset:

   * `trigger = max(floor, share·total·(1 − tolerance))` — below it the venue
     is in deficit;
   * `refill  = max(floor·(1 + headroom), share·total)` — what a venue in
     deficit is brought up to;
   * `keep    = max(floor·(1 + headroom), share·total·(1 − tolerance))` — the
     lowest a *source* may be drawn down to (never into its own trigger zone,
     so one rebalance does not cause the next).

   Venues without a rule for an asset are left alone (neither source nor
   destination): nothing is ever drained because nobody said it may be.

2. **How can money move?** `withdrawal_rails` builds one planner `Rail` per
   (source venue, destination venue, asset, network) from the venues'
   withdrawal fees; `wise_rails` builds the fiat rails. Venues cannot withdraw
   fiat: a venue's EUR deficit is covered by a Wise transfer from the desk's
   Wise balance, modelled as the source "venue" `wise` (`FIAT_SOURCE`) with
   rails `wise → <venue>` whose fee comes from Wise quotes.

3. **May this plan run?** `apply_min_benefit` drops assets whose rebalance is
   not worth it (deficit too small, fees too high); `check_guardrails` returns
   every breached rule (per-transfer and per-day limits per asset, destination
   allowlist). A breach stops the saga before anything moves.

At the pivot it asks one more: **which goes first, and what if Wise wants a
person to fund?** `wise_funds_first` orders the pivot; `park_deadline` and
`park_action` decide how long a Wise leg that needs a human (SCA) waits and
what happens to it (`ParkedFunding` is its saga-log note).

Amount conventions follow the planner (`domain/routing.py`): a transfer's
`amount` is what leaves the source, `fee` what is lost on the way and
`credited = amount − fee` what arrives — which is the amount a withdrawal asks
to *arrive* (`VenueClient.withdraw`; a venue client whose exchange deducts the
network fee from the requested amount asks for credited + fee, so `amount`
leaves either way) or the target amount of a Wise quote (Wise's fee on top).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from arb_orchestration.domain.models import NetworkFee
from arb_orchestration.domain.routing import Plan, Rail, Transfer

__all__ = [
    "COMMIT_ORDERS",
    "FIAT_ASSETS",
    "FIAT_NETWORK",
    "FIAT_SOURCE",
    "Breach",
    "Guardrails",
    "ParkAction",
    "ParkedFunding",
    "PastRebalance",
    "PlannedTransfer",
    "RailSpec",
    "TargetPolicy",
    "TargetRule",
    "Targets",
    "VenueTarget",
    "apply_min_benefit",
    "check_guardrails",
    "compute_targets",
    "daily_usage",
    "earlier_park_deadlines",
    "fee_from_quotes",
    "format_amount",
    "park_action",
    "park_deadline",
    "planned_transfers",
    "rail_id",
    "round_up",
    "split_by_allowlist",
    "split_executable",
    "wise_rails",
    "wise_funds_first",
    "withdrawal_rails",
]

FIAT_SOURCE = "wise"  # the desk's Wise balance, the only source of fiat for venues
FIAT_NETWORK = "SEPA"  # how Wise pays a venue's IBAN
FIAT_ASSETS = frozenset({"EUR"})

# Rule names, as they appear in Failure metadata, logs and docs/rebalance.md.
RULE_PER_TRANSFER = "per_transfer_limit"
RULE_DAILY = "daily_limit"
RULE_ALLOWLIST = "destination_allowlist"
RULE_MIN_BENEFIT = "min_benefit"

_EPS = 1e-9
# Decimal places the venues and Wise accept per asset (default: 8).
ASSET_DECIMALS: Mapping[str, int] = {"EUR": 2, "USD": 2, "GBP": 2, "USDT": 6, "USDC": 6}


def format_amount(asset: str, amount: float) -> str:
    """`amount` for a person: in full at the asset's precision, no trailing zeros (never `250000` for
    250,000.4 nor `1.23457e+06`, which `:g` prints)."""
    text = f"{amount:.{ASSET_DECIMALS.get(asset, 8)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def round_up(asset: str, amount: float) -> float:
    """`amount` rounded *up* to the asset's precision: a deficit is covered, never missed by a cent."""
    decimals = ASSET_DECIMALS.get(asset, 8)
    scale = 10**decimals
    # The small slack keeps 100.000000001 (float noise) from becoming 100.01.
    return math.ceil(amount * scale - 1e-6) / scale


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class TargetRule:
    """Policy for one venue (or `*`: every venue that carries the asset) and asset.

    `floor`: minimum free balance. `share`: fraction of the asset's total free
    balance over the managed venues. A venue-specific rule overrides a `*` rule,
    which overrides the per-asset default floor.
    """

    venue: str
    asset: str
    floor: float = 0.0
    share: float | None = None

    def __post_init__(self) -> None:
        if not self.venue or not self.asset:
            raise ValueError("a target rule needs a venue (or '*') and an asset")
        if not math.isfinite(self.floor) or self.floor < 0:
            raise ValueError(f"target {self.venue}/{self.asset}: floor must be >= 0, got {self.floor}")
        if self.share is not None and not (0.0 <= self.share <= 1.0):
            raise ValueError(f"target {self.venue}/{self.asset}: share must be within [0, 1], got {self.share}")


@dataclass(frozen=True)
class TargetPolicy:
    """What the desk wants every venue to hold (see the module docstring for the three levels)."""

    assets: tuple[str, ...]
    default_floors: Mapping[str, float] = field(default_factory=dict)
    rules: tuple[TargetRule, ...] = ()
    # Hard lower bounds {venue: {asset: floor}} (the market_data floors): a rule never goes below them.
    # A '*' entry applies to every venue without an entry of its own.
    minimum_floors: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    tolerance: float = 0.05
    refill_headroom: float = 0.20
    # Kept on the Wise balance per fiat asset.
    fiat_reserve: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "assets", tuple(dict.fromkeys(self.assets)))
        object.__setattr__(self, "rules", tuple(self.rules))
        if not 0.0 <= self.tolerance < 1.0:
            raise ValueError(f"tolerance must be within [0, 1), got {self.tolerance}")
        if not 0.0 <= self.refill_headroom <= 10.0:
            raise ValueError(f"refill_headroom must be within [0, 10], got {self.refill_headroom}")
        for asset, floor in self.default_floors.items():
            if not math.isfinite(floor) or floor < 0:
                raise ValueError(f"default floor for {asset} must be >= 0, got {floor}")
        seen: set[tuple[str, str]] = set()
        for rule in self.rules:
            if (rule.venue, rule.asset) in seen:
                raise ValueError(f"two target rules for {rule.venue}/{rule.asset}")
            seen.add((rule.venue, rule.asset))
            if rule.venue == FIAT_SOURCE:
                raise ValueError(f"'{FIAT_SOURCE}' is the fiat source, not a venue with targets (use fiat_reserve)")
        for asset in self.assets:
            specific = sum(r.share or 0.0 for r in self.rules if r.asset == asset and r.venue != "*")
            if specific > 1.0 + _EPS:
                raise ValueError(f"target shares for {asset} add up to {specific:g} > 1")

    def minimum_floor(self, venue: str, asset: str) -> float:
        floors = self.minimum_floors.get(venue, self.minimum_floors.get("*", {}))
        return float(floors.get(asset, 0.0))

    def rule_for(self, venue: str, asset: str, carried: bool) -> TargetRule | None:
        """The effective rule, or None when the venue is not managed for this asset."""
        specific = next((r for r in self.rules if r.venue == venue and r.asset == asset), None)
        if specific is not None:
            return specific
        if not carried:  # '*' and defaults only cover venues that carry the asset
            return None
        wildcard = next((r for r in self.rules if r.venue == "*" and r.asset == asset), None)
        if wildcard is not None:
            return wildcard
        if asset in self.default_floors:
            return TargetRule(venue, asset, floor=self.default_floors[asset])
        return None


@dataclass(frozen=True)
class VenueTarget:
    """One managed (venue, asset): its balance, levels and what the planner must achieve."""

    venue: str
    asset: str
    balance: float
    floor: float
    share: float | None
    trigger: float
    refill: float
    keep: float
    target: float  # the planner's target: final balance >= target

    @property
    def deficit(self) -> float:
        """How much this venue must receive (0 unless it is below its trigger)."""
        return max(0.0, self.target - self.balance)

    def to_dict(self) -> dict[str, Any]:
        return {
            "venue": self.venue,
            "asset": self.asset,
            "balance": self.balance,
            "floor": self.floor,
            "share": self.share,
            "trigger": self.trigger,
            "refill": self.refill,
            "keep": self.keep,
            "target": self.target,
            "deficit": self.deficit,
        }


@dataclass(frozen=True)
class Targets:
    """Everything the route planner needs, plus the per-venue levels for reports."""

    rows: tuple[VenueTarget, ...]
    balances: Mapping[str, Mapping[str, float]]  # planner balances (venues + FIAT_SOURCE)
    targets: Mapping[str, Mapping[str, float]]  # planner targets
    managed: Mapping[str, frozenset[str]]  # asset -> venues that may send/receive it

    def needs(self) -> dict[str, float]:
        """Total deficit per asset (only assets with one)."""
        out: dict[str, float] = {}
        for row in self.rows:
            if row.deficit > _EPS:
                out[row.asset] = out.get(row.asset, 0.0) + row.deficit
        return out

    def for_asset(self, asset: str) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
        """(balances, targets) restricted to one asset, every venue kept (the planner needs them all)."""
        balances = {v: {asset: b[asset]} if asset in b else {} for v, b in self.balances.items()}
        targets = {v: {asset: t[asset]} for v, t in self.targets.items() if asset in t}
        return balances, targets


def compute_targets(
    policy: TargetPolicy,
    balances: Mapping[str, Mapping[str, float]],
    fiat_balances: Mapping[str, float] | None = None,
) -> Targets:
    """The planner's targets for free `balances` {venue: {asset: free}} under `policy`.

    A venue carries an asset when the asset appears in its balances. The fiat
    source (`wise`) holds `fiat_balances` and may give all but its reserve.
    """
    fiat_balances = dict(fiat_balances or {})
    if FIAT_SOURCE in balances:
        raise ValueError(f"'{FIAT_SOURCE}' is reserved for the Wise balance; a venue cannot be called that")
    rows: list[VenueTarget] = []
    managed: dict[str, set[str]] = {}
    planner_balances: dict[str, dict[str, float]] = {v: {} for v in balances}
    planner_targets: dict[str, dict[str, float]] = {}
    for asset in policy.assets:
        rules = {}
        for venue in balances:
            rule = policy.rule_for(venue, asset, carried=asset in balances[venue])
            if rule is not None:
                rules[venue] = rule
        total = sum(max(0.0, balances[v].get(asset, 0.0)) for v in rules)
        for venue, rule in rules.items():
            balance = max(0.0, float(balances[venue].get(asset, 0.0)))
            floor = max(rule.floor, policy.minimum_floor(venue, asset))
            share_level = (rule.share or 0.0) * total
            trigger = max(floor, share_level * (1 - policy.tolerance))
            refill = max(floor * (1 + policy.refill_headroom), share_level)
            keep = max(floor * (1 + policy.refill_headroom), share_level * (1 - policy.tolerance))
            target = refill if balance < trigger - _EPS else min(balance, keep)
            rows.append(VenueTarget(venue, asset, balance, floor, rule.share, trigger, refill, keep, target))
            planner_balances[venue][asset] = balance
            planner_targets.setdefault(venue, {})[asset] = target
            managed.setdefault(asset, set()).add(venue)
        if asset in FIAT_ASSETS and asset in fiat_balances:
            available = max(0.0, float(fiat_balances[asset]))
            reserve = policy.fiat_reserve.get(asset, 0.0)
            planner_balances.setdefault(FIAT_SOURCE, {})[asset] = available
            planner_targets.setdefault(FIAT_SOURCE, {})[asset] = min(available, reserve)
            managed.setdefault(asset, set()).add(FIAT_SOURCE)
    return Targets(
        rows=tuple(rows),
        balances=planner_balances,
        targets=planner_targets,
        managed={a: frozenset(v) for a, v in managed.items()},
    )


# --------------------------------------------------------------------------- rails


@dataclass(frozen=True)
class RailSpec:
    """A planner rail plus what executing it needs: the network and the kind of leg."""

    rail: Rail
    network: str
    kind: str  # "withdrawal" (a venue withdraws over `network`) | "wise" (Wise pays the venue's IBAN)


def rail_id(source: str, dest: str, asset: str, network: str) -> str:
    return f"{source}->{dest}:{asset}:{network}"


def withdrawal_rails(
    fees: Mapping[str, Sequence[NetworkFee]],
    managed: Mapping[str, Iterable[str]],
) -> list[RailSpec]:
    """One rail per (source, destination, asset, network) between managed venues.

    `fees` is each venue's `fetch_deposit_withdraw_fees()`. A venue is assumed
    to accept deposits on the networks it withdraws on (the deposit address is
    fetched, and checked, only for the transfers the plan uses). The venue's
    `min_amount`/`max_amount` bound the withdrawn (credited) amount, so the
    rail's bounds on the sent amount add the fee.
    """
    receivable = {v: {(f.asset, f.network) for f in rows} for v, rows in fees.items()}
    out: list[RailSpec] = []
    for source in sorted(fees):
        for nf in sorted(fees[source], key=lambda f: (f.asset, f.network)):
            if nf.asset in FIAT_ASSETS:
                continue  # fiat leaves venues through Wise only
            venues = set(managed.get(nf.asset, ()))
            if source not in venues:
                continue
            if not 0.0 <= nf.fee_rate < 1.0 or nf.fee < 0:
                continue  # a fee the planner cannot model is not a rail
            scale = 1.0 / (1.0 - nf.fee_rate)
            for dest in sorted(venues - {source, FIAT_SOURCE}):
                if (nf.asset, nf.network) not in receivable.get(dest, set()):
                    continue
                out.append(
                    RailSpec(
                        Rail(
                            id=rail_id(source, dest, nf.asset, nf.network),
                            from_venue=source,
                            to_venue=dest,
                            asset=nf.asset,
                            fixed_fee=nf.fee,
                            fee_rate=nf.fee_rate,
                            min_amount=(nf.min_amount + nf.fee) * scale,
                            max_amount=None if nf.max_amount is None else (nf.max_amount + nf.fee) * scale,
                            eta_seconds=nf.eta_seconds,
                        ),
                        network=nf.network,
                        kind="withdrawal",
                    )
                )
    return out


def fee_from_quotes(samples: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(fixed fee, fee rate) fitted to quotes given as (source amount, total fee).

    Two quotes at different amounts pin a linear fee; one quote is taken as a
    fixed fee. Negative parts are clamped to 0 (the line through two points
    may dip below; the planner then slightly underestimates nothing but the
    rounding).
    """
    points = sorted({(float(a), float(f)) for a, f in samples if a > 0})
    if not points:
        raise ValueError("need at least one quote (source amount > 0, fee)")
    if len(points) == 1 or points[-1][0] - points[0][0] < _EPS:
        return max(0.0, points[-1][1]), 0.0
    (a1, f1), (a2, f2) = points[0], points[-1]
    rate = max(0.0, (f2 - f1) / (a2 - a1))
    fixed = max(0.0, f1 - rate * a1)
    return fixed, min(rate, 0.5)


def wise_rails(destinations: Iterable[str], asset: str, fixed_fee: float, fee_rate: float,
               eta_seconds: float = 0.0) -> list[RailSpec]:
    """Rails `wise → <venue>` for a fiat asset: Wise pays the venue's IBAN from the desk's balance."""
    return [
        RailSpec(
            Rail(
                id=rail_id(FIAT_SOURCE, dest, asset, FIAT_NETWORK),
                from_venue=FIAT_SOURCE,
                to_venue=dest,
                asset=asset,
                fixed_fee=fixed_fee,
                fee_rate=fee_rate,
                eta_seconds=eta_seconds,
            ),
            network=FIAT_NETWORK,
            kind="wise",
        )
        for dest in sorted(set(destinations) - {FIAT_SOURCE})
    ]


# --------------------------------------------------------------------------- planned transfers


@dataclass(frozen=True)
class PlannedTransfer:
    """One move of the plan, with everything executing it needs. `index` is its place in the plan."""

    index: int
    rail: str
    kind: str  # "withdrawal" | "wise"
    from_venue: str
    to_venue: str
    asset: str
    network: str
    amount: float  # leaves the source
    fee: float
    credited: float  # arrives: the withdrawal amount / the Wise quote's source amount minus its fee
    eta_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "rail": self.rail,
            "kind": self.kind,
            "from": self.from_venue,
            "to": self.to_venue,
            "asset": self.asset,
            "network": self.network,
            "amount": self.amount,
            "fee": self.fee,
            "credited": self.credited,
            "eta_seconds": self.eta_seconds,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "PlannedTransfer":
        return cls(
            index=int(raw["index"]),
            rail=str(raw["rail"]),
            kind=str(raw["kind"]),
            from_venue=str(raw["from"]),
            to_venue=str(raw["to"]),
            asset=str(raw["asset"]),
            network=str(raw["network"]),
            amount=float(raw["amount"]),
            fee=float(raw["fee"]),
            credited=float(raw["credited"]),
            eta_seconds=float(raw.get("eta_seconds") or 0.0),
        )


def planned_transfers(transfers: Sequence[Transfer], specs: Mapping[str, RailSpec]) -> list[PlannedTransfer]:
    """The planner's transfers (in executable order) as executable legs, amounts rounded to what venues take.

    The credited amount is rounded *up* (a deficit is covered, not missed by
    a cent); the fee is the rail's fee, so `amount = credited + fee` (for a
    rail with a rate, the fee at the rounded amount).
    """
    out: list[PlannedTransfer] = []
    for i, t in enumerate(transfers):
        spec = specs[t.rail]
        credited = round_up(t.asset, t.credited)
        rail = spec.rail
        amount = (credited + rail.fixed_fee) / (1.0 - rail.fee_rate)
        out.append(
            PlannedTransfer(
                index=i,
                rail=t.rail,
                kind=spec.kind,
                from_venue=t.from_venue,
                to_venue=t.to_venue,
                asset=t.asset,
                network=spec.network,
                amount=amount,
                fee=round(amount - credited, 12),  # float noise off the books
                credited=credited,
                eta_seconds=rail.eta_seconds,
            )
        )
    return out


def split_executable(
    transfers: Sequence[PlannedTransfer],
    balances: Mapping[str, Mapping[str, float]],
    targets: Mapping[str, Mapping[str, float]] | None = None,
) -> tuple[list[PlannedTransfer], list[PlannedTransfer]]:
    """(run now, deferred): legs whose source can pay them *without* waiting for another leg to arrive.

    A relay (A → B → C) needs B to receive before it sends; the saga commits
    every leg at its pivot, so such legs are deferred to the next rebalance,
    which re-plans from the balances they left. Optimal plans with direct
    rails contain none. "Without waiting" means out of B's surplus above its
    planner target (`targets`; the planner's floor rule): a B that could pay
    only by dipping below its own target until the inbound leg lands waits too.
    """
    targets = targets or {}
    inbound = {(t.to_venue, t.asset) for t in transfers}
    outgoing: dict[tuple[str, str], float] = {}
    for t in transfers:
        outgoing[(t.from_venue, t.asset)] = outgoing.get((t.from_venue, t.asset), 0.0) + t.amount
    now, deferred = [], []
    for t in transfers:
        key = (t.from_venue, t.asset)
        own = balances.get(t.from_venue, {}).get(t.asset, 0.0)
        spare = own - max(0.0, targets.get(t.from_venue, {}).get(t.asset, 0.0))
        if key in inbound and outgoing[key] > spare + _EPS:
            deferred.append(t)
        else:
            now.append(t)
    return now, deferred


# --------------------------------------------------------------------------- guardrails


# A rebalance whose fees exceed a tenth of what it moves is not worth it (the desk's defaults: 1 %); a larger
# `max_fee_ratio` is most likely a percent typed as a number (1 for 1 %), which would let fees up to the whole deficit pass.
MAX_FEE_RATIO_LIMIT = 0.10


@dataclass(frozen=True)
class Guardrails:
    """Limits a plan must satisfy before anything moves (defaults: docs/rebalance.md).

    `max_transfer`/`max_daily`: per asset, in the asset's units, on the amount
    that leaves the source; an asset without a limit is refused (fail closed).
    `allowed_destinations`: `venue:network` patterns (`*` wildcards, e.g.
    `*:TRC20`, `kraken:*`). `min_deficit`/`max_fee_ratio`: an asset whose
    total deficit is below its minimum, or whose fees exceed that fraction of
    the deficit, is not rebalanced (skipped, not a failure).

    Every number must be finite and >= 0 (NaN compares false both ways, so a
    NaN or infinite limit would never breach: the limit switched off), and
    `max_fee_ratio` a fraction up to `MAX_FEE_RATIO_LIMIT`; else ValueError
    naming the field.
    """

    max_transfer: Mapping[str, float]
    max_daily: Mapping[str, float]
    allowed_destinations: tuple[str, ...]
    min_deficit: Mapping[str, float] = field(default_factory=dict)
    max_fee_ratio: float = 0.01

    def __post_init__(self) -> None:
        problems = [
            f"{name}[{asset}] must be a finite number >= 0 ({asset} units), got {value!r}"
            for name in ("max_transfer", "max_daily", "min_deficit")
            for asset, value in getattr(self, name).items()
            if not (math.isfinite(value) and value >= 0)
        ]
        if not (math.isfinite(self.max_fee_ratio) and 0 <= self.max_fee_ratio <= MAX_FEE_RATIO_LIMIT):
            problems.append(f"max_fee_ratio must be a fraction within [0, {MAX_FEE_RATIO_LIMIT:g}] (0.01 means 1 %; "
                            f"a larger value looks like a percent), got {self.max_fee_ratio!r}")
        if problems:
            raise ValueError("; ".join(problems))

    def allows(self, venue: str, network: str) -> bool:
        target = f"{venue}:{network}"
        return any(fnmatch.fnmatchcase(target, pattern if ":" in pattern else f"{pattern}:*")
                   for pattern in self.allowed_destinations)


@dataclass(frozen=True)
class Breach:
    """One broken rule: `rule` is its name (metadata `arb/guardrail`), `message` says how."""

    rule: str
    message: str
    asset: str | None = None
    transfer: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "message": self.message, "asset": self.asset, "transfer": self.transfer}


def apply_min_benefit(
    transfers: Sequence[PlannedTransfer], needs: Mapping[str, float], guardrails: Guardrails
) -> tuple[list[PlannedTransfer], dict[str, str]]:
    """(kept transfers, {asset: why skipped}) — assets not worth moving are dropped whole.

    Assets are independent in the plan, so dropping one leaves the others executable.
    """
    fees: dict[str, float] = {}
    for t in transfers:
        fees[t.asset] = fees.get(t.asset, 0.0) + t.fee
    skipped: dict[str, str] = {}
    for asset in sorted(fees):
        need = needs.get(asset, 0.0)
        minimum = guardrails.min_deficit.get(asset, 0.0)
        if need < minimum:
            skipped[asset] = (f"{RULE_MIN_BENEFIT}: deficit {format_amount(asset, need)} {asset} is below the minimum "
                              f"{format_amount(asset, minimum)}")
        elif need > 0 and fees[asset] / need > guardrails.max_fee_ratio:
            skipped[asset] = (
                f"{RULE_MIN_BENEFIT}: fees {format_amount(asset, fees[asset])} {asset} are {fees[asset] / need:.2%} "
                f"of the {format_amount(asset, need)} deficit (max {guardrails.max_fee_ratio:.2%})"
            )
    return [t for t in transfers if t.asset not in skipped], skipped


def split_by_allowlist(specs: Iterable[RailSpec], guardrails: Guardrails) -> tuple[list[RailSpec], list[RailSpec]]:
    """(allowed, excluded) rails: those whose destination `venue:network` the allowlist admits, and the rest.

    The planner gets only the allowed ones, so it finds the cheapest *allowed* plan rather than a cheaper
    route over an unlisted network that the guardrail would then refuse. `check_guardrails` still checks
    every leg (defence in depth).
    """
    allowed: list[RailSpec] = []
    excluded: list[RailSpec] = []
    for spec in specs:
        (allowed if guardrails.allows(spec.rail.to_venue, spec.network) else excluded).append(spec)
    return allowed, excluded


def split_by_withdrawable_source(
    specs: Iterable[RailSpec], unwithdrawable: Iterable[str]
) -> tuple[list[RailSpec], list[RailSpec]]:
    """(kept, excluded) rails: withdrawal rails out of an `unwithdrawable` venue are excluded, the rest kept.

    A venue whose withdrawals cannot carry a client id (nothing to look them up by after a retry) is not a
    withdrawal source; it still receives. Wise rails are not withdrawals and are always kept.
    """
    blocked = set(unwithdrawable)
    kept: list[RailSpec] = []
    excluded: list[RailSpec] = []
    for spec in specs:
        (excluded if spec.kind == "withdrawal" and spec.rail.from_venue in blocked else kept).append(spec)
    return kept, excluded


def check_guardrails(
    transfers: Sequence[PlannedTransfer],
    guardrails: Guardrails,
    used_today: Mapping[str, float] | None = None,
) -> list[Breach]:
    """Every rule `transfers` break (empty: the plan may run). `used_today`: see `daily_usage`."""
    used_today = used_today or {}
    breaches: list[Breach] = []
    totals: dict[str, float] = {}
    for t in transfers:
        totals[t.asset] = totals.get(t.asset, 0.0) + t.amount
        limit = guardrails.max_transfer.get(t.asset)
        if limit is None:
            breaches.append(Breach(RULE_PER_TRANSFER, f"no per-transfer limit is configured for {t.asset}",
                                   t.asset, t.index))
        elif t.amount > limit + _EPS:
            breaches.append(Breach(
                RULE_PER_TRANSFER,
                f"transfer #{t.index} moves {format_amount(t.asset, t.amount)} {t.asset} ({t.rail}), above the "
                f"per-transfer limit {format_amount(t.asset, limit)}",
                t.asset, t.index,
            ))
        if not guardrails.allows(t.to_venue, t.network):
            breaches.append(Breach(
                RULE_ALLOWLIST,
                f"transfer #{t.index} goes to {t.to_venue} over {t.network}, which is not in the destination "
                f"allowlist ({', '.join(guardrails.allowed_destinations) or 'empty'})",
                t.asset, t.index,
            ))
    for asset, amount in sorted(totals.items()):
        limit = guardrails.max_daily.get(asset)
        used = used_today.get(asset, 0.0)
        if limit is None:
            breaches.append(Breach(RULE_DAILY, f"no daily limit is configured for {asset}", asset))
        elif used + amount > limit + _EPS:
            breaches.append(Breach(
                RULE_DAILY,
                f"{asset}: {format_amount(asset, used)} already moved or reserved today + "
                f"{format_amount(asset, amount)} planned = {format_amount(asset, used + amount)}, "
                f"above the daily limit {format_amount(asset, limit)}",
                asset,
            ))
    return breaches


@dataclass(frozen=True)
class PastRebalance:
    """What one earlier rebalance saga (of the same UTC day) planned and did, from its saga log.

    `planned`: (index, asset, amount) of the legs it reserved (the plan it
    committed to run; dry runs reserve nothing). `committed`: legs whose money
    left (withdrawal created / Wise transfer funded). `cancelled`: legs its
    compensation cancelled. `rolled_back`: its rollback has settled which legs left (its
    compensation began and the pivot's own compensation succeeded, or the pivot never started); until
    then the whole plan counts.
    """

    saga_id: str
    planned: tuple[tuple[int, str, float], ...] = ()
    committed: frozenset[int] = frozenset()
    cancelled: frozenset[int] = frozenset()
    rolled_back: bool = False
    dry_run: bool = False


def daily_usage(past: Iterable[PastRebalance]) -> dict[str, float]:
    """Per asset, what earlier rebalances today moved or still hold reserved.

    A saga that is running or finished counts its whole plan (reserved until it
    ends; committed after); a rolled-back one counts only the legs that had left
    and could not be cancelled.
    """
    used: dict[str, float] = {}
    for saga in past:
        if saga.dry_run:
            continue
        for index, asset, amount in saga.planned:
            if saga.rolled_back and (index not in saga.committed or index in saga.cancelled):
                continue
            used[asset] = used.get(asset, 0.0) + amount
    return used


def fee_summary(plan: Plan | None) -> dict[str, float]:
    """Fee per asset of a planner answer ({} when there is none or it is infeasible)."""
    if plan is None or not plan.feasible:
        return {}
    out: dict[str, float] = {}
    for t in plan.transfers:
        out[t.asset] = out.get(t.asset, 0.0) + t.fee
    return out


# --------------------------------------------------------------------------- funding that needs a human
#
# EU/UK personal Wise tokens cannot fund a transfer through the API (PSD2 strong customer
# authentication): the transfer exists, unfunded and cancellable, until a person funds it in the
# Wise app. The saga then *parks* at its pivot: it records the leg, tells the risk team, and waits
# with a deadline; funded → it goes on; deadline passed → the transfer is cancelled and the saga
# compensates. The decisions are here; defs/rebalance/funding.py does the I/O.

COMMIT_ORDERS = ("auto", "wise_first", "withdrawals_first")


def wise_funds_first(order: str, *, funding_may_need_human: bool) -> bool:
    """Whether the pivot funds the Wise legs before it creates the withdrawals.

    A funded Wise transfer is gone at once; a withdrawal can be cancelled only
    while `pending` (minutes). With an account that funds through the API the
    withdrawals go first, so a refused funding still cancels them. When funding
    may need a human (hours), it goes first, so a human who never approves
    leaves nothing moved and the whole saga compensates. The price: a withdrawal
    refused *after* a Wise leg was funded leaves that leg in flight — legs are
    independent (relays are deferred), so that is a partial rebalance, not a loss.
    `order`: "auto" (decide from `funding_may_need_human`), "wise_first", "withdrawals_first".
    """
    if order not in COMMIT_ORDERS:
        raise ValueError(f"commit order must be one of {COMMIT_ORDERS}, got {order!r}")
    if order == "auto":
        return funding_may_need_human
    return order == "wise_first"


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class ParkedFunding:
    """A Wise leg whose transfer exists but must be funded by a person before `deadline` (epoch seconds)."""

    index: int
    transfer_id: int
    amount: float  # leaves the Wise balance (the transfer's source value)
    currency: str
    to_venue: str
    credited: float  # arrives at the venue
    parked_at: float
    deadline: float
    reference: str = ""
    recipient: str = ""  # masked IBAN

    @property
    def deadline_utc(self) -> str:
        return _utc(self.deadline)

    def describe(self) -> str:
        """The line the run's UI shows while the saga waits."""
        return (f"waiting for a human to approve Wise transfer {self.transfer_id} "
                f"({self.amount:,.2f} {self.currency} → {self.to_venue}) in the Wise app until {self.deadline_utc}")

    def to_note(self) -> dict[str, Any]:
        """The saga-log note (`ctx.note(**...)`) that records the park durably."""
        return {"parked": self.index, "wise_transfer_id": self.transfer_id, "amount": self.amount,
                "currency": self.currency, "to": self.to_venue, "credited": self.credited,
                "parked_at": self.parked_at, "deadline": self.deadline, "deadline_utc": self.deadline_utc,
                "reference": self.reference, "recipient": self.recipient}

    @classmethod
    def from_note(cls, note: Mapping[str, Any]) -> "ParkedFunding":
        return cls(index=int(note["parked"]), transfer_id=int(note["wise_transfer_id"]), amount=float(note["amount"]),
                   currency=str(note["currency"]), to_venue=str(note["to"]), credited=float(note["credited"]),
                   parked_at=float(note["parked_at"]), deadline=float(note["deadline"]),
                   reference=str(note.get("reference") or ""), recipient=str(note.get("recipient") or ""))


def earlier_park_deadlines(progress: Iterable[Mapping[str, Any]]) -> dict[int, float]:
    """Per Wise transfer id, the first deadline an earlier attempt of the pivot recorded (saga-log notes)."""
    out: dict[int, float] = {}
    for note in progress:
        if "parked" in note and "deadline" in note:
            out.setdefault(int(note["wise_transfer_id"]), float(note["deadline"]))
    return out


def park_deadline(now: float, timeout: float, *, earlier: float | None = None,
                  run_ends_at: float | None = None, reserve: float = 0.0) -> tuple[float, str | None]:
    """When to stop waiting for the human, and why it is sooner than `timeout` (None if it is not).

    A retried or relaunched pivot keeps the deadline its first attempt announced
    (`earlier`): the risk team was told a time, and a retry must not extend it.
    The wait also ends `reserve` seconds (time to create the withdrawals and see
    every leg arrive) before `run_ends_at`, when run monitoring would terminate
    the run (`dagster/max_runtime`): the saga cancels cleanly instead of being killed.
    """
    if earlier is not None:
        return earlier, "kept from an earlier attempt of this step"
    deadline = now + max(0.0, timeout)
    if run_ends_at is not None and run_ends_at - reserve < deadline:
        return max(now, run_ends_at - reserve), (
            f"shortened to end {reserve:g}s before the run's dagster/max_runtime ({_utc(run_ends_at)})")
    return deadline, None


class ParkAction(str, Enum):
    PROCEED = "proceed"  # funded (by the API or a person): the leg is committed
    WAIT = "wait"  # still unfunded, deadline not reached
    CANCEL = "cancel"  # still unfunded at the deadline: cancel it, then compensate
    CLOSED = "closed"  # cancelled or refunded meanwhile (someone in the Wise app): business failure


def park_action(*, waiting: bool, failed: bool, now: float, deadline: float) -> ParkAction:
    """What to do with a parked leg whose transfer is now `waiting` (unfunded) or `failed` (closed)."""
    if failed:
        return ParkAction.CLOSED
    if not waiting:
        return ParkAction.PROCEED
    return ParkAction.WAIT if now < deadline else ParkAction.CANCEL


# --------------------------------------------------------------------------- Wise payment references

# Longest payment reference (`details.reference`) Wise takes per currency route. Wise: "Maximum allowed
# characters depends on the currency route"; its help lists EUR 35, GBP 16 (18 in another version of the
# page), USD 10, SEK 12 (docs/wise-api-conformance.md, T4). Whether a longer one is refused or cut is not
# documented, so a reference is made to fit. A currency not listed gets the shortest known limit.
WISE_REFERENCE_MAX_CHARS = {"EUR": 35, "GBP": 16, "USD": 10, "SEK": 12}
WISE_REFERENCE_DEFAULT_MAX_CHARS = 10


def wise_reference_limit(currency: str) -> int:
    return WISE_REFERENCE_MAX_CHARS.get(currency.upper(), WISE_REFERENCE_DEFAULT_MAX_CHARS)


def wise_reference_problem(reference: str, currency: str) -> str | None:
    """Why `reference` cannot be sent as a Wise payment reference in `currency`; None when it can."""
    if not isinstance(reference, str) or not reference.strip():
        return "must be a non-empty string"
    if not reference.isascii() or not reference.isprintable():
        return f"must be printable ASCII, got {reference!r}"
    limit = wise_reference_limit(currency)
    if len(reference) > limit:
        return f"is {len(reference)} characters; Wise takes at most {limit} for {currency.upper()}"
    return None


def wise_reference(saga_id: str, leg_index: int, currency: str, venue_reference: str | None = None) -> str:
    """The payment reference of a rebalance's Wise leg.

    The destination venue's own reference when it needs one to credit the deposit to our account
    (`fiat_deposit_references`): sent as it is, refused (ValueError) if Wise cannot carry it, because a
    shortened one would leave the money unassigned at the venue. Otherwise our own, fitted to the
    currency's limit: `rebalance <saga8>-<leg>` where it fits, else `<saga8>-<leg>`, else the saga part
    cut so the leg number stays.
    """
    if venue_reference is not None:
        problem = wise_reference_problem(venue_reference, currency)
        if problem:
            raise ValueError(f"the venue's deposit reference {problem}")
        return venue_reference
    limit = wise_reference_limit(currency)
    short = f"{saga_id[:8]}-{leg_index}"
    for candidate in (f"rebalance {short}", short):
        if len(candidate) <= limit:
            return candidate
    suffix = f"-{leg_index}"
    return saga_id[: max(1, limit - len(suffix))] + suffix
