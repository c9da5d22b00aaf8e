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
  answer is lost on every try), funds gone at the pivot, the hedge's plan, the kill switch engaged between
  two legs, a hedge unwind failing past its retries (loud, then the sweep), a refused protective stop
  (escalated, hedge kept), a stop-loss every venue refuses (escalated at once), a failed stop-loss mail
  (forward recovery).
* Timeout-after-commit on the compensations' own calls (cancel withdrawal, cancel Wise transfer, the
  hedge unwind order), on stop creation and stop cancellation, and on the stop-loss's cancel-all.
* Nothing moves: re-executing a rolled-back rebalance or hedge, an infeasible plan, legs in flight, a
  hedge refused before it starts (kill switch, bad config), a stop-loss with a bad config.

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
import threading
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
from arb_orchestration.saga import (
    Action,
    InstanceSagaLog,
    RecordKind,
    SagaStep,
    Verdict,
    build_saga,
    decide,
    pause_trading,
    recover_run,
    resume_trading,
)
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


def hedge_job_for_world():
    """Reconstructable target for re-execution."""
    return Definitions(jobs=[HEDGE.job], resources=resources("hedge")).get_job_def(HEDGE.job.name)


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


@pytest.fixture(scope="module")
def _shared_instance():
    with instance_for_test() as inst:
        yield inst


@pytest.fixture
def instance(_shared_instance):
    """One instance for the in-process tests (creating one costs 1-3 s); the stop-loss engages the kill switch."""
    yield _shared_instance
    resume_trading(_shared_instance, "test teardown", by="test")


@pytest.fixture
def fresh_instance():
    """For tests that run the recovery sweep, which looks at every failed saga run in the instance."""
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

    def step_started(self, step: str) -> bool:
        state = self.log()
        return state is not None and state.step(step).started

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


def test_sigkill_while_wise_applies_the_funding_cancels_the_withdrawal_and_reports_the_funded_leg(short, crash):
    """The last call of the pivot (Wise funding) is applied but never answered, and the run dies. The pivot did not
    finish, so recovery goes backward (docs/rebalance.md): the pending withdrawal is cancelled, the funded Wise leg
    cannot be and is reported in flight and mailed; it arrives exactly once."""
    world, c = short, crash("rebalance")
    world.exchange.state.withdrawal_hold = 30.0
    fault = world.wise.set_fault("fund_transfer", "timeout_after_commit", count=1, latency=BLOCK_SECONDS)
    c.run_and_kill(REBALANCE_FAST, lambda: fault.fired >= 1 and world.wise.transfers()[0]["status"] != "incoming_payment_waiting")
    assert c.failure_tick() is None
    state = c.state()
    assert decide(REBALANCE.definition, state).verdict is Verdict.COMPENSATED
    assert state.step("commit_transfers").compensation == {"cancelled": [1], "not_created": [], "in_flight": [0]}
    assert state.step("prepare_transfers").compensation["in_flight"] == [0]
    assert [w.status for w in _withdrawals(world)] == ["canceled"]
    assert any("partially committed" in m.subject for m in world.smtp.wait_for(2, timeout=10))
    deadline = time.monotonic() + 15
    while world.wise.transfers()[0]["status"] != "outgoing_payment_sent":  # paid out (delivery comes first)
        assert time.monotonic() < deadline, world.wise.transfers()[0]["status"]
        time.sleep(0.05)
    assert [d.amount for d in world.wise.deliveries] == [3_000.0]
    assert world.exchange.state.balances("okx")["USDT"].free == pytest.approx(4_000.0)
    c.assert_second_pass_does_nothing(world)
    assert [d.amount for d in world.wise.deliveries] == [3_000.0]

    # okx is still short, but the next rebalance must not plan around the leg it cannot see arriving.
    books = _books(world)
    blocked = _run("rebalance", c.instance)
    assert not blocked.success
    failure = next(e for e in blocked.all_events if e.event_type is DagsterEventType.STEP_FAILURE)
    assert failure.event_specific_data.user_failure_data.metadata["arb/guardrail"].value == "legs_in_flight"
    assert _books(world) == books


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
    c.run_and_kill(REBALANCE_FAST, lambda: c.step_started("await_arrival"))
    state = c.state()
    assert state.step("commit_transfers").done and not state.step("await_arrival").done
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
    # The mail step's last act is the risk mail: the sink keeps the child waiting for the answer there,
    # so the kill lands inside the step whatever the timing (watching the log for `liquidate` to finish
    # and then blocking the step's first exchange read raced the step on a loaded machine).
    world.smtp.hold_next()
    try:
        c.run_and_kill({"venues": venues, "deadline_seconds": 20.0}, lambda: world.smtp.held >= 1)
    finally:
        world.smtp.release_held()  # the killed sender's message is dropped, never kept
    assert c.step_done("liquidate") and not c.step_done("notify_risk_team")
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


