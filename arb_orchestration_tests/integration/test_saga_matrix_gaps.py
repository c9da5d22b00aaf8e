"""The saga test matrix's missing cells (docs/saga-test-matrix.md), against the real local world.

Every test here talks to the exchange and Wise simulators over HTTP, the SMTP sink, and a real
Dagster instance (SQLite in a temp dir), and injects its faults through the simulators' own
fault hooks. Covered:

* SIGKILL of a real run process (a child `python -m` of this module) at each step boundary of
  `auto_rebalance_saga` (plan; prepare after the Wise transfer exists; the pivot after the venue
  applied a withdrawal whose answer never came back; the pivot between the withdrawal and the Wise
  funding; await; verify), `funding_rate_hedge` (a leg applied but unanswered; the stops step) and
  `emergency_stop_loss_saga` (a close applied but unanswered; the mail step). The real recovery
  sensor then compensates (before the pivot) or relaunches forward (after it), and a second pass of
  both recovery sensors does nothing.
* Failures at the Wise sub-steps of prepare (quote, recipient, transfer; and a transfer created whose
  answer is lost on every try), timeout-after-commit on the compensations' own calls (cancel
  withdrawal, cancel Wise transfer, the hedge unwind order), on stop creation and stop cancellation,
  and on the stop-loss's cancel-all; forward recovery of a failed hedge stops step and of a failed
  stop-loss mail; re-executing a rolled-back rebalance moves nothing.

How a child is stopped at a boundary without the blocked call taking effect: a `latency` fault
plus an error fault on the endpoint the next step calls first (the simulator waits, then answers
an error and applies nothing); the test SIGKILLs the child once the fault has fired. Where the
call must take effect first ("applied, answer lost"), `timeout_after_commit` with a hang longer
than the test can wait, and the child's client timeout longer than that.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    EnvVar,
    ReexecutionOptions,
    RetryPolicy,
    build_reconstructable_job,
    build_run_status_sensor_context,
    build_sensor_context,
    execute_job,
    instance_for_test,
)

from arb_orchestration.defs.hedging import HedgeJournalResource, build_funding_rate_hedge
from arb_orchestration.defs.hedging.steps import PLACE, STOPS
from arb_orchestration.defs.k8s import STOP_LOSS_JOB
from arb_orchestration.defs.rebalance import RebalanceJournalResource, build_auto_rebalance_saga
from arb_orchestration.defs.stop_loss import saga as stop_loss_module
from arb_orchestration.defs.stop_loss import stop_loss_saga
from arb_orchestration.resources.resilience import reset_breakers
from arb_orchestration.resources.smtp import SmtpResource
from arb_orchestration.resources.wise import WiseResource
from arb_orchestration.saga import Action, InstanceSagaLog, RecordKind, SagaStep, Verdict, build_saga, decide, recover_run
from arb_orchestration_tests.integration.world_resources import world_exchange, world_smtp

pytestmark = pytest.mark.integration

FAST_RETRY = RetryPolicy(max_retries=1, delay=0.05)
REBALANCE = build_auto_rebalance_saga(retry_policy=FAST_RETRY)
HEDGE = build_funding_rate_hedge(retry_policy=FAST_RETRY)
# The production stop-loss steps with quick op retries (production: 3 retries, up to 14 s apart).
STOP_LOSS = build_saga(
    STOP_LOSS_JOB,
    [SagaStep(s.name, s.action, s.compensation, pivot=s.pivot, retry_policy=FAST_RETRY)
     for s in stop_loss_saga.definition.steps],
    config=stop_loss_module.StopLossConfig, retry_policy=FAST_RETRY, refuse_while_trading_paused=False,
    max_forward_attempts=stop_loss_saga.definition.max_forward_attempts,
)
SAGAS = {"rebalance": REBALANCE, "hedge": HEDGE, "stop_loss": STOP_LOSS}
REBALANCE_FAST = {"poll_interval_seconds": 0.05, "arrival_timeout_seconds": 15.0}
BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
CHILD_ENV = "SAGA_MATRIX_CHILD"
CHILD_DEADLINE = 60.0
BLOCK_SECONDS = 8.0  # how long a blocked simulator request waits before its error answer (the kill comes first)


# ----------------------------------------------------------------------------- resources


def resources(saga: str, *, timeout: float = 2.0) -> dict:
    """The platform's resources pointed at the world. The child gets a long `timeout` (see the module doc)."""
    exchange = world_exchange(timeout_seconds=timeout, max_attempts=2, retry_base_delay=0.02)
    out = {"exchange": exchange, "smtp": world_smtp()}
    if saga == "rebalance":
        out["wise"] = WiseResource(
            base_url=os.environ["WISE_API_URL"], api_token=EnvVar("WISE_API_TOKEN"),
            profile_id=int(os.environ["WISE_PROFILE_ID"]), timeout_seconds=timeout, max_attempts=2,
            retry_base_delay=0.01, poll_interval_seconds=0.05,
        )
        out["rebalance_journal"] = RebalanceJournalResource()
    if saga == "hedge":
        out["hedge_journal"] = HedgeJournalResource()
    return out


