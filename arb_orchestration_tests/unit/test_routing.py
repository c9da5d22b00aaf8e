"""Route planner on hand-made instances: relays, fee trade-offs, infeasibility reasons, ordering, validation."""

from __future__ import annotations

import dataclasses

import pytest

from arb_orchestration.domain.routing import (
    Plan,
    Rail,
    RoutingInputError,
    naive_plan,
    parse_problem,
    plan_routes,
)
from arb_orchestration.domain.routing_order import Move, order_moves
from arb_orchestration_tests.unit.routing_solvers import SOLVERS, solving_with

# Tests of HiGHS's own path (its options, the MIP start from a core, the scipy fallback) run with HiGHS alone;
# every other test here states what the planner answers and runs once per exact solver.
HIGHS_PATH_TESTS = {
    "test_highs_extra_options_reach_the_solver_with_this_scipy",
    "test_direct_highs_path_is_in_use_with_this_scipy",
    "test_core_missing_the_optimal_rails_still_gives_the_optimum",
    "test_core_that_cannot_cover_the_deficit_falls_back_to_a_plain_solve",
    "test_without_the_highs_object_the_scipy_path_gives_the_same_plan",
    "test_eth_sized_fees_are_optimal_beyond_highs_absolute_tolerance",
    "test_a_highs_that_refuses_an_option_falls_back_to_the_scipy_path",
}


def pytest_generate_tests(metafunc):
    if "exact_solver" in metafunc.fixturenames:
        highs_only = metafunc.function.__name__ in HIGHS_PATH_TESTS
        metafunc.parametrize("exact_solver", ["highs"] if highs_only else list(SOLVERS), indirect=True)


@pytest.fixture(autouse=True)
def exact_solver(request):
    with solving_with(request.param):
        yield request.param


def rail(rid, src, dst, fixed=1.0, rate=0.0, lo=0.0, hi=None, asset="USDT", eta=60):
    return {"id": rid, "from": src, "to": dst, "asset": asset, "fixed_fee": fixed, "fee_rate": rate,
            "min_amount": lo, "max_amount": hi, "eta_seconds": eta}


def execute(balances, targets, plan: Plan, tol=1e-6):
    """Run the plan in order; every transfer funded (source stays >= its target), every target met."""
    held = {(v, a): amt for v, per in balances.items() for a, amt in per.items()}
    for t in plan.transfers:
        src = held.get((t.from_venue, t.asset), 0.0)
        floor = targets.get(t.from_venue, {}).get(t.asset, 0.0)
        assert src - t.amount >= floor - tol, f"{t.rail} not funded: holds {src}, sends {t.amount}"
        held[(t.from_venue, t.asset)] = src - t.amount
        held[(t.to_venue, t.asset)] = held.get((t.to_venue, t.asset), 0.0) + t.amount - t.fee
    for venue, per in targets.items():
        for asset, minimum in per.items():
            assert held.get((venue, asset), 0.0) >= minimum - tol, f"{venue}/{asset} below target"
    return held


BAL = {"A": {"USDT": 1000.0}, "B": {"USDT": 0.0}, "C": {"USDT": 0.0}}
NEED_B = {"B": {"USDT": 100.0}}


def test_direct_rail_wins_when_it_is_cheapest():
    rails = [rail("ab-cheap", "A", "B", 1), rail("ab-dear", "A", "B", 10), rail("ac", "A", "C", 1), rail("cb", "C", "B", 1)]
    plan = plan_routes(BAL, NEED_B, rails)
    assert plan.feasible and plan.optimal
    assert [t.rail for t in plan.transfers] == ["ab-cheap"]
    assert plan.total_fee == pytest.approx(1.0)
    assert plan.transfers[0].amount == pytest.approx(101.0)  # exactly enough: need + fixed fee
    execute(BAL, NEED_B, plan)


def test_relay_when_the_direct_rail_is_capped_by_max_amount():
    rails = [rail("ab", "A", "B", 1, hi=50), rail("ac", "A", "C", 1), rail("cb", "C", "B", 1)]
    plan = plan_routes(BAL, NEED_B, rails)
    assert [t.rail for t in plan.transfers] == ["ac", "cb"]  # relay, funded in this order
    assert plan.total_fee == pytest.approx(2.0)
    execute(BAL, NEED_B, plan)
    assert not naive_plan(BAL, NEED_B, rails).feasible  # direct-only cannot do it


