"""The destination allowlist steers planning: the planner sees only allowed rails, so it finds the cheapest
*allowed* plan instead of picking a cheaper unlisted network and failing the run. The guardrail stays as
defence in depth: a plan that somehow holds a non-allowed destination still fails before anything moves,
naming the rule and the leg. The plan reports how many rails the allowlist excluded. Fakes of
test_rebalance_steps, with venues that also withdraw over a cheaper network (BEP20) nobody listed."""

from __future__ import annotations

import pytest
from dagster import Failure

from arb_orchestration.defs.rebalance import planning
from arb_orchestration.domain.models import NetworkFee
from arb_orchestration_tests.unit.test_rebalance_steps import (
    STEPS,
    FakeExchange,
    FakeJournal,
    FakeMail,
    FakeVenue,
    FakeWise,
    _config,
    _run,
)


class TwoNetworkVenue(FakeVenue):
    """TRC20 (listed by default) and BEP20 (cheaper, not listed)."""

    def fetch_deposit_withdraw_fees(self):
        return [NetworkFee(asset="USDT", network="TRC20", fee=self.fee, min_amount=10.0, eta_seconds=1.0),
                NetworkFee(asset="USDT", network="BEP20", fee=0.1, min_amount=10.0, eta_seconds=1.0)]


@pytest.fixture
def world():
    exchange = FakeExchange()
    for name, venue in list(exchange.venues.items()):
        exchange.venues[name] = TwoNetworkVenue(exchange, name, venue.wallet, venue.iban, fee=venue.fee)
    return {"exchange": exchange, "wise": FakeWise(exchange), "smtp": FakeMail(), "rebalance_journal": FakeJournal()}


def _plan_metadata(world) -> dict:
    step, _, metadata = world["rebalance_journal"].reports[0]
    assert step == "plan_rebalance"
    return metadata


def test_the_planner_routes_over_an_allowed_network_when_a_cheaper_one_is_not_listed(world):
    # Without the allowlist the cheapest USDT route into `a` is BEP20 (0.1 against 1.0 over TRC20).
    log = _run(world, config=_config(assets=["USDT"], allowed_destinations=["*:TRC20", "*:BEP20"]), steps=STEPS[:1])
    assert [t["network"] for t in log.load("saga-1").step("plan_rebalance").result["transfers"]] == ["BEP20"]

    world["rebalance_journal"].reports.clear()
    log = _run(world, saga_id="saga-2", config=_config(assets=["USDT"]))  # default allowlist: no BEP20
    state = log.load("saga-2")
    plan = state.step("plan_rebalance").result
    assert [(t["rail"], t["network"]) for t in plan["transfers"]] == [("b->a:USDT:TRC20", "TRC20")]
    assert plan["breaches"] == [] and state.step("verify_balances").result["verified"][0]["ok"]
    [withdrawal] = world["exchange"].withdrawals()
    assert (withdrawal["network"], withdrawal["status"]) == ("TRC20", "completed")
    # Every BEP20 rail into a managed venue was left out: b->a, c->a, a->b, c->b, a->c, b->c.
    excluded = sorted(r for r in plan["allowlist_excluded"])
    assert len(excluded) == 6 and all(r.endswith(":USDT:BEP20") for r in excluded)
    metadata = _plan_metadata(world)
    assert metadata["allowlist_excluded_rails"].value == 6
    assert "destination allowlist excluded 6 rail(s)" in metadata["plan"].value


def test_no_allowed_rail_fails_the_run_before_anything_moves_naming_the_allowlist(world):
    with pytest.raises(Failure) as failure:
        _run(world, config=_config(assets=["USDT"], allowed_destinations=["*:SEPA"]), steps=STEPS[:1])
    assert failure.value.metadata["arb/guardrail"].value == "plan_infeasible"
    assert failure.value.allow_retries is False
    assert "destination allowlist" in failure.value.description and "12 rail(s)" in failure.value.description
    assert world["exchange"].withdrawals() == [] and world["wise"].transfers == {}


def test_a_plan_that_still_holds_a_non_allowed_destination_fails_the_guardrail(world, monkeypatch):
    """Defence in depth: if the planner ever got a non-allowed rail (a bug in the filter), the guardrail fails
    the run before any money moves, with the rule, the leg and the network in the reason."""
    monkeypatch.setattr(planning, "split_by_allowlist", lambda specs, guardrails: (list(specs), []))
    with pytest.raises(Failure) as failure:
        _run(world, config=_config(assets=["USDT"]), steps=STEPS[:1])
    assert failure.value.metadata["arb/guardrail"].value == "destination_allowlist"
    assert failure.value.allow_retries is False
    [breach] = failure.value.metadata["breaches"].value
    assert breach["rule"] == "destination_allowlist" and breach["transfer"] == 0
    assert "goes to a over BEP20, which is not in the destination allowlist" in failure.value.description
    assert world["exchange"].withdrawals() == [] and world["wise"].transfers == {}
