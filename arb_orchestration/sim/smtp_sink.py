"""An SMTP sink for the demo and the tests: a real SMTP server (aiosmtpd) that keeps mail.

Every accepted message is parsed (subject, from, to, text body, HTML body) and
kept in memory; with a `maildir` it is also written there as an `.eml` file a
person can open. `start_http()` serves a small mailbox page listing them.

For tests it can require AUTH (`username`/`password`), offer STARTTLS
(`tls_cert`/`tls_key`), and fail the next messages on purpose with
`fail_next(count, code)`: 4xx codes are transient, 5xx permanent.
"""

from __future__ import annotations

import html as html_lib
import json
import logging
import ssl
import asyncio
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

log = logging.getLogger("arb_orchestration.sim.smtp_sink")



@dataclass(frozen=True)
class SinkMessage:
    """One received message. `to` are the envelope recipients (Bcc included)."""

    subject: str
    sender: str
    to: list[str]
    body: str
    html: str | None
    message_id: str | None
    mail_from: str
    received_at: float
    raw: bytes = field(repr=False)
    path: Path | None = None

    def as_dict(self) -> dict:
        return {
            "subject": self.subject,
            "from": self.sender,
            "to": self.to,
            "body": self.body,
            "html": self.html,
            "message_id": self.message_id,
            "received_at": datetime.fromtimestamp(self.received_at, tz=timezone.utc).isoformat(),
            "path": str(self.path) if self.path else None,
        }


def parse_message(raw: bytes, mail_from: str, rcpt_tos: list[str], received_at: float) -> SinkMessage:
    message: EmailMessage = BytesParser(policy=policy.default).parsebytes(raw)
    text = message.get_body(preferencelist=("plain",))
    rich = message.get_body(preferencelist=("html",))
    return SinkMessage(
        subject=str(message.get("Subject", "")),
        sender=str(message.get("From", "")),
        to=list(rcpt_tos),
        body=text.get_content() if text is not None else "",
        html=rich.get_content() if rich is not None else None,
        message_id=str(message["Message-ID"]) if message["Message-ID"] else None,
        mail_from=mail_from,
        received_at=received_at,
        raw=raw,
    )


