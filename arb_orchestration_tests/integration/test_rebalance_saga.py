"""`auto_rebalance_saga` against the real local world (exchange and Wise simulators over HTTP, the SMTP sink)
on a real temporary Dagster instance.

Scenario: okx is short of USDT and bybit short of EUR; the saga covers okx with a USDT withdrawal and bybit
with a Wise payout from the desk's Wise balance. Covered: the happy path (balances verified after arrival),
re-executing a finished run, a failure injected at every step (compensated before the pivot, completed by
forward recovery after it), timeout-after-commit on withdraw / Wise create_transfer / fund (no duplicate),
each guardrail, the allowlist steering the plan to a listed network, the kill switch, dry runs, and the `rebalance_plan` asset.
"""

from __future__ import annotations

import os
import tempfile
import time

import pytest
from dagster import (
    DagsterEventType,
    Definitions,
    EnvVar,
    ReexecutionOptions,
    RetryPolicy,
    build_reconstructable_job,
    execute_job,
    instance_for_test,
    materialize,
)

from arb_orchestration.defs.rebalance import RebalanceJournalResource, build_auto_rebalance_saga
from arb_orchestration.defs.rebalance.assets import build_rebalance_plan
from arb_orchestration.resources.resilience import reset_breakers
from arb_orchestration.resources.sim_venue import SimExchangeResource
from arb_orchestration.resources.smtp import SmtpResource
from arb_orchestration.resources.wise import WiseResource
from arb_orchestration.saga import (
    Action,
    InstanceSagaLog,
    Verdict,
    decide,
    pause_trading,
    recover_run,
    resume_trading,
)

pytestmark = pytest.mark.integration

# The production saga with quick op retries (the code location's waits 1 s, 3 s, 7 s).
SAGA = build_auto_rebalance_saga(retry_policy=RetryPolicy(max_retries=1, delay=0.05))
FAST = {"poll_interval_seconds": 0.05, "arrival_timeout_seconds": 15.0}


def resources_from_env() -> dict:
    """The platform's resources pointed at the world the `world` fixture exported, tuned for quick failures."""
    return {
        "exchange": SimExchangeResource(
            base_url=os.environ["EXCHANGE_SIM_URL"], api_key=EnvVar("EXCHANGE_SIM_API_KEY"),
            venue_list=os.environ["EXCHANGE_VENUES"].split(","), timeout_seconds=2.0, max_attempts=2,
            retry_base_delay=0.01,
        ),
        "wise": WiseResource(
            base_url=os.environ["WISE_API_URL"], api_token=EnvVar("WISE_API_TOKEN"),
            profile_id=int(os.environ["WISE_PROFILE_ID"]), timeout_seconds=2.0, max_attempts=2,
            retry_base_delay=0.01, poll_interval_seconds=0.05,
        ),
        "smtp": SmtpResource(host=os.environ["SMTP_HOST"], port=int(os.environ["SMTP_PORT"]),
                             sender="rebalance@arb.local", risk_team=["risk@arb.local"]),
        "rebalance_journal": RebalanceJournalResource(),
    }


def rebalance_job_from_env():
    """Reconstructable target for re-execution (loaded by name, resources from the environment)."""
    return Definitions(jobs=[SAGA.job], resources=resources_from_env()).get_job_def(SAGA.job.name)


@pytest.fixture(scope="module")
def _instance():
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp, instance_for_test(temp_dir=tmp) as inst:
        yield inst


@pytest.fixture
def instance(_instance):
    yield _instance
    resume_trading(_instance, "test teardown", by="test")


@pytest.fixture
def short(world):
    """okx: 4,000 USDT free (floor 10,000 → refilled to 12,000); bybit: 3,000 EUR (floor 5,000 → 6,000)."""
    state = world.exchange.state
    state.credit("okx", "USDT", -(state.balances("okx")["USDT"].free - 4_000.0))
    state.credit("bybit", "EUR", -2_000.0)
    hold = state.withdrawal_hold
    yield world
    state.withdrawal_hold = hold


def _run(instance, config=None, **kw):
    return SAGA.job.execute_in_process(
        instance=instance, resources=resources_from_env(), run_config={**FAST, **(config or {})},
        raise_on_error=False, **kw,
    )


