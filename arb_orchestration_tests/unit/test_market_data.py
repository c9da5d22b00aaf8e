"""market_data in Dagster with a fake exchange: observation job and sensor, checks, hedge_targets.

Covers: what the observations contain (tables, USD totals, 8 h-normalised
funding, charts), that a failing venue is not observed while the others are,
that the sensor throttles charts and repeats check results only on change,
that each check (floors, freshness, hedge drift) can pass, WARN and ERROR, and
that hedge_targets refuses to plan from a partial book.
"""

from __future__ import annotations

import time

import pytest
from dagster import (
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    AssetObservation,
    AssetSelection,
    DagsterInstance,
    Definitions,
    MetadataValue,
    SensorResult,
    build_sensor_context,
    define_asset_job,
)

from arb_orchestration.defs.market_data import build_market_data_defs
from arb_orchestration.defs.market_data.checks import (
    POSITION_MODE_CHECK,
    balance_floors_outcome,
    freshness_outcome,
    hedge_drift_outcome,
)
from arb_orchestration.defs.market_data.keys import (
    BALANCES_FLOORS_CHECK,
    FUNDING_RATES_KEY,
    HEDGE_DRIFT_CHECK,
    HEDGE_TARGETS_KEY,
    OBSERVATION_FRESH_CHECK,
    balances_key,
    positions_key,
)
from arb_orchestration.defs.market_data.observations import LAST_UPDATED
from arb_orchestration.defs.market_data.policy import BalanceFloors, MarketDataPolicy
from arb_orchestration.defs.market_data.sensors import MarketDataUnavailable, SensorCursor
from arb_orchestration.domain.hedging import HedgePolicy, plan_hedges
from arb_orchestration_tests.unit.test_market_data_fakes import (
    BTC,
    BTC_PRICE,
    FakeVenue,
    fake_exchange,
    marks,
    pos,
    world,
)

VENUES = ["binance", "okx", "hyperliquid"]
OBSERVED = [balances_key(v) for v in VENUES] + [positions_key(v) for v in VENUES] + [FUNDING_RATES_KEY]


CHARTS = MarketDataPolicy(plots=True)


def defs_for(exchange, policy: MarketDataPolicy | None = None) -> Definitions:
    # Charts cost ~0.3 s each: only the tests about charts draw them.
    policy = policy or MarketDataPolicy(plots=False)
    extra = Definitions(
        resources={"exchange": exchange},
        jobs=[define_asset_job("observed_state_checks", selection=AssetSelection.checks_for_assets(*OBSERVED))],
    )
    return Definitions.merge(build_market_data_defs(VENUES, policy), extra)


def latest(instance: DagsterInstance, key: AssetKey) -> dict:
    records = instance.fetch_observations(key, limit=1).records
    assert records, f"{key.to_user_string()} was not observed"
    return records[0].asset_observation.metadata


def rows(table) -> list[dict]:
    return [record.data for record in table.records]


def latest_check(instance: DagsterInstance, key: AssetKey, name: str):
    check_key = AssetCheckKey(key, name)
    summary = instance.event_log_storage.get_asset_check_summary_records([check_key])[check_key]
    assert summary.last_check_execution_record is not None, f"{check_key.to_user_string()} never evaluated"
    return summary.last_check_execution_record.event.dagster_event.event_specific_data


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as inst:
        yield inst


# ---------------------------------------------------------------- observation job


