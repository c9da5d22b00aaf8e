"""The wire protocol between the run launcher and the warm worker (no Dagster here).

One request per connection over a stream socket: a unix socket locally
(`unix:/path/warm-worker.sock`), TCP in Kubernetes (`tcp:host:port` or
`host:port`, e.g. the worker Service). A frame is a 4-byte big-endian length
and a UTF-8 JSON object. Requests carry `op` (`hello`, `launch`, `health`,
`terminate`) and, when the worker was started with one, the shared `token`;
replies carry `ok` and either the answer or `error`.

`WorkerUnavailable` means "the fast path cannot take this": the worker is not
listening, timed out, refused the run (stale code, other code location,
threads alive) or answered garbage. The launcher then falls back to the stock
launch path; it never loses a run because of the worker.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import struct
import tempfile
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 16 * 1024 * 1024  # ExecuteRunArgs are a few KB; this only bounds garbage
_HEADER = struct.Struct(">I")
# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_UNIX_PATH_BYTES = 107
DEFAULT_SOCKET_NAME = "warm-worker.sock"


def default_socket_path(dagster_home: str) -> str:
    """<DAGSTER_HOME>/warm-worker.sock, or a per-home path in the temp dir when that is too long for a socket."""
    home = os.path.abspath(dagster_home)
    path = os.path.join(home, DEFAULT_SOCKET_NAME)
    if len(path.encode()) <= MAX_UNIX_PATH_BYTES:
        return path
    digest = hashlib.sha256(home.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"arb-warm-worker-{digest}.sock")


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol."""


class WorkerUnavailable(Exception):
    """The warm worker cannot take this request; `reason` says why (for the run's event log)."""

    def __init__(self, reason: str, *, refused: bool = False, sent: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.refused = refused  # True: the worker answered and said no (not a transport problem)
        # True: the request went out and no answer came back — the worker may have acted on it.
        self.sent = sent


@dataclass(frozen=True)
class WorkerAddress:
    """Where the worker listens: a unix socket path or a TCP host and port."""

    kind: str  # "unix" | "tcp"
    path: str | None = None
    host: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> "WorkerAddress":
        """`unix:/run/w.sock`, `unix:///run/w.sock`, `tcp:host:port`, `tcp://host:port` or `host:port`."""
        value = (text or "").strip()
        if not value:
            raise ValueError("empty worker address")
        if value.startswith("unix:"):
            path = value[len("unix:"):]
            if path.startswith("//"):
                path = path[2:]
            if not path.startswith("/"):
                raise ValueError(f"unix socket path must be absolute: {text!r}")
            if len(path.encode()) > MAX_UNIX_PATH_BYTES:
                raise ValueError(f"unix socket path longer than {MAX_UNIX_PATH_BYTES} bytes: {path!r}")
            return cls("unix", path=path)
        if value.startswith("/"):
            return cls.parse("unix:" + value)
        if value.startswith("tcp:"):
            value = value[len("tcp:"):]
            if value.startswith("//"):
                value = value[2:]
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"worker address must be unix:/path or host:port, got {text!r}")
        return cls("tcp", host=host.strip("[]"), port=int(port))

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.kind == "unix" else f"tcp:{self.host}:{self.port}"

    def connect(self, timeout: float) -> socket.socket:
        if self.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(self.path)
                uid = peer_uid(sock)
                if not uid_trusted(uid):
                    # Whoever listens there is not us (e.g. squatting the per-home socket path in
                    # the temp dir): it would get the token and could swallow the run.
                    raise PermissionError(f"the process listening on {self.path} runs as uid {uid}, "
                                          f"not {os.getuid()}: not trusted")
            except BaseException:
                sock.close()
                raise
            return sock
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a unix socket (SO_PEERCRED); None elsewhere."""
    if sock.family != socket.AF_UNIX or not hasattr(socket, "SO_PEERCRED"):
        return None
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid


def uid_trusted(uid: int | None) -> bool:
    """A unix-socket peer may talk to us when it runs as our user (or root); None: not a unix socket."""
    return uid is None or uid in (os.getuid(), 0)


def send_frame(sock: socket.socket, message: dict[str, Any]) -> None:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    sock.sendall(_HEADER.pack(len(body)) + body)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, missing = [], size
    while missing:
        chunk = sock.recv(min(missing, 1 << 16))
        if not chunk:
            raise ProtocolError(f"connection closed with {missing} of {size} bytes unread")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket) -> dict[str, Any]:
    (size,) = _HEADER.unpack(_read_exactly(sock, _HEADER.size))
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(f"announced frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        message = json.loads(_read_exactly(sock, size))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


def token_matches(expected: str | None, given: Any) -> bool:
    """Constant-time check of the shared token; no token configured accepts anything."""
    if not expected:
        return True
    return isinstance(given, str) and hmac.compare_digest(expected.encode(), given.encode())


def call(
    address: WorkerAddress,
    request: dict[str, Any],
    *,
    connect_timeout: float,
    timeout: float,
    token: str | None = None,
) -> dict[str, Any]:
    """Send one request and return the worker's reply (`ok` true), else raise `WorkerUnavailable`."""
    message = {"v": PROTOCOL_VERSION, **request}
    if token:
        message["token"] = token
    try:
        sock = address.connect(connect_timeout)
    except OSError as exc:
        raise WorkerUnavailable(f"cannot connect to {address}: {exc}") from None
    sent = False
    try:
        sock.settimeout(timeout)
        send_frame(sock, message)
        sent = True
        reply = recv_frame(sock)
    except (OSError, ProtocolError) as exc:
        raise WorkerUnavailable(f"{address}: {type(exc).__name__}: {exc}", sent=sent) from None
    finally:
        sock.close()
    if not reply.get("ok"):
        raise WorkerUnavailable(str(reply.get("error") or "refused without a reason"), refused=True)
    return reply
