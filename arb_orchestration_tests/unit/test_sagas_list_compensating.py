"""`sagas list`/`show`: a saga whose compensation began and has not finished is `compensating`, not `rolled_back`.

A compensation that deferred (`CompensationDeferred`: e.g. a Bybit unwind the venue's lagging order history
cannot confirm yet) or a run that died inside a compensation leaves the log with compensation progress on a
step and no `step_compensated` for it. Recovery reads that correctly (`decide` -> COMPENSATE); the operator's
view said `rolled_back`, i.e. "the money is back", while a leg was still open.
"""

from __future__ import annotations

import time

from arb_orchestration.commands.sagas import summarize
from arb_orchestration.saga import InMemorySagaLog, RecordKind, SagaStep, build_saga, idempotency_key
from arb_orchestration.saga.engine import DEFERRED_SINCE

SAGA = build_saga(
    "compensating_view_saga",
    [SagaStep("open_leg", lambda ctx: {}, lambda ctx: {}), SagaStep("hedge", lambda ctx: {}, lambda ctx: {},
                                                                    pivot=True)],
    retry_policy=None,
).definition

FAILED = [{"run_id": "run-1", "status": "FAILURE", "created": 1.0, "in_progress": False}]


def _log() -> InMemorySagaLog:
    log = InMemorySagaLog("run-1")
    key = idempotency_key(SAGA.name, "s", "open_leg")
    log.record_started("s", SAGA.name, "open_leg", key=key)
    log.record_done("s", SAGA.name, "open_leg", key=key, result={"order": "o-1"})
    log.record_started("s", SAGA.name, "hedge", key=idempotency_key(SAGA.name, "s", "hedge"))
    log.record_failed("s", SAGA.name, "hedge", error=RuntimeError("rejected"), business=True)
    return log


def test_a_deferred_compensation_is_compensating_with_when_and_why():
    log = _log()
    since = time.time() - 42
    log.bind("sweep-run").record_compensation_progress(
        "s", SAGA.name, "open_leg", {DEFERRED_SINCE: since, "why": "unwind not in the order history yet"})
    view = summarize("s", log.load_records("s"), FAILED)
    assert view.state == "compensating", view
    assert "open_leg" in view.why and "deferred" in view.why and "unwind not in the order history yet" in view.why
    assert not view.needs_person


def test_a_compensation_that_noted_progress_and_stopped_is_compensating():
    log = _log()
    log.record_compensation_progress("s", SAGA.name, "open_leg", {"cancel_sent": "o-1"})
    view = summarize("s", log.load_records("s"), FAILED)
    assert view.state == "compensating" and "open_leg" in view.why and "deferred" not in view.why


def test_once_the_step_is_compensated_it_is_rolled_back():
    log = _log()
    log.record_compensation_progress("s", SAGA.name, "open_leg", {DEFERRED_SINCE: time.time(), "why": "lag"})
    log.record_compensated("s", SAGA.name, "open_leg", key="k", details={"cancelled": "o-1"})
    records = log.load_records("s")
    assert records[-1].kind == RecordKind.STEP_COMPENSATED
    view = summarize("s", records, FAILED)
    assert view.state == "rolled_back" and "open_leg" in view.why
