"""Funding that needs a human (Wise SCA) at the rebalance pivot, on fakes and without Dagster: the pure
decisions (commit order, park deadline, what to do with a parked leg), then the steps: a refused funding is
parked (noted, mailed, waited for) and goes on once a person funds it; nobody funding it by the deadline
cancels the transfer and compensates with nothing moved; funded at the last moment is taken as funded; closed
meanwhile is a business failure; a retried pivot keeps the deadline it announced; an API-fundable account keeps
the withdrawals-first order; the journal's run deadline (start + dagster/max_runtime) and run tag on a real instance."""

from __future__ import annotations

import time

import pytest
from dagster import instance_for_test, job, op

from arb_orchestration.defs.rebalance import RebalanceJournalResource
from arb_orchestration.defs.rebalance.funding import HUMAN_FUNDING_CLOSED, HUMAN_FUNDING_TIMEOUT, WAITING_FOR_HUMAN_TAG
from arb_orchestration.domain.rebalance import (
    ParkAction,
    ParkedFunding,
    earlier_park_deadlines,
    park_action,
    park_deadline,
    wise_funds_first,
)
from arb_orchestration.resources.errors import BusinessError
from arb_orchestration.resources.wise import CANCELLED, SENT, WAITING
from arb_orchestration.resources.wise_production import FundingNotCompletedError, FundingRequiresHumanError
from arb_orchestration.saga import InMemorySagaLog, StepRuntime, compensate, execute_step
from arb_orchestration_tests.unit.test_rebalance_steps import (
    SAGA,
    STEPS,
    FakeExchange,
    FakeJournal,
    FakeMail,
    FakeWise,
    _config,
)

# --------------------------------------------------------------------------- pure decisions


@pytest.mark.parametrize(
    "order, may_need_human, first",
    [("auto", True, True), ("auto", False, False), ("wise_first", False, True),
     ("withdrawals_first", True, False)],
)
def test_wise_goes_first_only_when_funding_may_need_a_person_or_when_told(order, may_need_human, first):
    assert wise_funds_first(order, funding_may_need_human=may_need_human) is first


def test_an_unknown_commit_order_is_refused():
    with pytest.raises(ValueError, match="commit order"):
        wise_funds_first("random", funding_may_need_human=False)


def test_park_deadline_is_the_timeout_kept_across_retries_and_never_past_the_run():
    assert park_deadline(1_000.0, 600.0) == (1_600.0, None)
    assert park_deadline(1_000.0, 600.0, earlier=1_200.0)[0] == 1_200.0  # announced once, never extended
    deadline, why = park_deadline(1_000.0, 600.0, run_ends_at=1_500.0, reserve=200.0)
    assert deadline == 1_300.0 and "max_runtime" in why
    assert park_deadline(1_000.0, 600.0, run_ends_at=1_100.0, reserve=200.0)[0] == 1_000.0  # no time: give up now
    assert park_deadline(1_000.0, 600.0, run_ends_at=9_000.0, reserve=200.0) == (1_600.0, None)


@pytest.mark.parametrize(
    "waiting, failed, now, action",
    [(True, False, 10.0, ParkAction.WAIT), (True, False, 20.0, ParkAction.CANCEL),
     (False, False, 30.0, ParkAction.PROCEED), (False, True, 5.0, ParkAction.CLOSED)],
)
def test_park_action(waiting, failed, now, action):
    assert park_action(waiting=waiting, failed=failed, now=now, deadline=20.0) is action


def test_a_parked_leg_round_trips_through_its_saga_log_note_and_says_what_it_waits_for():
    parked = ParkedFunding(index=0, transfer_id=42, amount=3_000.39, currency="EUR", to_venue="bybit",
                           credited=3_000.0, parked_at=0.0, deadline=3_600.0, reference="rebalance s-0")
    assert ParkedFunding.from_note(parked.to_note()) == parked
    assert parked.describe() == ("waiting for a human to approve Wise transfer 42 (3,000.39 EUR → bybit) in the "
                                 "Wise app until 1970-01-01 01:00:00 UTC")
    notes = [{"committed": 1}, parked.to_note(), {**parked.to_note(), "deadline": 9.0}]
    assert earlier_park_deadlines(notes) == {42: 3_600.0}


# --------------------------------------------------------------------------- the steps, on fakes