# ----------------------------------------------------------------------------- in-process: failure at a sub-step


def _run(saga: str, instance, config=None, res=None):
    base = REBALANCE_FAST if saga == "rebalance" else {}
    return SAGAS[saga].job.execute_in_process(
        instance=instance, resources=res or resources(saga), run_config={**base, **(config or {})},
        raise_on_error=False,
    )


def when(condition: Callable[[], bool], action: Callable[[], object], timeout: float = 30.0) -> threading.Thread:
    """Run `action` in a thread as soon as `condition` holds (polled every 10 ms, with a deadline)."""

    def wait():
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        action()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


def _sweep(saga: str, instance):
    _, sweep = SAGAS[saga].recovery_sensors(grace_seconds=0)
    with build_sensor_context(instance=instance, resources=_recovery_resources(saga)) as ctx:
        return sweep(ctx)


@pytest.mark.parametrize("endpoint", ["create_quote", "create_recipient", "create_transfer"])
def test_a_wise_sub_step_of_prepare_failing_is_compensated(short, instance, endpoint):
    """Prepare's Wise leg: quote, recipient, transfer. Each failing on every try (503, nothing applied) ends the
    saga compensated with nothing stray. Plan quotes Wise too, so the fault is set once prepare has begun: plan
    reads bybit's IBAN once, prepare a second time (held 0.3 s, while a thread sets the Wise fault)."""
    world = short
    before = _books(world)
    iban = world.exchange.faults.add({"kind": "latency", "latency_ms": 300, "endpoint": "deposit_address",
                                      "venue": "bybit"})
    when(lambda: iban.hits >= 2, lambda: world.wise.set_fault(endpoint, "error"))
    result = _run("rebalance", instance)
    assert not result.success
    assert iban.hits >= 2  # plan, then prepare (and its retry)
    state = InstanceSagaLog(instance).load(result.run_id)
    assert state.step("prepare_transfers").started and not state.step("prepare_transfers").done
    assert decide(REBALANCE.definition, state).verdict is Verdict.COMPENSATED
    # Both compensations ran (newest first): the Wise search found nothing to cancel, the reservation is released.
    assert state.step("prepare_transfers").compensation == {"cancelled": [], "absent": [0], "in_flight": []}
    assert state.step("plan_rebalance").compensation["released"] == {"EUR": 3000.39, "USDT": 8000.8}
    _assert_nothing_stray(world, before)
    assert world.wise.transfers() == []


def test_a_wise_transfer_whose_answer_is_lost_for_good_is_cancelled_by_its_key(short, fresh_instance):
    """Wise created the transfer on every try but no answer (nor lookup) reached the run: the step fails, the
    hook's compensation cannot look it up either (COMPENSATION FAILED), the sweep finds it by key and cancels it."""
    world = short
    before = _books(world)
    world.wise.set_fault("create_transfer", "timeout_after_commit")
    world.wise.set_fault("list_transfers", "error")  # the reconciliation's lookup by customerTransactionId
    result = _run("rebalance", fresh_instance)
    assert not result.success
    [transfer] = world.wise.transfers()  # one transfer, whatever the number of tries (same key)
    assert transfer["status"] == "incoming_payment_waiting"
    state = InstanceSagaLog(fresh_instance).load(result.run_id)
    assert RecordKind.COMPENSATION_FAILED in [r.kind for r in state.records]
    assert not state.step("prepare_transfers").compensated
    world.wise.clear_faults()
    reset_breakers()
    skip = _sweep("rebalance", fresh_instance)
    assert "compensated" in skip.skip_message, skip.skip_message
    state = InstanceSagaLog(fresh_instance).load(result.run_id)
    assert decide(REBALANCE.definition, state).verdict is Verdict.COMPENSATED
    assert state.step("prepare_transfers").compensation["cancelled"] == [0]
    _assert_nothing_stray(world, before)
    records = len(state.records)
    assert "no failed saga runs needing recovery" in _sweep("rebalance", fresh_instance).skip_message
    assert len(InstanceSagaLog(fresh_instance).load(result.run_id).records) == records


