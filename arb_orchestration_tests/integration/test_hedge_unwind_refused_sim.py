"""`funding_rate_hedge`: the venue REFUSES the unwind of a filled leg while its position is still open
(docs/saga-test-matrix.md, F · `unwind_hedge_orders` refused while exposure is open), against the real
local world (exchange simulator over HTTP, SMTP sink) and a real temporary Dagster instance.

bybit fills leg 0; okx cannot margin leg 1 (refused); the compensation's reduce-only unwind on bybit
is then refused by the simulator's `error_4xx` fault (nothing applied), once with a code the hedge
does not know and once with the simulator's own "reduce-only would increase" code, which the hedge
believes only when a fresh read shows nothing open. Either way: the run fails, the leg's position is
still open at the venue, the saga log records the compensation as failed (never as compensated), the
risk team gets COMPENSATION FAILED (no "rolled back"), and the recovery sweep retries the unwind,
fails loudly each time, escalates after `max_compensation_attempts` (ESCALATED mail), and a further
pass touches nothing."""

from __future__ import annotations


import pytest
from dagster import DagsterEventType, RetryPolicy, build_sensor_context, instance_for_test

from arb_orchestration.defs.hedging import HedgeJournalResource, build_funding_rate_hedge
from arb_orchestration.defs.hedging.steps import PLACE
from arb_orchestration.resources.resilience import reset_breakers
from arb_orchestration.saga import InstanceSagaLog, RecordKind, Verdict, decide
from arb_orchestration_tests.integration.test_saga_matrix_gaps import when
from arb_orchestration_tests.integration.world_resources import world_exchange, world_smtp

pytestmark = pytest.mark.integration

BTC = "BTC/USDT:USDT"
HEDGE = build_funding_rate_hedge(retry_policy=RetryPolicy(max_retries=1, delay=0.05))


def _resources() -> dict:
    return {"exchange": world_exchange(timeout_seconds=2.0, max_attempts=2, retry_base_delay=0.02),
            "smtp": world_smtp(), "hedge_journal": HedgeJournalResource()}


@pytest.fixture
def instance():
    """Its own instance: the sweep looks at every failed saga run in it."""
    with instance_for_test() as inst:
        yield inst


def _position(world, venue: str, symbol: str) -> float:
    return sum(p.signed_size for p in world.exchange.state.positions(venue) if p.symbol == symbol)


def _sweep(instance):
    _, sweep = HEDGE.recovery_sensors(grace_seconds=0)
    keys = HEDGE.definition.compensation_resource_keys
    with build_sensor_context(instance=instance, resources={k: v for k, v in _resources().items() if k in keys}) as ctx:
        return sweep(ctx)


@pytest.mark.parametrize("code", ["order_rejected", "reduce_only_would_increase"])
def test_a_refused_unwind_leaves_the_leg_open_and_is_loud_never_rolled_back(world, instance, code):
    reset_breakers()
    state = world.exchange.state
    state.credit("kraken", "BTC", 1.0)  # 1.04 BTC too long: two legs at 40k USD per market
    state.shock(venue="bybit", symbol=BTC, funding_rate=0.0005)  # best for shorts: leg 0
    state.shock(venue="okx", symbol=BTC, funding_rate=0.0004)  # next best: leg 1
    state.credit("okx", "USDT", -(state.balances("okx")["USDT"].free - 50.0))  # okx cannot margin leg 1
    bybit_before = _position(world, "bybit", BTC)
    # okx's leg is held 300 ms, long enough to arm the refusal for bybit's next order (the unwind) only.
    world.exchange.faults.add({"kind": "latency", "latency_ms": 300, "venue": "okx", "endpoint": "create_order"})
    armed: list = []
    when(lambda: state.orders("bybit"),
          lambda: armed.append(world.exchange.faults.add(
              {"kind": "error_4xx", "venue": "bybit", "endpoint": "create_order", "code": code})))

    result = HEDGE.job.execute_in_process(instance=instance, resources=_resources(),
                                          run_config={"max_notional_per_market_usd": 40_000.0}, raise_on_error=False)

    # The run fails at the pivot: the second leg was refused by okx.
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type is DagsterEventType.STEP_FAILURE]
    assert failure.step_key == PLACE and "refused by okx" in failure.event_specific_data.error.message
    (refusal,) = armed
    assert refusal.hits == 1  # the unwind was sent once and refused (a refusal is not retried)
    # Nothing pretends the leg was undone: the venue holds only the leg, its position is still open.
    (leg,) = state.orders("bybit")
    assert (leg.side, leg.reduce_only, leg.status) == ("sell", False, "closed") and leg.filled > 0.5
    assert _position(world, "bybit", BTC) == pytest.approx(bybit_before - leg.filled, abs=1e-9)
    assert [o for o in state.orders("okx") if o.type == "market"] == []
    # The saga log: the compensation failed, with the venue's code; the step is not compensated.
    saga = InstanceSagaLog(instance).load(result.run_id)
    assert RecordKind.COMPENSATION_FAILED in [r.kind for r in saga.records]
    assert RecordKind.STEP_COMPENSATED not in [r.kind for r in saga.records]
    place = saga.step(PLACE)
    assert not place.compensated and place.compensation_failures == 1 and code in place.last_compensation_error
    assert decide(HEDGE.definition, saga).verdict is Verdict.COMPENSATE  # still owed, not done
    # The risk mail says so, and nothing says "rolled back".
    (mail,) = world.smtp.wait_for(1, timeout=10)
    assert "COMPENSATION FAILED" in mail.subject and PLACE in mail.subject
    assert f"Still NOT undone (newest first): {PLACE}" in mail.body and code in mail.body

    # Recovery: the venue keeps refusing. Each sweep retries the unwind (refused again, nothing applied)
    # and never marks it done; at max_compensation_attempts the saga is escalated.
    attempts = HEDGE.definition.max_compensation_attempts
    for _ in range(attempts - 1):
        _sweep(instance)
        saga = InstanceSagaLog(instance).load(result.run_id)
        assert not saga.step(PLACE).compensated and RecordKind.STEP_COMPENSATED not in [r.kind for r in saga.records]
        if saga.escalated:
            break
    assert saga.escalated and decide(HEDGE.definition, saga).verdict is Verdict.ESCALATED
    assert saga.step(PLACE).compensation_failures == attempts and refusal.hits == attempts
    assert f"compensation of {PLACE} failed {attempts} times" in saga.escalation_reason
    subjects = [m.subject for m in world.smtp.wait_for(attempts + 1, timeout=10)]
    assert sum("COMPENSATION FAILED" in s for s in subjects) == attempts  # every failed try, then ESCALATED once
    assert sum("ESCALATED" in s for s in subjects) == 1
    assert not any("rolled back" in s for s in subjects)
    assert state.orders("bybit") == [leg] and _position(world, "bybit", BTC) == pytest.approx(bybit_before - leg.filled, abs=1e-9)

    # Escalated: a further pass neither retries nor records nor mails anything.
    records = len(saga.records)
    _sweep(instance)
    assert refusal.hits == attempts and len(InstanceSagaLog(instance).load(result.run_id).records) == records
    assert len(world.smtp.messages()) == len(subjects)
