"""The Wise refund follow-up sensor against the real Wise simulator and SMTP sink (HTTP and SMTP on loopback),
on a real temporary Dagster instance, after a real rebalance saga rolled back (docs/refund-followup.md).

Scenario (the `short` world of test_rebalance_saga.py, as in test_rebalance_cancel_funded_wise_sim.py): the
pivot funds the Wise leg first, binance refuses the withdrawal for good, and the pivot's compensation cancels
the funded Wise transfer. The simulator holds the refund (`refund_delay`, a documented test hook), so the
saga records the leg as refund pending (its wait is shortened here) and mails "refund pending". Then
`wise_refund_followup_sensor` ticks (`build_sensor_context`, the platform's `WiseResource`/`SmtpResource`):

- the simulator refunds a moment later: exactly one "refund arrived" mail over several ticks, also after
  the cursor is lost;
- the simulator never refunds: exactly one escalation once the (tiny) deadline has passed.
"""

from __future__ import annotations

import math
import time

import pytest
from dagster import build_sensor_context

from arb_orchestration.defs.rebalance import steps
from arb_orchestration.defs.rebalance.refunds import build_wise_refund_followup_sensor
from arb_orchestration.domain.rebalance import format_amount
from arb_orchestration.saga import InstanceSagaLog
from arb_orchestration_tests.integration.test_rebalance_cancel_funded_wise_sim import (  # noqa: F401 - fixtures
    REFUSED_WITHDRAWAL,
    WISE_FIRST,
    _run,
    instance,
    wise_settle,
)
from arb_orchestration_tests.integration.test_rebalance_saga import resources_from_env, short  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
def rolled_back(short, instance, wise_settle, monkeypatch):
    """Run a saga whose pivot rolls back a funded Wise leg; returns a function holding the refund for `delay` s."""
    monkeypatch.setattr(steps, "REFUND_WAIT_SECONDS", 0.2)  # the saga's own wait: 10 s in production
    world = short

    def run(refund_delay: float):
        wise_settle(60.0)  # processing for 30 s: the rollback comes well before Wise converts it
        world.wise.state.refund_delay = refund_delay
        world.exchange.faults.add(REFUSED_WITHDRAWAL)
        result = _run(instance, WISE_FIRST)
        assert not result.success
        [refund] = InstanceSagaLog(instance).load(result.run_id).step("commit_transfers").compensation["refunded"]
        assert refund["refunded"] is False and refund["status"] == "cancelled"  # refund pending
        assert _subjects(world, "refund pending")  # the saga's own mail
        return result, refund

    yield run
    world.wise.state.refund_delay = 0.0


def _subjects(world, words: str) -> list[str]:
    return [m.subject for m in world.smtp.messages() if words in m.subject]


def _tick(sensor, instance, cursor):
    resources = resources_from_env()
    with build_sensor_context(instance=instance, cursor=cursor,
                              resources={"wise": resources["wise"], "smtp": resources["smtp"]}) as context:
        result = sensor(context)
    return result.skip_reason.skip_message, result.cursor


def test_a_refund_the_simulator_makes_later_is_mailed_exactly_once(short, instance, rolled_back):
    world = short
    result, refund = rolled_back(refund_delay=1.0)
    sensor = build_wise_refund_followup_sensor(alert_after_seconds=3600.0)

    message, cursor = _tick(sensor, instance, None)
    assert "1 new refund leg(s)" in message and "1 still pending" in message and "mailed 0" in message
    deadline = time.monotonic() + 10
    while not _subjects(world, "refund arrived"):
        assert time.monotonic() < deadline, message
        time.sleep(0.2)
        message, cursor = _tick(sensor, instance, cursor)
    assert "1 refunded" in message and "mailed 1" in message
    for lost in (cursor, cursor, None):  # more ticks, and one with the cursor lost
        message, cursor = _tick(sensor, instance, lost)
        assert "0 open" in message and "mailed 0" in message
    token = world.secrets.wise_api_token
    assert token not in message and not [m for m in world.smtp.messages() if token in m.subject + m.body]

    [mail] = [m for m in world.smtp.messages() if "refund arrived" in m.subject]
    transfer_id = refund["wise_transfer_id"]
    amount = f"{format_amount('EUR', refund['amount'])} EUR"  # what left the balance: 3,000 plus Wise's fee
    assert refund["amount"] > 3000 and str(transfer_id) in mail.subject and amount in mail.subject
    assert result.run_id in mail.subject and result.run_id in mail.body  # the saga id is its first run's id
    assert [t["status"] for t in world.wise.transfers()] == ["funds_refunded"]
    assert world.wise.request_count("get_transfer") >= 2


def test_a_refund_that_never_comes_is_escalated_exactly_once(short, instance, rolled_back):
    world = short
    rolled_back(refund_delay=math.inf)
    sensor = build_wise_refund_followup_sensor(alert_after_seconds=1.0)

    cursor = None
    deadline = time.monotonic() + 10
    while not _subjects(world, "ESCALATION"):
        assert time.monotonic() < deadline
        message, cursor = _tick(sensor, instance, cursor)
        time.sleep(0.25)
    for lost in (cursor, cursor, None):
        message, cursor = _tick(sensor, instance, lost)
        assert "1 still pending" in message and "mailed 0" in message
    [mail] = [m for m in world.smtp.messages() if "ESCALATION" in m.subject]
    assert "still not refunded" in mail.body and "cancelled" in mail.body
    assert not _subjects(world, "refund arrived")

    # The refund arrives after all: one more mail, then silence.
    assert world.wise.state.release_refunds() == 1
    message, cursor = _tick(sensor, instance, cursor)
    assert "mailed 1" in message
    _tick(sensor, instance, cursor)
    assert len(_subjects(world, "refund arrived")) == 1 and len(_subjects(world, "ESCALATION")) == 1
