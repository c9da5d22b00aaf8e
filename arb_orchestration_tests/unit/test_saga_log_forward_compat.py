"""Saga-log forward compatibility: a record kind this code does not know (written by a newer version).

The rule (docs/sagas.md, "Upgrades and record kinds"): the writer says whether an older reader may skip a kind
(`ignorable_by_older_readers: true` in the record). Unknown and not so marked = must-understand: every load of
that saga raises `SagaLogTooNewError` naming the kind, so nothing is decided or done for it (no step runs, no
compensation, no relaunch), while other sagas are read and recovered as usual. Unknown and marked ignorable:
skipped with a WARNING naming the kind.

Covered on the pure state, the in-memory log (a step and the failure hook's logic refuse before acting) and a
real SQLite instance through the recovery sweep (the instance checks are shared with
integration/test_saga_log_forward_compat_postgres.py).
"""

from __future__ import annotations

import logging
import time

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from arb_orchestration.saga import (
    SAGA_ID_TAG,
    InMemorySagaLog,
    InstanceSagaLog,
    RecordKind,
    SagaRecord,
    SagaState,
    SagaStep,
    StepRuntime,
    build_saga,
    execute_step,
    idempotency_key,
    on_step_failure,
)
from arb_orchestration.saga.sensors import sweep_failed_sagas
from arb_orchestration.saga.state import IGNORABLE_KEY, IGNORABLE_KINDS, SagaLogTooNewError
from arb_orchestration_tests.unit.test_saga_claim import Mailbox
from arb_orchestration_tests.unit.test_saga_dagster import temp_instance

FUTURE = "compensation_checkpoint_v9"  # a made-up kind from a newer version


