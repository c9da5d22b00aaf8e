"""The rebalance pivot's compensation against the real Wise and exchange simulators (over HTTP, on a real
temporary Dagster instance): a funded Wise leg that Wise still cancels is cancelled and refunded, one past
`funds_converted` stays in flight (docs/wise-api-conformance.md S4, docs/rebalance.md).

Scenario (the `short` world of test_rebalance_saga.py): leg 0 pays bybit 3,000 EUR from the Wise balance,
leg 1 withdraws USDT from binance to okx. The pivot funds the Wise leg first (`commit_order: wise_first`, as
with a personal token), then binance refuses the withdrawal for good (a 4xx: not retried), and the saga rolls
back:

- the Wise transfer is still `processing` (the simulator converts it after half its settle delay, made long
  here): the compensation cancels it (also when the cancel's answer is lost on the way back), the simulator
  refunds it in full (it keeps no fee on a cancel), the mail says cancelled and refunded, and the next
  rebalance is not refused by the `legs_in_flight` guardrail: it runs and verifies;
- the Wise transfer already reached `funds_converted` (a slow withdrawal refusal): no cancel is sent, the leg
  is reported in flight and mailed as before, it is paid out once, and the next rebalance is refused.
"""

from __future__ import annotations

import os
import tempfile
import time

import pytest
from dagster import DagsterEventType, instance_for_test

from arb_orchestration.resources.resilience import reset_breakers
from arb_orchestration.saga import InstanceSagaLog, Verdict, decide
from arb_orchestration_tests.integration.test_rebalance_saga import (  # noqa: F401 - fixtures
    FAST,
    SAGA,
    _books,
    _withdrawals,
    resources_from_env,
    short,
)

pytestmark = pytest.mark.integration

WISE_FIRST = {**FAST, "commit_order": "wise_first"}
REFUSED_WITHDRAWAL = {"kind": "error_4xx", "endpoint": "create_withdrawal", "venue": "binance",
                      "code": "withdrawals_suspended", "message": "withdrawals suspended for maintenance"}


@pytest.fixture
def instance():
    """A fresh instance per test: a saga left in flight here must not block another test's rebalance."""
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp, instance_for_test(temp_dir=tmp) as inst:
        yield inst


@pytest.fixture
def wise_settle(short):
    """Set the Wise simulator's settle delay for one test (funds_converted after half of it)."""
    state = short.wise.state
    before = state.settle_delay

    def set_delay(seconds: float) -> None:
        state.settle_delay = seconds

    yield set_delay
    state.settle_delay = before


def _run(instance, config):
    reset_breakers()
    return SAGA.job.execute_in_process(instance=instance, resources=resources_from_env(), run_config=config,
                                       raise_on_error=False)


def _guardrail(result):
    failure = next((e for e in result.all_events if e.event_type is DagsterEventType.STEP_FAILURE), None)
    if failure is None or failure.event_specific_data.user_failure_data is None:
        return None
    meta = failure.event_specific_data.user_failure_data.metadata.get("arb/guardrail")
    return meta.value if meta is not None else None