def test_relay_when_the_direct_rail_min_amount_exceeds_what_can_be_spared():
    balances = {"A": {"USDT": 300.0}, "B": {"USDT": 0.0}, "C": {"USDT": 0.0}}
    rails = [rail("ab", "A", "B", 0.5, lo=500), rail("ac", "A", "C", 1), rail("cb", "C", "B", 1)]
    plan = plan_routes(balances, NEED_B, rails)
    assert [t.rail for t in plan.transfers] == ["ac", "cb"]
    execute(balances, NEED_B, plan)


def test_relay_through_a_venue_that_is_exactly_at_target():
    balances = {"A": {"USDT": 1000.0}, "B": {"USDT": 0.0}, "C": {"USDT": 500.0}}
    targets = {"B": {"USDT": 100.0}, "C": {"USDT": 500.0}}
    rails = [rail("ab", "A", "B", 20), rail("ac", "A", "C", 1), rail("cb", "C", "B", 1)]
    plan = plan_routes(balances, targets, rails)
    assert [t.rail for t in plan.transfers] == ["ac", "cb"]
    held = execute(balances, targets, plan)
    assert held[("C", "USDT")] == pytest.approx(500.0)


def test_naive_plan_combines_capped_direct_rails_and_its_credits_are_real():
    # B needs 100; each direct rail carries at most 60 and keeps 1: 60 -> 59 credited, then 42 -> 41.
    rails = [rail("n1", "A", "B", 1, hi=60), rail("n2", "A", "B", 1, hi=60)]
    naive = naive_plan(BAL, NEED_B, rails)
    assert naive.feasible
    assert [(t.rail, t.amount) for t in naive.transfers] == [("n1", pytest.approx(60.0)), ("n2", pytest.approx(42.0))]
    assert naive.total_fee == pytest.approx(2.0)
    held = execute(BAL, NEED_B, naive)
    assert held[("B", "USDT")] == pytest.approx(100.0)
    # With a 1 % rate instead: 60 -> 59.4 credited, then 40.6 / 0.99 = 41.0101... -> 40.6.
    rails = [rail("p1", "A", "B", 0, rate=0.01, hi=60), rail("p2", "A", "B", 0, rate=0.01, hi=60)]
    naive = naive_plan(BAL, NEED_B, rails)
    assert [t.amount for t in naive.transfers] == [pytest.approx(60.0), pytest.approx(40.6 / 0.99)]
    assert execute(BAL, NEED_B, naive)[("B", "USDT")] == pytest.approx(100.0)


def test_rail_defaults_and_a_venue_without_the_asset_holds_none():
    bare = {"id": "ab", "from": "A", "to": "B", "asset": "USDT", "fixed_fee": 1.0, "fee_rate": 0.0}
    problem = parse_problem({"A": {"USDT": 1000.0}, "B": {}}, NEED_B, [bare, {**rail("ab2", "A", "B", 2), "eta_seconds": 45}])
    first, second = problem.rails
    assert (first.min_amount, first.max_amount, first.eta_seconds) == (0.0, None, 0.0)
    assert second.eta_seconds == 45.0
    assert problem.balance("B", "USDT") == 0.0
    # B holds no USDT at all: the whole 100 must arrive, so 101 leaves A over the 1-fee rail.
    plan = plan_routes({"A": {"USDT": 1000.0}, "B": {}}, NEED_B, [bare])
    assert [(t.rail, t.amount) for t in plan.transfers] == [("ab", pytest.approx(101.0))]
    # A rail with a single allowed amount (min == max) is valid.
    exact = parse_problem(BAL, NEED_B, [rail("ab", "A", "B", 1, lo=101.0, hi=101.0)]).rails[0]
    assert (exact.min_amount, exact.max_amount) == (101.0, 101.0)


