"""`funding_rate_hedge` with fakes (venues over the simulator's in-memory state, an in-memory saga log):
leg unwinding when one leg of a pair fails (reduce-only, own keys, idempotent, reduce-only legs kept),
no duplicate after a retry, compensation from the sensor path after the step died, idempotent keys,
stop maintenance decisions (create / keep / replace / cancel, too far / resized / wrong side, a nearer stop kept),
the stops step working every venue before failing, dry run, the kill switch (the job refuses, the
schedule skips), the schedule's tags, the event sensor's run config, and the funding baselines a
hedge leaves for the sensor."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from dagster import DagsterEventType, build_schedule_context, instance_for_test, validate_run_config

from arb_orchestration.defs.hedging import (
    HEDGE_SAGA,
    HedgeConfig,
    HedgeJournalResource,
    funding_rate_hedge,
    funding_rate_hedge_schedule,
    hedge_run_config,
)
from arb_orchestration.defs.hedging.baselines import (
    baseline_key,
    overlay_hedge_baselines,
    read_baselines,
    record_baselines,
)
from arb_orchestration.defs.hedging.journal import InMemoryHedgeJournal
from arb_orchestration.defs.hedging.legs import (
    leg_client_order_id,
    rate_rows,
    stop_client_order_id,
    unwind_client_order_id,
)
from arb_orchestration.defs.hedging.steps import (
    PLACE,
    PLAN,
    RECORD,
    STOPS,
    HedgeLegRejected,
    InvalidHedgeConfig,
    StopsNotPlaced,
    TradingPausedMidHedge,
)
from arb_orchestration.defs.hedging.stops import StopSettings, plan_stop_maintenance
from arb_orchestration.domain.funding import FundingDeviation
from arb_orchestration.domain.hedging import protective_stop
from arb_orchestration.domain.models import FundingRate, Order, Position
from arb_orchestration.domain.triggers import HedgeBaselines
from arb_orchestration.resources.errors import BusinessError, TransientError
from arb_orchestration.saga import (
    Action,
    FailedRun,
    InMemorySagaLog,
    InMemoryTradingSwitch,
    StepRuntime,
    TradingPausedError,
    Verdict,
    decide,
    execute_step,
    idempotency_key,
    on_step_failure,
    pause_trading,
    recover_saga,
)
from arb_orchestration_tests.unit.test_hedge_job_fakes import BTC, ETH, World, register, venue_spec

SAGA = HEDGE_SAGA.definition
PRICE = 60_000.0


class Mailbox:
    def __init__(self):
        self.sent: list[tuple[str, str]] = []

    def send(self, subject: str, body: str) -> None:
        self.sent.append((subject, body))


def runtime(world, log, journal, *, config=None, saga_id="saga-1", attempt=0, switch=None) -> StepRuntime:
    return StepRuntime(
        saga_id=saga_id, log=log, resources={"exchange": world, "hedge_journal": journal},
        config=config or HedgeConfig(), run_id=log.run_id, attempt=attempt,
        trading_switch=switch or InMemoryTradingSwitch(),
    )


def run_steps(rt: StepRuntime, *names: str) -> dict:
    return {name: execute_step(SAGA, name, rt) for name in names}


def pair_world() -> World:
    """1 BTC of spot too long; funding alpha 5 bp > beta 4 bp > gamma 1 bp: shorts go to alpha, then beta."""
    return World([
        venue_spec("alpha", btc_funding=0.0005, balances={"USDT": 500_000.0, "BTC": 1.0}),
        venue_spec("beta", btc_funding=0.0004),
        venue_spec("gamma", btc_funding=0.0001),
    ])


PAIR = HedgeConfig(max_notional_per_market_usd=40_000.0, hedge_assets=["BTC"])


# --------------------------------------------------------------------------- legs and their unwinding


def test_the_plan_splits_into_a_pair_of_legs_on_the_two_best_funded_venues():
    world, journal, log = pair_world(), InMemoryHedgeJournal(), InMemorySagaLog()
    plan = run_steps(runtime(world, log, journal, config=PAIR), PLAN)[PLAN]
    assert [(leg["venue"], leg["side"], leg["reduce_only"]) for leg in plan["legs"]] == [
        ("alpha", "sell", False), ("beta", "sell", False)]
    assert sum(leg["amount"] for leg in plan["legs"]) == pytest.approx(1.0)
    metadata = journal.metadata(PLAN)
    assert metadata["legs_planned"] == 2 and len(metadata["normalised_funding_rates"].value.records) == 3


def test_second_leg_refused_unwinds_the_filled_first_leg_reduce_only_with_its_own_key():
    world, journal, log, mail = pair_world(), InMemoryHedgeJournal(), InMemorySagaLog(), Mailbox()
    world.venue("beta").fail_on("create_order", BusinessError("insufficient margin", code="insufficient_margin"))
    rt = runtime(world, log, journal, config=PAIR)
    run_steps(rt, PLAN)
    with pytest.raises(HedgeLegRejected, match="leg 1.*refused by beta.*filled before it: leg 0") as failed:
        execute_step(SAGA, PLACE, rt)
    alpha = world.venue("alpha")
    assert alpha.position(BTC) == pytest.approx(-2 / 3)  # leg 0 filled before leg 1 was refused

    outcome = on_step_failure(SAGA, "saga-1", PLACE, failed.value, log=log, resources={"exchange": world},
                              alert=mail.send, config=PAIR)
    assert outcome.action is Action.COMPENSATED and outcome.compensated == (PLACE,)
    assert alpha.position(BTC) == pytest.approx(0.0, abs=1e-9) and world.venue("beta").position(BTC) == 0.0
    leg, unwind = alpha.orders()
    step_key = idempotency_key(SAGA.name, "saga-1", PLACE)
    plan_leg = log.load("saga-1").step(PLAN).result["legs"][0]
    assert leg.client_order_id == leg_client_order_id(step_key, plan_leg) and leg.side == "sell"
    assert unwind.client_order_id == unwind_client_order_id(step_key, plan_leg) != leg.client_order_id
    assert (unwind.side, unwind.reduce_only, unwind.filled) == ("buy", True, pytest.approx(2 / 3))
    details = log.load("saga-1").step(PLACE).compensation
    assert [u["leg"] for u in details["unwound"]] == [0] and details["untouched"][0]["leg"] == 1
    assert "rolled back" in mail.sent[-1][0]

    # The recovery sweep finding the same saga later does nothing more.
    again = recover_saga(SAGA, "saga-1", FailedRun("run-1", SAGA.name), log=log, resources={"exchange": world},
                         alert=mail.send, config=PAIR)
    assert again.action is Action.NONE and len(alpha.orders()) == 2


def test_a_filled_reduce_only_leg_is_kept_when_the_opening_remainder_fails():
    # alpha holds a 0.5 BTC long where funding is best: the sell is split into a reduce-only close + an opening rest.
    world = World([
        venue_spec("alpha", btc_funding=0.0005, balances={"USDT": 500_000.0, "BTC": 1.0},
                   positions=[(BTC, "long", 0.5, PRICE)]),
        venue_spec("beta", btc_funding=0.0001),
    ])
    log, journal = InMemorySagaLog(), InMemoryHedgeJournal()
    alpha = world.venue("alpha")
    alpha.fail_on("create_order", BusinessError("order size limit", code="limit"), nth=2)
    rt = runtime(world, log, journal, config=HedgeConfig(hedge_assets=["BTC"]))
    legs = run_steps(rt, PLAN)[PLAN]["legs"]
    assert [(leg["amount"], leg["reduce_only"]) for leg in legs] == [(0.5, True), (1.0, False)]
    with pytest.raises(HedgeLegRejected) as failed:
        execute_step(SAGA, PLACE, rt)
    on_step_failure(SAGA, "saga-1", PLACE, failed.value, log=log, resources={"exchange": world}, alert=None)
    details = log.load("saga-1").step(PLACE).compensation
    assert details["unwound"] == [] and [k["leg"] for k in details["kept"]] == [0]
    assert alpha.position(BTC) == 0.0 and len(alpha.orders()) == 1  # no order re-opened the long


def test_a_retry_after_an_ambiguous_leg_places_nothing_twice():
    world, journal, log = pair_world(), InMemoryHedgeJournal(), InMemorySagaLog()
    # The venue applies leg 1, then the answer is lost; the op's RetryPolicy runs the step again.
    world.venue("beta").fail_on("create_order", TransientError("read timeout"), after_apply=True)
    rt = runtime(world, log, journal, config=PAIR)
    run_steps(rt, PLAN)
    with pytest.raises(TransientError):
        execute_step(SAGA, PLACE, rt)
    result = execute_step(SAGA, PLACE, runtime(world, log, journal, config=PAIR, attempt=1))
    assert [leg["filled"] for leg in result["legs"]] == [pytest.approx(2 / 3), pytest.approx(1 / 3)]
    assert len(world.venue("alpha").orders()) == 1 and len(world.venue("beta").orders()) == 1
    alpha_cids = [c["client_order_id"] for c in world.venue("alpha").creates()]
    assert len(alpha_cids) == 2 and len(set(alpha_cids)) == 1  # the same key both times: the venue replayed it


def test_the_recovery_sensor_unwinds_after_the_step_died_without_a_result():
    world, journal, log, mail = pair_world(), InMemoryHedgeJournal(), InMemorySagaLog(), Mailbox()
    world.venue("beta").fail_on("create_order", TransientError("503"))
    rt = runtime(world, log, journal, config=PAIR)
    run_steps(rt, PLAN)
    with pytest.raises(TransientError):
        execute_step(SAGA, PLACE, rt)  # as if the run died here: no hook ran
    state = log.load("saga-1")
    assert not state.step(PLACE).done and decide(SAGA, state).verdict is Verdict.COMPENSATE
    outcome = recover_saga(SAGA, "saga-1", FailedRun("run-1", SAGA.name), log=log.bind("sensor"),
                           resources={"exchange": world}, alert=mail.send, config=PAIR)
    assert outcome.action is Action.COMPENSATED
    assert world.venue("alpha").position(BTC) == pytest.approx(0.0, abs=1e-9)
    assert world.venue("beta").orders() == []


def test_a_rolled_back_hedge_does_not_run_again():
    world, journal, log = pair_world(), InMemoryHedgeJournal(), InMemorySagaLog()
    world.venue("beta").fail_on("create_order", BusinessError("refused", code="x"))
    rt = runtime(world, log, journal, config=PAIR)
    run_steps(rt, PLAN)
    with pytest.raises(HedgeLegRejected) as failed:
        execute_step(SAGA, PLACE, rt)
    on_step_failure(SAGA, "saga-1", PLACE, failed.value, log=log, resources={"exchange": world}, alert=None)
    with pytest.raises(BusinessError, match="rolled back"):
        execute_step(SAGA, PLACE, runtime(world, log, journal, config=PAIR, attempt=1))


# --------------------------------------------------------------------------- keys


def test_keys_are_stable_per_saga_and_leg_and_distinct_otherwise():
    leg = {"leg": 0, "venue": "okx", "symbol": BTC, "side": "sell"}
    key = idempotency_key(SAGA.name, "saga-1", PLACE)
    assert key == idempotency_key(SAGA.name, "saga-1", PLACE) != idempotency_key(SAGA.name, "saga-2", PLACE)
    cid = leg_client_order_id(key, leg)
    assert len(cid) == 32 and cid == leg_client_order_id(key, dict(leg))
    others = {leg_client_order_id(key, {**leg, "leg": 1}), leg_client_order_id(key, {**leg, "venue": "bybit"}),
              leg_client_order_id(idempotency_key(SAGA.name, "saga-2", PLACE), leg), unwind_client_order_id(key, leg)}
    assert cid not in others and len(others) == 4
    position = Position(venue="okx", symbol=BTC, side="short", size=2.0, entry_price=PRICE, mark_price=PRICE)
    stop = protective_stop(position, 5.0)
    resized = protective_stop(position.model_copy(update={"size": 2.5}), 5.0)
    assert stop_client_order_id(key, stop) == stop_client_order_id(key, stop)
    assert len({stop_client_order_id(key, stop), stop_client_order_id(key, resized),
                stop_client_order_id(key, stop, 1)}) == 3


def test_two_runs_of_one_saga_send_the_same_keys():
    world, journal = pair_world(), InMemoryHedgeJournal()
    log = InMemorySagaLog("run-1")
    run_steps(runtime(world, log, journal, config=PAIR), PLAN, PLACE)
    # A re-execution (another run, same saga): every step is done, nothing is sent.
    rerun = runtime(world, log.bind("run-2"), journal, config=PAIR)
    placed = {name: [c["client_order_id"] for c in v.creates()] for name, v in world.venues.items()}
    assert placed["alpha"] and placed["beta"] and placed["gamma"] == []  # the first run did send the legs
    before = sum(len(v.calls) for v in world.venues.values())
    results = run_steps(rerun, PLAN, PLACE)
    assert sum(len(v.calls) for v in world.venues.values()) == before
    # The rerun answers with what the first run recorded: the same legs, under the same client ids.
    assert {leg["venue"]: [leg["client_order_id"]] for leg in results[PLACE]["legs"]} == {
        "alpha": placed["alpha"], "beta": placed["beta"]}
    assert world.venue("alpha").position(BTC) + world.venue("beta").position(BTC) == pytest.approx(-1.0)


# --------------------------------------------------------------------------- stop decisions (pure)


def _pos(venue="okx", side="short", size=2.0, mark=PRICE, liq=None) -> Position:
    return Position(venue=venue, symbol=BTC, side=side, size=size, entry_price=mark, mark_price=mark,
                    liquidation_price=liq)


def _stop(order_id="s1", venue="okx", side="buy", amount=2.0, stop_price=PRICE * 1.05, status="open") -> Order:
    return Order(id=order_id, venue=venue, symbol=BTC, type="stop_market", side=side, amount=amount,
                 stop_price=stop_price, status=status, reduce_only=True)


def test_stop_decisions_create_keep_and_cancel():
    settings = StopSettings(distance_pct=5.0, replace_band_pct=1.5)
    (create,) = plan_stop_maintenance([_pos()], [], settings)
    assert create.kind == "create" and create.wanted.side == "buy" and create.wanted.stop_price == pytest.approx(63_000)
    assert create.wanted.reduce_only and create.wanted.amount == 2.0 and create.wanted.type == "stop_market"
    (keep,) = plan_stop_maintenance([_pos()], [_stop(stop_price=PRICE * 1.06)], settings)  # 1 point off: fits
    assert keep.kind == "keep" and keep.cancels == () and not keep.changes_anything
    (cancel,) = plan_stop_maintenance([_pos(size=0.0)], [_stop()], settings)
    assert cancel.kind == "cancel" and [o.id for o in cancel.cancels] == ["s1"]
    # A market order or a non-reduce-only stop is not a protective stop: never touched.
    other = _stop("m1").model_copy(update={"type": "limit"})
    assert plan_stop_maintenance([], [other, _stop("s2").model_copy(update={"reduce_only": False})], settings) == []


@pytest.mark.parametrize(
    ("stop", "why"),
    [
        (_stop(amount=1.5), "size changed: stop for 1.5, position 2"),
        (_stop(stop_price=PRICE * 1.09), "too far"),
        (_stop(side="sell", stop_price=PRICE * 0.95), "wrong side"),
    ],
)
def test_stops_that_no_longer_fit_are_replaced(stop, why):
    (action,) = plan_stop_maintenance([_pos()], [stop], StopSettings(distance_pct=5.0, replace_band_pct=1.5))
    assert action.kind == "replace" and why in action.reason
    assert action.wanted.amount == 2.0 and [o.id for o in action.cancels] == ["s1"]


def test_a_stop_the_mark_moved_towards_is_kept_not_moved_away():
    # Short at 60,000 with its buy stop at 63,000; the mark rose to 61,800: the stop is now 1.9 % away
    # (wanted 5 % = 64,890). Replacing it would loosen the protection while the position loses.
    position = _pos().model_copy(update={"mark_price": 61_800.0})
    (action,) = plan_stop_maintenance([position], [_stop(stop_price=63_000.0)], StopSettings(distance_pct=5.0))
    assert action.kind == "keep" and not action.changes_anything


def test_duplicate_stops_keep_the_closest_fit_and_cancel_the_rest():
    stops = [_stop("s1", stop_price=PRICE * 1.055), _stop("s2", stop_price=PRICE * 1.05), _stop("s3", amount=1.0)]
    (action,) = plan_stop_maintenance([_pos()], stops, StopSettings())
    assert action.kind == "keep" and action.existing.id == "s2"
    assert sorted(o.id for o in action.cancels) == ["s1", "s3"]


def test_a_stop_beyond_liquidation_is_wanted_inside_it():
    # 10x short: liquidation ~9.5 % above entry; a 12 % stop would come too late.
    position = _pos(liq=PRICE * 1.095)
    (action,) = plan_stop_maintenance([position], [], StopSettings(distance_pct=12.0, replace_band_pct=1.0))
    assert action.wanted.stop_price < position.liquidation_price
    assert "inside liquidation" in action.wanted.reason


# --------------------------------------------------------------------------- the stops step (fakes)


def book_world() -> World:
    return World([
        venue_spec("alpha", positions=[(BTC, "short", 1.0, PRICE)], balances={"USDT": 500_000.0, "BTC": 1.0}),
        venue_spec("beta", eth=True, positions=[(ETH, "short", 10.0, 3_000.0)], balances={"USDT": 500_000.0, "ETH": 10.0}),
    ])


def test_stops_are_created_then_kept_then_replaced_and_cancelled_as_positions_change():
    world, journal = book_world(), InMemoryHedgeJournal()
    first = run_steps(runtime(world, InMemorySagaLog(), journal, saga_id="s1"), PLAN, PLACE, STOPS, RECORD)
    assert first[PLACE]["legs"] == [] and first[STOPS]["counts"] == {"create": 2}
    alpha, beta = world.venue("alpha"), world.venue("beta")
    (alpha_stop,) = alpha.orders(type="stop_market")
    assert (alpha_stop.side, alpha_stop.amount, alpha_stop.reduce_only) == ("buy", 1.0, True)
    assert alpha_stop.stop_price == pytest.approx(PRICE * 1.05)

    second = run_steps(runtime(world, InMemorySagaLog(), journal, saga_id="s2"), PLAN, PLACE, STOPS, RECORD)
    assert second[STOPS]["counts"] == {"keep": 2}
    assert sum(1 for m, _ in alpha.calls + beta.calls if m in ("create_order", "cancel_order")) == 2

    # The book changes by hand: alpha's short grows (and spot with it); beta sells its ETH and closes the hedge.
    world.state.set_positions("alpha", [{"symbol": BTC, "side": "short", "size": 1.5}])
    world.state.credit("alpha", "BTC", 0.5)
    world.state.set_positions("beta", [])
    world.state.credit("beta", "ETH", -10.0)
    third = run_steps(runtime(world, InMemorySagaLog(), journal, saga_id="s3"), PLAN, PLACE, STOPS, RECORD)
    assert third[STOPS]["counts"] == {"cancel": 1, "replace": 1}
    (new_stop,) = alpha.orders(type="stop_market", status="open")
    assert new_stop.amount == 1.5 and new_stop.id != alpha_stop.id
    assert alpha.state.order("alpha", alpha_stop.id).status == "canceled"
    assert beta.orders(status="open") == []
    creates = [m for m, _ in alpha.calls if m in ("create_order", "cancel_order")]
    assert creates[-2:] == ["create_order", "cancel_order"]  # the new stop before the old one goes


def test_a_refused_stop_does_not_stop_the_others_and_fails_as_a_business_error():
    world, journal = book_world(), InMemoryHedgeJournal()
    world.venue("alpha").fail_on("create_order", BusinessError("would trigger", code="would_immediately_trigger"))
    rt = runtime(world, InMemorySagaLog(), journal)
    run_steps(rt, PLAN, PLACE)
    with pytest.raises(StopsNotPlaced, match="alpha BTC/USDT:USDT"):
        execute_step(SAGA, STOPS, rt)
    assert len(world.venue("beta").orders(type="stop_market", status="open")) == 1
    assert journal.metadata(STOPS)["stops_create"] == 2 and "alpha" in journal.metadata(STOPS)["refused"]


def test_dry_run_observes_and_reports_but_sends_nothing():
    world, journal = pair_world(), InMemoryHedgeJournal()
    cfg = HedgeConfig(dry_run=True, max_notional_per_market_usd=40_000.0)
    results = run_steps(runtime(world, InMemorySagaLog(), journal, config=cfg), PLAN, PLACE, STOPS, RECORD)
    assert len(results[PLAN]["legs"]) == 2 and results[PLACE]["skipped"] == "dry run"
    assert all(not v.orders() and not v.creates() for v in world.venues.values())
    assert journal.baselines == {} and results[RECORD]["baselines_recorded"] == []
    assert "DRY RUN" in journal.metadata(RECORD)["summary"].value


# --------------------------------------------------------------------------- kill switch, schedule, sensor config


def test_paused_trading_refuses_at_the_first_step():
    world, journal = pair_world(), InMemoryHedgeJournal()
    switch = InMemoryTradingSwitch()
    switch.pause("stop-loss 42", by="emergency_stop_loss_saga")
    with pytest.raises(TradingPausedError, match="trading is paused \\(stop-loss 42"):
        execute_step(SAGA, PLAN, runtime(world, InMemorySagaLog(), journal, switch=switch))
    assert all(not v.calls for v in world.venues.values())


class PausesAfter(InMemoryTradingSwitch):
    """The kill switch engaged by someone else after `reads` reads (the stop-loss firing mid-hedge)."""

    def __init__(self, reads: int):
        super().__init__()
        self.reads = reads

    def get(self):
        self.reads -= 1
        if self.reads < 0 and not super().get().paused:
            self.pause("stop-loss fired", by="emergency_stop_loss_saga")
        return super().get()


def test_trading_paused_between_legs_stops_placing_and_unwinds():
    world, journal, log = pair_world(), InMemoryHedgeJournal(), InMemorySagaLog()
    rt = runtime(world, log, journal, config=PAIR, switch=PausesAfter(reads=2))  # plan's check + leg 0's
    run_steps(rt, PLAN)
    with pytest.raises(TradingPausedMidHedge, match="stop-loss fired.*before leg 1") as failed:
        execute_step(SAGA, PLACE, rt)
    assert world.venue("beta").orders() == []
    on_step_failure(SAGA, "saga-1", PLACE, failed.value, log=log, resources={"exchange": world}, alert=None)
    assert world.venue("alpha").position(BTC) == pytest.approx(0.0, abs=1e-9)
    stops = execute_step(SAGA, STOPS, runtime(world, InMemorySagaLog(), journal, switch=rt.trading_switch))
    assert stops["skipped"].startswith("trading is paused") and all(
        not v.orders(type="stop_market") for v in world.venues.values())


def test_an_invalid_config_is_a_business_error():
    world, journal = pair_world(), InMemoryHedgeJournal()
    with pytest.raises(InvalidHedgeConfig, match="distance_pct"):
        execute_step(SAGA, PLAN, runtime(world, InMemorySagaLog(), journal, config=HedgeConfig(stop_distance_pct=150)))
    assert all(not v.calls for v in world.venues.values())


def test_the_job_fails_clearly_while_paused_and_the_schedule_skips():
    world = pair_world()
    with instance_for_test() as instance:
        pause_trading(instance, "stop-loss after BTC -14 %", by="test")
        result = funding_rate_hedge.execute_in_process(
            instance=instance, raise_on_error=False,
            resources={"exchange": register(world), "hedge_journal": HedgeJournalResource(), "smtp": Mailbox()},
        )
        assert not result.success
        (failure,) = [e for e in result.all_events if e.event_type is DagsterEventType.STEP_FAILURE]
        assert failure.step_key == PLAN
        assert "trading is paused (stop-loss after BTC -14 %" in failure.event_specific_data.error.message
        assert "not retried" in failure.event_specific_data.error.message
        assert all(not v.calls for v in world.venues.values())
        with build_schedule_context(instance=instance) as context:
            skipped = funding_rate_hedge_schedule.evaluate_tick(context)
        assert not skipped.run_requests and "trading is paused" in skipped.skip_message


def test_the_schedule_requests_a_run_with_the_cron_tags():
    assert funding_rate_hedge_schedule.cron_schedule == "*/15 * * * *"
    assert funding_rate_hedge_schedule.default_status.value == "RUNNING"
    when = datetime(2026, 11, 27, 8, 15, tzinfo=timezone.utc)
    with instance_for_test() as instance, build_schedule_context(instance=instance, scheduled_execution_time=when) as ctx:
        (request,) = funding_rate_hedge_schedule.evaluate_tick(ctx).run_requests
    assert request.tags["arb/trigger"] == "cron" and request.tags["arb/job"] == "funding_rate_hedge"
    assert request.run_key.endswith("2026-11-27T08:15:00+00:00")
    assert funding_rate_hedge.tags["arb/job"] == "funding_rate_hedge" and funding_rate_hedge.tags["dagster/priority"]


def test_the_event_sensor_targets_this_job_and_its_run_config_is_accepted():
    from arb_orchestration.defs import events
    from arb_orchestration.defs.events.config import TriggerEventConfig, event_run_config
    from arb_orchestration.defs.events.sensors import TRIGGER_TAG
    from arb_orchestration.defs.k8s import HEDGE_JOB
    from arb_orchestration.defs.hedging.schedules import TRIGGER_TAG as OUR_TRIGGER_TAG

    sensor = next(s for s in events.defs.sensors if s.name == "funding_deviation_sensor")
    assert [job.name for job in sensor.jobs] == ["funding_rate_hedge"]
    assert not list(events.defs.jobs or [])  # the sensors register no job of their own: this one is ours
    assert (TRIGGER_TAG, HEDGE_JOB) == (OUR_TRIGGER_TAG, funding_rate_hedge.name)
    trigger = TriggerEventConfig(event_id="e-1", topic="funding-rate-events", source="funding-rate-events/0/7",
                                 kind="funding_rate", critical=False, reason="moved 25 bps",
                                 payload={"venue": "okx", "symbol": BTC, "rate": 0.003, "interval_hours": 8})
    sent = events.domain_run_config(funding_rate_hedge, trigger)  # what the sensor puts in its RunRequest
    assert sent == hedge_run_config(trigger=trigger.model_dump()) and sent["trigger"]["event_id"] == "e-1"
    for run_config in (sent, event_run_config(funding_rate_hedge, trigger), {}):
        assert validate_run_config(funding_rate_hedge, run_config) is not None


# --------------------------------------------------------------------------- funding baselines for the sensor


def test_a_hedge_records_normalised_rates_that_reset_the_sensors_baseline():
    world = World([venue_spec("alpha", btc_funding=0.0001, interval=8.0),
                   venue_spec("hyper", btc_funding=0.0000125, interval=1.0)])
    journal = InMemoryHedgeJournal()
    run_steps(runtime(world, InMemorySagaLog(), journal, saga_id="s-9"), PLAN, PLACE, STOPS, RECORD)
    hyper = journal.baselines["hyper|" + BTC]
    assert hyper["rate_8h"] == pytest.approx(0.0001) and hyper["interval_hours"] == 1.0 and hyper["saga_id"] == "s-9"

    deviation = FundingDeviation(threshold_bps=20)
    now = hyper["at"] + 60
    current = FundingRate(venue="hyper", symbol=BTC, rate=0.0001, interval_hours=1.0, observed_at=now)  # 8 bp/8h
    # The sensor's own baseline is older and far away (it last requested a hedge at 40 bp/8h).
    baselines = HedgeBaselines({"hyper|" + BTC: {"rate": 0.005, "interval_hours": 1.0, "at": hyper["at"] - 600}})
    assert deviation.check(baselines.get("hyper", BTC), current).exceeded
    with instance_for_test() as instance:
        record_baselines(instance, journal.baselines)
        assert set(read_baselines(instance, [("hyper", BTC), ("alpha", BTC), ("nope", BTC)])) == {
            "hyper|" + BTC, "alpha|" + BTC}
        assert overlay_hedge_baselines(instance, baselines, [("hyper", BTC)]) == ["hyper|" + BTC]
        result = deviation.check(baselines.get("hyper", BTC), current)
        assert not result.exceeded and result.delta_bps == pytest.approx(7.0)  # 1 -> 8 bp/8h
        # A baseline the sensor set after the hedge wins over the hedge's.
        newer = HedgeBaselines({"hyper|" + BTC: {"rate": 0.003, "interval_hours": 1.0, "at": hyper["at"] + 5}})
        assert overlay_hedge_baselines(instance, newer, [("hyper", BTC)]) == []
        instance.run_storage.set_cursor_values({baseline_key("alpha", BTC): "not json"})
        assert "alpha|" + BTC not in read_baselines(instance, [("alpha", BTC)])
    assert overlay_hedge_baselines(None, newer, [("hyper", BTC)]) == []


def test_rate_rows_normalise_every_interval_to_8h():
    rows = rate_rows([FundingRate(venue="a", symbol=BTC, rate=0.0001, interval_hours=8),
                      FundingRate(venue="b", symbol=BTC, rate=0.0001, interval_hours=1),
                      FundingRate(venue="c", symbol=BTC, rate=0.0001, interval_hours=4)])
    assert [(r["venue"], r["rate_8h_bps"]) for r in rows] == [("a", 1.0), ("b", 8.0), ("c", 2.0)]