def test_observe_job_records_tables_totals_funding_and_charts(instance):
    job = defs_for(fake_exchange(), CHARTS).resolve_job_def("observe_market_state_job")
    result = job.execute_in_process(instance=instance)
    assert result.success

    binance = latest(instance, balances_key("binance"))
    table = {row["asset"]: row for row in rows(binance["balances"])}
    assert table["USDT"] == {
        "asset": "USDT", "free": 50_000.0, "used": 5_000.0, "total": 55_000.0, "price_usd": 1.0, "usd_value": 55_000.0
    }
    assert table["BTC"]["usd_value"] == pytest.approx(60_000.0)
    assert binance["total_usd"].value == pytest.approx(55_000 + 60_000 + 30_000)
    assert binance["chart"].md_str.startswith("![binance balances in USD](data:image/png;base64,iVBOR")
    assert binance[LAST_UPDATED].value == pytest.approx(time.time(), abs=60)

    okx = latest(instance, balances_key("okx"))
    assert okx["unpriced_assets"].value == "EUR"
    assert okx["total_usd"].value == pytest.approx(40_000.0)  # EUR is listed, not guessed

    positions = rows(latest(instance, positions_key("binance"))["positions"])
    assert positions == [
        {
            "symbol": BTC, "side": "short", "size": 0.5, "entry_price": BTC_PRICE, "mark_price": BTC_PRICE,
            "liquidation_price": 70_000.0, "liq_distance_pct": pytest.approx(16.667, abs=1e-3),
            "unrealized_pnl": 0.0, "notional_usd": 30_000.0,
        }
    ]

    funding = latest(instance, FUNDING_RATES_KEY)
    by_market = {(r["venue"], r["symbol"]): r for r in rows(funding["funding_rates"])}
    hourly = by_market[("hyperliquid", BTC)]
    assert (hourly["rate_bps"], hourly["interval_hours"], hourly["rate_8h_bps"]) == (0.5, 1.0, 4.0)
    assert hourly["apr_pct"] == pytest.approx(43.8)
    best = {r["asset"]: r for r in rows(funding["best_venue_per_asset"])}
    assert (best["BTC"]["short_on"], best["BTC"]["long_on"]) == ("hyperliquid", "okx")
    assert funding["chart"].md_str.startswith("![Funding rate per venue")

    floors = latest_check(instance, balances_key("binance"), BALANCES_FLOORS_CHECK)
    assert floors.passed


def test_a_failing_venue_is_not_observed_and_fails_the_run(instance):
    exchange = fake_exchange(world(okx=FakeVenue("okx", fail_with=ConnectionError("connection refused"))))
    result = defs_for(exchange).resolve_job_def("observe_market_state_job").execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert not result.success
    failure = result.failure_data_for_node("observe_market_state")
    assert "okx" in failure.user_failure_data.description
    assert "ConnectionError: connection refused" in str(failure.user_failure_data.metadata["error/okx"])
    assert "chart" not in latest(instance, balances_key("binance"))  # policy.plots=False
    assert not instance.fetch_observations(balances_key("okx"), limit=1).records
    # funding_rates covers every venue: no partial picture is recorded.
    assert not instance.fetch_observations(FUNDING_RATES_KEY, limit=1).records


def test_observe_one_venue_on_demand_and_reject_unknown_ones(instance):
    job = defs_for(fake_exchange()).resolve_job_def("observe_market_state_job")
    config = {"ops": {"observe_market_state": {"config": {"venues": ["okx"], "plots": False}}}}
    assert job.execute_in_process(instance=instance, run_config=config).success
    assert instance.fetch_observations(balances_key("okx"), limit=1).records
    assert not instance.fetch_observations(balances_key("binance"), limit=1).records
    assert not instance.fetch_observations(FUNDING_RATES_KEY, limit=1).records
    bad = {"ops": {"observe_market_state": {"config": {"venues": ["ftx"]}}}}
    result = job.execute_in_process(instance=instance, run_config=bad, raise_on_error=False)
    assert not result.success
    assert "ftx" in result.failure_data_for_node("observe_market_state").user_failure_data.description


# ---------------------------------------------------------------- observation sensor


def tick(defs: Definitions, name: str, instance, cursor=None):
    sensor = next(s for s in defs.sensors if s.name == name)
    with build_sensor_context(instance=instance, cursor=cursor, resources=dict(defs.resources)) as context:
        return sensor(context)


