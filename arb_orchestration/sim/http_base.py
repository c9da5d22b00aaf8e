"""The HTTP plumbing the simulators' keep-alive JSON servers share.

`LoopbackHTTPServer` tracks its open connections so `stop()` can close idle
keep-alive sockets (a stopped simulator must really refuse clients), and listens
with a backlog large enough for a parallel stop-loss. `KeepAliveHandler` turns
on TCP_NODELAY, routes every method to `_serve(method)` and writes a JSON answer
(or, for an injected fault, none).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that can close its keep-alive connections on stop."""

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a stop-loss opens ~45 connections at once
    # (5 venues x 9 threads), the kernel drops the SYNs beyond the backlog and the client
    # retries them only after its 1 s SYN timeout (measured: bench/stop_loss_parallel.py).
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]):
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class KeepAliveHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive; subclasses implement `_serve(method)`."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections are closed after this

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle + delayed ACK
        # stall every keep-alive response by ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self, method: str) -> None:
        raise NotImplementedError

    def _drop(self, hang_s: float) -> None:
        """Answer nothing (an injected fault): hold the connection up to `hang_s` or until stop, then close it."""
        if hang_s > 0:
            self.server.stopping.wait(hang_s)
        self.close_connection = True

    def _send_json(self, status: int, payload: bytes, headers: Mapping[str, str], content_type: str) -> None:
        """Write one JSON response; a client that has already gone away only closes the connection."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 - stdlib names
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")
