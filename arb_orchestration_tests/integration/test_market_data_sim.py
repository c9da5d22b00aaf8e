"""market_data against the real exchange simulator over HTTP, into a PostgreSQL-backed instance.

The observation job reads every venue through `SimExchangeResource` (API key
from `EnvVar`) and the observations land in dagster-postgres storage, where
the check definitions and the freshness sensor read them back. Also: a venue
answering 503 is left unobserved while the others are recorded,
`hedge_targets` is planned from the simulator's book, and the API key appears
in no stored event, no log record and no captured output.
"""

import logging

import pytest
from dagster import (
    AssetCheckKey,
    AssetObservation,
    AssetSelection,
    DagsterInstance,
    Definitions,
    EnvVar,
    build_sensor_context,
    define_asset_job,
)

from arb_orchestration.defs.market_data import build_market_data_defs
from arb_orchestration.defs.market_data.keys import (
    BALANCES_FLOORS_CHECK,
    FUNDING_RATES_KEY,
    HEDGE_DRIFT_CHECK,
    HEDGE_TARGETS_KEY,
    OBSERVATION_FRESH_CHECK,
    balances_key,
    observable_keys,
    positions_key,
)
from arb_orchestration.defs.market_data.policy import MarketDataPolicy
from arb_orchestration.domain.funding import normalised, to_bps
from arb_orchestration.resources.resilience import reset_breakers
from arb_orchestration.resources.sim_venue import SimExchangeResource
from arb_orchestration.sim.exchange import ExchangeSimulator

pytestmark = pytest.mark.integration

SECRET = "test-secret-xyz"
VENUES = ["binance", "okx", "bybit", "kraken", "hyperliquid"]


@pytest.fixture(autouse=True)
def fresh_breakers():
    reset_breakers()
    yield
    reset_breakers()


@pytest.fixture
def sim(monkeypatch):
    monkeypatch.setenv("EXCHANGE_SIM_API_KEY", SECRET)
    simulator = ExchangeSimulator(seed=11, api_key=SECRET, tick_interval=None)
    simulator.start(port=0)
    yield simulator
    simulator.stop()


def defs_for(sim: ExchangeSimulator, policy: MarketDataPolicy | None = None) -> Definitions:
    exchange = SimExchangeResource(
        base_url=sim.url,
        api_key=EnvVar("EXCHANGE_SIM_API_KEY"),
        venue_list=VENUES,
        timeout_seconds=2.0,
        max_attempts=2,
        retry_base_delay=0.02,
    )
    checks = define_asset_job(
        "observed_state_checks", selection=AssetSelection.checks_for_assets(*observable_keys(VENUES))
    )
    return Definitions.merge(
        # No charts: they cost ~0.3 s each and are covered by the unit tests.
        build_market_data_defs(VENUES, policy or MarketDataPolicy(plots=False)),
        Definitions(resources={"exchange": exchange}, jobs=[checks]),
    )


def latest(instance: DagsterInstance, key):
    records = instance.fetch_observations(key, limit=1).records
    assert records, f"{key.to_user_string()} not observed"
    return records[0].asset_observation.metadata


def latest_check(instance: DagsterInstance, key, name):
    check_key = AssetCheckKey(key, name)
    record = instance.event_log_storage.get_asset_check_summary_records([check_key])[check_key]
    assert record.last_check_execution_record is not None
    return record.last_check_execution_record.event.dagster_event.event_specific_data


def test_observations_from_the_simulator_land_in_postgres(sim, pg_dagster_instance):
    instance = pg_dagster_instance
    assert "postgres" in type(instance.event_log_storage).__name__.lower()
    defs = defs_for(sim)
    result = defs.resolve_job_def("observe_market_state_job").execute_in_process(instance=instance)
    assert result.success

    for venue in VENUES:
        table = {row.data["asset"]: row.data for row in latest(instance, balances_key(venue))["balances"].records}
        truth = sim.state.balances(venue)
        assert set(table) == set(truth)
        for asset, balance in truth.items():
            assert table[asset]["total"] == pytest.approx(balance.total, abs=1e-6)
            assert table[asset]["free"] == pytest.approx(balance.free, abs=1e-6)
        positions = latest(instance, positions_key(venue))["positions"].records
        assert sorted((r.data["symbol"], r.data["side"], r.data["size"]) for r in positions) == sorted(
            (p.symbol, p.side, p.size) for p in sim.state.positions(venue)
        )

    funding = {
        (r.data["venue"], r.data["symbol"]): r.data for r in latest(instance, FUNDING_RATES_KEY)["funding_rates"].records
    }
    for venue in ("kraken", "hyperliquid", "binance"):  # 4 h, 1 h and 8 h intervals
        for rate in sim.state.funding_rates(venue):
            row = funding[(venue, rate.symbol)]
            assert row["interval_hours"] == rate.interval_hours
            assert row["rate_8h_bps"] == pytest.approx(to_bps(normalised(rate)), abs=1e-4)
    assert funding[("hyperliquid", "BTC/USDT:USDT")]["interval_hours"] == 1.0

    # The check definitions read the observations back from PostgreSQL.
    defs.resolve_job_def("observed_state_checks").execute_in_process(instance=instance)
    for venue in VENUES:
        assert latest_check(instance, balances_key(venue), BALANCES_FLOORS_CHECK).passed
        assert latest_check(instance, positions_key(venue), OBSERVATION_FRESH_CHECK).passed
    assert latest_check(instance, FUNDING_RATES_KEY, OBSERVATION_FRESH_CHECK).passed


