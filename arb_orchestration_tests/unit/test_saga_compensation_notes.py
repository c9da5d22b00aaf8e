"""Compensation notes: `CompensationContext.note(**fields)` and `ctx.compensation_progress`.

* in the saga log of a real SQLite Dagster instance: a compensation killed after moving money (the
  recovery actor's process dies: no result, no failure recorded) left its notes in the failed run's
  event log; the next actor's attempt of that compensation sees them, in order, and repeats nothing;
* a compensating actor whose claim was taken over writes no note (and so sends nothing after it), records
  no failure and stops (`Action.CLAIM_LOST`);
* backward compatibility: a log without such records reads as no compensation progress;
* a compensation that noted progress has begun: the saga only goes backward from there.

The instance checks are shared with integration/test_saga_compensation_notes_postgres.py.
"""

from __future__ import annotations

import threading
import time

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

from arb_orchestration.saga import (
    SAGA_ID_TAG,
    Action,
    InMemorySagaLog,
    InstanceSagaClaims,
    InstanceSagaLog,
    RecordKind,
    SagaStep,
    build_saga,
    decide,
    idempotency_key,
    recover_run,
)
from arb_orchestration.saga.claim import Lease, claim_key
from arb_orchestration.saga.engine import CompensationContext
from arb_orchestration.saga.recovery import Verdict
from arb_orchestration.saga.state import SagaRecord, SagaState
from arb_orchestration_tests.unit.test_saga_claim import Mailbox
from arb_orchestration_tests.unit.test_saga_dagster import temp_instance

CHUNKS = (60.0, 40.0)  # the compensation moves its money back in two transfers


class Killed(BaseException):
    """The compensating process dying (SIGKILL): no `except Exception` sees it, nothing more is recorded."""


class Wallet:
    """Moves money back chunk by chunk; counts every transfer it was asked to make."""

    def __init__(self, kill_after: int | None = None, before_first_note=None) -> None:
        self.transfers: list[float] = []
        self.kill_after = kill_after
        self.before_first_note = before_first_note
        self.seen: list[list[dict]] = []  # ctx.compensation_progress, per attempt
        self.lock = threading.Lock()

    def move(self, amount: float) -> None:
        with self.lock:
            self.transfers.append(amount)


def _act(ctx, wallet):
    return {"step": ctx.step}


def _undo_transfer(ctx, wallet):
    """Skips every chunk an earlier attempt noted as sent (moved, or with an unknown outcome)."""
    wallet.seen.append([dict(n) for n in ctx.compensation_progress])
    sent = {n["chunk"] for n in ctx.compensation_progress if n["event"] == "sending"}
    if wallet.before_first_note is not None:
        wallet.before_first_note(ctx)
    for i, amount in enumerate(CHUNKS):
        if i in sent:
            continue
        ctx.note(chunk=i, event="sending", amount=amount)
        wallet.move(amount)
        ctx.note(chunk=i, event="moved", amount=amount)
        if wallet.kill_after == i:
            raise Killed()
    return {"earlier_notes": len(ctx.compensation_progress)}


def _undo_reserve(ctx, wallet):
    return {"released": True}


NOTE_SAGA = build_saga(
    "compensation_note_saga",
    [SagaStep("reserve", _act, _undo_reserve), SagaStep("transfer", _act, _undo_transfer, pivot=True),
     SagaStep("settle", _act)],
    retry_policy=None,
)
SAGA = NOTE_SAGA.definition


def failed_run(instance: DagsterInstance):
    """A run that died (no hook) after `transfer` moved money out: written through the real saga log."""
    run = instance.create_run_for_job(NOTE_SAGA.job, status=DagsterRunStatus.STARTED)
    log = InstanceSagaLog(instance, run)
    saga_id = run.tags.get(SAGA_ID_TAG, run.run_id)
    for step in ("reserve", "transfer"):
        key = idempotency_key(SAGA.name, saga_id, step)
        log.record_started(saga_id, SAGA.name, step, key=key)
        if step == "reserve":
            log.record_done(saga_id, SAGA.name, step, key=key, result={"step": step})
    instance.report_run_failed(run, "run worker exited unexpectedly (SIGKILL)")
    return instance.get_run_by_id(run.run_id), saga_id


def _notes(instance: DagsterInstance, saga_id: str) -> list[tuple[int, str]]:
    state = InstanceSagaLog(instance).load(saga_id)
    return [(n["chunk"], n["event"]) for n in state.step("transfer").compensation_progress]