class Ledger:
    """Counts what the steps and compensations did, per saga."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, str]] = []
        self.undone: list[tuple[str, str]] = []


def _act(ctx, ledger):
    ledger.actions.append((ctx.saga_id, ctx.step))
    return {"step": ctx.step}


def _undo(ctx, ledger):
    ledger.undone.append((ctx.saga_id, ctx.step))
    return {"undone": ctx.step}


COMPAT_SAGA = build_saga(
    "forward_compat_saga",
    [SagaStep("reserve", _act, _undo), SagaStep("transfer", _act, _undo, pivot=True), SagaStep("settle", _act)],
    retry_policy=None,
)
SAGA = COMPAT_SAGA.definition


def _future(saga_id: str, *, ignorable: bool | None, run_id: str = "run-1", ts: float = 10.0) -> dict:
    raw = {"kind": FUTURE, "saga_id": saga_id, "saga_name": SAGA.name, "step": "transfer", "run_id": run_id,
           "data": {"checkpoint": 3, "moved": 12.5}, "timestamp": ts}
    if ignorable is not None:
        raw[IGNORABLE_KEY] = ignorable
    return raw


def _started(saga_id: str, step: str, ts: float, done: bool = False) -> list[SagaRecord]:
    key = idempotency_key(SAGA.name, saga_id, step)
    out = [SagaRecord(RecordKind.STEP_STARTED, saga_id, SAGA.name, step, "run-1", {"key": key}, ts)]
    if done:
        out.append(SagaRecord(RecordKind.STEP_DONE, saga_id, SAGA.name, step, "run-1",
                              {"key": key, "result": {"step": step}}, ts + 0.5))
    return out


# --------------------------------------------------------------------------- pure


def test_an_unknown_kind_without_the_flag_refuses_the_saga_naming_the_kind():
    records = [*_started("s", "reserve", 1.0, done=True), SagaRecord.from_json(_future("s", ignorable=None))]
    with pytest.raises(SagaLogTooNewError) as refused:
        SagaState.from_records("s", records)
    assert refused.value.kinds == (FUTURE,) and refused.value.saga_id == "s"
    assert FUTURE in str(refused.value) and "upgrade" in str(refused.value)
    # Explicitly not ignorable is the same.
    with pytest.raises(SagaLogTooNewError):
        SagaState.from_records("s", [SagaRecord.from_json(_future("s", ignorable=False))])


def test_an_unknown_kind_marked_ignorable_is_skipped_with_a_warning(caplog):
    base = [*_started("s", "reserve", 1.0, done=True), *_started("s", "transfer", 2.0)]
    future = SagaRecord.from_json(_future("s", ignorable=True))
    assert not future.known and future.ignorable and future.kind == FUTURE
    with caplog.at_level(logging.WARNING, logger="arb_orchestration.saga"):
        state = SagaState.from_records("s", [*base, future])
    assert [r.levelno for r in caplog.records if FUTURE in r.getMessage()] == [logging.WARNING]
    plain = SagaState.from_records("s", base)
    assert state.steps == plain.steps and state.records == plain.records and not state.compensation_began
    assert state.ignored_records == [future]


def test_records_round_trip_and_only_ignorable_ones_carry_the_flag():
    known = _started("s", "reserve", 1.0)[0]
    assert IGNORABLE_KEY not in known.to_json()  # no kind of this version may be skipped by an older reader
    assert IGNORABLE_KINDS == frozenset()
    assert SagaRecord.from_json(known.to_json()) == known
    future = SagaRecord.from_json(_future("s", ignorable=True))
    assert future.to_json()[IGNORABLE_KEY] is True and future.to_json()["kind"] == FUTURE
    assert SagaRecord.from_json(future.to_json()) == future
    # compensation_progress (the newest kind) is must-understand: an older reader skipping it could go forward.
    assert RecordKind.COMPENSATION_PROGRESS not in IGNORABLE_KINDS


# --------------------------------------------------------------------------- acting on it (in-memory log)


def _in_memory(saga_id: str, ignorable: bool | None) -> InMemorySagaLog:
    log = InMemorySagaLog("run-1")
    for r in _started(saga_id, "reserve", 1.0, done=True):
        log.append(r)
    log.append(SagaRecord.from_json(_future(saga_id, ignorable=ignorable, ts=3.0)))
    return log


def test_a_step_refuses_to_run_on_a_saga_with_a_must_understand_unknown_kind():
    log, ledger = _in_memory("s", ignorable=None), Ledger()
    before = len(log.all_records())
    rt = StepRuntime(saga_id="s", log=log, resources={"ledger": ledger}, run_id="run-2", attempt=0)
    with pytest.raises(SagaLogTooNewError):
        execute_step(SAGA, "transfer", rt)
    assert ledger.actions == [] and len(log.all_records()) == before  # nothing done, nothing recorded
    # The failure hook's logic refuses too: no compensation, no mail.
    mail = Mailbox()
    with pytest.raises(SagaLogTooNewError):
        on_step_failure(SAGA, "s", "transfer", RuntimeError("boom"), log=log, resources={"ledger": ledger},
                        alert=mail.send)
    assert ledger.undone == [] and mail.sent == [] and len(log.all_records()) == before


def test_a_step_runs_past_an_ignorable_unknown_kind():
    log, ledger = _in_memory("s", ignorable=True), Ledger()
    rt = StepRuntime(saga_id="s", log=log, resources={"ledger": ledger}, run_id="run-2", attempt=0)
    assert execute_step(SAGA, "transfer", rt) == {"step": "transfer"}
    assert ledger.actions == [("s", "transfer")]


# --------------------------------------------------------------------------- a real instance (shared with PostgreSQL)


def failed_run(instance: DagsterInstance, *, future: bool | None | str = "none"):
    """A run that died after `reserve` finished and `transfer` started; `future` adds a newer-version record
    (None: unflagged, True/False: flagged so) to its event log; "none" adds nothing."""
    run = instance.create_run_for_job(COMPAT_SAGA.job, status=DagsterRunStatus.STARTED)
    log = InstanceSagaLog(instance, run)
    saga_id = run.tags.get(SAGA_ID_TAG, run.run_id)
    for step in ("reserve", "transfer"):
        key = idempotency_key(SAGA.name, saga_id, step)
        log.record_started(saga_id, SAGA.name, step, key=key)
        if step == "reserve":
            log.record_done(saga_id, SAGA.name, step, key=key, result={"step": step})
    if future != "none":
        log.append(SagaRecord.from_json(_future(saga_id, ignorable=future, run_id=run.run_id,  # type: ignore[arg-type]
                                                ts=time.time())))
    instance.report_run_failed(run, "run worker exited unexpectedly (SIGKILL)")
    return instance.get_run_by_id(run.run_id), saga_id


def _sweep(instance: DagsterInstance, ledger: Ledger, logger) -> list[str]:
    requests, lines = sweep_failed_sagas(instance, {COMPAT_SAGA.job.name: SAGA}, {"ledger": ledger, "smtp": Mailbox()},
                                         lookback_seconds=3600, grace_seconds=0, logger=logger)
    assert requests == []
    return lines


def check_a_too_new_saga_is_refused_and_the_others_recover(instance: DagsterInstance) -> None:
    _, too_new = failed_run(instance, future=None)
    _, plain = failed_run(instance)
    _, skippable = failed_run(instance, future=True)
    reader = InstanceSagaLog(instance)

    with pytest.raises(SagaLogTooNewError) as refused:
        reader.load(too_new)
    assert refused.value.kinds == (FUTURE,) and too_new in str(refused.value)
    assert reader.load(plain).step("transfer").started  # other sagas read as before
    assert reader.load(skippable).step("reserve").done and reader.load(skippable).ignored_records

    ledger, logger = Ledger(), logging.getLogger("forward-compat-test")
    lines = _sweep(instance, ledger, logger)

    assert f"{too_new}: error SagaLogTooNewError" in lines
    assert f"{plain}: compensated (compensated)" in lines and f"{skippable}: compensated (compensated)" in lines
    assert sorted(ledger.undone) == sorted([(plain, "transfer"), (plain, "reserve"),
                                            (skippable, "transfer"), (skippable, "reserve")])
    assert all(saga != too_new for saga, _ in ledger.undone)
    # The refused saga's log is untouched by the attempt (no compensation recorded, no failure counted).
    with pytest.raises(SagaLogTooNewError):
        reader.load(too_new)
    assert reader.load(plain).step("reserve").compensated and reader.load(skippable).step("transfer").compensated

    # The next sweep refuses it again (stable, not a one-off), and still touches nothing.
    again = Ledger()
    assert f"{too_new}: error SagaLogTooNewError" in _sweep(instance, again, logger)
    assert again.undone == []


@pytest.fixture(scope="module")
def instance():
    with temp_instance() as inst:
        yield inst


def test_a_too_new_saga_is_refused_and_the_others_recover_on_sqlite(instance):
    check_a_too_new_saga_is_refused_and_the_others_recover(instance)
