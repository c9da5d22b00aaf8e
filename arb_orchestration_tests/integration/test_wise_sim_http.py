"""The Wise simulator over real HTTP on loopback: every endpoint's shape, customerTransactionId
idempotency under concurrent requests, cancel before/after funding, REJECTED funding, the state
progression with the payout callback firing exactly once, each fault type, and bearer auth."""

import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from arb_orchestration.sim.wise import WiseSimulator

pytestmark = pytest.mark.integration

TOKEN = "http-sim-token-8c2d41"
IBAN = "NL91ABNA0417164300"


class Recorder:
    """The payout callback: records payouts (thread-safe), accepts known IBANs."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str, float]] = []

    def __call__(self, iban: str, currency: str, amount: float) -> bool:
        with self.lock:
            self.calls.append((iban, currency, amount))
        return iban == IBAN


@pytest.fixture
def payouts():
    return Recorder()


@pytest.fixture
def sim(payouts):
    simulator = WiseSimulator(deliver=payouts, api_token=TOKEN, balances={"EUR": 5000.0, "USD": 100.0}, settle_delay=0.3)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def api(sim):
    with httpx.Client(base_url=sim.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5, verify=False) as client:
        yield client


def quote(api, amount=100.0, source="EUR", target="EUR"):
    response = api.post("/v3/profiles/1001/quotes", json={"sourceCurrency": source, "targetCurrency": target, "sourceAmount": amount})
    assert response.status_code == 200, response.text
    return response.json()


def recipient(api, iban=IBAN, currency="EUR"):
    body = {"profile": 1001, "currency": currency, "type": "iban", "accountHolderName": "Bybit EU", "details": {"legalType": "BUSINESS", "iban": iban}}
    response = api.post("/v1/accounts", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def transfer(api, q, r, cti=None):
    body = {"targetAccount": r["id"], "quoteUuid": q["id"], "customerTransactionId": cti or str(uuid.uuid4()), "details": {"reference": "rebal"}}
    return api.post("/v1/transfers", json=body)


def fund(api, tid):
    return api.post(f"/v3/profiles/1001/transfers/{tid}/payments", json={"type": "BALANCE"})


def wait_status(api, tid, wanted, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        status = api.get(f"/v1/transfers/{tid}").json()["status"]
        if status == wanted or time.monotonic() > deadline:
            return status
        time.sleep(0.02)


def test_every_endpoint_answers_in_wise_shapes(api, sim):
    assert api.get("/v1/profiles").json()[0]["type"] == "BUSINESS"
    profile = api.get("/v2/profiles").json()[0]
    assert profile["id"] == sim.profile_id == 1001
    balances = {b["currency"]: b["amount"]["value"] for b in api.get("/v4/profiles/1001/balances", params={"types": "STANDARD"}).json()}
    assert balances == {"EUR": 5000.0, "USD": 100.0}

    q = quote(api, 250, "EUR", "USD")
    # Only the amount asked for is at the top level (Wise); both are in each payment option.
    assert set(q) >= {"id", "rate", "rateExpirationTime", "paymentOptions", "sourceAmount"} and "targetAmount" not in q
    balance_option = next(o for o in q["paymentOptions"] if o["payIn"] == "BALANCE")
    assert api.get(f"/v3/profiles/1001/quotes/{q['id']}").json()["rate"] == q["rate"]
    assert api.get(f"/v3/profiles/1001/quotes/{uuid.uuid4()}").status_code == 404

    r = recipient(api, currency="USD")
    assert r["details"]["iban"] == IBAN and r["type"] == "iban"
    listed = api.get("/v2/accounts", params={"profile": 1001, "currency": "USD"}).json()
    assert [a["id"] for a in listed["content"]] == [r["id"]]
    assert api.get(f"/v2/accounts/{r['id']}").json()["name"]["fullName"] == "Bybit EU"

    t = transfer(api, q, r).json()
    assert t["status"] == "incoming_payment_waiting" and t["targetValue"] == balance_option["targetAmount"]
    assert api.get(f"/v1/transfers/{t['id']}").json() == t
    assert [x["id"] for x in api.get("/v1/transfers", params={"profile": 1001}).json()] == [t["id"]]
    assert fund(api, t["id"]).json() == {"type": "BALANCE", "status": "COMPLETED", "errorCode": None}

    second = transfer(api, quote(api), recipient(api)).json()
    cancelled = api.put(f"/v1/transfers/{second['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    statuses = api.get("/v1/transfers", params={"profile": 1001, "status": "cancelled"}).json()
    assert [x["id"] for x in statuses] == [second["id"]]


def test_concurrent_repeats_of_one_customer_transaction_id_make_one_transfer(api, sim):
    q, r = quote(api), recipient(api)
    cti = str(uuid.uuid4())
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: transfer(api, q, r, cti), range(8)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["id"] for a in answers}) == 1
    assert len(sim.transfers()) == 1


def test_cancel_is_allowed_before_funding_only(api):
    waiting = transfer(api, quote(api), recipient(api)).json()
    assert api.put(f"/v1/transfers/{waiting['id']}/cancel").json()["status"] == "cancelled"
    assert api.put(f"/v1/transfers/{waiting['id']}/cancel").status_code == 200  # twice is harmless
    assert fund(api, waiting["id"]).status_code == 422  # Wise: transfer.invalid-state

    # Wise cancels until the funds are converted (docs/wise-api-conformance.md S4): once paid out, no more.
    funded = transfer(api, quote(api), recipient(api)).json()
    assert fund(api, funded["id"]).json()["status"] == "COMPLETED"
    assert wait_status(api, funded["id"], "outgoing_payment_sent") == "outgoing_payment_sent"
    refused = api.put(f"/v1/transfers/{funded['id']}/cancel")
    assert refused.status_code == 409 and refused.json()["errors"][0]["code"] == "transfer.cancellation.not.allowed"


def test_funding_beyond_the_balance_is_rejected(api, sim):
    t = transfer(api, quote(api, 6000), recipient(api)).json()
    assert fund(api, t["id"]).json() == {"type": "BALANCE", "status": "REJECTED", "errorCode": "transfer.insufficient_funds"}
    assert sim.balances()["EUR"] == 5000.0
    assert api.get(f"/v1/transfers/{t['id']}").json()["status"] == "incoming_payment_waiting"


def test_full_progression_pays_out_exactly_once_while_clients_poll(api, sim, payouts):
    q, r = quote(api, 1000), recipient(api)
    t = transfer(api, q, r).json()
    seen: list[str] = []
    paid_when_sent: list[int] = []
    ready = threading.Barrier(5)

    def poll():
        # Several clients race the simulator's ticker for the payout; it must still happen once.
        with httpx.Client(base_url=sim.url, headers={"Authorization": f"Bearer {TOKEN}"}, verify=False) as client:
            ready.wait(timeout=5)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                status = client.get(f"/v1/transfers/{t['id']}").json()["status"]
                seen.append(status)
                if status == "outgoing_payment_sent":
                    paid_when_sent.append(len(payouts.calls))
                    return

    pollers = [threading.Thread(target=poll) for _ in range(4)]
    for thread in pollers:
        thread.start()
    ready.wait(timeout=5)
    assert fund(api, t["id"]).json()["status"] == "COMPLETED"
    assert fund(api, t["id"]).status_code == 422  # funding twice: refused (Wise), one debit
    assert sim.balances()["EUR"] == 4000.0
    for thread in pollers:
        thread.join(timeout=6)
    assert {"processing", "outgoing_payment_sent"} <= set(seen)
    assert len(paid_when_sent) == 4 and min(paid_when_sent) == 1  # paid before anyone sees "sent"
    # More ticks of the state machine (what the background ticker runs) move nothing and pay nothing again.
    assert [sim.state.advance() for _ in range(3)] == [0, 0, 0]
    delivered = next(o for o in q["paymentOptions"] if o["payIn"] == "BALANCE")["targetAmount"]  # no top-level one
    assert payouts.calls == [(IBAN, "EUR", delivered)]
    history = next(x for x in sim.transfers() if x["id"] == t["id"])["history"]
    assert history == ["incoming_payment_waiting", "processing", "funds_converted", "outgoing_payment_sent"]


def test_payout_to_an_unknown_iban_bounces_and_refunds(api, sim, payouts):
    t = transfer(api, quote(api, 1000), recipient(api, iban="FR7630006000011234567890189")).json()
    fund(api, t["id"])
    assert wait_status(api, t["id"], "funds_refunded") == "funds_refunded"
    assert sim.balances()["EUR"] == 5000.0
    assert len(payouts.calls) == 1


def test_latency_fault_delays_the_answer(api, sim):
    api.post("/admin/faults", json={"endpoint": "list_profiles", "kind": "latency", "latency": 0.3, "count": 1})
    started = time.monotonic()
    assert api.get("/v2/profiles").status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    api.get("/v2/profiles")
    assert time.monotonic() - started < 0.3  # count=1: gone


def test_error_and_rate_limit_faults(api, sim):
    api.post("/admin/faults", json={"endpoint": "get_quote", "kind": "error", "status": 503, "count": 1})
    api.post("/admin/faults", json={"endpoint": "create_quote", "kind": "rate_limit", "retry_after": 1.5, "count": 1})
    assert api.get(f"/v3/profiles/1001/quotes/{uuid.uuid4()}").status_code == 503
    limited = api.post("/v3/profiles/1001/quotes", json={"sourceCurrency": "EUR", "targetCurrency": "EUR", "sourceAmount": 10})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1.5"
    assert sim.state.snapshot()["quotes"] == 0  # neither was applied
    assert quote(api)["id"]


def test_timeout_after_commit_applies_then_drops_the_connection(api, sim):
    q, r = quote(api), recipient(api)
    api.post("/admin/faults", json={"endpoint": "create_transfer", "kind": "timeout_after_commit", "count": 1})
    cti = str(uuid.uuid4())
    with pytest.raises(httpx.RemoteProtocolError):
        transfer(api, q, r, cti)
    assert sim.state.transfer_by_customer_id(cti) is not None
    assert transfer(api, q, r, cti).json()["customerTransactionId"] == cti  # the retry finds it


def test_timeout_after_commit_with_latency_outlasts_the_client_timeout(api, sim):
    t = transfer(api, quote(api, 100), recipient(api)).json()
    api.post("/admin/faults", json={"endpoint": "fund_transfer", "kind": "timeout_after_commit", "latency": 0.5, "count": 1})
    with pytest.raises(httpx.ReadTimeout):
        api.post(f"/v3/profiles/1001/transfers/{t['id']}/payments", json={"type": "BALANCE"}, timeout=0.2)
    assert sim.balances()["EUR"] == 4900.0  # funded despite the timeout


def test_rate_based_faults_hit_some_requests(api, sim):
    api.post("/admin/faults", json={"endpoint": "list_profiles", "kind": "error", "rate": 0.5})
    codes = [api.get("/v2/profiles").status_code for _ in range(30)]
    assert 0 < codes.count(503) < 30
    assert api.delete("/admin/faults").status_code == 200
    assert {api.get("/v2/profiles").status_code for _ in range(5)} == {200}


def test_reset_forgets_everything(api, sim):
    transfer(api, quote(api), recipient(api))
    api.post("/admin/faults", json={"kind": "error"})
    assert api.post("/admin/reset").status_code == 200
    assert sim.transfers() == [] and sim.faults.list() == []
    assert api.get("/v1/transfers").json() == []


def test_bearer_token_is_required_and_never_logged(sim, caplog):
    caplog.set_level(logging.DEBUG)
    assert httpx.get(f"{sim.url}/v2/profiles").status_code == 401
    assert httpx.get(f"{sim.url}/v2/profiles", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(f"{sim.url}/v2/profiles", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert httpx.get(f"{sim.url}/v2/profiles", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert TOKEN not in caplog.text


def test_stopped_simulator_refuses_connections(payouts):
    simulator = WiseSimulator(deliver=payouts)
    url = simulator.start()
    simulator.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v2/profiles", timeout=1)
