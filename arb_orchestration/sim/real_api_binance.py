"""One simulator venue spoken in Binance's own REST dialect (USDⓈ-M futures + sapi wallet).

The exchange simulator's native API is the platform's own JSON. This module
serves the *same* `ExchangeState` venue through the subset of Binance's REST
API that ccxt's unmodified `binanceusdm` class calls for what the platform
needs, so the ccxt-backed venue client can be proven against a real client
library without contacting Binance:

* public: `GET /fapi/v1/{ping,time,exchangeInfo,premiumIndex,fundingInfo}`;
* signed futures: `GET /fapi/v{2,3}/account`, `GET /fapi/v{2,3}/positionRisk`,
  `GET /fapi/v1/leverageBracket`, `GET /fapi/v1/positionSide/dual` (always one-way),
  `POST|GET|DELETE /fapi/v1/order`,
  `GET /fapi/v1/openOrders`, `DELETE /fapi/v1/allOpenOrders`, and the Algo
  Order API that carries conditional orders (`STOP_MARKET`) since Binance moved
  them off `/order`: `POST|GET|DELETE /fapi/v1/algoOrder`,
  `GET /fapi/v1/openAlgoOrders`, `DELETE /fapi/v1/algoOpenOrders`;
* signed wallet (sapi): `GET /sapi/v1/capital/config/getall`,
  `GET /sapi/v1/capital/deposit/address`, `POST /sapi/v1/capital/withdraw/apply`,
  `GET /sapi/v1/capital/withdraw/history`, `POST /sapi/v1/asset/transfer`,
  `POST /sapi/v1/asset/get-funding-asset`, `GET /sapi/v1/margin/allPairs` (empty: what `load_markets` asks for);
* signed spot account: `GET /api/v3/account` (the spot wallet's balances).

Wallets, as on Binance: the simulator's venue wallet (`ExchangeState`) is the USDⓈ-M futures account
(UMFUTURE); the spot (MAIN), funding (FUNDING) and cross-margin (MARGIN) wallets are kept here, empty at
start. `asset/transfer` moves funds between them (-5013 when the source lacks them), and `withdraw/apply`
pays from the spot wallet (`walletType` 0, also the simulator's default "selected wallet") or the funding
wallet (1), never from the futures account: a client must transfer first, as on Binance. Deposits land where
`deposit_wallet` says: "MAIN" (spot) is what Binance does (or "FUNDING"); the default "UMFUTURE" keeps the
simulator's older model (the futures account), which tests written before the split rely on. With "MAIN" or
"FUNDING", the state still credits a completed withdrawal into the venue's one wallet (the futures account) and
the dialect moves each such arrival to the deposit wallet before it serves any request, in the same lock as the
request, so no read sees it in both. Only crypto arrivals (withdrawals from simulated venues) move; a fiat
credit (Wise) stays in the futures account.

What is checked like Binance does: the `X-MBX-APIKEY` header (-2014/-2015),
`timestamp` within `recvWindow` (-1021), the HMAC-SHA256 `signature` over the
query string followed by the body (-1022), mandatory parameters (-1102), and
business rejections with Binance's codes: -1121 invalid symbol, -1116/-1117
order type/side, -4003 quantity, -1111 step size, -4164 min notional, -2019
margin insufficient, -2022 reduce-only rejected, -4116 duplicated client order
id (Binance keeps `newClientOrderId` unique among *open* orders only: reusing
the id of a filled order places a second order, as on Binance), -2011/-2013
unknown order, -4026 insufficient balance, -4022 below minimum withdrawal,
-4019 network closed for withdrawal, -4007 address validation. Errors are
`{"code": <negative int>, "msg": "..."}` with HTTP 400 (401 for the API key).

The simulator's fault injector applies here too, under the native endpoint
names (`create_order`, `positions`, `create_withdrawal`, ...), so one fault
rule covers a venue whichever API the client speaks. A 5xx answers
`{"code": -1001}`; a 429 answers `{"code": -1003}` with `Retry-After`.

Withdrawals deduct the network fee from `amount` as Binance's `withdraw/apply` does (the destination
receives amount − withdrawFee; `withdrawal_fee="added"` puts it on top instead). The history's `amount`
is what arrives, `transactionFee` the fee (as in ccxt's sample answer: 28.75 + 0.25; unverified on
Binance itself).

Deliberate simplifications (the simulator's model, not Binance's): deposits land in the futures account
unless `deposit_wallet` says otherwise, fiat credits (Wise) always; every futures asset is margin; `LIMIT`
takes `timeInForce=GTC` only; the only conditional order is a
`STOP_MARKET` (mark-price trigger); `estimatedArrivalTime` is the simulator's
rail time in (fractional) minutes.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from arb_orchestration.domain.models import Order, Withdrawal
from arb_orchestration.sim.exchange_faults import FaultInjector
from arb_orchestration.sim.exchange_state import ExchangeState, SimError
from arb_orchestration.sim.http_base import KeepAliveHandler, LoopbackHTTPServer

log = logging.getLogger("arb_orchestration.sim.real_api_binance")

API_KEY_HEADER = "X-MBX-APIKEY"
ORDER_ID_BASE = 8_000_000_000  # Binance order ids are int64; sim "binance-17" is 8000000017
ALGO_ID_BASE = 3_000_000_000  # conditional orders have their own id space (algoId)
MAX_RECV_WINDOW_MS = 60_000
DEFAULT_STEP_SIZES = {"BTC": "0.001", "ETH": "0.001", "SOL": "0.01"}
DEFAULT_TICK_SIZES = {"BTC": "0.10", "ETH": "0.01", "SOL": "0.0010"}
MIN_NOTIONAL = 5.0  # USDT, like Binance's USDⓈ-M perpetuals (reduce-only orders are exempt)

# Simulator network name <-> Binance network id (ccxt maps the ids back to these codes).
NETWORK_IDS = {"TRC20": "TRX", "ERC20": "ETH", "ARBITRUM": "ARBITRUM", "SOL": "SOL", "BTC": "BTC"}
NETWORK_NAMES = {
    "TRX": "Tron (TRC20)",
    "ETH": "Ethereum (ERC20)",
    "ARBITRUM": "Arbitrum One",
    "SOL": "Solana",
    "BTC": "Bitcoin",
}
_FIAT = {"EUR", "USD", "GBP"}

# Withdrawal status codes of `capital/withdraw/history`.
_WITHDRAW_STATUS = {"pending": 2, "broadcast": 4, "completed": 6, "canceled": 1, "failed": 5}
_ORDER_STATUS = {"open": "NEW", "closed": "FILLED", "canceled": "CANCELED", "rejected": "EXPIRED"}
_ALGO_STATUS = {"open": "NEW", "closed": "FINISHED", "canceled": "CANCELED", "rejected": "REJECTED"}
_TRANSFER_TYPES = {
    "MAIN_UMFUTURE", "UMFUTURE_MAIN", "MAIN_FUNDING", "FUNDING_MAIN",
    "FUNDING_UMFUTURE", "UMFUTURE_FUNDING", "MAIN_MARGIN", "MARGIN_MAIN",
}
FUTURES_WALLET = "UMFUTURE"  # the simulator's ExchangeState wallet of the venue
_SIDE_WALLETS = ("MAIN", "FUNDING", "MARGIN")  # kept by the dialect
_WITHDRAW_WALLETS = {0: "MAIN", 1: "FUNDING"}  # withdraw/apply walletType
DEPOSIT_WALLETS = ("MAIN", "FUNDING", FUTURES_WALLET)  # where an arriving withdrawal is credited


class BinanceError(Exception):
    """A rejection in Binance's shape: HTTP status, negative error code, message."""

    def __init__(self, code: int, msg: str, status: int = 400):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status


