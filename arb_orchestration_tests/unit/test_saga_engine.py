"""Saga engine without Dagster: keys, step execution, compensation order, pivot semantics,
loud compensation failures, the hook's logic and recovery idempotency (in-memory log, fake steps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from arb_orchestration.resources.errors import BusinessError, TransientError
from arb_orchestration.saga import (
    Action,
    CompensationFailedError,
    FailedRun,
    InMemorySagaLog,
    InMemoryTradingSwitch,
    RecordKind,
    SagaClosedError,
    SagaDefinition,
    SagaStep,
    StepRuntime,
    TradingPausedError,
    Verdict,
    decide,
    derive_key,
    execute_step,
    idempotency_key,
    on_step_failure,
    recover_saga,
    saga_id_for_run,
    saga_step,
)


@dataclass
class World:
    """Fake external system: records every effect and fails where told to."""

    effects: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, step, key)
    fail_action: dict[str, Exception] = field(default_factory=dict)
    fail_compensation: dict[str, list[Exception]] = field(default_factory=dict)
    alerts: list[tuple[str, str]] = field(default_factory=list)

    def send(self, subject: str, body: str) -> None:
        self.alerts.append((subject, body))


def _step(name: str, *, compensable: bool = True, pivot: bool = False) -> SagaStep:
    def action(ctx, world):
        world.effects.append(("do", ctx.step, ctx.idempotency_key))
        if ctx.step in world.fail_action:
            raise world.fail_action[ctx.step]
        return {"did": ctx.step, "seen": sorted(ctx.results)}

    def undo(ctx, world):
        failures = world.fail_compensation.get(ctx.step) or []
        if failures:
            raise failures.pop(0)
        world.effects.append(("undo", ctx.step, ctx.idempotency_key))
        return {"undid": ctx.step, "had_result": ctx.result is not None}

    action.__name__ = f"do_{name}"
    undo.__name__ = f"undo_{name}"
    return SagaStep(name, action, undo if compensable else None, pivot=pivot)


def _saga(names=("a", "b", "c", "d"), *, pivot: str | None = None, compensable=None, **kw) -> SagaDefinition:
    compensable = set(names) if compensable is None else set(compensable)
    return SagaDefinition(
        "test_saga",
        tuple(_step(n, compensable=n in compensable, pivot=n == pivot) for n in names),
        **kw,
    )


def _rt(log, world, saga_id="saga-1", **kw) -> StepRuntime:
    return StepRuntime(saga_id=saga_id, log=log, resources={"world": world}, **kw)


def _run(saga: SagaDefinition, log, world, saga_id="saga-1", **kw):
    """Runs steps in order like the job does; returns (failed step, error) or (None, None)."""
    for step in saga.steps:
        try:
            execute_step(saga, step.name, _rt(log, world, saga_id, **kw))
        except Exception as exc:  # the op would fail here
            return step.name, exc
    return None, None


def _hook(saga, log, world, step, error, saga_id="saga-1"):
    return on_step_failure(saga, saga_id, step, error, log=log, resources={"world": world}, alert=world.send)


# ---------------------------------------------------------------------------- keys


def test_idempotency_keys_are_stable_distinct_and_venue_safe():
    k1 = idempotency_key("s", "saga-1", "withdraw")
    assert k1 == idempotency_key("s", "saga-1", "withdraw")
    assert len({k1, idempotency_key("s", "saga-1", "deposit"), idempotency_key("s", "saga-2", "withdraw"),
                idempotency_key("t", "saga-1", "withdraw")}) == 4
    assert len(k1) == 32 and all(c in "0123456789abcdef" for c in k1)
    assert derive_key(k1, "okx", "BTC/USDT:USDT", 0) == derive_key(k1, "okx", "BTC/USDT:USDT", 0)
    assert derive_key(k1, "okx", "BTC/USDT:USDT", 0) != derive_key(k1, "okx", "BTC/USDT:USDT", 1)


def _run_like(run_id, tags=None, root=None):
    return SimpleNamespace(run_id=run_id, tags=tags or {}, root_run_id=root)


def test_saga_id_is_tag_then_root_then_own_run_id():
    root = _run_like("r0")
    tagged_root = _run_like("t0", {"arb/saga_id": "evt-9"})
    runs = {"r0": root, "t0": tagged_root}
    assert saga_id_for_run(root, runs.get) == "r0"
    assert saga_id_for_run(_run_like("r1", root="r0"), runs.get) == "r0"  # re-execution keeps the saga
    assert saga_id_for_run(_run_like("t1", root="t0"), runs.get) == "evt-9"  # root's explicit tag
    assert saga_id_for_run(_run_like("x", {"arb/saga_id": "evt-1"}, root="r0"), runs.get) == "evt-1"


# ---------------------------------------------------------------------------- execution


def test_happy_path_records_results_and_hands_them_forward():
    saga, log, world = _saga(), InMemorySagaLog(), World()
    assert _run(saga, log, world) == (None, None)
    state = log.load("saga-1")
    assert [s for s in "abcd" if state.step(s).done] == list("abcd")
    assert state.step("c").result == {"did": "c", "seen": ["a", "b"]}
    assert decide(saga, state).verdict is Verdict.COMPLETED
    kinds = [r.kind for r in log.all_records() if r.step == "a"]
    assert kinds == [RecordKind.STEP_STARTED, RecordKind.STEP_DONE]


def test_started_is_durable_before_the_action_runs():
    seen = []

    def action(ctx, world):
        seen.append(log.load(ctx.saga_id).step(ctx.step).started)
        return {}

    saga = SagaDefinition("s", (SagaStep("only", action, lambda ctx, world: {}),))
    log = InMemorySagaLog()
    execute_step(saga, "only", _rt(log, World()))
    assert seen == [True]


def test_reexecution_skips_done_steps_and_moves_nothing_twice():
    saga, log, world = _saga(), InMemorySagaLog(), World()
    _run(saga, log, world)
    before = list(world.effects)
    # A re-execution is another run of the same saga id.
    assert _run(saga, log.bind("run-2"), world) == (None, None)
    assert world.effects == before


def test_transient_error_is_reraised_and_retry_uses_the_same_key():
    saga, log, world = _saga(), InMemorySagaLog(), World()
    world.fail_action["b"] = TransientError("503")
    step, err = _run(saga, log, world)
    assert (step, type(err)) == ("b", TransientError)  # the original error, for the RetryPolicy
    assert log.load("saga-1").step("b").failed_business is False
    del world.fail_action["b"]
    execute_step(saga, "b", _rt(log, world, attempt=1))
    keys_b = {key for kind, s, key in world.effects if s == "b"}
    assert len(keys_b) == 1


def test_business_error_is_recorded_as_such_and_reraised():
    saga, log, world = _saga(), InMemorySagaLog(), World()
    world.fail_action["c"] = BusinessError("insufficient funds", code="funds")
    step, err = _run(saga, log, world)
    assert step == "c" and err is world.fail_action["c"]
    assert log.load("saga-1").step("c").failed_business is True


# ---------------------------------------------------------------------------- compensation


@pytest.mark.parametrize("failing", ["a", "b", "c", "d"])
def test_failure_in_each_position_compensates_started_steps_newest_first(failing):
    saga, log, world = _saga(), InMemorySagaLog(), World()
    world.fail_action[failing] = BusinessError("rejected")
    step, err = _run(saga, log, world)
    outcome = _hook(saga, log, world, step, err)
    started = list("abcd")[: "abcd".index(failing) + 1]
    undone = [s for kind, s, _ in world.effects if kind == "undo"]
    assert undone == list(reversed(started))  # the failing step too: it may have half-happened
    assert outcome.action is Action.COMPENSATED and list(outcome.compensated) == undone
    state = log.load("saga-1")
    assert decide(saga, state).verdict is Verdict.COMPENSATED
    assert state.step(failing).compensation == {"undid": failing, "had_result": False}
    assert any("rolled back" in subject for subject, _ in world.alerts)


def test_compensation_gets_the_step_key_and_result():
    saga, log, world = _saga(), InMemorySagaLog(), World()
    world.fail_action["c"] = TransientError("boom")
    step, err = _run(saga, log, world)
    _hook(saga, log, world, step, err)
    do_keys = {s: k for kind, s, k in world.effects if kind == "do"}
    undo_keys = {s: k for kind, s, k in world.effects if kind == "undo"}
    assert undo_keys == do_keys
    assert log.load("saga-1").step("b").compensation == {"undid": "b", "had_result": True}


def test_failed_compensation_is_loud_chained_and_stops_older_compensations():
    saga, log, world = _saga(), InMemorySagaLog(), World()
    world.fail_action["c"] = BusinessError("rejected order")
    world.fail_compensation["b"] = [TransientError("cancel endpoint down")]
    step, err = _run(saga, log, world)
    with pytest.raises(CompensationFailedError) as info:
        _hook(saga, log, world, step, err)
    assert isinstance(info.value.__cause__, TransientError)  # raise ... from the compensation's error
    assert info.value.original is err and info.value.step == "b"
    assert [s for kind, s, _ in world.effects if kind == "undo"] == ["c"]  # "a" untouched while "b" is stuck
    assert [e for rec, e in log.errors if rec.kind is RecordKind.COMPENSATION_FAILED]
    assert any("COMPENSATION FAILED" in subject and "Still NOT undone (newest first): b, a" in body
               for subject, body in world.alerts)
    state = log.load("saga-1")
    assert decide(saga, state).verdict is Verdict.COMPENSATE and decide(saga, state).pending == ("b", "a")

    # The recovery sensor retries later; the endpoint is back.
    failed = FailedRun("run-1", "test_saga")
    first = recover_saga(saga, "saga-1", failed, log=log.bind("run-1"), resources={"world": world}, alert=world.send)
    assert first.action is Action.COMPENSATED and first.compensated == ("b", "a")
    effects = list(world.effects)
    second = recover_saga(saga, "saga-1", failed, log=log, resources={"world": world}, alert=world.send)
    assert second.action is Action.NONE and world.effects == effects


def test_compensation_failing_forever_escalates_once():
    saga, log, world = _saga(max_compensation_attempts=2), InMemorySagaLog(), World()
    world.fail_action["b"] = BusinessError("rejected")
    world.fail_compensation["b"] = [TransientError(f"down {i}") for i in range(10)]
    step, err = _run(saga, log, world)
    with pytest.raises(CompensationFailedError):
        _hook(saga, log, world, step, err)
    failed = FailedRun("run-1", "test_saga")
    outcome = recover_saga(saga, "saga-1", failed, log=log, resources={"world": world}, alert=world.send)
    assert outcome.action is Action.ESCALATED
    again = recover_saga(saga, "saga-1", failed, log=log, resources={"world": world}, alert=world.send)
    assert again.action is Action.NONE
    assert sum("ESCALATED" in s for s, _ in world.alerts) == 1


def test_rolled_back_saga_refuses_to_run_again():
    saga, log, world = _saga(), InMemorySagaLog(), World()
    world.fail_action["b"] = BusinessError("rejected")
    step, err = _run(saga, log, world)
    _hook(saga, log, world, step, err)
    del world.fail_action["b"]
    with pytest.raises(SagaClosedError):
        execute_step(saga, "a", _rt(log.bind("run-2"), world))


# ---------------------------------------------------------------------------- pivot


def test_failure_after_pivot_goes_forward_and_alerts_without_compensating():
    saga, log, world = _saga(pivot="b", compensable="ab"), InMemorySagaLog(), World()
    world.fail_action["c"] = TransientError("timeout")
    step, err = _run(saga, log, world)
    outcome = _hook(saga, log, world, step, err)
    assert outcome.action is Action.ALERTED and outcome.decision.next_step == "c"
    assert not [e for e in world.effects if e[0] == "undo"]
    assert any("stuck after its pivot" in s for s, _ in world.alerts)


def test_unknown_outcome_of_an_uncompensable_pivot_goes_forward():
    saga, log, world = _saga(pivot="c", compensable="ab"), InMemorySagaLog(), World()
    world.fail_action["c"] = TransientError("ambiguous")
    step, err = _run(saga, log, world)
    assert _hook(saga, log, world, step, err).decision.verdict is Verdict.FORWARD
    assert not [e for e in world.effects if e[0] == "undo"]


def test_business_refusal_of_an_uncompensable_pivot_compensates_the_earlier_steps():
    saga, log, world = _saga(pivot="c", compensable="ab"), InMemorySagaLog(), World()
    world.fail_action["c"] = BusinessError("insufficient funds")
    step, err = _run(saga, log, world)
    outcome = _hook(saga, log, world, step, err)
    assert outcome.action is Action.COMPENSATED and outcome.compensated == ("b", "a")


def test_definition_rejects_compensations_after_the_pivot_and_ambiguity():
    with pytest.raises(ValueError, match="after the pivot"):
        _saga(pivot="b", compensable="abc")
    with pytest.raises(ValueError, match="more than one pivot"):
        SagaDefinition("s", (_step("a", pivot=True), _step("b", pivot=True)))
    with pytest.raises(ValueError, match="duplicate"):
        SagaDefinition("s", (_step("a"), _step("a")))


def test_saga_step_decorator_reads_resources_from_the_signature():
    def undo(ctx, exchange):
        return {}

    @saga_step(compensation=undo, pivot=True)
    def place(ctx, exchange, smtp):
        """Place it."""
        return {}

    assert place.name == "place" and place.pivot and place.description == "Place it."
    assert place.resource_keys == ("exchange", "smtp") and place.compensation_resource_keys == ("exchange",)


# ---------------------------------------------------------------------------- recovery (crash) logic


def test_crash_mid_step_before_pivot_is_compensated_once():
    saga, log, world = _saga(pivot="c", compensable="abc"), InMemorySagaLog(), World()
    execute_step(saga, "a", _rt(log, world))
    log.record_started("saga-1", "test_saga", "b", key=idempotency_key("test_saga", "saga-1", "b"))  # then SIGKILL
    failed = FailedRun("run-1", "test_saga")
    first = recover_saga(saga, "saga-1", failed, log=log, resources={"world": world}, alert=world.send)
    assert first.action is Action.COMPENSATED and first.compensated == ("b", "a")
    effects = list(world.effects)
    second = recover_saga(saga, "saga-1", failed, log=log, resources={"world": world}, alert=world.send)
    assert second.action is Action.NONE and world.effects == effects


def test_crash_after_pivot_is_relaunched_forward_once_then_reissued_if_lost():
    saga, log, world = _saga(pivot="b", compensable="ab"), InMemorySagaLog(), World()
    for s in "ab":
        execute_step(saga, s, _rt(log, world))
    failed = FailedRun("run-1", "test_saga", run_config={"x": 1},
                       tags={"arb/event_id": "evt-3", "dagster/priority": "100", "dagster/root_run_id": "r0"})
    first = recover_saga(saga, "saga-1", failed, log=log, resources={}, alert=world.send)
    assert first.action is Action.RELAUNCH
    assert first.relaunch.tags["arb/saga_id"] == "saga-1" and first.relaunch.run_config == {"x": 1}
    assert first.relaunch.tags["arb/event_id"] == "evt-3" and "dagster/root_run_id" not in first.relaunch.tags
    # The relaunch run exists: nothing more to do.
    assert recover_saga(saga, "saga-1", failed, log=log, resources={}, alert=world.send,
                        relaunch_exists=True).action is Action.NONE
    # The tick that returned the request died before the run was created: same request again.
    again = recover_saga(saga, "saga-1", failed, log=log, resources={}, alert=world.send)
    assert again.relaunch == first.relaunch
    assert log.load("saga-1").forward_attempts == 1


def test_forward_recovery_gives_up_and_escalates_after_max_attempts():
    saga, log, world = _saga(pivot="a", compensable="a", max_forward_attempts=2), InMemorySagaLog(), World()
    execute_step(saga, "a", _rt(log, world))
    outcomes = [
        recover_saga(saga, "saga-1", FailedRun(f"run-{i}", "test_saga"), log=log, resources={}, alert=world.send)
        for i in range(3)
    ]
    assert [o.action for o in outcomes] == [Action.RELAUNCH, Action.RELAUNCH, Action.ESCALATED]
    assert recover_saga(saga, "saga-1", FailedRun("run-9", "test_saga"), log=log, resources={},
                        alert=world.send).action is Action.NONE


def test_canceled_run_after_commit_is_escalated_not_relaunched():
    saga, log, world = _saga(pivot="a", compensable="a"), InMemorySagaLog(), World()
    execute_step(saga, "a", _rt(log, world))
    outcome = recover_saga(saga, "saga-1", FailedRun("run-1", "test_saga", canceled=True), log=log,
                           resources={}, alert=world.send)
    assert outcome.action is Action.ESCALATED and "canceled" in outcome.reason


def test_forward_only_saga_is_relaunched_even_if_it_never_started():
    saga = _saga(("liquidate", "report"), pivot="liquidate", compensable=())
    assert saga.forward_only
    log = InMemorySagaLog()
    outcome = recover_saga(saga, "s", FailedRun("run-1", "stop"), log=log, resources={}, alert=None)
    assert outcome.action is Action.RELAUNCH and outcome.decision.next_step == "liquidate"


def test_recovery_waits_while_another_run_of_the_saga_is_active():
    saga, log, world = _saga(), InMemorySagaLog(), World()
    execute_step(saga, "a", _rt(log, world))
    outcome = recover_saga(saga, "saga-1", FailedRun("run-1", "test_saga"), log=log, resources={"world": world},
                           alert=world.send, active_runs=1)
    assert outcome.action is Action.WAITING and not [e for e in world.effects if e[0] == "undo"]


# ---------------------------------------------------------------------------- kill switch guard


def test_money_moving_saga_does_not_start_while_trading_is_paused():
    saga, log, world = _saga(), InMemorySagaLog(), World()
    switch = InMemoryTradingSwitch()
    switch.pause("stop-loss", by="emergency_stop_loss_saga")
    with pytest.raises(TradingPausedError):
        execute_step(saga, "a", _rt(log, world, trading_switch=switch))
    assert world.effects == [] and decide(saga, log.load("saga-1")).verdict is Verdict.NOT_STARTED
    switch.resume("all clear", by="ops")
    execute_step(saga, "a", _rt(log, world, trading_switch=switch))
    assert world.effects[0][:2] == ("do", "a")


def test_stop_loss_style_saga_ignores_the_kill_switch():
    saga = _saga(("a",), refuse_while_trading_paused=False)
    switch = InMemoryTradingSwitch()
    switch.pause("stop-loss", by="x")
    world = World()
    execute_step(saga, "a", _rt(InMemorySagaLog(), world, trading_switch=switch))
    assert world.effects[0][:2] == ("do", "a")
