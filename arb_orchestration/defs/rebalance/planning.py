"""Observe the venues and Wise, then propose a plan: shared by the saga's first step and `rebalance_plan`.

`propose` does all the I/O the decision needs (fresh balances, withdrawal
fees, the IBANs and Wise quotes of the fiat legs) and hands the rest to the
pure modules: targets and guardrails (`domain/rebalance.py`), the exact route
planner (`domain/routing.py`). It moves nothing.

Two balances per venue (docs/planner-balances.md): the whole balance
(`fetch_balance`, the books: on Binance/OKX it counts the withdrawal wallet too)
decides the targets and deficits; what a withdrawal can spend
(`fetch_spendable_balance`: the trading account only there) is all a venue may
send. Money in a withdrawal wallet counts toward its venue's target but is
never planned to leave: `movable_targets` takes it off both the venue's planner
balance and its planner target, and the plan's notes name it.
"""

from __future__ import annotations

import logging
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, TypeVar

from arb_orchestration.domain.models import Balance, NetworkFee
from arb_orchestration.domain.rebalance import (
    FIAT_ASSETS,
    FIAT_NETWORK,
    Breach,
    PlannedTransfer,
    RailSpec,
    Targets,
    apply_min_benefit,
    check_guardrails,
    compute_targets,
    fee_from_quotes,
    format_amount,
    planned_transfers,
    split_by_allowlist,
    split_by_withdrawable_source,
    split_executable,
    wise_rails,
    withdrawal_rails,
)
from arb_orchestration.domain.routing import naive_plan, plan_routes
from arb_orchestration.resources.errors import BusinessError
from arb_orchestration.resources.venue import ExchangeResource
from arb_orchestration.resources.wise import WiseResource

T = TypeVar("T")
_log = logging.getLogger("arb_orchestration.defs.rebalance")

# Quote sizes for fitting Wise's fee line: at least this much, so the fee is a small part of it.
_MIN_QUOTE_AMOUNT = 1_000.0


@dataclass
class Proposal:
    """What a rebalance would do now, and whether it may."""

    observed_at: float
    balances: dict[str, dict[str, Balance]]  # per venue, fresh
    fiat_balances: dict[str, float]  # the desk's Wise balance (only fetched when fiat is short somewhere)
    targets: Targets
    rails: dict[str, RailSpec]
    plan_fee: dict[str, float] = field(default_factory=dict)  # optimal, per asset
    naive_fee: dict[str, float | None] = field(default_factory=dict)  # direct-only baseline (None: infeasible)
    infeasible: dict[str, str] = field(default_factory=dict)
    transfers: list[PlannedTransfer] = field(default_factory=list)  # every leg of the optimal plan
    run_now: list[PlannedTransfer] = field(default_factory=list)  # what the saga executes
    deferred: list[PlannedTransfer] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # asset -> min-benefit reason
    breaches: list[Breach] = field(default_factory=list)
    used_today: dict[str, float] = field(default_factory=dict)
    fiat_notes: list[str] = field(default_factory=list)
    # Rails the destination allowlist kept from the planner (their destination venue:network is not listed).
    allowlist_excluded: list[str] = field(default_factory=list)
    # Withdrawal rails out of venues that cannot withdraw idempotently (no client withdrawal id).
    withdrawal_excluded: list[str] = field(default_factory=list)
    # venue -> asset -> free money outside what a withdrawal can spend (Binance spot / OKX funding wallet): counted
    # toward the venue's target, never planned to leave it. Read only when something needs planning.
    held_outside: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def needs(self) -> dict[str, float]:
        return self.targets.needs()

    @property
    def may_run(self) -> bool:
        return not self.infeasible and not self.breaches

    def fee_of(self, legs: list[PlannedTransfer]) -> dict[str, float]:
        out: dict[str, float] = {}
        for t in legs:
            out[t.asset] = out.get(t.asset, 0.0) + t.fee
        return out