def test_a_venue_answering_503_is_not_observed_and_its_freshness_fails(sim, pg_dagster_instance):
    instance = pg_dagster_instance
    sim.faults.add({"kind": "error_5xx", "venue": "okx", "status": 503})
    defs = defs_for(sim)
    sensor = next(s for s in defs.sensors if s.name == "market_state_observation_sensor")
    with build_sensor_context(instance=instance, resources=dict(defs.resources)) as context:
        result = sensor(context)
    # What the daemon does with a SensorResult: store its events, runless.
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    observed = {e.asset_key for e in result.asset_events if isinstance(e, AssetObservation)}
    assert balances_key("binance") in observed and balances_key("okx") not in observed
    assert FUNDING_RATES_KEY not in observed

    freshness = next(s for s in defs.sensors if s.name == "market_state_freshness_sensor")
    with build_sensor_context(instance=instance) as context:
        checks = {e.asset_key: e for e in freshness(context).asset_events}
    assert checks[balances_key("binance")].passed
    assert not checks[balances_key("okx")].passed
    assert not checks[FUNDING_RATES_KEY].passed


def test_hedge_targets_from_the_simulator_book(sim, pg_dagster_instance):
    # The seeded book is flat in perps but holds spot BTC/ETH: hedge_targets shorts it.
    instance = pg_dagster_instance
    result = defs_for(sim).resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[HEDGE_TARGETS_KEY], raise_on_error=False
    )
    assert result.success
    metadata = result.asset_materializations_for_node("hedge_targets")[0].metadata
    deltas = {r.data["asset"]: r.data for r in metadata["net_delta"].records}
    spot_btc = sum(sim.state.balances(v).get("BTC").total for v in VENUES if "BTC" in sim.state.balances(v))
    perp_btc = sum(
        p.size if p.side == "long" else -p.size for v in VENUES for p in sim.state.positions(v) if p.symbol.startswith("BTC/")
    )
    assert deltas["BTC"]["net_delta"] == pytest.approx(spot_btc + perp_btc, abs=1e-6)
    orders = [r.data for r in metadata["orders"].records if r.data["symbol"].startswith("BTC/")]
    assert sum(o["amount"] if o["side"] == "buy" else -o["amount"] for o in orders) == pytest.approx(
        -(spot_btc + perp_btc), abs=1e-6
    )
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == HEDGE_DRIFT_CHECK
    assert check.passed == (abs(spot_btc + perp_btc) < 1e-9)
    assert instance.get_latest_materialization_event(HEDGE_TARGETS_KEY) is not None


def _stored_text(instance: DagsterInstance) -> str:
    from dagster._serdes import serialize_value

    chunks = []
    for run in instance.get_runs():
        chunks.extend(serialize_value(entry) for entry in instance.all_logs(run.run_id))
    for key in [*observable_keys(VENUES), HEDGE_TARGETS_KEY]:
        chunks.extend(serialize_value(r.event_log_entry) for r in instance.fetch_observations(key, limit=100).records)
    return "\n".join(chunks)


def test_the_api_key_is_in_no_metadata_event_or_log(sim, pg_dagster_instance, caplog, capfd):
    instance = pg_dagster_instance
    caplog.set_level(logging.DEBUG)
    sim.faults.add({"kind": "rate_limit", "venue": "bybit", "count": 1, "retry_after": 0.05})
    defs = defs_for(sim)
    assert defs.resolve_job_def("observe_market_state_job").execute_in_process(instance=instance).success
    defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance, asset_selection=[HEDGE_TARGETS_KEY])
    sensor = next(s for s in defs.sensors if s.name == "market_state_observation_sensor")
    with build_sensor_context(instance=instance, resources=dict(defs.resources)) as context:
        for event in sensor(context).asset_events:
            instance.report_runless_asset_event(event)

    stored = _stored_text(instance)
    assert "total_usd" in stored and "hedge_drift_within_tolerance" in stored  # the scan sees real content
    assert SECRET not in stored
    assert SECRET not in caplog.text
    out, err = capfd.readouterr()
    assert SECRET not in out and SECRET not in err
    # Positive control: the same scan finds the key once it is stored.
    instance.report_runless_asset_event(AssetObservation(balances_key("binance"), metadata={"leak": SECRET}))
    assert SECRET in _stored_text(instance)
