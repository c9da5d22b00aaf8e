"""Guardrail `legs_in_flight`: a rebalance does not plan while an earlier saga's money is still on its way.

Observed balances do not include money in transit. A saga whose legs left but were never verified as
arrived (a pivot rolled back around a withdrawal already broadcast; a saga stopped or escalated after its
pivot; a pivot whose outcome nobody knows) would otherwise have its deficit planned — and sent — again by
the next rebalance. Covered, on the fakes of test_rebalance_steps.py with earlier sagas staged in a shared
in-memory saga log: what blocks (and that nothing is read or moved then), what does not (a full rollback, a
verified saga), the override and its recorded acknowledgement, the lookback, dry runs; and once through
Dagster with the real `RebalanceJournalResource` on a temporary instance.
"""

from __future__ import annotations

import logging
import time

import pytest
from dagster import DagsterEventType, Failure, instance_for_test

from arb_orchestration.defs.k8s import REBALANCE_MAX_RUNTIME_SECONDS
from arb_orchestration.defs.rebalance import RebalanceJournalResource, build_auto_rebalance_saga
from arb_orchestration.defs.rebalance.config import DEFAULT_IN_FLIGHT_LOOKBACK_SECONDS
from arb_orchestration.defs.rebalance.journal import ACKNOWLEDGED_IN_FLIGHT, blocking_sagas
from arb_orchestration.resources.errors import AmbiguousOutcomeError, BusinessError, TransientError
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

PLAN = "plan_rebalance"


class LogJournal(FakeJournal):
    """Reads earlier sagas from the shared in-memory log, as `RebalanceJournalResource` reads the instance."""

    def __init__(self, log: InMemorySagaLog):
        super().__init__()
        self.log, self.clock, self.lookbacks = log, time.time, []

    def legs_in_flight(self, *, lookback_seconds, exclude_saga=None):
        self.lookbacks.append(lookback_seconds)
        ids = sorted({r.saga_id for r in self.log.all_records()} - {exclude_saga})
        return blocking_sagas([self.log.load(i) for i in ids], since=self.clock() - lookback_seconds)


@pytest.fixture
def log():
    return InMemorySagaLog()


@pytest.fixture
def world(log):
    exchange = FakeExchange()
    exchange.auto_complete = False  # withdrawals stay pending until a test says otherwise
    return {"exchange": exchange, "wise": FakeWise(exchange), "smtp": FakeMail(), "rebalance_journal": LogJournal(log)}


def _pivot_refused_by_wise(world, log, saga_id="saga-1"):
    """saga_id prepared both legs, withdrew USDT b → a (pending), then Wise refused the EUR funding."""
    _run(world, saga_id=saga_id, log=log, steps=STEPS[:2])
    world["wise"].fail_fund = BusinessError("REJECTED")
    with pytest.raises(BusinessError):
        execute_step(SAGA, "commit_transfers", StepRuntime(saga_id, log, world, config=_config()))
    world["wise"].fail_fund = None


def _rolled_back_with_withdrawal_in_flight(world, log, saga_id="saga-1") -> dict:
    """The defect's scenario: the withdrawal was broadcast before the rollback (ccxt venues cannot cancel)."""
    _pivot_refused_by_wise(world, log, saga_id)
    [withdrawal] = world["exchange"].withdrawals()
    withdrawal["status"] = "broadcast"
    compensate(SAGA, saga_id, log=log, resources=world, config=_config())
    assert log.load(saga_id).step("commit_transfers").compensation["in_flight"] == [1]
    return withdrawal


def _plan(world, log, saga_id="saga-2", **config):
    _run(world, saga_id=saga_id, log=log, config=_config(**config), steps=STEPS[:1])
    return log.load(saga_id).step(PLAN).result


def _books(world):
    return [dict(w) for w in world["exchange"].withdrawals()], {k: dict(t) for k, t in world["wise"].transfers.items()}


def _refused(world, log, saga_id="saga-2", **config) -> Failure:
    books = _books(world)
    fetched = []
    for venue in world["exchange"].venues.values():
        real = venue.fetch_balance
        venue.fetch_balance = lambda real=real: fetched.append(1) or real()
    with pytest.raises(Failure) as failure:
        _plan(world, log, saga_id, **config)
    for venue in world["exchange"].venues.values():
        del venue.fetch_balance
    # Nothing moved, nothing was even observed, and the refused saga recorded no plan (no reservation).
    assert _books(world) == books
    assert fetched == []
    assert not log.load(saga_id).step(PLAN).done
    return failure.value


