"""`emergency_stop_loss_saga` against the real exchange simulator (HTTP, fault injection), the real
SMTP sink and a PostgreSQL-backed Dagster instance (the production storage for the saga log):
flattens every venue and mails the risk team, no duplicate order after a timeout-after-commit, a
venue answering 5xx is retried until flat, dry run moves nothing, re-execution moves nothing."""

from __future__ import annotations

import pytest
from dagster import Definitions, ReexecutionOptions, build_reconstructable_job, execute_job

from arb_orchestration.defs.stop_loss import emergency_stop_loss_saga, stop_loss_saga
from arb_orchestration.saga import InstanceSagaLog, Verdict, decide, trading_paused
from arb_orchestration_tests.integration.world_resources import world_exchange, world_smtp

pytestmark = pytest.mark.integration


def resources_from_env() -> dict:
    """Real resources pointed at the world (the `world` fixture sets the environment)."""
    return {
        "exchange": world_exchange(timeout_seconds=1.0, max_attempts=2, retry_base_delay=0.02),
        "smtp": world_smtp(),
    }


def stop_loss_job_for_world():
    """Reconstructable target for re-execution."""
    return Definitions(jobs=[emergency_stop_loss_saga], resources=resources_from_env()).get_job_def(
        emergency_stop_loss_saga.name
    )


def _run(instance, config=None):
    return emergency_stop_loss_saga.execute_in_process(
        instance=instance, run_config={"deadline_seconds": 20.0, **(config or {})},
        resources=resources_from_env(), raise_on_error=False,
    )


def _exposure(world) -> dict[str, list[tuple[str, str, float]]]:
    state = world.exchange.state
    return {v: [(p.symbol, p.side, p.size) for p in state.positions(v) if p.size > 1e-9] for v in state.venue_names()}


def _orders(world, venue) -> list:
    return world.exchange.state.orders(venue)


def test_stop_loss_flattens_every_simulated_venue_and_mails_the_risk_team(world, pg_dagster_instance):
    before = _exposure(world)
    assert sum(map(len, before.values())) >= 5  # the seeded book holds positions on every venue
    result = _run(pg_dagster_instance, {"reason": "capital below floor"})
    assert result.success
    assert _exposure(world) == {v: [] for v in before}
    assert all(not world.exchange.state.orders(v, status="open") for v in before)
    for venue, positions in before.items():
        orders = _orders(world, venue)
        assert len(orders) == len(positions) and all(o.reduce_only and o.type == "market" for o in orders)
    [mail] = world.smtp.wait_for(1, timeout=10)
    assert mail.subject.startswith("[stop-loss] FLAT on 5 venue(s)") and mail.to == ["risk@localhost"]
    assert "capital below floor" in mail.body and "closed: sell 1.5 BTC/USDT:USDT @ avg" in mail.body
    assert "hyperliquid: flat, no open orders" in mail.body
    assert trading_paused(pg_dagster_instance)[0]
    state = InstanceSagaLog(pg_dagster_instance).load(result.run_id)  # the saga log, read back from PostgreSQL
    assert decide(stop_loss_saga.definition, state).verdict is Verdict.COMPLETED


def test_timeout_after_commit_on_order_placement_creates_no_duplicate(world, pg_dagster_instance):
    fault = world.exchange.faults.add({"kind": "timeout_after_commit", "venue": "binance",
                                       "endpoint": "create_order", "count": 2})
    result = _run(pg_dagster_instance, {"venues": ["binance"]})
    assert result.success
    assert fault.hits == 2  # both close orders were applied, then their connections dropped
    orders = _orders(world, "binance")
    assert len(orders) == 2 and len({o.client_order_id for o in orders}) == 2
    assert _exposure(world)["binance"] == []


def test_a_venue_answering_5xx_is_retried_until_flat(world, pg_dagster_instance):
    world.exchange.faults.add({"kind": "error_5xx", "venue": "okx", "endpoint": "create_order", "count": 3})
    world.exchange.faults.add({"kind": "error_5xx", "venue": "okx", "endpoint": "positions", "count": 3})
    result = _run(pg_dagster_instance, {"venues": ["okx", "kraken"]})
    assert result.success
    assert _exposure(world)["okx"] == [] and _exposure(world)["kraken"] == []
    assert len(_orders(world, "okx")) == 1  # every resend carried the same client order id
    report = InstanceSagaLog(pg_dagster_instance).load(result.run_id).step("liquidate").result
    okx = next(v for v in report["venues"] if v["venue"] == "okx")
    assert okx["errors"]  # it did fail along the way


def test_dry_run_moves_nothing(world, pg_dagster_instance):
    before = _exposure(world)
    result = _run(pg_dagster_instance, {"dry_run": True})
    assert result.success
    assert _exposure(world) == before
    assert all(_orders(world, v) == [] for v in before)
    [mail] = world.smtp.wait_for(1, timeout=10)
    assert "DRY RUN" in mail.subject and "would sell 1.5 BTC/USDT:USDT" in mail.body
    assert not trading_paused(pg_dagster_instance)[0]


def test_reexecuting_a_finished_stop_loss_moves_nothing(world, pg_dagster_instance):
    first = _run(pg_dagster_instance, {"venues": ["kraken", "okx"]})
    assert first.success
    orders = {v: len(_orders(world, v)) for v in ("kraken", "okx")}
    world.smtp.wait_for(1, timeout=10)
    # Exposure comes back (a human trades by hand); re-executing the finished saga must not touch it.
    world.exchange.state.set_positions("kraken", [{"symbol": "BTC/USDT:USDT", "side": "long", "size": 0.7}])
    job = build_reconstructable_job(__name__, "stop_loss_job_for_world")
    with execute_job(job, pg_dagster_instance, run_config={"venues": ["kraken", "okx"], "deadline_seconds": 20.0},
                     reexecution_options=ReexecutionOptions(parent_run_id=first.run_id)) as again:
        assert again.success
    assert {v: len(_orders(world, v)) for v in ("kraken", "okx")} == orders
    assert _exposure(world)["kraken"] == [("BTC/USDT:USDT", "long", 0.7)]
    assert len(world.smtp.messages()) == 1