def _mail(world, words: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in world.smtp.messages() if words in m.subject]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.parametrize("cancel_answer", ["answered", "lost"])
def test_a_funded_wise_leg_is_cancelled_and_refunded_when_the_withdrawal_fails_for_good(
        short, instance, wise_settle, cancel_answer):
    world = short
    wise_settle(60.0)  # processing for 30 s: the rollback comes well before Wise converts it
    books = _books(world)
    world.exchange.faults.add(REFUSED_WITHDRAWAL)
    if cancel_answer == "lost":  # Wise applies the cancel, the answer never comes back
        world.wise.set_fault("cancel_transfer", "timeout_after_commit", count=1)

    result = _run(instance, WISE_FIRST)

    assert not result.success
    state = InstanceSagaLog(instance).load(result.run_id)
    assert decide(SAGA.definition, state).verdict is Verdict.COMPENSATED
    [transfer] = world.wise.transfers()
    assert transfer["history"][:2] == ["incoming_payment_waiting", "processing"]  # it was funded by the pivot
    assert transfer["status"] == "funds_refunded" and "funds_converted" not in transfer["history"]
    assert world.wise.deliveries == []
    assert _books(world)["wise_balance"] == books["wise_balance"]  # all of it back: the simulator keeps nothing
    assert _books(world)["balances"] == books["balances"] and _withdrawals(world) == []
    commit = state.step("commit_transfers").compensation
    assert commit["cancelled"] == [0] and commit["in_flight"] == [] and commit["not_created"] == [1]
    assert commit["refunded"] == [{"index": 0, "wise_transfer_id": transfer["id"], "amount": transfer["sourceValue"],
                                   "currency": "EUR", "status": "funds_refunded", "refunded": True}]
    assert state.step("prepare_transfers").compensation["in_flight"] == []
    assert world.wise.request_count("cancel_transfer") >= 1
    [mail] = _mail(world, "refunded")
    assert "cancelled, refunded to the Wise balance" in mail.body and "wise->bybit:EUR:SEPA" in mail.body
    assert not [m for m in world.smtp.messages() if "in flight" in m.subject]
    if cancel_answer == "lost":
        return  # the guardrail check below runs once (a full rebalance is the slow part)

    # The next rebalance is not blocked by this saga: nothing of it is in flight. It moves both legs.
    world.exchange.faults.clear()
    wise_settle(0.3)
    wise_before = world.wise.balances()["EUR"]
    again = _run(instance, FAST)
    assert again.success, _guardrail(again)
    later = InstanceSagaLog(instance).load(again.run_id)
    assert later.step("plan_rebalance").result["legs_in_flight"] == []
    assert world.exchange.state.balances("okx")["USDT"].free == pytest.approx(12_000.0)
    assert world.exchange.state.balances("bybit")["EUR"].free == pytest.approx(6_000.0)
    paid = [t for t in world.wise.transfers() if t["status"] == "outgoing_payment_sent"]
    assert len(paid) == 1 and world.wise.balances()["EUR"] == pytest.approx(wise_before - paid[0]["sourceValue"])


def test_a_wise_leg_already_converted_stays_in_flight_and_blocks_the_next_rebalance(short, instance, wise_settle):
    world = short
    wise_settle(0.3)  # converted 0.15 s after funding, paid out at 0.3 s
    wise_before = world.wise.balances()["EUR"]
    world.exchange.faults.add({"kind": "latency", "endpoint": "create_withdrawal", "venue": "binance",
                               "latency_ms": 600})  # the refusal comes after Wise converted the leg
    world.exchange.faults.add(REFUSED_WITHDRAWAL)

    result = _run(instance, WISE_FIRST)

    assert not result.success
    state = InstanceSagaLog(instance).load(result.run_id)
    assert decide(SAGA.definition, state).verdict is Verdict.COMPENSATED
    assert state.step("commit_transfers").compensation == {"cancelled": [], "not_created": [1], "in_flight": [0]}
    assert state.step("prepare_transfers").compensation["in_flight"] == [0]
    assert world.wise.request_count("cancel_transfer") == 0  # past funds_converted: Wise would refuse
    [mail] = _mail(world, "partially committed")
    assert "in flight" in mail.subject and "refunded" not in mail.body
    deadline = time.monotonic() + 10
    while world.wise.transfers()[0]["status"] != "outgoing_payment_sent":
        assert time.monotonic() < deadline, world.wise.transfers()[0]["status"]
        time.sleep(0.05)
    [transfer] = world.wise.transfers()
    assert "funds_converted" in transfer["history"] and [d.amount for d in world.wise.deliveries] == [3_000.0]
    assert world.wise.balances()["EUR"] == pytest.approx(wise_before - transfer["sourceValue"])

    world.exchange.faults.clear()
    books = _books(world)
    blocked = _run(instance, FAST)
    assert not blocked.success and _guardrail(blocked) == "legs_in_flight"
    assert _books(world) == books
