"""The `operator_resolved` saga record (written by `arb-orchestration sagas resolve`) and what recovery does with it.

Pure: the record folds into `SagaState.resolution` (the first one counts); it is must-understand for older
readers (never written with the ignorable flag); `decide` answers `Verdict.RESOLVED` before anything else; and
`recover_saga` (the sweep's and the failure sensor's logic) and `on_step_failure` (the hook's) do nothing for a
resolved saga — no compensation, no relaunch, no escalation, no mail, no record — where the same saga without
the record would be compensated, relaunched or escalated (each case checks that control first). Also the
operator's view (`commands.sagas.summarize`) and the output redactor. In-memory log and fakes only.
"""

from __future__ import annotations

import pytest

from arb_orchestration.commands.sagas import Redactor, summarize
from arb_orchestration.saga import (
    Action,
    FailedRun,
    InMemorySagaLog,
    RecordKind,
    SagaRecord,
    SagaState,
    SagaStep,
    Verdict,
    build_saga,
    decide,
    idempotency_key,
    on_step_failure,
    recover_saga,
)
from arb_orchestration.saga.state import IGNORABLE_KEY, IGNORABLE_KINDS


class Venue:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.undone: list[str] = []

    def undo(self, ctx) -> dict:
        if self.fail:
            raise RuntimeError("venue down")
        self.undone.append(ctx.step)
        return {"undone": ctx.step}


def _act(ctx, venue):
    return {"step": ctx.step}


def _undo(ctx, venue):
    return venue.undo(ctx)


SAGA = build_saga(
    "resolve_test_saga",
    [SagaStep("reserve", _act, _undo), SagaStep("transfer", _act, _undo, pivot=True), SagaStep("settle", _act)],
    retry_policy=None,
    max_compensation_attempts=2,
).definition


class Mail:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, subject: str, body: str) -> None:
        self.sent.append(subject)


def _log(saga_id: str, *, done: tuple[str, ...], started: str | None) -> InMemorySagaLog:
    log = InMemorySagaLog("run-1")
    for step in [*done, *([started] if started else [])]:
        key = idempotency_key(SAGA.name, saga_id, step)
        log.record_started(saga_id, SAGA.name, step, key=key)
        if step in done:
            log.record_done(saga_id, SAGA.name, step, key=key, result={"step": step})
    return log


def _resolve(log: InMemorySagaLog, saga_id: str, by: str = "alice") -> None:
    log.bind("run-1").record_operator_resolved(saga_id, SAGA.name, by=by, reason="fixed on the venue",
                                               forced=False, state_before="escalated")


def _recover(log: InMemorySagaLog, saga_id: str, venue: Venue, mail: Mail):
    return recover_saga(SAGA, saga_id, FailedRun("run-1", "resolve_test_saga"), log=log.bind("sweep"),
                        resources={"venue": venue}, alert=mail)


# --------------------------------------------------------------------------- the record


def test_the_record_folds_into_the_resolution_and_only_the_first_counts():
    log = _log("s", done=("reserve",), started="transfer")
    _resolve(log, "s", by="alice")
    _resolve(log, "s", by="bob")
    state = log.load("s")
    assert state.resolved and state.resolution["by"] == "alice" and state.resolution["reason"] == "fixed on the venue"
    assert state.resolution["at"] > 0 and state.resolution["run_id"] == "run-1"
    assert not _log("t", done=("reserve",), started="transfer").load("t").resolved


def test_the_record_is_must_understand_for_older_readers():
    record = SagaRecord(RecordKind.OPERATOR_RESOLVED, "s", SAGA.name, None, "run-1",
                        {"by": "alice", "reason": "x", "forced": False, "state_before": "escalated"})
    raw = record.to_json()
    assert raw["kind"] == "operator_resolved" and IGNORABLE_KEY not in raw
    assert RecordKind.OPERATOR_RESOLVED not in IGNORABLE_KINDS
    assert SagaRecord.from_json(raw) == record


# --------------------------------------------------------------------------- recovery leaves it alone


def test_an_escalated_compensation_is_not_retried_or_mailed_once_resolved():
    log, venue, mail = _log("s", done=("reserve",), started="transfer"), Venue(fail=True), Mail()
    assert _recover(log, "s", venue, mail).action is Action.COMPENSATION_FAILED
    assert _recover(log, "s", venue, mail).action is Action.ESCALATED
    assert mail.sent[-1] == "[saga] ESCALATED: resolve_test_saga [s] needs an operator"
    mails = len(mail.sent)
    _resolve(log, "s")
    before = len(log.all_records())
    venue.fail = False  # even a venue that would now accept the cancel is not called
    outcome = _recover(log, "s", venue, mail)
    assert outcome.action is Action.NONE and outcome.decision.verdict is Verdict.RESOLVED
    assert "alice" in outcome.reason
    assert venue.undone == [] and len(mail.sent) == mails and len(log.all_records()) == before


