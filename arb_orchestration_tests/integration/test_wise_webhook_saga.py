"""`auto_rebalance_saga` parked for a person (production Wise on an EU personal token, SCA refused over real
loopback HTTP) on a real temporary Dagster instance, with Wise polled only every 30 s while parked: a
webhook receiver on loopback records Wise's signed `transfers#state-change` deliveries on the instance's
board, and the saga's wait, reading that board from the run, goes on within about a second of the
person funding the transfer in "the Wise app"; the saga completes (withdrawal, arrival, balances)."""

from __future__ import annotations

import threading
import time

import pytest

from arb_orchestration.resources.wise_webhooks import InstanceWebhookBoard, WiseWebhookReceiver
from arb_orchestration.sim.wise_production import WiseWebhookEmitter
from arb_orchestration_tests.integration.test_rebalance_saga import (  # noqa: F401 - fixtures
    FAST,
    SAGA,
    _assert_rebalanced,
    _instance,
    instance,
    short,
)
from arb_orchestration_tests.integration.test_rebalance_sca import (  # noqa: F401 - fixtures
    _production_resources,
    _transfer_id,
    gateway,
)
from arb_orchestration_tests.integration.test_wise_webhook_receiver import _pem_pair

pytestmark = pytest.mark.integration

SLOW_POLL = 30.0


def test_a_webhook_ends_the_park_long_before_the_next_poll_of_wise(short, instance, gateway):
    world = short
    private, public = _pem_pair()
    wise_before = world.wise.balances()["EUR"]
    seen: dict = {}

    def risk_team_member():
        """Reads the mail; funds the transfer in 'the Wise app' once the saga's wait has looked at it."""
        try:
            [mail] = world.smtp.wait_for(1, timeout=20.0)
            parked_at = time.monotonic() - (time.time() - mail.received_at)  # the mail leaves just before the wait
            deadline = time.monotonic() + 10.0
            while not any(op == "get_transfer" and t > parked_at for t, op, _ in list(world.wise.request_log)):
                assert time.monotonic() < deadline, "the parked saga never read its transfer"
                time.sleep(0.01)
            seen["funded_at"] = time.time()
            seen["funded"] = gateway.fund_as_human(world.wise.profile_id, _transfer_id(mail.subject))
        except Exception as exc:  # surfaced by the assertions below
            seen["error"] = exc

    with WiseWebhookReceiver(public, InstanceWebhookBoard(instance)) as receiver, \
            WiseWebhookEmitter(world.wise, receiver.url, private, poll_interval=0.05):
        person = threading.Thread(target=risk_team_member, daemon=True)
        person.start()
        started = time.monotonic()
        result = SAGA.job.execute_in_process(
            instance=instance, resources=_production_resources(gateway, world), raise_on_error=False,
            run_config={**FAST, "human_funding_poll_seconds": SLOW_POLL, "human_funding_timeout_seconds": 60.0},
        )
        took = time.monotonic() - started
        person.join(timeout=5.0)
        accepted = receiver.stats["accepted"]
    assert "error" not in seen, seen.get("error")
    assert result.success
    _assert_rebalanced(world, wise_before)
    assert took < SLOW_POLL, f"the saga took {took:.1f}s: it waited for the poll, not the webhook"

    # The park ended on the webhook: "funded by hand" is reported within about a second of the funding.
    [funded_event] = [e for e in instance.all_logs(result.run_id)
                      if e.step_key == "commit_transfers" and e.message.startswith("funded by hand in the Wise app")]
    assert funded_event.timestamp - seen["funded_at"] < 2.0, funded_event.timestamp - seen["funded_at"]
    [transfer] = world.wise.transfers()
    assert InstanceWebhookBoard(instance).state(transfer["id"]).current_state == "outgoing_payment_sent"
    assert accepted >= 3  # funded, converted, sent (each verified, recorded once)