def _books(world) -> dict:
    """Every balance, withdrawal and Wise transfer: what 'nothing moved' compares."""
    state = world.exchange.state
    return {
        "balances": {v: {a: (b.free, b.total) for a, b in state.balances(v).items()} for v in state.venue_names()},
        "withdrawals": [(w.id, w.status) for v in state.venue_names() for w in state.withdrawals(v)],
        "wise_balance": world.wise.balances(),
        "wise_transfers": [(t["id"], t["status"]) for t in world.wise.transfers()],
    }


def _withdrawals(world):
    state = world.exchange.state
    return [w for v in state.venue_names() for w in state.withdrawals(v)]


def _assert_rebalanced(world, wise_before: float):
    state = world.exchange.state
    assert state.balances("okx")["USDT"].free == pytest.approx(12_000.0)
    assert state.balances("bybit")["EUR"].free == pytest.approx(6_000.0)
    [withdrawal] = _withdrawals(world)
    assert (withdrawal.from_venue, withdrawal.to_venue, withdrawal.status) == ("binance", "okx", "completed")
    [transfer] = world.wise.transfers()
    assert transfer["status"] == "outgoing_payment_sent" and transfer["targetValue"] == 3_000.0
    assert world.wise.balances()["EUR"] == pytest.approx(wise_before - transfer["sourceValue"])
    assert [d.amount for d in world.wise.deliveries] == [3_000.0]


def _assert_compensated(world, before: dict, result, instance):
    assert not result.success
    state = InstanceSagaLog(instance).load(result.run_id)
    assert decide(SAGA.definition, state).verdict is Verdict.COMPENSATED
    after = _books(world)
    assert after["balances"] == before["balances"]
    assert after["wise_balance"] == before["wise_balance"]
    # Nothing stray: whatever was created is cancelled.
    assert all(status == "canceled" for _, status in after["withdrawals"])
    assert all(status == "cancelled" for _, status in after["wise_transfers"])
    assert world.wise.deliveries == []
    return state


def _engine_metadata(instance, run_id: str, step: str, key: str):
    """Metadata the steps report into the run's event log (what the UI shows next to the step)."""
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        if event is not None and event.step_key == step and key in event.engine_event_data.metadata:
            return event.engine_event_data.metadata[key]
    return None


def _wait_until_withdrawals_completed(world, timeout: float = 15.0):
    """The slow network catches up: the relaunch inherits the failed run's short arrival timeout."""
    deadline = time.monotonic() + timeout
    while not all(w.status == "completed" for w in _withdrawals(world)):
        assert time.monotonic() < deadline, [w.status for w in _withdrawals(world)]
        time.sleep(0.05)


def _recover_and_relaunch(instance, result, world):
    """What the recovery sensor does for a run that failed after the pivot, then the run it requests."""
    _wait_until_withdrawals_completed(world)
    run = instance.get_run_by_id(result.run_id)
    outcome = recover_run(instance, SAGA.definition, run, resources_from_env())
    assert outcome.action is Action.RELAUNCH, outcome.reason
    return SAGA.job.execute_in_process(
        instance=instance, resources=resources_from_env(), run_config=outcome.relaunch.run_config,
        tags=outcome.relaunch.tags, raise_on_error=False,
    )


# ----------------------------------------------------------------------------- happy path


