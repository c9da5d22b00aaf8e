"""A compensation that cannot tell yet defers (`CompensationDeferred`) instead of failing.

The case it exists for: a hedge unwind an earlier attempt sent (its outcome never recorded) is not in Bybit's order
history, which may lag its orders by up to 120 s. Before, that attempt failed with `UnwindOutcomeUnknown`: a
"COMPENSATION FAILED" mail to the risk team and one failure towards escalation, for an unwind that a minute later
was either found or shown never to have arrived. Now:

* `unwind_hedge_orders` raises `CompensationDeferred` (retry after the rest of the lag), sends nothing, notes nothing;
  with no sending time, or a history that does not reach back, it still fails as before;
* the engine records no compensation failure and mails nobody, on the hook's path and the recovery sweep's
  (`Action.WAITING`); the next attempt compensates and the saga rolls back with one mail.

The engine part uses the engine tests' fakes (in-memory log, fake steps); the Bybit part the unmodified ccxt class
behind a fake HTTP layer (test_hedge_unwind_rerun_bybit.py).
"""

from __future__ import annotations

import time

import pytest

from arb_orchestration.defs.hedging import steps as hedge_steps
from arb_orchestration.defs.hedging.legs import unwind_client_order_id
from arb_orchestration.defs.hedging.steps import UnwindOutcomeUnknown, unwind_hedge_orders
from arb_orchestration.resources.errors import BusinessError
from arb_orchestration.saga import (
    Action,
    CompensationDeferred,
    FailedRun,
    InMemorySagaLog,
    RecordKind,
    Verdict,
    decide,
    recover_saga,
)
from arb_orchestration_tests.unit.test_hedge_unwind_rerun_bybit import KEY, LEG, _bybit, _leg_row
from arb_orchestration_tests.unit.test_hedge_unwind_rerun_ccxt import Ctx, Exchange
from arb_orchestration_tests.unit.test_saga_engine import World, _hook, _run, _saga


@pytest.fixture(autouse=True)
def _no_grace(monkeypatch):
    monkeypatch.setattr(hedge_steps, "UNWIND_ABSENT_GRACE_SECONDS", 0.0)


# ---------------------------------------------------------------------------- the Bybit unwind


def test_an_unwind_sent_moments_ago_on_bybit_defers_for_the_rest_of_the_lag():
    client, wire, notes = _bybit([_leg_row()])
    notes[0]["sent_at"] = time.time() - 10  # Bybit's history may lag its orders by 120 s

    with pytest.raises(CompensationDeferred) as deferred:
        unwind_hedge_orders(Ctx(notes, leg=LEG, key=KEY), Exchange(client, "bybit"))

    assert 100 <= deferred.value.retry_after_seconds <= 110
    assert unwind_client_order_id(KEY, LEG) in str(deferred.value) and "may lag" in str(deferred.value)
    assert wire.sent("POST", "/v5/order/create") == []  # nothing resent while it cannot tell

    # Once the lag has passed, the same history proves it never arrived: sent exactly once.
    notes[0]["sent_at"] = time.time() - 300
    ctx = Ctx(notes, leg=LEG, key=KEY)
    unwind_hedge_orders(ctx, Exchange(client, "bybit"))
    assert len(wire.sent("POST", "/v5/order/create")) == 1
    assert [n["unwind"] for n in ctx.notes] == ["not_placed", "sending", "placed", "filled"]


def test_an_unwind_without_a_sending_time_still_fails_rather_than_waiting_for_ever():
    client, wire, notes = _bybit([_leg_row()])
    del notes[0]["sent_at"]
    with pytest.raises(UnwindOutcomeUnknown):
        unwind_hedge_orders(Ctx(notes, leg=LEG, key=KEY), Exchange(client, "bybit"))
    assert wire.sent("POST", "/v5/order/create") == []


# ---------------------------------------------------------------------------- the engine


def _deferring_once(world: World, step: str, seconds: float = 90.0) -> None:
    world.fail_compensation[step] = [CompensationDeferred("venue history lags", retry_after_seconds=seconds)]


def test_a_deferred_compensation_in_the_hook_records_no_failure_and_mails_nobody():
    saga, log, world = _saga(), InMemorySagaLog(), World()
    world.fail_action["c"] = BusinessError("rejected order")
    _deferring_once(world, "b")
    step, err = _run(saga, log, world)

    outcome = _hook(saga, log, world, step, err)

    assert outcome.action is Action.WAITING and "deferred for about 90 s" in outcome.reason
    assert world.alerts == []
    assert not [r for r in log.all_records() if r.kind is RecordKind.COMPENSATION_FAILED]
    state = log.load("saga-1")
    assert state.step("b").compensation_failures == 0
    assert decide(saga, state).pending == ("b", "a")  # "c" was undone; "b" and older wait for the sweep
    assert [s for kind, s, _ in world.effects if kind == "undo"] == ["c"]