def test_sensor_observes_throttles_charts_and_repeats_checks_only_on_change(instance):
    defs = defs_for(fake_exchange(), CHARTS)
    first = tick(defs, "market_state_observation_sensor", instance)
    assert isinstance(first, SensorResult)
    observed = {e.asset_key for e in first.asset_events if isinstance(e, AssetObservation)}
    assert observed == {balances_key(v) for v in VENUES} | {positions_key(v) for v in VENUES} | {FUNDING_RATES_KEY}
    checks = [e for e in first.asset_events if not isinstance(e, AssetObservation)]
    assert {(c.asset_key, c.check_name, c.passed) for c in checks} == {
        (balances_key(v), BALANCES_FLOORS_CHECK, True) for v in VENUES
    } | {(positions_key(v), POSITION_MODE_CHECK, True) for v in VENUES}  # fakes read no mode: unknown, a pass
    charts = {e.asset_key for e in first.asset_events if isinstance(e, AssetObservation) and "chart" in e.metadata}
    assert charts == {balances_key(v) for v in VENUES} | {FUNDING_RATES_KEY}

    second = tick(defs, "market_state_observation_sensor", instance, cursor=first.cursor)
    observations = [e for e in second.asset_events if isinstance(e, AssetObservation)]
    assert len(observations) == 7  # observed every tick: freshness depends on it
    assert not any("chart" in e.metadata for e in observations)  # charts wait for plot_every_seconds
    assert [e for e in second.asset_events if not isinstance(e, AssetObservation)] == []  # checks unchanged


def test_sensor_observes_healthy_venues_and_fails_the_tick_when_none_answer(instance):
    broken = world(hyperliquid=FakeVenue("hyperliquid", fail_with=TimeoutError("read timed out")))
    result = tick(defs_for(fake_exchange(broken)), "market_state_observation_sensor", instance)
    observed = {e.asset_key for e in result.asset_events if isinstance(e, AssetObservation)}
    assert balances_key("binance") in observed
    assert balances_key("hyperliquid") not in observed
    assert FUNDING_RATES_KEY not in observed

    down = {v: FakeVenue(v, fail_with=ConnectionError("refused")) for v in VENUES}
    with pytest.raises(MarketDataUnavailable, match="no venue answered"):
        tick(defs_for(fake_exchange(down)), "market_state_observation_sensor", instance)


def test_sensor_records_a_floor_breach_and_its_recovery():
    cursor = SensorCursor()
    policy = MarketDataPolicy()
    outcome = balance_floors_outcome("binance", {"USDT": 9_000.0}, policy.floors)
    assert cursor.due([outcome], now=0.0, heartbeat=600) != []
    assert cursor.due([outcome], now=10.0, heartbeat=600) == []  # unchanged
    recovered = balance_floors_outcome("binance", {"USDT": 90_000.0}, policy.floors)
    assert [e.passed for e in cursor.due([recovered], now=20.0, heartbeat=600)] == [True]
    assert [e.passed for e in cursor.due([recovered], now=700.0, heartbeat=600)] == [True]  # heartbeat


def test_bad_cursor_starts_over():
    assert SensorCursor.parse("not json").dump() == SensorCursor().dump()


# ---------------------------------------------------------------- balance floors check


def test_balance_floors_pass_warn_and_error():
    floors = BalanceFloors(default={"USDT": 10_000.0}, per_venue={"okx": {"BTC": 0.5, "USDT": 0.0}})
    assert balance_floors_outcome("binance", {"USDT": 12_001.0}, floors).passed  # 20.01 % headroom
    warn = balance_floors_outcome("binance", {"USDT": 11_999.0}, floors)
    assert (warn.passed, warn.severity) == (False, AssetCheckSeverity.WARN)
    error = balance_floors_outcome("binance", {"USDT": 9_999.0}, floors)
    assert (error.passed, error.severity) == (False, AssetCheckSeverity.ERROR)
    assert "USDT" in error.description
    missing = balance_floors_outcome("okx", {"USDT": 0.0}, floors)  # USDT floor off on okx, BTC absent
    assert (missing.passed, missing.severity) == (False, AssetCheckSeverity.ERROR)
    assert "BTC" in missing.description


def test_floor_check_definitions_read_the_latest_observation(instance):
    exchange = fake_exchange(world(okx=FakeVenue("okx", balances={"USDT": 5_000.0}, marks=marks())))
    defs = defs_for(exchange)
    checks_job = defs.resolve_job_def("observed_state_checks")
    # Never observed: the check fails rather than pass on no data.
    result = checks_job.execute_in_process(instance=instance)
    assert result.success
    assert not latest_check(instance, balances_key("binance"), BALANCES_FLOORS_CHECK).passed

    defs.resolve_job_def("observe_market_state_job").execute_in_process(instance=instance)
    checks_job.execute_in_process(instance=instance)
    assert latest_check(instance, balances_key("binance"), BALANCES_FLOORS_CHECK).passed
    okx = latest_check(instance, balances_key("okx"), BALANCES_FLOORS_CHECK)
    assert (okx.passed, okx.severity) == (False, AssetCheckSeverity.ERROR)


