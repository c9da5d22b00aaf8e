"""A withdrawal from Binance USDⓈ-M or OKX first tops up the wallet the exchange pays withdrawals from.

Binance pays `capital/withdraw/apply` from the spot (walletType 0) or funding (1) wallet, OKX pays
`asset/withdrawal` from the funding account; the platform's balances sit in the USDⓈ-M futures / trading
account. Each test builds the unmodified ccxt class (the version in .venv) with one market and replaces only
its HTTP layer (`Exchange.fetch`) with a recorder that answers like the exchange and keeps its wallets, so the
requests asserted are the ones ccxt would put on the wire: the wallet read, the internal transfer of all that
leaves the wallet (never spending what it already holds), the withdrawal from that wallet; after an ambiguous
transfer (timeout, 5xx) a re-read instead of a resend, and no withdrawal while its outcome is unknown; a failed
withdrawal's top-up kept visible in the venue's balances and reused by its retry only; read-only venues refusing before any request; the `withdraw_from_account`
setting validated at load. What each check stands on: docs/ccxt-conformance.md (section 5).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import ccxt
import pytest

from arb_orchestration import settings
from arb_orchestration.resources.ccxt_venue import CcxtVenueClient, CcxtVenueSettings, ccxt_exchange_from_env
from arb_orchestration.resources.errors import BusinessError, TransientError
from arb_orchestration.resources.resilience import CircuitBreaker, RetrySettings

ADDRESS = "T" + "Q" * 33  # a TRC20-shaped destination
SYMBOL = "BTC/USDT:USDT"


def _market(market_id: str, **overrides) -> dict:
    market = {
        "id": market_id, "symbol": SYMBOL, "base": "BTC", "quote": "USDT", "settle": "USDT", "baseId": "BTC",
        "quoteId": "USDT", "settleId": "USDT", "type": "swap", "spot": False, "margin": False, "swap": True,
        "future": False, "option": False, "contract": True, "linear": True, "inverse": False, "active": True,
        "contractSize": 1, "precision": {"amount": 0.001, "price": 0.1},
        "limits": {"amount": {"min": 0.001}, "price": {}, "cost": {}, "leverage": {}}, "info": {},
    }
    market.update(overrides)
    return market


class Venue:
    """The exchange's side: its wallets, what it was sent, and the faults to play on the next transfers."""

    def __init__(self, trading: float, withdrawal_wallet: float):
        self.trading = trading
        self.wallet = withdrawal_wallet
        self.requests: list[tuple[str, str, dict[str, Any], Any]] = []
        self.withdrawals: list[dict[str, Any]] = []
        # per transfer attempt: "ok", "timeout_after_commit" (applied, answer lost), "5xx" (not applied)
        self.transfer_script: list[str] = []
        self.refuse_withdrawal = False

    def sent(self, method: str, path_end: str) -> list[tuple[dict[str, Any], Any]]:
        return [(q, b) for m, p, q, b in self.requests if m == method and p.endswith(path_end)]

    def paths(self) -> list[str]:
        return [f"{m} {p}" for m, p, _q, _b in self.requests]

    def move(self, amount: float, outcome: str) -> None:
        if outcome == "5xx":
            raise ccxt.ExchangeNotAvailable("503 Service Unavailable")
        self.trading -= amount
        self.wallet += amount
        if outcome == "timeout_after_commit":
            raise ccxt.RequestTimeout("read timeout")


def _real(exchange_id: str, market: dict, venue: Venue, answer: Callable[..., Any]):
    exchange = getattr(ccxt, exchange_id)({"apiKey": "k" * 18, "secret": "c2VjcmV0c2VjcmV0", "password": "p" * 8})
    exchange.set_markets([market])

    def fetch(url, method="GET", headers=None, body=None):
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        payload = json.loads(body) if body and body.startswith(("{", "[")) else {k: v[0] for k, v in parse_qs(body or "").items()}
        venue.requests.append((method, parts.path, query, payload))
        return answer(method, parts.path, {**query, **(payload if isinstance(payload, dict) else {})})

    exchange.fetch = fetch
    return exchange


def _client(exchange_id: str, exchange: Any, **overrides) -> CcxtVenueClient:
    config = CcxtVenueSettings(name=exchange_id, exchange_id=exchange_id, api_key="k" * 18, secret="s" * 32, **overrides)
    return CcxtVenueClient(config, retry=RetrySettings(max_attempts=3, base_delay=0.0), sleep=lambda s: None,
                           breaker=CircuitBreaker(f"t-{exchange_id}-wallet", failure_threshold=50), exchange=exchange)


