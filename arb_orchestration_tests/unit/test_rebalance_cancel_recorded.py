"""Compensating `prepare_transfers` when Wise's customerTransactionId search misses the transfer.

The search only looks through recent transfers. The step notes each Wise
transfer's id the moment it exists, so the compensation reads it by id instead
of calling it absent and leaving an unfunded transfer open.
"""

from __future__ import annotations

import pytest

from arb_orchestration.resources.wise import CANCELLED
from arb_orchestration.saga import compensate
from arb_orchestration_tests.unit.test_rebalance_steps import (
    SAGA,
    STEPS,
    FakeExchange,
    FakeJournal,
    FakeMail,
    FakeWise,
    _config,
    _run,
    prepare_dies_after_the_wise_leg,
)


@pytest.fixture
def world():
    exchange = FakeExchange()
    wise = FakeWise(exchange)
    wise.find_transfer = lambda key: None  # the transfer fell out of the searched window
    return {"exchange": exchange, "wise": wise, "smtp": FakeMail(), "rebalance_journal": FakeJournal()}


def test_a_transfer_the_search_misses_is_cancelled_by_its_recorded_id_after_prepare_died(world):
    log = prepare_dies_after_the_wise_leg(world)

    compensate(SAGA, "saga-1", log=log, resources=world, config=_config())

    assert [t["status"] for t in world["wise"].transfers.values()] == [CANCELLED]
    assert log.load("saga-1").step("prepare_transfers").compensation == {"cancelled": [0], "absent": [], "in_flight": []}


def test_a_transfer_the_search_misses_is_cancelled_by_id_from_the_finished_step(world):
    world["exchange"].auto_complete = False
    log = _run(world, steps=STEPS[:2])  # plan + prepare finished: the result holds the transfer id
    compensate(SAGA, "saga-1", log=log, resources=world, config=_config())
    assert [t["status"] for t in world["wise"].transfers.values()] == [CANCELLED]
    assert log.load("saga-1").step("prepare_transfers").compensation["cancelled"] == [0]