def _binance_reject_code(code: str) -> int:
    """An injected refusal's Binance code: the fault's own when it is one (`"-2022"`), else -2010 NEW_ORDER_REJECTED."""
    try:
        value = int(code)
    except ValueError:
        return -2010
    return value if value < 0 else -2010


def _mandatory(name: str) -> BinanceError:
    return BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _side(p: dict[str, str]) -> str:
    """The order's `side` parameter: mandatory, BUY or SELL."""
    side = p.get("side")
    if not side:
        raise _mandatory("side")
    if side not in {"BUY", "SELL"}:
        raise BinanceError(-1117, "Invalid side.")
    return side


def _num(value: float | None, places: int = 8) -> str:
    """A decimal string the way Binance writes them (no exponent, no trailing zeros)."""
    if value is None:
        return "0"
    text = f"{float(value):.{places}f}".rstrip("0").rstrip(".")
    return "0" if text in {"", "-0"} else text


def _ms(seconds: float | None) -> int:
    return int(round((seconds or 0.0) * 1000))


def _decimals(step: str) -> int:
    return len(step.split(".", 1)[1].rstrip("0")) if "." in step else 0


def _is_multiple(value: float, step: str) -> bool:
    units = value / float(step)
    return abs(units - round(units)) < 1e-6


@dataclass
class BinanceRequest:
    """One request as the server saw it: raw strings, because the signature covers raw bytes."""

    method: str
    path: str
    query: str
    body: str
    headers: Mapping[str, str]  # lower-case names
    received_at: float = field(default_factory=time.time)

    def params(self) -> dict[str, str]:
        merged = dict(parse_qsl(self.query, keep_blank_values=True))
        merged.update(parse_qsl(self.body, keep_blank_values=True))
        return merged


@dataclass
class BinanceResponse:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    hang_s: float = 0.0


def _strip_signature(raw: str) -> tuple[str, str | None]:
    parts = raw.split("&") if raw else []
    signature = None
    kept = []
    for part in parts:
        if part.startswith("signature="):
            signature = unquote(part[len("signature="):])
        else:
            kept.append(part)
    return "&".join(kept), signature


Handler = Callable[[BinanceRequest, dict[str, str]], Any]


