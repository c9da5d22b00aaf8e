"""The Wise simulator's refund hold (`WiseState.refund_delay`, `release_refunds`): a test hook that keeps a
cancelled funded transfer `cancelled` (money not yet back on the balance) until its refund is due or released.
Default 0: refunded in the cancel itself, as before; `reset()` restores it."""

from __future__ import annotations

import math

import pytest

from arb_orchestration.sim.wise import CANCELLED, FUNDS_REFUNDED
from arb_orchestration_tests.unit.test_wise_sim import PROFILE, make_state, new_transfer


def _funded_and_cancelled(refund_delay):
    state, clock = make_state(settle_delay=60.0)
    state.refund_delay = refund_delay
    transfer = new_transfer(state)
    state.fund_transfer(PROFILE, transfer.id)
    before = state.balances()["EUR"]
    answer = state.cancel_transfer(transfer.id)
    assert answer.status == CANCELLED
    return state, clock, transfer, before


def test_by_default_the_refund_is_at_once():
    state, _, transfer, before = _funded_and_cancelled(0.0)
    assert state.get_transfer(transfer.id).status == FUNDS_REFUNDED
    assert state.balances()["EUR"] == pytest.approx(before + transfer.source_value)


def test_a_held_refund_comes_when_due_exactly_once():
    state, clock, transfer, before = _funded_and_cancelled(5.0)
    state.advance()
    assert state.get_transfer(transfer.id).status == CANCELLED and state.balances()["EUR"] == before
    assert state.cancel_transfer(transfer.id).status == CANCELLED  # cancelling again is still harmless
    clock.now += 5.0
    assert state.advance() == 1 and state.advance() == 0
    assert state.get_transfer(transfer.id).status == FUNDS_REFUNDED
    assert state.balances()["EUR"] == pytest.approx(before + transfer.source_value)
    assert [s for s, _ in state.get_transfer(transfer.id).history][-2:] == [CANCELLED, FUNDS_REFUNDED]


def test_an_infinite_hold_waits_for_release_and_reset_lifts_the_hold():
    state, clock, transfer, before = _funded_and_cancelled(math.inf)
    clock.now += 10 * 86_400
    state.advance()
    assert state.get_transfer(transfer.id).status == CANCELLED
    assert state.release_refunds(transfer.id + 1) == 0
    assert state.release_refunds(transfer.id) == 1 and state.release_refunds() == 0
    assert state.get_transfer(transfer.id).status == FUNDS_REFUNDED
    assert state.balances()["EUR"] == pytest.approx(before + transfer.source_value)
    state.reset()
    assert state.refund_delay == 0.0