# ------------------------------------------------------------------------------------------------ Binance


def _binance_answer(venue: Venue, *, wallet_type: int = 0) -> Callable[..., Any]:
    def answer(method, path, p):
        if path.endswith("/fapi/v3/account") or path.endswith("/fapi/v2/account"):
            total = f"{venue.trading:.8f}"
            return {"assets": [{"asset": "USDT", "walletBalance": total, "availableBalance": total, "marginBalance": total,
                                "initialMargin": "0", "unrealizedProfit": "0", "maxWithdrawAmount": total}],
                    "positions": [], "availableBalance": total, "totalWalletBalance": total}
        if path.endswith("/api/v3/account"):  # spot
            assert wallet_type == 0, "read the spot wallet, but withdrawals come from funding"
            return {"balances": [{"asset": "USDT", "free": f"{venue.wallet:.8f}", "locked": "0"}], "accountType": "SPOT"}
        if path.endswith("/sapi/v1/asset/get-funding-asset"):
            assert wallet_type == 1, "read the funding wallet, but withdrawals come from spot"
            return [{"asset": "USDT", "free": f"{venue.wallet:.8f}", "locked": "0", "freeze": "0", "withdrawing": "0"}]
        if path.endswith("/sapi/v1/asset/transfer"):
            amount = float(p["amount"])
            assert amount <= venue.trading, "the futures account cannot pay that"
            venue.move(amount, venue.transfer_script.pop(0) if venue.transfer_script else "ok")
            return {"tranId": 13526853623 + len(venue.sent("POST", "/sapi/v1/asset/transfer"))}
        if path.endswith("/sapi/v1/capital/config/getall"):
            return [{"coin": "USDT", "name": "TetherUS", "free": "0", "locked": "0", "depositAllEnable": True,
                     "withdrawAllEnable": True, "networkList": [
                         {"network": "TRX", "coin": "USDT", "withdrawFee": "1", "withdrawMin": "10", "withdrawMax": "1000000",
                          "withdrawEnable": True, "depositEnable": True, "isDefault": True, "name": "Tron (TRC20)",
                          "withdrawIntegerMultiple": "0.00000001"}]}]
        if path.endswith("/sapi/v1/capital/withdraw/history"):
            key = p.get("withdrawOrderId")
            return [w for w in venue.withdrawals if key in (None, w["withdrawOrderId"])]
        if path.endswith("/sapi/v1/capital/withdraw/apply"):
            amount = float(p["amount"])
            source = {0: "spot", 1: "funding"}[int(p.get("walletType", 0))]
            if venue.refuse_withdrawal or amount > venue.wallet + 1e-9:
                raise ccxt.InsufficientFunds('binance {"code":-4026,"msg":"You have insufficient balance."} from ' + source)
            venue.wallet -= amount
            row = {"id": f"wd{len(venue.withdrawals) + 1}", "amount": f"{amount - 1:.8f}", "transactionFee": "1",
                   "coin": "USDT", "status": 4, "address": p["address"], "network": p.get("network"),
                   "withdrawOrderId": p["withdrawOrderId"], "applyTime": "2026-11-27 19:00:00", "walletType": int(p.get("walletType", 0))}
            venue.withdrawals.append(row)
            return {"id": row["id"]}
        raise AssertionError(f"unexpected {method} {path}")

    return answer


def _binance(trading: float, spot: float, *, wallet_type: int = 0, **overrides):
    venue = Venue(trading, spot)
    exchange = _real("binanceusdm", _market("BTCUSDT"), venue, _binance_answer(venue, wallet_type=wallet_type))
    return _client("binanceusdm", exchange, **overrides), venue


def _withdraw(client: CcxtVenueClient, key: str, amount: float = 300.0):
    return client.withdraw("USDT", amount, address=ADDRESS, network="TRC20", idempotency_key=key)


