"""Review of the rebalance saga's execution: a relay leg must not start before the leg that funds it arrived.

The planner's floor rule (docs/route-planner.md) says a transfer never takes its source below the source's own
target; a venue that relays sends only after it has received. The saga commits every leg at one pivot, so a
relay whose source cannot pay it *out of its surplus above target* must be deferred. `split_executable` used to
compare the relay's outgoing legs with the venue's whole balance: a relay venue sitting at its target (the
planner doc's own example: bybit at 20,000 relaying 15,003.5 to okx) sent at once and dropped to ~5,000, below
its floor, until the inbound leg landed.
"""

from __future__ import annotations

from arb_orchestration.defs.rebalance.config import RebalancePolicyConfig
from arb_orchestration.defs.rebalance.planning import propose
from arb_orchestration.domain.models import Balance, NetworkFee
from arb_orchestration.domain.rebalance import PlannedTransfer, split_executable


def _leg(index, source, dest, amount, fee=1.0):
    return PlannedTransfer(index, f"{source}->{dest}:USDT:SOL", "withdrawal", source, dest, "USDT", "SOL",
                           amount, fee, amount - fee)


def test_a_relay_venue_at_its_target_does_not_front_the_relay_from_its_own_floor():
    legs = [_leg(0, "binance", "bybit", 15_004.5), _leg(1, "binance", "okx", 20_000.0), _leg(2, "bybit", "okx", 15_003.5)]
    balances = {"binance": {"USDT": 120_000.0}, "okx": {"USDT": 5_000.0}, "bybit": {"USDT": 20_000.0}}
    targets = {"binance": {"USDT": 0.0}, "okx": {"USDT": 40_000.0}, "bybit": {"USDT": 20_000.0}}
    now, deferred = split_executable(legs, balances, targets)
    assert [t.index for t in now] == [0, 1]
    assert [t.index for t in deferred] == [2]


def test_a_relay_venue_may_pay_out_of_its_surplus_above_target():
    legs = [_leg(0, "binance", "bybit", 15_004.5), _leg(1, "bybit", "okx", 15_003.5)]
    balances = {"binance": {"USDT": 120_000.0}, "okx": {"USDT": 5_000.0}, "bybit": {"USDT": 40_000.0}}
    targets = {"binance": {"USDT": 0.0}, "okx": {"USDT": 20_000.0}, "bybit": {"USDT": 20_000.0}}
    now, deferred = split_executable(legs, balances, targets)
    assert [t.index for t in now] == [0, 1] and deferred == []


class _Venue:
    def __init__(self, name, usdt, fees):
        self.name, self.usdt, self.fees = name, usdt, fees

    def fetch_balance(self):
        return {"USDT": Balance(asset="USDT", free=self.usdt, used=0.0, total=self.usdt)}

    def fetch_deposit_withdraw_fees(self):
        return [NetworkFee(asset="USDT", network=n, fee=f, min_amount=1.0, max_amount=m) for n, f, m in self.fees]


class _Exchange:
    """binance reaches okx directly only over a capped TRC20 rail or an expensive ERC20 one; bybit relays:
    binance → bybit over SOL (okx takes no SOL), bybit → okx over ARBITRUM (binance has no ARBITRUM), capped
    below bybit's balance: the cheapest plan sends 20,000 direct and relays the rest through bybit."""

    def __init__(self):
        self.venues = {
            "binance": _Venue("binance", 120_000.0, [("TRC20", 1.0, 19_999.0), ("ERC20", 8.0, None), ("SOL", 1.0, None)]),
            "okx": _Venue("okx", 5_000.0, [("TRC20", 1.0, None), ("ERC20", 8.0, None), ("ARBITRUM", 1.0, None)]),
            "bybit": _Venue("bybit", 20_000.0, [("SOL", 1.0, None), ("ARBITRUM", 1.0, 15_999.0)]),
        }

    def venue_names(self):
        return list(self.venues)

    def venue(self, name):
        return self.venues[name]


def test_propose_defers_the_relay_leg_of_a_venue_at_its_floor():
    config = RebalancePolicyConfig(
        assets=["USDT"], floors={}, use_market_data_floors=False, refill_headroom=0.0,
        targets=[{"venue": "binance", "asset": "USDT", "floor": 0.0},
                 {"venue": "okx", "asset": "USDT", "floor": 40_000.0},
                 {"venue": "bybit", "asset": "USDT", "floor": 20_000.0}],
    )
    proposal = propose(_Exchange(), wise=None, config=config, used_today={})
    assert not proposal.infeasible, proposal.infeasible
    routes = {(t.from_venue, t.to_venue) for t in proposal.transfers}
    assert ("bybit", "okx") in routes and ("binance", "bybit") in routes, proposal.transfers
    relay = next(t for t in proposal.transfers if t.from_venue == "bybit")
    assert relay.amount < 20_000.0  # bybit could pay it from its balance, but only by dropping below its floor
    assert [(t.from_venue, t.to_venue) for t in proposal.deferred] == [("bybit", "okx")]
    assert all(t.from_venue != "bybit" for t in proposal.run_now)