def test_deficits_are_covered_by_a_withdrawal_and_a_wise_payout_and_verified(short, instance):
    world = short
    wise_before = world.wise.balances()["EUR"]
    result = _run(instance)
    assert result.success
    _assert_rebalanced(world, wise_before)
    state = InstanceSagaLog(instance).load(result.run_id)
    assert decide(SAGA.definition, state).verdict is Verdict.COMPLETED
    legs = state.step("plan_rebalance").result["transfers"]
    assert [(t["rail"], t["credited"]) for t in legs] == [("wise->bybit:EUR:SEPA", 3_000.0),
                                                          ("binance->okx:USDT:ARBITRUM", 8_000.0)]
    assert all(row["ok"] for row in state.step("verify_balances").result["verified"])
    run = instance.get_run_by_id(result.run_id)
    # The max runtime leaves room for a Wise leg parked for a person (1 h + the default 4 h wait).
    assert run.tags["arb/saga"] == "auto_rebalance" and run.tags["dagster/max_runtime"] == str(3600 + 4 * 3600)
    assert run.tags["arb/rebalance_moves"] == "2"  # later plans read this saga's log (its legs count)
    # The UI: per-step metadata (ids, amounts) and the markdown summary of the executed plan.
    assert _engine_metadata(instance, result.run_id, "commit_transfers", "withdrawal_ids").value == [_withdrawals(world)[0].id]
    summary = _engine_metadata(instance, result.run_id, "verify_balances", "summary").value
    assert "binance → okx" in summary and "wise → bybit" in summary and "✅" in summary

    # Re-executing the finished run moves nothing (same saga, every step already done).
    books = _books(world)
    job = build_reconstructable_job(__name__, "rebalance_job_from_env")
    with execute_job(job, instance, run_config=FAST,
                     reexecution_options=ReexecutionOptions(parent_run_id=result.run_id)) as again:
        assert again.success
        assert instance.get_run_by_id(again.run_id).root_run_id == result.run_id
    assert _books(world) == books


def test_a_balanced_world_moves_nothing(world, instance):
    books = _books(world)
    result = _run(instance)
    assert result.success
    state = InstanceSagaLog(instance).load(result.run_id)
    assert state.step("plan_rebalance").result["transfers"] == []
    assert state.step("verify_balances").result["skipped"] == "nothing to move"
    assert _books(world) == books
    assert instance.get_run_by_id(result.run_id).tags["arb/rebalance_moves"] == "0"  # later plans skip its log


def test_dry_run_with_a_trigger_plans_reports_and_moves_nothing(short, instance):
    world = short
    books = _books(world)
    trigger = {"event_id": "evt-1", "topic": "capital-events", "source": "capital-events/0/7",
               "kind": "capital_threshold", "critical": False, "reason": "okx USDT below its floor",
               "payload": {"venue": "okx", "asset": "USDT", "balance": 4000.0}}
    result = _run(instance, {"dry_run": True, "trigger": trigger})
    assert result.success
    plan = InstanceSagaLog(instance).load(result.run_id).step("plan_rebalance").result
    assert plan["dry_run"] and len(plan["transfers"]) == 2 and plan["trigger"]["event_id"] == "evt-1"
    assert _books(world) == books
    assert instance.get_run_by_id(result.run_id).tags["arb/rebalance_moves"] == "0"  # a dry run moves nothing


# ----------------------------------------------------------------------------- refusals before anything moves


def test_refuses_to_start_while_trading_is_paused(short, instance):
    world = short
    books = _books(world)
    pause_trading(instance, "stop-loss drill", by="test")
    result = _run(instance)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type is DagsterEventType.STEP_FAILURE)
    assert failure.step_key == "plan_rebalance" and "trading is paused" in failure.event_specific_data.error.message
    assert _books(world) == books


@pytest.mark.parametrize(
    "config, rule",
    [
        ({"max_transfer": {"USDT": 5_000.0, "USDC": 1e6, "EUR": 1e6}}, "per_transfer_limit"),
        ({"max_daily": {"USDT": 1e6, "USDC": 1e6, "EUR": 1_000.0}}, "daily_limit"),
        # The planner sees only allowed rails, so in a real world an allowlist that keeps no USDT rail fails the
        # plan as infeasible. The `destination_allowlist` guardrail behind that filter (defence in depth: only a
        # bug in the filter reaches it) is proven with fakes in unit/test_rebalance_steps.py and
        # unit/test_rebalance_allowlist_routing.py; here nothing of our own code is patched.
        ({"allowed_destinations": ["*:SEPA"]}, "plan_infeasible"),
    ],
)
def test_each_guardrail_breach_fails_before_anything_moves(short, instance, config, rule):
    world = short
    books = _books(world)
    result = _run(instance, config)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type is DagsterEventType.STEP_FAILURE)
    assert failure.step_key == "plan_rebalance"
    assert failure.event_specific_data.user_failure_data.metadata["arb/guardrail"].value == rule
    assert _books(world) == books


