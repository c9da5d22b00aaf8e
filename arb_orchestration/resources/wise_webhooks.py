"""Wise `transfers#state-change` webhooks: signature check, a small receiver, and a faster wait.

Wise signs every webhook body with its private key: `X-Signature-SHA256` is
the Base64 RSA-SHA256 (PKCS#1 v1.5) signature of the raw body, checked here
against Wise's public key for the environment (sandbox and live have their
own; configure the PEM). Deliveries carry `X-Delivery-Id` (deduplicated) and
may arrive out of order (`data.occurred_at` decides), or more than once.

* `verify_signature(public_key_pem, body, signature)` -- True/False, never raises;
* `parse_transfer_state_change(body, headers)` -- the typed event (or None
  for other event types and test notifications);
* `TransferStateBoard` -- the newest known state per transfer, thread-safe,
  with `wait_for(transfer_id, states, timeout)`;
* `WiseWebhookReceiver` -- a stdlib HTTP server that verifies, parses and
  records; unsigned or forged bodies are refused (400) and never recorded;
* `wait_for_transfer_state(wise, transfer_id, states, board=...)` -- waits on
  the board (a webhook wakes it at once) and polls Wise as the fallback, and
  always confirms with a read before answering: a webhook is a hint, the API
  is the truth.

In a deployment the receiver runs where Wise can reach it (behind the
ingress) and the waiting saga step runs in a run worker: share the board
through a store both see (the Dagster instance's key-value store, Kafka), or
co-locate them; with neither, `wait_for_transfer_state` without a board is
the polling the rebalance saga already does.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Mapping

from arb_orchestration.resources.errors import BusinessError, TransientError
from arb_orchestration.resources.wise import FAILED_STATUSES, Transfer, TransferNotSettledError

log = logging.getLogger("arb_orchestration.resources.wise_webhooks")

SIGNATURE_HEADER = "X-Signature-SHA256"
DELIVERY_HEADER = "X-Delivery-Id"
TEST_HEADER = "X-Test-Notification"
TRANSFER_STATE_CHANGE = "transfers#state-change"
MAX_BODY_BYTES = 64 * 1024


def verify_signature(public_key_pem: bytes | str, body: bytes, signature_b64: str | None) -> bool:
    """True when `signature_b64` is Wise's RSA-SHA256 signature of exactly `body`."""
    if not signature_b64:
        return False
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    key = serialization.load_pem_public_key(public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("Wise signs webhooks with RSA: the configured public key is not an RSA key")
    try:
        key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def _timestamp(value: Any) -> float:
    if not value:
        return 0.0
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class TransferStateChange:
    """One `transfers#state-change` delivery."""

    transfer_id: int
    profile_id: int | None
    current_state: str
    previous_state: str | None
    occurred_at: float  # epoch seconds (Wise's data.occurred_at)
    delivery_id: str | None = None
    subscription_id: str | None = None


def parse_transfer_state_change(body: bytes, headers: Mapping[str, str] | None = None) -> TransferStateChange | None:
    """The event in a (verified) body; None for other event types and Wise's test notifications."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    if headers.get(TEST_HEADER.lower(), "").lower() == "true":
        return None
    event = json.loads(body)
    if not isinstance(event, dict) or event.get("event_type") != TRANSFER_STATE_CHANGE:
        return None
    data = event.get("data") or {}
    resource = data.get("resource") or {}
    if resource.get("type", "transfer") != "transfer" or "id" not in resource or not data.get("current_state"):
        raise ValueError("transfers#state-change without data.resource.id or data.current_state")
    return TransferStateChange(
        transfer_id=int(resource["id"]),
        profile_id=int(resource["profile_id"]) if resource.get("profile_id") is not None else None,
        current_state=str(data["current_state"]),
        previous_state=data.get("previous_state"),
        occurred_at=_timestamp(data.get("occurred_at")),
        delivery_id=headers.get(DELIVERY_HEADER.lower()),
        subscription_id=event.get("subscription_id"),
    )


class TransferStateBoard:
    """The newest state each transfer reported; `wait_for` blocks until one of the wanted states shows."""

    def __init__(self, max_deliveries: int = 10_000):
        self._cond = threading.Condition()
        self._latest: dict[int, TransferStateChange] = {}
        self._deliveries: dict[str, None] = {}
        self._max_deliveries = max_deliveries

    def record(self, event: TransferStateChange) -> bool:
        """Apply an event; False for a repeated delivery or one older than what is known."""
        with self._cond:
            if event.delivery_id:
                if event.delivery_id in self._deliveries:
                    return False
                self._deliveries[event.delivery_id] = None
                while len(self._deliveries) > self._max_deliveries:
                    self._deliveries.pop(next(iter(self._deliveries)))
            known = self._latest.get(event.transfer_id)
            if known is not None and known.occurred_at > event.occurred_at:
                return False  # delivered late: a newer state is already known
            self._latest[event.transfer_id] = event
            self._cond.notify_all()
            return True

    def state(self, transfer_id: int) -> TransferStateChange | None:
        with self._cond:
            return self._latest.get(transfer_id)

    def wait_for(self, transfer_id: int, states: Iterable[str], timeout: float) -> TransferStateChange | None:
        wanted = set(states)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                event = self._latest.get(transfer_id)
                if event is not None and event.current_state in wanted:
                    return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "arb-wise-webhooks/1"
    server: "WiseWebhookReceiver"

    def do_POST(self) -> None:
        status, body = self.server.process_delivery(self.path, {k: v for k, v in self.headers.items()}, self._body())
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)


class WiseWebhookReceiver(ThreadingHTTPServer):
    """Receives Wise webhooks on `path`, verifies them, records transfer states on `board`.

    `on_event` (optional) is called with each new `TransferStateChange` (e.g. to
    publish it to Kafka). Answers 200 to valid and to test deliveries, 400 to
    unsigned/forged/malformed ones, 404 to other paths.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        public_key_pem: bytes | str,
        board: TransferStateBoard | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/wise/webhooks",
        on_event: Callable[[TransferStateChange], None] | None = None,
    ):
        self.public_key_pem = public_key_pem
        self.board = board or TransferStateBoard()
        self.path = path
        self.on_event = on_event
        self.stats = {"accepted": 0, "duplicates": 0, "rejected": 0, "ignored": 0}
        self._stats_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__((host, port), _Handler)
        bound_host, bound_port = self.server_address[:2]
        self.url = f"http://{bound_host}:{bound_port}{path}"

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def process_delivery(self, path: str, headers: Mapping[str, str], body: bytes | None) -> tuple[int, dict]:
        if path.split("?", 1)[0] != self.path:
            return 404, {"status": "not found"}
        if body is None:
            self._count("rejected")
            return 413, {"status": "too large"}
        lower = {k.lower(): v for k, v in headers.items()}
        if not verify_signature(self.public_key_pem, body, lower.get(SIGNATURE_HEADER.lower())):
            self._count("rejected")
            log.warning("wise webhook refused: missing or invalid %s (delivery %s)", SIGNATURE_HEADER, lower.get(DELIVERY_HEADER.lower()))
            return 400, {"status": "invalid signature"}
        try:
            event = parse_transfer_state_change(body, headers)
        except (ValueError, TypeError) as exc:
            self._count("rejected")
            log.warning("wise webhook refused: %s", exc)
            return 400, {"status": "malformed"}
        if event is None:
            self._count("ignored")
            return 200, {"status": "ok"}
        if not self.board.record(event):
            self._count("duplicates")
            return 200, {"status": "ok"}
        self._count("accepted")
        log.info("wise transfer %s: %s -> %s (webhook)", event.transfer_id, event.previous_state, event.current_state)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # the board has it; a failing side channel must not make Wise retry forever
                log.exception("wise webhook: on_event failed for transfer %s", event.transfer_id)
        return 200, {"status": "ok"}

    def start(self) -> str:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, name="wise-webhooks", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "WiseWebhookReceiver":
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for_transfer_state(
    wise,
    transfer_id: int,
    states: str | Iterable[str],
    *,
    board: TransferStateBoard | None = None,
    timeout: float = 120.0,
    poll_interval: float = 30.0,
) -> Transfer:
    """Wait until the transfer is in one of `states`: webhooks first, polling Wise as the fallback.

    Every `poll_interval` seconds (or as soon as the board shows a wanted or a
    failed state) the transfer is read from Wise; only that read decides. A
    failed end state raises `BusinessError`; the deadline raises
    `TransferNotSettledError` (transient, as `WiseResource.wait_for_state`).
    """
    wanted = {states} if isinstance(states, str) else set(states)
    deadline = time.monotonic() + timeout
    last: Transfer | None = None
    hint: TransferStateChange | None = None
    while True:
        try:
            last = wise.get_transfer(transfer_id)
        except TransientError as exc:
            log.warning("wise: reading transfer %s failed (%s); still waiting", transfer_id, exc)
        if last is not None and last.status in wanted:
            return last
        if last is not None and last.status in FAILED_STATUSES:
            raise BusinessError(f"wise transfer {transfer_id} ended {last.status} while waiting for {sorted(wanted)}", code=last.status)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            status = last.status if last is not None else "unknown"
            raise TransferNotSettledError(f"wise transfer {transfer_id} still {status} after {timeout:.1f}s (waiting for {sorted(wanted)})")
        slice_ = min(poll_interval, remaining)
        if board is None:
            time.sleep(slice_)
            continue
        seen = board.wait_for(transfer_id, wanted | FAILED_STATUSES, slice_)
        if seen is not None and seen == hint:
            # The webhook said so but Wise's API does not show it yet: do not spin on the same hint.
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        hint = seen
