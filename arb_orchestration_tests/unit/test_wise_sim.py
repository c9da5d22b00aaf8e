"""The Wise simulator without sockets: quote maths, recipients, transfer idempotency, funding,
cancellation, the state machine driven by a fake clock, payouts, fault selection, and the
request dispatcher (auth, routing, validation, faults) called in-process."""

import json
import uuid

import pytest

from arb_orchestration.sim.wise import (
    BOUNCED_BACK,
    CANCELLED,
    FUNDS_CONVERTED,
    FUNDS_REFUNDED,
    PROCESSING,
    SENT,
    WAITING,
    FaultBook,
    WiseApiError,
    WiseSimulator,
    WiseState,
)

PROFILE = 1001
IBAN = "DE89 3704 0044 0532 0130 00"


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Payouts:
    """A PayoutSink that records what it is paid, and can refuse."""

    def __init__(self, accept: bool = True):
        self.accept = accept
        self.calls: list[tuple[str, str, float]] = []

    def deliver(self, iban: str, currency: str, amount: float) -> bool:
        self.calls.append((iban, currency, amount))
        return self.accept


def make_state(settle_delay=10.0, balances=None, deliver=None):
    clock = FakeClock()
    state = WiseState(
        deliver=deliver,
        balances=balances if balances is not None else {"EUR": 10_000.0, "USD": 0.0},
        settle_delay=settle_delay,
        clock=clock,
    )
    return state, clock


def new_transfer(state, amount=1000.0, source="EUR", target="EUR", cti=None):
    quote = state.create_quote(PROFILE, source, target, source_amount=amount)
    recipient = state.create_recipient(PROFILE, target, "Kraken EU", IBAN)
    transfer, created = state.create_transfer(recipient.id, quote.id, cti or str(uuid.uuid4()), "rebalance")
    assert created
    return transfer


# --------------------------------------------------------------------------- quotes


def test_same_currency_quote_charges_the_fixed_fee_at_rate_one():
    state, clock = make_state()
    quote = state.create_quote(PROFILE, "EUR", "EUR", source_amount=1000)
    assert quote.rate == 1.0
    assert quote.fee == 0.39
    assert quote.target_amount == pytest.approx(999.61)
    body = quote.to_json()
    assert body["rateExpirationTime"] > body["createdTime"]
    balance_option = next(o for o in body["paymentOptions"] if o["payIn"] == "BALANCE")
    assert balance_option["fee"]["total"] == 0.39
    assert balance_option["feePercentage"] == pytest.approx(0.0004, abs=1e-4)
    uuid.UUID(body["id"])  # a GUID, like Wise's


def test_cross_currency_quote_by_target_amount_delivers_exactly_that_amount():
    state, _ = make_state()
    quote = state.create_quote(PROFILE, "EUR", "USD", target_amount=1085.0)
    assert quote.target_amount == 1085.0
    assert quote.provided_amount_type == "TARGET"
    # What is converted (source minus fee) at the locked rate is the target amount.
    assert (quote.source_amount - quote.fee) * quote.rate == pytest.approx(1085.0, abs=0.02)
    assert 1.08 < quote.rate < 1.09


def test_quotes_are_deterministic_for_a_seed():
    first, _ = make_state()
    second, _ = make_state()
    a = first.create_quote(PROFILE, "EUR", "USD", source_amount=500)
    b = second.create_quote(PROFILE, "EUR", "USD", source_amount=500)
    assert (a.id, a.rate) == (b.id, b.rate)


@pytest.mark.parametrize(
    "kwargs, code",
    [
        ({"source_amount": 10, "target_amount": 10}, "amount.invalid"),
        ({}, "amount.invalid"),
        ({"source_amount": -5}, "amount.invalid"),
        ({"source_amount": 0.2}, "amount.too_small"),
    ],
)
def test_quote_validation(kwargs, code):
    state, _ = make_state()
    with pytest.raises(WiseApiError) as err:
        state.create_quote(PROFILE, "EUR", "EUR", **kwargs)
    assert err.value.status == 422 and err.value.code == code


