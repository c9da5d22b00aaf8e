"""`sweep_to_trading`: what a rebalance put in a Binance/OKX venue's deposit-and-withdrawal wallet, and no more, moves
into its trading account.

A deposit into Binance lands in the spot wallet, into OKX in the funding account; a failed withdrawal leaves its
top-up there. The platform trades from the USDⓈ-M futures / trading account, so such money is counted (the
balances include that wallet) but is no margin until it is moved. That wallet may also hold an operator's own
money, which a sweep must never move: the caller bounds it (`at_most`, required). Each test builds the unmodified
ccxt class with its HTTP layer replaced by a recorder that keeps the two wallets (the technique of
test_ccxt_withdraw_wallet), so the requests asserted are the ones ccxt puts on the wire: the wallet read, one
universal transfer of `min(at_most, free)` (Binance MAIN_UMFUTURE / FUNDING_UMFUTURE, OKX 6 -> 18), an operator's
balance left alone, nothing when the wallet or the bound is empty, a re-read (never a resend) after an ambiguous
transfer, the `on_transfer` events a caller records, the top-up a withdrawal reports for its key, refusal on
read-only venues before any request, no request at all when switched off, and the `sweep_deposits_to_trading`
setting validated at load naming the field."""

from __future__ import annotations

import json
from typing import Any, Callable

import ccxt
import pytest

from arb_orchestration import settings
from arb_orchestration.resources.ccxt_venue import CcxtVenueClient, CcxtVenueSettings, ccxt_exchange_from_env
from arb_orchestration.resources.errors import BusinessError, TransientError
from arb_orchestration_tests.unit.test_ccxt_withdraw_wallet import (
    Venue,
    _binance_answer,
    _client,
    _market,
    _okx_answer,
    _real,
)


def _moving_back(venue: Venue, base: Callable[..., Any], path_end: str, allowed: dict[str, tuple[str, ...]],
                 amount_key: str) -> Callable[..., Any]:
    """The exchange's answer, with transfers from the withdrawal wallet into the trading account applied (the
    other direction, a withdrawal's top-up, is the base answer's)."""

    def answer(method, path, p):
        if path.endswith(path_end) and tuple(p.get(k) for k in allowed["keys"]) == allowed["back"]:
            amount = float(p[amount_key])
            outcome = venue.transfer_script.pop(0) if venue.transfer_script else "ok"
            if outcome == "5xx":
                raise ccxt.ExchangeNotAvailable("503 Service Unavailable")
            if amount > venue.wallet + 1e-9:
                raise ccxt.InsufficientFunds('{"code":-5013,"msg":"Asset transfer failed: insufficient balance"}')
            venue.wallet -= amount
            venue.trading += amount
            if outcome == "timeout_after_commit":
                raise ccxt.RequestTimeout("read timeout")
            return allowed["answer"](p)
        return base(method, path, p)

    return answer


def _binance(trading: float, spot: float, *, wallet_type: int = 0, **overrides):
    venue = Venue(trading, spot)
    back = "FUNDING_UMFUTURE" if wallet_type == 1 else "MAIN_UMFUTURE"
    answer = _moving_back(venue, _binance_answer(venue, wallet_type=wallet_type), "/sapi/v1/asset/transfer",
                          {"keys": ("type",), "back": (back,), "answer": lambda p: {"tranId": 13526853624}}, "amount")
    exchange = _real("binanceusdm", _market("BTCUSDT"), venue, answer)
    return _client("binanceusdm", exchange, **overrides), venue


def _okx(trading: float, funding: float, **overrides):
    venue = Venue(trading, funding)
    answer = _moving_back(venue, _okx_answer(venue), "/asset/transfer",
                          {"keys": ("from", "to", "type"), "back": ("6", "18", "0"),
                           "answer": lambda p: {"code": "0", "msg": "", "data": [
                               {"transId": "754148", "ccy": "USDT", "from": "6", "amt": p["amt"], "to": "18"}]}},
                          "amt")
    market = _market("BTC-USDT-SWAP", contractSize=0.01, precision={"amount": 1, "price": 0.1})
    exchange = _real("okx", market, venue, answer)
    return _client("okx", exchange, password="p" * 8, **overrides), venue


def _transfers(venue: Venue, path_end: str = "/sapi/v1/asset/transfer") -> list[dict[str, Any]]:
    return [b for _q, b in venue.sent("POST", path_end)]


