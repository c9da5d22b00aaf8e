"""The market_data position-mode check goes ERROR for a venue in hedge mode, naming the setting to change."""

from __future__ import annotations

from dagster import AssetCheckKey, AssetCheckSeverity, Definitions, ResourceDefinition

from arb_orchestration.defs.market_data.checks import (
    POSITION_MODE_CHECK,
    build_position_mode_checks,
    position_mode_from_client,
    position_mode_outcome,
)
from arb_orchestration.defs.market_data.keys import positions_key
from arb_orchestration_tests.unit.test_ccxt_position_mode import _binance_client, _okx_client


def test_hedge_mode_is_an_error_saying_what_to_change_on_the_exchange():
    client, _wire = _binance_client(True)
    outcome = position_mode_from_client("binance", client)
    assert not outcome.passed and outcome.severity == AssetCheckSeverity.ERROR
    assert outcome.asset_key == positions_key("binance") and outcome.check_name == POSITION_MODE_CHECK
    assert "hedge (two-way) position mode" in outcome.description and "One-way Mode" in outcome.description
    assert outcome.metadata["position_mode"] == "hedge"


def test_one_way_passes_and_unknown_passes_with_a_warning_severity():
    client, _wire = _okx_client("net_mode")
    assert position_mode_from_client("okx", client).passed
    unknown = position_mode_outcome("kraken", "unknown", "no read")
    assert unknown.passed and unknown.severity == AssetCheckSeverity.WARN and "unknown" in unknown.description


def test_a_client_without_a_mode_read_is_unknown_not_an_error():
    assert position_mode_from_client("sim", object()).passed


class _Exchange:
    def __init__(self, clients):
        self.clients = clients

    def venue(self, name):
        return self.clients[name]


def test_the_asset_check_runs_and_fails_only_the_hedge_mode_venue():
    hedge, _ = _binance_client(True)
    one_way, _ = _okx_client("net_mode")
    defs = Definitions(asset_checks=[build_position_mode_checks(["binance", "okx"])],
                       resources={"exchange": ResourceDefinition.hardcoded_resource(_Exchange({"binance": hedge, "okx": one_way}))})
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(raise_on_error=False)
    evals = {e.asset_key: e for e in result.get_asset_check_evaluations()}
    assert evals[positions_key("binance")].passed is False
    assert evals[positions_key("binance")].severity == AssetCheckSeverity.ERROR
    assert evals[positions_key("okx")].passed is True
    assert AssetCheckKey(positions_key("okx"), POSITION_MODE_CHECK) in {e.asset_check_key for e in evals.values()}
