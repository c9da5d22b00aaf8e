"""Robustness review, security of the warm worker's socket (docs/emergency-path.md).

- Over TCP the worker refuses to start without a shared token: otherwise anyone who can reach the
  port (a pod in the namespace if the NetworkPolicy is missing or wrong, an empty Secret) could
  have it fork run processes holding the exchange/Wise credentials.
- Over a unix socket both ends check who is on the other end (SO_PEERCRED): a process of another
  user listening on the worker's path (the per-home path in the temp dir is predictable) got the
  launcher's token and could answer "ok" to a launch, so the stop-loss was never run; and the
  worker only accepts clients of its own user (root allowed), whatever the file mode.

The uid tests start real processes as user `nobody` and need root; elsewhere they are skipped.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from arb_orchestration.launcher.__main__ import main as worker_main
from arb_orchestration.launcher.protocol import PROTOCOL_VERSION, WorkerAddress, WorkerUnavailable, call, send_frame
from arb_orchestration.launcher.worker import WarmWorker, WorkerOptions

MODULE = "arb_orchestration.definitions"
NOBODY = 65534
PYTHON = shutil.which("python3", path="/usr/bin:/bin")  # the venv's interpreter may not be readable by nobody
as_root = pytest.mark.skipif(os.geteuid() != 0 or PYTHON is None, reason="starts processes as another user")

# A stranger's server: listens on argv[1] and says yes to anything, printing what it got.
SQUATTER = r"""
import json, os, socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777); s.listen(4)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    try:
        n = struct.unpack(">I", c.recv(4))[0]; buf = b""
        while len(buf) < n: buf += c.recv(n - len(buf))
        print("got", json.loads(buf).get("token"), flush=True)
        body = json.dumps({"ok": True, "pid": 1, "ticks": 1, "host": "x", "address": "unix:/x"}).encode()
        c.sendall(struct.pack(">I", len(body)) + body)
    except Exception:
        pass
    c.close()
"""

# A stranger's client: connects to argv[1] and asks for a launch; prints what came back.
STRANGER = r"""
import json, socket, struct, sys
c = socket.socket(socket.AF_UNIX); c.settimeout(5); c.connect(sys.argv[1])
body = json.dumps({"v": 1, "op": "launch", "run_id": "evil", "args": "{}", "module": sys.argv[2]}).encode()
c.sendall(struct.pack(">I", len(body)) + body)
try:
    print("answer:", c.recv(100), flush=True)
except OSError as exc:
    print("answer: none,", exc, flush=True)
"""


@pytest.fixture
def shared_dir():
    path = tempfile.mkdtemp(prefix="arbs-", dir="/tmp")
    os.chmod(path, 0o777)  # like /tmp: anyone may create a socket here
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _script(directory: str, name: str, text: str) -> str:
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    return path


def test_worker_refuses_tcp_without_a_token(tmp_path, monkeypatch):
    loopback_any_port = WorkerAddress("tcp", host="127.0.0.1", port=0)
    worker = WarmWorker(WorkerOptions(address=loopback_any_port, modules=[MODULE], watch_paths=[tmp_path]))
    with pytest.raises(RuntimeError, match="without a token"):
        worker.bind()
    monkeypatch.delenv("ARB_WARM_WORKER_TOKEN", raising=False)
    with pytest.raises(SystemExit):  # the command line says so before spending its warm-up
        worker_main(["--address", "tcp:127.0.0.1:4999"])
    with_token = WarmWorker(WorkerOptions(address=loopback_any_port, modules=[MODULE], watch_paths=[tmp_path],
                                          token="s3cret"))
    with_token.bind()
    try:
        assert with_token.address.port > 0
    finally:
        with_token._close_listener()


@as_root
def test_launcher_does_not_talk_to_a_socket_of_another_user(shared_dir):
    path = os.path.join(shared_dir, "w.sock")
    squatter = subprocess.Popen([PYTHON, _script(shared_dir, "squat.py", SQUATTER), path], user=NOBODY,
                                stdout=subprocess.PIPE, text=True)
    try:
        assert squatter.stdout.readline().strip() == "listening"
        with pytest.raises(WorkerUnavailable, match=f"uid {NOBODY}") as refused:
            call(WorkerAddress.parse(f"unix:{path}"), {"op": "launch", "run_id": "r", "args": "{}"},
                 connect_timeout=1, timeout=2, token="SECRET")
        assert not refused.value.sent  # nothing was sent: the launcher falls back at once
    finally:
        squatter.kill()
        out = squatter.communicate(timeout=5)[0]
    assert "SECRET" not in out


@as_root
def test_worker_ignores_clients_of_another_user(shared_dir, tmp_path):
    worker = WarmWorker(WorkerOptions(address=WorkerAddress.parse(f"unix:{shared_dir}/w.sock"), modules=[MODULE],
                                      watch_paths=[tmp_path]))
    worker.bind()
    try:
        os.chmod(worker.address.path, 0o777)  # whatever the file mode (the moment between bind and chmod)
        stranger = subprocess.Popen([PYTHON, _script(shared_dir, "stranger.py", STRANGER), worker.address.path, MODULE],
                                    user=NOBODY, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while stranger.poll() is None and time.monotonic() < deadline:
            worker._accept_one()
            time.sleep(0.02)
        out, err = stranger.communicate(timeout=5)
        assert worker.children == {} and worker.launches == 0
        assert ("answer: b''" in out or "answer: none" in out), err  # closed without an answer
        # Our own user is served.
        own = worker.address.connect(1.0)
        try:
            send_frame(own, {"v": PROTOCOL_VERSION, "op": "hello"})
            worker._accept_one()
            own.settimeout(5)
            from arb_orchestration.launcher.protocol import recv_frame

            assert recv_frame(own)["ok"] is True
        finally:
            own.close()
    finally:
        worker._close_listener()