def test_binance_moves_the_spot_wallets_free_balance_into_the_futures_account_once():
    client, venue = _binance(trading=1_000.0, spot=500.0)
    assert client.sweep_to_trading("USDT", at_most=500.0) == pytest.approx(500.0)
    (transfer,) = _transfers(venue)
    assert (transfer["type"], transfer["asset"], float(transfer["amount"])) == ("MAIN_UMFUTURE", "USDT", 500.0)
    assert set(transfer) - {"timestamp", "recvWindow", "signature"} == {"type", "asset", "amount"}
    assert (venue.trading, venue.wallet) == (pytest.approx(1_500.0), pytest.approx(0.0))
    assert venue.sent("GET", "/api/v3/account"), "the spot wallet is read on the spot endpoint"
    # Safe to repeat: the wallet is empty now, so nothing is sent.
    assert client.sweep_to_trading("USDT", at_most=500.0) == 0.0
    assert len(_transfers(venue)) == 1


def test_an_empty_wallet_sends_nothing():
    client, venue = _binance(trading=1_000.0, spot=0.0)
    assert client.sweep_to_trading("USDT", at_most=500.0) == 0.0
    assert _transfers(venue) == [] and venue.sent("GET", "/api/v3/account")


def test_the_amount_is_rounded_down_to_the_currency_precision_never_up():
    client, venue = _binance(trading=0.0, spot=123.456)
    client._ensure_ready()  # noqa: SLF001
    client._exchange.currencies["USDT"]["precision"] = 0.01  # noqa: SLF001 - a coarse currency: rounding shows
    moved = client.sweep_to_trading("USDT", at_most=1_000.0)
    (transfer,) = _transfers(venue)  # 123.46 would be refused: more than the wallet holds
    assert transfer["amount"] == "123.45" and moved == pytest.approx(123.45)
    assert venue.wallet == pytest.approx(0.006)


def test_binance_funding_wallet_when_configured():
    client, venue = _binance(trading=0.0, spot=250.0, wallet_type=1, withdraw_from_account="funding")
    assert client.sweep_to_trading("USDT", at_most=250.0) == pytest.approx(250.0)
    (transfer,) = _transfers(venue)
    assert transfer["type"] == "FUNDING_UMFUTURE"
    assert venue.sent("POST", "/sapi/v1/asset/get-funding-asset") and not venue.sent("GET", "/api/v3/account")


def test_okx_moves_the_funding_account_into_the_trading_account():
    client, venue = _okx(trading=100.0, funding=8_000.0)
    assert client.sweep_to_trading("USDT", at_most=8_000.0) == pytest.approx(8_000.0)
    (transfer,) = _transfers(venue, "/asset/transfer")
    assert (transfer["from"], transfer["to"], transfer.get("type", "0"), float(transfer["amt"])) == ("6", "18", "0", 8_000.0)
    assert venue.sent("GET", "/asset/balances"), "the funding account is read on the asset endpoint"
    assert (venue.trading, venue.wallet) == (pytest.approx(8_100.0), pytest.approx(0.0))


@pytest.mark.parametrize("fault", ["timeout_after_commit", "5xx"])
def test_an_ambiguous_transfer_is_re_read_and_never_resent(fault):
    # Spot holds an operator's 5,000 besides the 500 this rebalance delivered. The transfer's answer is lost:
    # applied, the re-read shows the wallet 500 lower and it counts as moved; not applied, the wallet never
    # drops, and it is still not resent (it could have been applied and be shown late: a resend would then move
    # 500 of the operator's money). Its outcome stays unknown, reported so, and counted against the bound.
    client, venue = _binance(trading=0.0, spot=5_500.0)
    venue.transfer_script = [fault]
    events: list[tuple[str, float]] = []
    moved = client.sweep_to_trading("USDT", at_most=500.0, on_transfer=lambda e, a: events.append((e, a)))
    assert [float(b["amount"]) for b in _transfers(venue)] == [500.0]
    assert len(venue.sent("GET", "/api/v3/account")) >= 2, "the wallet is read again after the ambiguous transfer"
    if fault == "timeout_after_commit":
        assert moved == pytest.approx(500.0) and events == [("sending", 500.0), ("moved", 500.0)]
        assert (venue.trading, venue.wallet) == (pytest.approx(500.0), pytest.approx(5_000.0))
    else:
        assert moved == 0.0 and events == [("sending", 500.0)]  # no outcome: the caller records it as unknown
        assert (venue.trading, venue.wallet) == (pytest.approx(0.0), pytest.approx(5_500.0))


def test_an_operators_own_spot_balance_survives_a_sweep():
    # The defect this bound fixes: 5,000 USDT of the operator's own sit in spot, 500 arrived for the rebalance.
    client, venue = _binance(trading=1_000.0, spot=5_500.0)
    assert client.sweep_to_trading("USDT", at_most=500.0) == pytest.approx(500.0)
    assert [float(b["amount"]) for b in _transfers(venue)] == [500.0]
    assert (venue.trading, venue.wallet) == (pytest.approx(1_500.0), pytest.approx(5_000.0))
    # Asked again with what is left of the bound (nothing), it sends nothing: the operator's money stays.
    assert client.sweep_to_trading("USDT", at_most=0.0) == 0.0
    assert len(_transfers(venue)) == 1 and venue.wallet == pytest.approx(5_000.0)