class FakeProductionWise(FakeWise):
    """FakeWise whose API funding is refused with SCA, as `ProductionWiseResource` on an EU personal token."""

    auth = "personal_token"
    profile_id = 1001

    def __init__(self, exchange, human=None):
        super().__init__(exchange)
        self.human = human  # called on every poll of the wait: a person who may fund (or close) the transfer
        self.fund_attempts: list[int] = []
        self.waits: list[float] = []
        self.refuse_cancel = False

    def fund_transfer(self, tid):
        self.fund_attempts.append(tid)
        raise FundingRequiresHumanError(tid, self.profile_id, path=f"/v3/profiles/1001/transfers/{tid}/payments",
                                        has_one_time_token=True)

    def fund_by_hand(self, tid):
        return FakeWise.fund_transfer(self, tid)

    def cancel_transfer(self, tid):
        if self.refuse_cancel:
            self.fund_by_hand(tid)  # a person was faster
            raise BusinessError("transfer.cancellation.not.allowed")
        return super().cancel_transfer(tid)

    def wait_until_funded(self, tid, *, timeout, poll_interval=None):
        self.waits.append(timeout)
        end = time.monotonic() + timeout
        while True:
            if self.human is not None:
                self.human(self, tid)
            status = self.transfers[tid]["status"]
            if status == CANCELLED:
                raise BusinessError(f"wise transfer {tid} is {status}")
            if status != WAITING:
                return self._model(self.transfers[tid])
            if time.monotonic() >= end:
                raise FundingNotCompletedError(f"wise transfer {tid} still waits")
            time.sleep(0.002)


class ParkJournal(FakeJournal):
    def __init__(self, log, run_ends_at=None):
        super().__init__()
        self.log, self.ends, self.tags = log, run_ends_at, []

    def step_progress(self, saga_id, step):
        return list(self.log.load(saga_id).step(step).progress)

    def run_ends_at(self):
        return self.ends

    def tag_run(self, tags):
        self.tags.append(dict(tags))


def _world(human=None, **journal):
    exchange = FakeExchange()
    log = InMemorySagaLog()
    resources = {"exchange": exchange, "wise": FakeProductionWise(exchange, human), "smtp": FakeMail(),
                 "rebalance_journal": ParkJournal(log, **journal)}
    return resources, log


def _step(resources, log, name, config, attempt=0):
    return execute_step(SAGA, name, StepRuntime("saga-1", log, resources, config=config, attempt=attempt))


FAST = dict(human_funding_timeout_seconds=5.0, human_funding_poll_seconds=0.001)


def test_a_refused_funding_parks_mails_and_goes_on_once_a_person_funds_it():
    seen = {}

    def person(wise, tid):  # approves in the app on the third look; nothing else has moved before
        seen.setdefault("withdrawals_while_parked", len(wise.exchange.withdrawals()))
        seen["looks"] = seen.get("looks", 0) + 1
        if seen["looks"] == 3:
            wise.fund_by_hand(tid)

    resources, log = _world(person)
    for name in STEPS:
        _step(resources, log, name, _config(**FAST))
    state = log.load("saga-1")
    assert all(s.done for s in state.steps.values())
    assert seen["withdrawals_while_parked"] == 0  # Wise first: the withdrawal waited for the person
    [transfer] = resources["wise"].transfers.values()
    assert transfer["status"] == SENT and resources["wise"].fund_attempts == [transfer["id"]]
    assert resources["exchange"].venues["a"].wallet == {"USDT": 12_000.0, "EUR": 6_000.0}

    commit = state.step("commit_transfers")
    [parked] = [n for n in commit.progress if "parked" in n]
    assert parked["wise_transfer_id"] == transfer["id"] and parked["amount"] == transfer["sourceValue"]
    assert parked["deadline"] - parked["parked_at"] == pytest.approx(5.0)
    assert commit.result["committed"]["0"]["funded_by"] == "human"
    (request, _), (thanks, _) = resources["smtp"].sent
    assert f"ACTION NEEDED: approve Wise transfer {transfer['id']}" in request and "funded by hand" in thanks
    body = resources["smtp"].sent[0][1]
    assert "Wise app" in body and parked["deadline_utc"] in body and "Nothing else of this rebalance has moved" in body
    reports = [message for step, message, _ in resources["rebalance_journal"].reports if step == "commit_transfers"]
    assert reports[0].startswith(f"waiting for a human to approve Wise transfer {transfer['id']}")
    tags = [t for t in resources["rebalance_journal"].tags if WAITING_FOR_HUMAN_TAG in t]  # (the plan tags its moves)
    assert "until" in tags[0][WAITING_FOR_HUMAN_TAG] and tags[-1][WAITING_FOR_HUMAN_TAG].startswith("no")


def test_nobody_funds_by_the_deadline_cancels_the_transfer_and_compensates_with_nothing_moved():
    resources, log = _world()
    config = _config(human_funding_timeout_seconds=0.05, human_funding_poll_seconds=0.001)
    for name in STEPS[:2]:
        _step(resources, log, name, config)
    with pytest.raises(BusinessError) as failed:
        _step(resources, log, "commit_transfers", config)
    assert failed.value.code == HUMAN_FUNDING_TIMEOUT and "was not funded by a person" in str(failed.value)
    assert [t["status"] for t in resources["wise"].transfers.values()] == [CANCELLED]
    assert resources["exchange"].withdrawals() == []  # asked before anything irreversible
    done = compensate(SAGA, "saga-1", log=log, resources=resources, config=config)
    assert done == ["commit_transfers", "prepare_transfers", "plan_rebalance"]
    assert resources["wise"].balance == {"EUR": 50_000.0}
    assert resources["exchange"].venues["b"].wallet["USDT"] == 60_000.0
    subjects = [s for s, _ in resources["smtp"].sent]
    assert "ACTION NEEDED" in subjects[0] and "not approved in time" in subjects[1]


