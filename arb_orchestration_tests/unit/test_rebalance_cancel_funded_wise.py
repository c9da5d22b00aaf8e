"""The rebalance compensations stop a funded Wise transfer Wise still lets us cancel (docs/wise-api-conformance.md S4).

Wise cancels a transfer until its funds are converted: a funded one still `processing` is cancelled and
refunded to the balance (`cancelled → funds_refunded`). On the fakes of test_rebalance_steps.py, with a Wise
fake whose funding leaves the transfer `processing` and whose cancel follows Wise (refund of a funded one,
409 from `funds_converted` on), and a pivot that funds the Wise leg first and then fails on its withdrawal:

- the pivot's compensation cancels the funded transfer, waits for the refund, records it under `cancelled`
  and `refunded` (not `in_flight`), mails it as cancelled/refunded, and the saga no longer counts as having
  legs in flight (the `legs_in_flight` guardrail) nor the leg as used today;
- a transfer already `funds_converted` stays in flight and is mailed as before (no cancel sent);
- a cancel refused because the transfer moved on meanwhile is read back and reported in flight, not raised;
- a cancel whose outcome is unknown is read back: applied → refunded; not applied (still cancellable) → the
  compensation fails loudly; any other error fails it too;
- a refund Wise has not booked by the deadline is recorded as pending, not in flight;
- prepare's compensation (pivot never started) stops a transfer a person funded in the Wise app.
"""

from __future__ import annotations

import pytest

from arb_orchestration.defs.rebalance import steps
from arb_orchestration.defs.rebalance.journal import legs_in_flight, past_rebalance
from arb_orchestration.resources.errors import AmbiguousOutcomeError, BusinessError, TransientError
from arb_orchestration.resources.wise import CANCELLED, WAITING, Payment
from arb_orchestration.saga import CompensationFailedError, StepRuntime, compensate, execute_step
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

PROCESSING, CONVERTED, REFUNDED = "processing", "funds_converted", "funds_refunded"
CANCELLABLE = {WAITING, "incoming_payment_initiated", PROCESSING}
EUR_BEFORE = 50_000.0


class CancellingWise(FakeWise):
    """Funding leaves the transfer `processing`; cancel as Wise documents it (until funds are converted).

    `refund_at_once=False` leaves a cancelled funded transfer `cancelled` (refund not booked yet).
    `cancel_fault(tid)`, when set, runs instead of the cancel (a test's way to inject what Wise answers).
    """

    def __init__(self, exchange):
        super().__init__(exchange, eur=EUR_BEFORE)
        self.refund_at_once = True
        self.cancel_fault = None
        self.cancel_calls: list[int] = []
        self.funded: set[int] = set()

    def fund_transfer(self, tid):
        if self.fail_fund is not None:
            raise self.fail_fund
        t = self.transfers[tid]
        if t["status"] == WAITING:
            self.balance["EUR"] -= t["sourceValue"]
            t["status"] = PROCESSING
            self.funded.add(tid)
        return Payment(type="BALANCE", status="COMPLETED")

    def apply_cancel(self, tid):
        t = self.transfers[tid]
        if t["status"] in (CANCELLED, REFUNDED):  # cancelling twice is harmless
            return self._model(t)
        if t["status"] not in CANCELLABLE:
            raise BusinessError(f"transfer {tid} is {t['status']}", code="transfer.cancellation.not.allowed")
        t["status"] = CANCELLED
        answer = self._model(t)
        if tid in self.funded and self.refund_at_once:
            self.refund(tid)
        return answer

    def refund(self, tid):
        self.balance["EUR"] += self.transfers[tid]["sourceValue"]
        self.transfers[tid]["status"] = REFUNDED

    def cancel_transfer(self, tid):
        self.cancel_calls.append(tid)
        if self.cancel_fault is not None:
            return self.cancel_fault(tid)
        return self.apply_cancel(tid)


@pytest.fixture
def world():
    exchange = FakeExchange()
    exchange.auto_complete = False
    return {"exchange": exchange, "wise": CancellingWise(exchange), "smtp": FakeMail(),
            "rebalance_journal": FakeJournal()}


WISE_FIRST = dict(commit_order="wise_first")


