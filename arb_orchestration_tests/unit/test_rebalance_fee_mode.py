"""Withdrawal fee on top ("added") or out of the amount ("deducted"), per venue.

Covered without a network: the documented default per ccxt exchange id and the `CCXT_VENUES` override
(an invalid value, or an exchange without a default and no setting, fails at load naming the field);
`CcxtVenueClient.withdraw(amount)` makes `amount` arrive in both modes (a deducting exchange is asked for
amount + its current network fee, rounded up), on a fake ccxt exchange; the simulator state's deducted
withdrawal (amount leaves, amount − fee arrives); and `verify_balances` failing a destination that got one
network fee less than planned, which the 1 % tolerance alone let through.
"""

from __future__ import annotations

import pytest

from arb_orchestration import settings
from arb_orchestration.resources.ccxt_venue import (
    DEFAULT_WITHDRAWAL_FEE_MODES,
    CcxtVenueClient,
    CcxtVenueSettings,
    ccxt_exchange_from_env,
    credential_env_names,
)
from arb_orchestration.resources.errors import BusinessError, TransientError
from arb_orchestration.resources.resilience import CircuitBreaker, RetrySettings
from arb_orchestration.sim.exchange_specs import default_venues
from arb_orchestration.sim.exchange_state import ExchangeState, SimError
from arb_orchestration_tests.unit.test_rebalance_steps import (
    FakeExchange,
    FakeJournal,
    FakeMail,
    FakeVenue,
    FakeWise,
    _config,
    _run,
)

# ---------------------------------------------------------------------------- settings


def _clear(monkeypatch):
    for name in list(settings.SETTINGS) + [v for n in ("binance", "okx", "bybit", "mexc") for v in credential_env_names(n).values()]:
        monkeypatch.delenv(name, raising=False)


def test_each_desk_exchange_has_a_documented_default():
    assert DEFAULT_WITHDRAWAL_FEE_MODES["binanceusdm"] == "deducted" and DEFAULT_WITHDRAWAL_FEE_MODES["binance"] == "deducted"
    assert DEFAULT_WITHDRAWAL_FEE_MODES["okx"] == "added" and DEFAULT_WITHDRAWAL_FEE_MODES["bybit"] == "added"
    assert DEFAULT_WITHDRAWAL_FEE_MODES["hyperliquid"] == "deducted"
    assert {"binanceusdm", "okx", "bybit", "krakenfutures", "hyperliquid"} <= set(DEFAULT_WITHDRAWAL_FEE_MODES)


def test_the_mode_comes_from_the_exchange_id_unless_ccxt_venues_overrides_it(monkeypatch):
    _clear(monkeypatch)
    monkeypatch.setenv("EXCHANGE_VENUES", "binance,okx,bybit")
    monkeypatch.setenv("CCXT_VENUES", '{"bybit": {"withdrawal_fee_mode": "deducted"}}')
    modes = {a.name: a.withdrawal_fee_mode for a in ccxt_exchange_from_env("local").accounts}
    assert modes == {"binance": "deducted", "okx": "added", "bybit": "deducted"}
    monkeypatch.setenv("CCXT_VENUES", '{"binance": {"withdrawal_fee_mode": "added"}}')
    resource = ccxt_exchange_from_env("local")
    assert resource.venue("binance").withdrawal_fee_mode == "added"


@pytest.mark.parametrize(
    "venues, entry, message",
    [
        ("binance", '{"binance": {"withdrawal_fee_mode": "net"}}', r"CCXT_VENUES\[binance\]\.withdrawal_fee_mode"),
        ("mexc", '{"mexc": {"exchange_id": "mexc"}}', r"CCXT_VENUES\[mexc\]\.withdrawal_fee_mode is required for mexc"),
    ],
)
def test_a_bad_or_missing_mode_fails_at_load_naming_the_field(monkeypatch, venues, entry, message):
    _clear(monkeypatch)
    monkeypatch.setenv("EXCHANGE_VENUES", venues)
    monkeypatch.setenv("CCXT_VENUES", entry)
    with pytest.raises(settings.SettingError, match=message):
        ccxt_exchange_from_env("local")


