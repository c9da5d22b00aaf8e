"""The rebalance saga's `sweep_to_trading` step and the pivot compensation's sweep at the sources, on the fakes of
test_rebalance_steps (engine without Dagster): the step sweeps each destination venue and asset of a crypto leg that
arrived (not the EUR leg, not the sources) and records what moved; it is skipped when nothing moved; a transient
failure fails the step and the retry sweeps again; the compensation moves a failed withdrawal's top-up back at the
source, and a sweep that fails there is recorded, logged and does not fail the compensation."""

from __future__ import annotations

import pytest

from arb_orchestration.resources.errors import BusinessError, TransientError
from arb_orchestration.saga import StepRuntime, compensate, execute_step
from arb_orchestration_tests.unit.test_rebalance_steps import SAGA, STEPS, FakeVenue, _config, _run
from arb_orchestration_tests.unit.test_rebalance_steps import world as world  # noqa: F401 (fixture)


class TwoWalletVenue(FakeVenue):
    """A FakeVenue whose deposits and leftovers sit in a second wallet until swept."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.deposit_wallet: dict[str, float] = {}
        self.sweeps: list[str] = []
        self.fail_sweep: list[Exception] = []

    def sweep_to_trading(self, asset: str) -> float:
        self.sweeps.append(asset)
        if self.fail_sweep:
            raise self.fail_sweep.pop(0)
        moved = self.deposit_wallet.pop(asset, 0.0)
        self.wallet[asset] = self.wallet.get(asset, 0.0) + moved
        return moved


@pytest.fixture
def two_wallets(world):  # noqa: F811
    exchange = world["exchange"]
    for name, old in list(exchange.venues.items()):
        venue = TwoWalletVenue(exchange, name, old.wallet, old.iban, old.fee)
        exchange.venues[name] = venue
    return world


def test_the_step_sweeps_each_arrived_crypto_destination_once_and_records_it(two_wallets):
    venues = two_wallets["exchange"].venues
    venues["a"].deposit_wallet["USDT"] = 123.0  # e.g. an earlier failed withdrawal's leftover, swept along
    log = _run(two_wallets, steps=STEPS[:-1])
    assert all(v.sweeps == [] for v in venues.values())
    execute_step(SAGA, "sweep_to_trading", StepRuntime("saga-1", log, two_wallets, config=_config()))
    assert (venues["a"].sweeps, venues["b"].sweeps, venues["c"].sweeps) == (["USDT"], [], [])  # not EUR, not sources
    state = log.load("saga-1")
    assert state.step("sweep_to_trading").result == {"swept": [{"venue": "a", "asset": "USDT", "moved": 123.0}]}
    assert [p for p in state.step("sweep_to_trading").progress] == [{"venue": "a", "asset": "USDT", "moved": 123.0}]
    [(step, message, metadata)] = [r for r in two_wallets["rebalance_journal"].reports if r[0] == "sweep_to_trading"]
    assert "a 123" in message and metadata["swept"] == [{"venue": "a", "asset": "USDT", "moved": 123.0}]


def test_a_transient_sweep_failure_fails_the_step_and_the_retry_sweeps(two_wallets):
    venue = two_wallets["exchange"].venues["a"]
    log = _run(two_wallets, steps=STEPS[:-1])
    venue.fail_sweep = [TransientError("transfer outcome unknown")]
    with pytest.raises(TransientError):
        execute_step(SAGA, "sweep_to_trading", StepRuntime("saga-1", log, two_wallets, config=_config()))
    assert not log.load("saga-1").step("sweep_to_trading").done
    execute_step(SAGA, "sweep_to_trading", StepRuntime("saga-1", log, two_wallets, config=_config(), attempt=1))
    assert venue.sweeps == ["USDT", "USDT"] and log.load("saga-1").step("sweep_to_trading").done


def test_nothing_to_move_sweeps_nothing(two_wallets):
    for venue in two_wallets["exchange"].venues.values():
        venue.wallet = {"USDT": 20_000.0, "EUR": 10_000.0}  # every venue at its target
    log = _run(two_wallets)
    assert log.load("saga-1").step("sweep_to_trading").result == {"skipped": "nothing to move"}
    assert all(v.sweeps == [] for v in two_wallets["exchange"].venues.values())


@pytest.mark.parametrize("sweep_fails", [False, True])
def test_the_pivots_compensation_moves_a_top_up_back_at_the_source_best_effort(two_wallets, sweep_fails):
    source = two_wallets["exchange"].venues["b"]
    log = _run(two_wallets, steps=STEPS[:2])
    source.fail_withdraw = BusinessError("insufficient balance", code="insufficient_funds")
    source.deposit_wallet["USDT"] = 8_001.0  # the top-up the refused withdrawal left in the withdrawal wallet
    if sweep_fails:
        source.fail_sweep = [TransientError("venue b down")]
    with pytest.raises(BusinessError):
        execute_step(SAGA, "commit_transfers", StepRuntime("saga-1", log, two_wallets, config=_config()))
    done = compensate(SAGA, "saga-1", log=log, resources=two_wallets, config=_config())
    assert done == ["commit_transfers", "prepare_transfers", "plan_rebalance"]  # never blocked by the sweep
    compensation = log.load("saga-1").step("commit_transfers").compensation
    assert source.sweeps == ["USDT"]
    if sweep_fails:
        assert "swept" not in compensation
        [failed] = compensation["sweep_failed"]
        assert (failed["venue"], failed["asset"]) == ("b", "USDT") and "venue b down" in failed["error"]
        assert source.deposit_wallet == {"USDT": 8_001.0}
    else:
        assert compensation["swept"] == [{"venue": "b", "asset": "USDT", "moved": 8_001.0}]
        assert source.deposit_wallet == {} and source.wallet["USDT"] == 68_001.0
