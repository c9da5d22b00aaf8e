"""Production Wise over real loopback HTTP: `ProductionWiseResource` (OAuth refresh-token auth) talks
to a production-shaped gateway in front of the Wise simulator; funding is refused with Wise's SCA
challenge and surfaces as `FundingRequiresHumanError` with nothing paid; a person funds it in "the
app" and `wait_until_funded` sees it; signed `transfers#state-change` webhooks reach the receiver and
end the wait for the payout long before the next poll; forged webhooks are refused; an expired token
is refreshed once; the token and the OAuth secrets appear in no log line."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from arb_orchestration.resources.errors import BusinessError
from arb_orchestration.resources.resilience import reset_breakers
from arb_orchestration.resources.wise import SENT, WAITING
from arb_orchestration.resources.wise_production import FundingRequiresHumanError, ProductionWiseResource
from arb_orchestration.resources.wise_webhooks import WiseWebhookReceiver, wait_for_transfer_state
from arb_orchestration.sim.wise import WiseSimulator
from arb_orchestration.sim.wise_production import WiseProductionGateway, WiseWebhookEmitter

pytestmark = pytest.mark.integration

IBAN = "LT601010012345678901"
CLIENT_ID, CLIENT_SECRET, REFRESH = "desk-client", "client-secret-5e1f0c", "refresh-token-9a7b3d"


def _pem_pair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


@pytest.fixture(scope="module")
def wise_world():
    wise_private, wise_public = _pem_pair()
    forger_private, _ = _pem_pair()
    sim = WiseSimulator(deliver=lambda iban, currency, amount: True, api_token="upstream-token-1", settle_delay=0.6)
    sim.start()
    gateway = WiseProductionGateway(sim.url, "upstream-token-1", client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                                    refresh_token=REFRESH)
    gateway.start()
    receiver = WiseWebhookReceiver(wise_public)
    receiver.start()
    emitter = WiseWebhookEmitter(sim, receiver.url, wise_private, deliver_twice=True).start()
    yield {"sim": sim, "gateway": gateway, "receiver": receiver, "emitter": emitter, "forger_key": forger_private}
    emitter.stop()
    receiver.stop()
    gateway.stop()
    sim.stop()


def _resource(gateway) -> ProductionWiseResource:
    reset_breakers()
    return ProductionWiseResource(base_url=gateway.url, auth="oauth_refresh_token", client_id=CLIENT_ID,
                                  client_secret=CLIENT_SECRET, refresh_token=REFRESH, profile_id=1001,
                                  poll_interval_seconds=0.1, retry_base_delay=0.02)


def _unfunded_transfer(wise: ProductionWiseResource, key: str, amount: float = 2_500.0):
    quote = wise.create_quote("EUR", "EUR", amount)
    recipient = wise.create_recipient("EUR", IBAN, "Venue Treasury UAB")
    return wise.create_transfer(quote.id, recipient.id, key, reference="rebalance drill")


def test_funding_needs_a_human_then_webhooks_carry_the_payout(wise_world, caplog):
    sim, gateway, receiver = wise_world["sim"], wise_world["gateway"], wise_world["receiver"]
    with caplog.at_level(logging.DEBUG):
        wise = _resource(gateway)
        wise.check_profile()  # the token acts for the BUSINESS profile 1001
        transfer = _unfunded_transfer(wise, "saga-7/leg-0")
        balance_before = sim.balances()["EUR"]
        with pytest.raises(FundingRequiresHumanError) as refused:
            wise.fund_transfer(transfer.id)
        assert refused.value.transfer_id == transfer.id and refused.value.code == "funding_requires_human"
        assert gateway.stats["sca_challenges"] == 1  # asked once: a business error is not retried
        assert wise.get_transfer(transfer.id).status == WAITING and sim.balances()["EUR"] == balance_before

        # A person funds it in the Wise app a moment later; the parked saga sees it.
        threading.Timer(0.3, gateway.fund_as_human, args=(1001, transfer.id)).start()
        funded = wise.wait_until_funded(transfer.id, timeout=10, poll_interval=0.1)
        assert funded.status != WAITING and sim.balances()["EUR"] == pytest.approx(balance_before - transfer.source_value)

        started = time.monotonic()
        sent = wait_for_transfer_state(wise, transfer.id, SENT, board=receiver.board, timeout=20, poll_interval=30)
        assert sent.status == SENT and time.monotonic() - started < 10  # the webhook, not the 30 s poll
    event = receiver.board.state(transfer.id)
    assert event.current_state == SENT and event.profile_id == 1001
    assert receiver.stats["accepted"] >= 2 and receiver.stats["duplicates"] >= 2  # every delivery came twice
    for secret in (CLIENT_SECRET, REFRESH, "upstream-token-1"):
        assert secret not in caplog.text


def test_forged_webhooks_are_refused(wise_world):
    receiver, emitter = wise_world["receiver"], wise_world["emitter"]
    forger = WiseWebhookEmitter(wise_world["sim"], receiver.url, wise_world["forger_key"])
    try:
        body = forger.event_body(999_999, 1001, SENT, "processing", time.time())
        rejected = receiver.stats["rejected"]
        assert forger.deliver(body) == 400  # signed, but not by Wise's key
        assert emitter.deliver(body, signature="") == 400  # unsigned (this emitter delivers everything twice)
        assert receiver.stats["rejected"] == rejected + 3 and receiver.board.state(999_999) is None
        assert emitter.deliver(body) == 200 and receiver.board.state(999_999).current_state == SENT
    finally:
        forger.stop()


def test_an_expired_token_is_refreshed_once(wise_world):
    gateway = wise_world["gateway"]
    wise = _resource(gateway)
    wise.list_profiles()
    issued = gateway.stats["tokens_issued"]
    gateway.expire_tokens()
    assert [p.id for p in wise.list_profiles()] == [1001]
    assert gateway.stats["tokens_issued"] == issued + 1


def test_a_token_for_another_profile_fails_before_money_moves(wise_world):
    wise = ProductionWiseResource(base_url=wise_world["gateway"].url, auth="oauth_refresh_token", client_id=CLIENT_ID,
                                  client_secret=CLIENT_SECRET, refresh_token=REFRESH, profile_id=4242)
    with pytest.raises(BusinessError) as wrong:
        wise.check_profile()
    assert wrong.value.code == "wrong_profile" and "1001 (BUSINESS)" in str(wrong.value)