def test_funded_as_the_deadline_passes_is_taken_as_funded():
    resources, log = _world()
    resources["wise"].refuse_cancel = True
    config = _config(human_funding_timeout_seconds=0.02, human_funding_poll_seconds=0.001)
    for name in STEPS:
        _step(resources, log, name, config)
    [transfer] = resources["wise"].transfers.values()
    assert transfer["status"] == SENT and len(resources["exchange"].withdrawals()) == 1


def test_a_transfer_closed_in_the_wise_app_while_parked_is_a_business_failure():
    resources, log = _world(lambda wise, tid: wise.cancel_transfer(tid))
    for name in STEPS[:2]:
        _step(resources, log, name, _config(**FAST))
    with pytest.raises(BusinessError) as failed:
        _step(resources, log, "commit_transfers", _config(**FAST))
    assert failed.value.code == HUMAN_FUNDING_CLOSED and resources["exchange"].withdrawals() == []


def test_the_wait_never_outlives_the_run_max_runtime():
    resources, log = _world(run_ends_at=time.time() + 1_800.0 + 300.0 + 0.05)
    config = _config(human_funding_timeout_seconds=3_600.0, human_funding_poll_seconds=0.001,
                     arrival_timeout_seconds=1_800.0)
    for name in STEPS[:2]:
        _step(resources, log, name, config)
    started = time.monotonic()
    with pytest.raises(BusinessError):
        _step(resources, log, "commit_transfers", config)
    assert time.monotonic() - started < 5.0


def test_a_retried_pivot_keeps_the_deadline_it_announced_and_sends_a_reminder():
    resources, log = _world()
    config = _config(human_funding_timeout_seconds=0.05, human_funding_poll_seconds=0.001)
    for name in STEPS[:2]:
        _step(resources, log, name, config)
    resources["wise"].cancel_transfer = lambda tid: (_ for _ in ()).throw(ConnectionError("wise down"))
    with pytest.raises(ConnectionError):  # the cancel at the deadline failed: the op retries the pivot
        _step(resources, log, "commit_transfers", config)
    first = [n for n in log.load("saga-1").step("commit_transfers").progress if "parked" in n][0]["deadline"]
    del resources["wise"].cancel_transfer
    with pytest.raises(BusinessError):
        _step(resources, log, "commit_transfers", config.model_copy(update={"human_funding_timeout_seconds": 60.0}),
              attempt=1)
    deadlines = {n["deadline"] for n in log.load("saga-1").step("commit_transfers").progress if "parked" in n}
    assert deadlines == {first}  # the retry did not wait another minute
    assert "REMINDER" in resources["smtp"].sent[1][0]


def test_a_transfer_already_funded_is_not_funded_again_on_a_retry():
    resources, log = _world()
    for name in STEPS[:2]:
        _step(resources, log, name, _config(**FAST))
    [tid] = resources["wise"].transfers
    resources["wise"].fund_by_hand(tid)
    for name in STEPS[2:]:
        _step(resources, log, name, _config(**FAST))
    assert resources["wise"].fund_attempts == [] and resources["smtp"].sent == []


@pytest.mark.parametrize("commit_order, expected", [("auto", ["withdraw", "wise"]), ("wise_first", ["wise", "withdraw"])])
def test_an_account_that_funds_through_the_api_keeps_withdrawals_first_unless_told(commit_order, expected):
    exchange = FakeExchange()
    order = []
    wise = FakeWise(exchange)
    real_fund, real_withdraw = wise.fund_transfer, exchange.venues["b"].withdraw
    wise.fund_transfer = lambda tid: order.append("wise") or real_fund(tid)
    exchange.venues["b"].withdraw = lambda *a, **kw: order.append("withdraw") or real_withdraw(*a, **kw)
    log = InMemorySagaLog()
    resources = {"exchange": exchange, "wise": wise, "smtp": FakeMail(), "rebalance_journal": ParkJournal(log)}
    for name in STEPS:
        _step(resources, log, name, _config(commit_order=commit_order))
    assert order == expected
    assert log.load("saga-1").step("verify_balances").done


def test_the_journal_knows_when_run_monitoring_ends_the_run_and_tags_it():
    @op
    def look(rebalance_journal: RebalanceJournalResource):
        rebalance_journal.tag_run({WAITING_FOR_HUMAN_TAG: "wise transfer 1 until T"})
        rebalance_journal.tag_run({WAITING_FOR_HUMAN_TAG: "no (funded by hand)"})  # overwritten, not added
        return rebalance_journal.run_ends_at()

    @job(tags={"dagster/max_runtime": "100"})
    def probe():
        look()

    with instance_for_test() as instance:
        result = probe.execute_in_process(instance=instance, resources={"rebalance_journal": RebalanceJournalResource()})
        record = instance.get_run_record_by_id(result.run_id)
        assert result.output_for_node("look") == pytest.approx(record.start_time + 100.0)
        assert record.dagster_run.tags[WAITING_FOR_HUMAN_TAG] == "no (funded by hand)"