# ---------------------------------------------------------------- freshness check


def test_freshness_pass_warn_error_and_never():
    policy = MarketDataPolicy(warn_after_seconds=120, stale_after_seconds=300)
    key = balances_key("binance")
    assert freshness_outcome(key, 1_000.0, 1_120.0, policy).passed
    warn = freshness_outcome(key, 1_000.0, 1_121.0, policy)
    assert (warn.passed, warn.severity) == (False, AssetCheckSeverity.WARN)
    error = freshness_outcome(key, 1_000.0, 1_301.0, policy)
    assert (error.passed, error.severity) == (False, AssetCheckSeverity.ERROR)
    never = freshness_outcome(key, None, 1_000.0, policy)
    assert (never.passed, never.severity) == (False, AssetCheckSeverity.ERROR)


def test_freshness_sensor_reads_observation_time_from_the_instance(instance):
    defs = defs_for(fake_exchange())
    stale_at = time.time() - 3600
    instance.report_runless_asset_event(
        AssetObservation(balances_key("binance"), metadata={LAST_UPDATED: MetadataValue.timestamp(stale_at)})
    )
    instance.report_runless_asset_event(
        AssetObservation(positions_key("binance"), metadata={LAST_UPDATED: MetadataValue.timestamp(time.time())})
    )
    result = tick(defs, "market_state_freshness_sensor", instance)
    outcomes = {e.asset_key: e for e in result.asset_events}
    assert len(outcomes) == 7
    assert (outcomes[balances_key("binance")].passed, outcomes[balances_key("binance")].severity) == (
        False, AssetCheckSeverity.ERROR
    )
    assert outcomes[positions_key("binance")].passed
    assert not outcomes[FUNDING_RATES_KEY].passed  # never observed
    assert {e.check_name for e in result.asset_events} == {OBSERVATION_FRESH_CHECK}

    again = tick(defs, "market_state_freshness_sensor", instance, cursor=result.cursor)
    assert again.asset_events == [] and again.skip_reason is not None

    # Observations resume: the check goes green again on the next tick (no materialization needed).
    instance.report_runless_asset_event(
        AssetObservation(balances_key("binance"), metadata={LAST_UPDATED: MetadataValue.timestamp(time.time())})
    )
    recovered = tick(defs, "market_state_freshness_sensor", instance, cursor=result.cursor)
    assert [(e.asset_key, e.passed) for e in recovered.asset_events] == [(balances_key("binance"), True)]


def test_freshness_check_definition_fails_when_stale(instance):
    defs = defs_for(fake_exchange())
    instance.report_runless_asset_event(
        AssetObservation(FUNDING_RATES_KEY, metadata={LAST_UPDATED: MetadataValue.timestamp(time.time() - 200)})
    )
    defs.resolve_job_def("observed_state_checks").execute_in_process(instance=instance)
    evaluation = latest_check(instance, FUNDING_RATES_KEY, OBSERVATION_FRESH_CHECK)
    assert (evaluation.passed, evaluation.severity) == (False, AssetCheckSeverity.WARN)


# ---------------------------------------------------------------- hedge_targets


def materialize_hedge_targets(exchange, instance, policy=None):
    job = defs_for(exchange, policy).resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, asset_selection=[HEDGE_TARGETS_KEY], raise_on_error=False)


def test_hedge_targets_of_a_neutral_book_pass_the_drift_check(instance):
    result = materialize_hedge_targets(fake_exchange(), instance, CHARTS)
    assert result.success
    metadata = result.asset_materializations_for_node("hedge_targets")[0].metadata
    deltas = {row["asset"]: row for row in rows(metadata["net_delta"])}
    assert deltas["BTC"]["net_delta"] == pytest.approx(0.0)  # 1.0 spot - 0.5 - 0.5 perps
    assert deltas["ETH"]["net_delta"] == pytest.approx(0.0)
    assert metadata["order_count"].value == 0
    assert metadata["net_delta/BTC"].value == pytest.approx(0.0)
    assert metadata["delta_chart"].md_str.startswith("![Exposure per base asset")
    assert metadata["balances_chart"].md_str.startswith("![balances by venue and asset")
    (check,) = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed) == (HEDGE_DRIFT_CHECK, True)


