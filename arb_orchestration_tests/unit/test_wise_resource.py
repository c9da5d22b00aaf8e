"""`WiseResource` without sockets: response models parsed from Wise-shaped JSON, the
customerTransactionId derivation, and the client's reconcile/retry/breaker decisions against
the simulator served in-process through an httpx transport."""

import logging
import uuid

import httpx
import pytest

from arb_orchestration.resources.errors import BusinessError, CircuitOpenError, NotFoundError, TransientError
from arb_orchestration.resources.resilience import breaker_for, reset_breakers
from arb_orchestration.resources.wise import (
    Payment,
    Profile,
    Quote,
    Recipient,
    Transfer,
    TransferNotSettledError,
    WiseResource,
    customer_transaction_id_for,
)
from arb_orchestration.sim.wise import WiseSimulator

TOKEN = "unit-token-5f1c9e"
IBAN = "LT12 1000 0111 0100 1000"


@pytest.fixture(autouse=True)
def fresh_breakers():
    reset_breakers()
    yield
    reset_breakers()


def make(sim: WiseSimulator, **overrides) -> WiseResource:
    config = dict(base_url="http://wise.invalid", api_token=TOKEN, profile_id=sim.profile_id, retry_base_delay=0.001, retry_max_delay=0.01)
    config.update(overrides)
    return WiseResource(**config).with_transport(sim.mock_transport(sleep=lambda s: None))


# --------------------------------------------------------------------------- models

QUOTE_JSON = {
    "id": "11144c35-9fe8-4c32-b7fd-d05c2a7734bf",
    "sourceCurrency": "GBP",
    "targetCurrency": "USD",
    "sourceAmount": 100,
    "targetAmount": 129.24,
    "payOut": "BANK_TRANSFER",
    "preferredPayIn": "BALANCE",
    "rate": 1.30445,
    "createdTime": "2019-04-05T13:18:58Z",
    "rateType": "FIXED",
    "rateExpirationTime": "2019-04-08T13:18:57Z",
    "providedAmountType": "SOURCE",
    "paymentOptions": [
        {"disabled": False, "payIn": "BANK_TRANSFER", "payOut": "BANK_TRANSFER", "feePercentage": 0.0092,
         "estimatedDelivery": "2019-04-08T12:30:00Z", "fee": {"transferwise": 0.92, "payIn": 0, "total": 0.92}},
        {"disabled": True, "payIn": "BALANCE", "payOut": "SWIFT", "fee": {"total": 9.0}},
        {"disabled": False, "payIn": "BALANCE", "payOut": "BANK_TRANSFER", "feePercentage": 0.0071,
         "estimatedDelivery": "2019-04-06T12:30:00Z", "fee": {"transferwise": 0.71, "payIn": 0, "total": 0.71}},
    ],
}

TRANSFER_JSON = {
    "id": 16521632,
    "user": 4342275,
    "targetAccount": 8692237,
    "sourceAccount": None,
    "quote": None,
    "quoteUuid": "8fa9be20-ba43-4b15-abbb-9424e1481050",
    "status": "incoming_payment_waiting",
    "reference": "reference text",
    "rate": 0.89,
    "created": "2017-11-24 10:47:49",
    "business": None,
    "details": {"reference": "Testing"},
    "hasActiveIssues": False,
    "sourceCurrency": "EUR",
    "sourceValue": 0,
    "targetCurrency": "GBP",
    "targetValue": 150,
    "customerTransactionId": "54a6bc09-cef9-49a8-9041-f1f0c654cd88",
}


def test_quote_takes_fee_and_delivery_from_the_balance_payment_option():
    quote = Quote.model_validate(QUOTE_JSON)
    assert (quote.fee_total, quote.fee_percentage, quote.pay_in, quote.pay_out) == (0.71, 0.0071, "BALANCE", "BANK_TRANSFER")
    assert quote.estimated_delivery.isoformat() == "2019-04-06T12:30:00+00:00"
    assert quote.rate_expiration_time.isoformat() == "2019-04-08T13:18:57+00:00"


def test_quote_without_a_usable_payment_option_is_refused():
    options = [o for o in QUOTE_JSON["paymentOptions"] if o["payIn"] != "BALANCE" or o["disabled"]]
    with pytest.raises(ValueError, match="no enabled payment option"):
        Quote.model_validate({**QUOTE_JSON, "paymentOptions": options})


def test_transfer_model_reads_the_documented_shape():
    transfer = Transfer.model_validate(TRANSFER_JSON)
    assert transfer.reference == "Testing"  # details.reference wins over the deprecated field
    assert transfer.created.tzinfo is not None and transfer.created.hour == 10
    assert not transfer.is_funded and not transfer.is_failed
    assert Transfer.model_validate({**TRANSFER_JSON, "status": "funds_converted"}).is_funded
    assert Transfer.model_validate({**TRANSFER_JSON, "status": "cancelled"}).is_failed


def test_recipient_reads_v1_and_v2_shapes():
    v1 = Recipient.model_validate({"id": 1, "profile": 7, "accountHolderName": "A B", "currency": "EUR", "type": "iban", "details": {"iban": IBAN}})
    v2 = Recipient.model_validate({"id": 1, "profileId": 7, "name": {"fullName": "A B"}, "currency": "EUR", "type": "iban", "details": {"iban": IBAN}})
    assert v1 == v2
    assert Profile.model_validate({"id": 3, "type": "business", "details": {"name": "Desk"}}).is_business
    assert Payment.model_validate({"type": "BALANCE", "status": "REJECTED", "errorCode": "transfer.insufficient_funds"}).error_code