class BinanceApi:
    """Routes Binance-shaped requests for one venue of an `ExchangeState`.

    `api_key`/`secret` are the credentials the venue accepts (secret: the HMAC
    key). `clock` is the server's time for `timestamp`/`recvWindow` checks.
    """

    def __init__(
        self,
        state: ExchangeState,
        faults: FaultInjector | None = None,
        *,
        venue: str = "binance",
        api_key: str,
        secret: str,
        clock: Callable[[], float] = time.time,
        wait: Callable[[float], None] = time.sleep,
        step_sizes: Mapping[str, str] | None = None,
        tick_sizes: Mapping[str, str] | None = None,
        withdrawal_fee: str = "deducted",
        deposit_wallet: str = FUTURES_WALLET,
    ):
        if venue not in state.venue_names():
            raise ValueError(f"no venue {venue!r} in the simulator; venues: {', '.join(state.venue_names())}")
        if not api_key or not secret:
            raise ValueError("a Binance-shaped venue needs an API key and a secret")
        if withdrawal_fee not in ("deducted", "added"):
            raise ValueError(f"withdrawal_fee must be 'deducted' or 'added', got {withdrawal_fee!r}")
        self.state = state
        self.faults = faults or FaultInjector()
        self.venue = venue
        # Binance's withdraw/apply deducts the network fee from `amount` (what arrives is amount - fee);
        # "added" serves the other convention (fee on top) for tests of venues configured that way.
        self.withdrawal_fee = withdrawal_fee
        self._api_key = api_key
        self._secret = secret.encode()
        self._clock = clock
        self._wait = wait
        self._steps = {**DEFAULT_STEP_SIZES, **(step_sizes or {})}
        self._ticks = {**DEFAULT_TICK_SIZES, **(tick_sizes or {})}
        self._lock = threading.Lock()
        # Binance lets a client order id be reused once its order is no longer open; the
        # simulator keys orders by client id, so reuses are stored under an alias.
        self._public_cid: dict[str, str] = {}  # state client id -> the id the client sent
        self._cid_history: dict[str, list[str]] = {}  # client id -> state client ids, oldest first
        self._alias_seq = itertools.count(2)
        self._transfers: list[dict[str, Any]] = []
        self._tran_ids = itertools.count(130_000_000_001)
        # Spot, funding and margin wallets (the futures account is the ExchangeState wallet). Lock order:
        # _wallet_lock, then the state's lock; never the other way round. Re-entrant: a request holds both while
        # its handler runs (deposits are landed first), and handlers take them again.
        self._wallet_lock = threading.RLock()
        self._wallets: dict[str, dict[str, float]] = {name: {} for name in _SIDE_WALLETS}
        # Arrivals already moved to the deposit wallet, as (withdrawal id, created_at): ids restart after a state reset.
        self._landed: set[tuple[str, float | None]] = set()
        self.deposit_wallet = deposit_wallet
        self.request_log: list[tuple[str, str, int]] = []  # (method, path, status) for tests
        self._routes: dict[tuple[str, str], tuple[Handler, bool, str]] = {}
        r = self._route
        r("GET", "/fapi/v1/ping", self._ping, signed=False, endpoint="list_venues")
        r("GET", "/fapi/v1/time", self._time, signed=False, endpoint="list_venues")
        r("GET", "/fapi/v1/exchangeInfo", self._exchange_info, signed=False, endpoint="list_venues")
        r("GET", "/fapi/v1/premiumIndex", self._premium_index, signed=False, endpoint="funding_rates")
        r("GET", "/fapi/v1/fundingInfo", self._funding_info, signed=False, endpoint="funding_rates")
        r("GET", "/fapi/v2/account", self._account, endpoint="balances")
        r("GET", "/fapi/v3/account", self._account, endpoint="balances")
        r("GET", "/fapi/v2/positionRisk", self._position_risk, endpoint="positions")
        r("GET", "/fapi/v3/positionRisk", self._position_risk, endpoint="positions")
        r("GET", "/fapi/v1/leverageBracket", self._leverage_bracket, endpoint="positions")
        # The client's position-mode read before its first order: the simulated account is one-way.
        r("GET", "/fapi/v1/positionSide/dual", self._position_side_dual, endpoint="position_mode")
        r("POST", "/fapi/v1/order", self._new_order, endpoint="create_order")
        r("GET", "/fapi/v1/order", self._query_order, endpoint="get_order_by_client_id")
        r("DELETE", "/fapi/v1/order", self._cancel_order, endpoint="cancel_order")
        r("GET", "/fapi/v1/openOrders", self._open_orders, endpoint="list_orders")
        r("DELETE", "/fapi/v1/allOpenOrders", self._cancel_all, endpoint="cancel_all_orders")
        r("POST", "/fapi/v1/algoOrder", self._new_algo_order, endpoint="create_order")
        r("GET", "/fapi/v1/algoOrder", self._query_algo_order, endpoint="get_order_by_client_id")
        r("DELETE", "/fapi/v1/algoOrder", self._cancel_algo_order, endpoint="cancel_order")
        r("GET", "/fapi/v1/openAlgoOrders", self._open_algo_orders, endpoint="list_orders")
        r("DELETE", "/fapi/v1/algoOpenOrders", self._cancel_all_algo, endpoint="cancel_all_orders")
        r("GET", "/sapi/v1/capital/config/getall", self._coins, endpoint="networks")
        r("GET", "/sapi/v1/capital/deposit/address", self._deposit_address, endpoint="deposit_address")
        r("POST", "/sapi/v1/capital/withdraw/apply", self._withdraw, endpoint="create_withdrawal")
        r("GET", "/sapi/v1/capital/withdraw/history", self._withdraw_history, endpoint="list_withdrawals")
        r("POST", "/sapi/v1/asset/transfer", self._transfer, endpoint="balances")
        r("POST", "/sapi/v1/asset/get-funding-asset", self._funding_asset, endpoint="balances")
        r("GET", "/api/v3/account", self._spot_account, endpoint="balances")
        # ccxt's `binance` loads cross-margin pairs with the currencies (options.fetchMargins);
        # the simulated venue lends nothing, so the list is empty.
        r("GET", "/sapi/v1/margin/allPairs", lambda req, p: [], endpoint="networks")

    def _route(self, method: str, path: str, handler: Handler, *, signed: bool = True, endpoint: str) -> None:
        self._routes[(method, path)] = (handler, signed, endpoint)

    def __repr__(self) -> str:  # never shows the credentials
        return f"BinanceApi(venue={self.venue!r})"

    # ------------------------------------------------------------------ dispatch

    def handle(self, req: BinanceRequest) -> BinanceResponse:
        response = self._handle(req)
        self.request_log.append((req.method, req.path, 0 if response.drop else response.status))
        return response

    def _handle(self, req: BinanceRequest) -> BinanceResponse:
        route = self._routes.get((req.method, req.path))
        if route is None:
            if any(path == req.path for _, path in self._routes):
                return self._error(BinanceError(-1000, f"Method {req.method} not supported here.", 405))
            return self._error(BinanceError(-1000, f"No such endpoint: {req.method} {req.path}", 404))
        handler, signed, endpoint = route
        try:
            if signed:
                self._authenticate(req)
            params = req.params()
            params.pop("signature", None)
        except BinanceError as exc:
            return self._error(exc)
        decision = self.faults.decide(self.venue, endpoint)
        if decision.latency_s > 0:
            self._wait(decision.latency_s)
        fault = decision.response_fault
        if fault is not None and fault.kind == "error_5xx":
            return self._error(
                BinanceError(-1001, "Internal error; unable to process your request. Please try again.", fault.status)
            )
        if fault is not None and fault.kind == "error_4xx":  # a business refusal: nothing applied
            return self._error(BinanceError(_binance_reject_code(fault.code), fault.rejection_message(), fault.status))
        if fault is not None and fault.kind == "rate_limit":
            headers = {} if fault.retry_after is None else {"Retry-After": _seconds(fault.retry_after)}
            err = self._error(BinanceError(-1003, "Too many requests; current limit of IP is 2400 requests per minute.", 429))
            err.headers.update(headers)
            return err
        try:
            with self._wallet_lock, self.state._lock:  # noqa: SLF001 - landing and the handler see one state
                self._land_deposits()
                response = BinanceResponse(200, handler(req, params))
        except BinanceError as exc:
            response = self._error(exc)
        except SimError as exc:  # a rejection the handler did not translate
            response = self._error(BinanceError(-1000, exc.message, 400 if exc.status < 500 else exc.status))
        if fault is not None and fault.kind == "timeout_after_commit":
            return BinanceResponse(500, drop=True, hang_s=fault.hang_ms / 1000.0)
        return response

    @staticmethod
    def _error(exc: BinanceError) -> BinanceResponse:
        return BinanceResponse(exc.status, {"code": exc.code, "msg": exc.msg})

    def _authenticate(self, req: BinanceRequest) -> None:
        supplied = req.headers.get(API_KEY_HEADER.lower(), "")
        if not supplied:
            raise BinanceError(-2014, "API-key format invalid.", 401)
        if not hmac.compare_digest(supplied.encode(), self._api_key.encode()):
            raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        query, sig_q = _strip_signature(req.query)
        body, sig_b = _strip_signature(req.body)
        signature = sig_b or sig_q
        params = req.params()
        timestamp = params.get("timestamp")
        if not timestamp:
            raise _mandatory("timestamp")
        try:
            ts = int(timestamp)
            recv_window = int(params.get("recvWindow") or 5000)
        except ValueError:
            raise BinanceError(-1100, "Illegal characters found in parameter 'timestamp'; legal range is '^[0-9]{1,20}$'.")
        if recv_window <= 0 or recv_window > MAX_RECV_WINDOW_MS:
            raise BinanceError(-1130, "Data sent for parameter 'recvWindow' is not valid.")
        now_ms = _ms(self._clock())
        if ts >= now_ms + 1000 or now_ms - ts > recv_window:
            raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")
        if not signature:
            raise _mandatory("signature")
        expected = hmac.new(self._secret, (query + body).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise BinanceError(-1022, "Signature for this request is not valid.")

    # ------------------------------------------------------------------ symbols

    def _perps(self) -> list[str]:
        info = next(v for v in self.state.venue_info() if v["name"] == self.venue)
        return list(info["perps"])

    @staticmethod
    def market_id(symbol: str) -> str:
        base, rest = symbol.split("/", 1)
        return base + rest.split(":", 1)[0]

    def _symbol(self, market_id: str | None, *, required: bool = True) -> str | None:
        if not market_id:
            if required:
                raise _mandatory("symbol")
            return None
        for symbol in self._perps():
            if self.market_id(symbol) == market_id:
                return symbol
        raise BinanceError(-1121, "Invalid symbol.")

    def _step(self, symbol: str) -> str:
        return self._steps.get(symbol.split("/", 1)[0], "0.001")

    def _tick(self, symbol: str) -> str:
        return self._ticks.get(symbol.split("/", 1)[0], "0.01")

    # ------------------------------------------------------------------ public

    def _ping(self, req, p):
        return {}

    def _time(self, req, p):
        return {"serverTime": _ms(self._clock())}

    def _exchange_info(self, req, p):
        info = next(v for v in self.state.venue_info() if v["name"] == self.venue)
        symbols = []
        for symbol in info["perps"]:
            base, quote = symbol.split("/", 1)[0], symbol.split(":", 1)[1]
            step, tick = self._step(symbol), self._tick(symbol)
            symbols.append(
                {
                    "symbol": self.market_id(symbol),
                    "pair": self.market_id(symbol),
                    "contractType": "PERPETUAL",
                    "deliveryDate": 4133404800000,
                    "onboardDate": 1569398400000,
                    "status": "TRADING",
                    "maintMarginPercent": "2.5000",
                    "requiredMarginPercent": "5.0000",
                    "baseAsset": base,
                    "quoteAsset": quote,
                    "marginAsset": quote,
                    "pricePrecision": _decimals(tick),
                    "quantityPrecision": _decimals(step),
                    "baseAssetPrecision": 8,
                    "quotePrecision": 8,
                    "underlyingType": "COIN",
                    "underlyingSubType": [],
                    "triggerProtect": "0.0500",
                    "liquidationFee": "0.012500",
                    "marketTakeBound": "0.05",
                    "maxMoveOrderLimit": 10000,
                    "filters": [
                        {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "4529764", "tickSize": tick},
                        {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "1000000", "stepSize": step},
                        {"filterType": "MARKET_LOT_SIZE", "minQty": step, "maxQty": "1000000", "stepSize": step},
                        {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                        {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                        {"filterType": "MIN_NOTIONAL", "notional": _num(MIN_NOTIONAL)},
                        {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500", "multiplierDecimal": "4"},
                    ],
                    "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
                    "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": _ms(self._clock()),
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": a, "marginAvailable": True, "autoAssetExchange": "-10000"} for a in info["assets"]],
            "symbols": symbols,
        }

    def _premium_rows(self) -> list[dict[str, Any]]:
        tickers = {t["symbol"]: t for t in self.state.tickers(self.venue)}
        now = _ms(self._clock())
        return [
            {
                "symbol": self.market_id(rate.symbol),
                "markPrice": _num(rate.mark_price),
                "indexPrice": _num(tickers[rate.symbol]["index_price"]),
                "estimatedSettlePrice": _num(tickers[rate.symbol]["index_price"]),
                "lastFundingRate": _num(rate.rate),
                "interestRate": "0.00010000",
                "nextFundingTime": _ms(rate.next_funding_time),
                "time": now,
            }
            for rate in self.state.funding_rates(self.venue)
        ]

    def _premium_index(self, req, p):
        rows = self._premium_rows()
        symbol = self._symbol(p.get("symbol"), required=False)
        if symbol is None:
            return rows
        return next(row for row in rows if row["symbol"] == self.market_id(symbol))

    def _funding_info(self, req, p):
        # Binance lists only symbols whose funding settings were adjusted (e.g. a 4 h or 1 h
        # interval); every other perpetual funds every 8 h. The simulator does the same.
        return [
            {
                "symbol": self.market_id(rate.symbol),
                "adjustedFundingRateCap": "0.02000000",
                "adjustedFundingRateFloor": "-0.02000000",
                "fundingIntervalHours": int(rate.interval_hours) if float(rate.interval_hours).is_integer() else rate.interval_hours,
                "disclaimer": False,
            }
            for rate in self.state.funding_rates(self.venue)
            if rate.interval_hours != 8
        ]

    # ------------------------------------------------------------------ account

    def _leverage(self) -> tuple[float, float]:
        info = next(v for v in self.state.venue_info() if v["name"] == self.venue)
        spec = next(s for s in self.state._specs if s.name == self.venue)  # noqa: SLF001 - read-only spec
        return float(info["leverage"]), float(spec.maintenance_margin)

    def _account(self, req, p):
        balances = self.state.balances(self.venue)
        positions = self.state.positions(self.venue)
        leverage, mmr = self._leverage()
        now = _ms(self._clock())
        upnl: dict[str, float] = {}
        maint: dict[str, float] = {}
        pos_im: dict[str, float] = {}
        for pos in positions:
            settle = pos.symbol.split(":", 1)[1]
            upnl[settle] = upnl.get(settle, 0.0) + pos.unrealized_pnl
            maint[settle] = maint.get(settle, 0.0) + pos.notional * mmr
            pos_im[settle] = pos_im.get(settle, 0.0) + pos.size * pos.entry_price / leverage
        assets = []
        for asset, bal in balances.items():
            wallet = bal.total
            margin_balance = wallet + upnl.get(asset, 0.0)
            assets.append(
                {
                    "asset": asset,
                    "walletBalance": _num(wallet),
                    "unrealizedProfit": _num(upnl.get(asset, 0.0)),
                    "marginBalance": _num(margin_balance),
                    "maintMargin": _num(maint.get(asset, 0.0)),
                    "initialMargin": _num(bal.used),
                    "positionInitialMargin": _num(pos_im.get(asset, 0.0)),
                    "openOrderInitialMargin": _num(max(0.0, bal.used - pos_im.get(asset, 0.0))),
                    "crossWalletBalance": _num(wallet),
                    "crossUnPnl": _num(upnl.get(asset, 0.0)),
                    "availableBalance": _num(bal.free),
                    "maxWithdrawAmount": _num(bal.free),
                    "updateTime": now,
                }
            )
        usdt = balances.get("USDT")
        wallet_usdt = usdt.total if usdt else 0.0
        return {
            "totalInitialMargin": _num(usdt.used if usdt else 0.0),
            "totalMaintMargin": _num(maint.get("USDT", 0.0)),
            "totalWalletBalance": _num(wallet_usdt),
            "totalUnrealizedProfit": _num(upnl.get("USDT", 0.0)),
            "totalMarginBalance": _num(wallet_usdt + upnl.get("USDT", 0.0)),
            "totalPositionInitialMargin": _num(pos_im.get("USDT", 0.0)),
            "totalOpenOrderInitialMargin": _num(max(0.0, (usdt.used if usdt else 0.0) - pos_im.get("USDT", 0.0))),
            "totalCrossWalletBalance": _num(wallet_usdt),
            "totalCrossUnPnl": _num(upnl.get("USDT", 0.0)),
            "availableBalance": _num(usdt.free if usdt else 0.0),
            "maxWithdrawAmount": _num(usdt.free if usdt else 0.0),
            "assets": assets,
            "positions": [
                {
                    "symbol": self.market_id(pos.symbol),
                    "positionSide": "BOTH",
                    "positionAmt": _num(pos.signed_size),
                    "unrealizedProfit": _num(pos.unrealized_pnl),
                    "isolatedMargin": "0",
                    "notional": _num(pos.signed_size * pos.mark_price),
                    "isolatedWallet": "0",
                    "initialMargin": _num(pos.size * pos.entry_price / leverage),
                    "maintMargin": _num(pos.notional * mmr),
                    "updateTime": now,
                }
                for pos in positions
            ],
        }

    def _position_risk(self, req, p):
        symbol = self._symbol(p.get("symbol"), required=False)
        leverage, mmr = self._leverage()
        now = _ms(self._clock())
        rows = []
        for pos in self.state.positions(self.venue):
            if symbol is not None and pos.symbol != symbol:
                continue
            rows.append(
                {
                    "symbol": self.market_id(pos.symbol),
                    "positionSide": "BOTH",
                    "positionAmt": _num(pos.signed_size),
                    "entryPrice": _num(pos.entry_price),
                    "breakEvenPrice": _num(pos.entry_price),
                    "markPrice": _num(pos.mark_price),
                    "unRealizedProfit": _num(pos.unrealized_pnl),
                    "liquidationPrice": _num(pos.liquidation_price),
                    "isolatedMargin": "0",
                    "notional": _num(pos.signed_size * pos.mark_price),
                    "marginAsset": pos.symbol.split(":", 1)[1],
                    "isolatedWallet": "0",
                    "initialMargin": _num(pos.size * pos.entry_price / leverage),
                    "maintMargin": _num(pos.notional * mmr),
                    "positionInitialMargin": _num(pos.size * pos.entry_price / leverage),
                    "openOrderInitialMargin": "0",
                    "adl": 1,
                    "bidNotional": "0",
                    "askNotional": "0",
                    "updateTime": now,
                }
            )
        return rows

    def _position_side_dual(self, req, p):
        return {"dualSidePosition": False}  # one-way mode, the only mode the simulator models

    def _leverage_bracket(self, req, p):
        symbol = self._symbol(p.get("symbol"), required=False)
        leverage, mmr = self._leverage()
        rows = [
            {
                "symbol": self.market_id(s),
                "notionalCoef": 1.0,
                "brackets": [
                    {
                        "bracket": 1,
                        "initialLeverage": int(leverage),
                        "notionalCap": 1_000_000_000,
                        "notionalFloor": 0,
                        "maintMarginRatio": mmr,
                        "cum": 0.0,
                    }
                ],
            }
            for s in self._perps()
            if symbol is None or s == symbol
        ]
        return rows[0] if symbol is not None else rows

    # ------------------------------------------------------------------ orders

    def _order_id(self, order: Order) -> int:
        return ORDER_ID_BASE + int(order.id.rsplit("-", 1)[1])

    def _sim_order_id(self, raw: str) -> str:
        try:
            number = int(raw) - ORDER_ID_BASE
        except ValueError:
            raise BinanceError(-1100, "Illegal characters found in parameter 'orderId'; legal range is '^[0-9]{1,20}$'.")
        return f"{self.venue}-{number}"

    def _order_json(self, order: Order, *, created: bool = False, resp_type: str = "RESULT") -> dict[str, Any]:
        with self._lock:
            cid = self._public_cid.get(order.client_order_id or "", order.client_order_id)
        binance_type = {"market": "MARKET", "limit": "LIMIT", "stop_market": "STOP_MARKET"}[order.type]
        status = _ORDER_STATUS[order.status]
        body = {
            "orderId": self._order_id(order),
            "symbol": self.market_id(order.symbol),
            "status": status,
            "clientOrderId": cid,
            "price": _num(order.price) if order.price is not None else "0",
            "avgPrice": _num(order.average) if order.average is not None else "0.00",
            "origQty": _num(order.amount),
            "executedQty": _num(order.filled),
            "cumQuote": _num(order.filled * (order.average or 0.0)),
            "timeInForce": "GTC",
            "type": binance_type,
            "reduceOnly": order.reduce_only,
            "closePosition": False,
            "side": order.side.upper(),
            "positionSide": "BOTH",
            "stopPrice": _num(order.stop_price) if order.stop_price is not None else "0",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": binance_type,
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0,
            "updateTime": _ms(self._clock()),
        }
        if created:
            body["cumQty"] = body["executedQty"]
            if resp_type == "ACK":
                keep = {"orderId", "symbol", "status", "clientOrderId", "price", "origQty", "type", "side", "reduceOnly", "updateTime"}
                body = {k: v for k, v in body.items() if k in keep}
                body["status"] = "NEW"
        else:
            body["time"] = _ms(order.received_at)
        return body

    def _new_order(self, req: BinanceRequest, p: dict[str, str]):
        symbol = self._symbol(p.get("symbol"))
        side = _side(p)
        order_type = p.get("type")
        if not order_type:
            raise _mandatory("type")
        if order_type in {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}:
            raise BinanceError(-4120, "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.")
        if order_type not in {"MARKET", "LIMIT"}:
            raise BinanceError(-1116, "Invalid orderType.")
        if p.get("positionSide", "BOTH") != "BOTH":
            raise BinanceError(-4061, "Order's position side does not match user's setting.")
        raw_qty = p.get("quantity")
        if not raw_qty:
            raise _mandatory("quantity")
        try:
            quantity = float(raw_qty)
        except ValueError:
            raise BinanceError(-1100, "Illegal characters found in parameter 'quantity'; legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.")
        if not math.isfinite(quantity) or quantity <= 0:
            raise BinanceError(-4003, "Quantity less than or equal to zero.")
        if not _is_multiple(quantity, self._step(symbol)):
            raise BinanceError(-1111, "Precision is over the maximum defined for this asset.")
        price = None
        if order_type == "LIMIT":
            if not p.get("price"):
                raise _mandatory("price")
            if not p.get("timeInForce"):
                raise _mandatory("timeInForce")
            if p["timeInForce"] != "GTC":
                raise BinanceError(-1115, "Invalid timeInForce.")
            price = float(p["price"])
            if price <= 0:
                raise BinanceError(-4001, "Price less than 0.")
            if not _is_multiple(price, self._tick(symbol)):
                raise BinanceError(-4014, "Price not increased by tick size.")
        reduce_only = p.get("reduceOnly", "false").lower() == "true"
        cid = self._client_id(p, "newClientOrderId")
        mark = self.state.mark_prices(self.venue)[symbol]
        if not reduce_only and quantity * (price or mark) < MIN_NOTIONAL:
            raise BinanceError(-4164, f"Order's notional must be no smaller than {_num(MIN_NOTIONAL)} (unless you choose reduce only).")
        order = self._place_order(
            req,
            cid,
            symbol=symbol,
            type=order_type.lower(),
            side=side.lower(),
            amount=quantity,
            price=price,
            reduce_only=reduce_only,
        )
        return self._order_json(order, created=True, resp_type=p.get("newOrderRespType", "ACK"))

    def _client_id(self, p: dict[str, str], param: str) -> str:
        """The client order id sent in `param`, or a generated one; -4015 when it is not valid."""
        cid = p.get(param) or f"sim-{next(self._alias_seq)}-{int(self._clock() * 1000)}"
        if len(cid) > 36 or not all(c.isalnum() or c in ".:/_-" for c in cid):
            raise BinanceError(-4015, "Client order id is not valid.")
        return cid

    def _place_order(self, req: BinanceRequest, cid: str, **order: Any) -> Order:
        """Place an order under `cid` (regular or algo); a rejected order frees the id again."""
        state_cid = self._claim_client_id(cid)
        try:
            placed, _ = self.state.place_order(self.venue, client_order_id=state_cid, received_at=req.received_at, **order)
        except SimError as exc:
            self._release_client_id(cid, state_cid)
            raise self._order_rejection(exc) from None
        return placed

    def _claim_client_id(self, cid: str) -> str:
        """The state's client id for a new order sent with `cid` (-4116 while an order with it is open)."""
        with self._lock:
            history = [h for h in self._cid_history.get(cid, []) if self._state_order(h) is not None]
            if not history and self._state_order(cid) is not None:
                history = [cid]  # placed through the native API with this id
            if history:
                if self._state_order(history[-1]).status == "open":
                    raise BinanceError(-4116, "ClientOrderId is duplicated.")
                state_cid = f"{cid}~{next(self._alias_seq)}"
            else:
                state_cid = cid
            self._cid_history[cid] = history + [state_cid]
            self._public_cid[state_cid] = cid
            return state_cid

    def _state_order(self, state_cid: str) -> Order | None:
        try:
            return self.state.order_by_client_id(self.venue, state_cid)
        except SimError:
            return None

    def reset(self) -> None:
        """Forget client-id aliases, transfers and the spot/funding/margin wallets (call with `ExchangeState.reset()`)."""
        with self._lock:
            self._public_cid.clear()
            self._cid_history.clear()
            self._transfers.clear()
            self.request_log.clear()
        with self._wallet_lock:
            for wallet in self._wallets.values():
                wallet.clear()
            self._landed = self._arrivals()

    @property
    def deposit_wallet(self) -> str:
        """Where arriving withdrawals are credited: "MAIN" (spot, as Binance), "FUNDING" or "UMFUTURE" (the default)."""
        return self._deposit_wallet

    @deposit_wallet.setter
    def deposit_wallet(self, value: str) -> None:
        if value not in DEPOSIT_WALLETS:
            raise ValueError(f"deposit_wallet must be one of {DEPOSIT_WALLETS}, got {value!r}")
        with self._wallet_lock, self.state._lock:  # noqa: SLF001
            self._deposit_wallet = value
            self._landed = self._arrivals()  # what arrived before stays where it is; only later arrivals move

    def _arrivals(self) -> set[tuple[str, float | None]]:
        """Withdrawals from any simulated venue that completed into this venue (the state credited its futures wallet)."""
        found = set()
        for name in self.state.venue_names():
            for w in self.state.withdrawals(name):
                if w.to_venue == self.venue and w.status == "completed":
                    found.add((w.id, w.created_at))
        return found

    def _land_deposits(self) -> None:
        """Move every new arrival from the futures account to the deposit wallet (spot, as Binance credits deposits)."""
        if self.deposit_wallet == FUTURES_WALLET:
            return
        with self._wallet_lock, self.state._lock:  # noqa: SLF001
            for name in self.state.venue_names():
                for w in self.state.withdrawals(name):
                    key = (w.id, w.created_at)
                    if w.to_venue != self.venue or w.status != "completed" or key in self._landed:
                        continue
                    try:
                        self.state.credit(self.venue, w.asset, -w.amount)
                    except SimError:  # the futures account spent it already (margin): try again on the next request
                        log.warning("%s: deposit %s of %s %s not movable to %s yet", self.venue, w.id, w.amount,
                                    w.asset, self.deposit_wallet)
                        continue
                    wallet = self._wallets[self.deposit_wallet]
                    wallet[w.asset] = wallet.get(w.asset, 0.0) + w.amount
                    self._landed.add(key)

    def _release_client_id(self, cid: str, state_cid: str) -> None:
        with self._lock:
            history = self._cid_history.get(cid, [])
            if history and history[-1] == state_cid:
                history.pop()
            if not history:
                self._cid_history.pop(cid, None)
            self._public_cid.pop(state_cid, None)

    @staticmethod
    def _order_rejection(exc: SimError) -> BinanceError:
        return {
            "unknown_symbol": BinanceError(-1121, "Invalid symbol."),
            "reduce_only_would_increase": BinanceError(-2022, "ReduceOnly Order is rejected."),
            "insufficient_margin": BinanceError(-2019, "Margin is insufficient."),
            "insufficient_funds": BinanceError(-2019, "Margin is insufficient."),
            "would_immediately_trigger": BinanceError(-2021, "Order would immediately trigger."),
        }.get(exc.code, BinanceError(-1000, exc.message))

    def _find_order(self, p: dict[str, str]) -> Order:
        symbol = self._symbol(p.get("symbol"))
        order: Order | None = None
        if p.get("orderId"):
            try:
                order = self.state.order(self.venue, self._sim_order_id(p["orderId"]))
            except SimError:
                order = None
        elif p.get("origClientOrderId"):
            cid = p["origClientOrderId"]
            with self._lock:
                history = list(self._cid_history.get(cid, [cid]))
            try:
                order = self.state.order_by_client_id(self.venue, history[-1])
            except SimError:
                order = None
        else:
            raise BinanceError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        if order is None or order.symbol != symbol or order.type == "stop_market":
            raise BinanceError(-2013, "Order does not exist.")
        return order

    def _query_order(self, req, p):
        return self._order_json(self._find_order(p))

    @staticmethod
    def _open_for_cancel(find, p):
        """The order `find(p)` names, as cancel endpoints see it: unknown or final → -2011."""
        try:
            order = find(p)
        except BinanceError as exc:
            if exc.code == -2013:
                raise BinanceError(-2011, "Unknown order sent.") from None
            raise
        if order.status != "open":
            raise BinanceError(-2011, "Unknown order sent.")
        return order

    def _cancel_order(self, req, p):
        order = self._open_for_cancel(self._find_order, p)
        return self._order_json(self.state.cancel_order(self.venue, order.id))

    def _open_orders(self, req, p):
        symbol = self._symbol(p.get("symbol"), required=False)
        return [
            self._order_json(o)
            for o in self.state.orders(self.venue, status="open", symbol=symbol)
            if o.type != "stop_market"
        ]

    def _cancel_all(self, req, p):
        symbol = self._symbol(p.get("symbol"))
        for order in self.state.orders(self.venue, status="open", symbol=symbol):
            if order.type != "stop_market":
                self.state.cancel_order(self.venue, order.id)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    # ------------------------------------------------------------------ conditional (algo) orders

    def _algo_id(self, order: Order) -> int:
        return ALGO_ID_BASE + int(order.id.rsplit("-", 1)[1])

    def _algo_json(self, order: Order) -> dict[str, Any]:
        with self._lock:
            cid = self._public_cid.get(order.client_order_id or "", order.client_order_id)
        return {
            "algoId": self._algo_id(order),
            "clientAlgoId": cid,
            "algoType": "CONDITIONAL",
            "orderType": "STOP_MARKET",
            "symbol": self.market_id(order.symbol),
            "side": order.side.upper(),
            "positionSide": "BOTH",
            "timeInForce": "GTC",
            "quantity": _num(order.amount),
            "algoStatus": _ALGO_STATUS[order.status],
            "triggerPrice": _num(order.stop_price),
            "price": "0",
            "icebergQuantity": None,
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": "MARK_PRICE",
            "priceMatch": "NONE",
            "closePosition": False,
            "priceProtect": False,
            "reduceOnly": order.reduce_only,
            "createTime": _ms(order.received_at),
            "updateTime": _ms(self._clock()),
            "triggerTime": 0,
            "goodTillDate": 0,
        }

    def _new_algo_order(self, req: BinanceRequest, p: dict[str, str]):
        if p.get("algoType") != "CONDITIONAL":
            raise BinanceError(-1130, "Data sent for parameter 'algoType' is not valid.") if p.get("algoType") else _mandatory("algoType")
        symbol = self._symbol(p.get("symbol"))
        side = _side(p)
        order_type = p.get("type")
        if not order_type:
            raise _mandatory("type")
        if order_type != "STOP_MARKET":
            raise BinanceError(-1116, "Invalid orderType.")
        if p.get("positionSide", "BOTH") != "BOTH":
            raise BinanceError(-4061, "Order's position side does not match user's setting.")
        if p.get("closePosition", "false").lower() == "true":
            raise BinanceError(-1106, "Parameter 'closePosition' sent when not required.")
        for name in ("quantity", "triggerPrice"):
            if not p.get(name):
                raise _mandatory(name)
        quantity, trigger = float(p["quantity"]), float(p["triggerPrice"])
        if not math.isfinite(quantity) or quantity <= 0:
            raise BinanceError(-4003, "Quantity less than or equal to zero.")
        if not _is_multiple(quantity, self._step(symbol)):
            raise BinanceError(-1111, "Precision is over the maximum defined for this asset.")
        if trigger <= 0:
            raise BinanceError(-4006, "Stop price less than zero.")
        if not _is_multiple(trigger, self._tick(symbol)):
            raise BinanceError(-4014, "Price not increased by tick size.")
        reduce_only = p.get("reduceOnly", "false").lower() == "true"
        cid = self._client_id(p, "clientAlgoId")
        order = self._place_order(
            req,
            cid,
            symbol=symbol,
            type="stop_market",
            side=side.lower(),
            amount=quantity,
            stop_price=trigger,
            reduce_only=reduce_only,
        )
        return self._algo_json(order)

    def _find_algo_order(self, p: dict[str, str]) -> Order:
        order: Order | None = None
        if p.get("algoId"):
            try:
                number = int(p["algoId"]) - ALGO_ID_BASE
                order = self.state.order(self.venue, f"{self.venue}-{number}")
            except (ValueError, SimError):
                order = None
        elif p.get("clientAlgoId"):
            with self._lock:
                history = list(self._cid_history.get(p["clientAlgoId"], [p["clientAlgoId"]]))
            try:
                order = self.state.order_by_client_id(self.venue, history[-1])
            except SimError:
                order = None
        else:
            raise BinanceError(-1102, "Param 'clientAlgoId' or 'algoId' must be sent, but both were empty/null!")
        if order is None or order.type != "stop_market":
            raise BinanceError(-2013, "Order does not exist.")
        return order

    def _query_algo_order(self, req, p):
        return self._algo_json(self._find_algo_order(p))

    def _cancel_algo_order(self, req, p):
        order = self._open_for_cancel(self._find_algo_order, p)
        order = self.state.cancel_order(self.venue, order.id)
        body = self._algo_json(order)
        return {"algoId": body["algoId"], "clientAlgoId": body["clientAlgoId"], "code": "200", "msg": "success"}

    def _open_algo_orders(self, req, p):
        symbol = self._symbol(p.get("symbol"), required=False)
        return [
            self._algo_json(o)
            for o in self.state.orders(self.venue, status="open", symbol=symbol)
            if o.type == "stop_market"
        ]

    def _cancel_all_algo(self, req, p):
        symbol = self._symbol(p.get("symbol"))
        for order in self.state.orders(self.venue, status="open", symbol=symbol):
            if order.type == "stop_market":
                self.state.cancel_order(self.venue, order.id)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    # ------------------------------------------------------------------ wallet (sapi)

    def _coins(self, req, p):
        balances = self.state.balances(self.venue)
        rails = self.state.networks(self.venue)
        assets = sorted(set(balances) | {r.asset for r in rails})
        coins = []
        for asset in assets:
            bal = balances.get(asset)
            networks = [r for r in rails if r.asset == asset and r.network in NETWORK_IDS]
            pending = sum(w.amount + w.fee for w in self.state.withdrawals(self.venue) if w.asset == asset and w.status == "pending")
            coins.append(
                {
                    "coin": asset,
                    "depositAllEnable": True,
                    "withdrawAllEnable": bool(networks),
                    "name": asset,
                    "free": _num(bal.free if bal else 0.0),
                    "locked": _num(max(0.0, (bal.used if bal else 0.0) - pending)),
                    "freeze": "0",
                    "withdrawing": _num(pending),
                    "ipoing": "0",
                    "ipoable": "0",
                    "storage": "0",
                    "isLegalMoney": asset in _FIAT,
                    "trading": True,
                    "networkList": [
                        {
                            "network": NETWORK_IDS[rail.network],
                            "coin": asset,
                            "withdrawIntegerMultiple": "0.00000001",
                            "isDefault": i == 0,
                            "depositEnable": True,
                            "withdrawEnable": True,
                            "depositDesc": "",
                            "withdrawDesc": "",
                            "specialTips": "",
                            "specialWithdrawTips": "",
                            "name": NETWORK_NAMES.get(NETWORK_IDS[rail.network], rail.network),
                            "resetAddressStatus": False,
                            "addressRegex": "",
                            "addressRule": "",
                            "memoRegex": "",
                            "withdrawFee": _num(rail.fee),
                            "withdrawMin": _num(rail.min_amount),
                            "withdrawMax": "9999999999",
                            "depositDust": "0.00000001",
                            "minConfirm": 1,
                            "unLockConfirm": 0,
                            "sameAddress": False,
                            "estimatedArrivalTime": _num(rail.eta_seconds / 60.0, 4),
                            "busy": False,
                            "contractAddressUrl": "",
                            "contractAddress": "",
                        }
                        for i, rail in enumerate(networks)
                    ],
                }
            )
        return coins

    @staticmethod
    def _network_name(network_id: str | None) -> str | None:
        if network_id is None:
            return None
        for name, nid in NETWORK_IDS.items():
            if nid == network_id:
                return name
        return network_id

    def _deposit_address(self, req, p):
        coin = p.get("coin")
        if not coin:
            raise _mandatory("coin")
        network = self._network_name(p.get("network"))
        if network is None:
            rails = [r for r in self.state.networks(self.venue) if r.asset == coin and r.network in NETWORK_IDS]
            if not rails:
                raise BinanceError(-4018, "We don't have this asset.")
            network = rails[0].network
        try:
            address = self.state.deposit_address(self.venue, coin, network)
        except SimError:
            raise BinanceError(-1130, "Data sent for parameter 'network' is not valid.") from None
        return {"address": address.address, "coin": coin, "tag": address.tag or "", "url": ""}

    def _withdraw(self, req, p):
        for name in ("coin", "address", "amount"):
            if not p.get(name):
                raise _mandatory(name)
        coin = p["coin"]
        network = self._network_name(p.get("network"))
        if network is None:
            rails = [r for r in self.state.networks(self.venue) if r.asset == coin and r.network in NETWORK_IDS]
            network = rails[0].network if rails else "?"
        try:
            amount = float(p["amount"])
        except ValueError:
            raise BinanceError(-1100, "Illegal characters found in parameter 'amount'.")
        try:
            source = _WITHDRAW_WALLETS[int(p.get("walletType") or 0)]
        except (KeyError, ValueError):
            raise BinanceError(-1130, "Data sent for parameter 'walletType' is not valid.") from None
        # Binance does not document withdrawOrderId as an idempotency key; the simulator's state
        # returns the first withdrawal for a known key. Clients must look up, never resend blind.
        key = p.get("withdrawOrderId") or f"binance-api-{next(self._tran_ids)}"
        rail = next((r for r in self.state.networks(self.venue) if r.asset == coin and r.network == network), None)
        # What leaves the paying wallet: amount (Binance deducts the fee from it) or amount + fee.
        leaves = amount if self.withdrawal_fee == "deducted" else amount + (rail.fee if rail else 0.0)
        with self._wallet_lock, self.state._lock:  # noqa: SLF001 - the move below must be atomic with the withdrawal
            wallet = self._wallets[source]
            known = self._known_withdrawal(key)
            if known is None and rail is not None and amount >= rail.min_amount and leaves > wallet.get(coin, 0.0) + 1e-12:
                raise BinanceError(-4026, "You have insufficient balance.")
            # The state pays withdrawals out of the venue's one wallet: the amount is moved there from the paying
            # wallet for the call, and back if the state refuses. A known key moves nothing (its first withdrawal).
            if known is None and leaves > 0:
                self.state.credit(self.venue, coin, leaves)
            try:
                withdrawal, created = self.state.withdraw(
                    self.venue,
                    asset=coin,
                    amount=amount,
                    address=p["address"],
                    network=network,
                    idempotency_key=key,
                    tag=p.get("addressTag") or None,
                    fee_deducted=self.withdrawal_fee == "deducted",
                )
            except SimError as exc:
                if known is None and leaves > 0:
                    self.state.credit(self.venue, coin, -leaves)
                raise {
                    "insufficient_funds": BinanceError(-4026, "You have insufficient balance."),
                    "below_min_amount": BinanceError(-4022, f"Not less than the minimum pick-up quantity. {exc.message}"),
                    "unsupported_network": BinanceError(-4019, "Current asset is not open for withdrawal."),
                    "address_mismatch": BinanceError(-4007, "Address validation is not passed."),
                }.get(exc.code, BinanceError(-1102, exc.message)) from None
            if created:
                wallet[coin] = wallet.get(coin, 0.0) - leaves
            elif known is None and leaves > 0:
                self.state.credit(self.venue, coin, -leaves)
        return {"id": withdrawal.id}

    def _known_withdrawal(self, key: str) -> Withdrawal | None:
        try:
            return self.state.withdrawal_by_key(self.venue, key)
        except SimError:
            return None

    def _withdraw_history(self, req, p):
        coin = p.get("coin")
        key = p.get("withdrawOrderId")
        start = int(p["startTime"]) / 1000 if p.get("startTime") else None
        end = int(p["endTime"]) / 1000 if p.get("endTime") else None
        rows = []
        for w in reversed(self.state.withdrawals(self.venue)):  # newest first, like Binance
            if coin and w.asset != coin:
                continue
            if key and w.idempotency_key != key:
                continue
            if start is not None and (w.created_at or 0) < start:
                continue
            if end is not None and (w.created_at or 0) > end:
                continue
            rows.append(self._withdrawal_json(w))
        limit = int(p.get("limit") or 1000)
        offset = int(p.get("offset") or 0)
        return rows[offset : offset + limit]

    def _withdrawal_json(self, w: Withdrawal) -> dict[str, Any]:
        row = {
            "id": w.id,
            "amount": _num(w.amount),
            "transactionFee": _num(w.fee),
            "coin": w.asset,
            "status": _WITHDRAW_STATUS[w.status],
            "address": w.address,
            "applyTime": datetime.fromtimestamp(w.created_at or 0, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            "network": NETWORK_IDS.get(w.network, w.network),
            "transferType": 0,
            "info": "",
            "confirmNo": 1 if w.status == "completed" else 0,
            "walletType": 0,
            "txKey": "",
        }
        if not w.idempotency_key.startswith("binance-api-"):
            row["withdrawOrderId"] = w.idempotency_key
        if w.status in {"broadcast", "completed"}:
            row["txId"] = "0x" + hashlib.sha256(w.id.encode()).hexdigest()
        if w.status == "completed" and w.arrives_at:
            row["completeTime"] = datetime.fromtimestamp(w.arrives_at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        return row

    def _transfer(self, req, p):
        for name in ("type", "asset", "amount"):
            if not p.get(name):
                raise _mandatory(name)
        if p["type"] not in _TRANSFER_TYPES:
            raise BinanceError(-1130, "Data sent for parameter 'type' is not valid.")
        try:
            amount = float(p["amount"])
        except ValueError:
            raise BinanceError(-1100, "Illegal characters found in parameter 'amount'.") from None
        asset = p["asset"]
        source, target = p["type"].split("_", 1)
        insufficient = BinanceError(-5013, "Asset transfer failed: insufficient balance")
        if not math.isfinite(amount) or amount <= 0:
            raise insufficient
        with self._wallet_lock, self.state._lock:  # noqa: SLF001 - debit and credit in one step
            if source == FUTURES_WALLET:
                try:
                    self.state.credit(self.venue, asset, -amount)  # refuses more than the futures account's free
                except SimError:
                    raise insufficient from None
            else:
                held = self._wallets[source].get(asset, 0.0)
                if amount > held + 1e-12:
                    raise insufficient
                self._wallets[source][asset] = held - amount
            if target == FUTURES_WALLET:
                self.state.credit(self.venue, asset, amount)
            else:
                self._wallets[target][asset] = self._wallets[target].get(asset, 0.0) + amount
        with self._lock:
            tran_id = next(self._tran_ids)
            self._transfers.append({"tranId": tran_id, "type": p["type"], "asset": asset, "amount": amount})
        return {"tranId": tran_id}

    def transfers(self) -> list[dict[str, Any]]:
        """Internal transfers applied so far."""
        with self._lock:
            return list(self._transfers)

    def wallet(self, name: str) -> dict[str, float]:
        """A copy of the spot (`MAIN`), `FUNDING` or `MARGIN` wallet (the futures account is the state's)."""
        with self._wallet_lock:
            return {asset: amount for asset, amount in self._wallets[name].items() if amount}

    def _wallet_rows(self, name: str) -> list[tuple[str, float]]:
        with self._wallet_lock:
            return sorted((asset, amount) for asset, amount in self._wallets[name].items() if amount > 0)

    def _spot_account(self, req, p):
        rows = [{"asset": asset, "free": _num(amount), "locked": _num(0.0)} for asset, amount in self._wallet_rows("MAIN")]
        return {"makerCommission": 10, "takerCommission": 10, "canTrade": True, "canWithdraw": True, "canDeposit": True,
                "updateTime": _ms(self._clock()), "accountType": "SPOT", "balances": rows, "permissions": ["SPOT"]}

    def _funding_asset(self, req, p):
        coin = p.get("asset")
        return [{"asset": asset, "free": _num(amount), "locked": "0", "freeze": "0", "withdrawing": "0",
                 "btcValuation": "0"} for asset, amount in self._wallet_rows("FUNDING") if coin in (None, asset)]


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# ---------------------------------------------------------------------------- HTTP


class _Handler(KeepAliveHandler):
    server_version = "arb-binance-sim/1"

    server: "BinanceApiServer"

    def _serve(self, method: str) -> None:
        received_at = time.time()
        parsed = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = BinanceRequest(method, parsed.path.rstrip("/") or "/", parsed.query, body, headers, received_at)
        response = self.server.api.handle(request)
        if response.drop:
            self._drop(response.hang_s)
            return
        payload = json.dumps(response.body).encode()
        self._send_json(response.status, payload, response.headers, "application/json;charset=UTF-8")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # The request line carries the signature and, for GETs, every parameter: DEBUG only,
        # never the headers (X-MBX-APIKEY).
        log.debug("%s " + format, self.address_string(), *args)


class BinanceApiServer(LoopbackHTTPServer):
    """Serves a `BinanceApi` on loopback; `start()` returns the base URL."""

    def __init__(self, api: BinanceApi, host: str = "127.0.0.1", port: int = 0):
        self.api = api
        self._thread: threading.Thread | None = None
        super().__init__((host, port), _Handler)
        bound_host, bound_port = self.server_address[:2]
        self.url = f"http://{bound_host}:{bound_port}"

    def start(self) -> str:
        self.stopping.clear()
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.1}, name="binance-sim-http", daemon=True
        )
        self._thread.start()
        log.info("Binance-shaped API for venue %s on %s", self.api.venue, self.url)
        return self.url

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.close_connections()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "BinanceApiServer":
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def ccxt_api_urls(self, template: Mapping[str, str]) -> dict[str, str]:
        """Every entry of a ccxt `urls['api']` pointed at this server, paths kept."""
        return {key: self.url + urlsplit(value).path for key, value in template.items() if isinstance(value, str)}


def serve_binance_venue(
    sim,
    *,
    venue: str = "binance",
    api_key: str,
    secret: str,
    host: str = "127.0.0.1",
    port: int = 0,
    **options: Any,
) -> BinanceApiServer:
    """Start a Binance-shaped API over `sim` (an `ExchangeSimulator`): same state, same fault rules."""
    server = BinanceApiServer(BinanceApi(sim.state, sim.faults, venue=venue, api_key=api_key, secret=secret, **options), host, port)
    server.start()
    return server
