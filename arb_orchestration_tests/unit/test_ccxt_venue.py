"""`CcxtVenueClient` without a network: ccxt exceptions mapped onto the error taxonomy (classes and
exchange codes, mutating vs read), never a blind resend after a timeout (a fake exchange that
records the order and then times out), guardrails (read-only, symbol allowlist, withdrawal
address allowlist, plain-HTTP endpoints), client order ids every venue accepts, credentials
blanked in ccxt's own log lines, and building the resource from the environment (secrets as
EnvVar, settings errors naming the variable)."""

from __future__ import annotations

import logging

import ccxt
import pytest
import requests
from dagster import EnvVar

from arb_orchestration import settings
from arb_orchestration.resources.ccxt_venue import (
    CcxtExchangeResource,
    CcxtVenueClient,
    CcxtVenueSettings,
    _RedactingFilter,
    ccxt_exchange_from_env,
    classify_ccxt_error,
    credential_env_names,
)
from arb_orchestration.resources.errors import AmbiguousOutcomeError, BusinessError, NotFoundError, TransientError
from arb_orchestration.resources.resilience import CircuitBreaker, RetrySettings


def _refused() -> ccxt.NetworkError:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as inner:
            raise requests.exceptions.ConnectionError("Max retries exceeded (Caused by NewConnectionError)") from inner
    except requests.exceptions.ConnectionError as cause:
        try:
            raise ccxt.NetworkError("binanceusdm POST http://x/fapi/v1/order") from cause
        except ccxt.NetworkError as exc:
            return exc


@pytest.mark.parametrize(
    "exc, mutating, expected, code",
    [
        (ccxt.RequestTimeout("binanceusdm POST /order"), True, AmbiguousOutcomeError, None),
        (ccxt.RequestTimeout("binanceusdm GET /account"), False, TransientError, None),
        (ccxt.NetworkError("Connection aborted. RemoteDisconnected"), True, AmbiguousOutcomeError, None),
        (ccxt.ExchangeNotAvailable("503 Service Unavailable"), True, AmbiguousOutcomeError, None),
        (ccxt.ExchangeNotAvailable("503 Service Unavailable"), False, TransientError, None),
        (ccxt.DDoSProtection("429 Too Many Requests"), True, TransientError, None),
        (ccxt.RateLimitExceeded('binanceusdm {"code":-1003}'), True, TransientError, None),
        (ccxt.InvalidNonce('binanceusdm {"code":-1021,"msg":"Timestamp outside recvWindow"}'), True, TransientError, None),
        (ccxt.OperationFailed('binanceusdm {"code":-1001,"msg":"Internal error"}'), True, AmbiguousOutcomeError, None),
        (ccxt.OperationFailed('binanceusdm {"code":-1001,"msg":"Internal error"}'), False, TransientError, None),
        (ccxt.AuthenticationError('binanceusdm {"code":-1022,"msg":"Signature for this request is not valid."}'), False, BusinessError, "authentication"),
        (ccxt.InsufficientFunds("margin"), True, BusinessError, "insufficient_funds"),
        (ccxt.InvalidOrder("bad order"), True, BusinessError, "invalid_order"),
        (ccxt.BadRequest('binanceusdm {"code":-1102,"msg":"Mandatory parameter"}'), True, BusinessError, "bad_request"),
        (ccxt.OrderNotFound('binanceusdm {"code":-2011,"msg":"Unknown order sent."}'), True, NotFoundError, "order_not_found"),
        # Against a host that is not binance.com ccxt cannot pick its futures table: the code decides.
        (ccxt.ExchangeError('binanceusdm {"code": -2019, "msg": "Margin is insufficient."}'), True, BusinessError, "insufficient_margin"),
        (ccxt.ExchangeError('binanceusdm {"code": -4116, "msg": "ClientOrderId is duplicated."}'), True, BusinessError, "duplicate_client_order_id"),
        (ccxt.ExchangeError('binanceusdm {"code": -2022, "msg": "ReduceOnly Order is rejected."}'), True, BusinessError, "reduce_only_rejected"),
        (ccxt.BadRequest('binanceusdm {"code": -4026, "msg": "You have insufficient balance."}'), True, BusinessError, "insufficient_funds"),
        (ccxt.RequestTimeout('binanceusdm {"code":-1007,"msg":"Timeout waiting for response from backend"}'), True, AmbiguousOutcomeError, None),
        (ccxt.ExchangeError('binanceusdm {"code": -9999, "msg": "?"}'), True, BusinessError, "exchange_error:-9999"),
    ],
)
def test_ccxt_errors_map_onto_the_taxonomy(exc, mutating, expected, code):
    err = classify_ccxt_error(exc, exchange_id="binanceusdm", mutating=mutating)
    assert type(err) is expected
    if code is not None:
        assert err.code == code