def test_the_sweep_waits_on_a_deferred_compensation_then_rolls_back_with_one_mail():
    saga, log, world = _saga(max_compensation_attempts=2), InMemorySagaLog(), World()
    world.fail_action["b"] = BusinessError("rejected")
    world.fail_compensation["b"] = [CompensationDeferred("lag", retry_after_seconds=60) for _ in range(3)]
    step, err = _run(saga, log, world)
    _hook(saga, log, world, step, err)
    failed = FailedRun("run-1", "test_saga")

    waits = [recover_saga(saga, "saga-1", failed, log=log, resources={"world": world}, alert=world.send)
             for _ in range(2)]  # more deferrals than max_compensation_attempts: still no escalation
    assert [w.action for w in waits] == [Action.WAITING, Action.WAITING] and world.alerts == []
    assert decide(saga, log.load("saga-1")).verdict is Verdict.COMPENSATE

    done = recover_saga(saga, "saga-1", failed, log=log, resources={"world": world}, alert=world.send)
    assert done.action is Action.COMPENSATED and done.compensated == ("b", "a")
    assert [subject for subject, _body in world.alerts] == ["[saga] test_saga rolled back [saga-1]"]


def test_a_compensation_still_deferring_after_the_limit_fails_loudly(monkeypatch):
    """Deferral is bounded by the engine, not only by the compensation's word: the first deferral is noted (a
    durable record, hidden from the compensation's own notes); one past MAX_COMPENSATION_DEFERRAL_SECONDS after it
    is recorded as a failed compensation and mailed like any other."""
    from types import SimpleNamespace

    from arb_orchestration.saga import engine

    clock = [1_000.0]
    monkeypatch.setattr(engine, "time", SimpleNamespace(time=lambda: clock[0]))
    saga, log, world = _saga(), InMemorySagaLog(), World()
    world.fail_action["b"] = BusinessError("rejected")
    world.fail_compensation["b"] = [CompensationDeferred("history lags", retry_after_seconds=60) for _ in range(3)]
    step, err = _run(saga, log, world)
    assert _hook(saga, log, world, step, err).action is Action.WAITING
    notes = log.load("saga-1").step("b").compensation_progress
    assert [n[engine.DEFERRED_SINCE] for n in notes] == [1_000.0]

    failed = FailedRun("run-1", "test_saga")
    clock[0] = 1_000.0 + engine.MAX_COMPENSATION_DEFERRAL_SECONDS  # at the limit: still a deferral
    assert recover_saga(saga, "saga-1", failed, log=log, resources={"world": world},
                        alert=world.send).action is Action.WAITING
    assert world.alerts == [] and len(log.load("saga-1").step("b").compensation_progress) == 1  # noted once

    clock[0] += 1
    outcome = recover_saga(saga, "saga-1", failed, log=log, resources={"world": world}, alert=world.send)
    assert outcome.action is Action.COMPENSATION_FAILED
    assert log.load("saga-1").step("b").compensation_failures == 1
    assert "still deferred 901 s after its first deferral" in log.load("saga-1").step("b").last_compensation_error
    assert [s for s, _ in world.alerts] == ["[saga] COMPENSATION FAILED: test_saga step b [saga-1]"]


def test_the_engines_deferral_note_is_not_shown_to_the_compensation():
    seen: list[list[dict]] = []
    saga, log, world = _saga(), InMemorySagaLog(), World()
    world.fail_action["b"] = BusinessError("rejected")
    undo_b = saga.steps[1].compensation

    def watching(ctx, world):
        seen.append([dict(n) for n in ctx.compensation_progress])
        return undo_b(ctx, world)

    import dataclasses

    saga = dataclasses.replace(saga, steps=(saga.steps[0], dataclasses.replace(saga.steps[1], compensation=watching),
                                            *saga.steps[2:]))
    _deferring_once(world, "b")
    step, err = _run(saga, log, world)
    _hook(saga, log, world, step, err)
    recover_saga(saga, "saga-1", FailedRun("run-1", "test_saga"), log=log, resources={"world": world},
                 alert=world.send)
    assert seen == [[], []]  # the deferral note exists in the log, but not in the compensation's notes