def test_the_allowlist_steers_the_plan_to_a_listed_network(short, instance):
    """binance → okx is cheapest over ARBITRUM; with ARBITRUM not listed the saga routes over TRC20 and completes,
    and the plan says how many rails the allowlist kept from the planner."""
    world = short
    result = _run(instance, {"allowed_destinations": ["*:TRC20", "*:SEPA"]})
    assert result.success
    plan = InstanceSagaLog(instance).load(result.run_id).step("plan_rebalance").result
    usdt = [t for t in plan["transfers"] if t["asset"] == "USDT"]
    assert [(t["from"], t["to"], t["network"], t["credited"]) for t in usdt] == [("binance", "okx", "TRC20", 8_000.0)]
    assert plan["allowlist_excluded"] and not any(r.endswith(":TRC20") or r.endswith(":SEPA")
                                                  for r in plan["allowlist_excluded"])
    assert "binance->okx:USDT:ARBITRUM" in plan["allowlist_excluded"]
    excluded = _engine_metadata(instance, result.run_id, "plan_rebalance", "allowlist_excluded_rails").value
    assert excluded == len(plan["allowlist_excluded"])
    [withdrawal] = _withdrawals(world)
    assert (withdrawal.network, withdrawal.status) == ("TRC20", "completed")
    assert world.exchange.state.balances("okx")["USDT"].free == pytest.approx(12_000.0)


def test_min_benefit_skips_without_moving(short, instance):
    world = short
    books = _books(world)
    result = _run(instance, {"max_fee_ratio": 0.00001})
    assert result.success
    plan = InstanceSagaLog(instance).load(result.run_id).step("plan_rebalance").result
    assert plan["transfers"] == [] and set(plan["skipped"]) == {"USDT", "EUR"}
    assert _books(world) == books


def test_daily_limit_counts_the_rebalances_already_run_today(short):
    world = short
    with instance_for_test() as fresh:
        limits = {"max_daily": {"USDT": 10_000.0, "USDC": 1e6, "EUR": 1e6}}
        assert _run(fresh, limits).success  # moves 8,000.8 USDT
        state = world.exchange.state
        state.credit("okx", "USDT", -(state.balances("okx")["USDT"].free - 5_000.0))
        books = _books(world)
        second = _run(fresh, limits)  # 7,000.8 more would exceed 10,000 today
        assert not second.success
        failure = next(e for e in second.all_events if e.event_type is DagsterEventType.STEP_FAILURE)
        assert failure.event_specific_data.user_failure_data.metadata["arb/guardrail"].value == "daily_limit"
        assert _books(world) == books


# ----------------------------------------------------------------------------- failures before the pivot


def test_failure_in_plan_is_compensated_and_mailed(short, instance):
    world = short
    books = _books(world)
    world.exchange.faults.add({"kind": "error_5xx", "endpoint": "networks"})
    result = _run(instance)
    _assert_compensated(world, books, result, instance)
    assert any("rolled back" in m.subject for m in world.smtp.wait_for(1))


def test_failure_in_prepare_cancels_the_wise_transfer_it_created(short, instance):
    world = short
    books = _books(world)
    world.exchange.faults.add({"kind": "error_5xx", "endpoint": "deposit_address", "venue": "okx"})
    result = _run(instance)
    state = _assert_compensated(world, books, result, instance)
    assert [s for _, s in _books(world)["wise_transfers"]] == ["cancelled"]
    assert state.step("prepare_transfers").compensation["cancelled"] == [0]


def test_failure_at_withdraw_in_the_pivot_is_compensated(short, instance):
    world = short
    books = _books(world)
    world.exchange.faults.add({"kind": "error_5xx", "endpoint": "create_withdrawal", "venue": "binance"})
    result = _run(instance)
    state = _assert_compensated(world, books, result, instance)
    assert _withdrawals(world) == []
    assert state.step("commit_transfers").compensation == {"cancelled": [], "not_created": [0, 1], "in_flight": []}


def test_failure_at_wise_funding_cancels_the_pending_withdrawal_and_the_transfer(short, instance):
    world = short
    world.exchange.state.withdrawal_hold = 10.0  # cancellable until then
    books = _books(world)
    world.wise.set_fault("fund_transfer", "error")
    result = _run(instance)
    state = _assert_compensated(world, books, result, instance)
    assert [w.status for w in _withdrawals(world)] == ["canceled"]
    assert state.step("commit_transfers").compensation["cancelled"] == [1]
    assert [s for _, s in _books(world)["wise_transfers"]] == ["cancelled"]