def test_an_exchange_id_without_a_default_and_no_mode_can_load_but_never_withdraws():
    client = _client(FakeCcxtWallet(), exchange_id="mexc")
    assert client.withdrawal_fee_mode is None
    with pytest.raises(BusinessError) as refused:
        client.withdraw("USDT", 100.0, address="T1", network="TRC20", idempotency_key="k1")
    assert refused.value.code == "bad_config" and "withdrawal_fee_mode" in str(refused.value)
    with pytest.raises(ValueError, match="withdrawal_fee_mode must be one of"):
        _client(FakeCcxtWallet(), withdrawal_fee_mode="net")


# ---------------------------------------------------------------------------- the ccxt client


class FakeCcxtWallet:
    """The ccxt calls a withdrawal makes: fees, withdraw, and the history lookup by withdrawOrderId.

    `deducts`: the exchange's own convention (what arrives is amount − fee) — independent of what the client
    is configured to believe. `arrived` records what each withdrawal delivers."""

    def __init__(self, fee: float = 1.0, deducts: bool = True):
        self.markets, self.currencies = {}, {"USDT": {"networks": {"TRC20": {"withdraw": True, "limits": {}}}}}
        self.fee, self.deducts = fee, deducts
        self.requests: list[float] = []
        self.rows: list[dict] = []
        self.arrived: list[float] = []

    def load_markets(self):
        return self.markets

    def fetch_deposit_withdraw_fees(self):
        return {"USDT": {"networks": {"TRC20": {"withdraw": {"fee": self.fee, "percentage": None}}}}}

    def withdraw(self, code, amount, address, params=None):
        self.requests.append(amount)
        arrives = amount - self.fee if self.deducts else amount
        self.arrived.append(arrives)
        row = {"id": f"w{len(self.rows) + 1}", "currency": code, "amount": arrives, "fee": {"cost": self.fee},
               "network": params["network"], "address": address, "status": "pending", "timestamp": 1_700_000_000_000,
               "info": {"withdrawOrderId": params.get("withdrawOrderId"), "status": 2}}
        self.rows.append(row)
        return {"id": row["id"], "info": {"id": row["id"]}}

    def fetch_withdrawals(self, code=None, since=None, limit=None, params=None):
        key = (params or {}).get("withdrawOrderId")
        return [r for r in self.rows if r["info"]["withdrawOrderId"] == key]


def _client(fake, **overrides) -> CcxtVenueClient:
    # The fake has one wallet: no spot/futures top-up here (test_ccxt_withdraw_wallet.py covers it).
    config = CcxtVenueSettings(**{"name": "binance", "exchange_id": "binanceusdm", "api_key": "k" * 16,
                                  "secret": "s" * 32, "withdraw_from_account": "none", **overrides})
    return CcxtVenueClient(config, retry=RetrySettings(max_attempts=2, base_delay=0.0), breaker=CircuitBreaker("fee-mode"),
                           sleep=lambda s: None, exchange=fake)


def test_on_a_deducting_exchange_the_client_asks_for_amount_plus_fee_so_amount_arrives():
    fake = FakeCcxtWallet(fee=1.0, deducts=True)
    client = _client(fake)  # binanceusdm: deducted by default
    w = client.withdraw("USDT", 8_000.8, address="T1", network="TRC20", idempotency_key="leg-0")
    assert fake.requests == [8_001.8] and fake.arrived == [pytest.approx(8_000.8)]
    assert (w.amount, w.fee) == (pytest.approx(8_000.8), 1.0)
    # The same key again: looked up, not sent again.
    assert client.withdraw("USDT", 8_000.8, address="T1", network="TRC20", idempotency_key="leg-0").id == w.id
    assert fake.requests == [8_001.8]


def test_the_requested_amount_is_rounded_up_never_down():
    fake = FakeCcxtWallet(fee=0.123456789, deducts=True)
    _client(fake).withdraw("USDT", 100.000000001, address="T1", network="TRC20", idempotency_key="leg-r")
    assert fake.requests[0] >= 100.000000001 + 0.123456789 and fake.arrived[0] >= 100.0


def test_on_an_exchange_that_adds_the_fee_the_client_asks_for_the_amount_itself():
    fake = FakeCcxtWallet(fee=1.0, deducts=False)
    _client(fake, exchange_id="okx").withdraw("USDT", 500.0, address="T1", network="TRC20", idempotency_key="leg-a")
    assert fake.requests == [500.0] and fake.arrived == [500.0]