def test_a_rollback_around_a_withdrawal_in_flight_blocks_the_next_plan_naming_rule_saga_and_leg(world, log):
    _rolled_back_with_withdrawal_in_flight(world, log)
    planned = log.load("saga-1").step(PLAN).result["transfers"][1]
    assert world["exchange"].venues["a"].wallet["USDT"] == 4_000.0  # the money is in transit: a still looks short

    failure = _refused(world, log)

    assert failure.allow_retries is False
    assert failure.metadata["arb/guardrail"].value == "legs_in_flight"
    assert failure.metadata["arb/guardrails_breached"].value == ["legs_in_flight"]
    [saga] = failure.metadata["legs_in_flight"].value
    assert saga["saga_id"] == "saga-1" and "rolled back" in saga["why"]
    assert [(leg["index"], leg["asset"], leg["amount"], leg["from"], leg["to"], leg["network"], leg["status"])
            for leg in saga["legs"]] == [(1, "USDT", planned["amount"], "b", "a", "TRC20", "left")]
    text = failure.description
    assert "legs_in_flight" in text and "nothing moved" in text and "saga saga-1" in text
    assert f"#1 {planned['amount']:g} USDT b → a over TRC20 (left)" in text
    assert "allow_legs_in_flight" in text
    # (The cancelled Wise leg #0 is not in flight.) The refusal is reported on the plan step.
    step, message, metadata = world["rebalance_journal"].reports[-1]
    assert step == PLAN and "legs_in_flight" in message and "saga-1" in metadata["legs_in_flight"].value
    assert world["rebalance_journal"].lookbacks[-1] == DEFAULT_IN_FLIGHT_LOOKBACK_SECONDS


def test_a_fully_compensated_earlier_saga_does_not_block(world, log):
    _pivot_refused_by_wise(world, log)
    compensate(SAGA, "saga-1", log=log, resources=world, config=_config())  # the pending withdrawal is cancelled
    assert [w["status"] for w in world["exchange"].withdrawals()] == ["canceled"]

    plan = _plan(world, log)

    assert plan["legs_in_flight"] == []
    assert [t["rail"] for t in plan["transfers"]] == ["wise->a:EUR:SEPA", "b->a:USDT:TRC20"]


def test_a_verified_earlier_saga_does_not_block(world, log):
    world["exchange"].auto_complete = True
    _run(world, saga_id="saga-1", log=log)
    assert log.load("saga-1").step("verify_balances").done
    world["exchange"].venues["a"].wallet["USDT"] = 4_000.0  # traded away since: short again

    plan = _plan(world, log)

    assert plan["legs_in_flight"] == [] and [t["asset"] for t in plan["transfers"]] == ["USDT"]


def test_a_saga_stopped_after_its_pivot_blocks_until_forward_recovery_verifies_it(world, log):
    _run(world, saga_id="saga-1", log=log, steps=STEPS[:3])
    with pytest.raises(TransientError, match="not arrived"):
        execute_step(SAGA, "await_arrival",
                     StepRuntime("saga-1", log, world, config=_config(arrival_timeout_seconds=0.0)))
    log.record_escalated("saga-1", SAGA.name, reason="forward recovery gave up after 3 relaunches")

    failure = _refused(world, log)
    [saga] = failure.metadata["legs_in_flight"].value
    assert saga["why"].startswith("escalated: forward recovery gave up")
    assert sorted(leg["index"] for leg in saga["legs"]) == [0, 1]  # Wise paid out and withdrawal, both unverified

    # An operator's relaunch finishes it forward: arrival verified, nothing in flight any more.
    world["exchange"].auto_complete = True
    for step in ("await_arrival", "verify_balances"):
        execute_step(SAGA, step, StepRuntime("saga-1", log, world, config=_config(), attempt=1))
    assert _plan(world, log, "saga-3")["legs_in_flight"] == []


def test_a_pivot_whose_outcome_nobody_knows_blocks_with_every_leg(world, log):
    _run(world, saga_id="saga-1", log=log, steps=STEPS[:2])
    venue = world["exchange"].venues["b"]
    applied = venue.withdraw

    def applied_then_timed_out(*args, **kwargs):
        applied(*args, **kwargs)
        raise AmbiguousOutcomeError("read timeout after sending")

    venue.withdraw = applied_then_timed_out
    with pytest.raises(AmbiguousOutcomeError):
        execute_step(SAGA, "commit_transfers", StepRuntime("saga-1", log, world, config=_config()))
    venue.fetch_withdrawal = lambda key: (_ for _ in ()).throw(TransientError("venue b API down"))
    with pytest.raises(CompensationFailedError):
        compensate(SAGA, "saga-1", log=log, resources=world, config=_config())
    del venue.fetch_withdrawal, venue.withdraw

    [saga] = _refused(world, log).metadata["legs_in_flight"].value
    assert "outcome unknown" in saga["why"]
    assert [(leg["index"], leg["status"]) for leg in saga["legs"]] == [(0, "outcome unknown"), (1, "outcome unknown")]


