"""Venues that cannot take a client withdrawal id (Bybit, Kraken Futures, Hyperliquid through ccxt).

Such a withdrawal cannot be looked up by its key, so a retry could send it twice. Covered here:
- the ccxt client refuses it locally, before any request, as a definite business error
  (`withdrawal_not_idempotent`), and says so up front (`withdrawals_idempotent`);
- the planner offers no withdrawal rail out of such a venue (they can still receive) and says so in the
  plan notes, like the allowlist exclusions;
- if a plan still holds such a leg, the pivot refuses before anything moves, and its compensation records
  the leg as never created, so the `legs_in_flight` guardrail does not block the next rebalances.
Fakes of test_rebalance_steps and a fake ccxt exchange that records every call."""

from __future__ import annotations

import pytest
from dagster import Failure

from arb_orchestration.defs.rebalance.journal import legs_in_flight
from arb_orchestration.resources.ccxt_venue import CcxtVenueClient, CcxtVenueSettings
from arb_orchestration.resources.errors import BusinessError
from arb_orchestration.resources.wise import WAITING
from arb_orchestration.resources.resilience import CircuitBreaker, RetrySettings
from arb_orchestration.saga import StepRuntime, compensate, execute_step
from arb_orchestration_tests.unit.test_rebalance_steps import (
    SAGA,
    STEPS,
    FakeExchange,
    FakeJournal,
    FakeMail,
    FakeWise,
    _config,
    _run,
)


class RecordingCcxt:
    """Records every ccxt call: a refusal "before any request" means this list stays empty."""

    has: dict = {}

    def __init__(self):
        self.calls: list[str] = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def call(*args, **kwargs):
            self.calls.append(name)
            raise AssertionError(f"ccxt {name} must not be called")

        return call


def _ccxt_client(exchange_id: str, fake: RecordingCcxt) -> CcxtVenueClient:
    config = CcxtVenueSettings(name=exchange_id, exchange_id=exchange_id, api_key="k" * 16, secret="s" * 32)
    return CcxtVenueClient(config, retry=RetrySettings(max_attempts=3, base_delay=0.0), breaker=CircuitBreaker("t"),
                           sleep=lambda s: None, exchange=fake)


@pytest.mark.parametrize("exchange_id", ["bybit", "hyperliquid"])
def test_the_ccxt_client_refuses_a_withdrawal_it_cannot_look_up_before_any_request(exchange_id):
    fake = RecordingCcxt()
    client = _ccxt_client(exchange_id, fake)
    assert client.withdrawals_idempotent is False
    with pytest.raises(BusinessError) as refused:
        client.withdraw("USDC", 100.0, address="0xabc", network="ARBITRUM", idempotency_key="w-1")
    assert refused.value.code == "withdrawal_not_idempotent"
    assert exchange_id in str(refused.value) and "nothing was sent" in str(refused.value)
    assert fake.calls == []


def test_a_venue_with_a_client_withdrawal_id_says_so():
    assert _ccxt_client("binance", RecordingCcxt()).withdrawals_idempotent is True
    assert _ccxt_client("okx", RecordingCcxt()).withdrawals_idempotent is True


@pytest.fixture
def world():
    exchange = FakeExchange()
    return {"exchange": exchange, "wise": FakeWise(exchange), "smtp": FakeMail(), "rebalance_journal": FakeJournal()}


def test_the_planner_offers_no_withdrawal_rail_out_of_such_a_venue_and_says_so(world):
    # b is the cheapest source of USDT for a (fee 1 against c's 2); without idempotent withdrawals it is left out.
    world["exchange"].venues["b"].withdrawals_idempotent = False
    log = _run(world, config=_config(assets=["USDT"]))
    plan = log.load("saga-1").step("plan_rebalance").result
    assert [t["rail"] for t in plan["transfers"]] == ["c->a:USDT:TRC20"]
    assert plan["withdrawal_excluded"] == ["b->a:USDT:TRC20", "b->c:USDT:TRC20"]
    _, _, metadata = world["rebalance_journal"].reports[0]
    notes = metadata["plan"].value
    assert "no idempotent withdrawal" in notes and "b->a:USDT:TRC20" in notes
    assert world["exchange"].venues["b"].withdraw_calls == []


def test_a_deficit_only_such_a_venue_could_cover_is_infeasible_naming_it(world):
    for name in ("b", "c"):
        world["exchange"].venues[name].withdrawals_idempotent = False
    with pytest.raises(Failure) as failure:
        _run(world, config=_config(assets=["USDT"]), steps=STEPS[:1])
    assert failure.value.metadata["arb/guardrail"].value == "plan_infeasible"
    assert "no idempotent withdrawal" in failure.value.description and "b->a:USDT:TRC20" in failure.value.description
    assert world["exchange"].withdrawals() == []


def test_a_planned_leg_out_of_such_a_venue_is_refused_before_anything_moves_and_does_not_block(world):
    """Defence in depth: the venue lost the capability between planning and the pivot (a config change)."""
    log = _run(world, steps=STEPS[:2])  # EUR over Wise and USDT b->a
    world["exchange"].venues["b"].withdrawals_idempotent = False
    with pytest.raises(BusinessError) as refused:
        execute_step(SAGA, "commit_transfers", StepRuntime("saga-1", log, world, config=_config()))
    assert refused.value.code == "withdrawal_not_idempotent" and "b->a:USDT:TRC20" in str(refused.value)
    assert world["exchange"].venues["b"].withdraw_calls == []
    assert all(t["status"] == WAITING for t in world["wise"].transfers.values())

    compensate(SAGA, "saga-1", log=log, resources=world, config=_config())
    state = log.load("saga-1")
    assert state.step("commit_transfers").compensated
    assert sorted(state.step("commit_transfers").compensation["not_created"]) == [0, 1]
    assert legs_in_flight(state) is None  # the next rebalance is not blocked for the lookback
    assert world["smtp"].sent == []
