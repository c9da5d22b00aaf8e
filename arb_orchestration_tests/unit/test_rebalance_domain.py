"""Pure rebalance logic (domain/rebalance.py): policy → targets, rails from venue fees and Wise quotes,
planned legs, relay deferral, every guardrail's breach, min-benefit skips and the daily usage."""

from __future__ import annotations

import pytest

from arb_orchestration.domain.models import NetworkFee
from arb_orchestration.domain.rebalance import (
    FIAT_SOURCE,
    Guardrails,
    PastRebalance,
    PlannedTransfer,
    TargetPolicy,
    TargetRule,
    apply_min_benefit,
    check_guardrails,
    compute_targets,
    daily_usage,
    fee_from_quotes,
    planned_transfers,
    round_up,
    split_executable,
    wise_rails,
    withdrawal_rails,
)
from arb_orchestration.domain.routing import plan_routes


def _policy(**kw) -> TargetPolicy:
    base = dict(assets=("USDT", "EUR"), default_floors={"USDT": 10_000.0, "EUR": 5_000.0},
                tolerance=0.05, refill_headroom=0.2)
    base.update(kw)
    return TargetPolicy(**base)


def _row(targets, venue, asset):
    return next(r for r in targets.rows if r.venue == venue and r.asset == asset)


# ----------------------------------------------------------------------------- targets


def test_floor_policy_refills_a_venue_below_its_floor_and_lets_others_give_down_to_keep():
    balances = {"a": {"USDT": 4_000.0}, "b": {"USDT": 50_000.0}, "c": {"USDT": 11_000.0}}
    t = compute_targets(_policy(), balances)
    a, b, c = (_row(t, v, "USDT") for v in "abc")
    assert (a.trigger, a.refill, a.target, a.deficit) == (10_000.0, 12_000.0, 12_000.0, 8_000.0)
    assert b.target == 12_000.0 and b.deficit == 0  # may give 38k, keeps floor * 1.2
    # c sits between its floor and keep: neither source nor destination.
    assert c.target == 11_000.0 and c.deficit == 0
    assert t.needs() == {"USDT": 8_000.0}


def test_share_policy_uses_the_band_and_the_floor_is_a_lower_bound():
    balances = {"a": {"USDT": 20_000.0}, "b": {"USDT": 80_000.0}}
    policy = _policy(assets=("USDT",), rules=(TargetRule("a", "USDT", share=0.5), TargetRule("b", "USDT", share=0.5)))
    t = compute_targets(policy, balances)
    a, b = _row(t, "a", "USDT"), _row(t, "b", "USDT")
    assert a.trigger == pytest.approx(47_500.0) and a.target == pytest.approx(50_000.0)
    assert b.target == pytest.approx(47_500.0)  # a source gives down to share * (1 - tolerance)
    # Within the band nothing moves.
    inside = compute_targets(policy, {"a": {"USDT": 48_000.0}, "b": {"USDT": 52_000.0}})
    assert inside.needs() == {}


def test_specific_rule_overrides_wildcard_which_overrides_default_and_market_floors_bound_below():
    policy = _policy(
        assets=("USDT",),
        rules=(TargetRule("*", "USDT", floor=2_000.0), TargetRule("b", "USDT", floor=1_000.0)),
        minimum_floors={"*": {"USDT": 1_500.0}, "c": {"USDT": 0.0}},
    )
    t = compute_targets(policy, {"a": {"USDT": 9.0}, "b": {"USDT": 9.0}, "c": {"USDT": 9.0}})
    assert _row(t, "a", "USDT").floor == 2_000.0
    assert _row(t, "b", "USDT").floor == 1_500.0  # the market_data minimum wins over a lower rule
    assert _row(t, "c", "USDT").floor == 2_000.0


def test_venues_without_the_asset_or_a_rule_are_left_alone():
    policy = _policy(assets=("USDT", "USDC"), default_floors={"USDT": 10.0})
    t = compute_targets(policy, {"a": {"USDT": 1.0, "USDC": 5.0}, "b": {"USDC": 9.0}})
    assert {(r.venue, r.asset) for r in t.rows} == {("a", "USDT")}
    assert "USDC" not in t.managed


def test_the_wise_balance_is_the_fiat_source_and_keeps_its_reserve():
    policy = _policy(fiat_reserve={"EUR": 1_000.0})
    t = compute_targets(policy, {"a": {"EUR": 3_000.0}}, {"EUR": 50_000.0})
    assert t.balances[FIAT_SOURCE] == {"EUR": 50_000.0}
    assert t.targets[FIAT_SOURCE] == {"EUR": 1_000.0}
    assert FIAT_SOURCE in t.managed["EUR"]
    assert t.needs() == {"EUR": 3_000.0}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tolerance=1.0), "tolerance"),
        (dict(rules=(TargetRule("a", "USDT", share=0.7), TargetRule("b", "USDT", share=0.6))), "add up"),
        (dict(rules=(TargetRule("a", "USDT"), TargetRule("a", "USDT"))), "two target rules"),
        (dict(rules=(TargetRule(FIAT_SOURCE, "EUR"),)), "fiat source"),
    ],
)
def test_bad_policies_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _policy(**kwargs)