def test_funds_gone_at_the_pivot_refuses_before_sending_and_cancels_the_wise_transfer(short, instance):
    """Between plan and pivot binance's USDT is spent elsewhere: the pivot's funds check refuses (business error)
    before any withdrawal or funding, and the prepared Wise transfer is cancelled."""
    world = short
    state = world.exchange.state
    before = _books(world)
    fault = world.exchange.faults.add({"kind": "latency", "latency_ms": 500, "endpoint": "deposit_address",
                                       "venue": "okx", "count": 1})
    spent: list[float] = []

    def spend():
        spent.append(state.balances("binance")["USDT"].free - 100.0)
        state.credit("binance", "USDT", -spent[0])

    t = when(lambda: fault.hits >= 1, spend)  # okx's address is read in prepare only
    result = _run("rebalance", instance)
    t.join()
    assert not result.success and spent
    failure = next(e for e in result.all_events if e.event_type is DagsterEventType.STEP_FAILURE)
    assert failure.step_key == "commit_transfers" and "USDT free, the plan sends" in str(failure.event_specific_data.error)
    saga = InstanceSagaLog(instance).load(result.run_id)
    assert decide(REBALANCE.definition, saga).verdict is Verdict.COMPENSATED
    assert _withdrawals(world) == []
    assert [t["status"] for t in world.wise.transfers()] == ["cancelled"]
    state.credit("binance", "USDT", spent[0])
    _assert_nothing_stray(world, before)


def test_an_infeasible_plan_fails_before_anything_moves(short, instance):
    """The Wise balance (less its reserve) cannot cover bybit's EUR deficit: guardrail plan_infeasible."""
    world = short
    before = _books(world)
    reserve = world.wise.balances()["EUR"] - 100.0  # leaves 100 EUR to give, bybit needs 3,000
    result = _run("rebalance", instance, {"wise_reserve": {"EUR": reserve}})
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type is DagsterEventType.STEP_FAILURE)
    assert failure.step_key == "plan_rebalance"
    assert failure.event_specific_data.user_failure_data.metadata["arb/guardrail"].value == "plan_infeasible"
    assert _books(world) == before


# ----------------------------------------------------------------------------- in-process: the compensations' own calls


def test_timeout_after_commit_on_the_cancels_still_compensates_and_a_reexecution_moves_nothing(short, instance):
    """Wise funding fails at the pivot; the compensation's cancel_withdrawal and Wise cancel_transfer are applied
    but their answers are lost: still fully compensated. Re-executing the rolled-back run moves nothing."""
    world = short
    world.exchange.state.withdrawal_hold = 10.0
    before = _books(world)
    world.wise.set_fault("fund_transfer", "error")
    cancel_w = world.exchange.faults.add({"kind": "timeout_after_commit", "endpoint": "cancel_withdrawal", "count": 1})
    cancel_t = world.wise.set_fault("cancel_transfer", "timeout_after_commit", count=1)
    result = _run("rebalance", instance)
    assert not result.success
    assert cancel_w.hits == 1 and cancel_t.fired == 1  # both answers really were lost
    state = InstanceSagaLog(instance).load(result.run_id)
    assert decide(REBALANCE.definition, state).verdict is Verdict.COMPENSATED
    assert state.step("commit_transfers").compensation["cancelled"] == [1]
    assert state.step("prepare_transfers").compensation["cancelled"] == [0]
    _assert_nothing_stray(world, before)
    assert len(_withdrawals(world)) == 1 and len(world.wise.transfers()) == 1

    world.wise.clear_faults()
    books = _books(world)
    job = build_reconstructable_job(__name__, "rebalance_job_for_world")
    with execute_job(job, instance, run_config=REBALANCE_FAST,
                     reexecution_options=ReexecutionOptions(parent_run_id=result.run_id)) as again:
        assert not again.success  # a rolled-back saga refuses to run again (SagaClosedError)
        failure = next(e for e in again.all_events if e.event_type is DagsterEventType.STEP_FAILURE)
        assert "Saga" in str(failure.event_specific_data.error) or "rolled back" in str(failure.event_specific_data.error)
    assert _books(world) == books


