"""Wise `transfers#state-change` webhooks: signature check, a durable board, a receiver, and faster waits.

Wise signs every webhook body with its private key: `X-Signature-SHA256` is
the Base64 RSA-SHA256 (PKCS#1 v1.5) signature of the raw body, checked here
against Wise's public key for the environment (sandbox and live have their
own; configure the PEM: `WISE_WEBHOOK_PUBLIC_KEY`). Deliveries carry
`X-Delivery-Id`, may arrive out of order (`data.occurred_at` decides), late,
or more than once.

* `verify_signature(public_key_pem, body, signature)` -- True/False, never raises
  for a bad signature (a configured key that is not RSA is a `ValueError`);
* `parse_transfer_state_change(body, headers)` -- the typed event (or None
  for other event types and test notifications);
* a *board*: the newest verified state per transfer (`WebhookBoard`):
  `InstanceWebhookBoard` keeps it in the Dagster instance's key-value store
  (the same database as runs: SQLite locally, PostgreSQL in prod), so the
  receiver's process writes it and every run worker reads it;
  `TransferStateBoard` is the in-process variant (tests, co-located waits).
  A newer `occurred_at` wins; replays and late deliveries change nothing;
* `WiseWebhookReceiver` -- a stdlib HTTP server that verifies, parses and
  records; unsigned or forged bodies are refused (400) and never recorded;
  `GET /health` answers 200 while the board is reachable, else 503 (the
  readiness probe), `GET /live` 200 while the process serves HTTP (the
  liveness probe: a database outage is not a reason to restart it)
  (`arb-orchestration wise-webhooks serve` runs it against the instance);
* `BoardWatch` -- paces a wait: read Wise every `poll_interval`, but look at
  the board every `check_interval` (0.5 s) and read Wise at once when it has
  news; `wait_for_transfer_state(...)` is that wait for a set of states
  (`ProductionWiseResource.wait_until_funded` and the rebalance saga's
  arrival wait use the same watch).

A webhook is a hint, the API is the truth: every wait decides on a
`GET /v1/transfers/{id}` only, and when the board is unreadable or silent the
waits simply poll, as they did before webhooks.
"""

from __future__ import annotations

import abc
import base64
import binascii
import functools
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from arb_orchestration.resources.wise import (
    CANCELLED,
    FAILED_STATUSES,
    SENT,
    WAITING,
    Transfer,
    poll_transfer_state,
)

if TYPE_CHECKING:
    from dagster import DagsterInstance

log = logging.getLogger("arb_orchestration.resources.wise_webhooks")

SIGNATURE_HEADER = "X-Signature-SHA256"
DELIVERY_HEADER = "X-Delivery-Id"
TEST_HEADER = "X-Test-Notification"
TRANSFER_STATE_CHANGE = "transfers#state-change"
MAX_BODY_BYTES = 64 * 1024
# A connection that has not sent its whole request (headers and body) this long after each read is
# closed: the receiver faces the internet, and a stalled client must not hold a thread forever.
REQUEST_TIMEOUT_SECONDS = 10.0
DEFAULT_PATH = "/wise/webhooks"
HEALTH_PATH = "/health"
# Liveness: 200 while the process serves HTTP, whatever the database does (a restart would not bring it back).
LIVE_PATH = "/live"

BOARD_KEY_PREFIX = "arb/wise/transfer_state/"
# How often a wait looks at the board: a webhook ends it within about this long.
BOARD_CHECK_SECONDS = 0.5
# A hint Wise's API did not confirm yet is read again after 1 s, 2 s, 4 s ... (at most the poll interval).
FIRST_REVERIFY_SECONDS = 1.0

# Where a state sits in a transfer's life; only breaks ties between events with the same occurred_at.
_LIFECYCLE = {
    WAITING: 0,
    "incoming_payment_initiated": 1,
    "processing": 2,
    "funds_converted": 3,
    SENT: 4,
    "bounced_back": 5,
    CANCELLED: 6,
    "funds_refunded": 6,
    "charged_back": 7,
}


# --------------------------------------------------------------------------- signatures


@functools.lru_cache(maxsize=8)
def _public_key(pem: bytes):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("Wise signs webhooks with RSA: the configured public key is not an RSA key")
    return key


def load_public_key(public_key_pem: bytes | str):
    """The RSA public key in `public_key_pem`; `ValueError` when it is not one (fail at start, not per delivery)."""
    return _public_key(public_key_pem.encode() if isinstance(public_key_pem, str) else bytes(public_key_pem))


def verify_signature(public_key_pem: bytes | str, body: bytes, signature_b64: str | None) -> bool:
    """True when `signature_b64` is Wise's RSA-SHA256 signature of exactly `body`."""
    if not signature_b64:
        return False
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    key = load_public_key(public_key_pem)
    try:
        key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