def rebalance_job_for_world():
    """Reconstructable target for re-execution."""
    return Definitions(jobs=[REBALANCE.job], resources=resources("rebalance")).get_job_def(REBALANCE.job.name)


def _recovery_resources(saga: str) -> dict:
    keys = SAGAS[saga].definition.compensation_resource_keys
    return {k: v for k, v in resources(saga).items() if k in keys}


# ----------------------------------------------------------------------------- the world's books


def _books(world) -> dict:
    """Balances, positions, withdrawals, orders, Wise balance and transfers: what 'nothing moved' compares."""
    state = world.exchange.state
    return {
        "balances": {v: {a: round(b.total, 9) for a, b in state.balances(v).items()} for v in state.venue_names()},
        "positions": _exposure(world),
        "withdrawals": [(w.id, w.status) for v in state.venue_names() for w in state.withdrawals(v)],
        "wise_balance": world.wise.balances(),
        "wise_transfers": [(t["id"], t["status"]) for t in world.wise.transfers()],
    }


def _exposure(world) -> dict:
    state = world.exchange.state
    return {v: sorted((p.symbol, p.side, round(p.size, 9)) for p in state.positions(v) if p.size > 1e-9)
            for v in state.venue_names()}


def _withdrawals(world) -> list:
    state = world.exchange.state
    return [w for v in state.venue_names() for w in state.withdrawals(v)]


def _orders(world, venue: str, **kw) -> list:
    return world.exchange.state.orders(venue, **kw)


def _assert_nothing_stray(world, before: dict) -> None:
    """Fully compensated: balances and positions back, every withdrawal/transfer created since cancelled."""
    after = _books(world)
    assert after["balances"] == before["balances"]
    assert after["positions"] == before["positions"]
    assert after["wise_balance"] == before["wise_balance"]
    assert all(status == "canceled" for _, status in after["withdrawals"]), after["withdrawals"]
    assert all(status == "cancelled" for _, status in after["wise_transfers"]), after["wise_transfers"]
    assert world.wise.deliveries == []


def _assert_rebalanced(world, wise_before: float) -> None:
    state = world.exchange.state
    assert state.balances("okx")["USDT"].free == pytest.approx(12_000.0)
    assert state.balances("bybit")["EUR"].free == pytest.approx(6_000.0)
    [withdrawal] = _withdrawals(world)  # exactly one, whatever the crashes and relaunches
    assert (withdrawal.from_venue, withdrawal.to_venue, withdrawal.status) == ("binance", "okx", "completed")
    [transfer] = world.wise.transfers()
    assert transfer["status"] == "outgoing_payment_sent"
    assert world.wise.balances()["EUR"] == pytest.approx(wise_before - transfer["sourceValue"])
    assert [d.amount for d in world.wise.deliveries] == [3_000.0]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def short(world):
    """okx: 4,000 USDT free (refilled to 12,000 from binance); bybit: 3,000 EUR (refilled to 6,000 via Wise)."""
    state = world.exchange.state
    state.credit("okx", "USDT", -(state.balances("okx")["USDT"].free - 4_000.0))
    state.credit("bybit", "EUR", -2_000.0)
    hold = state.withdrawal_hold
    yield world
    state.withdrawal_hold = hold