# ----------------------------------------------------------------------------- in-process: hedge


def test_a_failing_hedge_plan_places_nothing(world, instance):
    before = _exposure(world)
    world.exchange.faults.add({"kind": "error_5xx", "endpoint": "positions", "venue": "okx"})
    result = _run("hedge", instance)
    assert not result.success
    state = InstanceSagaLog(instance).load(result.run_id)
    assert not state.step(PLACE).started
    assert decide(HEDGE.definition, state).verdict is Verdict.COMPENSATED
    assert _exposure(world) == before
    assert all(_orders(world, v) == [] for v in world.exchange.state.venue_names())


def test_trading_paused_between_legs_unwinds_the_first_leg(world, instance):
    """The kill switch is engaged while the first leg is being verified: the second leg is never sent and the
    compensation unwinds the first (reduce-only, its own key)."""
    before = _exposure(world)
    venues = world.exchange.state.venue_names()
    world.exchange.faults.add({"kind": "latency", "latency_ms": 400, "endpoint": "get_order_by_client_id", "count": 1})
    when(lambda: any(_orders(world, v) for v in venues),
         lambda: pause_trading(instance, "risk drill mid-hedge", by="test"))
    result = _run("hedge", instance)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type is DagsterEventType.STEP_FAILURE)
    assert failure.step_key == PLACE and "trading was paused" in str(failure.event_specific_data.error)
    orders = [o for v in venues for o in _orders(world, v)]
    assert [o.reduce_only for o in orders] == [False, True]  # one leg, its unwind; the second leg never went out
    assert _exposure(world) == before
    saga = InstanceSagaLog(instance).load(result.run_id)
    assert decide(HEDGE.definition, saga).verdict is Verdict.COMPENSATED

    # Re-executing the rolled-back hedge (trading resumed) is refused and sends nothing.
    resume_trading(instance, "drill over", by="test")
    with execute_job(build_reconstructable_job(__name__, "hedge_job_for_world"), instance,
                     reexecution_options=ReexecutionOptions(parent_run_id=result.run_id)) as again:
        assert not again.success
    assert [o for v in venues for o in _orders(world, v)] == orders
    assert _exposure(world) == before


def test_a_refused_stop_after_the_pivot_escalates_and_keeps_the_hedge(world, instance):
    """kraken refuses its protective stop (the mark moved through the trigger while the order was on its way):
    past the pivot, so the hedge legs stay, the other stops are placed, and the saga is escalated."""
    state = world.exchange.state
    state.set_positions("kraken", [{"symbol": BTC, "side": "long", "size": 0.3}])
    fault = world.exchange.faults.add({"kind": "latency", "latency_ms": 400, "venue": "kraken",
                                       "endpoint": "create_order", "count": 1})
    when(lambda: fault.hits >= 1, lambda: state.shock(venue="kraken", symbol=BTC, pct=-0.10))
    others = [v for v in state.venue_names() if v != "kraken"]
    result = _run("hedge", instance, {"order_venues": others})
    assert not result.success and fault.hits == 1
    saga = InstanceSagaLog(instance).load(result.run_id)
    assert saga.step(PLACE).done and not saga.step(STOPS).done and saga.step(PLACE).compensation is None
    assert decide(HEDGE.definition, saga).verdict is Verdict.ESCALATED
    assert any("ESCALATED" in m.subject for m in world.smtp.wait_for(1, timeout=10))
    assert [o for o in _orders(world, "kraken", status="open")] == []  # its stop was refused
    legs = [o for v in others for o in _orders(world, v) if o.type == "market"]
    # The hedge was kept: its legs are the only market orders (no unwind after the pivot).
    assert legs and sorted(o.client_order_id for o in legs) == sorted(f["client_order_id"] for f in saga.step(PLACE).result["legs"])
    protected = {(o.venue, o.symbol) for v in others for o in _orders(world, v, status="open") if o.type == "stop_market"}
    assert protected == {(v, p.symbol) for v in others for p in state.positions(v)}