# --------------------------------------------------------------------------- events


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> "TransferStateChange":
        data = json.loads(raw)
        return cls(
            transfer_id=int(data["transfer_id"]),
            profile_id=int(data["profile_id"]) if data.get("profile_id") is not None else None,
            current_state=str(data["current_state"]),
            previous_state=data.get("previous_state"),
            occurred_at=float(data["occurred_at"]),
            delivery_id=data.get("delivery_id"),
            subscription_id=data.get("subscription_id"),
        )


def is_newer(event: TransferStateChange, known: TransferStateChange) -> bool:
    """Does `event` replace `known` (same transfer)?

    The later `occurred_at` wins. Wise may stamp two changes with the same
    instant: then the event that names `known`'s state as its previous one is
    the successor, else the later state in a transfer's life. The same state
    at the same instant is a replay: not newer.
    """
    if event.occurred_at != known.occurred_at:
        return event.occurred_at > known.occurred_at
    if event.current_state == known.current_state:
        return False
    if event.previous_state == known.current_state:
        return True
    if known.previous_state == event.current_state:
        return False
    return _LIFECYCLE.get(event.current_state, -1) > _LIFECYCLE.get(known.current_state, -1)


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


# --------------------------------------------------------------------------- boards


class WebhookBoard(abc.ABC):
    """The newest verified state per transfer: the receiver records, waits read.

    `InstanceWebhookBoard` (Dagster instance, shared by processes) and
    `TransferStateBoard` (this process only) behave the same.
    """

    @abc.abstractmethod
    def record(self, event: TransferStateChange) -> bool:
        """Apply a verified event; False when it changes nothing (a replay, or older than what is known)."""

    @abc.abstractmethod
    def states(self, transfer_ids: Iterable[int]) -> dict[int, TransferStateChange]:
        """The known state of each of `transfer_ids` (absent ones left out), in one read."""

    def state(self, transfer_id: int) -> TransferStateChange | None:
        return self.states([transfer_id]).get(int(transfer_id))

    def ping(self) -> None:
        """Raise when the board cannot be read (the receiver's health check)."""
        self.states([0])

    def wait_for(
        self, transfer_id: int, states: Iterable[str], timeout: float, *, check_interval: float = BOARD_CHECK_SECONDS
    ) -> TransferStateChange | None:
        """The transfer's event once it shows one of `states`; None after `timeout`."""
        wanted = set(states)
        deadline = time.monotonic() + timeout
        while True:
            event = self.state(transfer_id)
            if event is not None and event.current_state in wanted:
                return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(check_interval, remaining))


class TransferStateBoard(WebhookBoard):
    """The board in this process's memory (tests; a wait in the receiver's own process)."""

    def __init__(self, max_deliveries: int = 10_000):
        self._cond = threading.Condition()
        self._latest: dict[int, TransferStateChange] = {}
        self._deliveries: dict[str, None] = {}
        self._max_deliveries = max_deliveries

    def record(self, event: TransferStateChange) -> bool:
        with self._cond:
            if event.delivery_id:
                if event.delivery_id in self._deliveries:
                    return False
                self._deliveries[event.delivery_id] = None
                while len(self._deliveries) > self._max_deliveries:
                    self._deliveries.pop(next(iter(self._deliveries)))
            known = self._latest.get(event.transfer_id)
            if known is not None and not is_newer(event, known):
                return False
            self._latest[event.transfer_id] = event
            self._cond.notify_all()
            return True

    def states(self, transfer_ids: Iterable[int]) -> dict[int, TransferStateChange]:
        with self._cond:
            return {int(i): self._latest[int(i)] for i in transfer_ids if int(i) in self._latest}

    def wait_for(
        self, transfer_id: int, states: Iterable[str], timeout: float, *, check_interval: float = BOARD_CHECK_SECONDS
    ) -> TransferStateChange | None:
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