def check_notes_survive_and_a_second_attempt_repeats_nothing(instance: DagsterInstance) -> None:
    run, saga_id = failed_run(instance)
    first = Wallet(kill_after=0)
    with pytest.raises(Killed):
        recover_run(instance, SAGA, run, {"wallet": first, "smtp": Mailbox()}, actor="sensor a")
    assert first.transfers == [60.0] and first.seen == [[]]
    # Read back from storage by a fresh log object: durable before the process "died".
    assert _notes(instance, saga_id) == [(0, "sending"), (0, "moved")]
    records = [e for e in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)
               if "compensation_progress" in (e.dagster_event.message or "")]
    assert len(records) == 2  # in the failed run's own event log, next to the other saga records
    state = InstanceSagaLog(instance).load(saga_id)
    assert not state.step("transfer").compensated and state.compensation_began
    assert decide(SAGA, state).verdict is Verdict.COMPENSATE

    second, mail = Wallet(), Mailbox()
    outcome = recover_run(instance, SAGA, run, {"wallet": second, "smtp": mail}, actor="sensor b")
    assert outcome.action is Action.COMPENSATED, outcome
    assert second.seen == [[{"chunk": 0, "event": "sending", "amount": 60.0},
                            {"chunk": 0, "event": "moved", "amount": 60.0}]]
    assert second.transfers == [40.0]  # chunk 0 is not moved again
    assert _notes(instance, saga_id) == [(0, "sending"), (0, "moved"), (1, "sending"), (1, "moved")]
    state = InstanceSagaLog(instance).load(saga_id)
    assert state.step("transfer").compensation == {"earlier_notes": 2}
    assert state.step("reserve").compensated

    third = Wallet()  # nothing left to do: no compensation runs again
    assert recover_run(instance, SAGA, run, {"wallet": third, "smtp": Mailbox()},
                       actor="sensor c").action is Action.NONE
    assert third.transfers == [] and third.seen == []


def check_a_lost_claim_writes_no_note(instance: DagsterInstance) -> None:
    run, saga_id = failed_run(instance)
    claims = InstanceSagaClaims(instance)

    def take_over(ctx) -> None:  # another actor took the lease (e.g. after our renewals failed for a TTL)
        key = claim_key(saga_id)
        raw = claims.store.read(key)
        now = time.time()
        thief = Lease(saga_id, "thief0000000", "sensor thief", now, now + 3600)
        assert claims.store.replace(key, raw, thief.to_json())

    wallet, mail = Wallet(before_first_note=take_over), Mailbox()
    outcome = recover_run(instance, SAGA, run, {"wallet": wallet, "smtp": mail}, actor="sensor a")
    assert outcome.action is Action.CLAIM_LOST and "sensor thief" in outcome.reason
    assert wallet.seen == [[]] and wallet.transfers == []  # the note before the transfer stopped it
    state = InstanceSagaLog(instance).load(saga_id)
    transfer = state.step("transfer")
    assert transfer.compensation_progress == []  # nothing written
    assert transfer.compensation_failures == 0 and not transfer.compensated  # not counted against the new holder
    assert mail.sent == []
    assert claims.holder(saga_id).actor == "sensor thief"  # not released by the loser


@pytest.fixture(scope="module")
def instance():
    with temp_instance() as inst:
        yield inst


def test_compensation_notes_survive_and_a_second_attempt_repeats_nothing_on_sqlite(instance):
    check_notes_survive_and_a_second_attempt_repeats_nothing(instance)


def test_a_lost_claim_writes_no_compensation_note_on_sqlite(instance):
    check_a_lost_claim_writes_no_note(instance)


def test_a_log_without_compensation_notes_reads_as_none():
    old = [SagaRecord.from_json({"kind": "step_started", "saga_id": "s", "saga_name": "x", "step": "transfer",
                                 "data": {"key": "k"}, "timestamp": 1.0}),
           SagaRecord.from_json({"kind": "step_progress", "saga_id": "s", "saga_name": "x", "step": "transfer",
                                 "data": {"order": 1}, "timestamp": 2.0})]
    state = SagaState.from_records("s", old)
    assert state.step("transfer").compensation_progress == [] and not state.compensation_began
    ctx = CompensationContext("s", "x", "transfer", "k", None, None, [], {}, None)
    assert list(ctx.compensation_progress) == []
    ctx.note(anything=1)  # without a log (a hand-built context): nothing to write, no error


def test_in_memory_notes_are_per_step_in_order_and_kept_apart_from_the_actions_progress():
    log = InMemorySagaLog("run-1")
    log.record_started("s", SAGA.name, "transfer", key="k")
    log.record_progress("s", SAGA.name, "transfer", {"order": 7})
    log.bind("run-2").record_compensation_progress("s", SAGA.name, "transfer", {"n": 1})
    log.bind("run-3").record_compensation_progress("s", SAGA.name, "transfer", {"n": 2})
    step = log.load("s").step("transfer")
    assert step.progress == [{"order": 7}]
    assert step.compensation_progress == [{"n": 1}, {"n": 2}]
    assert [r.kind for r in log.all_records()][-1] is RecordKind.COMPENSATION_PROGRESS