@pytest.mark.parametrize("refusal", ["paused", "invalid_config"])
def test_a_hedge_refused_before_it_starts_sends_nothing(world, instance, refusal):
    before = _exposure(world)
    config = {}
    if refusal == "paused":
        pause_trading(instance, "stop-loss drill", by="test")
    else:
        config = {"stop_distance_pct": 0.05}  # a fraction typed for a percent
    result = _run("hedge", instance, config)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type is DagsterEventType.STEP_FAILURE)
    assert failure.step_key == "plan_hedge"
    assert all(_orders(world, v) == [] for v in world.exchange.state.venue_names())
    assert _exposure(world) == before


def test_timeout_after_commit_on_the_leg_and_on_its_unwind_sends_each_once(world, instance):
    """A refused second leg makes the compensation unwind the first; both the leg and the unwind are applied by
    bybit with their answers lost: one leg order, one unwind order, the position back where it was."""
    state = world.exchange.state
    state.credit("kraken", "BTC", 1.0)
    state.shock(venue="bybit", symbol=BTC, funding_rate=0.0005)
    state.shock(venue="okx", symbol=BTC, funding_rate=0.0004)
    state.credit("okx", "USDT", -(state.balances("okx")["USDT"].free - 50.0))  # okx cannot margin leg 1
    before = _exposure(world)["bybit"]
    fault = world.exchange.faults.add({"kind": "timeout_after_commit", "venue": "bybit", "endpoint": "create_order",
                                       "count": 2})
    result = _run("hedge", instance, {"max_notional_per_market_usd": 40_000.0})
    assert not result.success and fault.hits == 2
    leg, unwind = _orders(world, "bybit")
    assert (leg.reduce_only, unwind.reduce_only, unwind.filled) == (False, True, pytest.approx(leg.filled))
    assert _exposure(world)["bybit"] == before
    saga = InstanceSagaLog(instance).load(result.run_id)
    assert decide(HEDGE.definition, saga).verdict is Verdict.COMPENSATED


def test_a_failing_unwind_is_loud_and_the_sweep_finishes_it_once(world, fresh_instance):
    """The second leg is refused; bybit then fails every unwind order (5xx, nothing applied) past the retries: the
    compensation fails loudly (COMPENSATION FAILED mail). Once bybit is back, the sweep unwinds the leg, once."""
    state = world.exchange.state
    state.credit("kraken", "BTC", 1.0)
    state.shock(venue="bybit", symbol=BTC, funding_rate=0.0005)
    state.shock(venue="okx", symbol=BTC, funding_rate=0.0004)
    state.credit("okx", "USDT", -(state.balances("okx")["USDT"].free - 50.0))  # okx cannot margin leg 1
    before = _exposure(world)["bybit"]
    world.exchange.faults.add({"kind": "latency", "latency_ms": 300, "venue": "okx", "endpoint": "create_order"})
    when(lambda: _orders(world, "bybit"),
         lambda: world.exchange.faults.add({"kind": "error_5xx", "venue": "bybit", "endpoint": "create_order"}))
    result = _run("hedge", fresh_instance, {"max_notional_per_market_usd": 40_000.0})
    assert not result.success
    [leg] = _orders(world, "bybit")  # no unwind reached the book
    saga = InstanceSagaLog(fresh_instance).load(result.run_id)
    assert RecordKind.COMPENSATION_FAILED in [r.kind for r in saga.records] and not saga.step(PLACE).compensated
    assert any("COMPENSATION FAILED" in m.subject for m in world.smtp.wait_for(1, timeout=10))

    world.exchange.faults.clear()
    reset_breakers()
    _sweep("hedge", fresh_instance)
    saga = InstanceSagaLog(fresh_instance).load(result.run_id)
    assert decide(HEDGE.definition, saga).verdict is Verdict.COMPENSATED
    leg_again, unwind = _orders(world, "bybit")
    assert leg_again.id == leg.id and unwind.reduce_only and unwind.filled == pytest.approx(leg.filled)
    assert _exposure(world)["bybit"] == before
    records = len(saga.records)
    assert "no failed saga runs needing recovery" in _sweep("hedge", fresh_instance).skip_message
    assert len(_orders(world, "bybit")) == 2 and len(InstanceSagaLog(fresh_instance).load(result.run_id).records) == records