def test_quote_for_unknown_profile_or_currency_is_refused():
    state, _ = make_state()
    with pytest.raises(WiseApiError) as err:
        state.create_quote(999, "EUR", "EUR", source_amount=10)
    assert err.value.status == 404
    with pytest.raises(WiseApiError) as err:
        state.create_quote(PROFILE, "EUR", "XYZ", source_amount=10)
    assert err.value.code == "currency.not_supported"


# ------------------------------------------------------------------------ transfers


def test_repeated_customer_transaction_id_returns_the_first_transfer():
    state, _ = make_state()
    quote = state.create_quote(PROFILE, "EUR", "EUR", source_amount=100)
    recipient = state.create_recipient(PROFILE, "EUR", "Kraken EU", IBAN)
    cti = str(uuid.uuid4())
    first, created_first = state.create_transfer(recipient.id, quote.id, cti, "ref")
    again, created_again = state.create_transfer(recipient.id, quote.id, cti.upper(), "ref")
    assert created_first and not created_again
    assert again.id == first.id
    assert len(state.list_transfers()) == 1


def test_a_quote_serves_one_transfer_only():
    state, _ = make_state()
    quote = state.create_quote(PROFILE, "EUR", "EUR", source_amount=100)
    recipient = state.create_recipient(PROFILE, "EUR", "Kraken EU", IBAN)
    state.create_transfer(recipient.id, quote.id, str(uuid.uuid4()))
    with pytest.raises(WiseApiError) as err:
        state.create_transfer(recipient.id, quote.id, str(uuid.uuid4()))
    assert err.value.status == 409 and err.value.code == "quote.already.used"


def test_transfer_checks_uuid_expiry_and_currency():
    state, clock = make_state()
    recipient = state.create_recipient(PROFILE, "EUR", "Kraken EU", IBAN)
    quote = state.create_quote(PROFILE, "EUR", "EUR", source_amount=100)
    with pytest.raises(WiseApiError, match="UUID"):
        state.create_transfer(recipient.id, quote.id, "saga-1/step-2")
    usd = state.create_quote(PROFILE, "EUR", "USD", source_amount=100)
    with pytest.raises(WiseApiError) as err:
        state.create_transfer(recipient.id, usd.id, str(uuid.uuid4()))
    assert err.value.code == "account.currency.mismatch"
    clock.now += state.quote_ttl + 1
    with pytest.raises(WiseApiError) as err:
        state.create_transfer(recipient.id, quote.id, str(uuid.uuid4()))
    assert err.value.code == "quote.expired"


def test_funding_debits_once_and_is_idempotent():
    state, _ = make_state()
    transfer = new_transfer(state, 1000)
    assert state.fund_transfer(PROFILE, transfer.id)["status"] == "COMPLETED"
    with pytest.raises(WiseApiError) as err:  # Wise refuses a second funding: 422 transfer.invalid-state
        state.fund_transfer(PROFILE, transfer.id)
    assert (err.value.status, err.value.code) == (422, "transfer.invalid-state")
    assert state.balances()["EUR"] == 9000.0
    assert state.get_transfer(transfer.id).status == PROCESSING


def test_funding_beyond_the_balance_is_rejected_and_leaves_the_transfer_waiting():
    state, _ = make_state(balances={"EUR": 500.0})
    transfer = new_transfer(state, 1000)
    payment = state.fund_transfer(PROFILE, transfer.id)
    assert payment == {"type": "BALANCE", "status": "REJECTED", "errorCode": "transfer.insufficient_funds"}
    assert state.get_transfer(transfer.id).status == WAITING
    assert state.balances()["EUR"] == 500.0
    state.credit("EUR", 600)  # topped up: funding again now works
    assert state.fund_transfer(PROFILE, transfer.id)["status"] == "COMPLETED"
    assert state.balances()["EUR"] == 100.0