def test_customer_transaction_id_is_a_stable_uuid_for_any_key():
    key = "saga-42/step-3"
    assert customer_transaction_id_for(key) == customer_transaction_id_for(key)
    assert customer_transaction_id_for(key) != customer_transaction_id_for("saga-42/step-4")
    uuid.UUID(customer_transaction_id_for(key))
    given = str(uuid.uuid4())
    assert customer_transaction_id_for(given.upper()) == given


def test_token_is_not_in_repr():
    resource = WiseResource(base_url="http://x", api_token=TOKEN, profile_id=1)
    assert TOKEN not in repr(resource) and TOKEN not in str(resource)


# ------------------------------------------------------------ client decisions


def test_recipient_is_reused_for_the_same_iban_and_holder():
    sim = WiseSimulator(api_token=TOKEN)
    wise = make(sim)
    first = wise.create_recipient("EUR", IBAN, "Kraken EU")
    assert wise.create_recipient("EUR", IBAN.replace(" ", ""), "kraken eu").id == first.id
    assert wise.create_recipient("EUR", IBAN, "Someone Else").id != first.id
    assert sim.request_count("create_recipient") == 2


def test_ambiguous_create_transfer_is_reconciled_not_resubmitted():
    sim = WiseSimulator(api_token=TOKEN)
    wise = make(sim)
    quote = wise.create_quote("EUR", "EUR", 100)
    recipient = wise.create_recipient("EUR", IBAN, "Kraken EU")
    sim.set_fault("create_transfer", "timeout_after_commit", count=1)
    transfer = wise.create_transfer(quote.id, recipient.id, "saga-1/pay", "r")
    assert sim.request_count("create_transfer") == 1  # found by lookup: no second POST
    assert sim.request_count("list_transfers") >= 1
    assert [t["id"] for t in sim.transfers()] == [transfer.id]


def test_5xx_on_create_transfer_not_applied_is_retried_with_the_same_id():
    sim = WiseSimulator(api_token=TOKEN)
    wise = make(sim)
    quote = wise.create_quote("EUR", "EUR", 100)
    recipient = wise.create_recipient("EUR", IBAN, "Kraken EU")
    sim.set_fault("create_transfer", "error", count=2)
    transfer = wise.create_transfer(quote.id, recipient.id, "saga-2/pay")
    assert sim.request_count("create_transfer") == 3
    assert len(sim.transfers()) == 1
    assert transfer.customer_transaction_id == customer_transaction_id_for("saga-2/pay")


def test_rejected_funding_is_a_business_error_and_does_not_trip_the_breaker():
    sim = WiseSimulator(api_token=TOKEN, balances={"EUR": 10.0})
    wise = make(sim, breaker_failure_threshold=1)
    quote = wise.create_quote("EUR", "EUR", 100)
    recipient = wise.create_recipient("EUR", IBAN, "Kraken EU")
    transfer = wise.create_transfer(quote.id, recipient.id, "saga-3/pay")
    with pytest.raises(BusinessError) as err:
        wise.fund_transfer(transfer.id)
    assert err.value.code == "transfer.insufficient_funds"
    assert sim.request_count("fund_transfer") == 1
    with pytest.raises(NotFoundError):
        wise.get_transfer(123)
    assert wise.health()["state"] == "closed"


def test_a_business_error_during_the_half_open_probe_closes_the_breaker():
    clock = [0.0]
    sim = WiseSimulator(api_token=TOKEN)
    wise = make(sim, breaker_failure_threshold=1, breaker_reset_seconds=5, max_attempts=1)
    breaker = breaker_for("wise", 1, 5)
    breaker.clock = lambda: clock[0]
    sim.set_fault("get_transfer", "error", count=1)
    with pytest.raises(TransientError) as failed:  # the injected 5xx, sent once: it opens the breaker
        wise.get_transfer(1)
    assert not isinstance(failed.value, CircuitOpenError) and sim.request_count("get_transfer") == 1
    with pytest.raises(CircuitOpenError):
        wise.get_transfer(1)
    assert sim.request_count("get_transfer") == 1  # refused without sending
    clock[0] = 6.0
    with pytest.raises(NotFoundError):  # the probe gets a 404: the service is answering
        wise.get_transfer(1)
    assert sim.request_count("get_transfer") == 2
    assert breaker.state == "closed"
    assert wise.list_profiles()[0].id == sim.profile_id


def test_wait_for_state_fails_fast_on_a_cancelled_transfer_and_times_out_otherwise():
    sim = WiseSimulator(api_token=TOKEN)
    wise = make(sim)
    quote = wise.create_quote("EUR", "EUR", 100)
    recipient = wise.create_recipient("EUR", IBAN, "Kraken EU")
    transfer = wise.create_transfer(quote.id, recipient.id, "saga-4/pay")
    with pytest.raises(TransferNotSettledError):
        wise.wait_for_state(transfer.id, timeout=0.05, poll_interval=0.01)
    wise.cancel_transfer(transfer.id)
    with pytest.raises(BusinessError, match="cancelled"):
        wise.wait_for_state(transfer.id, timeout=5)


def test_token_is_sent_as_bearer_and_never_logged(caplog):
    caplog.set_level(logging.DEBUG)
    seen = []
    sim = WiseSimulator(api_token=TOKEN)
    inner = sim.mock_transport()

    def spy(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return inner.handle_request(request)

    wise = WiseResource(base_url="http://wise.invalid", api_token=TOKEN, profile_id=sim.profile_id).with_transport(httpx.MockTransport(spy))
    wise.list_profiles()
    bad = WiseResource(base_url="http://wise.invalid", api_token="wrong-" + TOKEN, profile_id=sim.profile_id, max_attempts=1).with_transport(sim.mock_transport())
    with pytest.raises(BusinessError) as err:
        bad.list_profiles()
    assert seen == [f"Bearer {TOKEN}"]
    assert TOKEN not in caplog.text and TOKEN not in str(err.value)