def test_the_override_plans_records_the_acknowledgement_and_later_runs_are_not_blocked(world, log, caplog):
    _rolled_back_with_withdrawal_in_flight(world, log)
    last_activity = log.load("saga-1").records[-1].timestamp

    with caplog.at_level(logging.WARNING):
        plan = _plan(world, log, allow_legs_in_flight=True)

    # Without the guardrail this is exactly the second send: the USDT in transit is planned again.
    assert "b->a:USDT:TRC20" in [t["rail"] for t in plan["transfers"]]
    assert [s["saga_id"] for s in plan["legs_in_flight"]] == ["saga-1"]
    assert plan[ACKNOWLEDGED_IN_FLIGHT] == {"saga-1": pytest.approx(last_activity)}
    assert "allow_legs_in_flight" in caplog.text and "saga-1" in caplog.text
    # The operator's acknowledgement holds for the runs after it (e.g. the sensors', which cannot set it)...
    assert _plan(world, log, "saga-3")["legs_in_flight"] == []
    # ...until the acknowledged saga writes to its log again (it did something nobody has checked).
    log.record_escalated("saga-1", SAGA.name, reason="operator relaunch failed")
    assert [s["saga_id"] for s in _refused(world, log, "saga-4").metadata["legs_in_flight"].value] == ["saga-1"]


def test_the_lookback_counts_from_the_earlier_sagas_last_activity(world, log):
    _rolled_back_with_withdrawal_in_flight(world, log)
    assert DEFAULT_IN_FLIGHT_LOOKBACK_SECONDS == REBALANCE_MAX_RUNTIME_SECONDS == 18_000
    journal = world["rebalance_journal"]
    last_activity = log.load("saga-1").records[-1].timestamp

    journal.clock = lambda: last_activity + DEFAULT_IN_FLIGHT_LOOKBACK_SECONDS - 60
    _refused(world, log, "saga-2")
    journal.clock = lambda: last_activity + DEFAULT_IN_FLIGHT_LOOKBACK_SECONDS + 60
    assert _plan(world, log, "saga-3")["legs_in_flight"] == []
    journal.clock = lambda: last_activity + 120
    assert _plan(world, log, "saga-4", in_flight_lookback_seconds=60.0)["legs_in_flight"] == []
    assert journal.lookbacks[-1] == 60.0


def test_a_dry_run_reports_the_legs_in_flight_without_failing_and_acknowledges_nothing(world, log, caplog):
    _rolled_back_with_withdrawal_in_flight(world, log)

    with caplog.at_level(logging.WARNING):
        _run(world, saga_id="saga-2", log=log, config=_config(dry_run=True))

    plan = log.load("saga-2").step(PLAN).result
    assert plan["dry_run"] is True
    [saga] = plan["legs_in_flight"]
    assert saga["saga_id"] == "saga-1" and [leg["index"] for leg in saga["legs"]] == [1]
    assert ACKNOWLEDGED_IN_FLIGHT not in plan
    assert "dry run: a real run would stop here: legs_in_flight: saga saga-1" in caplog.text
    reports = world["rebalance_journal"].reports
    [plan_report] = [m for step, message, m in reports if step == PLAN and "saga-2" in message]
    assert "saga-1" in plan_report["legs_in_flight"].value
    assert len(world["exchange"].withdrawals()) == 1  # only saga-1's
    _refused(world, log, "saga-3")  # the dry run unblocked nothing


def test_through_dagster_the_journal_reads_the_instance_and_the_run_fails_on_the_rule():
    """The real `RebalanceJournalResource` on a temporary instance: a run stuck after its pivot blocks the next."""
    saga = build_auto_rebalance_saga(retry_policy=None)
    exchange = FakeExchange()
    exchange.auto_complete = False
    resources = {"exchange": exchange, "wise": FakeWise(exchange), "smtp": FakeMail(),
                 "rebalance_journal": RebalanceJournalResource()}
    config = {"assets": ["USDT", "EUR"], "use_market_data_floors": False, "poll_interval_seconds": 0.001,
              "arrival_timeout_seconds": 0.0}
    with instance_for_test() as instance:
        first = saga.job.execute_in_process(instance=instance, resources=resources, run_config=config,
                                            raise_on_error=False)
        assert not first.success and len(exchange.withdrawals()) == 1  # committed, then failed in await_arrival

        second = saga.job.execute_in_process(instance=instance, resources=resources, run_config=config,
                                             raise_on_error=False)

        assert not second.success
        [failure] = [e for e in second.all_events if e.event_type is DagsterEventType.STEP_FAILURE]
        assert failure.step_key == PLAN
        metadata = failure.step_failure_data.user_failure_data.metadata
        assert metadata["arb/guardrail"].value == "legs_in_flight"
        [blocking] = metadata["legs_in_flight"].value
        assert blocking["saga_id"] == first.run_id and {leg["index"] for leg in blocking["legs"]} == {0, 1}
        assert len(exchange.withdrawals()) == 1  # the second run sent nothing

        dry = saga.job.execute_in_process(instance=instance, resources=resources, raise_on_error=False,
                                          run_config={**config, "dry_run": True})
        assert dry.success  # a dry run reports it and goes through
        assert len(exchange.withdrawals()) == 1