# ----------------------------------------------------------------------------- failures after the pivot


def _stuck_in_await(world, instance):
    """A run whose withdrawal is slower than its arrival timeout: committed, then failed in await_arrival."""
    world.exchange.state.withdrawal_hold = 2.0  # the network is slow today
    result = _run(instance, {"arrival_timeout_seconds": 0.3})
    assert not result.success
    state = InstanceSagaLog(instance).load(result.run_id)
    assert state.step("commit_transfers").done and not state.step("await_arrival").done
    assert decide(SAGA.definition, state).verdict is Verdict.FORWARD
    assert state.step("commit_transfers").compensation is None  # never compensated after the pivot
    return result


def test_failure_in_await_alerts_then_forward_recovery_completes_without_duplicates(short, instance):
    world = short
    wise_before = world.wise.balances()["EUR"]
    result = _stuck_in_await(world, instance)
    assert any("stuck after its pivot" in m.subject for m in world.smtp.wait_for(1))
    relaunch = _recover_and_relaunch(instance, result, world)
    assert relaunch.success
    _assert_rebalanced(world, wise_before)
    assert decide(SAGA.definition, InstanceSagaLog(instance).load(result.run_id)).verdict is Verdict.COMPLETED
    assert recover_run(instance, SAGA.definition, instance.get_run_by_id(result.run_id),
                       resources_from_env()).action is Action.NONE


def test_failure_in_verify_is_completed_by_forward_recovery(short, instance):
    world = short
    wise_before = world.wise.balances()["EUR"]
    first = _stuck_in_await(world, instance)
    # Its relaunch gets past await and fails in verify: okx's balance endpoint is down.
    world.exchange.faults.add({"kind": "error_5xx", "endpoint": "balances", "venue": "okx"})
    second = _recover_and_relaunch(instance, first, world)
    assert not second.success
    state = InstanceSagaLog(instance).load(first.run_id)
    assert state.step("await_arrival").done and not state.step("verify_balances").done
    assert decide(SAGA.definition, state).verdict is Verdict.FORWARD
    assert sum("stuck after its pivot" in m.subject for m in world.smtp.wait_for(2)) == 2

    world.exchange.faults.clear()
    reset_breakers()
    third = _recover_and_relaunch(instance, second, world)
    assert third.success
    _assert_rebalanced(world, wise_before)


# ----------------------------------------------------------------------------- ambiguous outcomes


@pytest.mark.parametrize(
    "where",
    ["exchange:create_withdrawal", "wise:create_transfer", "wise:fund_transfer"],
)
def test_timeout_after_commit_creates_no_duplicate(short, instance, where):
    world = short
    wise_before = world.wise.balances()["EUR"]
    system, endpoint = where.split(":")
    if system == "exchange":
        fault = world.exchange.faults.add({"kind": "timeout_after_commit", "endpoint": endpoint, "count": 1})
    else:
        fault = world.wise.set_fault(endpoint, "timeout_after_commit", count=1)
    result = _run(instance)
    assert result.success
    assert (fault.hits if system == "exchange" else fault.fired) == 1  # the answer really was lost once
    _assert_rebalanced(world, wise_before)  # exactly one withdrawal, one transfer, one debit


# ----------------------------------------------------------------------------- the plan asset


def test_rebalance_plan_asset_shows_the_plan_and_moves_nothing(short, instance):
    world = short
    books = _books(world)
    asset = build_rebalance_plan(world.exchange.state.venue_names())
    resources = resources_from_env()
    result = materialize([asset], instance=instance, resources={k: resources[k] for k in ("exchange", "wise")})
    assert result.success
    [materialization] = result.asset_materializations_for_node("rebalance_plan")
    metadata = materialization.metadata
    assert metadata["transfers"].value == 2 and metadata["may_run"].value is True
    assert metadata["total_fee"].value == {"EUR": pytest.approx(0.39), "USDT": pytest.approx(0.8)}
    assert "binance → okx" in metadata["plan"].value
    assert _books(world) == books