@pytest.fixture
def instance():
    with instance_for_test() as inst:
        yield inst


@pytest.fixture
def home():
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        yield Path(tmp)


# ----------------------------------------------------------------------------- the crash harness


def _child() -> int:
    spec = json.loads(os.environ[CHILD_ENV])
    instance = DagsterInstance.local_temp(os.environ["DAGSTER_HOME"])
    SAGAS[spec["saga"]].job.execute_in_process(
        instance=instance, run_config=spec["config"], resources=resources(spec["saga"], timeout=30.0),
        raise_on_error=False,
    )
    return 0


class Crash:
    """A saga run in a child process, SIGKILLed once `ready()` says it is at the boundary under test."""

    def __init__(self, home: Path, saga: str):
        self.home, self.saga = home, saga
        (home / "dagster").mkdir()
        self.instance = DagsterInstance.local_temp(str(home / "dagster"))  # schema first; the child opens it
        self.run_id: str | None = None

    def log(self):
        runs = self.instance.get_runs()
        return InstanceSagaLog(self.instance).load(runs[0].run_id) if runs else None

    def step_done(self, step: str) -> bool:
        state = self.log()
        return state is not None and state.step(step).done

    def run_and_kill(self, config: dict, ready: Callable[[], bool]) -> str:
        env = {**os.environ, "DAGSTER_HOME": str(self.home / "dagster"),
               CHILD_ENV: json.dumps({"saga": self.saga, "config": config})}
        err_path = self.home / "child.err"
        with open(err_path, "wb") as err:
            child = subprocess.Popen([sys.executable, "-m", __name__, "child"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=err)
            deadline = time.monotonic() + CHILD_DEADLINE
            try:
                while not ready():
                    if child.poll() is not None:
                        raise AssertionError(f"child exited before the boundary: {err_path.read_text()[-3000:]}")
                    assert time.monotonic() < deadline, f"child never reached the boundary: {err_path.read_text()[-3000:]}"
                    time.sleep(0.05)
                os.kill(child.pid, signal.SIGKILL)
                assert child.wait(timeout=30) == -signal.SIGKILL
            finally:
                if child.poll() is None:
                    os.kill(child.pid, signal.SIGKILL)
                    child.wait(timeout=30)
        [run] = self.instance.get_runs()
        assert run.status == DagsterRunStatus.STARTED  # no hook ran, nobody marked it
        # What the code server (locally) or run monitoring (Kubernetes) does for a dead run worker:
        self.instance.report_run_failed(run, "run worker exited unexpectedly (SIGKILL)")
        self.run_id = run.run_id
        return run.run_id

    def state(self):
        return InstanceSagaLog(self.instance).load(self.run_id)

    def failure_tick(self):
        """The real run-failure recovery sensor, one tick, on the killed run."""
        failure_sensor, _ = SAGAS[self.saga].recovery_sensors(grace_seconds=0)
        run = self.instance.get_run_by_id(self.run_id)
        event = self.instance.all_logs(self.run_id, of_type=DagsterEventType.RUN_FAILURE)[-1].dagster_event
        with build_run_status_sensor_context(
            sensor_name=failure_sensor.name, dagster_event=event, dagster_instance=self.instance, dagster_run=run,
            resources=_recovery_resources(self.saga),
        ) as ctx:
            return failure_sensor(ctx)

    def sweep_tick(self):
        _, sweep = SAGAS[self.saga].recovery_sensors(grace_seconds=0)
        with build_sensor_context(instance=self.instance, resources=_recovery_resources(self.saga)) as ctx:
            return sweep(ctx)

    def relaunch(self, request):
        """What the daemon would launch for the sensor's RunRequest, run here against the same instance."""
        return SAGAS[self.saga].job.execute_in_process(
            instance=self.instance, run_config=request.run_config, tags=request.tags,
            resources=resources(self.saga), raise_on_error=False,
        )

    def assert_second_pass_does_nothing(self, world) -> None:
        books, records = _books(world), len(self.state().records)
        assert self.failure_tick() is None
        skip = self.sweep_tick()
        assert "no failed saga runs needing recovery" in skip.skip_message, skip
        assert _books(world) == books
        assert len(self.state().records) == records

    def close(self):
        self.instance.dispose()


@pytest.fixture
def crash(home):
    made: list[Crash] = []

    def make(saga: str) -> Crash:
        made.append(Crash(home, saga))
        return made[-1]

    yield make
    for c in made:
        c.close()


def _block_exchange(world, endpoint: str, venue: str | None = None):
    """The next `endpoint` request waits BLOCK_SECONDS, then answers 503, applying nothing. Returns the latency rule."""
    where = {"endpoint": endpoint, **({"venue": venue} if venue else {})}
    world.exchange.faults.add({"kind": "error_5xx", "count": 1, **where})
    return world.exchange.faults.add({"kind": "latency", "latency_ms": BLOCK_SECONDS * 1000, "count": 1, **where})


def _hang_after_commit(world, endpoint: str, venue: str):
    """The next `endpoint` request is applied, then never answered (the child's client waits 30 s)."""
    return world.exchange.faults.add({"kind": "timeout_after_commit", "endpoint": endpoint, "venue": venue,
                                      "count": 1, "hang_ms": BLOCK_SECONDS * 1000})


# ----------------------------------------------------------------------------- rebalance: SIGKILL before the pivot


def _rebalance_compensated_after_kill(world, c: Crash, before: dict):
    assert c.failure_tick() is None  # compensates in the sensor: no run request
    state = c.state()
    assert decide(REBALANCE.definition, state).verdict is Verdict.COMPENSATED
    _assert_nothing_stray(world, before)
    c.assert_second_pass_does_nothing(world)
    return state


def test_sigkill_in_plan_is_compensated_nothing_moves(short, crash):
    world, c = short, crash("rebalance")
    before = _books(world)
    fault = _block_exchange(world, "networks")
    c.run_and_kill(REBALANCE_FAST, lambda: fault.hits >= 1)
    state = _rebalance_compensated_after_kill(world, c, before)
    assert state.step("plan_rebalance").started and not state.step("prepare_transfers").started
    assert world.wise.transfers() == [] and _withdrawals(world) == []


def test_sigkill_in_prepare_after_the_wise_transfer_cancels_it(short, crash):
    world, c = short, crash("rebalance")
    before = _books(world)
    fault = _block_exchange(world, "deposit_address", venue="okx")  # the withdrawal leg, after the Wise leg
    c.run_and_kill(REBALANCE_FAST, lambda: fault.hits >= 1)
    assert [t["status"] for t in world.wise.transfers()] == ["incoming_payment_waiting"]  # left behind by the kill
    state = _rebalance_compensated_after_kill(world, c, before)
    assert state.step("prepare_transfers").compensation["cancelled"] == [0]
    assert [t["status"] for t in world.wise.transfers()] == ["cancelled"]


def test_sigkill_while_the_venue_applies_the_withdrawal_cancels_it(short, crash):
    """The venue created the withdrawal, the answer never reached the run, the run died: only the key knows it."""
    world, c = short, crash("rebalance")
    world.exchange.state.withdrawal_hold = 30.0  # still cancellable when recovery comes
    before = _books(world)
    fault = _hang_after_commit(world, "create_withdrawal", "binance")
    c.run_and_kill(REBALANCE_FAST, lambda: fault.hits >= 1 and _withdrawals(world))
    assert [w.status for w in _withdrawals(world)] == ["pending"]
    assert not any(n.get("withdrawal_id") for n in c.state().step("commit_transfers").progress)  # never recorded
    state = _rebalance_compensated_after_kill(world, c, before)
    assert state.step("commit_transfers").compensation["cancelled"] == [1]
    assert [w.status for w in _withdrawals(world)] == ["canceled"]


def test_sigkill_between_the_withdrawal_and_the_wise_funding_undoes_both(short, crash):
    world, c = short, crash("rebalance")
    world.exchange.state.withdrawal_hold = 30.0
    before = _books(world)
    fault = world.wise.set_fault("fund_transfer", "latency", count=1, latency=BLOCK_SECONDS)
    world.wise.set_fault("fund_transfer", "error", count=1)  # after the wait: 503, nothing funded
    c.run_and_kill(REBALANCE_FAST, lambda: fault.fired >= 1)
    assert any(n.get("withdrawal_id") for n in c.state().step("commit_transfers").progress)  # noted before funding
    assert [t["status"] for t in world.wise.transfers()] == ["incoming_payment_waiting"]
    state = _rebalance_compensated_after_kill(world, c, before)
    assert state.step("commit_transfers").compensation["cancelled"] == [1]
    assert state.step("prepare_transfers").compensation["cancelled"] == [0]


# ----------------------------------------------------------------------------- rebalance: SIGKILL after the pivot


def _rebalance_finished_forward_after_kill(world, c: Crash, wise_before: float):
    request = c.failure_tick()
    assert request is not None and request.tags["arb/saga_recovery_of"] == c.run_id
    assert decide(REBALANCE.definition, c.state()).verdict is Verdict.FORWARD
    relaunch = c.relaunch(request)
    assert relaunch.success
    _assert_rebalanced(world, wise_before)
    state = c.state()
    assert decide(REBALANCE.definition, state).verdict is Verdict.COMPLETED
    assert [r.kind for r in state.records].count(RecordKind.FORWARD_REQUESTED) == 1
    assert state.step("commit_transfers").compensation is None  # never undone after the pivot
    c.assert_second_pass_does_nothing(world)


def test_sigkill_in_await_is_finished_forward_once(short, crash):
    world, c = short, crash("rebalance")
    world.exchange.state.withdrawal_hold = 1.5  # await is still polling when the kill comes
    wise_before = world.wise.balances()["EUR"]
    c.run_and_kill(REBALANCE_FAST, lambda: c.step_done("commit_transfers"))
    state = c.state()
    assert state.step("await_arrival").started and not state.step("await_arrival").done
    _rebalance_finished_forward_after_kill(world, c, wise_before)


def test_sigkill_in_verify_is_finished_forward_once(short, crash):
    world, c = short, crash("rebalance")
    world.exchange.state.withdrawal_hold = 1.0
    wise_before = world.wise.balances()["EUR"]
    faults: list = []

    def in_verify() -> bool:
        if not faults and c.step_done("commit_transfers"):  # plan has read okx's balances by now
            faults.append(_block_exchange(world, "balances", venue="okx"))
        return bool(faults) and faults[0].hits >= 1

    c.run_and_kill(REBALANCE_FAST, in_verify)
    state = c.state()
    assert state.step("await_arrival").done and not state.step("verify_balances").done
    _rebalance_finished_forward_after_kill(world, c, wise_before)


# ----------------------------------------------------------------------------- hedge: SIGKILL


def _net(world, asset: str) -> float:
    state = world.exchange.state
    spot = sum(state.balances(v)[asset].total for v in state.venue_names() if asset in state.balances(v))
    perp = sum(p.signed_size for v in state.venue_names() for p in state.positions(v) if p.symbol.startswith(asset + "/"))
    return spot + perp


def test_sigkill_while_a_hedge_leg_is_applied_unwinds_it(world, crash):
    """bybit filled the leg, the answer never came, the run died: recovery finds it by client id and unwinds it."""
    c = crash("hedge")
    before = _exposure(world)
    fault = _hang_after_commit(world, "create_order", "bybit")
    c.run_and_kill({}, lambda: fault.hits >= 1 and _orders(world, "bybit"))
    assert _exposure(world) != before  # the leg is on the book
    assert c.failure_tick() is None
    state = c.state()
    assert decide(HEDGE.definition, state).verdict is Verdict.COMPENSATED
    assert any(u["venue"] == "bybit" for u in state.step(PLACE).compensation["unwound"])
    assert _exposure(world) == before
    assert all(o.reduce_only for v in ("bybit", "okx") for o in _orders(world, v)[1:])  # only unwinds after each leg
    assert not [o for v in world.exchange.state.venue_names() for o in _orders(world, v) if o.type == "stop_market"]
    c.assert_second_pass_does_nothing(world)


def test_sigkill_in_the_stops_step_is_finished_forward_without_a_second_hedge(world, crash):
    c = crash("hedge")
    fault = _block_exchange(world, "list_orders")  # the stops step's first call; plan and place never list orders
    c.run_and_kill({}, lambda: fault.hits >= 1)
    state = c.state()
    assert state.step(PLACE).done and not state.step(STOPS).done
    markets = {v: [o for o in _orders(world, v) if o.type == "market"] for v in world.exchange.state.venue_names()}
    request = c.failure_tick()
    assert request is not None
    relaunch = c.relaunch(request)
    assert relaunch.success
    assert {v: [o for o in _orders(world, v) if o.type == "market"] for v in markets} == markets  # no second hedge
    stops = [o for v in world.exchange.state.venue_names() for o in _orders(world, v, status="open")
             if o.type == "stop_market"]
    positions = [p for v in world.exchange.state.venue_names() for p in world.exchange.state.positions(v)]
    assert len(stops) == len(positions) == 12
    assert decide(HEDGE.definition, c.state()).verdict is Verdict.COMPLETED
    c.assert_second_pass_does_nothing(world)


# ----------------------------------------------------------------------------- stop-loss: SIGKILL


def test_sigkill_while_a_close_is_applied_is_finished_forward_without_a_second_close(world, crash):
    c = crash("stop_loss")
    venues = ["binance", "okx"]
    positions = {v: len(world.exchange.state.positions(v)) for v in venues}
    fault = _hang_after_commit(world, "create_order", "binance")
    c.run_and_kill({"venues": venues, "deadline_seconds": 20.0}, lambda: fault.hits >= 1)
    request = c.failure_tick()
    assert request is not None  # the stop-loss only ever goes forward
    relaunch = c.relaunch(request)
    assert relaunch.success
    assert {v: _exposure(world)[v] for v in venues} == {v: [] for v in venues}
    assert {v: len(_orders(world, v)) for v in venues} == positions  # one close per position, none twice
    assert all(o.reduce_only for v in venues for o in _orders(world, v))
    assert decide(STOP_LOSS.definition, c.state()).verdict is Verdict.COMPLETED
    [mail] = world.smtp.wait_for(1, timeout=10)
    assert mail.subject.startswith("[stop-loss] FLAT on 2 venue(s)")
    c.assert_second_pass_does_nothing(world)
    assert len(world.smtp.messages()) == 1


def test_sigkill_in_the_mail_step_mails_once_and_closes_nothing_more(world, crash):
    c = crash("stop_loss")
    venues = ["kraken", "okx"]
    faults: list = []

    def in_notify() -> bool:
        if not faults and c.step_done("liquidate"):
            faults.append(_block_exchange(world, "list_orders"))
        return bool(faults) and faults[0].hits >= 1

    c.run_and_kill({"venues": venues, "deadline_seconds": 20.0}, in_notify)
    orders = {v: len(_orders(world, v)) for v in venues}
    assert world.smtp.messages() == []
    request = c.failure_tick()
    assert request is not None
    assert c.relaunch(request).success
    assert {v: len(_orders(world, v)) for v in venues} == orders
    [mail] = world.smtp.wait_for(1, timeout=10)
    assert mail.subject.startswith("[stop-loss] FLAT on 2 venue(s)")
    c.assert_second_pass_does_nothing(world)
    assert len(world.smtp.messages()) == 1


if __name__ == "__main__" and sys.argv[1:] == ["child"]:
    sys.exit(_child())