def test_the_bound_is_capped_by_what_the_wallet_holds_and_reported_per_transfer():
    client, venue = _okx(trading=100.0, funding=300.0)  # less arrived so far than the bound
    events: list[tuple[str, float]] = []
    assert client.sweep_to_trading("USDT", at_most=1_000.0,
                                   on_transfer=lambda e, a: events.append((e, a))) == pytest.approx(300.0)
    assert events == [("sending", 300.0), ("moved", 300.0)]
    assert (venue.trading, venue.wallet) == (pytest.approx(400.0), pytest.approx(0.0))


def test_the_bound_is_required_and_must_be_a_number():
    client, venue = _binance(trading=0.0, spot=500.0)
    with pytest.raises(TypeError):
        client.sweep_to_trading("USDT")  # no "sweep everything"
    for bad in (float("nan"), float("inf"), None, "500"):
        with pytest.raises(ValueError, match="at_most"):
            client.sweep_to_trading("USDT", at_most=bad)
    assert client.sweep_to_trading("USDT", at_most=-1.0) == 0.0
    assert venue.requests == [] and venue.wallet == 500.0


def test_a_callback_that_fails_before_a_transfer_stops_the_sweep_before_it_is_sent():
    # The saga notes each transfer before it is sent; if that note cannot be written, nothing is sent.
    client, venue = _binance(trading=0.0, spot=500.0)

    def failing(event, amount):
        raise RuntimeError("saga log unavailable")

    with pytest.raises(RuntimeError):
        client.sweep_to_trading("USDT", at_most=500.0, on_transfer=failing)
    assert _transfers(venue) == [] and venue.wallet == 500.0


def test_a_transfer_that_fails_before_it_is_applied_is_reported_not_moved():
    client, venue = _binance(trading=0.0, spot=500.0)
    base = client._exchange.fetch  # noqa: SLF001

    def unreachable(url, method="GET", headers=None, body=None):
        if url.split("?")[0].endswith("/sapi/v1/asset/transfer"):
            raise ccxt.RateLimitExceeded("429 Too Many Requests")  # refused before anything was applied
        return base(url, method, headers, body)

    client._exchange.fetch = unreachable  # noqa: SLF001
    events: list[tuple[str, float]] = []
    with pytest.raises(TransientError):
        client.sweep_to_trading("USDT", at_most=500.0, on_transfer=lambda e, a: events.append((e, a)))
    assert events[0] == ("sending", 500.0) and events[-1] == ("not_moved", 500.0) and venue.wallet == 500.0


def test_a_withdrawal_reports_its_top_up_once_by_key_also_when_the_send_fails():
    client, venue = _binance(trading=10_000.0, spot=100.0)
    venue.refuse_withdrawal = True
    with pytest.raises(BusinessError):
        client.withdraw("USDT", 300.0, address="T" + "Q" * 33, network="TRC20", idempotency_key="leg1")
    assert venue.wallet == pytest.approx(401.0)  # 100 there before (not ours) + the full 301 top-up
    assert client.take_withdrawal_top_up("leg1") == pytest.approx(301.0)
    assert client.take_withdrawal_top_up("leg1") == 0.0  # taken: reported once
    assert client.take_withdrawal_top_up("other") == 0.0
    # Swept back by that bound, the 100 that were there before stay.
    assert client.sweep_to_trading("USDT", at_most=301.0) == pytest.approx(301.0)
    assert venue.wallet == pytest.approx(100.0) and venue.trading == pytest.approx(10_000.0)


def test_read_only_refuses_before_any_request():
    client, venue = _binance(trading=0.0, spot=500.0, read_only=True)
    with pytest.raises(BusinessError) as refused:
        client.sweep_to_trading("USDT", at_most=500.0)
    assert refused.value.code == "read_only" and venue.requests == []


@pytest.mark.parametrize("overrides", [{"sweep_deposits_to_trading": False}, {"withdraw_from_account": "none"}])
def test_switched_off_or_one_wallet_is_a_no_op_without_requests(overrides):
    client, venue = _binance(trading=0.0, spot=500.0, **overrides)
    assert client.sweep_to_trading("USDT", at_most=500.0) == 0.0
    assert venue.requests == [] and venue.wallet == 500.0