@pytest.mark.parametrize(("need", "expected"), [(1000.0, "proportional"), (5000.0, "fixed")])
def test_fixed_versus_proportional_fee_trade_off(need, expected):
    balances = {"A": {"USDT": 10_000.0}, "B": {"USDT": 0.0}}
    targets = {"B": {"USDT": need}}
    rails = [rail("fixed", "A", "B", fixed=10.0), rail("proportional", "A", "B", fixed=0.0, rate=0.004)]
    plan = plan_routes(balances, targets, rails)
    assert [t.rail for t in plan.transfers] == [expected]
    fee = 10.0 if expected == "fixed" else need / (1 - 0.004) * 0.004
    assert plan.total_fee == pytest.approx(fee)


def test_both_parallel_rails_are_used_when_each_is_capped():
    balances = {"A": {"USDT": 1000.0}, "B": {"USDT": 0.0}}
    rails = [rail("n1", "A", "B", 1, hi=60), rail("n2", "A", "B", 2, hi=60)]
    plan = plan_routes(balances, NEED_B, rails)
    assert sorted(t.rail for t in plan.transfers) == ["n1", "n2"]
    execute(balances, NEED_B, plan)


def test_infeasible_names_the_venue_and_the_shortfall():
    targets = {"B": {"USDT": 500.0}, "C": {"USDT": 10.0}}
    plan = plan_routes(BAL, targets, [rail("ab", "A", "B", 1, hi=100), rail("ac", "A", "C", 1)])
    assert not plan.feasible
    assert "B short 401" in plan.reason and "USDT" in plan.reason
    assert plan.to_dict() == {"feasible": False, "reason": plan.reason}


def test_infeasible_when_holdings_cannot_cover_targets():
    plan = plan_routes(BAL, {"B": {"USDT": 2000.0}}, [rail("ab", "A", "B")])
    assert not plan.feasible and "short 1000" in plan.reason


def test_infeasible_when_no_rail_reaches_the_venue():
    plan = plan_routes(BAL, {"C": {"USDT": 5.0}}, [rail("ab", "A", "B")])
    assert not plan.feasible and "C (needs 5 more)" in plan.reason


def test_floor_rule_a_venue_is_never_drawn_below_its_target_mid_plan():
    # Only way to reach B is a 500 minimum from A, which must keep 1000: even
    # with the money coming back through B->A, A would dip below its floor.
    balances = {"A": {"USDT": 1000.0}, "W": {"USDT": 50.0}, "B": {"USDT": 0.0}}
    targets = {"A": {"USDT": 1000.0}, "B": {"USDT": 10.0}}
    rails = [rail("ab", "A", "B", 0, lo=500), rail("ba", "B", "A", 0), rail("wa", "W", "A", 0)]
    plan = plan_routes(balances, targets, rails)
    assert not plan.feasible and "B" in plan.reason


def test_zero_fee_rails_give_a_free_plan_without_pointless_circulation():
    rails = [rail("ab", "A", "B", 0), rail("ba", "B", "A", 0), rail("bc", "B", "C", 0), rail("cb", "C", "B", 0)]
    plan = plan_routes(BAL, NEED_B, rails)
    assert plan.feasible and plan.total_fee == 0.0
    assert [t.rail for t in plan.transfers] == ["ab"]
    assert plan.transfers[0].amount == pytest.approx(100.0)
    execute(BAL, NEED_B, plan)


def test_already_satisfied_gives_an_empty_plan():
    plan = plan_routes(BAL, {"A": {"USDT": 900.0}}, [rail("ab", "A", "B")])
    assert plan.feasible and plan.transfers == () and plan.total_fee == 0.0
    assert plan.to_dict() == {"feasible": True, "total_fee": 0.0, "transfers": []}


def test_assets_are_planned_independently_and_fees_add_up():
    balances = {"A": {"USDT": 1000.0, "ETH": 0.0}, "B": {"USDT": 0.0, "ETH": 10.0}}
    targets = {"B": {"USDT": 100.0}, "A": {"ETH": 2.0}}
    rails = [rail("ab-usdt", "A", "B", 1), rail("ba-eth", "B", "A", 0.001, asset="ETH")]
    plan = plan_routes(balances, targets, rails)
    assert {t.asset for t in plan.transfers} == {"USDT", "ETH"}
    assert plan.fee_by_asset == pytest.approx({"USDT": 1.0, "ETH": 0.001})
    assert plan.total_fee == pytest.approx(1.001)
    execute(balances, targets, plan)