def _per_venue(venues: list[str], fn: Callable[[str], T]) -> dict[str, T]:
    """`fn(venue)` for every venue concurrently; the first error is raised (no plan from a partial book)."""
    if not venues:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(venues)), thread_name_prefix="rebalance-fetch") as pool:
        futures = {venue: pool.submit(fn, venue) for venue in venues}
        return {venue: future.result() for venue, future in futures.items()}


def fetch_balances(exchange: ExchangeResource, venues: list[str]) -> dict[str, dict[str, Balance]]:
    return _per_venue(venues, lambda v: exchange.venue(v).fetch_balance())


def _free(balances: Mapping[str, Mapping[str, Balance]]) -> dict[str, dict[str, float]]:
    return {v: {a: b.free for a, b in per_asset.items()} for v, per_asset in balances.items()}


def fetch_spendable(exchange: ExchangeResource, venues: list[str],
                    balances: Mapping[str, Mapping[str, Balance]]) -> dict[str, dict[str, Balance]]:
    """Per venue, what a withdrawal from it can spend (`VenueClient.fetch_spendable_balance`). A client without that
    method (one written before it, duck-typed) has one account: its whole balance, `balances[venue]`, is spendable."""
    def read(venue: str) -> dict[str, Balance]:
        spendable = getattr(exchange.venue(venue), "fetch_spendable_balance", None)
        return dict(balances.get(venue, {})) if spendable is None else spendable()
    return _per_venue(venues, read)


def held_outside(free: Mapping[str, Mapping[str, float]], spendable: Mapping[str, Mapping[str, float]],
                 assets: Any) -> dict[str, dict[str, float]]:
    """venue -> asset -> the free money a withdrawal cannot spend: free minus spendable free (only where > 0).

    The two are separate reads; a fill between them can make spendable exceed free by a hair, which counts as 0.
    """
    out: dict[str, dict[str, float]] = {}
    for venue, per_asset in free.items():
        for asset in assets:
            held = max(0.0, per_asset.get(asset, 0.0)) - max(0.0, spendable.get(venue, {}).get(asset, 0.0))
            if held > 1e-9:
                out.setdefault(venue, {})[asset] = held
    return out


def movable_targets(targets: Targets, held: Mapping[str, Mapping[str, float]]) -> Targets:
    """`targets` with each venue's planner balance and planner target lowered by what it holds outside what a
    withdrawal can spend (`held`), so the planner sends at most the spendable part while that money still counts
    toward the venue reaching its target: `final_spendable >= target - held` is `final_total >= target`. A target
    below 0 becomes 0 (the spendable part cannot go below nothing). Deficits are unchanged; `rows` (the report's
    per-venue levels) keep the whole balances."""
    if not held:
        return targets
    balances = {v: dict(per_asset) for v, per_asset in targets.balances.items()}
    goals = {v: dict(per_asset) for v, per_asset in targets.targets.items()}
    for venue, per_asset in held.items():
        for asset, amount in per_asset.items():
            if asset in balances.get(venue, {}):
                balances[venue][asset] = max(0.0, balances[venue][asset] - amount)
            if asset in goals.get(venue, {}):
                goals[venue][asset] = max(0.0, goals[venue][asset] - amount)
    return dataclasses.replace(targets, balances=balances, targets=goals)


def _grouped(asset: str, amount: float) -> str:
    """`format_amount` with thousands separators, for people: 1,000 rather than 1000."""
    whole, _, fraction = format_amount(asset, amount).partition(".")
    return f"{int(whole):,}" + (f".{fraction}" if fraction else "")


def _held_notes(exchange: ExchangeResource, held: Mapping[str, Mapping[str, float]]) -> list[str]:
    notes = []
    for venue, per_asset in sorted(held.items()):
        wallet = getattr(exchange.venue(venue), "withdraw_from_account", None)
        where = f"the {wallet} wallet" if isinstance(wallet, str) and wallet != "none" else "its withdrawal wallet"
        for asset, amount in sorted(per_asset.items()):
            notes.append(f"{venue} {asset}: {_grouped(asset, amount)} in {where} not counted as movable (a withdrawal "
                         f"spends only the trading account); counted toward {venue}'s {asset} target")
    return notes