def test_the_sweep_waits_for_a_withdrawal_in_progress_on_the_same_client():
    # A sweep must not take a withdrawal's top-up back into the futures account between the top-up and the send.
    client, venue = _binance(trading=1_000.0, spot=0.0)
    seen: list[bool] = []
    base = client._top_up_and_send  # noqa: SLF001 - the seam between top-up and send

    def top_up_and_send(*args, **kwargs):
        seen.append(client._withdraw_lock.locked())  # noqa: SLF001
        return base(*args, **kwargs)

    client._top_up_and_send = top_up_and_send  # noqa: SLF001
    client.withdraw("USDT", 300.0, address="T" + "Q" * 33, network="TRC20", idempotency_key="leg1")
    assert seen == [True]
    with client._withdraw_lock:  # noqa: SLF001
        import threading

        done = threading.Event()
        threading.Thread(target=lambda: (client.sweep_to_trading("USDT", at_most=300.0), done.set()),
                         daemon=True).start()
        assert not done.wait(0.2), "the sweep ran while a withdrawal held the wallet"
    assert done.wait(5.0)


# ------------------------------------------------------------------------------------------------ configuration


def _load(monkeypatch, venues: str, entries: dict) -> Any:
    monkeypatch.setenv("EXCHANGE_VENUES", venues)
    monkeypatch.setenv("CCXT_VENUES", json.dumps(entries))
    return ccxt_exchange_from_env("local")


def test_sweep_deposits_to_trading_defaults_and_validation(monkeypatch):
    resource = _load(monkeypatch, "binance,okx,bybit", {})
    clients = {v.name: CcxtVenueClient(v.to_settings(timeout_seconds=1, precheck_client_order_id=True))
               for v in resource.accounts}
    assert {n: c.sweep_deposits_to_trading for n, c in clients.items()} == {"binance": True, "okx": True, "bybit": False}
    off = _load(monkeypatch, "okx", {"okx": {"sweep_deposits_to_trading": False}}).accounts[0]
    assert off.sweep_deposits_to_trading is False
    no_wallet = _load(monkeypatch, "binance", {"binance": {"withdraw_from_account": "none"}}).accounts[0]
    assert no_wallet.sweep_deposits_to_trading is False
    bad = [("bybit", {"sweep_deposits_to_trading": True}),
           ("binance", {"withdraw_from_account": "none", "sweep_deposits_to_trading": True}),
           ("okx", {"sweep_deposits_to_trading": "yes"})]
    for venue, entry in bad:
        with pytest.raises(settings.SettingError, match=rf"CCXT_VENUES\[{venue}\]\.sweep_deposits_to_trading"):
            _load(monkeypatch, venue, {venue: entry})
    with pytest.raises(ValueError, match="sweep_deposits_to_trading"):
        CcxtVenueClient(CcxtVenueSettings(name="bybit", exchange_id="bybit", sweep_deposits_to_trading=True))


def test_a_transfer_applied_but_not_shown_yet_is_not_counted_twice():
    # The answer of an applied transfer is lost and the next read still shows the old balance (the exchange lags):
    # nothing is resent; the wallet is read again until it shows the transfer, which then counts once.
    client, venue = _binance(trading=0.0, spot=500.0)
    venue.transfer_script = ["timeout_after_commit"]
    base = client._exchange.fetch  # noqa: SLF001
    lag = {"reads": 0}

    def lagging(url, method="GET", headers=None, body=None):
        if url.split("?")[0].endswith("/api/v3/account") and venue.sent("POST", "/sapi/v1/asset/transfer"):
            lag["reads"] += 1
            if lag["reads"] == 1:  # the first read after the transfer shows the balance from before it
                venue.requests.append((method, "/api/v3/account", {}, None))
                return {"balances": [{"asset": "USDT", "free": "500.00000000", "locked": "0"}], "accountType": "SPOT"}
        return base(url, method, headers, body)

    client._exchange.fetch = lagging  # noqa: SLF001
    assert client.sweep_to_trading("USDT", at_most=500.0) == pytest.approx(500.0)
    assert [float(b["amount"]) for b in _transfers(venue)] == [500.0]  # never resent: a later read showed it gone
    assert (venue.trading, venue.wallet) == (pytest.approx(500.0), pytest.approx(0.0))


def test_a_first_transfer_refused_for_insufficient_balance_is_a_business_error():
    # Nothing of this sweep moved before: the refusal is the exchange's word (e.g. the funds are locked), not lag.
    client, venue = _binance(trading=0.0, spot=500.0)
    base = client._exchange.fetch  # noqa: SLF001

    def refusing(url, method="GET", headers=None, body=None):
        if url.split("?")[0].endswith("/sapi/v1/asset/transfer"):
            raise ccxt.InsufficientFunds('binance {"code":-5013,"msg":"Asset transfer failed: insufficient balance"}')
        return base(url, method, headers, body)

    client._exchange.fetch = refusing  # noqa: SLF001
    events: list[tuple[str, float]] = []
    with pytest.raises(BusinessError) as refused:
        client.sweep_to_trading("USDT", at_most=500.0, on_transfer=lambda e, a: events.append((e, a)))
    assert refused.value.code == "insufficient_funds" and venue.wallet == 500.0
    assert events == [("sending", 500.0), ("not_moved", 500.0)]  # refused: the caller knows nothing moved
