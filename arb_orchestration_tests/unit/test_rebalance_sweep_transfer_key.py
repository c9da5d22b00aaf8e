"""The rebalance sweep step hands a venue whose transfers carry client ids (OKX, `internal_transfer_ids`) a
`transfer_key` the venue derives its transfers' clientIds from. The key is the saga's sub-key for the venue/asset plus
how many transfers the step's notes already record as sent. So the same notes always give the same key, and a retry
after a partial sweep gets a new one and never reuses the id of a transfer that may have moved. A venue without
client ids is called exactly as before (no `transfer_key` argument). Runs on the fakes of
test_rebalance_sweep_step (engine without Dagster)."""

from __future__ import annotations

import pytest

from arb_orchestration.defs.rebalance.steps import sweep_transfer_key
from arb_orchestration.resources.errors import TransientError
from arb_orchestration.saga.keys import derive_key
from arb_orchestration_tests.unit.test_rebalance_steps import STEPS, _run
from arb_orchestration_tests.unit.test_rebalance_steps import world as world  # noqa: F401 (fixture)
from arb_orchestration_tests.unit.test_rebalance_sweep_step import CREDITED, TwoWalletVenue, _sweep
from arb_orchestration_tests.unit.test_rebalance_sweep_step import two_wallets as two_wallets  # noqa: F401 (fixture)


class KeyedVenue(TwoWalletVenue):
    """A TwoWalletVenue that, like the ccxt client on OKX, takes a `transfer_key` for its transfers' client ids."""

    internal_transfer_ids = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.keys: list[str | None] = []

    def sweep_to_trading(self, asset, *, at_most, on_transfer=None, transfer_key=None):
        self.keys.append(transfer_key)
        return super().sweep_to_trading(asset, at_most=at_most, on_transfer=on_transfer)


class Ctx:
    def __init__(self, base: str):
        self.base = base

    def key(self, *parts):
        return derive_key(self.base, *parts)


def _keyed(world, name="a"):
    exchange = world["exchange"]
    old = exchange.venues[name]
    venue = KeyedVenue(exchange, name, old.wallet, old.iban, old.fee)
    venue.deposit_wallet = dict(old.deposit_wallet)
    exchange.venues[name] = venue
    return venue


def test_the_key_counts_the_transfers_the_notes_record_as_sent():
    ctx = Ctx("step-key")
    notes = [{"venue": "a", "asset": "USDT", "sweep": "sending", "amount": 1.0},
             {"venue": "a", "asset": "USDT", "sweep": "moved", "amount": 1.0},
             {"venue": "b", "asset": "USDT", "sweep": "sending", "amount": 1.0},
             {"venue": "a", "asset": "USDC", "sweep": "sending", "amount": 1.0}]
    assert sweep_transfer_key(ctx, [], "a", "USDT") == derive_key("step-key", "sweep", "a", "USDT", 0)
    assert sweep_transfer_key(ctx, notes, "a", "USDT") == derive_key("step-key", "sweep", "a", "USDT", 1)
    assert sweep_transfer_key(ctx, notes, "a", "USDT") == sweep_transfer_key(Ctx("step-key"), list(notes), "a", "USDT")


def test_a_keyed_venue_gets_a_new_key_on_the_retry_after_a_partial_sweep(two_wallets):  # noqa: F811
    log = _run(two_wallets, steps=STEPS[:-1])
    a = _keyed(two_wallets)
    a.script = ["partial"]  # two transfers noted as sending: one moved, one not
    with pytest.raises(TransientError):
        _sweep(two_wallets, log)
    _sweep(two_wallets, log, attempt=1)
    assert a.sweeps == [("USDT", CREDITED), ("USDT", CREDITED / 2)]
    first, second = a.keys
    assert first and second and first != second, "the retry must not reuse the first call's transfer ids"


def test_a_venue_without_client_ids_is_called_without_a_transfer_key(two_wallets):  # noqa: F811
    log = _run(two_wallets, steps=STEPS[:-1])
    a = two_wallets["exchange"].venues["a"]
    assert not getattr(a, "internal_transfer_ids", False)
    _sweep(two_wallets, log)  # TwoWalletVenue.sweep_to_trading takes no transfer_key: a TypeError would fail here
    assert a.sweeps == [("USDT", CREDITED)]