def test_binance_tops_up_the_spot_wallet_by_all_that_leaves_it_then_withdraws_from_spot():
    client, venue = _binance(trading=10_000.0, spot=100.0)
    withdrawal = _withdraw(client, "leg1", 300.0)
    # Binance deducts its 1 USDT fee from `amount`: 301 is asked for, and all 301 come from the futures account;
    # the 100 already in spot are not the plan's to spend (test_ccxt_withdraw_keeps_operator_wallet.py).
    (transfer,) = venue.sent("POST", "/sapi/v1/asset/transfer")
    assert (transfer[1]["type"], transfer[1]["asset"], float(transfer[1]["amount"])) == ("UMFUTURE_MAIN", "USDT", 301.0)
    (apply,) = venue.sent("POST", "/sapi/v1/capital/withdraw/apply")
    assert (float(apply[1]["amount"]), apply[1]["walletType"], apply[1]["withdrawOrderId"]) == (301.0, "0", "leg1")
    paths = venue.paths()
    assert paths.index("POST /sapi/v1/asset/transfer") < paths.index("POST /sapi/v1/capital/withdraw/apply")
    spot_reads = venue.sent("GET", "/api/v3/account")
    assert spot_reads, "the spot wallet is read on the spot endpoint, not the futures one"
    assert all(not {"type", "subType"} & set(q) for q, _b in spot_reads)  # ccxt's selectors stay off the wire
    assert set(transfer[1]) - {"timestamp", "recvWindow", "signature"} == {"type", "asset", "amount"}
    assert (venue.trading, venue.wallet) == (pytest.approx(9_699.0), pytest.approx(100.0))
    assert withdrawal.idempotency_key == "leg1" and withdrawal.amount == pytest.approx(300.0)


def test_binance_tops_up_in_full_even_when_the_spot_wallet_already_holds_enough():
    client, venue = _binance(trading=10_000.0, spot=500.0)
    _withdraw(client, "leg1", 300.0)
    assert [float(b["amount"]) for _q, b in venue.sent("POST", "/sapi/v1/asset/transfer")] == [301.0]
    assert len(venue.sent("POST", "/sapi/v1/capital/withdraw/apply")) == 1
    assert venue.trading == pytest.approx(9_699.0) and venue.wallet == pytest.approx(500.0)


@pytest.mark.parametrize("fault", ["timeout_after_commit", "5xx"])
def test_an_ambiguous_transfer_is_re_read_and_never_resent(fault):
    client, venue = _binance(trading=10_000.0, spot=0.0)
    venue.transfer_script = [fault]
    if fault == "timeout_after_commit":  # it was applied: the re-read shows it arrived, the withdrawal is sent
        _withdraw(client, "leg1", 300.0)
        assert venue.trading == pytest.approx(10_000.0 - 301.0) and venue.wallet == pytest.approx(0.0)
        assert len(venue.sent("POST", "/sapi/v1/capital/withdraw/apply")) == 1
    else:  # it was not applied: the re-reads never show it; not resent, nothing withdrawn
        with pytest.raises(TransientError):
            _withdraw(client, "leg1", 300.0)
        assert venue.trading == pytest.approx(10_000.0) and venue.wallet == pytest.approx(0.0)
        assert venue.sent("POST", "/sapi/v1/capital/withdraw/apply") == []
    moved = [float(b["amount"]) for _q, b in venue.sent("POST", "/sapi/v1/asset/transfer")]
    assert moved == [301.0]
    spot_reads = venue.sent("GET", "/api/v3/account")
    assert len(spot_reads) >= 2, "the wallet is read again after the ambiguous transfer"


def test_a_top_up_that_stays_unknown_withdraws_nothing_and_a_retry_sends_once_it_shows():
    client, venue = _binance(trading=10_000.0, spot=0.0)
    venue.transfer_script = ["5xx"]
    with pytest.raises(TransientError):
        _withdraw(client, "leg1", 300.0)
    assert venue.sent("POST", "/sapi/v1/capital/withdraw/apply") == [] and venue.wallet == 0.0
    # The retry (the op's retry policy) looks for the unknown transfer again and never resends it ...
    with pytest.raises(TransientError):
        _withdraw(client, "leg1", 300.0)
    assert len(venue.sent("POST", "/sapi/v1/asset/transfer")) == 1
    # ... and sends the withdrawal once the exchange shows it.
    venue.trading, venue.wallet = venue.trading - 301.0, venue.wallet + 301.0
    _withdraw(client, "leg1", 300.0)
    assert len(venue.sent("POST", "/sapi/v1/asset/transfer")) == 1
    assert venue.trading == pytest.approx(10_000.0 - 301.0) and len(venue.sent("POST", "/sapi/v1/capital/withdraw/apply")) == 1


