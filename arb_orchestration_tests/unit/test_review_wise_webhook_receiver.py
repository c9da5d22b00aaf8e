"""Review of the Wise webhook receiver's edges, on a real `WiseWebhookReceiver` on loopback (no mocks).

A client that announces a body and never sends it (or stops sending its headers) must not hold a
receiver thread forever: the receiver faces the internet (Wise must reach it), so such connections are
a cheap way to exhaust it. The connection is closed after `request_timeout`, nothing is recorded, and a
signed delivery on another connection is still accepted meanwhile.
"""

from __future__ import annotations

import base64
import json
import socket
import time

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from arb_orchestration.resources.wise_webhooks import DEFAULT_PATH, TransferStateBoard, WiseWebhookReceiver


def _keys():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, public


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return True
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionError:
        return True


def test_a_client_that_never_sends_its_body_is_cut_off_and_others_are_served_meanwhile():
    key, public = _keys()
    board = TransferStateBoard()
    with WiseWebhookReceiver(public, board, request_timeout=0.5) as receiver:
        host, port = receiver.server_address[:2]
        stalled = socket.create_connection((host, port))
        half_headers = socket.create_connection((host, port))
        try:
            stalled.sendall(f"POST {DEFAULT_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{{\"a\"".encode())
            half_headers.sendall(f"POST {DEFAULT_PATH} HTTP/1.1\r\nHost: x\r\n".encode())

            body = json.dumps({"event_type": "transfers#state-change", "subscription_id": "s",
                               "data": {"resource": {"type": "transfer", "id": 7, "profile_id": 1},
                                        "current_state": "processing", "previous_state": "incoming_payment_waiting",
                                        "occurred_at": "2026-01-01T00:00:00Z"}}).encode()
            signature = base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()
            answer = httpx.post(receiver.url, content=body, headers={"X-Signature-SHA256": signature}, timeout=5)
            assert answer.status_code == 200 and board.state(7).current_state == "processing"

            started = time.monotonic()
            assert _closed_within(stalled, 5.0), "the stalled body held its connection open"
            assert _closed_within(half_headers, 5.0), "the unfinished headers held their connection open"
            assert time.monotonic() - started < 4.0
        finally:
            stalled.close()
            half_headers.close()
    assert receiver.stats["accepted"] == 1