def test_hedge_targets_plan_the_drift_on_the_best_funding_venue_and_warn(instance):
    drifted = world()
    drifted["binance"].balances["BTC"] = 1.05  # 0.05 BTC too long: $3k, over the $1k band, under 5 bands
    result = materialize_hedge_targets(fake_exchange(drifted), instance)
    metadata = result.asset_materializations_for_node("hedge_targets")[0].metadata
    (order,) = rows(metadata["orders"])
    # hyperliquid's 0.5 bp/h is 4 bp/8h: the best place to be short.
    assert (order["venue"], order["symbol"], order["side"], order["amount"], order["reduce_only"]) == (
        "hyperliquid", BTC, "sell", 0.05, False
    )
    assert metadata["plan"].value["orders"][0]["venue"] == "hyperliquid"
    (check,) = result.get_asset_check_evaluations()
    assert (check.passed, check.severity) == (False, AssetCheckSeverity.WARN)


def test_hedge_drift_is_an_error_when_no_order_can_fix_it(instance):
    drifted = world()
    drifted["okx"].balances["SOL"] = 1_000.0
    drifted["okx"].marks["SOL/USDT"] = 150.0
    policy = MarketDataPolicy(plots=False, hedge=HedgePolicy(hedge_assets=("BTC", "ETH", "SOL")))
    result = materialize_hedge_targets(fake_exchange(drifted), instance, policy)
    (check,) = result.get_asset_check_evaluations()
    assert (check.passed, check.severity) == (False, AssetCheckSeverity.ERROR)
    assert "SOL" in check.description and "no_market" in check.description


def test_hedge_drift_far_outside_the_band_is_an_error():
    policy = MarketDataPolicy(drift_error_multiple=5.0)
    balances = {"binance": {"BTC": world()["binance"].fetch_balance()["BTC"]}}
    plan = plan_hedges([pos("okx", BTC, "long", 1.0, BTC_PRICE)], balances, world()["okx"].funding, {"BTC": BTC_PRICE})
    outcome = hedge_drift_outcome(plan, policy)
    assert (outcome.passed, outcome.severity) == (False, AssetCheckSeverity.ERROR)  # $120k vs a $1k band


def test_hedge_targets_refuse_a_partial_book(instance):
    broken = world(okx=FakeVenue("okx", fail_with=ConnectionError("refused")))
    result = materialize_hedge_targets(fake_exchange(broken), instance)
    assert not result.success
    assert "partial book" in result.failure_data_for_node("hedge_targets").user_failure_data.description
    assert not result.asset_materializations_for_node("hedge_targets")


# ---------------------------------------------------------------- secrets


def test_a_secret_api_key_reaches_the_venues_but_no_event_or_log(instance, monkeypatch, caplog, capfd):
    from dagster import EnvVar
    from dagster._serdes import serialize_value

    secret = "test-secret-xyz"
    monkeypatch.setenv("EXCHANGE_SIM_API_KEY", secret)
    caplog.set_level("DEBUG")
    venues = world()
    for venue in venues.values():
        venue.expected_api_key = secret  # answers only when the EnvVar was resolved
    venues["okx"].fail_with = PermissionError("refused")  # an error path too
    defs = defs_for(fake_exchange(venues, api_key=EnvVar("EXCHANGE_SIM_API_KEY")))
    run = defs.resolve_job_def("observe_market_state_job").execute_in_process(instance=instance, raise_on_error=False)
    assert instance.fetch_observations(balances_key("binance"), limit=1).records  # the key worked
    for event in tick(defs, "market_state_observation_sensor", instance).asset_events:
        instance.report_runless_asset_event(event)

    stored = "\n".join(serialize_value(entry) for entry in instance.all_logs(run.run_id))
    for key in [balances_key(v) for v in VENUES] + [positions_key(v) for v in VENUES]:
        stored += "\n".join(serialize_value(r.event_log_entry) for r in instance.fetch_observations(key, 10).records)
    assert "total_usd" in stored and "okx" in stored
    out, err = capfd.readouterr()
    for text in (stored, caplog.text, out, err):
        assert secret not in text
