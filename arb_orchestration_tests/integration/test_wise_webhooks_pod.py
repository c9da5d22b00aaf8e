"""The receiver's container as k8s/wise-webhooks-deployment.yaml defines it, run as a process on
loopback against a real PostgreSQL (embedded) with the release's dagster.yaml.

The args, environment and mounts come from the manifest. Only what a cluster would provide is
substituted: the listen address (127.0.0.1 and a free port instead of 0.0.0.0:8704), each mount (a
temporary directory), the Secret's value (a dummy password: the embedded server trusts local
connections, but dagster.yaml's `password: {env: DAGSTER_PG_PASSWORD}` must resolve), and the
database's address in dagster.yaml, which is otherwise rendered from helm-values/ for prod, and for
prod with the fast-path overlay (`sslmode` dropped: the embedded server has no TLS). The process gets
no service-account token, no KUBERNETES_* variables and no other credential, so a receiver that
built the instance's run launcher (K8sRunLauncher, or WarmWorkerRunLauncher with its token) or
coordinator would fail here as it would in the pod.

- It starts; every probe path answers 200 from the instance's database; a signed delivery POSTed to
  the Ingress's path lands on the board, read back by another DagsterInstance on the same database.
- It opens no file for writing outside the manifest's emptyDir mounts (a Python audit hook in the
  process; C libraries' own writes are not seen): the read-only root filesystem holds. Its peak RSS
  stays below the container's memory request.
- SIGTERM: exit 0 well within terminationGracePeriodSeconds minus the preStop sleep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dagster import instance_for_test

from arb_orchestration.resources.wise import SENT
from arb_orchestration.resources.wise_webhooks import InstanceWebhookBoard
from arb_orchestration.sim.wise_production import WiseWebhookEmitter
from arb_orchestration_tests.unit import deploy_model as model
from arb_orchestration_tests.unit.test_dockerfile import DOCKERFILE, _env, parse_dockerfile

pytestmark = pytest.mark.integration

MANIFEST = model.K8S_DIR / "wise-webhooks-deployment.yaml"
STORAGES = ("run_storage", "event_log_storage", "schedule_storage")
START_TIMEOUT = 60.0  # importing Dagster on a busy 2-core machine

# Run in the receiver's process before the command: record every open-for-writing (and every
# filesystem change) outside the writable mounts. argv: [-c, LOG, ALLOWED(os.pathsep-joined), *command args]
AUDITED_MAIN = r"""
import os, sys
log, allowed = open(sys.argv[1], "a", buffering=1), tuple(sys.argv[2].split(os.pathsep))
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
CHANGES = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.symlink", "os.link", "os.chmod",
           "os.chown", "os.truncate", "os.utime", "shutil.copyfile", "shutil.rmtree"}

def outside(path):
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str):
        return False  # a file descriptor
    real = os.path.realpath(path)
    return real != os.devnull and not any(real == a or real.startswith(a + os.sep) for a in allowed)

def hook(event, args):
    if event == "open" and args[2] is not None and args[2] & WRITE and outside(args[0]):
        log.write(f"open {args[0]!r}\n")
    elif event in CHANGES and args and outside(args[0]):
        log.write(f"{event} {args[0]!r}\n")