class InstanceWebhookBoard(WebhookBoard):
    """The board in the Dagster instance's key-value store: one key per transfer, read by every process.

    Key `arb/wise/transfer_state/<transfer id>`, value the JSON of the newest
    `TransferStateChange` (plus `recorded_at`). The store has no
    compare-and-set, so `record` reads, compares, writes, and reads back: a
    concurrent writer (a second receiver replica) that overwrote a newer state
    with an older one is written over again. What can still slip through (two
    replicas within the same instant) only costs a wait its webhook: it polls.
    """

    def __init__(self, instance: "DagsterInstance", *, key_prefix: str = BOARD_KEY_PREFIX, write_attempts: int = 3):
        self.instance = instance
        self.key_prefix = key_prefix
        self.write_attempts = write_attempts
        self._lock = threading.Lock()

    def key(self, transfer_id: int) -> str:
        return f"{self.key_prefix}{int(transfer_id)}"

    def states(self, transfer_ids: Iterable[int]) -> dict[int, TransferStateChange]:
        keys = {self.key(i): int(i) for i in transfer_ids}
        if not keys:
            return {}
        out: dict[int, TransferStateChange] = {}
        for key, raw in self.instance.run_storage.get_cursor_values(set(keys)).items():
            try:
                out[keys[key]] = TransferStateChange.from_json(raw)
            except (ValueError, TypeError, KeyError) as exc:  # an unreadable hint is no hint: the waits poll
                log.warning("wise webhook board: unreadable value under %s (%s)", key, exc)
        return out

    def record(self, event: TransferStateChange) -> bool:
        value = json.dumps({**asdict(event), "recorded_at": time.time()}, sort_keys=True)
        with self._lock:  # the receiver's threads: read-compare-write one at a time
            for _ in range(self.write_attempts):
                known = self.state(event.transfer_id)
                if known is not None and not is_newer(event, known):
                    return False
                self.instance.run_storage.set_cursor_values({self.key(event.transfer_id): value})
                stored = self.state(event.transfer_id)
                if stored is not None and not is_newer(event, stored):
                    return True  # ours, or a newer one another writer recorded since
            log.warning("wise webhook board: transfer %s kept being overwritten with older states", event.transfer_id)
            return True


# --------------------------------------------------------------------------- receiver


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "arb-wise-webhooks/1"
    server: "WiseWebhookReceiver"

    def setup(self) -> None:
        self.timeout = self.server.request_timeout  # socket timeout; BaseHTTPRequestHandler closes on it
        super().setup()

    def do_POST(self) -> None:
        self._answer(*self.server.process_delivery(self.path, {k: v for k, v in self.headers.items()}, self._body()))

    def do_GET(self) -> None:
        self._answer(*self.server.health(self.path))

    def _answer(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)