def test_cancel_only_before_funding_and_cancel_twice_is_harmless():
    state, clock = make_state()
    unfunded = new_transfer(state)
    assert state.cancel_transfer(unfunded.id).status == CANCELLED
    assert state.cancel_transfer(unfunded.id).status == CANCELLED
    with pytest.raises(WiseApiError) as err:
        state.fund_transfer(PROFILE, unfunded.id)
    assert err.value.status == 422

    # Wise cancels until the funds are converted (docs/wise-api-conformance.md S4).
    funded = new_transfer(state)
    state.fund_transfer(PROFILE, funded.id)
    clock.now += state.settle_delay
    state.advance()
    assert state.get_transfer(funded.id).status not in (WAITING, PROCESSING)
    with pytest.raises(WiseApiError) as err:
        state.cancel_transfer(funded.id)
    assert err.value.status == 409 and err.value.code == "transfer.cancellation.not.allowed"


# -------------------------------------------------------------------- state machine


def test_funded_transfer_progresses_with_time_and_pays_out_exactly_once():
    payouts = Payouts()
    state, clock = make_state(settle_delay=10.0, deliver=payouts)
    transfer = new_transfer(state, 1000)
    clock.now += 100
    state.advance()
    assert state.get_transfer(transfer.id).status == WAITING  # unfunded transfers stay put

    state.fund_transfer(PROFILE, transfer.id)
    clock.now += 4.9
    state.advance()
    assert state.get_transfer(transfer.id).status == PROCESSING
    clock.now += 0.2
    state.advance()
    assert state.get_transfer(transfer.id).status == FUNDS_CONVERTED
    assert payouts.calls == []
    clock.now += 5.0
    state.advance()
    state.advance()
    final = state.get_transfer(transfer.id)
    assert final.status == SENT and final.delivered is True
    assert [s for s, _ in final.history] == [WAITING, PROCESSING, FUNDS_CONVERTED, SENT]
    assert payouts.calls == [(IBAN, "EUR", 999.61)]
    clock.now += 100
    state.advance()
    assert len(payouts.calls) == 1


def test_refused_payout_bounces_and_refunds_the_balance():
    state, clock = make_state(settle_delay=0.0, deliver=Payouts(accept=False))
    transfer = new_transfer(state, 1000)
    state.fund_transfer(PROFILE, transfer.id)  # settle_delay 0: paid out at once
    final = state.get_transfer(transfer.id)
    assert final.status == FUNDS_REFUNDED and final.delivered is False
    assert [s for s, _ in final.history][-5:] == [SENT, BOUNCED_BACK, PROCESSING, CANCELLED, FUNDS_REFUNDED]
    assert state.balances()["EUR"] == 10_000.0


def test_a_failing_callback_bounces_instead_of_losing_money():
    def broken(iban, currency, amount):
        raise RuntimeError("exchange state unavailable")

    state, _ = make_state(settle_delay=0.0, deliver=broken)
    transfer = new_transfer(state, 100)
    state.fund_transfer(PROFILE, transfer.id)
    assert state.get_transfer(transfer.id).status == FUNDS_REFUNDED
    assert state.balances()["EUR"] == 10_000.0
    assert [d.accepted for d in state.deliveries] == [False]


def test_listing_is_oldest_first_and_filters():
    state, clock = make_state()
    first = new_transfer(state, 100)
    clock.now += 60
    second = new_transfer(state, 200)
    state.cancel_transfer(first.id)
    assert [t.id for t in state.list_transfers()] == [first.id, second.id]  # as a recorded sandbox listing
    assert [t.id for t in state.list_transfers(statuses={CANCELLED})] == [first.id]
    assert [t.id for t in state.list_transfers(limit=1, offset=1)] == [second.id]
    assert [t.id for t in state.list_transfers(created_start=clock.now - 30)] == [second.id]
    assert state.list_transfers(profile_id=7) == []


# --------------------------------------------------------------------------- faults


def test_fault_with_count_fires_that_many_times_then_disappears():
    book = FaultBook(seed=1)
    book.add({"endpoint": "create_transfer", "kind": "error", "count": 2})
    assert [len(book.pick("create_transfer")) for _ in range(3)] == [1, 1, 0]
    assert book.pick("get_transfer") == []
    assert book.list() == []


def test_rate_faults_are_reproducible_for_a_seed():
    def pattern(seed):
        book = FaultBook(seed=seed)
        book.add({"endpoint": "*", "kind": "error", "rate": 0.5})
        return [bool(book.pick("get_transfer")) for _ in range(40)]

    assert pattern(3) == pattern(3)
    assert 5 < sum(pattern(3)) < 35