def test_a_compensation_failed_saga_is_not_compensated_again_once_resolved():
    venue, mail = Venue(fail=True), Mail()
    control = _log("c", done=("reserve",), started="transfer")
    assert _recover(control, "c", venue, mail).action is Action.COMPENSATION_FAILED
    resolved = _log("s", done=("reserve",), started="transfer")
    assert _recover(resolved, "s", venue, mail).action is Action.COMPENSATION_FAILED
    _resolve(resolved, "s")
    venue.fail = False
    assert _recover(control, "c", venue, mail).action is Action.COMPENSATED  # without the record: compensated
    venue.undone.clear()
    before, mails = len(resolved.all_records()), len(mail.sent)
    assert _recover(resolved, "s", venue, mail).action is Action.NONE
    assert venue.undone == [] and len(resolved.all_records()) == before and len(mail.sent) == mails


def test_a_saga_past_its_pivot_is_not_relaunched_once_resolved():
    control = _log("c", done=("reserve", "transfer"), started="settle")
    assert _recover(control, "c", Venue(), Mail()).action is Action.RELAUNCH
    log = _log("s", done=("reserve", "transfer"), started="settle")
    _resolve(log, "s")
    outcome = _recover(log, "s", Venue(), Mail())
    assert outcome.action is Action.NONE and outcome.relaunch is None
    assert not any(r.kind is RecordKind.FORWARD_REQUESTED for r in log.all_records())


def test_resolved_comes_before_every_other_verdict():
    log = _log("s", done=("reserve", "transfer", "settle"), started=None)
    assert decide(SAGA, log.load("s")).verdict is Verdict.COMPLETED
    _resolve(log, "s")
    assert decide(SAGA, log.load("s")).verdict is Verdict.RESOLVED


def test_the_failure_hook_does_nothing_for_a_resolved_saga():
    venue, mail = Venue(), Mail()
    control = _log("c", done=("reserve",), started="transfer")
    assert on_step_failure(SAGA, "c", "transfer", RuntimeError("boom"), log=control.bind("run-1"),
                           resources={"venue": venue}, alert=mail).action is Action.COMPENSATED
    venue.undone.clear()
    mail.sent.clear()
    log = _log("s", done=("reserve",), started="transfer")
    _resolve(log, "s")
    outcome = on_step_failure(SAGA, "s", "transfer", RuntimeError("boom"), log=log.bind("run-1"),
                              resources={"venue": venue}, alert=mail)
    assert outcome.action is Action.NONE and venue.undone == [] and mail.sent == []


# --------------------------------------------------------------------------- the operator's view


def _runs(*statuses: str) -> list[dict]:
    return [{"run_id": f"r{i}", "status": s, "created": float(i), "in_progress": s in ("STARTED", "QUEUED")}
            for i, s in enumerate(statuses)]


def test_summarize_says_which_sagas_need_a_person():
    log = _log("s", done=("reserve",), started="transfer")
    assert summarize("s", log.load_records("s"), _runs("FAILURE")).state == "failed"
    log.bind("sweep").record_compensation_failed("s", SAGA.name, "transfer", key="k", error=RuntimeError("down"))
    view = summarize("s", log.load_records("s"), _runs("FAILURE"))
    assert view.state == "compensation_failed" and view.needs_person and "down" in view.why and view.run_id == "sweep"
    log.bind("sweep").record_escalated("s", SAGA.name, reason="compensation of transfer failed 2 times")
    view = summarize("s", log.load_records("s"), _runs("FAILURE"))
    assert view.state == "escalated" and view.why == "compensation of transfer failed 2 times"
    assert summarize("s", log.load_records("s"), _runs("FAILURE", "STARTED")).running
    _resolve(log, "s")
    view = summarize("s", log.load_records("s"), _runs("FAILURE"))
    assert view.state == "resolved" and not view.needs_person and "alice" in view.why


def test_summarize_an_escalated_saga_finished_by_a_re_execution_is_completed():
    log = _log("s", done=("reserve", "transfer"), started="settle")
    log.record_escalated("s", SAGA.name, reason="still unfinished after 3 forward-recovery runs")
    assert summarize("s", log.load_records("s"), _runs("FAILURE")).state == "escalated"
    assert summarize("s", log.load_records("s"), _runs("FAILURE", "SUCCESS")).state == "completed"


def test_summarize_a_log_too_new_for_this_code():
    log = _log("s", done=("reserve",), started="transfer")
    log.append(SagaRecord.from_json({"kind": "checkpoint_v9", "saga_id": "s", "saga_name": SAGA.name,
                                     "data": {}, "timestamp": 1e10}))
    view = summarize("s", log.load_records("s"), _runs("FAILURE"))
    assert view.state == "too_new" and "checkpoint_v9" in view.why and view.needs_person


@pytest.mark.parametrize("name", ["WISE_API_TOKEN", "CCXT_BINANCE_SECRET", "KAFKA_SASL_PASSWORD", "MY_OTHER_TOKEN"])
def test_the_redactor_blanks_secret_values_and_url_credentials(name):
    redactor = Redactor({name: "s3cr3t-value", "DAGSTER_HOME": "/home/x"})
    text = redactor.redact("error: key s3cr3t-value at postgresql://arb:hunter22@db:5432/x in /home/x")
    assert text == "error: key *** at postgresql://arb:***@db:5432/x in /home/x"