def test_timeout_after_commit_on_stop_creation_and_cancellation_leaves_one_stop_each(world, instance):
    create = world.exchange.faults.add({"kind": "timeout_after_commit", "venue": "kraken", "endpoint": "create_order"})
    first = _run("hedge", instance)
    assert first.success and create.hits >= 1
    kraken = world.exchange.state.positions("kraken")
    stops = [o for o in _orders(world, "kraken") if o.type == "stop_market"]
    assert len(stops) == len(kraken) >= 1 and all(o.status == "open" for o in stops)  # no duplicate
    world.exchange.faults.clear()

    # kraken's positions are closed by hand: the next hedge cancels its stops, every cancel's answer lost.
    world.exchange.state.set_positions("kraken", [])
    cancel = world.exchange.faults.add({"kind": "timeout_after_commit", "venue": "kraken", "endpoint": "cancel_order"})
    second = _run("hedge", instance)
    assert second.success and cancel.hits >= 1
    assert [o for o in _orders(world, "kraken", status="open")] == []
    assert len([o for o in _orders(world, "kraken") if o.type == "stop_market"]) == len(stops)  # nothing new


def test_a_failed_stops_step_is_finished_by_forward_recovery_without_a_second_hedge(world, instance):
    world.exchange.faults.add({"kind": "error_5xx", "endpoint": "list_orders"})  # only the stops step lists orders
    result = _run("hedge", instance)
    assert not result.success
    state = InstanceSagaLog(instance).load(result.run_id)
    assert state.step(PLACE).done and not state.step(STOPS).done
    assert decide(HEDGE.definition, state).verdict is Verdict.FORWARD
    assert state.step(PLACE).compensation is None
    assert any("stuck after its pivot" in m.subject for m in world.smtp.wait_for(1, timeout=10))
    markets = {v: [o.id for o in _orders(world, v) if o.type == "market"] for v in world.exchange.state.venue_names()}
    world.exchange.faults.clear()
    reset_breakers()
    outcome = recover_run(instance, HEDGE.definition, instance.get_run_by_id(result.run_id), _recovery_resources("hedge"))
    assert outcome.action is Action.RELAUNCH, outcome.reason
    relaunch = HEDGE.job.execute_in_process(instance=instance, resources=resources("hedge"),
                                            run_config=outcome.relaunch.run_config, tags=outcome.relaunch.tags,
                                            raise_on_error=False)
    assert relaunch.success
    assert {v: [o.id for o in _orders(world, v) if o.type == "market"] for v in markets} == markets
    stops = [o for v in markets for o in _orders(world, v, status="open") if o.type == "stop_market"]
    assert len(stops) == 12
    assert recover_run(instance, HEDGE.definition, instance.get_run_by_id(result.run_id),
                       _recovery_resources("hedge")).action is Action.NONE


