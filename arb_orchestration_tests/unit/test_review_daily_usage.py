"""Review: the rebalance's per-day limit must count every leg that may have left, also in a saga whose
rollback did not (yet) establish which legs were cancelled.

`past_rebalance` reads a saga's log; `daily_usage` then skips the legs of a rolled-back saga that it
does not know as committed. Two holes:

* the pivot's compensation (`cancel_uncommitted`) FAILED: nothing says which legs left; a withdrawal
  the venue applied while the call timed out (no progress note) was not counted at all;
* `cancel_uncommitted` saw a Wise leg unfunded ("not_created"), then `cancel_prepared` found it funded
  (a person approved it in the Wise app between the two reads: the SCA park race): the leg left, the
  usage said "cancelled".
"""

from __future__ import annotations

import pytest

from arb_orchestration.defs.rebalance.journal import past_rebalance
from arb_orchestration.domain.rebalance import daily_usage
from arb_orchestration.resources.errors import AmbiguousOutcomeError, BusinessError, TransientError
from arb_orchestration.resources.wise import WAITING
from arb_orchestration.saga import CompensationFailedError, InMemorySagaLog, StepRuntime, compensate, execute_step
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


@pytest.fixture
def world():
    exchange = FakeExchange()
    exchange.auto_complete = False  # withdrawals stay pending: cancellable
    return {"exchange": exchange, "wise": FakeWise(exchange), "smtp": FakeMail(), "rebalance_journal": FakeJournal()}


def _planned(log: InMemorySagaLog, asset: str) -> float:
    plan = log.load("saga-1").step("plan_rebalance").result
    return sum(t["amount"] for t in plan["transfers"] if t["asset"] == asset)


def test_a_rollback_whose_pivot_compensation_failed_still_counts_the_withdrawal_that_left(world):
    log = _run(world, steps=STEPS[:2])
    venue = world["exchange"].venues["b"]
    applied = venue.withdraw

    def applied_then_timed_out(*args, **kwargs):
        applied(*args, **kwargs)  # the venue has it...
        raise AmbiguousOutcomeError("read timeout after sending; the lookup failed too")  # ...we do not know

    venue.withdraw = applied_then_timed_out
    with pytest.raises(AmbiguousOutcomeError):
        execute_step(SAGA, "commit_transfers", StepRuntime("saga-1", log, world, config=_config()))
    venue.fetch_withdrawal = lambda key: (_ for _ in ()).throw(TransientError("venue b API down"))
    with pytest.raises(CompensationFailedError):
        compensate(SAGA, "saga-1", log=log, resources=world, config=_config())

    [withdrawal] = world["exchange"].withdrawals()
    assert withdrawal["status"] == "pending"  # money is held for the withdrawal; nobody knows its fate
    used = daily_usage([past_rebalance(log.load("saga-1"), since=0.0)])
    assert used.get("USDT", 0.0) >= withdrawal["amount"]
    assert used.get("USDT", 0.0) == pytest.approx(_planned(log, "USDT"))


def test_a_wise_leg_funded_while_the_rollback_ran_counts_against_the_day(world):
    log = _run(world, steps=STEPS[:2])
    world["wise"].fail_fund = BusinessError("REJECTED")
    with pytest.raises(BusinessError):
        execute_step(SAGA, "commit_transfers", StepRuntime("saga-1", log, world, config=_config()))
    wise = world["wise"]
    [transfer] = wise.transfers.values()
    assert transfer["status"] == WAITING
    find = wise.find_transfer

    def funded_by_a_person_meanwhile(key):
        # cancel_uncommitted has just read it unfunded; a person approves it in the Wise app now, and Wise
        # converts it at once (past `funds_converted` Wise no longer cancels; a `processing` one would be
        # cancelled and refunded by cancel_prepared: test_rebalance_cancel_funded_wise.py).
        transfer["status"] = "funds_converted"
        return find(key)

    wise.find_transfer = funded_by_a_person_meanwhile
    compensate(SAGA, "saga-1", log=log, resources=world, config=_config())
    state = log.load("saga-1")
    assert state.step("commit_transfers").compensation["not_created"] == [0]
    assert state.step("prepare_transfers").compensation["in_flight"] == [0]

    used = daily_usage([past_rebalance(state, since=0.0)])
    assert used.get("EUR", 0.0) == pytest.approx(_planned(log, "EUR"))
    assert used.get("USDT", 0.0) == 0.0  # the pending withdrawal was cancelled: not counted


def test_a_complete_rollback_still_counts_only_what_left(world):
    log = _run(world, steps=STEPS[:2])
    world["wise"].fail_fund = BusinessError("REJECTED")
    with pytest.raises(BusinessError):
        execute_step(SAGA, "commit_transfers", StepRuntime("saga-1", log, world, config=_config()))
    compensate(SAGA, "saga-1", log=log, resources=world, config=_config())
    assert daily_usage([past_rebalance(log.load("saga-1"), since=0.0)]) == {}