def test_a_request_that_never_left_is_safe_to_resend_even_for_an_order():
    err = classify_ccxt_error(_refused(), exchange_id="binanceusdm", mutating=True)
    assert type(err) is TransientError  # connection refused: nothing was sent


def test_bybit_codes_are_read_too():
    err = classify_ccxt_error(ccxt.ExchangeError('bybit {"retCode":110007,"retMsg":"ab not enough"}'), exchange_id="bybit", mutating=True)
    assert isinstance(err, BusinessError) and err.code == "insufficient_funds"


# ---------------------------------------------------------------------------- a fake ccxt exchange


class FakeCcxt:
    """The few ccxt methods the client calls; `fail_next_create` applies the order, then times out."""

    has = {"fetchFundingIntervals": False, "fetchMarkPrices": True}

    def __init__(self):
        self.markets = {"BTC/USDT:USDT": {"swap": True, "active": True}, "ETH/USDT:USDT": {"swap": True, "active": True}}
        self.currencies = {}
        self.orders: list[dict] = []
        self.create_calls = 0
        self.fail_next_create: Exception | None = None

    def load_markets(self):
        return self.markets

    def create_order(self, symbol, type, side, amount, price=None, params=None):
        self.create_calls += 1
        cid = params.get("newClientOrderId")
        order = {"id": str(len(self.orders) + 1), "clientOrderId": cid, "symbol": symbol, "type": type, "side": side,
                 "amount": amount, "filled": amount, "average": 100.0, "status": "closed",
                 "reduceOnly": params.get("reduceOnly", False), "timestamp": 1_700_000_000_000, "info": {}}
        self.orders.append(order)
        if self.fail_next_create is not None:
            exc, self.fail_next_create = self.fail_next_create, None
            raise exc
        return order

    def fetch_order(self, id, symbol, params=None):
        cid = (params or {}).get("clientOrderId")
        for order in reversed(self.orders):
            if (cid and order["clientOrderId"] == cid) or (id and order["id"] == id):
                if order["symbol"] == symbol:
                    return order
        raise ccxt.OrderNotFound('binanceusdm {"code":-2013,"msg":"Order does not exist."}')


def _client(fake: FakeCcxt, **overrides) -> CcxtVenueClient:
    config = CcxtVenueSettings(name="binance", exchange_id="binanceusdm", api_key="k" * 16, secret="s" * 32, **overrides)
    return CcxtVenueClient(config, retry=RetrySettings(max_attempts=3, base_delay=0.0), breaker=CircuitBreaker("test"), sleep=lambda s: None, exchange=fake)


def test_a_timed_out_order_is_looked_up_not_resent():
    fake = FakeCcxt()
    fake.fail_next_create = ccxt.RequestTimeout("binanceusdm POST http://x/fapi/v1/order")
    order = _client(fake).create_order("BTC/USDT:USDT", "market", "sell", 1.0, client_order_id="close-1", reduce_only=True)
    assert fake.create_calls == 1 and len(fake.orders) == 1
    assert order.client_order_id == "close-1" and order.status == "closed"


def test_an_order_that_exists_is_returned_without_sending():
    fake = FakeCcxt()
    client = _client(fake)
    first = client.create_order("BTC/USDT:USDT", "market", "sell", 1.0, client_order_id="close-1", reduce_only=True)
    again = client.create_order("BTC/USDT:USDT", "market", "sell", 1.0, client_order_id="close-1", reduce_only=True)
    assert again.id == first.id and fake.create_calls == 1