def _fiat_rails(
    exchange: ExchangeResource, wise: WiseResource, asset: str, targets: Targets, notes: list[str]
) -> list[RailSpec]:
    """Rails `wise → venue` to every venue short of `asset` that has an IBAN, priced from two Wise quotes."""
    short = sorted({row.venue for row in targets.rows if row.asset == asset and row.deficit > 0})
    destinations = []
    for venue in short:
        try:
            address = exchange.venue(venue).fetch_deposit_address(asset, FIAT_NETWORK)
        except BusinessError as exc:  # no IBAN for this venue: it cannot be paid in fiat
            notes.append(f"{venue} has no {asset} IBAN ({exc}); no Wise rail to it")
            continue
        if address.address:
            destinations.append(venue)
    if not destinations:
        return []
    need = targets.needs().get(asset, 0.0)
    first = max(need, _MIN_QUOTE_AMOUNT)
    quotes = [wise.create_quote(asset, asset, source_amount=round(amount, 2)) for amount in (first, 2 * first)]
    fixed, rate = fee_from_quotes([(q.source_amount, q.fee_total) for q in quotes])
    eta = 0.0
    delivery = quotes[0].estimated_delivery
    if delivery is not None:
        eta = max(0.0, (delivery - datetime.now(timezone.utc)).total_seconds())
    notes.append(f"Wise {asset} fee from quotes: {fixed:g} fixed + {rate:.4%}, eta ~{eta:.0f}s")
    return wise_rails(destinations, asset, fixed, rate, eta)


def withdraws_idempotently(venue: Any) -> bool:
    """Whether `venue` looks withdrawals up by their key (the VenueClient contract); a client that cannot says so
    with `withdrawals_idempotent = False` (ccxt venues without a client withdrawal id) and refuses to send one."""
    return bool(getattr(venue, "withdrawals_idempotent", True))


def check_config(config: Any, venues: list[str]) -> None:
    """Every check of a rebalance run config, before anything is read or moves; ValueError naming the key.

    The config's own field bounds (including the fields only read after the pivot), TargetPolicy's and
    Guardrails' checks, and the target venues. Shared by the saga's plan step and the dry plan asset.
    """
    config.check()
    config.policy()  # + TargetPolicy's own checks (tolerance, shares...)
    config.guardrails()  # + Guardrails' own checks (limits, max_fee_ratio)
    check_target_venues(config, venues)


def check_target_venues(config: Any, venues: list[str]) -> None:
    """Raise ValueError naming every target venue the exchange resource does not have (a typo's rule never applies)."""
    unknown = sorted({t.venue for t in config.targets if t.venue != "*"} - set(venues))
    if unknown:
        raise ValueError(f"targets name venues the exchange does not have: {', '.join(unknown)} "
                         f"(known venues: {', '.join(sorted(venues))}, or '*' for every venue)")


