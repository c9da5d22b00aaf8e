"""The rebalance planner moves only what a withdrawal can spend (docs/planner-balances.md).

On Binance/OKX `fetch_balance` counts the withdrawal wallet (spot / funding) too, but a withdrawal spends only the
trading account (it tops the wallet up from there; an operator's money in the wallet is never spent). Covered here:
- the ccxt client's `fetch_spendable_balance` is the trading account only, while `fetch_balance` keeps the wallet;
- `propose` plans from the spendable part: a venue whose trading account cannot pay is not made to send, the money
  it holds in its wallet still counts toward its own target, and the plan's notes say what was not counted;
- when only such a venue could pay, the plan is infeasible and says why, rather than planning a refused withdrawal.
Fakes: a fake exchange of duck-typed venues, and the recorded-HTTP ccxt venues of test_ccxt_withdraw_wallet.
"""

from __future__ import annotations

import pytest

from arb_orchestration.defs.rebalance import RebalanceConfig, planning
from arb_orchestration.domain.models import Balance, NetworkFee
from arb_orchestration_tests.unit.test_ccxt_withdraw_wallet import _binance, _okx


class WalletVenue:
    """A venue with a trading account and (maybe) a separate withdrawal wallet, like ccxt's Binance client."""

    def __init__(self, name: str, trading: float, wallet: float = 0.0, fee: float = 1.0, spendable: bool = True):
        self.name, self.trading, self.wallet, self.fee = name, trading, wallet, fee
        self.withdraw_from_account = "spot" if wallet else "none"
        if not spendable:  # a client written before fetch_spendable_balance existed: one account
            self.fetch_spendable_balance = None

    def fetch_balance(self):
        total = self.trading + self.wallet
        return {"USDT": Balance(asset="USDT", free=total, used=0.0, total=total)}

    def fetch_spendable_balance(self):
        return {"USDT": Balance(asset="USDT", free=self.trading, used=0.0, total=self.trading)}

    def fetch_deposit_withdraw_fees(self):
        return [NetworkFee(asset="USDT", network="TRC20", fee=self.fee, min_amount=10.0, eta_seconds=1.0)]


class Exchange:
    def __init__(self, *venues: WalletVenue):
        self.venues = {v.name: v for v in venues}

    def venue_names(self):
        return list(self.venues)

    def venue(self, name):
        return self.venues[name]


def _propose(exchange: Exchange) -> planning.Proposal:
    config = RebalanceConfig(assets=["USDT"], use_market_data_floors=False)  # floor 10,000: refill and keep 12,000
    return planning.propose(exchange, None, config, {})


def test_the_ccxt_client_spends_only_the_trading_account_while_its_books_keep_the_wallet():
    binance, _venue = _binance(trading=500.0, spot=1_000.0)
    assert binance.fetch_balance()["USDT"].free == pytest.approx(1_500.0)
    spendable = binance.fetch_spendable_balance()["USDT"]
    assert (spendable.free, spendable.total) == (pytest.approx(500.0), pytest.approx(500.0))
    okx, _venue = _okx(trading=700.0, funding=1_000.0)
    assert okx.fetch_balance()["USDT"].free == pytest.approx(1_700.0)
    assert okx.fetch_spendable_balance()["USDT"].free == pytest.approx(700.0)


def test_a_venue_whose_trading_account_cannot_pay_is_not_made_to_send():
    # b is the cheapest source by its whole balance (23,000 over its 12,000 keep), but 20,000 of it are an
    # operator's in spot: a withdrawal can spend its 3,000 trading USDT only. c pays instead.
    exchange = Exchange(
        WalletVenue("a", 4_000.0),  # short: refilled to 12,000
        WalletVenue("b", 3_000.0, wallet=20_000.0, fee=1.0),
        WalletVenue("c", 60_000.0, fee=2.0),
        WalletVenue("d", 9_000.0, wallet=2_000.0),  # 11,000 with its wallet: not short (the trigger is 10,000)
    )
    proposal = _propose(exchange)
    assert proposal.may_run and proposal.needs == {"USDT": pytest.approx(8_000.0)}
    assert [(t.from_venue, t.to_venue, t.credited) for t in proposal.run_now] == [("c", "a", pytest.approx(8_000.0))]
    assert proposal.held_outside == {"b": {"USDT": pytest.approx(20_000.0)}, "d": {"USDT": pytest.approx(2_000.0)}}
    # The books (what the plan reports per venue) still count the wallet.
    assert proposal.balances["b"]["USDT"].free == pytest.approx(23_000.0)
    rows = {r.venue: r for r in proposal.targets.rows}
    assert rows["b"].balance == pytest.approx(23_000.0) and rows["d"].deficit == 0.0
    assert "b USDT: 20,000 in the spot wallet not counted as movable" in "\n".join(proposal.fiat_notes)
    markdown = planning_markdown(proposal)
    assert "d USDT: 2,000 in the spot wallet not counted as movable" in markdown


def test_the_wallet_counts_toward_the_sources_target_and_only_the_trading_account_leaves():
    # b: 5,000 trading + 15,100 in spot. Its keep (12,000) is met by the spot money alone, so it is no deficit venue
    # and all its trading account may leave, but no more: by its whole balance it could send 8,100 and, the cheapest
    # source, would pay the whole 8,001 leg alone (refused at the top-up: 5,000 in the futures account). c can spare
    # only 3,100 (15,100 over its 12,000 keep), so the deficit takes both, b up to its trading account.
    exchange = Exchange(
        WalletVenue("a", 4_000.0),  # short: 8,000 to reach 12,000
        WalletVenue("b", 5_000.0, wallet=15_100.0, fee=1.0),
        WalletVenue("c", 15_100.0, fee=2.0),
    )
    proposal = _propose(exchange)
    assert proposal.may_run
    rows = {r.venue: r for r in proposal.targets.rows}
    assert rows["b"].deficit == 0.0  # its spot money counts toward its target
    sent = {t.from_venue: t.amount for t in proposal.run_now}
    assert set(sent) == {"b", "c"}
    assert 4_900.0 < sent["b"] <= 5_000.0 + 1e-6 and sent["c"] <= 3_100.0 + 1e-6
    assert sum(t.credited for t in proposal.run_now) >= 8_000.0 - 1e-6


def test_when_only_wallet_money_could_pay_the_plan_is_infeasible_and_says_so():
    exchange = Exchange(
        WalletVenue("a", 4_000.0),
        WalletVenue("b", 3_000.0, wallet=20_000.0),  # the only venue over its keep, by its operator's spot money
    )
    proposal = _propose(exchange)
    assert not proposal.may_run and proposal.run_now == []
    assert "not counted as movable" in proposal.infeasible["USDT"] and "b 20,000 USDT" in proposal.infeasible["USDT"]


def test_a_client_without_a_spendable_read_spends_its_whole_balance():
    exchange = Exchange(WalletVenue("a", 4_000.0), WalletVenue("b", 30_000.0, spendable=False))
    proposal = _propose(exchange)
    assert proposal.held_outside == {}
    assert [(t.from_venue, t.credited) for t in proposal.run_now] == [("b", pytest.approx(8_000.0))]


def planning_markdown(proposal: planning.Proposal) -> str:
    from arb_orchestration.defs.rebalance.report import proposal_markdown

    return proposal_markdown(proposal, title="plan")