sys.addaudithook(hook)
del sys.argv[1:3]
from arb_orchestration.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _container_and_pod() -> tuple[dict, dict]:
    (deployment,) = [d for d in model.load_yaml_documents(MANIFEST) if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container, pod


def _bytes(quantity: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    return int(quantity[:-2]) * units[quantity[-2:]]


def _pem_pair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


@pytest.fixture(scope="module")
def wise_keys():
    return _pem_pair()


def _release_instance(environment: str, server, db: str) -> dict:
    """dagster.yaml of the release (the ConfigMap dagster-instance), pointed at the embedded server."""
    instance = model.render_instance(model.merged_values(environment))
    for storage in STORAGES:
        postgres = instance[storage]["config"]["postgres_db"]
        assert postgres["password"] == {"env": "DAGSTER_PG_PASSWORD"}
        # libpq's `host` parameter (a directory: the unix socket) wins over the URL's host name.
        postgres.update(hostname="localhost", port=server.port, username=server.user, db_name=db,
                        params={"host": str(server.socket_dir)})
    return instance


class PodProcess:
    """The container's process: manifest args/env/mounts mapped onto local directories."""

    def __init__(self, root: Path, container: dict, pod: dict, instance_yaml: dict, public_pem: bytes):
        self.root = root
        volumes = {v["name"]: v for v in pod["volumes"]}
        self.mounts: dict[str, Path] = {}  # mount path in the pod -> local path
        writable: list[str] = []
        for mount in container["volumeMounts"]:
            volume = volumes[mount["name"]]
            local = root / "mounts" / mount["name"]
            if "subPath" in mount:  # a file laid over a directory mounted elsewhere
                continue
            local.mkdir(parents=True)
            self.mounts[mount["mountPath"]] = local
            if "emptyDir" in volume:
                writable.append(str(local.resolve()))
            elif "configMap" in volume:
                for item in volume["configMap"]["items"]:
                    assert item["key"] == "public-key.pem", item  # the only ConfigMap with items
                    (local / item["path"]).write_bytes(public_pem)
        for mount in container["volumeMounts"]:
            if "subPath" in mount:
                assert volumes[mount["name"]]["configMap"]["name"] == "dagster-instance"
                assert mount["subPath"] == "dagster.yaml"
                Path(self.local(mount["mountPath"])).write_text(yaml.safe_dump(instance_yaml))
        home = root / "home"  # the image user's HOME is on the read-only root: not writable here either
        home.mkdir()
        # The image's ENV (PYTHONDONTWRITEBYTECODE, ...), then the container's env, paths mapped.
        (*_, runtime) = parse_dockerfile(DOCKERFILE.read_text())[1]
        image_env = {k: v for k, v in _env(runtime).items() if "$" not in v}  # PATH: this machine's
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TMPDIR": self.local("/tmp")}
        for name, value in image_env.items():
            env[name] = self.local(value) if value.startswith("/") else value
        for item in container["env"]:
            if "value" in item:
                env[item["name"]] = self.local(item["value"]) if item["value"].startswith("/") else item["value"]
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                assert (ref["name"], ref["key"]) == ("arb-dagster-postgresql", "postgresql-password"), ref
                env[item["name"]] = "not-a-real-password"
        args = list(container["args"])
        assert args[0] == "arb-orchestration"
        args[args.index("--host") + 1] = "127.0.0.1"
        args[args.index("--port") + 1] = "0"
        self.writes_log = root / "writes.log"
        self.stderr_path = root / "stderr.log"
        cwd = root / "workdir"  # the image's WORKDIR is on the read-only root too
        cwd.mkdir()
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", AUDITED_MAIN, str(self.writes_log), os.pathsep.join(writable), *args[1:]],
            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def local(self, pod_path: str) -> str:
        """Where a path of the pod is here; a path on the pod's (read-only) root stays as it is."""
        bases = [p for p in self.mounts if pod_path == p or pod_path.startswith(p + "/")]
        if not bases:
            return pod_path
        base = max(bases, key=len)
        return str(self.mounts[base] / os.path.relpath(pod_path, base))

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.strip())
            if line.startswith("listening on "):
                self._ready.set()

    def base_url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready.wait(0.1) and self.proc.poll() is None and time.monotonic() < deadline:
            pass
        if not self._ready.is_set():
            self.kill()
            pytest.fail(f"the receiver did not start: {self.lines} {self.stderr()}")
        url = urlsplit(self.lines[-1].split()[2])
        return f"{url.scheme}://{url.netloc}"

    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text()[-3000:]

    def peak_rss(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        (line,) = [line for line in status.splitlines() if line.startswith("VmHWM:")]
        return int(line.split()[1]) * 1024

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._drainer.join(5)  # the pipe reached its end with the process
        self.proc.stdout.close()
        self._stderr.close()


@pytest.mark.parametrize("environment", ["prod", "prod-fast-path"])
def test_the_pod_serves_the_board_of_the_release_instance(environment, postgres_server, _dagster_pg_template,
                                                          wise_keys, tmp_path):
    container, pod = _container_and_pod()
    db = postgres_server.fresh_database("wisewh", template=_dagster_pg_template)
    private_pem, public_pem = wise_keys
    receiver = PodProcess(tmp_path, container, pod, _release_instance(environment, postgres_server, db), public_pem)
    try:
        base = receiver.base_url()
        with httpx.Client(base_url=base, timeout=10.0) as http:
            for probe in ("startupProbe", "readinessProbe"):
                answer = http.get(container[probe]["httpGet"]["path"])
                assert answer.status_code == 200, (probe, answer.text)
                assert answer.json()["board"] == "InstanceWebhookBoard", probe
            answer = http.get(container["livenessProbe"]["httpGet"]["path"])
            assert answer.status_code == 200 and answer.json() == {"status": "alive"}

        (ingress,) = [d for d in model.load_yaml_documents(model.K8S_DIR / "wise-webhooks-service.yaml")
                      if d["kind"] == "Ingress"]
        (route,) = [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
        wise = WiseWebhookEmitter(None, base + route, private_pem)  # signs and posts; no simulator needed
        try:
            body = wise.event_body(880001, 1001, SENT, "processing", time.time())
            assert wise.deliver(body) == 200
            assert wise.deliver(body, signature=wise.sign(b"another body")) == 400
        finally:
            wise.stop()

        url = postgres_server.url(db)
        with instance_for_test(overrides={"storage": {"postgres": {"postgres_url": url}}}) as reader:
            event = InstanceWebhookBoard(reader).state(880001)
        assert event is not None and event.current_state == SENT

        request = _bytes(container["resources"]["requests"]["memory"])
        assert receiver.peak_rss() < request, f"peak RSS {receiver.peak_rss() / 2**20:.0f} MiB"

        began = time.monotonic()
        receiver.proc.send_signal(signal.SIGTERM)
        rc = receiver.proc.wait(timeout=pod["terminationGracePeriodSeconds"])
        stopped_in = time.monotonic() - began
        assert rc == 0, receiver.stderr()
        pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
        assert pre_stop + stopped_in < pod["terminationGracePeriodSeconds"] / 2, stopped_in
        assert any(line.startswith("stopped;") for line in receiver.lines), receiver.lines
    finally:
        receiver.kill()
        postgres_server.drop_database(db)
    writes = receiver.writes_log.read_text() if receiver.writes_log.exists() else ""
    assert writes == "", f"writes outside the emptyDir mounts (read-only root in the pod):\n{writes}"