def test_accepts_rail_objects_and_returns_the_documented_shape():
    rails = [Rail("ab", "A", "B", "USDT", fixed_fee=1.0, fee_rate=0.0)]
    out = plan_routes(BAL, NEED_B, rails).to_dict()
    assert out == {"feasible": True, "total_fee": 1.0, "transfers": [
        {"rail": "ab", "from": "A", "to": "B", "asset": "USDT", "amount": 101.0, "fee": 1.0}]}


def test_naive_baseline_is_never_cheaper_than_the_optimum():
    rails = [rail("ab", "A", "B", 10), rail("ac", "A", "C", 1), rail("cb", "C", "B", 1)]
    naive, best = naive_plan(BAL, NEED_B, rails), plan_routes(BAL, NEED_B, rails)
    assert naive.feasible and not naive.optimal
    assert naive.total_fee == pytest.approx(10.0) and best.total_fee == pytest.approx(2.0)
    execute(BAL, NEED_B, naive)


def test_ordering_finds_the_one_order_that_works_around_a_cycle():
    # U can fund W first, W sends back, then U has enough for V; greedy "send to V first" strands U.
    moves = [Move("U", "V", 10, 10), Move("U", "W", 10, 10), Move("W", "U", 7, 7)]
    order = order_moves({"U": 13.0, "V": 0.0, "W": 0.0}, moves, {"W": 3.0})
    assert order == [1, 2, 0]  # U->W, W->U, U->V: every move once, and no other order works
    held = {"U": 13.0, "V": 0.0, "W": 0.0}
    for i in order:
        m = moves[i]
        assert held[m.source] - m.amount >= {"W": 3.0}.get(m.source, 0.0)
        held[m.source] -= m.amount
        held[m.dest] += m.credit
    assert order_moves({"U": 5.0, "W": 5.0}, [Move("U", "W", 10, 10), Move("W", "U", 7, 7)]) is None


@pytest.mark.parametrize(("mutate", "field", "words"), [
    (lambda i: i["rails"][0].update(fee_rate=1.5), "rails[0].fee_rate", "between 0 and 1"),
    (lambda i: i["rails"][0].update(fee_rate=1.0), "rails[0].fee_rate", "exclusive of 1"),  # would deliver nothing
    (lambda i: i["rails"][0].update(id=""), "rails[0].id", "non-empty string"),
    (lambda i: i["rails"][0].update(asset=7), "rails[0].asset", "non-empty string"),
    (lambda i: i["rails"][0].update(fee_rate=-0.1), "rails[0].fee_rate", ">= 0"),
    (lambda i: i["rails"][0].update(fixed_fee="1"), "rails[0].fixed_fee", "must be a number"),
    (lambda i: i["rails"][0].update(min_amount=True), "rails[0].min_amount", "must be a number"),
    (lambda i: i["rails"][0].update(min_amount=50, max_amount=10), "rails[0].max_amount", ">= min_amount"),
    (lambda i: i["rails"][0].pop("asset"), "rails[0].asset", "missing"),
    (lambda i: i["rails"][0].update(to="Z"), "rails[0].to", "unknown venue"),
    (lambda i: i["rails"][0].update(to="A"), "rails[0].to", "must differ"),
    (lambda i: i["rails"][0].update(speed=3), "rails[0].speed", "not a rail field"),
    (lambda i: i["rails"].append(dict(i["rails"][0])), "rails[1].id", "duplicates"),
    (lambda i: i["balances"]["A"].update(USDT=-1), "balances.A.USDT", ">= 0"),
    (lambda i: i["balances"]["A"].update(USDT=float("nan")), "balances.A.USDT", "finite"),
    (lambda i: i["targets"].update(Z={"USDT": 1}), "targets.Z", "unknown venue"),
    (lambda i: i.update(rails={"id": "x"}), "rails", "list"),
    # past the parser's fast path for plain dicts (routing._rail) to the checks that name the field
    (lambda i: i["rails"][0].update(fee_rate=float("nan")), "rails[0].fee_rate", "finite"),
    (lambda i: i["rails"][0].update(max_amount=float("inf")), "rails[0].max_amount", "finite"),
    (lambda i: i["rails"][0].update(fixed_fee=True), "rails[0].fixed_fee", "must be a number"),
    (lambda i: i["rails"][0].update(eta_seconds=-1), "rails[0].eta_seconds", ">= 0"),
    (lambda i: i["rails"][0].update({"from": 5}), "rails[0].from", "non-empty string"),
    # an integer no float holds (JSON allows any number of digits): named, not an OverflowError
    (lambda i: i["rails"][0].update(fixed_fee=10**400), "rails[0].fixed_fee", "finite"),
    (lambda i: i["balances"]["A"].update(USDT=10**400), "balances.A.USDT", "finite"),
])
def test_bad_input_names_the_offending_field(mutate, field, words):
    instance = {"balances": {"A": {"USDT": 10.0}, "B": {}}, "targets": {"B": {"USDT": 1.0}},
                "rails": [rail("ab", "A", "B")]}
    mutate(instance)
    with pytest.raises(RoutingInputError) as caught:
        parse_problem(instance["balances"], instance["targets"], instance["rails"])
    assert caught.value.field == field
    assert str(caught.value).startswith(field) and words in str(caught.value)


