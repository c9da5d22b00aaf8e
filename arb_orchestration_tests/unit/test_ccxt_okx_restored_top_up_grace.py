"""A top-up another process left unknown (`restore_pending_top_up`) that OKX does not show yet is not resent at once.

The earlier attempt may have been sent moments before its process died, and OKX does not document how late a
transfer shows in transfer-state (`TRANSFER_NOT_FOUND_GRACE_SECONDS`, the same grace a client gives its own
ambiguous send). The retry looks once more after the grace: found then, it is counted and nothing is resent; still
not found, it is sent once with the same clientId.
"""

from __future__ import annotations

import pytest

from arb_orchestration.resources.ccxt_venue import TRANSFER_NOT_FOUND_GRACE_SECONDS
from arb_orchestration_tests.unit.test_ccxt_okx_transfer_client_id import TOP_UP, _okx
from arb_orchestration_tests.unit.test_ccxt_withdraw_wallet import ADDRESS

OPERATOR = 1_000.0


def _restored(state_script: list[str], *, applied: bool):
    client, venue = _okx(trading=10_000.0, funding=OPERATOR)
    if applied:  # what the dead process's send did: applied at OKX, 301 moved out of trading
        venue.applied[TOP_UP] = 301.0
        venue.trading -= 301.0
        venue.wallet += 301.0
    venue.state_script = list(state_script)
    slept: list[float] = []
    client._caller.sleep = slept.append
    client.restore_pending_top_up("leg1", 301.0, TOP_UP, wallet_before=OPERATOR)
    return client, venue, slept


def _withdraw(client, events: list):
    return client.withdraw("USDT", 300.0, address=ADDRESS, network="TRC20", idempotency_key="leg1",
                           on_top_up=lambda *event: events.append(event))


def test_a_restored_top_up_not_shown_yet_is_found_after_the_grace_and_not_sent_again():
    client, venue, slept = _restored(["not_found", "success"], applied=True)
    events: list = []
    _withdraw(client, events)
    assert venue.transfer_posts() == [], "the earlier attempt's transfer counted, nothing resent"
    assert sum(slept) >= TRANSFER_NOT_FOUND_GRACE_SECONDS
    assert len(venue.state_lookups()) == 2
    assert events == [("moved", 301.0, TOP_UP, None)]
    assert len(venue.sent("POST", "/asset/withdrawal")) == 1
    assert venue.wallet == pytest.approx(OPERATOR), "the operator's money untouched"


def test_a_restored_top_up_still_not_found_after_the_grace_is_sent_once_with_its_client_id():
    client, venue, slept = _restored(["not_found", "not_found"], applied=False)
    events: list = []
    _withdraw(client, events)
    assert [p["clientId"] for p in venue.transfer_posts()] == [TOP_UP]
    assert sum(slept) >= TRANSFER_NOT_FOUND_GRACE_SECONDS
    assert events == [("sending", 301.0, TOP_UP, OPERATOR), ("moved", 301.0, TOP_UP, None)]
