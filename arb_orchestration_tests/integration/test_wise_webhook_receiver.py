"""`arb-orchestration wise-webhooks serve` as a real process on loopback, writing into a real temporary
Dagster instance (SQLite) that this test process reads: Wise's transfers come from the Wise simulator
behind the production-shaped gateway (SCA on funding, over HTTP); webhooks are signed with an RSA key
pair made here and delivered over HTTP.

* A person funds a parked transfer; the signed webhook ends `wait_until_funded` within about a second
  although Wise is polled every 30 s, and the wait confirms with one read of the transfer; the same for
  the payout (`wait_for_transfer_state(..., SENT)`).
* Forged and unsigned webhooks are refused (400) and never reach the board; the wait ends at its next
  poll instead.
* Replays and late deliveries are acknowledged (200) and change nothing; `/health` answers from the
  instance.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dagster import instance_for_test

from arb_orchestration.resources.resilience import reset_breakers
from arb_orchestration.resources.wise import SENT, WAITING
from arb_orchestration.resources.wise_production import FundingRequiresHumanError, ProductionWiseResource
from arb_orchestration.resources.wise_webhooks import InstanceWebhookBoard, wait_for_transfer_state
from arb_orchestration.sim.wise import WiseSimulator
from arb_orchestration.sim.wise_production import WiseProductionGateway, WiseWebhookEmitter

pytestmark = pytest.mark.integration

PROFILE = 1001
PERSONAL_TOKEN = "eu-personal-token-77c2"
IBAN = "LT601010012345678901"
SLOW_POLL = 30.0  # Wise's API polling interval in the waits: a webhook must beat it by far


def _pem_pair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


@pytest.fixture(scope="module")
def instance():
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as home, instance_for_test(temp_dir=home) as inst:
        yield inst


@pytest.fixture(scope="module")
def keys():
    wise_private, wise_public = _pem_pair()
    forger_private, _ = _pem_pair()
    return {"wise_private": wise_private, "wise_public": wise_public, "forger_private": forger_private}


@pytest.fixture(scope="module")
def receiver(instance, keys, tmp_path_factory):
    """The receiver process: its own Python, the instance found through DAGSTER_HOME."""
    home = tmp_path_factory.mktemp("receiver")
    pem = home / "wise-webhooks.pem"
    pem.write_bytes(keys["wise_public"])
    env = {**os.environ, "DAGSTER_HOME": instance.root_directory, "PYTHONUNBUFFERED": "1"}
    env.pop("WISE_WEBHOOK_PUBLIC_KEY", None)
    stderr = (home / "stderr.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "arb_orchestration.cli", "wise-webhooks", "serve", "--host", "127.0.0.1", "--port", "0",
         "--public-key", str(pem)],
        env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def drain():
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("listening on "):
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(timeout=45.0):
        proc.kill()
        pytest.fail(f"the receiver did not start: {lines} {(home / 'stderr.log').read_text()[-2000:]}")
    url = lines[-1].split()[2]
    try:
        yield {"url": url, "health": url.rsplit("/wise/webhooks", 1)[0] + "/health", "lines": lines}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "killed"
        stderr.close()
        assert rc == 0, f"receiver exit {rc}: {(home / 'stderr.log').read_text()[-2000:]}"


@pytest.fixture(scope="module")
def wise_world():
    sim = WiseSimulator(deliver=lambda iban, currency, amount: True, api_token="upstream-token-2", settle_delay=2.0)
    sim.start()
    gateway = WiseProductionGateway(sim.url, "upstream-token-2", personal_token=PERSONAL_TOKEN)
    gateway.start()
    yield sim, gateway
    gateway.stop()
    sim.stop()


@pytest.fixture
def wise(wise_world):
    reset_breakers()
    _, gateway = wise_world
    resource = ProductionWiseResource(base_url=gateway.url, environment="custom", auth="personal_token",
                                      api_token=PERSONAL_TOKEN, profile_id=PROFILE, timeout_seconds=5.0,
                                      retry_base_delay=0.02)
    yield resource
    resource.close()


@pytest.fixture
def emitters(wise_world, receiver, keys):
    """Wise's signed deliveries, and a forger's (a valid RSA signature from the wrong key)."""
    sim, _ = wise_world
    wise_emitter = WiseWebhookEmitter(sim, receiver["url"], keys["wise_private"])
    forger = WiseWebhookEmitter(sim, receiver["url"], keys["forger_private"])
    yield wise_emitter, forger
    wise_emitter.stop()
    forger.stop()


class _Waiter(threading.Thread):
    """Runs one wait in the background; records when it ended and how."""

    def __init__(self, wait):
        super().__init__(daemon=True)
        self._wait = wait
        self.result = self.error = self.ended_at = None

    def run(self):
        try:
            self.result = self._wait()
        except Exception as exc:  # asserted by the test
            self.error = exc
        self.ended_at = time.monotonic()


def _parked_transfer(wise: ProductionWiseResource, key: str):
    quote = wise.create_quote("EUR", "EUR", 1_200.0)
    recipient = wise.create_recipient("EUR", IBAN, "Venue Treasury UAB")
    transfer = wise.create_transfer(quote.id, recipient.id, key, reference="webhook drill")
    with pytest.raises(FundingRequiresHumanError):
        wise.fund_transfer(transfer.id)
    return transfer


def _reads(sim) -> int:
    return sim.request_count("get_transfer")


def _await_read(sim, before: int, timeout: float = 10.0) -> None:
    """Until the waiter made its first read of the transfer (so what follows happens during the wait)."""
    deadline = time.monotonic() + timeout
    while _reads(sim) <= before:
        assert time.monotonic() < deadline, "the wait never read the transfer"
        time.sleep(0.01)


def _status(sim, transfer_id: int) -> str:
    return next(t["status"] for t in sim.transfers() if t["id"] == transfer_id)


def _health(receiver) -> dict:
    response = httpx.get(receiver["health"], timeout=5.0)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_receiver_is_healthy_and_reads_the_instance(receiver):
    health = _health(receiver)
    assert health["status"] == "ok" and health["board"] == "InstanceWebhookBoard"
    assert httpx.get(receiver["url"].replace("/wise/webhooks", "/elsewhere"), timeout=5.0).status_code == 404


def test_signed_webhooks_end_the_waits_within_a_second_although_wise_is_polled_every_30_s(
    instance, wise_world, wise, emitters
):
    sim, gateway = wise_world
    wise_emitter, _ = emitters
    board = InstanceWebhookBoard(instance)  # this process's view; the receiver process writes
    transfer = _parked_transfer(wise, f"webhook-drill-{time.time_ns()}")

    # A person funds it "in the Wise app" while the saga waits; Wise then sends the webhook.
    before = _reads(sim)
    waiter = _Waiter(lambda: wise.wait_until_funded(transfer.id, timeout=25.0, poll_interval=SLOW_POLL, board=board))
    waiter.start()
    _await_read(sim, before)
    gateway.fund_as_human(PROFILE, transfer.id)
    assert _status(sim, transfer.id) != WAITING
    reads_before_webhook = _reads(sim)
    body = wise_emitter.event_body(transfer.id, PROFILE, "processing", WAITING, time.time())
    assert wise_emitter.deliver(body) == 200
    delivered = time.monotonic()
    waiter.join(timeout=10.0)
    assert waiter.ended_at is not None, "the webhook did not end the wait (it would have waited for the 30 s poll)"
    assert waiter.error is None and waiter.result is not None and waiter.result.status != WAITING
    assert waiter.ended_at - delivered < 1.5, f"webhook took {waiter.ended_at - delivered:.2f}s to end the wait"
    assert _reads(sim) == reads_before_webhook + 1  # the webhook was confirmed with one read of Wise
    assert board.state(transfer.id).current_state == "processing"

    # The payout: the simulator sends it ~2 s after funding; Wise's webhook ends the wait for it.
    deadline = time.monotonic() + 10.0
    before = _reads(sim)
    waiter = _Waiter(lambda: wait_for_transfer_state(wise, transfer.id, SENT, board=board, timeout=25.0,
                                                     poll_interval=SLOW_POLL))
    waiter.start()
    _await_read(sim, before)
    while _status(sim, transfer.id) != SENT:
        assert time.monotonic() < deadline, "the simulator never sent the transfer"
        time.sleep(0.02)
    assert waiter.ended_at is None, "the first read already saw the payout: nothing left for the webhook to do"
    assert wise_emitter.deliver(wise_emitter.event_body(transfer.id, PROFILE, SENT, "funds_converted", time.time())) == 200
    delivered = time.monotonic()
    waiter.join(timeout=10.0)
    assert waiter.ended_at is not None and waiter.ended_at - delivered < 1.5
    assert waiter.error is None and waiter.result.status == SENT


def test_forged_and_unsigned_webhooks_are_refused_and_the_wait_falls_back_to_polling(
    instance, wise_world, wise, emitters, receiver
):
    sim, gateway = wise_world
    wise_emitter, forger = emitters
    board = InstanceWebhookBoard(instance)
    transfer = _parked_transfer(wise, f"forged-drill-{time.time_ns()}")
    rejected = _health(receiver)["rejected"]

    poll = 2.0
    before = _reads(sim)
    started = time.monotonic()
    waiter = _Waiter(lambda: wise.wait_until_funded(transfer.id, timeout=20.0, poll_interval=poll, board=board))
    waiter.start()
    _await_read(sim, before)
    gateway.fund_as_human(PROFILE, transfer.id)
    body = forger.event_body(transfer.id, PROFILE, "processing", WAITING, time.time())
    assert forger.deliver(body) == 400  # signed, but not with Wise's key
    assert wise_emitter.deliver(body, signature="") == 400  # unsigned
    assert wise_emitter.deliver(body, signature=forger.sign(body + b" ")) == 400  # a signature of another body
    assert board.state(transfer.id) is None
    assert _health(receiver)["rejected"] == rejected + 3

    waiter.join(timeout=poll + 10.0)
    assert waiter.error is None and waiter.result.status != WAITING  # found by polling Wise
    assert waiter.ended_at - started >= poll - 0.2, "ended before its poll: something took the forged webhook"
    assert board.state(transfer.id) is None


def test_replays_and_late_deliveries_are_acknowledged_and_change_nothing(instance, emitters, receiver):
    wise_emitter, _ = emitters
    board = InstanceWebhookBoard(instance)
    transfer_id, now = 990_001, time.time()
    accepted = _health(receiver)["accepted"]
    sent = wise_emitter.event_body(transfer_id, PROFILE, SENT, "funds_converted", now)
    assert wise_emitter.deliver(sent) == 200
    assert wise_emitter.deliver(sent) == 200  # Wise retries a delivery it thinks failed
    late = wise_emitter.event_body(transfer_id, PROFILE, "processing", WAITING, now - 5.0)
    assert wise_emitter.deliver(late) == 200  # out of order: acknowledged, so Wise stops retrying
    event = board.state(transfer_id)
    assert event.current_state == SENT and event.occurred_at == pytest.approx(now, abs=0.002)  # ms on the wire
    health = _health(receiver)
    assert health["accepted"] == accepted + 1 and health["store_errors"] == 0