def test_the_parsers_fast_path_builds_the_same_rails_as_the_checked_one():
    from collections import OrderedDict

    from arb_orchestration.domain.routing import _rail_checked

    raws = [
        rail("ab", "A", "B"),
        {"id": "ints", "from": "A", "to": "B", "asset": "USDT", "fixed_fee": 1, "fee_rate": 0, "min_amount": 2,
         "max_amount": 3, "eta_seconds": 60},
        {"id": "bare", "from": "B", "to": "A", "asset": "USDT", "fixed_fee": -0.0, "fee_rate": 0.5},
        {"id": "nones", "from": "A", "to": "B", "asset": "ETH", "fixed_fee": 0.0, "fee_rate": 0.0, "max_amount": None,
         "eta_seconds": None},
        OrderedDict(id="mapping", to="A", asset="USDT", fixed_fee=2.0, fee_rate=0.25, **{"from": "B"}),  # not a dict
        Rail("object", "A", "B", "USDT", 1.0, 0.001, 0.5, 9.0, 30.0),
    ]
    parsed = parse_problem({"A": {"USDT": 10.0}, "B": {}}, {}, raws).rails
    checked = tuple(_rail_checked(raw, i, {"A", "B"}) for i, raw in enumerate(raws))
    assert parsed == checked and hash(parsed) == hash(checked)
    for fast, slow in zip(parsed, checked):
        assert vars(fast) == vars(slow)
        assert [type(v) for v in vars(fast).values()] == [type(v) for v in vars(slow).values()]
    assert parsed[1].fixed_fee.__class__ is float and parsed[2].eta_seconds == 0.0 and parsed[3].max_amount is None
    with pytest.raises(dataclasses.FrozenInstanceError):  # still frozen
        parsed[0].fee_rate = 0.5


def test_highs_extra_options_reach_the_solver_with_this_scipy():
    # run_milp goes through scipy's private HiGHS wrapper to switch off the
    # sub-MIP heuristics (2-4x faster); if a scipy upgrade moves it, plans stay
    # correct but slow — this test makes that visible instead of silent.
    from arb_orchestration.domain import routing_solver

    plan_routes(BAL, NEED_B, [rail("ab", "A", "B", 1), rail("ac", "A", "C", 1), rail("cb", "C", "B", 1)])
    assert routing_solver.extra_options_unavailable is None


# The direct HiGHS path: an incumbent from a core of rails, then the full model proves the optimum.

RELAY_RAILS = [rail("ab-dear", "A", "B", 10), rail("ac", "A", "C", 1), rail("cb", "C", "B", 1)]


def test_direct_highs_path_is_in_use_with_this_scipy():
    # _solve_milp drives scipy's bundled HiGHS object (MIP start, heuristics
    # off); if a scipy upgrade removes it, plans stay exact but ~2x slower.
    from arb_orchestration.domain import routing_solver

    plan_routes(BAL, NEED_B, RELAY_RAILS)
    assert routing_solver.direct_highs_unavailable is None