def _pivot_funds_wise_then_the_withdrawal_fails(world):
    """Plan (leg 0: Wise → a EUR, leg 1: b → a USDT), prepare, then a pivot that funds leg 0 and is refused leg 1."""
    log = _run(world, steps=STEPS[:2], config=_config(**WISE_FIRST))
    world["exchange"].venues["b"].fail_withdraw = BusinessError("withdrawals suspended", code="withdraw_disabled")
    with pytest.raises(BusinessError, match="suspended"):
        execute_step(SAGA, "commit_transfers", StepRuntime("saga-1", log, world, config=_config(**WISE_FIRST)))
    [transfer] = world["wise"].transfers.values()
    assert transfer["status"] == PROCESSING and world["wise"].balance["EUR"] < EUR_BEFORE  # funded, debited
    return log, transfer


def _compensate(world, log):
    return compensate(SAGA, "saga-1", log=log, resources=world, config=_config(**WISE_FIRST))


def test_a_funded_transfer_still_processing_is_cancelled_refunded_mailed_and_not_in_flight(world):
    log, transfer = _pivot_funds_wise_then_the_withdrawal_fails(world)

    _compensate(world, log)

    assert transfer["status"] == REFUNDED
    assert world["wise"].balance["EUR"] == pytest.approx(EUR_BEFORE)  # the fake Wise keeps nothing
    state = log.load("saga-1")
    commit = state.step("commit_transfers").compensation
    assert commit["cancelled"] == [0] and commit["in_flight"] == [] and commit["not_created"] == [1]
    assert commit["refunded"] == [{"index": 0, "wise_transfer_id": transfer["id"], "amount": transfer["sourceValue"],
                                   "currency": "EUR", "status": REFUNDED, "refunded": True}]
    prepare = state.step("prepare_transfers").compensation
    assert prepare["cancelled"] == [0] and prepare["in_flight"] == []
    [(subject, body)] = world["smtp"].sent
    assert "refunded" in subject and "in flight" not in subject
    assert "cancelled, refunded to the Wise balance" in body and "wise->a:EUR:SEPA" in body
    # Nothing left: the legs-in-flight guardrail does not count this saga, nor the daily limit the leg.
    assert legs_in_flight(state) is None
    past = past_rebalance(state, since=0.0)
    assert 0 in past.cancelled and 0 not in past.committed - past.cancelled


def test_a_transfer_already_converted_stays_in_flight_and_is_mailed_as_before(world):
    log, transfer = _pivot_funds_wise_then_the_withdrawal_fails(world)
    transfer["status"] = CONVERTED  # Wise converted it before the compensation ran

    _compensate(world, log)

    assert world["wise"].cancel_calls == []  # past the point Wise cancels: not even tried
    state = log.load("saga-1")
    commit = state.step("commit_transfers").compensation
    assert commit == {"cancelled": [], "not_created": [1], "in_flight": [0]}
    assert state.step("prepare_transfers").compensation["in_flight"] == [0]
    [(subject, body)] = world["smtp"].sent
    assert "partially committed: 1 leg(s) in flight" in subject and "refunded" not in body
    assert [leg.index for leg in legs_in_flight(state).legs] == [0]


def test_a_cancel_refused_because_the_transfer_moved_on_is_read_back_and_reported_in_flight(world):
    log, transfer = _pivot_funds_wise_then_the_withdrawal_fails(world)

    def converted_meanwhile(tid):
        world["wise"].transfers[tid]["status"] = CONVERTED
        raise BusinessError("transfer is funds_converted", code="transfer.cancellation.not.allowed")

    world["wise"].cancel_fault = converted_meanwhile

    _compensate(world, log)  # not a failed compensation

    state = log.load("saga-1")
    assert state.step("commit_transfers").compensation["in_flight"] == [0]
    assert "refunded" not in state.step("commit_transfers").compensation
    assert world["wise"].balance["EUR"] < EUR_BEFORE
    assert "in flight" in world["smtp"].sent[0][0]


@pytest.mark.parametrize("applied", [True, False], ids=["applied", "not-applied"])
def test_a_cancel_whose_outcome_is_unknown_is_read_back(world, applied):
    log, transfer = _pivot_funds_wise_then_the_withdrawal_fails(world)
    wise = world["wise"]

    def times_out(tid):
        if applied:
            wise.apply_cancel(tid)
        raise AmbiguousOutcomeError(f"wise cancel transfer {tid}: read timeout")

    wise.cancel_fault = times_out
    if applied:
        _compensate(world, log)
        commit = log.load("saga-1").step("commit_transfers").compensation
        assert commit["cancelled"] == [0] and commit["in_flight"] == [] and commit["refunded"][0]["refunded"]
        assert wise.balance["EUR"] == pytest.approx(EUR_BEFORE)
    else:
        # Still processing: the cancel did not take and still could: a failed compensation, loud (retried later).
        with pytest.raises(CompensationFailedError) as failed:
            _compensate(world, log)
        assert isinstance(failed.value.__cause__, AmbiguousOutcomeError)
        assert not log.load("saga-1").step("commit_transfers").compensated
        wise.cancel_fault = None  # Wise answers again: the retried compensation stops it
        _compensate(world, log)
        assert log.load("saga-1").step("commit_transfers").compensation["cancelled"] == [0]
        assert transfer["status"] == REFUNDED


