"""Production Wise without a network: webhook signatures (RSA-SHA256 with a key pair made here),
event parsing, the transfer-state board (duplicates, late deliveries, waking a waiter), the
receiver's verdicts; `ProductionWiseResource`'s environments and guards, OAuth tokens (cached,
refreshed once on 401), SCA on funding turned into `FundingRequiresHumanError` (never retried),
and the webhook-first wait with polling as the fallback."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from arb_orchestration.resources.errors import BusinessError
from arb_orchestration.resources.resilience import reset_breakers
from arb_orchestration.resources.wise import TransferNotSettledError
from arb_orchestration.resources.wise_production import (
    WISE_LIVE_URL,
    WISE_SANDBOX_URL,
    FundingRequiresHumanError,
    ProductionWiseResource,
)
from arb_orchestration.resources.wise_webhooks import (
    TransferStateBoard,
    TransferStateChange,
    WiseWebhookReceiver,
    parse_transfer_state_change,
    verify_signature,
    wait_for_transfer_state,
)


@pytest.fixture(scope="module")
def keys():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, other, public_pem


def _sign(key, body: bytes) -> str:
    return base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()


def _event(transfer_id=111, current="processing", previous="incoming_payment_waiting", occurred="2026-01-01T12:34:56.789Z", **extra) -> bytes:
    return json.dumps({
        "data": {"resource": {"type": "transfer", "id": transfer_id, "profile_id": 222, "account_id": 333},
                 "current_state": current, "previous_state": previous, "occurred_at": occurred},
        "subscription_id": "01234567-89ab-cdef-0123-456789abcdef", "event_type": "transfers#state-change",
        "schema_version": "4.0.0", "sent_at": "2026-01-01T12:34:57.000Z", **extra,
    }).encode()


# ---------------------------------------------------------------------------- webhooks


def test_signatures_are_checked_against_the_public_key(keys):
    private, other, public_pem = keys
    body = _event()
    assert verify_signature(public_pem, body, _sign(private, body))
    assert not verify_signature(public_pem, body + b" ", _sign(private, body))  # tampered body
    assert not verify_signature(public_pem, body, _sign(other, body))  # someone else's key
    assert not verify_signature(public_pem, body, "not base64 !!")
    assert not verify_signature(public_pem, body, None)


def test_state_change_events_are_parsed_and_others_ignored():
    event = parse_transfer_state_change(_event(), {"X-Delivery-Id": "d-1"})
    assert event.transfer_id == 111 and event.profile_id == 222 and event.current_state == "processing"
    assert event.previous_state == "incoming_payment_waiting" and event.delivery_id == "d-1" and event.occurred_at > 1.7e9
    assert parse_transfer_state_change(_event(), {"X-Test-Notification": "true"}) is None
    assert parse_transfer_state_change(json.dumps({"event_type": "balances#update", "data": {}}).encode()) is None
    with pytest.raises(ValueError):
        parse_transfer_state_change(json.dumps({"event_type": "transfers#state-change", "data": {}}).encode())


def test_the_board_drops_repeats_and_late_deliveries_and_wakes_waiters():
    board = TransferStateBoard()
    sent = TransferStateChange(7, 1, "outgoing_payment_sent", "processing", occurred_at=200.0, delivery_id="a")
    assert board.record(sent)
    assert not board.record(sent)  # the same delivery again
    late = TransferStateChange(7, 1, "processing", "incoming_payment_waiting", occurred_at=100.0, delivery_id="b")
    assert not board.record(late) and board.state(7).current_state == "outgoing_payment_sent"
    assert board.wait_for(8, {"processing"}, timeout=0.05) is None
    threading.Timer(0.1, lambda: board.record(TransferStateChange(8, 1, "processing", None, 300.0, "c"))).start()
    started = time.monotonic()
    assert board.wait_for(8, {"processing"}, timeout=5).delivery_id == "c"
    assert time.monotonic() - started < 2


def test_the_receiver_records_only_verified_deliveries(keys):
    private, other, public_pem = keys
    receiver = WiseWebhookReceiver(public_pem)
    try:
        body = _event(transfer_id=42)
        good = {"X-Signature-SHA256": _sign(private, body), "X-Delivery-Id": str(uuid.uuid4())}
        assert receiver.process_delivery("/wise/webhooks", good, body)[0] == 200
        assert receiver.process_delivery("/wise/webhooks", good, body)[0] == 200  # redelivered: acknowledged, not applied
        forged = _event(transfer_id=43)
        assert receiver.process_delivery("/wise/webhooks", {"X-Signature-SHA256": _sign(other, forged)}, forged)[0] == 400
        assert receiver.process_delivery("/wise/webhooks", {}, forged)[0] == 400
        assert receiver.process_delivery("/elsewhere", good, body)[0] == 404
        assert receiver.board.state(42).current_state == "processing" and receiver.board.state(43) is None
        assert receiver.stats == {"accepted": 1, "duplicates": 1, "rejected": 2, "ignored": 0}
    finally:
        receiver.server_close()


# ---------------------------------------------------------------------------- the resource


def test_environments_choose_the_url_and_live_refuses_anything_else():
    assert ProductionWiseResource(environment="sandbox", api_token="t", profile_id=1).base_url == WISE_SANDBOX_URL
    assert ProductionWiseResource(environment="live", api_token="t", profile_id=1).base_url == WISE_LIVE_URL
    with pytest.raises(ValueError, match="live Wise resource"):
        ProductionWiseResource(environment="live", base_url="http://127.0.0.1:8702", api_token="t", profile_id=1)
    with pytest.raises(ValueError, match="client_id"):
        ProductionWiseResource(environment="sandbox", auth="oauth_refresh_token", profile_id=1)
    with pytest.raises(ValueError, match="base_url"):
        ProductionWiseResource(api_token="t", profile_id=1)
    resource = ProductionWiseResource(environment="sandbox", auth="oauth_refresh_token", client_id="cid",
                                      client_secret="client-secret-xyz", refresh_token="refresh-abc", profile_id=1)
    assert "client-secret-xyz" not in repr(resource) and "refresh-abc" not in repr(resource)


class _FakeWise:
    """Handles requests like Wise would, recording them."""

    def __init__(self, *, sca: bool = False, expire_first: bool = False):
        self.requests: list[httpx.Request] = []
        self.seen: list[tuple[str, str | None]] = []  # (path, Authorization) as sent (requests are reused)
        self.tokens_issued = 0
        self.sca = sca
        self.expire_first = expire_first

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.seen.append((request.url.path, request.headers.get("authorization")))
        path = request.url.path
        if path == "/oauth/token":
            assert request.headers["authorization"].startswith("Basic ")
            self.tokens_issued += 1
            return httpx.Response(200, json={"access_token": f"token-{self.tokens_issued}", "token_type": "bearer", "expires_in": 43199})
        if self.expire_first and request.headers.get("authorization") == "Bearer token-1":
            return httpx.Response(401, json={"error": "invalid_token"})
        if path.endswith("/payments"):
            if self.sca:
                return httpx.Response(403, json={"error": "SCA"}, headers={"x-2fa-approval-result": "REJECTED", "x-2fa-approval": "ott-1"})
            return httpx.Response(403, json={"code": "forbidden", "message": "no"})
        if path == "/v2/profiles":
            return httpx.Response(200, json=[{"id": 1, "type": "BUSINESS", "fullName": "Desk"}, {"id": 2, "type": "PERSONAL", "fullName": "Me"}])
        return httpx.Response(404, json={"code": "not.found"})


def _resource(fake: _FakeWise, **fields) -> ProductionWiseResource:
    reset_breakers()
    defaults = dict(base_url="http://wise.test", api_token="personal-token-123", profile_id=1, max_attempts=3, retry_base_delay=0.0)
    return ProductionWiseResource(**{**defaults, **fields}).with_transport(httpx.MockTransport(fake))


def test_sca_on_funding_is_a_typed_error_that_is_not_retried():
    fake = _FakeWise(sca=True)
    with pytest.raises(FundingRequiresHumanError) as refused:
        _resource(fake).fund_transfer(5551)
    assert refused.value.transfer_id == 5551 and refused.value.profile_id == 1
    assert refused.value.code == "funding_requires_human" and refused.value.has_one_time_token
    assert isinstance(refused.value, BusinessError)
    assert sum(1 for r in fake.requests if r.url.path.endswith("/payments")) == 1
    with pytest.raises(BusinessError) as plain:  # a 403 without the SCA challenge stays a plain refusal
        _resource(_FakeWise(sca=False)).fund_transfer(5552)
    assert not isinstance(plain.value, FundingRequiresHumanError)


def test_oauth_tokens_are_cached_and_refreshed_once_on_401():
    fake = _FakeWise(expire_first=True)
    resource = _resource(fake, api_token="", auth="oauth_refresh_token", client_id="cid", client_secret="csecret", refresh_token="rtoken")
    assert [p.id for p in resource.list_profiles()] == [1, 2]  # token-1 refused, token-2 used
    assert [p.id for p in resource.list_profiles()] == [1, 2]
    assert fake.tokens_issued == 2
    token_form = fake.requests[0].content.decode()
    assert "grant_type=refresh_token" in token_form and "refresh_token=rtoken" in token_form
    assert [auth for path, auth in fake.seen if path == "/v2/profiles"] == [
        "Bearer token-1", "Bearer token-2", "Bearer token-2"
    ]


def test_the_profile_check_names_what_the_token_can_use():
    _resource(_FakeWise()).check_profile()
    with pytest.raises(BusinessError, match=r"profile 2 \(BUSINESS\).*1 \(BUSINESS\), 2 \(PERSONAL\)"):
        _resource(_FakeWise(), profile_id=2).check_profile()


# ---------------------------------------------------------------------------- waiting


class _Transfers:
    """`get_transfer` answers from a list of statuses, one per call (the last one repeats)."""

    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.calls = 0

    def get_transfer(self, transfer_id):
        from arb_orchestration.resources.wise import Transfer

        status = self.statuses[min(self.calls, len(self.statuses) - 1)]
        self.calls += 1
        return Transfer.model_validate({"id": transfer_id, "status": status, "targetAccount": 1, "sourceCurrency": "EUR",
                                        "sourceValue": 10, "targetCurrency": "EUR", "targetValue": 10})


def test_a_webhook_ends_the_wait_long_before_the_next_poll():
    board = TransferStateBoard()
    wise = _Transfers(["processing", "outgoing_payment_sent"])
    threading.Timer(0.1, lambda: board.record(TransferStateChange(9, 1, "outgoing_payment_sent", "processing", time.time(), "x"))).start()
    started = time.monotonic()
    transfer = wait_for_transfer_state(wise, 9, "outgoing_payment_sent", board=board, timeout=60, poll_interval=30)
    assert transfer.status == "outgoing_payment_sent" and time.monotonic() - started < 5 and wise.calls == 2


def test_the_wait_fails_on_a_failed_transfer_and_at_its_deadline():
    with pytest.raises(BusinessError, match="cancelled"):
        wait_for_transfer_state(_Transfers(["cancelled"]), 1, "outgoing_payment_sent", timeout=5, poll_interval=0.01)
    with pytest.raises(TransferNotSettledError):
        wait_for_transfer_state(_Transfers(["processing"]), 1, "outgoing_payment_sent", board=TransferStateBoard(),
                                timeout=0.2, poll_interval=0.05)