# ----------------------------------------------------------------------------- in-process: stop-loss


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_failed_risk_mail_is_sent_by_forward_recovery_and_nothing_is_closed_twice(world, instance):
    venues = ["kraken", "okx"]
    dead = SmtpResource(host="127.0.0.1", port=_closed_port(), sender="x@localhost", risk_team=["risk@localhost"],
                        max_attempts=1, retry_base_delay=0.01, timeout_seconds=1.0)
    result = _run("stop_loss", instance, {"venues": venues, "deadline_seconds": 20.0},
                  res={**resources("stop_loss"), "smtp": dead})
    assert not result.success
    state = InstanceSagaLog(instance).load(result.run_id)
    assert state.step("liquidate").done and not state.step("notify_risk_team").done
    assert decide(STOP_LOSS.definition, state).verdict is Verdict.FORWARD
    orders = {v: len(_orders(world, v)) for v in venues}
    assert world.smtp.messages() == []
    outcome = recover_run(instance, STOP_LOSS.definition, instance.get_run_by_id(result.run_id),
                          _recovery_resources("stop_loss"))
    assert outcome.action is Action.RELAUNCH, outcome.reason
    relaunch = STOP_LOSS.job.execute_in_process(instance=instance, resources=resources("stop_loss"),
                                                run_config=outcome.relaunch.run_config, tags=outcome.relaunch.tags,
                                                raise_on_error=False)
    assert relaunch.success
    assert {v: len(_orders(world, v)) for v in venues} == orders
    mails = [m for m in world.smtp.wait_for(1, timeout=10) if m.subject.startswith("[stop-loss] FLAT")]
    assert len(mails) == 1
    state = InstanceSagaLog(instance).load(result.run_id)  # the same saga, finished: liquidate was not run again
    assert decide(STOP_LOSS.definition, state).verdict is Verdict.COMPLETED and state.step("liquidate").starts == 1


def test_a_stop_loss_with_a_bad_config_sends_nothing_and_escalates(world, instance):
    """A dust of 5 BTC would call every position flat: refused before any order, escalated (forward-only saga)."""
    before = _exposure(world)
    result = _run("stop_loss", instance, {"venues": ["kraken"], "dust": 5.0})
    assert not result.success
    assert _orders(world, "kraken") == [] and _exposure(world) == before
    state = InstanceSagaLog(instance).load(result.run_id)
    assert decide(STOP_LOSS.definition, state).verdict is Verdict.ESCALATED
    assert any("ESCALATED" in m.subject for m in world.smtp.wait_for(1, timeout=10))


def test_a_stop_loss_every_venue_refuses_is_escalated_at_once(world, instance, monkeypatch):
    """The venue refuses every call (the run holds a revoked API key): retrying cannot flatten it, so the
    stop-loss is escalated at once (no forward relaunch), and nothing was sent."""
    before = _exposure(world)
    monkeypatch.setenv("EXCHANGE_SIM_API_KEY", "revoked")
    result = _run("stop_loss", instance, {"venues": ["kraken"], "deadline_seconds": 3.0})
    monkeypatch.setenv("EXCHANGE_SIM_API_KEY", world.env()["EXCHANGE_SIM_API_KEY"])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type is DagsterEventType.STEP_FAILURE)
    assert failure.step_key == "liquidate" and "refused" in str(failure.event_specific_data.error)
    state = InstanceSagaLog(instance).load(result.run_id)
    assert decide(STOP_LOSS.definition, state).verdict is Verdict.ESCALATED
    assert recover_run(instance, STOP_LOSS.definition, instance.get_run_by_id(result.run_id),
                       _recovery_resources("stop_loss")).action is Action.NONE
    assert _orders(world, "kraken") == [] and _exposure(world) == before
    assert any("ESCALATED" in m.subject for m in world.smtp.wait_for(1, timeout=10))


def test_timeout_after_commit_on_cancel_all_leaves_no_order_open(world, instance):
    state = world.exchange.state
    mark = state.mark_prices("kraken")[BTC]
    state.place_order("kraken", symbol=BTC, type="limit", side="buy", amount=0.01, price=round(mark * 0.5, 1))
    assert state.orders("kraken", status="open")
    fault = world.exchange.faults.add({"kind": "timeout_after_commit", "venue": "kraken",
                                       "endpoint": "cancel_all_orders", "count": 1})
    result = _run("stop_loss", instance, {"venues": ["kraken"], "deadline_seconds": 20.0})
    assert result.success and fault.hits == 1
    assert state.orders("kraken", status="open") == [] and _exposure(world)["kraken"] == []


if __name__ == "__main__" and sys.argv[1:] == ["child"]:
    sys.exit(_child())