def test_core_missing_the_optimal_rails_still_gives_the_optimum(monkeypatch):
    # Force a core that holds only the expensive direct rail: its plan (fee 10)
    # becomes the MIP start, and the full model must still find the relay (fee 2).
    from arb_orchestration.domain import routing_solver

    starts = []
    run = routing_solver._highs_run

    def spy(highs, arrays, *, start=None, **kwargs):
        if start is not None:
            starts.append(float(arrays.cost @ start))
        return run(highs, arrays, start=start, **kwargs)

    monkeypatch.setattr(routing_solver, "_core_rails",
                        lambda inst, lp: [j for j, r in enumerate(inst.rails) if r.id == "ab-dear"])
    monkeypatch.setattr(routing_solver, "_highs_run", spy)
    plan = plan_routes(BAL, NEED_B, RELAY_RAILS)
    assert starts == [pytest.approx(10.0)]  # the bad start was handed to the final solve
    assert [t.rail for t in plan.transfers] == ["ac", "cb"]
    assert plan.total_fee == pytest.approx(2.0)
    execute(BAL, NEED_B, plan)


def test_core_that_cannot_cover_the_deficit_falls_back_to_a_plain_solve(monkeypatch):
    # An infeasible core gives no start: HiGHS runs with its own heuristics.
    from arb_orchestration.domain import routing_solver

    monkeypatch.setattr(routing_solver, "_core_rails",
                        lambda inst, lp: [j for j, r in enumerate(inst.rails) if r.id == "ac"])
    plan = plan_routes(BAL, NEED_B, RELAY_RAILS)
    assert plan.total_fee == pytest.approx(2.0)


def test_without_the_highs_object_the_scipy_path_gives_the_same_plan(monkeypatch):
    from arb_orchestration.domain import routing_solver

    direct = plan_routes(BAL, NEED_B, RELAY_RAILS)
    monkeypatch.setattr(routing_solver, "_highs_module", lambda: None)
    fallback = plan_routes(BAL, NEED_B, RELAY_RAILS)
    assert fallback.to_dict() == direct.to_dict()


@pytest.mark.parametrize(("lp_value", "scale"), [(0.004, 1e6), (5.0, 1e3), (1000.0, 1.0), (1e7, 1.0), (0.0, 1.0), (1e-15, 1e9)])
def test_objective_scale_brings_the_fee_to_about_a_thousand(lp_value, scale):
    from arb_orchestration.domain.routing_solver import _objective_scale

    assert _objective_scale(lp_value) == scale


@pytest.mark.parametrize("direct", [True, False])
def test_eth_sized_fees_are_optimal_beyond_highs_absolute_tolerance(direct, monkeypatch):
    # The two plans differ by 4e-7 ETH, below HiGHS's 1e-6 absolute tolerances
    # in unscaled objective units (unscaled, both paths returned the 2e-6 plan);
    # the scaled objective must pick the cheaper, on either solver path.
    from arb_orchestration.domain import routing_solver

    if not direct:
        monkeypatch.setattr(routing_solver, "_highs_module", lambda: None)
    balances = {"A": {"ETH": 10.0}, "B": {"ETH": 0.0}, "C": {"ETH": 0.0}}
    targets = {"B": {"ETH": 1.0}}
    rails = [rail("ab", "A", "B", 2.0e-6, asset="ETH"),
             rail("ac", "A", "C", 0.8e-6, asset="ETH"), rail("cb", "C", "B", 0.8e-6, asset="ETH")]
    plan = plan_routes(balances, targets, rails)
    assert [t.rail for t in plan.transfers] == ["ac", "cb"]
    assert plan.total_fee == pytest.approx(1.6e-6, rel=1e-7)


def test_a_highs_that_refuses_an_option_falls_back_to_the_scipy_path(monkeypatch):
    from arb_orchestration.domain import routing_solver

    monkeypatch.setattr(routing_solver, "direct_highs_unavailable", None)
    monkeypatch.setattr(routing_solver, "HIGHS_NO_HEURISTICS", {"no_such_highs_option": True})
    monkeypatch.setattr(routing_solver, "_core_rails",
                        lambda inst, lp: [j for j, r in enumerate(inst.rails) if r.id == "ab-dear"])
    plan = plan_routes(BAL, NEED_B, RELAY_RAILS)
    assert plan.total_fee == pytest.approx(2.0)
    assert "no_such_highs_option" in routing_solver.direct_highs_unavailable
