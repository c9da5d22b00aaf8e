"""`arb-orchestration world` as an operator runs it: a real process on free ports that writes an
environment file other shells can load, creates the topics, answers on the URLs it wrote, and stops
cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request

import pytest

from arb_orchestration.commands.topics import all_topic_names
from arb_orchestration.resources.kafka import KafkaResource

pytestmark = pytest.mark.integration


def read_env_file(path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        values[key] = value
    return values


def test_world_writes_a_loadable_env_file_and_creates_the_topics(tmp_path):
    env_file = tmp_path / "home" / "world.env"
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP_SERVERS", "ARB_EVENT_TOPIC_PREFIX", "EXCHANGE_SIM_API_KEY")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "arb_orchestration.cli", "world", "--exchange-port", "0", "--wise-port", "0",
         "--smtp-port", "0", "--mailbox-port", "0", "--maildir", str(tmp_path / "mail"),
         "--env-file", str(env_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not any("Ctrl-C to stop." in line for line in lines):
            assert time.monotonic() < deadline, "world did not come up:\n" + "".join(lines)
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "world exited:\n" + "".join(lines)
            lines.append(line)
        out = "".join(lines)
        assert f"set -a; . {env_file}; set +a" in out
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        values = read_env_file(env_file)
        for key in ("EXCHANGE_SIM_URL", "EXCHANGE_SIM_API_KEY", "WISE_API_URL", "SMTP_PORT",
                    "KAFKA_BOOTSTRAP_SERVERS", "EVENT_SIGNING_KEY"):
            assert values.get(key), f"{key} missing from {env_file}: {sorted(values)}"
        assert "export" not in env_file.read_text()  # `set -a; . file` form, like dev's world.env
        assert values["EXCHANGE_SIM_API_KEY"] not in out  # secrets only in the file unless --print-env

        request = urllib.request.Request(f"{values['EXCHANGE_SIM_URL']}/venues",
                                         headers={"X-API-Key": values["EXCHANGE_SIM_API_KEY"]})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

        kafka = KafkaResource(bootstrap_servers=values["KAFKA_BOOTSTRAP_SERVERS"])
        for name in all_topic_names(""):
            assert kafka.partitions_for(name) == [0, 1, 2, 3], name
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0