class _Handler:
    """aiosmtpd hooks: refuse on purpose when asked to, otherwise keep the message."""

    def __init__(self, sink: "SmtpSink"):
        self.sink = sink

    async def handle_DATA(self, server, session, envelope) -> str:
        failure = self.sink._take_failure()
        if failure is not None:
            return failure
        if self.sink._take_hold():
            # Held (tests: a sender killed while it waits for the answer). The message is never kept:
            # the sender saw no 250, so for it nothing was delivered.
            await asyncio.to_thread(self.sink._release.wait)
            return "451 4.3.0 Held, then dropped"
        self.sink._store(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"


class _PortZeroController(Controller):
    # aiosmtpd connects to `self.port` to check the server is up, which fails for
    # port 0: learn the port the OS picked as soon as the socket is bound.
    def _create_server(self):
        async def bind():
            server = await self.loop.create_server(
                self._factory_invoker, host=self.hostname, port=self.port, ssl=self.ssl_context
            )
            self.port = server.sockets[0].getsockname()[1]
            return server

        return bind()

    def factory(self):
        # AUTH without TLS is what a loopback test sink does on purpose; aiosmtpd
        # warns about it on every connection.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
            return super().factory()


class SmtpSink:
    """An SMTP server on loopback that keeps what it receives (see the module docstring)."""

    def __init__(
        self,
        maildir: Path | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ):
        self.maildir = Path(maildir) if maildir is not None else None
        self._credentials = (username, password) if username is not None else None
        self._tls_cert, self._tls_key = tls_cert, tls_key
        self._lock = threading.Lock()
        self._messages: list[SinkMessage] = []
        self._failures: list[str] = []
        self._holds = 0  # hold_next: messages still to hold at DATA
        self.held = 0  # messages held so far (a sender is waiting for the answer)
        self._release = threading.Event()
        self._seq = 0
        self._controller: Controller | None = None
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self.auth_attempts: list[tuple[str, bool]] = []  # (login, accepted): never the password
        self.host: str | None = None
        self.port: int | None = None

    def __repr__(self) -> str:
        return f"SmtpSink(host={self.host!r}, port={self.port!r}, messages={len(self._messages)})"

    # ------------------------------------------------------------ lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        if self._controller is not None:
            raise RuntimeError("SmtpSink already started")
        if self.maildir is not None:
            self.maildir.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"server_hostname": "smtp-sink.local", "ready_timeout": 10.0}
        if self._tls_cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self._tls_cert), str(self._tls_key) if self._tls_key else None)
            kwargs.update(tls_context=context, require_starttls=True)
        if self._credentials is not None:
            kwargs.update(
                authenticator=self._authenticate,
                auth_required=True,
                auth_require_tls=self._tls_cert is not None,
                # One mechanism only, so one refused login is one AUTH exchange.
                auth_exclude_mechanism=["LOGIN"],
            )
        controller = _PortZeroController(_Handler(self), hostname=host, port=port, **kwargs)
        controller.start()
        self._controller = controller
        self.host, self.port = host, controller.port
        log.info("SMTP sink listening on %s:%s", self.host, self.port)
        return self.host, self.port

    def start_http(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve the mailbox page (`/`), `/messages.json` and `/messages/<n>` (the raw .eml)."""
        if self._http is not None:
            raise RuntimeError("mailbox page already started")
        handler = type("_BoundMailboxHandler", (_MailboxHandler,), {"sink": self})
        server = ThreadingHTTPServer((host, port), handler)
        server.daemon_threads = True
        self._http = server
        self._http_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="smtp-sink-http", daemon=True
        )
        self._http_thread.start()
        bound_host, bound_port = server.server_address[:2]
        return f"http://{bound_host}:{bound_port}"

    def stop(self) -> None:
        self._release.set()  # no handler thread left waiting
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
            if self._http_thread is not None:
                self._http_thread.join(timeout=5)
                self._http_thread = None
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> "SmtpSink":
        if self._controller is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------- mailbox

    def messages(self) -> list[SinkMessage]:
        with self._lock:
            return list(self._messages)

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[SinkMessage]:
        """Poll until at least `count` messages arrived; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages()
            if len(messages) >= count:
                return messages
            if time.monotonic() >= deadline:
                raise TimeoutError(f"SMTP sink got {len(messages)} message(s), expected {count} within {timeout}s")
            time.sleep(0.02)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            self._failures.clear()

    def fail_next(self, count: int = 1, code: int = 451, text: str = "4.3.0 Try again later") -> None:
        """Refuse the next `count` messages at DATA with `code` (4xx transient, 5xx permanent)."""
        with self._lock:
            self._failures.extend([f"{code} {text}"] * count)

    @property
    def pending_failures(self) -> int:
        """How many of the `fail_next` refusals are still to come."""
        with self._lock:
            return len(self._failures)

    def hold_next(self, count: int = 1) -> None:
        """Keep the next `count` senders waiting at DATA until `release_held()`; those messages are dropped."""
        with self._lock:
            self._holds += count
            self._release.clear()

    def release_held(self) -> None:
        """Answer every held sender (451) and stop holding; held messages are not kept."""
        with self._lock:
            self._holds = 0
        self._release.set()

    def _take_hold(self) -> bool:
        with self._lock:
            if self._holds <= 0:
                return False
            self._holds -= 1
            self.held += 1
            return True

    def _take_failure(self) -> str | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword) or self._credentials is None:
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode(errors="replace")
        ok = (login, auth_data.password.decode(errors="replace")) == self._credentials
        with self._lock:
            self.auth_attempts.append((login, ok))
        # handled=False: let aiosmtpd answer 235/535 itself.
        return AuthResult(success=ok, handled=False)

    def _store(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> None:
        received_at = time.time()
        message = parse_message(raw, mail_from, rcpt_tos, received_at)
        with self._lock:
            self._seq += 1
            seq = self._seq
        path = None
        if self.maildir is not None:
            stamp = datetime.fromtimestamp(received_at, tz=timezone.utc).strftime("%Y%m%dT%H%M%S")
            path = self.maildir / f"{stamp}-{seq:05d}.eml"
            # The envelope goes in as headers, like aiosmtpd's Message handler: Bcc shows too.
            envelope = f"X-MailFrom: {mail_from}\r\nX-RcptTo: {', '.join(rcpt_tos)}\r\n".encode()
            path.write_bytes(envelope + raw)
        message = SinkMessage(**{**message.__dict__, "path": path})
        with self._lock:
            self._messages.append(message)
        log.info("SMTP sink: %r from %s to %s", message.subject, mail_from, ", ".join(rcpt_tos))


class _MailboxHandler(BaseHTTPRequestHandler):
    sink: SmtpSink

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        messages = self.sink.messages()
        if self.path in ("/", "/index.html"):
            rows = "".join(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><a href='/messages/{}'>{}</a></td></tr>".format(
                    html_lib.escape(m.as_dict()["received_at"][:19]),
                    html_lib.escape(m.sender),
                    html_lib.escape(", ".join(m.to)),
                    i,
                    html_lib.escape(m.subject or "(no subject)"),
                )
                for i, m in reversed(list(enumerate(messages)))
            )
            page = (
                "<!doctype html><meta charset='utf-8'><meta http-equiv='refresh' content='5'>"
                "<title>Mailbox</title><style>body{font-family:sans-serif}td{padding:2px 10px}</style>"
                f"<h1>Mailbox ({len(messages)})</h1><table><tr><th>received (UTC)</th><th>from</th>"
                f"<th>to</th><th>subject</th></tr>{rows}</table>"
            )
            self._send(200, "text/html; charset=utf-8", page.encode())
        elif self.path == "/messages.json":
            self._send(200, "application/json", json.dumps([m.as_dict() for m in messages]).encode())
        elif self.path.startswith("/messages/") and self.path.rsplit("/", 1)[1].isdigit():
            index = int(self.path.rsplit("/", 1)[1])
            if index >= len(messages):
                self._send(404, "text/plain", b"no such message")
            else:
                self._send(200, "text/plain; charset=utf-8", messages[index].raw)
        else:
            self._send(404, "text/plain", b"not found")

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("mailbox %s", format % args)
