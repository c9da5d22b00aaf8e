"""The HTTP plumbing the simulators' keep-alive JSON servers share.

`LoopbackHTTPServer` tracks its open connections so `stop()` can close idle
keep-alive sockets (a stopped simulator must really refuse clients), and listens
with a backlog large enough for a parallel stop-loss. `KeepAliveHandler` turns
on TCP_NODELAY and routes every method to `_serve(method)`.
"""

from __future__ import annotations

import socket
import threading
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

    def do_GET(self) -> None:  # noqa: N802 - stdlib names
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")