def test_a_rule_with_a_negative_floor_is_refused():
    with pytest.raises(ValueError, match="floor"):
        TargetRule("a", "USDT", floor=-1)


# ----------------------------------------------------------------------------- rails


def _fee(asset, network, fee, minimum=0.0, eta=1.0, rate=0.0):
    return NetworkFee(asset=asset, network=network, fee=fee, fee_rate=rate, min_amount=minimum, eta_seconds=eta)


def test_withdrawal_rails_need_a_network_the_destination_takes_and_both_ends_managed():
    fees = {
        "a": [_fee("USDT", "TRC20", 1.0, 10.0), _fee("USDT", "SOL", 1.0), _fee("EUR", "SEPA", 0.0)],
        "b": [_fee("USDT", "TRC20", 1.5)],
        "c": [_fee("USDT", "TRC20", 2.0)],
    }
    rails = withdrawal_rails(fees, {"USDT": {"a", "b"}})
    assert sorted(s.rail.id for s in rails) == ["a->b:USDT:TRC20", "b->a:USDT:TRC20"]
    rail = next(s for s in rails if s.rail.id == "a->b:USDT:TRC20")
    assert (rail.network, rail.kind) == ("TRC20", "withdrawal")
    # The venue's minimum is on the withdrawn amount: the rail's minimum on what leaves adds the fee.
    assert rail.rail.min_amount == 11.0 and rail.rail.fixed_fee == 1.0 and rail.rail.eta_seconds == 1.0


def test_fiat_never_gets_a_withdrawal_rail():
    fees = {"a": [_fee("EUR", "SEPA", 0.0)], "b": [_fee("EUR", "SEPA", 0.0)]}
    assert withdrawal_rails(fees, {"EUR": {"a", "b"}}) == []


def test_wise_fee_is_fitted_from_two_quotes():
    assert fee_from_quotes([(1_000.0, 0.39), (2_000.0, 0.39)]) == (0.39, 0.0)
    fixed, rate = fee_from_quotes([(1_000.0, 4.49), (2_000.0, 8.59)])
    assert fixed == pytest.approx(0.39) and rate == pytest.approx(0.0041)
    assert fee_from_quotes([(500.0, 1.0)]) == (1.0, 0.0)
    with pytest.raises(ValueError):
        fee_from_quotes([])


def test_wise_rails_run_from_the_wise_balance_over_sepa():
    rails = wise_rails(["b", "a", FIAT_SOURCE], "EUR", 0.39, 0.0, 5.0)
    assert [(s.rail.id, s.kind, s.network) for s in rails] == [
        ("wise->a:EUR:SEPA", "wise", "SEPA"),
        ("wise->b:EUR:SEPA", "wise", "SEPA"),
    ]


def test_planner_on_built_rails_covers_a_crypto_and_a_fiat_deficit_cheapest_first():
    policy = _policy()
    balances = {"a": {"USDT": 4_000.0, "EUR": 3_000.0}, "b": {"USDT": 60_000.0, "EUR": 20_000.0},
                "c": {"USDT": 60_000.0, "EUR": 20_000.0}}
    t = compute_targets(policy, balances, {"EUR": 10_000.0})
    fees = {v: [_fee("USDT", "TRC20", f), _fee("USDT", "ARBITRUM", f / 2)] for v, f in (("a", 1.0), ("b", 1.2), ("c", 0.8))}
    specs = withdrawal_rails(fees, t.managed) + wise_rails(["a"], "EUR", 0.39, 0.0)
    by_id = {s.rail.id: s for s in specs}
    chosen = []
    for asset in ("EUR", "USDT"):
        b, tg = t.for_asset(asset)
        plan = plan_routes(b, tg, [s.rail for s in specs if s.rail.asset == asset])
        assert plan.feasible
        chosen += plan.transfers
    legs = planned_transfers(chosen, by_id)
    assert [(leg.rail, leg.credited) for leg in legs] == [("wise->a:EUR:SEPA", 3_000.0), ("c->a:USDT:ARBITRUM", 8_000.0)]
    usdt = legs[1]
    assert usdt.amount == pytest.approx(8_000.4) and usdt.fee == pytest.approx(0.4) and usdt.index == 1


def test_amounts_round_up_to_what_venues_take():
    assert round_up("EUR", 3000.001) == 3000.01
    assert round_up("EUR", 3000.0000000001) == 3000.0
    assert round_up("BTC", 0.123456781) == 0.12345679


