"""The observation sensor records the position-mode check for every venue that answered, from the mode the
venue's client read inside the snapshot's deadline-bound fetch: ERROR for a venue in hedge (two-way) mode,
before any order has to move money there. Fakes for the venues; a real sensor tick on an ephemeral instance."""

from __future__ import annotations

import pytest
from dagster import AssetCheckEvaluation, AssetCheckSeverity, DagsterInstance

from arb_orchestration.defs.market_data.checks import POSITION_MODE_CHECK
from arb_orchestration.defs.market_data.keys import positions_key
from arb_orchestration.defs.market_data.policy import MarketDataPolicy
from arb_orchestration_tests.unit.test_market_data import defs_for
from arb_orchestration_tests.unit.test_market_data_fakes import FakeVenue, fake_exchange, marks, world
from arb_orchestration_tests.unit.test_review_assets_check_dedupe import tick

POLICY = MarketDataPolicy(plots=False)


class ModeVenue(FakeVenue):
    """A fake venue whose client reads its position mode (as the ccxt client does)."""

    def __init__(self, *args, mode: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.mode, self.mode_reads = mode, 0

    def position_mode(self) -> str:
        self.mode_reads += 1
        return self.mode

    def health(self) -> dict:
        return {"position_mode": self.mode, "position_mode_detail": f"read {self.mode}"}


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as inst:
        yield inst


def _mode_checks(result) -> dict:
    return {e.asset_key: e for e in result.asset_events
            if isinstance(e, AssetCheckEvaluation) and e.check_name == POSITION_MODE_CHECK}


def test_a_hedge_mode_venue_fails_its_check_on_the_observation_tick(instance):
    okx = ModeVenue("okx", balances={"USDT": 50_000.0}, marks=marks(), mode="hedge")
    binance = ModeVenue("binance", balances={"USDT": 50_000.0}, marks=marks(), mode="one_way")
    result = tick(defs_for(fake_exchange(world(okx=okx, binance=binance)), POLICY), instance, None)
    checks = _mode_checks(result)
    assert (checks[positions_key("okx")].passed, checks[positions_key("okx")].severity) == (False, AssetCheckSeverity.ERROR)
    assert "hedge (two-way) position mode" in checks[positions_key("okx")].description
    assert checks[positions_key("binance")].passed is True
    assert okx.mode_reads >= 1 and binance.mode_reads >= 1  # read by the snapshot's fetch


def test_a_venue_client_without_a_mode_read_passes_as_unknown(instance):
    result = tick(defs_for(fake_exchange(world()), POLICY), instance, None)
    checks = _mode_checks(result)
    assert checks and all(e.passed and e.severity == AssetCheckSeverity.WARN for e in checks.values())