class WiseWebhookReceiver(ThreadingHTTPServer):
    """Receives Wise webhooks on `path`, verifies them, records transfer states on `board`.

    `board` is an `InstanceWebhookBoard` in a deployment (run workers read
    it); the default is an in-process `TransferStateBoard`. `on_event`
    (optional) is called with each new `TransferStateChange` (e.g. to publish
    it to Kafka). Answers 200 to valid, repeated and test deliveries, 400 to
    unsigned/forged/malformed ones, 413 to oversized ones, 503 when the board
    cannot be written (Wise retries), 404 to other paths; a connection that stalls for
    `request_timeout` seconds while sending its request is closed. `GET /health`: 200
    while the board is readable, else 503; `GET /live`: 200 while it serves.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        public_key_pem: bytes | str,
        board: WebhookBoard | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = DEFAULT_PATH,
        on_event: Callable[[TransferStateChange], None] | None = None,
        request_timeout: float = REQUEST_TIMEOUT_SECONDS,
    ):
        load_public_key(public_key_pem)  # a wrong key fails here, not on the first delivery
        self.public_key_pem = public_key_pem
        self.board = board if board is not None else TransferStateBoard()
        self.path = path
        self.on_event = on_event
        self.request_timeout = request_timeout
        self.stats = {"accepted": 0, "duplicates": 0, "rejected": 0, "ignored": 0}
        self.store_errors = 0  # deliveries answered 503 because the board could not be written
        self._stats_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__((host, port), _Handler)
        bound_host, bound_port = self.server_address[:2]
        self.base_url = f"http://{bound_host}:{bound_port}"
        self.url = f"{self.base_url}{path}"

    def _count(self, key: str) -> None:
        with self._stats_lock:
            if key == "store_errors":
                self.store_errors += 1
            else:
                self.stats[key] += 1

    def health(self, path: str) -> tuple[int, dict]:
        route = path.split("?", 1)[0]
        if route == LIVE_PATH:
            return 200, {"status": "alive"}
        if route != HEALTH_PATH:
            return 404, {"status": "not found"}
        with self._stats_lock:
            stats = {**self.stats, "store_errors": self.store_errors}
        try:
            self.board.ping()
        except Exception as exc:  # the answer is the report: a readiness probe takes the pod out
            return 503, {"status": "board unavailable", "error": type(exc).__name__, **stats}
        return 200, {"status": "ok", "board": type(self.board).__name__, **stats}

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
        try:
            recorded = self.board.record(event)
        except Exception:  # not stored: say so, and Wise delivers it again later
            self._count("store_errors")
            log.exception("wise webhook: could not record transfer %s %s on the board", event.transfer_id, event.current_state)
            return 503, {"status": "unavailable"}
        if not recorded:
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


# --------------------------------------------------------------------------- waits


class BoardWatch:
    """Paces a wait for transfers: read Wise every `poll_interval`, sooner when the board has news.

    Call `reading(ids)` right before each read of the transfers from Wise, and
    `pause(ids, seconds)` between reads. The pause looks at the board every
    `check_interval` and returns at once with an event that is `relevant`
    (would end the wait) and that the last read did not cover, so the caller
    reads the transfer again and decides on what Wise's API says. A hint the
    API does not confirm yet (the API may lag its webhooks; a stale entry) is
    looked at again after 1 s, 2 s, 4 s ... up to `poll_interval`, never in a
    tight loop. Without a board, or while it cannot be read (logged once),
    the pause is a plain sleep: polling is the fallback.
    """

    def __init__(
        self,
        board: WebhookBoard | None,
        relevant: Callable[[TransferStateChange], bool],
        *,
        poll_interval: float,
        check_interval: float = BOARD_CHECK_SECONDS,
    ):
        self.board = board
        self.relevant = relevant
        self.poll_interval = poll_interval
        self.check_interval = check_interval
        self._covered: dict[int, tuple[tuple[str, float], float, float]] = {}  # id -> (event, look again at, backoff)
        self._board_ok = True

    def _news(self, transfer_ids: Iterable[int]) -> dict[int, TransferStateChange]:
        ids = [int(i) for i in transfer_ids]
        if self.board is None or not ids:
            return {}
        try:
            states = self.board.states(ids)
        except Exception as exc:  # a hint source, not the truth: fall back to polling
            if self._board_ok:
                log.warning("wise webhook board unreadable (%s: %s); polling Wise only", type(exc).__name__, exc)
            self._board_ok = False
            return {}
        if not self._board_ok:
            log.info("wise webhook board readable again")
            self._board_ok = True
        return {i: e for i, e in states.items() if self.relevant(e)}

    def reading(self, transfer_ids: Iterable[int]) -> None:
        """What the board shows now is covered by the read that follows."""
        now = time.monotonic()
        for tid, event in self._news(transfer_ids).items():
            key = (event.current_state, event.occurred_at)
            known = self._covered.get(tid)
            if known is None or known[0] != key:
                backoff = FIRST_REVERIFY_SECONDS
            else:
                backoff = min(known[2] * 2, max(self.poll_interval, FIRST_REVERIFY_SECONDS))
            self._covered[tid] = (key, now + backoff, backoff)

    def pause(self, transfer_ids: Iterable[int], seconds: float) -> TransferStateChange | None:
        """Sleep up to `seconds`; return early with the board's news about one of `transfer_ids`."""
        ids = list(transfer_ids)
        end = time.monotonic() + max(0.0, seconds)
        if self.board is None or not ids:
            time.sleep(max(0.0, seconds))
            return None
        while True:
            now = time.monotonic()
            wake = end
            for tid, event in self._news(ids).items():
                known = self._covered.get(tid)
                if known is None or known[0] != (event.current_state, event.occurred_at) or now >= known[1]:
                    log.info("wise transfer %s: the board says %s (webhook); reading it from Wise",
                             tid, event.current_state)
                    return event
                wake = min(wake, known[1])
            if now >= end:
                return None
            time.sleep(max(0.0, min(self.check_interval, end - now, wake - now)))


def wait_for_transfer_state(
    wise,
    transfer_id: int,
    states: str | Iterable[str],
    *,
    board: WebhookBoard | None = None,
    timeout: float = 120.0,
    poll_interval: float = 30.0,
    board_check_interval: float = BOARD_CHECK_SECONDS,
) -> Transfer:
    """Wait until the transfer is in one of `states`: webhooks first, polling Wise as the fallback.

    Wise is read every `poll_interval` seconds, and at once when the board
    (looked at every `board_check_interval`) shows a wanted or a failed state;
    only that read decides. A failed end state raises `BusinessError`; the
    deadline raises `TransferNotSettledError` (transient, as
    `WiseResource.wait_for_state`).
    """
    wanted = {states} if isinstance(states, str) else set(states)
    watch = BoardWatch(board, lambda e: e.current_state in wanted or e.current_state in FAILED_STATUSES,
                       poll_interval=poll_interval, check_interval=board_check_interval)

    def read() -> Transfer:
        watch.reading([transfer_id])  # what the board shows now is covered by this read
        return wise.get_transfer(transfer_id)

    return poll_transfer_state(
        read,
        transfer_id,
        wanted,
        timeout=timeout,
        pause=lambda remaining: watch.pause([transfer_id], min(poll_interval, remaining)),
        read_error_log="wise: reading transfer %s failed (%s); still waiting",
    )
