"""`WiseResource` against the Wise simulator over real HTTP: the whole payout flow, retries,
Retry-After, the circuit breaker opening and half-opening, timeout-after-commit on transfer
creation and on funding without duplicates, cancellation as a compensation, a seeded storm of
faults, the resource inside a Dagster run with its token from `EnvVar`, and the token in no log."""

import logging
import threading
import time

import pytest
from dagster import EnvVar, asset, materialize

from arb_orchestration.resources.errors import AmbiguousOutcomeError, BusinessError, CircuitOpenError, TransientError
from arb_orchestration.resources.resilience import reset_breakers
from arb_orchestration.resources.wise import WiseResource, customer_transaction_id_for
from arb_orchestration.sim.wise import WiseSimulator

pytestmark = pytest.mark.integration

TOKEN = "resource-token-93be7a"
IBAN = "DE44500105175407324931"


class Payouts:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str, float]] = []

    def __call__(self, iban, currency, amount):
        with self.lock:
            self.calls.append((iban, currency, amount))
        return True


@pytest.fixture(autouse=True)
def fresh_breakers():
    reset_breakers()
    yield
    reset_breakers()


@pytest.fixture
def payouts():
    return Payouts()


@pytest.fixture
def sim(payouts):
    simulator = WiseSimulator(deliver=payouts, api_token=TOKEN, balances={"EUR": 10_000.0}, settle_delay=0.2)
    simulator.start()
    yield simulator
    simulator.stop()


def client(sim, **overrides) -> WiseResource:
    config = dict(
        base_url=sim.url,
        api_token=TOKEN,
        profile_id=sim.profile_id,
        timeout_seconds=2.0,
        retry_base_delay=0.01,
        retry_max_delay=0.05,
        poll_interval_seconds=0.05,
    )
    config.update(overrides)
    return WiseResource(**config)


def prepared_transfer(wise, key, amount=100.0):
    quote = wise.create_quote("EUR", "EUR", amount)
    recipient = wise.create_recipient("EUR", IBAN, "OKX Europe")
    return wise.create_transfer(quote.id, recipient.id, key, "rebalance")


def test_quote_recipient_transfer_fund_and_settle(sim, payouts):
    wise = client(sim)
    assert wise.list_profiles()[0].is_business
    quote = wise.create_quote("EUR", "EUR", 2500)
    assert quote.fee_total > 0 and quote.target_amount == pytest.approx(2500 - quote.fee_total)
    recipient = wise.create_recipient("EUR", IBAN, "OKX Europe")
    transfer = wise.create_transfer(quote.id, recipient.id, "saga-7/step-2", "rebalance 7")
    assert transfer.status == "incoming_payment_waiting"
    assert wise.create_transfer(quote.id, recipient.id, "saga-7/step-2", "rebalance 7").id == transfer.id
    assert wise.fund_transfer(transfer.id).completed
    settled = wise.wait_for_state(transfer.id, timeout=5)
    assert settled.is_sent and settled.reference == "rebalance 7"
    assert payouts.calls == [(IBAN, "EUR", quote.target_amount)]
    assert wise.balances()["EUR"] == 7500.0
    assert wise.find_transfer("saga-7/step-2").id == transfer.id
    assert wise.find_transfer("saga-7/never") is None


def test_transient_read_errors_are_retried(sim):
    wise = client(sim)
    transfer = prepared_transfer(wise, "saga-8/pay")
    sim.set_fault("get_transfer", "error", count=2, status=502)
    assert wise.get_transfer(transfer.id).id == transfer.id
    assert sim.request_count("get_transfer") == 3


def test_retry_after_is_honoured(sim):
    # The shared policy honours Retry-After up to 4 x retry_max_delay (here 2 s).
    wise = client(sim, retry_max_delay=0.5)
    sim.set_fault("create_quote", "rate_limit", count=1, retry_after=0.6)
    assert wise.create_quote("EUR", "EUR", 50).id
    first, second = sim.request_times("create_quote")
    assert second - first >= 0.55  # far above the 0.01 s backoff: the server's Retry-After won


def test_breaker_opens_fails_fast_then_half_opens(sim):
    wise = client(sim, max_attempts=1, breaker_failure_threshold=2, breaker_reset_seconds=0.4)
    sim.set_fault("list_profiles", "error")
    for _ in range(2):
        with pytest.raises(TransientError):
            wise.list_profiles()
    hits = sim.request_count("list_profiles")
    with pytest.raises(CircuitOpenError):
        wise.list_profiles()
    assert sim.request_count("list_profiles") == hits  # failed fast: nothing was sent

    time.sleep(0.45)  # half-open: one probe goes through, fails, and the breaker reopens
    with pytest.raises(TransientError) as probe:
        wise.list_profiles()
    assert not isinstance(probe.value, CircuitOpenError)
    assert wise.health()["state"] == "open"
    with pytest.raises(CircuitOpenError):
        wise.list_profiles()

    sim.clear_faults()
    time.sleep(0.45)  # half-open again: the probe succeeds and closes it
    assert wise.list_profiles()[0].id == sim.profile_id
    assert wise.health() == {"name": "wise", "state": "closed", "consecutive_failures": 0}


def test_timeout_after_commit_on_create_transfer_creates_no_duplicate(sim):
    wise = client(sim)
    quote = wise.create_quote("EUR", "EUR", 300)
    recipient = wise.create_recipient("EUR", IBAN, "OKX Europe")
    sim.set_fault("create_transfer", "timeout_after_commit", count=1)
    transfer = wise.create_transfer(quote.id, recipient.id, "saga-9/pay")
    assert [t["id"] for t in sim.transfers()] == [transfer.id]
    assert sim.request_count("create_transfer") == 1