def test_any_other_cancel_error_fails_the_compensation(world):
    log, transfer = _pivot_funds_wise_then_the_withdrawal_fails(world)

    def broken(tid):
        raise RuntimeError("client bug")

    world["wise"].cancel_fault = broken
    with pytest.raises(CompensationFailedError) as failed:
        _compensate(world, log)
    assert isinstance(failed.value.__cause__, RuntimeError)
    assert transfer["status"] == PROCESSING


def test_a_transient_read_back_failure_fails_the_compensation(world):
    log, transfer = _pivot_funds_wise_then_the_withdrawal_fails(world)
    wise = world["wise"]
    real_get = wise.get_transfer

    def cancel_times_out(tid):
        raise TransientError("wise 503")

    def get_after_cancel(tid):
        if wise.cancel_calls:
            raise TransientError("wise read 503")
        return real_get(tid)

    wise.cancel_fault = cancel_times_out
    wise.get_transfer = get_after_cancel
    with pytest.raises(CompensationFailedError) as failed:
        _compensate(world, log)
    assert isinstance(failed.value.__cause__, TransientError)
    assert transfer["status"] == PROCESSING


def test_a_refund_not_booked_by_the_deadline_is_recorded_pending_not_in_flight(world, monkeypatch):
    monkeypatch.setattr(steps, "REFUND_WAIT_SECONDS", 0.05)
    log, transfer = _pivot_funds_wise_then_the_withdrawal_fails(world)
    world["wise"].refund_at_once = False

    _compensate(world, log)

    state = log.load("saga-1")
    commit = state.step("commit_transfers").compensation
    assert commit["cancelled"] == [0] and commit["in_flight"] == []
    assert commit["refunded"][0]["status"] == CANCELLED and commit["refunded"][0]["refunded"] is False
    assert "refund pending" in world["smtp"].sent[0][1]
    assert legs_in_flight(state) is None


def test_a_refund_booked_while_the_compensation_waits_is_seen(world, monkeypatch):
    log, transfer = _pivot_funds_wise_then_the_withdrawal_fails(world)
    wise = world["wise"]
    wise.refund_at_once = False
    real_get = wise.get_transfer
    reads = {"n": 0}

    def refunded_on_the_second_read(tid):
        reads["n"] += 1
        if wise.transfers[tid]["status"] == CANCELLED and reads["n"] >= 3:
            wise.refund(tid)
        return real_get(tid)

    wise.get_transfer = refunded_on_the_second_read
    _compensate(world, log)
    assert log.load("saga-1").step("commit_transfers").compensation["refunded"][0]["status"] == REFUNDED
    assert wise.balance["EUR"] == pytest.approx(EUR_BEFORE)


def test_prepare_compensation_stops_a_transfer_a_person_funded_in_the_wise_app(world):
    log = _run(world, steps=STEPS[:2])
    [transfer] = world["wise"].transfers.values()
    world["wise"].fund_transfer(transfer["id"])  # approved in the app; then the saga is rolled back before its pivot
    assert transfer["status"] == PROCESSING

    _compensate(world, log)

    prepare = log.load("saga-1").step("prepare_transfers").compensation
    assert prepare["cancelled"] == [0] and prepare["in_flight"] == [] and prepare["refunded"][0]["refunded"]
    assert transfer["status"] == REFUNDED and world["wise"].balance["EUR"] == pytest.approx(EUR_BEFORE)


def test_an_unfunded_transfer_is_cancelled_as_before_without_a_refund_entry(world):
    log = _run(world, steps=STEPS[:2])
    _compensate(world, log)
    assert log.load("saga-1").step("prepare_transfers").compensation == {"cancelled": [0], "absent": [],
                                                                          "in_flight": []}
    assert [t["status"] for t in world["wise"].transfers.values()] == [CANCELLED]