def test_a_mode_set_wrong_delivers_one_fee_short():
    """What the review found: a deducting exchange treated as 'added' delivers amount − fee."""
    fake = FakeCcxtWallet(fee=1.0, deducts=True)
    _client(fake, withdrawal_fee_mode="added").withdraw("USDT", 500.0, address="T1", network="TRC20",
                                                         idempotency_key="leg-w")
    assert fake.arrived == [499.0]


def test_no_fee_for_the_network_refuses_before_sending():
    fake = FakeCcxtWallet()
    with pytest.raises(BusinessError) as refused:
        _client(fake).withdraw("USDT", 500.0, address="T1", network="ERC20", idempotency_key="leg-x")
    assert refused.value.code == "unsupported_network" and fake.requests == []


# ---------------------------------------------------------------------------- the simulator


def test_the_simulator_deducts_the_fee_when_asked():
    now = [1_000.0]
    state = ExchangeState(default_venues(), clock=lambda: now[0], withdrawal_hold=0.0, settle_delay=0.0)
    before = state.balances("binance")["USDT"].total
    okx_before = state.balances("okx")["USDT"].total
    w, _ = state.withdraw("binance", asset="USDT", amount=301.0, address="sim:okx:USDT:TRC20", network="TRC20",
                          idempotency_key="d-1", fee_deducted=True)
    assert (w.amount, w.fee) == (300.0, 1.0)
    now[0] += 1.0
    assert state.withdrawal_by_key("binance", "d-1").status == "completed"
    assert state.balances("binance")["USDT"].total == pytest.approx(before - 301.0)
    assert state.balances("okx")["USDT"].total == pytest.approx(okx_before + 300.0)
    with pytest.raises(SimError) as too_small:
        state.withdraw("binance", asset="USDT", amount=1.0, address="sim:okx:USDT:TRC20", network="TRC20",
                       idempotency_key="d-2", fee_deducted=True)
    assert too_small.value.code == "below_min_amount"


# ---------------------------------------------------------------------------- verify_balances


class DeductingVenue(FakeVenue):
    """A venue that deducts the fee while the platform believes it adds it: one fee short at the destination."""

    def withdraw(self, asset, amount, *, address, network, idempotency_key, tag=None):
        w = super().withdraw(asset, amount, address=address, network=network, idempotency_key=idempotency_key, tag=tag)
        record = self.withdrawals[idempotency_key]
        if record["amount"] == amount and not record.get("deducted"):
            record.update(amount=amount - self.fee, deducted=True)
            self.wallet[asset] += self.fee  # only `amount` left the wallet
        return self._model(record)


def short_by_a_fee() -> dict:
    exchange = FakeExchange()
    b = exchange.venues["b"]
    exchange.venues["b"] = DeductingVenue(exchange, "b", b.wallet, b.iban, fee=b.fee)
    return {"exchange": exchange, "wise": FakeWise(exchange), "smtp": FakeMail(), "rebalance_journal": FakeJournal()}


def test_verify_fails_a_destination_that_got_one_network_fee_less():
    world = short_by_a_fee()
    with pytest.raises(TransientError, match="balances short after arrival: a USDT 11999 < 11999.49"):
        _run(world, config=_config(assets=["USDT"]))
    assert world["exchange"].venues["a"].wallet["USDT"] == pytest.approx(11_999.0)


def test_the_one_percent_band_alone_hid_that_shortfall():
    """Why the fee bound exists: 1 % of an 8,000 USDT leg is 80 USDT, the missing fee 1 USDT."""
    world = short_by_a_fee()
    state = _run(world, config=_config(assets=["USDT"], verify_fee_share=None)).load("saga-1")
    [row] = state.step("verify_balances").result["verified"]
    assert row["ok"] and row["now"] == pytest.approx(11_999.0)


def test_verify_passes_when_the_leg_arrives_in_full():
    exchange = FakeExchange()
    world = {"exchange": exchange, "wise": FakeWise(exchange), "smtp": FakeMail(), "rebalance_journal": FakeJournal()}
    state = _run(world, config=_config(assets=["USDT"])).load("saga-1")
    [row] = state.step("verify_balances").result["verified"]
    assert row["ok"] and row["expected"] == pytest.approx(row["before"] + 8_000.0 - 0.5 - 1e-6)
