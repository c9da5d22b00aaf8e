"""`funding_rate_hedge` against the real local world (exchange simulator over HTTP, SMTP sink) and a real
temporary Dagster instance: the seeded drift is hedged and every position gets its exchange stop, a second
run places nothing; a refused second leg unwinds the first (reduce-only) and mails the risk team; a
timeout-after-commit on order placement creates no duplicate; re-executing a finished run moves nothing;
a 1 h venue's funding, normalised, wins the hedge over an 8 h venue with a larger raw rate; the schedule's
run request carries the cron tags and runs; the rates a hedge ran at reach the instance for the sensor."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from dagster import (
    DagsterEventType,
    Definitions,
    ReexecutionOptions,
    RetryPolicy,
    build_reconstructable_job,
    build_schedule_context,
    execute_job,
    instance_for_test,
)

from arb_orchestration.defs.hedging import (
    HedgeJournalResource,
    build_funding_rate_hedge,
    build_hedge_schedule,
)
from arb_orchestration.defs.hedging.baselines import read_baselines
from arb_orchestration.defs.hedging.steps import PLACE, PLAN, STOPS
from arb_orchestration.domain.funding import normalise_rate
from arb_orchestration.saga import InstanceSagaLog, Verdict, decide
from arb_orchestration_tests.integration.world_resources import world_exchange, world_smtp

pytestmark = pytest.mark.integration

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
# Transient failures are not what these tests exercise: one quick retry keeps a failing test fast.
HEDGE = build_funding_rate_hedge(retry_policy=RetryPolicy(max_retries=1, delay=0.05))
JOB = HEDGE.job


def resources_from_env() -> dict:
    """Real resources pointed at the world (the `world` fixture sets the environment)."""
    return {
        "exchange": world_exchange(timeout_seconds=2.0, max_attempts=3, retry_base_delay=0.02),
        "smtp": world_smtp(),
        "hedge_journal": HedgeJournalResource(),
    }


def hedge_job_for_world():
    """Reconstructable target for re-execution."""
    return Definitions(jobs=[JOB], resources=resources_from_env()).get_job_def(JOB.name)


@pytest.fixture
def instance():
    with instance_for_test() as inst:
        yield inst


def _run(instance, config=None, tags=None):
    return JOB.execute_in_process(instance=instance, run_config=config or {}, resources=resources_from_env(),
                                  tags=tags, raise_on_error=False)


def _state(world):
    return world.exchange.state


def _orders(world) -> dict[str, list]:
    return {v: _state(world).orders(v) for v in _state(world).venue_names()}


def _net(world, asset: str) -> float:
    state = _state(world)
    spot = sum(state.balances(v)[asset].total for v in state.venue_names() if asset in state.balances(v))
    perp = sum(p.signed_size for v in state.venue_names() for p in state.positions(v) if p.symbol.startswith(asset + "/"))
    return spot + perp


def _position(world, venue: str, symbol: str) -> float:
    return next((p.signed_size for p in _state(world).positions(venue) if p.symbol == symbol), 0.0)


def _engine_metadata(instance, run_id: str, step: str) -> dict:
    merged: dict = {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        if event.step_key == step and event.engine_event_data and event.engine_event_data.metadata:
            merged.update(event.engine_event_data.metadata)
    return merged


def test_the_seeded_drift_is_hedged_every_position_gets_a_stop_and_a_second_run_places_nothing(world, instance):
    index = _state(world).index_prices()
    assert 1_000 < _net(world, "BTC") * index["BTC"] < 5_000  # the seeded book: a modest drift, not 5.5 BTC
    assert 1_000 < -_net(world, "ETH") * index["ETH"] < 5_000
    first = _run(instance)
    assert first.success
    markets = {v: [o for o in orders if o.type == "market"] for v, orders in _orders(world).items()}
    # BTC: too long, sold where funding (per 8 h) is highest; ETH: too short, bought where it is lowest.
    assert [(o.symbol, o.side, o.amount) for o in markets["bybit"]] == [(BTC, "sell", pytest.approx(0.04))]
    assert [(o.symbol, o.side, o.amount) for o in markets["okx"]] == [(ETH, "buy", pytest.approx(0.45))]
    assert sum(len(m) for m in markets.values()) == 2
    assert abs(_net(world, "BTC")) * index["BTC"] < 1_000 and abs(_net(world, "ETH")) * index["ETH"] < 1_000

    positions = [p for v in _state(world).venue_names() for p in _state(world).positions(v)]
    stops = [o for v, orders in _orders(world).items() for o in orders if o.type == "stop_market" and o.status == "open"]
    assert len(stops) == len(positions) == 12  # 11 seeded + okx's new ETH long
    for p in positions:
        (stop,) = [s for s in stops if (s.venue, s.symbol) == (p.venue, p.symbol)]
        assert stop.reduce_only and stop.side == ("sell" if p.side == "long" else "buy") and stop.amount == p.size
        assert abs(stop.stop_price - p.mark_price) / p.mark_price == pytest.approx(0.05, abs=1e-6)

    plan_md = _engine_metadata(instance, first.run_id, PLAN)
    rates = {(r.data["venue"], r.data["symbol"]): r.data for r in plan_md["normalised_funding_rates"].value.records}
    assert rates[("hyperliquid", BTC)]["rate_8h_bps"] == pytest.approx(1.0) and rates[("kraken", BTC)]["interval_hours"] == 4
    assert _engine_metadata(instance, first.run_id, PLACE)["fills"].value == 2
    assert _engine_metadata(instance, first.run_id, STOPS)["stops_create"].value == 12
    summary = _engine_metadata(instance, first.run_id, "record_hedge")["summary"].value
    assert "## Orders (2 placed)" in summary and "create: 12" in summary

    counts = {v: len(o) for v, o in _orders(world).items()}
    second = _run(instance)
    assert second.success
    assert {v: len(o) for v, o in _orders(world).items()} == counts
    state = InstanceSagaLog(instance).load(second.run_id)
    assert state.step(PLAN).result["legs"] == [] and state.step(STOPS).result["counts"] == {"keep": 12}


def test_a_refused_second_leg_unwinds_the_filled_first_leg(world, instance):
    state = _state(world)
    state.credit("kraken", "BTC", 1.0)  # 1.04 BTC too long, more than one market may take
    state.shock(venue="bybit", symbol=BTC, funding_rate=0.0005)  # best for shorts: leg 0
    state.shock(venue="okx", symbol=BTC, funding_rate=0.0004)  # next best: leg 1
    state.credit("okx", "USDT", -(state.balances("okx")["USDT"].free - 50.0))  # okx cannot margin leg 1
    bybit_before = _position(world, "bybit", BTC)

    result = _run(instance, {"max_notional_per_market_usd": 40_000.0})
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type is DagsterEventType.STEP_FAILURE]
    assert failure.step_key == PLACE and "refused by okx" in failure.event_specific_data.error.message
    leg, unwind = state.orders("bybit")
    assert (leg.side, leg.reduce_only, leg.amount) == ("sell", False, pytest.approx(40_000.0 / 65_000.0, rel=0.01))
    assert (unwind.side, unwind.reduce_only, unwind.filled) == ("buy", True, pytest.approx(leg.filled))
    assert unwind.client_order_id != leg.client_order_id
    assert _position(world, "bybit", BTC) == pytest.approx(bybit_before, abs=1e-9)
    assert [o for o in state.orders("okx") if o.type == "market"] == []
    saga = InstanceSagaLog(instance).load(result.run_id)
    assert saga.step(PLACE).compensated and [u["leg"] for u in saga.step(PLACE).compensation["unwound"]] == [0]
    assert decide(HEDGE.definition, saga).verdict is Verdict.COMPENSATED
    assert any("rolled back" in m.subject for m in world.smtp.wait_for(1, timeout=10))


def test_timeout_after_commit_on_create_order_places_no_duplicate(world, instance):
    fault = world.exchange.faults.add({"kind": "timeout_after_commit", "venue": "bybit",
                                       "endpoint": "create_order", "count": 1})
    before = _position(world, "bybit", BTC)
    result = _run(instance)
    assert result.success and fault.hits == 1  # applied, then the connection dropped
    markets = [o for o in _state(world).orders("bybit") if o.type == "market"]
    assert len(markets) == 1 and markets[0].amount == pytest.approx(0.04)
    assert _position(world, "bybit", BTC) == pytest.approx(before - 0.04, abs=1e-9)
    fills = InstanceSagaLog(instance).load(result.run_id).step(PLACE).result["legs"]
    assert {f["client_order_id"] for f in fills if f["venue"] == "bybit"} == {markets[0].client_order_id}


def test_reexecuting_a_finished_hedge_moves_nothing(world, instance):
    first = _run(instance)
    assert first.success
    counts = {v: len(o) for v, o in _orders(world).items()}
    _state(world).credit("kraken", "BTC", 0.5)  # new drift: a fresh hedge would sell it
    with execute_job(build_reconstructable_job(__name__, "hedge_job_for_world"), instance,
                     reexecution_options=ReexecutionOptions(parent_run_id=first.run_id)) as again:
        assert again.success
    assert {v: len(o) for v, o in _orders(world).items()} == counts
    assert _net(world, "BTC") == pytest.approx(0.5, abs=0.02)


def test_a_1h_venues_normalised_funding_decides_where_the_hedge_goes(world, instance):
    state = _state(world)
    state.shock(venue="binance", symbol=BTC, funding_rate=0.0010)  # 10 bp per 8 h: the larger raw rate
    state.shock(venue="hyperliquid", symbol=BTC, funding_rate=0.0002)  # 2 bp per hour = 16 bp per 8 h
    state.credit("kraken", "BTC", 0.5)
    result = _run(instance)
    assert result.success
    legs = InstanceSagaLog(instance).load(result.run_id).step(PLAN).result["legs"]
    (btc,) = [leg for leg in legs if leg["symbol"] == BTC]
    assert (btc["venue"], btc["side"]) == ("hyperliquid", "sell")
    assert btc["funding_rate_8h"] == pytest.approx(normalise_rate(0.0002, 1.0)) == pytest.approx(0.0016)
    assert [o for o in state.orders("binance") if o.type == "market"] == []
    hyper = [o for o in state.orders("hyperliquid") if o.type == "market"]
    assert [(o.side, o.amount) for o in hyper] == [("sell", pytest.approx(0.54))]
    # The rates this hedge ran at are in the instance, normalised, for the funding sensor.
    points = read_baselines(instance, [("hyperliquid", BTC), ("binance", BTC)])
    assert points[f"hyperliquid|{BTC}"]["rate_8h"] == pytest.approx(0.0016)
    assert points[f"binance|{BTC}"]["rate_8h"] == pytest.approx(0.0010)
    assert points[f"hyperliquid|{BTC}"]["run_id"] == result.run_id


def test_the_schedule_requests_a_cron_tagged_run_that_hedges(world, instance):
    schedule = build_hedge_schedule(JOB)
    when = datetime(2026, 11, 27, 9, 45, tzinfo=timezone.utc)
    with build_schedule_context(instance=instance, scheduled_execution_time=when) as context:
        (request,) = schedule.evaluate_tick(context).run_requests
    assert request.tags["arb/trigger"] == "cron" and request.tags["arb/job"] == "funding_rate_hedge"
    result = _run(instance, tags=request.tags)
    assert result.success
    run = instance.get_run_by_id(result.run_id)
    assert run.tags["arb/trigger"] == "cron" and run.tags["arb/job"] == "funding_rate_hedge"
    assert run.tags["dagster/priority"] == "50"  # the job's own tags (defs/k8s.HEDGE_RUN_TAGS) come along