def _leg(index, source, dest, asset="USDT", amount=1_000.0, fee=1.0, network="TRC20", kind="withdrawal"):
    return PlannedTransfer(index, f"{source}->{dest}:{asset}:{network}", kind, source, dest, asset, network,
                           amount, fee, amount - fee)


def test_relay_legs_are_deferred_when_the_relay_venue_cannot_pay_them_alone():
    legs = [_leg(0, "a", "b", amount=500.0), _leg(1, "b", "c", amount=450.0), _leg(2, "d", "c", amount=10.0)]
    now, deferred = split_executable(legs, {"a": {"USDT": 1_000.0}, "b": {"USDT": 100.0}, "d": {"USDT": 50.0}})
    assert [t.index for t in now] == [0, 2] and [t.index for t in deferred] == [1]
    rich, none = split_executable(legs, {"a": {"USDT": 1_000.0}, "b": {"USDT": 900.0}, "d": {"USDT": 50.0}})
    assert len(rich) == 3 and none == []


def test_planned_transfer_round_trips_through_the_saga_log():
    leg = _leg(3, "a", "b")
    assert PlannedTransfer.from_dict(leg.to_dict()) == leg


# ----------------------------------------------------------------------------- guardrails


GUARDS = Guardrails(
    max_transfer={"USDT": 10_000.0, "EUR": 5_000.0},
    max_daily={"USDT": 20_000.0, "EUR": 5_000.0},
    allowed_destinations=("*:TRC20", "b:*", "*:SEPA"),
    min_deficit={"USDT": 500.0, "EUR": 500.0},
    max_fee_ratio=0.01,
)


def test_a_plan_within_every_rule_passes():
    assert check_guardrails([_leg(0, "a", "c", amount=9_000.0)], GUARDS, {"USDT": 11_000.0}) == []


def test_per_transfer_limit_breach_names_the_leg():
    [breach] = check_guardrails([_leg(4, "a", "c", amount=10_001.0)], GUARDS)
    assert (breach.rule, breach.asset, breach.transfer) == ("per_transfer_limit", "USDT", 4)


def test_daily_limit_counts_what_was_used_today():
    legs = [_leg(0, "a", "c", amount=6_000.0), _leg(1, "d", "c", amount=6_000.0)]
    assert check_guardrails(legs, GUARDS, {"USDT": 8_000.0}) == []
    [breach] = check_guardrails(legs, GUARDS, {"USDT": 8_001.0})
    assert breach.rule == "daily_limit" and "above the daily limit 20000" in breach.message


def test_destination_allowlist_breach_and_patterns():
    [breach] = check_guardrails([_leg(2, "a", "c", network="ERC20")], GUARDS)
    assert (breach.rule, breach.transfer) == ("destination_allowlist", 2)
    assert GUARDS.allows("b", "ERC20") and GUARDS.allows("c", "TRC20") and not GUARDS.allows("c", "SOL")
    assert Guardrails({}, {}, ("kraken",)).allows("kraken", "SEPA")  # a bare venue means any network


def test_an_asset_without_limits_is_refused():
    rules = sorted(b.rule for b in check_guardrails([_leg(0, "a", "b", asset="SOL")], GUARDS))
    assert rules == ["daily_limit", "per_transfer_limit"]


def test_min_benefit_skips_small_deficits_and_expensive_assets_whole():
    legs = [_leg(0, "a", "c", amount=400.0, fee=1.0), _leg(1, "wise", "c", asset="EUR", amount=2_000.0, fee=30.0,
                                                              network="SEPA", kind="wise")]
    kept, skipped = apply_min_benefit(legs, {"USDT": 399.0, "EUR": 1_970.0}, GUARDS)
    assert kept == []
    assert "below the minimum" in skipped["USDT"] and "of the" in skipped["EUR"]
    kept, skipped = apply_min_benefit(legs[:1], {"USDT": 600.0}, GUARDS)
    assert kept == legs[:1] and skipped == {}


# ----------------------------------------------------------------------------- daily usage


def test_daily_usage_counts_reservations_and_what_could_not_be_undone():
    running = PastRebalance("s1", planned=((0, "USDT", 100.0), (1, "EUR", 50.0)))
    rolled_back = PastRebalance("s2", planned=((0, "USDT", 10.0), (1, "USDT", 20.0), (2, "USDT", 40.0)),
                                committed=frozenset({0, 1}), cancelled=frozenset({1}), rolled_back=True)
    dry = PastRebalance("s3", planned=((0, "USDT", 1e9),), dry_run=True)
    assert daily_usage([running, rolled_back, dry]) == {"USDT": 110.0, "EUR": 50.0}
