"""The whole code location: it loads, without network, and holds every asset, check, job and sensor.

Each domain appends its own names to the lists below; the tests compare the
lists with what `arb_orchestration.definitions.defs` actually contains, so a
definition that disappears (or was never registered) fails here.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from dagster import AssetKey, Definitions

from arb_orchestration import settings

VENUES = settings.get_list("EXCHANGE_VENUES")


def _key(path: str) -> AssetKey:
    return AssetKey(path.split("/"))


# ---- expected definitions, one block per domain -----------------------------------------

EXPECTED_ASSETS: list[str] = [
    # market_data
    *[f"venues/{venue}/{kind}" for venue in VENUES for kind in ("balances", "positions")],
    "funding_rates",
    "hedge_targets",
    # rebalance
    "rebalance_plan",
    # ops_control
    "sagas_needing_attention",
]

EXPECTED_ASSET_CHECKS: list[tuple[str, str]] = [
    # market_data
    *[(f"venues/{venue}/balances", "balances_above_floors") for venue in VENUES],
    *[(f"venues/{venue}/{kind}", "observation_fresh") for venue in VENUES for kind in ("balances", "positions")],
    ("funding_rates", "observation_fresh"),
    ("hedge_targets", "hedge_drift_within_tolerance"),
    # ops_control
    ("sagas_needing_attention", "no_saga_waits_for_a_person"),
]

EXPECTED_JOBS: list[str] = [
    # market_data
    "observe_market_state_job",
    # rebalance
    "auto_rebalance_saga",
    # stop_loss
    "emergency_stop_loss_saga",
    # hedging
    "funding_rate_hedge",
    # ops_control (kill switch)
    "pause_trading_job",
    "resume_trading_job",
]

EXPECTED_SENSORS: list[str] = [
    # market_data
    "market_state_observation_sensor",
    "market_state_freshness_sensor",
    # rebalance
    "auto_rebalance_saga_recovery_sensor",
    # stop_loss
    "emergency_stop_loss_saga_recovery_sensor",
    "emergency_stop_loss_saga_recovery_sweep_sensor",
    # hedging
    "funding_rate_hedge_recovery_sensor",
    "funding_rate_hedge_recovery_sweep_sensor",
    # ops_control
    "sagas_needing_attention_sensor",
]

EXPECTED_SCHEDULES: list[str] = ["funding_rate_hedge_schedule"]

EXPECTED_RESOURCES: list[str] = ["exchange", "wise", "kafka", "smtp", "rebalance_journal", "hedge_journal"]

# Upstream asset keys per materialised asset (lineage as the UI draws it).
EXPECTED_DEPS: dict[str, set[str]] = {
    "hedge_targets": {
        *[f"venues/{venue}/{kind}" for venue in VENUES for kind in ("balances", "positions")],
        "funding_rates",
    },
    "rebalance_plan": {f"venues/{venue}/balances" for venue in VENUES},
}

# Assets that are observed, never materialised by Dagster.
EXPECTED_OBSERVED_ONLY: list[str] = [
    *[f"venues/{venue}/{kind}" for venue in VENUES for kind in ("balances", "positions")],
    "funding_rates",
]


# ---- tests -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repo():
    from arb_orchestration.definitions import defs

    Definitions.validate_loadable(defs)
    return defs.get_repository_def()


def test_every_expected_asset_is_defined(repo):
    keys = repo.asset_graph.get_all_asset_keys()
    missing = [name for name in EXPECTED_ASSETS if _key(name) not in keys]
    assert missing == []


def test_every_expected_asset_check_is_defined(repo):
    checks = {(key.asset_key.to_user_string(), key.name) for key in repo.asset_graph.asset_check_keys}
    assert [c for c in EXPECTED_ASSET_CHECKS if c not in checks] == []


def test_every_expected_job_sensor_schedule_and_resource_is_defined(repo):
    assert [j for j in EXPECTED_JOBS if not repo.has_job(j)] == []
    sensors = {s.name for s in repo.sensor_defs}
    assert [s for s in EXPECTED_SENSORS if s not in sensors] == []
    schedules = {s.name for s in repo.schedule_defs}
    assert [s for s in EXPECTED_SCHEDULES if s not in schedules] == []
    assert [r for r in EXPECTED_RESOURCES if r not in repo.get_top_level_resources()] == []


def test_lineage_and_observed_assets(repo):
    graph = repo.asset_graph
    for asset, upstream in EXPECTED_DEPS.items():
        parents = {k.to_user_string() for k in graph.get(_key(asset)).parent_keys}
        assert upstream <= parents, f"{asset} lacks deps {upstream - parents}"
    for name in EXPECTED_OBSERVED_ONLY:
        node = graph.get(_key(name))
        assert not node.is_materializable, f"{name} should be observed, not materialised"


def test_definitions_load_without_network_or_heavy_imports():
    # A fresh interpreter with sockets disabled: loading (and resolving) the
    # code location must not connect anywhere, nor import the plotting stack.
    script = textwrap.dedent(
        """
        import socket, sys

        def refuse(*args, **kwargs):
            raise RuntimeError(f"network access while loading definitions: {args!r}")

        socket.socket.connect = refuse
        socket.create_connection = refuse
        from arb_orchestration.definitions import defs

        repo = defs.get_repository_def()
        repo.get_all_jobs()
        assert "matplotlib" not in sys.modules, "matplotlib imported at load"
        print("ok", len(list(repo.asset_graph.get_all_asset_keys())))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok ")