def test_read_timeout_after_commit_on_create_transfer_creates_no_duplicate(sim):
    wise = client(sim, timeout_seconds=0.3)
    quote = wise.create_quote("EUR", "EUR", 300)
    recipient = wise.create_recipient("EUR", IBAN, "OKX Europe")
    sim.set_fault("create_transfer", "timeout_after_commit", count=1, latency=0.6)
    transfer = wise.create_transfer(quote.id, recipient.id, "saga-10/pay")
    assert len(sim.transfers()) == 1
    assert transfer.customer_transaction_id == customer_transaction_id_for("saga-10/pay")


def test_timeout_after_commit_on_funding_debits_once(sim, payouts):
    wise = client(sim)
    transfer = prepared_transfer(wise, "saga-11/pay", amount=1000)
    sim.set_fault("fund_transfer", "timeout_after_commit", count=1)
    assert wise.fund_transfer(transfer.id).completed
    assert sim.request_count("fund_transfer") == 1  # reconciled from the transfer's status
    assert wise.fund_transfer(transfer.id).completed  # an explicit second funding is harmless
    wise.wait_for_state(transfer.id, timeout=5)
    assert sim.balances()["EUR"] == 9000.0
    assert len(payouts.calls) == 1


def test_ambiguous_outcome_with_lookups_failing_stays_ambiguous(sim):
    wise = client(sim, max_attempts=2)
    quote = wise.create_quote("EUR", "EUR", 300)
    recipient = wise.create_recipient("EUR", IBAN, "OKX Europe")
    sim.set_fault("create_transfer", "timeout_after_commit", count=1)
    sim.set_fault("list_transfers", "error")
    with pytest.raises(AmbiguousOutcomeError):
        wise.create_transfer(quote.id, recipient.id, "saga-12/pay")
    sim.clear_faults()
    # Later, the saga's recovery asks again with the same key: still exactly one transfer.
    again = wise.create_transfer(quote.id, recipient.id, "saga-12/pay")
    assert [t["id"] for t in sim.transfers()] == [again.id]


def test_cancel_is_the_compensation_before_funding_only(sim):
    wise = client(sim)
    transfer = prepared_transfer(wise, "saga-13/pay")
    sim.set_fault("cancel_transfer", "timeout_after_commit", count=1)
    assert wise.cancel_transfer(transfer.id).status == "cancelled"
    assert wise.cancel_transfer(transfer.id).status == "cancelled"
    funded = prepared_transfer(wise, "saga-14/pay")
    wise.fund_transfer(funded.id)
    # Wise cancels until the funds are converted (docs/wise-api-conformance.md S4): once paid out, no more.
    wise.wait_for_state(funded.id, timeout=5.0, poll_interval=0.02)
    with pytest.raises(BusinessError) as err:
        wise.cancel_transfer(funded.id)
    assert err.value.code == "transfer.cancellation.not.allowed"


def test_insufficient_balance_is_a_business_error_and_the_transfer_can_be_cancelled(sim):
    wise = client(sim)
    transfer = prepared_transfer(wise, "saga-15/pay", amount=20_000)
    with pytest.raises(BusinessError) as err:
        wise.fund_transfer(transfer.id)
    assert err.value.code == "transfer.insufficient_funds"
    assert sim.request_count("fund_transfer") == 1  # not retried
    assert wise.cancel_transfer(transfer.id).status == "cancelled"
    assert sim.balances()["EUR"] == 10_000.0


def test_a_storm_of_seeded_faults_moves_each_payment_exactly_once(sim, payouts):
    wise = client(sim, max_attempts=8, breaker_failure_threshold=50)
    sim.set_fault("*", "error", rate=0.15)
    sim.set_fault("create_transfer", "timeout_after_commit", rate=0.4)
    sim.set_fault("fund_transfer", "timeout_after_commit", rate=0.4)
    sim.set_fault("get_transfer", "rate_limit", rate=0.2, retry_after=0.01)
    ids = []
    for n in range(5):
        transfer = prepared_transfer(wise, f"storm/{n}", amount=100)
        wise.fund_transfer(transfer.id)
        ids.append(transfer.id)
    for tid in ids:
        wise.wait_for_state(tid, timeout=10)
    assert len(sim.transfers()) == 5 and len(set(ids)) == 5
    assert len(payouts.calls) == 5
    assert sim.balances()["EUR"] == 9500.0
    assert sim.request_count(status=0) >= 1  # some answers really were dropped


def test_resource_in_a_dagster_run_reads_its_token_from_env(sim, monkeypatch):
    monkeypatch.setenv("WISE_API_TOKEN", TOKEN)

    @asset
    def fx_quote(wise: WiseResource) -> float:
        return wise.create_quote("EUR", "USD", 1000).rate

    result = materialize(
        [fx_quote],
        resources={"wise": WiseResource(base_url=sim.url, api_token=EnvVar("WISE_API_TOKEN"), profile_id=sim.profile_id)},
    )
    assert result.success
    assert 1.08 < result.output_for_node("fx_quote") < 1.09


def test_token_never_appears_in_logs(sim, caplog):
    caplog.set_level(logging.DEBUG)
    wise = client(sim)
    sim.set_fault("create_transfer", "timeout_after_commit", count=1)
    sim.set_fault("get_transfer", "error", count=1)
    transfer = prepared_transfer(wise, "saga-16/pay")
    wise.get_transfer(transfer.id)
    with pytest.raises(BusinessError):
        client(sim, api_token="bad-" + TOKEN, max_attempts=1).list_profiles()
    assert "ambiguous outcome" in caplog.text  # the logs did record the interesting bits
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(wise)