def test_a_withdrawal_already_made_needs_no_top_up():
    client, venue = _binance(trading=10_000.0, spot=0.0)
    first = _withdraw(client, "leg1", 300.0)
    again = _withdraw(client, "leg1", 300.0)  # a relaunch: found by its withdrawOrderId
    assert again.id == first.id
    assert len(venue.sent("POST", "/sapi/v1/asset/transfer")) == 1
    assert len(venue.sent("POST", "/sapi/v1/capital/withdraw/apply")) == 1


def test_a_failed_withdrawal_leaves_its_top_up_visible_in_the_balances_and_only_its_retry_reuses_it(caplog):
    client, venue = _binance(trading=10_000.0, spot=0.0)
    venue.refuse_withdrawal = True
    with caplog.at_level(logging.WARNING, logger="arb_orchestration.resources.ccxt_venue"), pytest.raises(BusinessError):
        _withdraw(client, "leg1", 300.0)
    assert venue.wallet == pytest.approx(301.0) and venue.trading == pytest.approx(9_699.0)
    assert any("stay" in r.getMessage() and "spot" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    # The venue's balance still counts the 301 USDT sitting in spot: nothing silently left the books.
    usdt = client.fetch_balance()["USDT"]
    assert usdt.total == pytest.approx(10_000.0) and usdt.free == pytest.approx(10_000.0)
    venue.refuse_withdrawal = False
    _withdraw(client, "leg2", 300.0)  # another withdrawal tops up its own 301: leg1's leftover is not its money
    assert len(venue.sent("POST", "/sapi/v1/asset/transfer")) == 2
    assert venue.wallet == pytest.approx(301.0)
    _withdraw(client, "leg1", 300.0)  # leg1's retry sends its own top-up, moves nothing more
    assert len(venue.sent("POST", "/sapi/v1/asset/transfer")) == 2
    assert venue.wallet == pytest.approx(0.0) and venue.trading == pytest.approx(10_000.0 - 2 * 301.0)


def test_binance_funding_wallet_when_configured():
    client, venue = _binance(trading=10_000.0, spot=0.0, wallet_type=1, withdraw_from_account="funding")
    _withdraw(client, "leg1", 300.0)
    (transfer,) = venue.sent("POST", "/sapi/v1/asset/transfer")
    assert transfer[1]["type"] == "UMFUTURE_FUNDING"
    (apply,) = venue.sent("POST", "/sapi/v1/capital/withdraw/apply")
    assert apply[1]["walletType"] == "1"
    assert venue.sent("POST", "/sapi/v1/asset/get-funding-asset") and not venue.sent("GET", "/api/v3/account")


def test_read_only_refuses_the_withdrawal_and_the_transfer_before_any_request():
    client, venue = _binance(trading=10_000.0, spot=0.0, read_only=True)
    with pytest.raises(BusinessError) as withdrawal:
        _withdraw(client, "leg1", 300.0)
    with pytest.raises(BusinessError) as transfer:
        client.transfer("USDT", 10.0, "linear", "spot")
    assert withdrawal.value.code == transfer.value.code == "read_only"
    assert venue.requests == []


# ------------------------------------------------------------------------------------------------ OKX


def _okx_answer(venue: Venue) -> Callable[..., Any]:
    def answer(method, path, p):
        if path.endswith("/asset/balances"):  # the funding account
            return {"code": "0", "msg": "", "data": [{"ccy": "USDT", "bal": f"{venue.wallet:.8f}",
                                                       "availBal": f"{venue.wallet:.8f}", "frozenBal": "0"}]}
        if path.endswith("/account/balance"):  # the trading account
            return {"code": "0", "msg": "", "data": [{"totalEq": f"{venue.trading:.8f}", "uTime": "1700000000000", "details": [
                {"ccy": "USDT", "eq": f"{venue.trading:.8f}", "cashBal": f"{venue.trading:.8f}", "availBal": f"{venue.trading:.8f}",
                 "availEq": f"{venue.trading:.8f}", "frozenBal": "0", "ordFrozen": "0", "uTime": "1700000000000"}]}]}
        if path.endswith("/asset/transfer"):
            amount = float(p["amt"])
            assert (p["from"], p["to"], p.get("type", "0")) == ("18", "6", "0") and amount <= venue.trading
            venue.move(amount, venue.transfer_script.pop(0) if venue.transfer_script else "ok")
            return {"code": "0", "msg": "", "data": [{"transId": "754147", "ccy": "USDT", "from": "18", "amt": p["amt"], "to": "6"}]}
        if path.endswith("/asset/currencies"):
            return {"code": "0", "msg": "", "data": [{"ccy": "USDT", "chain": "USDT-TRC20", "canWd": True, "canDep": True,
                                                      "fee": "1", "minFee": "1", "maxFee": "1", "minWd": "2", "maxWd": "1000000"}]}
        if path.endswith("/asset/withdrawal-history"):
            key = p.get("clientId")
            return {"code": "0", "msg": "", "data": [w for w in venue.withdrawals if key in (None, w["clientId"])]}
        if path.endswith("/asset/withdrawal"):
            amount = float(p["amt"])
            assert amount + 1.0 <= venue.wallet + 1e-9, "OKX pays amount + fee from the funding account"
            venue.wallet -= amount + 1.0
            row = {"ccy": "USDT", "chain": p.get("chain"), "amt": p["amt"], "fee": "1", "wdId": "67485", "clientId": p["clientId"],
                   "toAddr": p["toAddr"], "state": "0", "ts": "1700000000000"}
            venue.withdrawals.append(row)
            return {"code": "0", "msg": "", "data": [{"amt": p["amt"], "wdId": "67485", "ccy": "USDT", "clientId": p["clientId"]}]}
        raise AssertionError(f"unexpected {method} {path}")

    return answer


def _okx(trading: float, funding: float):
    venue = Venue(trading, funding)
    market = _market("BTC-USDT-SWAP", contractSize=0.01, precision={"amount": 1, "price": 0.1})
    exchange = _real("okx", market, venue, _okx_answer(venue))
    return _client("okx", exchange, password="p" * 8), venue


def test_okx_tops_up_the_funding_account_from_trading_with_the_fee_on_top():
    client, venue = _okx(trading=10_000.0, funding=50.0)
    client.withdraw("USDT", 300.0, address=ADDRESS, network="TRC20", idempotency_key="leg1")
    (transfer,) = venue.sent("POST", "/asset/transfer")
    # OKX adds the fee on top: 300 + 1 leave funding, all of it moved from trading (the 50 there stay).
    assert (transfer[1]["from"], transfer[1]["to"], float(transfer[1]["amt"])) == ("18", "6", 301.0)
    (withdrawal,) = venue.sent("POST", "/asset/withdrawal")
    assert (float(withdrawal[1]["amt"]), withdrawal[1]["clientId"]) == (300.0, "leg1")
    assert venue.sent("GET", "/asset/balances"), "the funding account is read on the asset endpoint"
    assert venue.wallet == pytest.approx(50.0) and venue.trading == pytest.approx(9_699.0)
    # The funding account is part of the venue's balance.
    venue.wallet = 25.0
    assert client.fetch_balance()["USDT"].total == pytest.approx(9_724.0)


# ------------------------------------------------------------------------------------------------ configuration


def _load(monkeypatch, venues: str, entries: dict) -> Any:
    monkeypatch.setenv("EXCHANGE_VENUES", venues)
    monkeypatch.setenv("CCXT_VENUES", json.dumps(entries))
    return ccxt_exchange_from_env("local")


def test_withdraw_from_account_defaults_and_validation(monkeypatch):
    resource = _load(monkeypatch, "binance,okx,bybit", {})
    defaults = {v.name: v.to_settings(timeout_seconds=1, precheck_client_order_id=True) for v in resource.accounts}
    clients = {name: CcxtVenueClient(s) for name, s in defaults.items()}
    assert {n: c.withdraw_from_account for n, c in clients.items()} == {"binance": "spot", "okx": "funding", "bybit": "none"}
    assert _load(monkeypatch, "binance", {"binance": {"withdraw_from_account": "funding"}}).accounts[0].withdraw_from_account == "funding"
    for venue, value in [("okx", "spot"), ("binance", "trading"), ("bybit", "funding"), ("binance", "SPOT")]:
        with pytest.raises(settings.SettingError, match=rf"CCXT_VENUES\[{venue}\]\.withdraw_from_account"):
            _load(monkeypatch, venue, {venue: {"withdraw_from_account": value}})
    with pytest.raises(ValueError, match="withdraw_from_account"):
        CcxtVenueClient(CcxtVenueSettings(name="okx", exchange_id="okx", withdraw_from_account="spot"))
