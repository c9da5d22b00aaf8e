"""Review of the Wise funding path at the rebalance pivot (SCA park, cancel at the deadline), on fakes.

A cancel refused at the deadline is read again: only a transfer that is really on its way is taken as
funded. One that a person funded and Wise then refunded or charged back (`funds_refunded`,
`charged_back`: both count as "funded" statuses, and as failed ones) is closed: the pivot must fail as
`human_funding_closed` and create no withdrawal, instead of committing the dead leg and sending the
crypto legs after it (Wise first order).
"""

from __future__ import annotations

import pytest

from arb_orchestration.defs.rebalance.funding import HUMAN_FUNDING_CLOSED
from arb_orchestration.resources.errors import BusinessError
from arb_orchestration_tests.unit.test_rebalance_funding import _step, _world
from arb_orchestration_tests.unit.test_rebalance_steps import _config


@pytest.mark.parametrize("end_state", ["funds_refunded", "charged_back"])
def test_a_cancel_refused_because_the_transfer_was_funded_then_refunded_is_closed_not_funded(end_state):
    resources, log = _world()
    wise = resources["wise"]

    def refused_cancel(tid):  # a person funded it at the last moment, and Wise refunded it at once
        wise.fund_by_hand(tid)
        wise.transfers[tid]["status"] = end_state
        raise BusinessError("transfer.cancellation.not.allowed")

    wise.cancel_transfer = refused_cancel
    config = _config(human_funding_timeout_seconds=0.02, human_funding_poll_seconds=0.001)
    for name in ("plan_rebalance", "prepare_transfers"):
        _step(resources, log, name, config)
    with pytest.raises(BusinessError) as failed:
        _step(resources, log, "commit_transfers", config)
    assert failed.value.code == HUMAN_FUNDING_CLOSED
    assert resources["exchange"].withdrawals() == []  # nothing irreversible after a dead Wise leg
    progress = log.load("saga-1").step("commit_transfers").progress
    assert not [n for n in progress if "committed" in n]
