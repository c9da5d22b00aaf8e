"""Self-fencing of a saga claim on PostgreSQL (the production storage), with a real partition.

The holder (A) reaches the claims through a unix-socket relay in front of the embedded server;
mid-compensation the relay is cut (open connections dropped, new ones closed at once), so every
renewal of A fails the way a partition makes it fail, inside dagster-postgres's own connection
retries. A's saga log goes to the server directly, so only the fence can stop A. A second actor
(B) tries all along: it is refused while A's lease lives, takes over only once it has run out, and
compensates the saga; A stops at its next safe point (`Action.CLAIM_LOST`), having made no call
after the one in flight and written nothing (unit/test_claim_fencing.py
`check_cut_off_holder_never_acts_with_a_second_actor`, also run there on SQLite).
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import urllib.parse

import pytest
from dagster import instance_for_test

from arb_orchestration.saga import InstanceSagaClaims
from arb_orchestration_tests.unit.test_claim_fencing import check_cut_off_holder_never_acts_with_a_second_actor

pytestmark = pytest.mark.integration


class UnixRelay:
    """Forwards a PostgreSQL unix socket; `cut()` drops every connection and refuses new ones."""

    def __init__(self, target: str, port: int) -> None:
        self.target = target
        self.dir = tempfile.mkdtemp(prefix="arb-pg-relay-")
        self.path = os.path.join(self.dir, f".s.PGSQL.{port}")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(64)
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._cut = False
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="pg-relay").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._cut:
                    client.close()
                    continue
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                upstream.connect(self.target)
                self._open += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            dropped, self._open = self._open, []
        for s in dropped:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()


def test_a_holder_partitioned_from_postgres_fences_itself_and_the_next_actor_takes_over(
        pg_dagster_instance, postgres_server):
    url = pg_dagster_instance.run_storage.postgres_url
    relay = UnixRelay(os.path.join(str(postgres_server.socket_dir), f".s.PGSQL.{postgres_server.port}"),
                      postgres_server.port)
    try:
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        query["host"] = relay.dir
        relayed = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
        with instance_for_test(overrides={"storage": {"postgres": {"postgres_url": relayed}}}) as through_relay:
            claims_a = InstanceSagaClaims(through_relay)
            assert claims_a.holder("nobody") is None  # the relay works before it is cut
            check_cut_off_holder_never_acts_with_a_second_actor(pg_dagster_instance, claims_a, relay.cut,
                                                                 relay.restore, ttl=2.0, b_tries_while_cut=True)
    finally:
        relay.close()
