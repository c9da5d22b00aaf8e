"""The durable Wise webhook board and what reads it, without a network: the board in a real temporary
Dagster instance (newer `occurred_at` wins, replays and late deliveries change nothing, another process's
view sees the same, an unreadable entry is no hint), ties on `occurred_at`, the receiver's verdicts on
that board (forged, unsigned, malformed, oversized refused and never recorded; a store that cannot be
written answers 503; `/health`), the watch that paces the waits (an unconfirmed hint is re-read with
backoff, not in a loop; an unreadable board leaves the wait to polling), and the CLI's key loading."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from dagster import instance_for_test

from arb_orchestration.commands import wise_webhooks as command
from arb_orchestration.resources.wise import Transfer, TransferNotSettledError
from arb_orchestration.resources.wise_webhooks import (
    BOARD_KEY_PREFIX,
    InstanceWebhookBoard,
    TransferStateBoard,
    TransferStateChange,
    WebhookBoard,
    WiseWebhookReceiver,
    is_newer,
    wait_for_transfer_state,
)
from arb_orchestration.settings import SettingError

SENT, PROCESSING, WAITING = "outgoing_payment_sent", "processing", "incoming_payment_waiting"


@pytest.fixture(scope="module")
def keys():
    wise = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = wise.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return wise, forger, public_pem


@pytest.fixture(scope="module")
def instance():
    with instance_for_test() as inst:
        yield inst


def _change(transfer_id: int, current: str, previous: str | None, occurred_at: float, delivery: str | None = None):
    return TransferStateChange(transfer_id, 1001, current, previous, occurred_at, delivery)


def _body(transfer_id: int, current: str, previous: str | None, occurred: str) -> bytes:
    return json.dumps({
        "data": {"resource": {"type": "transfer", "id": transfer_id, "profile_id": 1001, "account_id": 0},
                 "current_state": current, "previous_state": previous, "occurred_at": occurred},
        "subscription_id": "f2e1c3a0-0000-4000-8000-000000000001", "event_type": "transfers#state-change",
        "schema_version": "4.0.0", "sent_at": occurred,
    }).encode()


def _signed(key, body: bytes) -> dict[str, str]:
    signature = base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()
    return {"X-Signature-SHA256": signature, "X-Delivery-Id": str(uuid.uuid4())}


# ---------------------------------------------------------------------------- the board


def test_the_newer_state_wins_and_replays_or_late_deliveries_change_nothing(instance):
    board, other_process = InstanceWebhookBoard(instance), InstanceWebhookBoard(instance)
    assert board.record(_change(501, PROCESSING, WAITING, 100.0, "d1"))
    assert not board.record(_change(501, PROCESSING, WAITING, 100.0, "d2"))  # redelivered (new delivery id): no write
    assert board.record(_change(501, SENT, "funds_converted", 200.0, "d3"))
    assert not board.record(_change(501, "funds_converted", PROCESSING, 150.0, "d4"))  # late
    assert not board.record(_change(501, SENT, "funds_converted", 200.0, "d3"))  # replayed as is
    seen = other_process.state(501)
    assert (seen.current_state, seen.occurred_at, seen.delivery_id) == (SENT, 200.0, "d3")
    assert board.record(_change(501, "bounced_back", SENT, 300.0))  # Wise can move on after "sent"
    assert other_process.state(501).current_state == "bounced_back"
    assert other_process.state(502) is None


def test_one_read_returns_every_transfer_asked_for_and_an_unreadable_entry_is_no_hint(instance):
    board = InstanceWebhookBoard(instance)
    board.record(_change(601, SENT, "funds_converted", 10.0))
    board.record(_change(602, PROCESSING, WAITING, 10.0))
    instance.run_storage.set_cursor_values({f"{BOARD_KEY_PREFIX}603": "{not json"})
    states = board.states([601, 602, 603, 604])
    assert {i: e.current_state for i, e in states.items()} == {601: SENT, 602: PROCESSING}
    assert board.record(_change(603, PROCESSING, WAITING, 1.0))  # a good event replaces the garbage
    assert board.state(603).current_state == PROCESSING


def test_ties_on_occurred_at_follow_the_transfer_life():
    processing = _change(1, PROCESSING, WAITING, 50.0)
    converted = _change(1, "funds_converted", PROCESSING, 50.0)
    assert is_newer(converted, processing) and not is_newer(processing, converted)  # previous_state links them
    assert is_newer(_change(1, SENT, None, 50.0), processing)  # no link: the later state in a transfer's life
    assert not is_newer(_change(1, PROCESSING, None, 50.0), processing)  # same state, same instant: a replay
    assert is_newer(_change(1, PROCESSING, "bounced_back", 60.0), _change(1, SENT, None, 50.0))  # later wins, always


def test_the_in_process_board_follows_the_same_rule():
    board = TransferStateBoard()
    assert board.record(_change(7, SENT, "funds_converted", 200.0, "a"))
    assert not board.record(_change(7, PROCESSING, WAITING, 100.0, "b"))
    assert not board.record(_change(7, SENT, "funds_converted", 200.0, "c"))
    assert board.states([7, 8]) == {7: _change(7, SENT, "funds_converted", 200.0, "a")}


# ---------------------------------------------------------------------------- the receiver


def test_the_receiver_puts_only_verified_deliveries_on_the_instance_board(instance, keys):
    wise, forger, public_pem = keys
    board = InstanceWebhookBoard(instance)
    receiver = WiseWebhookReceiver(public_pem, board)
    try:
        sent = _body(701, SENT, "funds_converted", "2026-03-01T10:00:05.000Z")
        assert receiver.process_delivery("/wise/webhooks", _signed(forger, sent), sent) == (400, {"status": "invalid signature"})
        assert receiver.process_delivery("/wise/webhooks", {}, sent)[0] == 400  # unsigned
        tampered = sent.replace(b"701", b"702")
        assert receiver.process_delivery("/wise/webhooks", _signed(wise, sent), tampered)[0] == 400  # body changed after signing
        assert receiver.process_delivery("/wise/webhooks", _signed(wise, b"[1,"), b"[1,")[0] == 400  # signed garbage
        assert receiver.process_delivery("/wise/webhooks", _signed(wise, sent), None)[0] == 413  # too large
        assert board.states([701, 702]) == {}

        assert receiver.process_delivery("/wise/webhooks", _signed(wise, sent), sent)[0] == 200
        assert receiver.process_delivery("/wise/webhooks", _signed(wise, sent), sent)[0] == 200  # Wise retries: 200 again
        late = _body(701, PROCESSING, WAITING, "2026-03-01T10:00:01.000Z")
        assert receiver.process_delivery("/wise/webhooks", _signed(wise, late), late)[0] == 200
        assert board.state(701).current_state == SENT
        assert receiver.stats == {"accepted": 1, "duplicates": 2, "rejected": 5, "ignored": 0}
        assert receiver.health("/health") == (200, {"status": "ok", "board": "InstanceWebhookBoard",
                                                     **receiver.stats, "store_errors": 0})
    finally:
        receiver.server_close()


class _BrokenBoard(WebhookBoard):
    """A board whose database is gone."""

    def record(self, event):
        raise ConnectionError("database unavailable")

    def states(self, transfer_ids):
        raise ConnectionError("database unavailable")


def test_a_board_that_cannot_be_written_answers_503_so_wise_delivers_again(keys):
    wise, _, public_pem = keys
    receiver = WiseWebhookReceiver(public_pem, _BrokenBoard())
    try:
        body = _body(801, SENT, "funds_converted", "2026-03-01T10:00:05.000Z")
        assert receiver.process_delivery("/wise/webhooks", _signed(wise, body), body)[0] == 503
        status, health = receiver.health("/health")
        assert status == 503 and health["status"] == "board unavailable" and health["store_errors"] == 1
        # Liveness does not depend on the database: a restart would not bring it back.
        assert receiver.health("/live") == (200, {"status": "alive"})
        assert receiver.health("/livez")[0] == 404
        assert receiver.stats["accepted"] == 0
    finally:
        receiver.server_close()


def test_the_receiver_refuses_a_public_key_that_is_not_rsa():
    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ValueError, match="RSA"):
        WiseWebhookReceiver(ec_pem)


# ---------------------------------------------------------------------------- the waits


class _Transfers:
    """`get_transfer` answers from a list of statuses, one per call (the last one repeats)."""

    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.calls = 0

    def get_transfer(self, transfer_id):
        status = self.statuses[min(self.calls, len(self.statuses) - 1)]
        self.calls += 1
        return Transfer.model_validate({"id": transfer_id, "status": status, "targetAccount": 1, "sourceCurrency": "EUR",
                                        "sourceValue": 10, "targetCurrency": "EUR", "targetValue": 10})


def test_a_hint_wise_does_not_confirm_is_read_again_with_backoff_not_in_a_loop(instance):
    board = InstanceWebhookBoard(instance)
    board.record(_change(901, SENT, "funds_converted", time.time()))  # the API never catches up in this test
    wise = _Transfers([PROCESSING])
    with pytest.raises(TransferNotSettledError):
        wait_for_transfer_state(wise, 901, SENT, board=board, timeout=2.5, poll_interval=30, board_check_interval=0.05)
    # Reads at 0 s, 1 s (hint re-checked), then the deadline's read; the next re-check would be at 3 s.
    # A tight loop on the hint would have read ~50 times.
    assert 2 <= wise.calls <= 4


def test_an_unreadable_board_leaves_the_wait_to_polling(caplog):
    wise = _Transfers([PROCESSING, PROCESSING, SENT])
    with caplog.at_level(logging.WARNING, logger="arb_orchestration.resources.wise_webhooks"):
        transfer = wait_for_transfer_state(wise, 5, SENT, board=_BrokenBoard(), timeout=10, poll_interval=0.1,
                                           board_check_interval=0.02)
    assert transfer.status == SENT and wise.calls == 3
    assert [r.message for r in caplog.records].count(
        "wise webhook board unreadable (ConnectionError: database unavailable); polling Wise only") == 1


def test_a_webhook_on_the_instance_board_ends_the_wait_within_a_board_check(instance):
    board = InstanceWebhookBoard(instance)
    wise = _Transfers([PROCESSING, SENT])
    threading.Timer(0.2, lambda: InstanceWebhookBoard(instance).record(_change(902, SENT, "funds_converted", time.time()))).start()
    started = time.monotonic()
    transfer = wait_for_transfer_state(wise, 902, SENT, board=board, timeout=30, poll_interval=30)
    assert transfer.status == SENT and wise.calls == 2 and time.monotonic() - started < 1.5


# ---------------------------------------------------------------------------- the command


def test_the_command_takes_the_key_as_pem_or_path_and_names_the_setting_when_it_is_wrong(keys, tmp_path, monkeypatch):
    _, _, public_pem = keys
    path = tmp_path / "wise.pem"
    path.write_bytes(public_pem)
    assert command.read_public_key(str(path)) == public_pem
    assert command.read_public_key(public_pem.decode()) == public_pem
    for value, why in [("", "is empty"), (str(tmp_path / "missing.pem"), "cannot read"),
                       ("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----", "not an RSA public key")]:
        with pytest.raises(SettingError, match=f"WISE_WEBHOOK_PUBLIC_KEY.*{why}|{why}"):
            command.read_public_key(value)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert command.main(["serve", "--public-key", str(path), "--port", "0"]) == 2  # no instance to write to
