"""The Wise simulator answers on loopback the way Wise's API reference says Wise does, and
`WiseResource` copes with those answers: a targetAmount quote without a top-level sourceAmount,
4xx bodies carrying only `errors[]`, a second funding refused with 422 `transfer.invalid-state`
(and the client still reporting the transfer funded, paid once), a funded transfer still
`processing` cancelled with its money refunded, the bounce path through `processing` and
`cancelled`, `GET /v1/transfers` oldest first with a date-only `createdDateStart`, and the
recipient listing capped at 20 a page.

The checks and the pages they were checked against: docs/wise-api-conformance.md.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

import httpx
import pytest

from arb_orchestration.resources.errors import BusinessError
from arb_orchestration.resources.resilience import reset_breakers
from arb_orchestration.resources.wise import WiseResource
from arb_orchestration.sim.wise import WiseSimulator

pytestmark = pytest.mark.integration

TOKEN = "conformance-token-4d1a"
IBAN = "DE44500105175407324931"


@pytest.fixture(autouse=True)
def fresh_breakers():
    reset_breakers()
    yield
    reset_breakers()


@pytest.fixture
def sim():
    simulator = WiseSimulator(api_token=TOKEN, balances={"EUR": 10_000.0}, settle_delay=0.2)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def slow_sim():
    # Funded transfers stay `processing` for 30 s: long enough to cancel one.
    simulator = WiseSimulator(api_token=TOKEN, balances={"EUR": 10_000.0}, settle_delay=60.0)
    simulator.start()
    yield simulator
    simulator.stop()


def client(sim, **overrides) -> WiseResource:
    config = dict(base_url=sim.url, api_token=TOKEN, profile_id=sim.profile_id, timeout_seconds=2.0,
                  retry_base_delay=0.01, retry_max_delay=0.05)
    config.update(overrides)
    return WiseResource(**config)


def raw(sim) -> httpx.Client:
    return httpx.Client(base_url=sim.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=2.0)


def new_transfer(wise: WiseResource, amount: float = 100.0, key: str | None = None):
    quote = wise.create_quote("EUR", "EUR", target_amount=amount)
    recipient = wise.create_recipient("EUR", IBAN, "Arb Desk Treasury Ltd")
    return wise.create_transfer(quote.id, recipient.id, key or str(uuid.uuid4()), reference="rb conf")


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_a_target_amount_quote_has_no_top_level_source_amount_and_the_client_reads_the_balance_option(sim):
    quote = client(sim).create_quote("EUR", "USD", target_amount=500)
    with raw(sim) as http:
        body = http.get(f"/v3/profiles/{sim.profile_id}/quotes/{quote.id}").json()
    assert body["providedAmountType"] == "TARGET" and body["targetAmount"] == 500
    assert "sourceAmount" not in body
    balance = next(o for o in body["paymentOptions"] if o["payIn"] == "BALANCE")
    bank = next(o for o in body["paymentOptions"] if o["payIn"] == "BANK_TRANSFER")
    assert balance["fee"]["total"] != bank["fee"]["total"]
    assert quote.target_amount == 500
    assert quote.source_amount == balance["sourceAmount"]
    assert quote.fee_total == balance["fee"]["total"]


def test_error_answers_carry_only_the_errors_array_and_the_client_reads_its_code(sim):
    wise = client(sim)
    transfer = new_transfer(wise)
    wise.fund_transfer(transfer.id)
    wait_for(lambda: wise.get_transfer(transfer.id).status == "outgoing_payment_sent")
    with raw(sim) as http:
        refused = http.put(f"/v1/transfers/{transfer.id}/cancel")
    assert refused.status_code == 409
    assert "code" not in refused.json()
    assert refused.json()["errors"][0]["code"] == "transfer.cancellation.not.allowed"
    with pytest.raises(BusinessError) as err:
        wise.cancel_transfer(transfer.id)
    assert err.value.code == "transfer.cancellation.not.allowed"


def test_a_second_funding_is_refused_with_422_and_the_client_still_reports_one_funded_transfer(sim):
    wise = client(sim)
    transfer = new_transfer(wise, 1000.0)
    before = sim.balances()["EUR"]
    with raw(sim) as http:
        first = http.post(f"/v3/profiles/{sim.profile_id}/transfers/{transfer.id}/payments", json={"type": "BALANCE"})
        second = http.post(f"/v3/profiles/{sim.profile_id}/transfers/{transfer.id}/payments", json={"type": "BALANCE"})
    assert first.status_code == 201 and first.json()["status"] == "COMPLETED"
    assert second.status_code == 422 and second.json()["errors"][0]["code"] == "transfer.invalid-state"

    assert wise.fund_transfer(transfer.id).completed  # a retried pivot: funded already, not a failure
    assert sim.balances()["EUR"] == pytest.approx(before - transfer.source_value)


def test_a_funded_transfer_still_processing_is_cancelled_and_refunded(slow_sim):
    wise = client(slow_sim)
    transfer = new_transfer(wise, 1000.0)
    before = slow_sim.balances()["EUR"]
    wise.fund_transfer(transfer.id)
    assert wise.get_transfer(transfer.id).status == "processing"
    assert slow_sim.balances()["EUR"] == pytest.approx(before - transfer.source_value)

    cancelled = wise.cancel_transfer(transfer.id)
    assert cancelled.status == "cancelled"
    assert wise.get_transfer(transfer.id).status == "funds_refunded"
    assert slow_sim.balances()["EUR"] == pytest.approx(before)
    assert slow_sim.deliveries == []


def test_a_bounced_payout_goes_back_through_processing_and_cancelled_to_funds_refunded():
    with WiseSimulator(deliver=lambda iban, currency, amount: False, api_token=TOKEN,
                       balances={"EUR": 10_000.0}, settle_delay=0.1) as simulator:
        wise = client(simulator)
        transfer = new_transfer(wise, 1000.0)
        wise.fund_transfer(transfer.id)
        wait_for(lambda: wise.get_transfer(transfer.id).status == "funds_refunded")
        history = next(t["history"] for t in simulator.transfers() if t["id"] == transfer.id)
        assert history[-5:] == ["outgoing_payment_sent", "bounced_back", "processing", "cancelled", "funds_refunded"]
        assert simulator.balances()["EUR"] == pytest.approx(10_000.0)


def test_transfers_are_listed_oldest_first_and_found_by_customer_transaction_id_beyond_the_first_page(sim):
    wise = client(sim, lookup_page_size=5, lookup_max_pages=4)
    keys = [f"saga-conformance/wise/{i}" for i in range(12)]
    created = [new_transfer(wise, 10.0 + i, key) for i, key in enumerate(keys)]
    with raw(sim) as http:
        today = datetime.now(timezone.utc).date().isoformat()
        listed = http.get("/v1/transfers", params={"profile": sim.profile_id, "createdDateStart": today,
                                                   "createdDateEnd": today}).json()
    assert [t["id"] for t in listed] == [t.id for t in created]  # oldest first, the day inclusive
    found = wise.find_transfer(keys[-1])
    assert found is not None and found.id == created[-1].id


def test_the_recipient_listing_pages_by_at_most_20(sim):
    wise = client(sim)
    for i in range(25):
        wise.create_recipient("EUR", f"DE4450010517540732{i:04d}", f"Holder {i}", reuse=False)
    with raw(sim) as http:
        page = http.get("/v2/accounts", params={"profileId": sim.profile_id, "size": 100}).json()
    assert page["size"] == 20 and len(page["content"]) == 20 and "seekPositionForNext" in page
    oldest = wise.find_recipient("EUR", "DE44 5001 0517 5407 3200 00", "Holder 0")  # on the second page
    assert oldest is not None and oldest.account_holder_name == "Holder 0"
