"""`WiseResource` against a fake Wise that answers the way Wise's own API reference (and a recorded
sandbox session) says it does, not the way our simulator used to: a target-amount quote without a
top-level sourceAmount, 4xx bodies as `{"errors": [{code, message, ...}]}` only, a second funding
refused with 422 `transfer.invalid-state`, cancellation allowed until `funds_converted`, and
`GET /v1/transfers` listed oldest first with date-only `createdDateStart`.

Each check is written down, with the page it was checked against, in docs/wise-api-conformance.md.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import date, datetime, timedelta, timezone

import httpx
import pytest

from arb_orchestration.resources.errors import BusinessError
from arb_orchestration.resources.resilience import reset_breakers
from arb_orchestration.resources.wise import WiseResource, customer_transaction_id_for

PROFILE = 28577318


@pytest.fixture(autouse=True)
def fresh_breakers():
    reset_breakers()
    yield
    reset_breakers()


def _transfer(tid: int, status: str, cti: str | None = None, created: str = "2026-11-27 10:00:00") -> dict:
    return {
        "id": tid, "user": 5001, "targetAccount": 700615291, "sourceAccount": None, "quote": None,
        "quoteUuid": "f74a8311-7534-4e0a-851a-f24ad4d37170", "status": status, "reference": "rb",
        "rate": 1.0, "created": created, "business": PROFILE, "transferRequest": None,
        "details": {"reference": "rb"}, "hasActiveIssues": False, "sourceCurrency": "EUR",
        "sourceValue": 100.0, "targetCurrency": "EUR", "targetValue": 100.0,
        "customerTransactionId": cti or str(uuid.uuid4()),
    }


def _errors(status: int, code: str, message: str) -> httpx.Response:
    # Wise's 4xx shape: an `errors` array, no top-level code (API reference "Errors"; recorded sandbox).
    return httpx.Response(status, json={"errors": [{"code": code, "message": message, "arguments": []}]})


class FakeWise:
    """Routes a few Wise endpoints to handlers; records every request."""

    def __init__(self):
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], object] = {}

    def on(self, method: str, pattern: str, handler) -> None:
        self.routes[(method, pattern)] = handler

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            for (method, pattern), handler in self.routes.items():
                if request.method == method and re.fullmatch(pattern, request.url.path):
                    return handler(request)
            return httpx.Response(404, json={"errors": [{"code": "not.found", "message": request.url.path}]})

        return httpx.MockTransport(handle)

    def calls(self, method: str, pattern: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and re.fullmatch(pattern, r.url.path)]


def client(fake: FakeWise, **overrides) -> WiseResource:
    config = dict(base_url="https://wise.invalid", api_token="t0k3n", profile_id=PROFILE,
                  retry_base_delay=0.001, retry_max_delay=0.01)
    config.update(overrides)
    return WiseResource(**config).with_transport(fake.transport())


# ----------------------------------------------------------------------------- quotes


def _target_quote() -> dict:
    # A v3 quote asked for by targetAmount, shaped like a recorded sandbox answer: the top level has
    # targetAmount but no sourceAmount; each payment option has both.
    option = lambda pay_in, source, fee: {  # noqa: E731
        "disabled": False, "payIn": pay_in, "payOut": "BANK_TRANSFER", "sourceAmount": source,
        "targetAmount": 110.00, "sourceCurrency": "GBP", "targetCurrency": "USD",
        "feePercentage": round(fee / source, 4), "estimatedDelivery": "2025-01-06T17:30:00Z",
        "fee": {"transferwise": fee, "payIn": 0.0, "discount": 0, "total": fee, "partner": 0.0},
    }
    return {
        "targetAmount": 110.00, "guaranteedTargetAmountAllowed": False, "targetAmountAllowed": True,
        "preferredPayIn": "BALANCE",
        "paymentOptions": [option("BANK_TRANSFER", 89.94, 1.40), option("BALANCE", 89.77, 1.23)],
        "notices": [], "expirationTime": "2025-01-03T22:43:50Z", "id": "76cd2f29-363c-454e-a33e-d8f40124421c",
        "type": "REGULAR", "status": "PENDING", "profile": PROFILE, "rate": 1.24232, "sourceCurrency": "GBP",
        "targetCurrency": "USD", "createdTime": "2025-01-03T22:13:50Z", "user": 12970746, "rateType": "FIXED",
        "rateExpirationTime": "2025-01-06T08:59:59Z", "payOut": "BANK_TRANSFER", "guaranteedTargetAmount": False,
        "providedAmountType": "TARGET",
    }


def test_a_target_amount_quote_without_a_top_level_source_amount_parses_from_the_balance_option():
    fake = FakeWise()
    fake.on("POST", rf"/v3/profiles/{PROFILE}/quotes", lambda r: httpx.Response(200, json=_target_quote()))
    quote = client(fake).create_quote("GBP", "USD", target_amount=110.0)
    assert quote.source_amount == 89.77  # what the BALANCE option costs, not the bank-transfer one
    assert quote.target_amount == 110.00
    assert quote.fee_total == 1.23
    sent = json.loads(fake.requests[0].content)
    assert sent["targetAmount"] == 110.0 and "sourceAmount" not in sent
    assert sent["preferredPayIn"] == "BALANCE"


# ----------------------------------------------------------------------------- errors


def test_the_error_code_is_read_from_the_errors_array():
    fake = FakeWise()
    fake.on("PUT", r"/v1/transfers/\d+/cancel",
            lambda r: _errors(409, "transfer.cancellation.not.allowed", "Transfer cannot be cancelled"))
    fake.on("GET", r"/v1/transfers/\d+", lambda r: httpx.Response(200, json=_transfer(51, "funds_converted")))
    with pytest.raises(BusinessError) as err:
        client(fake).cancel_transfer(51)
    assert err.value.code == "transfer.cancellation.not.allowed"
    assert "Transfer cannot be cancelled" in str(err.value)


# ----------------------------------------------------------------------------- funding


def test_funding_an_already_funded_transfer_is_taken_as_funded_not_as_a_business_failure():
    # Wise refuses a second funding with 422 transfer.invalid-state ("you can't fund a transfer
    # twice"): after an attempt whose answer was lost, or a person funding it in the app, that
    # refusal means the money is already on its way -- the pivot must not fail and roll back.
    fake = FakeWise()
    fake.on("POST", rf"/v3/profiles/{PROFILE}/transfers/\d+/payments",
            lambda r: _errors(422, "transfer.invalid-state", "Transfer is in invalid state"))
    fake.on("GET", r"/v1/transfers/\d+", lambda r: httpx.Response(200, json=_transfer(52, "processing")))
    payment = client(fake).fund_transfer(52)
    assert payment.completed
    assert len(fake.calls("POST", rf"/v3/profiles/{PROFILE}/transfers/52/payments")) == 1  # never sent again


def test_funding_a_cancelled_transfer_still_fails():
    fake = FakeWise()
    fake.on("POST", rf"/v3/profiles/{PROFILE}/transfers/\d+/payments",
            lambda r: _errors(422, "transfer.invalid-state", "Transfer is in invalid state"))
    fake.on("GET", r"/v1/transfers/\d+", lambda r: httpx.Response(200, json=_transfer(53, "cancelled")))
    with pytest.raises(BusinessError) as err:
        client(fake).fund_transfer(53)
    assert err.value.code == "transfer.invalid-state"


# ----------------------------------------------------------------------------- cancellation


def test_a_lost_cancel_answer_on_a_processing_transfer_sends_the_cancel_again():
    # Wise cancels "up until the transfer has been processed and funds converted": `processing`
    # is still cancellable, so a cancel whose answer was lost is retried, not declared impossible.
    fake = FakeWise()
    attempts = []

    def cancel(request):
        attempts.append(request)
        if len(attempts) == 1:
            raise httpx.ReadTimeout("answer lost", request=request)
        return httpx.Response(200, json=_transfer(54, "cancelled"))

    fake.on("PUT", r"/v1/transfers/\d+/cancel", cancel)
    fake.on("GET", r"/v1/transfers/\d+", lambda r: httpx.Response(200, json=_transfer(54, "processing")))
    transfer = client(fake).cancel_transfer(54)
    assert transfer.status == "cancelled"
    assert len(attempts) == 2


# ----------------------------------------------------------------------------- lookup by customerTransactionId


def test_find_transfer_does_not_assume_newest_first_and_sends_a_date_only_created_date_start():
    # A recorded sandbox listing of GET /v1/transfers came back oldest first; the reference does not
    # state an order. With 250 older transfers, the one we want is on the third page of 100.
    cti = customer_transaction_id_for("saga-7/wise/0")
    rows = [_transfer(60_000 + i, "outgoing_payment_sent") for i in range(250)] + [_transfer(99_999, "incoming_payment_waiting", cti.upper())]
    fake = FakeWise()

    def listing(request):
        offset = int(request.url.params.get("offset", 0))
        limit = int(request.url.params.get("limit", 100))
        return httpx.Response(200, json=rows[offset: offset + limit])

    fake.on("GET", r"/v1/transfers", listing)
    found = client(fake, lookup_max_pages=5).find_transfer("saga-7/wise/0")
    assert found is not None and found.id == 99_999
    starts = {r.url.params.get("createdDateStart") for r in fake.calls("GET", r"/v1/transfers")}
    assert len(starts) == 1
    start = starts.pop()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", start or "")  # the reference's example format: a date
    assert date.fromisoformat(start) <= datetime.now(timezone.utc).date() - timedelta(days=1)


def test_find_transfer_with_created_after_sends_that_day():
    fake = FakeWise()
    fake.on("GET", r"/v1/transfers", lambda r: httpx.Response(200, json=[]))
    after = datetime(2026, 11, 20, 23, 30, tzinfo=timezone.utc)
    assert client(fake).find_transfer("k", created_after=after) is None
    assert fake.calls("GET", r"/v1/transfers")[0].url.params["createdDateStart"] == "2026-11-20"


# ----------------------------------------------------------------------------- a repeated customerTransactionId


def test_a_repeat_refused_with_a_4xx_still_yields_the_transfer_already_created():
    # Wise: a retry with the same customerTransactionId "will not create duplicate transfers"; what
    # the repeat answers is not documented. Should it be a 4xx (code below is hypothetical), the
    # transfer that the first attempt created is looked up and returned instead of failing the step.
    cti = customer_transaction_id_for("saga-9/wise/1")
    first = _transfer(77_001, "incoming_payment_waiting", cti)
    fake = FakeWise()
    fake.on("POST", r"/v1/transfers", lambda r: _errors(409, "transfer.duplicate", "already exists"))
    fake.on("GET", r"/v1/transfers", lambda r: httpx.Response(200, json=[first]))
    transfer = client(fake).create_transfer("f74a8311-7534-4e0a-851a-f24ad4d37170", 700615291, "saga-9/wise/1")
    assert transfer.id == 77_001
    assert len(fake.calls("POST", r"/v1/transfers")) == 1


def test_a_4xx_on_create_with_no_transfer_behind_it_is_raised():
    fake = FakeWise()
    fake.on("POST", r"/v1/transfers", lambda r: _errors(422, "quote.expired", "quote expired"))
    fake.on("GET", r"/v1/transfers", lambda r: httpx.Response(200, json=[]))
    with pytest.raises(BusinessError) as err:
        client(fake).create_transfer("f74a8311-7534-4e0a-851a-f24ad4d37170", 700615291, "saga-9/wise/2")
    assert err.value.code == "quote.expired"