def test_a_refused_connection_is_resent_with_the_same_id():
    fake = FakeCcxt()
    fake.fail_next_create = _refused()
    fake_orders_before = list(fake.orders)

    # The fake records even a refused order; drop it so the venue "never saw" it.
    original = fake.create_order

    def refusing(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        except ccxt.NetworkError:
            fake.orders.pop()
            raise

    fake.create_order = refusing
    order = _client(fake).create_order("BTC/USDT:USDT", "market", "buy", 1.0, client_order_id="open-1")
    assert fake.create_calls == 2 and len(fake.orders) == len(fake_orders_before) + 1
    assert order.client_order_id == "open-1"


def test_guardrails_refuse_before_anything_is_sent():
    fake = FakeCcxt()
    read_only = _client(fake, read_only=True)
    with pytest.raises(BusinessError, match="read-only"):
        read_only.create_order("BTC/USDT:USDT", "market", "sell", 1.0, client_order_id="x")
    with pytest.raises(BusinessError) as refused:
        read_only.withdraw("USDT", 10, address="T...", network="TRC20", idempotency_key="w")
    assert refused.value.code == "read_only"
    allowlisted = _client(fake, symbols=("ETH/USDT:USDT",), withdraw_allowlist=("0xabc",))
    with pytest.raises(BusinessError) as not_allowed:
        allowlisted.create_order("BTC/USDT:USDT", "market", "buy", 1.0, client_order_id="y")
    assert not_allowed.value.code == "symbol_not_allowed"
    # Closing is always allowed: the stop-loss must flatten whatever it finds.
    assert allowlisted.create_order("BTC/USDT:USDT", "market", "sell", 1.0, client_order_id="z", reduce_only=True).status == "closed"
    with pytest.raises(BusinessError) as address:
        allowlisted.withdraw("USDT", 10, address="0xdef", network="ERC20", idempotency_key="w2")
    assert address.value.code == "address_not_allowed"
    assert fake.create_calls == 1


def test_credentials_only_travel_over_https_or_to_loopback():
    with pytest.raises(ValueError, match="https"):
        _client(FakeCcxt(), api_base_url="http://exchange.example.com")
    _client(FakeCcxt(), api_base_url="http://127.0.0.1:9000")
    _client(FakeCcxt(), api_base_url="https://fapi.binance.com")


def test_client_order_ids_every_venue_accepts():
    client = _client(FakeCcxt())
    assert client._venue_client_id("3f2a" * 8) == "3f2a" * 8  # the saga's 32-hex keys pass unchanged
    long_id = "stop-loss/saga-123/binance/BTC/USDT:USDT/long/attempt-1"
    mapped = client._venue_client_id(long_id)
    assert mapped == client._venue_client_id(long_id) and len(mapped) == 32 and mapped.isalnum()
    order = client.create_order("BTC/USDT:USDT", "market", "sell", 1.0, client_order_id=long_id, reduce_only=True)
    assert order.client_order_id == long_id  # callers see their own id back


def test_ccxt_log_lines_lose_credentials_and_signatures(caplog):
    redactor = _RedactingFilter(["apikey-0123456789", "secret-abcdefghij"])
    logger = logging.getLogger("arb_orchestration.ccxt.test-redaction")
    logger.addFilter(redactor)
    with caplog.at_level(logging.DEBUG, logger="arb_orchestration.ccxt.test-redaction"):
        logger.debug("%s %s, Request: %s %s", "GET", "http://x/fapi/v3/account?timestamp=1&signature=ab12cd",
                     {"X-MBX-APIKEY": "apikey-0123456789"}, "secret-abcdefghij")
    text = caplog.text
    assert "apikey-0123456789" not in text and "secret-abcdefghij" not in text and "ab12cd" not in text
    assert "signature=***" in text and "GET" in text


def test_repr_shows_no_credentials():
    client = _client(FakeCcxt())
    assert "k" * 16 not in repr(client) and "s" * 32 not in repr(client) and "s" * 32 not in repr(client.config)


# ---------------------------------------------------------------------------- from the environment


def _clear(monkeypatch):
    for name in list(settings.SETTINGS) + [v for n in ("binance", "okx") for v in credential_env_names(n).values()]:
        monkeypatch.delenv(name, raising=False)


def test_resource_from_env_passes_secrets_as_envvar(monkeypatch):
    _clear(monkeypatch)
    monkeypatch.setenv("EXCHANGE_VENUES", "binance,okx")
    monkeypatch.setenv("CCXT_VENUES", '{"binance": {"demo_trading": true, "symbols": ["BTC/USDT:USDT"]}, "okx": {"sandbox": true, "read_only": true}}')
    monkeypatch.setenv("CCXT_BINANCE_API_KEY", "key-value")
    monkeypatch.setenv("CCXT_BINANCE_SECRET", "secret-value")
    resource = ccxt_exchange_from_env("local")
    assert isinstance(resource, CcxtExchangeResource) and resource.venue_names() == ["binance", "okx"]
    binance, okx = resource.accounts
    assert binance.exchange_id == "binanceusdm" and binance.demo_trading and binance.symbols == ["BTC/USDT:USDT"]
    assert isinstance(binance.api_key, EnvVar) and binance.api_key.env_var_name == "CCXT_BINANCE_API_KEY"
    assert isinstance(binance.secret, EnvVar) and binance.secret.env_var_name == "CCXT_BINANCE_SECRET"
    assert okx.exchange_id == "okx" and okx.sandbox and okx.read_only and okx.api_key == ""
    assert "key-value" not in repr(resource) and "secret-value" not in repr(resource)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"CCXT_VENUES": "{not json"}, "CCXT_VENUES must be a JSON object"),
        ({"CCXT_VENUES": '{"binance": {"sandbx": true}}'}, r"CCXT_VENUES\[binance\]\.sandbx"),
        ({"CCXT_VENUES": '{"ftx": {}}'}, "CCXT_VENUES names venues not in EXCHANGE_VENUES: ftx"),
        ({"EXCHANGE_VENUES": "mexc", "CCXT_VENUES": "{}"}, r"CCXT_VENUES\[mexc\]\.exchange_id is required"),
        ({"CCXT_VENUES": '{"binance": {"api_base_url": "http://10.0.0.5:8711"}}'}, "must be https://"),
        ({"CCXT_VENUES": '{"binance": {"sandbox": true}}'}, "use demo_trading"),
    ],
)
def test_bad_ccxt_settings_name_the_variable(monkeypatch, env, message):
    _clear(monkeypatch)
    monkeypatch.setenv("EXCHANGE_VENUES", "binance")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(settings.SettingError, match=message):
        ccxt_exchange_from_env("local")


def test_prod_requires_each_venues_credentials(monkeypatch):
    _clear(monkeypatch)
    monkeypatch.setenv("EXCHANGE_VENUES", "binance")
    monkeypatch.setenv("CCXT_VENUES", "{}")
    with pytest.raises(settings.SettingError, match="missing required secret CCXT_BINANCE_API_KEY"):
        ccxt_exchange_from_env("prod")
    monkeypatch.setenv("CCXT_BINANCE_API_KEY", "k")
    with pytest.raises(settings.SettingError, match="missing required secret CCXT_BINANCE_SECRET"):
        ccxt_exchange_from_env("prod")
    monkeypatch.setenv("CCXT_BINANCE_SECRET", "s")
    assert ccxt_exchange_from_env("prod").venue_names() == ["binance"]


def test_the_settings_table_documents_the_ccxt_variables():
    table = settings.markdown_table()
    for name in ("CCXT_VENUES", "CCXT_<VENUE>_API_KEY", "CCXT_<VENUE>_SECRET", "CCXT_<VENUE>_PASSWORD"):
        assert f"`{name}`" in table
    assert settings.SETTINGS["CCXT_<VENUE>_SECRET"].secret and settings.SETTINGS["CCXT_<VENUE>_API_KEY"].secret
