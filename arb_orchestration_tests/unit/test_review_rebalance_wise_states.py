"""Wise transfer states the rebalance steps must read right (from the Wise review).

- The pivot never commits a leg whose transfer was refunded or charged back (Wise lists those
  among the funded states too): nothing moves, the saga rolls back.
- The pivot's compensation counts such a leg as cancelled, not in flight (the journal's
  daily usage and legs-in-flight guard read that).
- prepare's compensation: a cancel Wise refuses because a person funded the transfer a moment
  ago is decided on a fresh read (in flight), not raised.
"""

from __future__ import annotations

import pytest

from arb_orchestration.resources.errors import BusinessError
from arb_orchestration.resources.wise import WAITING
from arb_orchestration.saga import StepRuntime, compensate, execute_step
from arb_orchestration_tests.unit.test_rebalance_steps import STEPS, FakeExchange, FakeJournal, FakeMail, FakeWise, SAGA, _config, _run


@pytest.fixture
def world():
    exchange = FakeExchange()
    exchange.auto_complete = False  # withdrawals stay pending (cancellable)
    return {"exchange": exchange, "wise": FakeWise(exchange), "smtp": FakeMail(), "rebalance_journal": FakeJournal()}


@pytest.mark.parametrize("status", ["funds_refunded", "charged_back"])
def test_the_pivot_does_not_commit_around_a_refunded_transfer(world, status):
    log = _run(world, steps=STEPS[:2])
    [transfer] = world["wise"].transfers.values()
    transfer["status"] = status  # a person funded it in the app, then Wise sent the money back

    with pytest.raises(BusinessError, match=f"is {status}") as refused:
        execute_step(SAGA, "commit_transfers", StepRuntime("saga-1", log, world, config=_config()))

    assert refused.value.code == "transfer_closed"
    assert world["exchange"].withdrawals() == []  # no crypto leg was sent
    compensate(SAGA, "saga-1", log=log, resources=world, config=_config())
    state = log.load("saga-1")
    commit = state.step("commit_transfers").compensation
    assert commit["in_flight"] == [] and commit["cancelled"] == [0]  # the refunded Wise leg is not moving
    assert state.step("prepare_transfers").compensation["in_flight"] == []


def test_prepare_compensation_reads_again_when_a_person_funded_the_transfer_just_before_the_cancel(world):
    log = _run(world, steps=STEPS[:2])
    wise = world["wise"]
    [transfer] = wise.transfers.values()
    real_cancel = wise.cancel_transfer

    def funded_meanwhile(tid):
        wise.transfers[tid]["status"] = "processing"  # approved in the Wise app a moment ago
        raise BusinessError("transfer is not cancellable", code="transfer.cancellation.not.allowed")

    wise.cancel_transfer = funded_meanwhile
    assert transfer["status"] == WAITING
    compensate(SAGA, "saga-1", log=log, resources=world, config=_config())
    wise.cancel_transfer = real_cancel
    assert log.load("saga-1").step("prepare_transfers").compensation["in_flight"] == [0]
