"""End to end on the emergency path: signed critical event on real Kafka -> stop-loss run -> flat + risk mail.

Everything real, as `arb-orchestration dev` runs it minus the web UI: the Apache Kafka broker
(fixture `kafka_broker`), the local world (exchange simulator, SMTP sink: fixture `world`), the
Dagster daemon with its code server for `arb_orchestration.definitions` on a fresh DAGSTER_HOME
with the shipped dagster_local.yaml (prepared by `arb-orchestration dev`'s own helper), and the
warm worker. The event is produced with `arb-orchestration publish` (validated and signed with
EVENT_SIGNING_KEY). The test asserts that the market shock sensor turned it into one
`emergency_stop_loss_saga` run, that the warm worker ran it (the fast path, not the fallback),
that every simulated venue ends flat through reduce-only orders, and that the risk team's mail
arrived in the SMTP sink. Latency is measured by bench/stop_loss_latency.py, not here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE = 180.0  # daemon + code server + worker warm-up on a loaded 2-core machine
RUN_DEADLINE = 120.0


def _wait(predicate, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@pytest.fixture
def platform(world, kafka_broker, monkeypatch):
    """Daemon + code server + warm worker against the world and the broker; yields (home, instance, prefix)."""
    from dagster import DagsterInstance

    from arb_orchestration.commands.dev import prepare_dagster_home
    from arb_orchestration.domain.events import MARKET_EVENTS, dlq_topic, topic_name
    from arb_orchestration.launcher.local import socket_address, start_worker, stop_worker, wait_until_ready

    prefix = f"e2e{uuid.uuid4().hex[:8]}."
    for name in (topic_name(MARKET_EVENTS, prefix), dlq_topic(topic_name(MARKET_EVENTS, prefix))):
        kafka_broker.create_topic(name, partitions=1)
    home = prepare_dagster_home(Path(tempfile.mkdtemp(prefix="arbe-", dir="/tmp")))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap)
    monkeypatch.setenv("ARB_EVENT_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    env = dict(os.environ)
    worker = daemon = None
    try:
        worker = start_worker(env, dagster_home=home, cwd=REPO_ROOT,
                              stdout=open(home / "worker.log", "ab"), stderr=subprocess.STDOUT)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "dagster._daemon", "run", "-m", "arb_orchestration.definitions"],
            env=env, cwd=REPO_ROOT, stdout=open(home / "daemon.log", "ab"), stderr=subprocess.STDOUT,
            start_new_session=True,  # its code server and any stock run process share its group
        )
        hello = wait_until_ready(socket_address(home), START_DEADLINE, proc=worker)
        assert hello is not None, f"warm worker did not come up:\n{_tail(home / 'worker.log')}"
        instance = DagsterInstance.get()

        def sensor_ticked():
            from dagster._core.scheduler.instigation import InstigatorType

            assert daemon.poll() is None, f"the daemon exited:\n{_tail(home / 'daemon.log')}"
            return any(state.name == "market_shock_sensor" and state.instigator_data is not None
                       and getattr(state.instigator_data, "last_tick_start_timestamp", None)
                       for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR))

        assert _wait(sensor_ticked, START_DEADLINE), f"the sensor never ticked:\n{_tail(home / 'daemon.log')}"
        yield home, instance, prefix
        instance.dispose()
    finally:
        if daemon is not None and daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGINT)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        if daemon is not None:
            try:
                os.killpg(daemon.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            daemon.wait(timeout=10)
        stop_worker(worker)
        shutil.rmtree(home, ignore_errors=True)


def test_signed_critical_event_flattens_every_venue_and_mails_the_risk_team(world, platform, capsys):
    from dagster import RunsFilter

    from arb_orchestration.commands import publish
    from arb_orchestration.launcher import WarmWorkerRunLauncher

    home, instance, _prefix = platform
    state = world.exchange.state
    before = {v: [p.symbol for p in state.positions(v) if p.size > 1e-9] for v in state.venue_names()}
    assert sum(map(len, before.values())) >= 5

    event_id = str(uuid.uuid4())
    shock = {"event_id": event_id, "venue": "binance", "symbol": "BTC/USDT:USDT", "price_change_pct": -14.2,
             "window_seconds": 60, "severity": "critical"}
    assert publish.main(["market-events", json.dumps(shock)]) == 0
    assert f"published {event_id} (signed)" in capsys.readouterr().out

    def finished_run():
        runs = instance.get_runs(filters=RunsFilter(tags={"arb/event_id": event_id}))
        return runs[0] if runs and runs[0].is_finished else None

    run = _wait(finished_run, RUN_DEADLINE)
    assert run is not None, f"no finished stop-loss run for the event:\n{_tail(home / 'daemon.log')}"
    assert run.job_name == "emergency_stop_loss_saga" and run.status.value == "SUCCESS", run.status
    assert len(instance.get_runs(filters=RunsFilter(tags={"arb/event_id": event_id}))) == 1
    placement = WarmWorkerRunLauncher.placement(run)
    assert placement is not None, f"the run did not take the fast path: {run.tags}\n{_tail(home / 'worker.log')}"

    assert {v: [p.symbol for p in state.positions(v) if p.size > 1e-9] for v in state.venue_names()} == {
        v: [] for v in before}
    for venue, symbols in before.items():
        orders = state.orders(venue, status="all")
        assert symbols == [] or (orders and all(o.reduce_only for o in orders)), (venue, orders)

    mails = world.smtp.wait_for(1, timeout=30)
    stop_loss_mails = [m for m in mails if m.subject.startswith("[stop-loss]")]
    assert stop_loss_mails, [m.subject for m in mails]
    # The verdict too, not just the event: every venue the world holds was flattened, and the mail must say so.
    assert stop_loss_mails[0].subject.startswith(f"[stop-loss] FLAT on {len(before)} venue(s)"), stop_loss_mails[0].subject
    assert event_id in stop_loss_mails[0].body