def test_latency_stacks_with_one_terminal_fault_at_most():
    book = FaultBook()
    book.add({"kind": "latency", "latency": 0.1})
    book.add({"kind": "error"})
    book.add({"kind": "rate_limit"})
    assert [f.kind for f in book.pick("get_transfer")] == ["latency", "error"]


@pytest.mark.parametrize(
    "spec",
    [{"kind": "explode"}, {"kind": "error", "endpoint": "nope"}, {"kind": "error", "status": 404}, {"kind": "error", "rate": 2}],
)
def test_bad_fault_specs_are_refused(spec):
    with pytest.raises(WiseApiError):
        FaultBook().add(spec)


# ------------------------------------------------------------------ dispatcher


def request(sim, method, path, body=None, token="tok"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    raw = json.dumps(body).encode() if body is not None else b""
    return sim.serve(method, path, headers, raw, sleep=lambda s: None)


def test_dispatcher_requires_the_bearer_token():
    sim = WiseSimulator(api_token="tok")
    assert request(sim, "GET", "/v2/profiles", token=None).response.status == 401
    assert request(sim, "GET", "/v2/profiles", token="wrong").response.status == 401
    assert request(sim, "GET", "/v2/profiles").response.status == 200
    assert request(sim, "GET", "/v9/nothing").response.status == 404
    assert "tok" not in repr(sim)


def test_dispatcher_validates_bodies():
    sim = WiseSimulator(api_token="tok")
    bad = sim.serve("POST", "/v1/transfers", {"Authorization": "Bearer tok"}, b"not json")
    assert bad.response.status == 400
    missing = request(sim, "POST", "/v1/transfers", {"quoteUuid": "x"})
    assert missing.response.status == 422 and missing.response.body["errors"][0]["path"] == "targetAccount"
    unsupported = request(sim, "POST", "/v1/accounts", {"type": "sort_code", "currency": "GBP"})
    assert unsupported.response.status == 422


def test_dispatcher_faults_error_rate_limit_and_timeout_after_commit():
    sim = WiseSimulator(api_token="tok")
    sim.set_fault("create_quote", "error", count=1, status=502)
    assert request(sim, "POST", "/v3/profiles/1001/quotes", {"sourceCurrency": "EUR", "targetCurrency": "EUR", "sourceAmount": 5}).response.status == 502
    assert sim.state.snapshot()["quotes"] == 0  # a 5xx fault is not applied

    sim.set_fault("create_quote", "rate_limit", count=1, retry_after=2.5)
    limited = request(sim, "POST", "/v3/profiles/1001/quotes", {"sourceCurrency": "EUR", "targetCurrency": "EUR", "sourceAmount": 5})
    assert limited.response.status == 429 and limited.response.headers["Retry-After"] == "2.5"

    sim.set_fault("create_quote", "timeout_after_commit", count=1)
    dropped = request(sim, "POST", "/v3/profiles/1001/quotes", {"sourceCurrency": "EUR", "targetCurrency": "EUR", "sourceAmount": 5})
    assert dropped.drop and dropped.response is None
    assert sim.state.snapshot()["quotes"] == 1  # applied, answer lost
    assert sim.request_count("create_quote") == 3
    assert sim.request_count("create_quote", status=0) == 1


def test_admin_endpoints_manage_faults_balances_and_reset():
    sim = WiseSimulator(api_token="tok", balances={"EUR": 10.0})
    assert request(sim, "POST", "/admin/faults", {"endpoint": "get_transfer", "kind": "latency", "latency": 0.5}).response.status == 201
    assert len(request(sim, "GET", "/admin/faults").response.body) == 1
    assert request(sim, "DELETE", "/admin/faults").response.status == 200
    assert sim.faults.list() == []
    assert request(sim, "POST", "/admin/balances", {"currency": "EUR", "amount": 5}).response.body["balance"] == 15.0
    assert request(sim, "POST", "/admin/faults", {"kind": "nope"}).response.status == 422
    assert request(sim, "POST", "/admin/reset").response.status == 200
    assert sim.balances() == {"EUR": 10.0}
    assert request(sim, "GET", "/admin/state", token="wrong").response.status == 401
