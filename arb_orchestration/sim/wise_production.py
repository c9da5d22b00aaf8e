"""What a live Wise account adds to the Wise simulator, for tests and the demo.

* `WiseProductionGateway` -- a loopback HTTP front of a running `WiseSimulator`
  that behaves like production Wise at the edges: `POST /oauth/token` (HTTP
  basic client id/secret; `refresh_token` and `client_credentials` grants,
  tokens that expire), bearer-token checks (401 `invalid_token`), and strong
  customer authentication on funding: `POST /v3/profiles/{p}/transfers/{t}/payments`
  answers 403 with `x-2fa-approval-result: REJECTED` and a one-time token in
  `x-2fa-approval`, as Wise does for EU/UK personal tokens. Everything else is
  forwarded to the simulator. `fund_as_human(transfer_id)` funds a transfer
  the way a person does in the Wise app.
* `WiseWebhookEmitter` -- watches the simulator's transfers and POSTs a signed
  `transfers#state-change` delivery (schema 4.0.0, RSA-SHA256 over the body in
  `X-Signature-SHA256`, `X-Delivery-Id`) for every state change, to one
  subscription URL; optionally every delivery twice (Wise may redeliver).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import secrets
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

log = logging.getLogger("arb_orchestration.sim.wise_production")

_PAYMENTS_SUFFIX = "/payments"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _GatewayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "arb-wise-gateway/1"
    server: "WiseProductionGateway"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        result = self.server.route(method, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        if result is None:  # the simulator dropped the connection: so do we
            self.close_connection = True
            return
        status, headers, payload = result
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)


class WiseProductionGateway(ThreadingHTTPServer):
    """Production-shaped Wise edge (OAuth, token expiry, SCA on funding) in front of a `WiseSimulator`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        upstream_url: str,
        upstream_token: str | None,
        *,
        client_id: str = "",
        client_secret: str = "",
        refresh_token: str = "",
        personal_token: str = "",
        token_ttl: float = 43_199.0,
        sca_for_funding: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self._upstream = httpx.Client(base_url=upstream_url, timeout=30.0)
        self._upstream_token = upstream_token
        self._client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._personal_token = personal_token
        self.token_ttl = token_ttl
        self.sca_for_funding = sca_for_funding
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}  # access token -> expiry (epoch)
        self.stats = {"tokens_issued": 0, "unauthorised": 0, "sca_challenges": 0, "forwarded": 0}
        self._thread: threading.Thread | None = None
        super().__init__((host, port), _GatewayHandler)
        bound_host, bound_port = self.server_address[:2]
        self.url = f"http://{bound_host}:{bound_port}"

    def __repr__(self) -> str:
        return f"WiseProductionGateway(url={self.url!r})"

    # ------------------------------------------------------------ lifecycle

    def start(self) -> str:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, name="wise-gateway", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._upstream.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "WiseProductionGateway":
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def expire_tokens(self) -> None:
        """Every issued access token expires now (the next call gets 401)."""
        with self._lock:
            self._tokens = {t: 0.0 for t in self._tokens}

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    # ------------------------------------------------------------ routing

    @staticmethod
    def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()

    def _basic_auth_ok(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user, self._client_id) and hmac.compare_digest(password, self._client_secret)

    def _bearer_ok(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        if self._personal_token and hmac.compare_digest(token, self._personal_token):
            return True
        with self._lock:
            expiry = self._tokens.get(token)
        return expiry is not None and time.time() < expiry

    def route(self, method: str, target: str, headers: dict[str, str], body: bytes):
        path = urlsplit(target).path
        if method == "POST" and path == "/oauth/token":
            return self._token(headers, body)
        if not self._bearer_ok(headers.get("authorization", "")):
            self._count("unauthorised")
            return self._json(401, {"error": "invalid_token", "error_description": "Invalid token"})
        if method == "POST" and self.sca_for_funding and path.startswith("/v3/profiles/") and path.endswith(_PAYMENTS_SUFFIX):
            self._count("sca_challenges")
            return self._json(
                403,
                {"error": "This request requires Strong Customer Authentication (SCA)."},
                {"x-2fa-approval-result": "REJECTED", "x-2fa-approval": str(uuid.uuid4())},
            )
        return self._forward(method, target, headers, body)

    def _token(self, headers: dict[str, str], body: bytes):
        if not self._client_id or not self._basic_auth_ok(headers.get("authorization", "")):
            return self._json(401, {"error": "invalid_client"})
        form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
        grant = form.get("grant_type")
        if grant == "refresh_token":
            if not self._refresh_token or not hmac.compare_digest(form.get("refresh_token", ""), self._refresh_token):
                return self._json(400, {"error": "invalid_grant", "error_description": "Invalid refresh token"})
        elif grant != "client_credentials":
            return self._json(400, {"error": "unsupported_grant_type"})
        token = secrets.token_hex(16)
        with self._lock:
            self._tokens[token] = time.time() + self.token_ttl
            self.stats["tokens_issued"] += 1
        return self._json(200, {"access_token": token, "token_type": "bearer", "expires_in": int(self.token_ttl),
                                "scope": "transfers", "created_at": _iso(time.time())})

    def _forward(self, method: str, target: str, headers: dict[str, str], body: bytes):
        self._count("forwarded")
        send_headers = {"Content-Type": headers.get("content-type", "application/json")}
        if self._upstream_token:
            send_headers["Authorization"] = f"Bearer {self._upstream_token}"
        try:
            response = self._upstream.request(method, target, content=body or None, headers=send_headers)
        except httpx.TransportError:
            return None
        out = {"Content-Type": response.headers.get("content-type", "application/json")}
        if "retry-after" in response.headers:
            out["Retry-After"] = response.headers["retry-after"]
        return response.status_code, out, response.content

    def fund_as_human(self, profile_id: int, transfer_id: int) -> dict:
        """Fund a transfer the way a person does in the Wise app (no API token involved)."""
        headers = {"Authorization": f"Bearer {self._upstream_token}"} if self._upstream_token else {}
        response = self._upstream.post(f"/v3/profiles/{profile_id}/transfers/{transfer_id}/payments", json={"type": "BALANCE"}, headers=headers)
        response.raise_for_status()
        return response.json()


class WiseWebhookEmitter:
    """Signs and delivers `transfers#state-change` webhooks for a `WiseSimulator`'s transfers."""

    def __init__(
        self,
        sim,
        url: str,
        private_key_pem: bytes,
        *,
        poll_interval: float = 0.05,
        deliver_twice: bool = False,
        subscription_id: str | None = None,
    ):
        from cryptography.hazmat.primitives import serialization

        self._sim = sim
        self._url = url
        self._key = serialization.load_pem_private_key(private_key_pem, password=None)
        self._poll_interval = poll_interval
        self._deliver_twice = deliver_twice
        self._subscription_id = subscription_id or str(uuid.uuid4())
        self._seen: dict[int, int] = {}  # transfer id -> history entries already delivered
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(timeout=5.0)
        self.delivered: list[tuple[int, str, int]] = []  # (transfer id, state, HTTP status)

    def sign(self, body: bytes) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        return base64.b64encode(self._key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()

    def event_body(self, transfer_id: int, profile_id: int, current: str, previous: str | None, occurred_at: float) -> bytes:
        event = {
            "data": {
                "resource": {"type": "transfer", "id": transfer_id, "profile_id": profile_id, "account_id": 0},
                "current_state": current,
                "previous_state": previous,
                "occurred_at": _iso(occurred_at),
            },
            "subscription_id": self._subscription_id,
            "event_type": "transfers#state-change",
            "schema_version": "4.0.0",
            "sent_at": _iso(time.time()),
        }
        return json.dumps(event).encode()

    def deliver(self, body: bytes, *, signature: str | None = None) -> int:
        headers = {"Content-Type": "application/json", "X-Delivery-Id": str(uuid.uuid4()),
                   "X-Signature-SHA256": signature if signature is not None else self.sign(body)}
        status = 0
        for _ in range(2 if self._deliver_twice else 1):
            for attempt in range(3):  # Wise retries failed deliveries; so do we, briefly
                try:
                    status = self._http.post(self._url, content=body, headers=headers).status_code
                    break
                except httpx.TransportError:
                    time.sleep(0.05 * (attempt + 1))
        return status

    def poll_once(self) -> int:
        sent = 0
        for transfer in self._sim.transfers():
            history = transfer.get("history") or []
            done = self._seen.get(transfer["id"], 1)  # the creation state is not a change
            for i in range(done, len(history)):
                body = self.event_body(transfer["id"], transfer.get("business") or 0, history[i], history[i - 1], time.time())
                self.delivered.append((transfer["id"], history[i], self.deliver(body)))
                sent += 1
            self._seen[transfer["id"]] = max(done, len(history))
        return sent

    def _run(self) -> None:
        while not self._stopping.wait(self._poll_interval):
            try:
                self.poll_once()
            except Exception:  # keep delivering; the error is in the log
                log.exception("wise webhook emitter: a poll failed")

    def start(self) -> "WiseWebhookEmitter":
        self._thread = threading.Thread(target=self._run, name="wise-webhook-emitter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._http.close()

    def __enter__(self) -> "WiseWebhookEmitter":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