def propose(
    exchange: ExchangeResource,
    wise: WiseResource,
    config: Any,
    used_today: Mapping[str, float],
    *,
    logger: Any = None,
) -> Proposal:
    """Observe, plan and check (see the module docstring). `config` is a `RebalancePolicyConfig`."""
    logger = logger or _log
    policy, guardrails = config.policy(), config.guardrails()
    venues = exchange.venue_names()
    check_target_venues(config, venues)
    balances = fetch_balances(exchange, venues)
    free = _free(balances)
    targets = compute_targets(policy, free)
    needs = targets.needs()
    fiat_balances: dict[str, float] = {}
    if any(asset in FIAT_ASSETS for asset in needs):
        fiat_balances = {c: v for c, v in wise.balances().items() if c in FIAT_ASSETS}
        targets = compute_targets(policy, free, fiat_balances)
    proposal = Proposal(time.time(), balances, fiat_balances, targets, rails={}, used_today=dict(used_today))
    if not needs:
        logger.info("rebalance: every managed venue is at or above its trigger level; nothing to plan")
        return proposal

    fees: dict[str, list[NetworkFee]] = _per_venue(venues, lambda v: exchange.venue(v).fetch_deposit_withdraw_fees())
    specs = withdrawal_rails(fees, targets.managed)
    for asset in sorted(a for a in needs if a in FIAT_ASSETS):
        specs += _fiat_rails(exchange, wise, asset, targets, proposal.fiat_notes)
    proposal.rails = {s.rail.id: s for s in specs}
    # What may leave a venue: only what a withdrawal can spend (the trading account on Binance/OKX).
    spendable = _free(fetch_spendable(exchange, venues, balances))
    proposal.held_outside = held_outside(free, spendable, policy.assets)
    movable = movable_targets(targets, proposal.held_outside)
    held_notes = _held_notes(exchange, proposal.held_outside)
    proposal.fiat_notes.extend(held_notes)  # the plan's notes (rendered under "Notes" in the plan's metadata)
    for note in held_notes:
        logger.info(f"rebalance: {note}")
    # No withdrawal rail out of a venue that cannot withdraw idempotently: its client would refuse the leg.
    unwithdrawable = sorted(v for v in venues if not withdraws_idempotently(exchange.venue(v)))
    specs, not_withdrawable = split_by_withdrawable_source(specs, unwithdrawable)
    proposal.withdrawal_excluded = sorted(s.rail.id for s in not_withdrawable)
    if not_withdrawable:
        logger.info(f"rebalance: no idempotent withdrawal out of {', '.join(unwithdrawable)}; excluded "
                    f"{len(not_withdrawable)} rail(s): " + ", ".join(proposal.withdrawal_excluded))
    # The planner routes over allowed destinations only; the guardrail below still checks every leg.
    allowed, excluded = split_by_allowlist(specs, guardrails)
    proposal.allowlist_excluded = sorted(s.rail.id for s in excluded)
    if excluded:
        logger.info(f"rebalance: the destination allowlist excluded {len(excluded)} rail(s): "
                    + ", ".join(proposal.allowlist_excluded))

    chosen = []
    for asset in sorted(needs):
        rails = [s.rail for s in allowed if s.rail.asset == asset]
        asset_balances, asset_targets = movable.for_asset(asset)
        plan = plan_routes(asset_balances, asset_targets, rails, time_limit=config.planner_time_limit_seconds)
        if not plan.feasible:
            reason = plan.reason or f"{asset}: no plan covers the deficits"
            left_out = [s for s in excluded if s.rail.asset == asset]
            if left_out:
                reason += (f" (the destination allowlist {list(guardrails.allowed_destinations)} excluded "
                           f"{len(left_out)} rail(s) for {asset}: {', '.join(sorted(s.rail.id for s in left_out))})")
            no_withdrawal = sorted(s.rail.id for s in not_withdrawable if s.rail.asset == asset)
            if no_withdrawal:
                reason += (f" (no idempotent withdrawal, no client withdrawal id, out of "
                           f"{', '.join(unwithdrawable)}: excluded {len(no_withdrawal)} rail(s) for {asset}: "
                           f"{', '.join(no_withdrawal)})")
            held_here = {v: a[asset] for v, a in sorted(proposal.held_outside.items()) if asset in a}
            if held_here:
                reason += (f" (not counted as movable, outside what a withdrawal can spend: "
                           + ", ".join(f"{v} {_grouped(asset, x)} {asset}" for v, x in held_here.items()) + ")")
            proposal.infeasible[asset] = reason
            continue
        proposal.plan_fee[asset] = plan.total_fee
        naive = naive_plan(asset_balances, asset_targets, rails)
        proposal.naive_fee[asset] = naive.total_fee if naive.feasible else None
        chosen.extend(plan.transfers)
    proposal.transfers = planned_transfers(chosen, proposal.rails)
    kept, proposal.skipped = apply_min_benefit(proposal.transfers, needs, guardrails)
    proposal.run_now, proposal.deferred = split_executable(kept, movable.balances, movable.targets)
    proposal.breaches = check_guardrails(proposal.run_now, guardrails, used_today)
    return proposal
