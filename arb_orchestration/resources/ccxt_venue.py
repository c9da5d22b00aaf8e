"""Real trading venues through ccxt's unified API: `CcxtVenueClient` and `CcxtExchangeResource`.

One `CcxtVenueClient` is one exchange account behind one (unmodified) ccxt
exchange class, e.g. `binanceusdm` for Binance USDⓈ-M perpetuals. It follows
the platform's resource policy exactly like the simulator client:

* every call runs through `ResilientCaller` with the process-wide breaker
  `venue:<name>`; ccxt's exceptions are mapped onto the error taxonomy
  (`classify_ccxt_error`): rate limits, network errors and timeouts are
  transient; a timeout, dropped connection or 5xx on an order or withdrawal
  is an *ambiguous outcome*; rejections (insufficient funds, invalid order,
  bad request, authentication) are business errors;
* orders carry the caller's client order id (`newClientOrderId` on Binance,
  `clientOrderId` elsewhere; ccxt passes it on) and withdrawals the caller's
  idempotency key (`withdrawOrderId` on Binance). **Nothing is ever resent
  blind**: before sending, and after an ambiguous outcome, the client looks
  the order up by its client order id (ccxt's manual: the outcome of a
  timed-out `create_order` is unknown). That lookup is not optional on real
  venues: Binance keeps client order ids unique among *open* orders only, so
  resending the id of a filled market order places a second order;
* ccxt is imported lazily, in the first call: loading the code location
  stays fast and opens no connection. Markets are loaded once per client.

Credentials reach the resource as `EnvVar` and live only in the ccxt
instance; ccxt's own DEBUG log lines (which carry the request headers) go to
`arb_orchestration.ccxt.<venue>` through a filter that blanks every credential
and request signature.

`CcxtExchangeResource` is the `exchange` resource when `EXCHANGE_BACKEND=ccxt`;
`ccxt_exchange_from_env` builds it from `EXCHANGE_VENUES`, `CCXT_VENUES` and
`CCXT_<VENUE>_API_KEY`/`_SECRET`/`_PASSWORD` (see docs/real-venues.md).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Mapping, TypeVar
from urllib.parse import urlsplit

from dagster import Config, EnvVar
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StrictBool, ValidationError

from arb_orchestration import settings
from arb_orchestration.domain.models import (
    Balance,
    DepositAddress,
    FundingRate,
    NetworkFee,
    Order,
    OrderType,
    Position,
    Side,
    Withdrawal,
)
from arb_orchestration.domain.rebalance import wise_reference_problem
from arb_orchestration.resources.errors import (
    AmbiguousOutcomeError,
    BusinessError,
    ExternalServiceError,
    NotFoundError,
    TransientError,
)
from arb_orchestration.resources.resilience import CircuitBreaker, ResilientCaller, RetrySettings, breaker_for
from arb_orchestration.resources.venue import (
    ExchangeResource,
    UnknownVenueError,  # re-exported: callers import it from this module too
    VenueClient,
    require_client_order_id,
    require_withdrawal_key,
)

T = TypeVar("T")
log = logging.getLogger("arb_orchestration.resources.ccxt_venue")

# ---------------------------------------------------------------------------- per-exchange facts

# Position mode (docs/ccxt-conformance.md § 2a). The client sends one-way orders only; a hedge-mode account rejects
# them. Where ccxt can read the mode, the client reads it (cached) and refuses to place orders on a hedge account.
POSITION_MODES = ("one_way", "hedge", "unknown")
POSITION_MODE_TTL_SECONDS = 600.0  # an account's mode rarely changes
POSITION_MODE_UNKNOWN_TTL_SECONDS = 60.0  # a failed read is asked again sooner, never blocking an order
# What to change on the exchange, per ccxt class, for a venue found in hedge mode.
ONE_WAY_SETTING = {
    "binanceusdm": "set Binance USDⓈ-M Futures to One-way Mode (Preferences > Position Mode; "
                   "API: POST /fapi/v1/positionSide/dual dualSidePosition=false)",
    "okx": "set the OKX account's position mode to One-way / net mode (Settings > Position mode; "
           "API: POST /api/v5/account/set-position-mode posMode=net_mode)",
    "bybit": "set Bybit's position mode to One-Way Mode for the USDT/USDC perpetuals "
             "(API: POST /v5/position/switch-mode mode=0)",
}


# The desk's venue names and the ccxt class of their perpetual-futures account.
DEFAULT_EXCHANGE_IDS = {
    "binance": "binanceusdm",
    "bybit": "bybit",
    "okx": "okx",
    "kraken": "krakenfutures",
    "hyperliquid": "hyperliquid",
}

# Funding interval each exchange documents for its perpetuals, used when neither the
# funding-rate answer nor the exchange's interval endpoint gives one (Binance's premium
# index carries no interval; its fundingInfo lists only the symbols that deviate from 8 h).
DOCUMENTED_FUNDING_INTERVAL_HOURS = {
    "binance": 8.0,
    "binanceusdm": 8.0,
    "bybit": 8.0,
    "okx": 8.0,
    "bitget": 8.0,
    "gate": 8.0,
    "kucoinfutures": 8.0,
    "krakenfutures": 1.0,  # Kraken: funding accrues and settles every hour (ccxt reports "1h")
    "hyperliquid": 1.0,
}

# The request parameter that carries our client order id (ccxt also understands
# `clientOrderId` and maps it itself; these are the names in each exchange's docs).
# Kraken Futures (`cliOrdId`) and Hyperliquid (`c`, the cloid) take ccxt's `clientOrderId`.
CLIENT_ORDER_ID_PARAMS = {"binance": "newClientOrderId", "binanceusdm": "newClientOrderId", "bybit": "orderLinkId", "okx": "clOrdId"}

# What each exchange accepts as a client order id; anything else is mapped to a stable hash.
CLIENT_ORDER_ID_RULES = {
    "binance": re.compile(r"^[.A-Za-z0-9:/_-]{1,36}$"),
    "binanceusdm": re.compile(r"^[.A-Za-z0-9:/_-]{1,36}$"),
    "bybit": re.compile(r"^[A-Za-z0-9_-]{1,36}$"),
    "okx": re.compile(r"^[A-Za-z0-9]{1,32}$"),
    # A cloid is a 128-bit hex string with its 0x prefix (Hyperliquid's exchange endpoint; ccxt passes it as is).
    "hyperliquid": re.compile(r"^0x[0-9a-f]{32}$"),
}
_DEFAULT_CLIENT_ORDER_ID_RULE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

# The withdrawal parameter that carries our idempotency key, and lets us look it up again.
WITHDRAW_CLIENT_ID_PARAMS = {"binance": "withdrawOrderId", "binanceusdm": "withdrawOrderId", "okx": "clientId"}

# Whether an exchange's withdrawal endpoint adds the network fee on top of the requested amount ("added": the
# amount is what arrives, amount + fee leaves) or deducts it from the amount ("deducted": the amount leaves,
# amount - fee arrives). `CcxtVenueClient.withdraw(amount)` always means "`amount` arrives": on a "deducted"
# exchange it requests amount + the network fee. Evidence per exchange: docs/real-venues.md, "Withdrawal fee".
WITHDRAWAL_FEE_MODES = ("added", "deducted")
DEFAULT_WITHDRAWAL_FEE_MODES = {
    # POST /sapi/v1/capital/withdraw/apply: the destination receives amount - withdrawFee.
    "binance": "deducted",
    "binanceusdm": "deducted",
    "binancecoinm": "deducted",
    # POST /api/v5/asset/withdrawal: "Withdrawal fee is not included in withdrawal amount" (amt arrives).
    "okx": "added",
    # POST /v5/asset/withdraw/create, feeType 0 (the default, ccxt sends none): the amount is what arrives.
    "bybit": "added",
    # Kraken's WithdrawInfo answers the "net amount that will be sent, after fees": the fee comes out of it.
    # (ccxt's krakenfutures has no withdraw at all; the entry keeps a venue on it loadable.)
    "kraken": "deducted",
    "krakenfutures": "deducted",
    # withdraw3: the 1 USDC bridge fee is taken out of the requested amount.
    "hyperliquid": "deducted",
}

# Where an exchange pays withdrawals from, when that is not the trading account the ccxt class trades in.
# Binance's `capital/withdraw/apply` pays from the spot wallet (walletType 0) or the funding wallet (1); without
# walletType it uses the wallet "selected" in the account's UI, so the client always sends it. OKX's
# `asset/withdrawal` pays from the funding account (6); margin sits in the trading account (18). The values are
# ccxt account names (`options['accountsByType']`); "none" means the exchange pays withdrawals from the trading
# account itself (or someone moves funds by hand), so nothing is topped up.
WITHDRAW_FROM_NONE = "none"
WITHDRAW_WALLETS: dict[str, tuple[str, ...]] = {
    "binance": ("spot", "funding"),
    "binanceusdm": ("spot", "funding"),
    "binancecoinm": ("spot", "funding"),
    "okx": ("funding",),
}
DEFAULT_WITHDRAW_FROM_ACCOUNT = {"binance": "spot", "binanceusdm": "spot", "binancecoinm": "spot", "okx": "funding"}
# ccxt's name of the account the class trades in, the source of a top-up. Not "future" on Binance: that is no
# key of binance's accountsByType, and ccxt's transfer would take it for an isolated-margin symbol.
TRADING_ACCOUNTS = {"binance": "linear", "binanceusdm": "linear", "binancecoinm": "inverse", "okx": "trading"}
BINANCE_WALLET_TYPES = {"spot": 0, "funding": 1}

# Exchanges whose internal transfers carry a client id the client can look the transfer up by afterwards.
# OKX: `POST /api/v5/asset/transfer` takes `clientId` ("a combination of case-sensitive alphanumerics, all numbers,
# or all letters of up to 32 characters": letters and digits only, no `-`/`_`), and
# `GET /api/v5/asset/transfer-state?clientId=...&type=0` answers its `state` (`success`, `pending`, `failed`) for the
# last two weeks. OKX's docs add that the transfer request's success or failure "does not necessarily reflect the
# actual transfer result" and recommend that lookup. They do not say a repeated clientId is refused or
# deduplicated, so the client never counts on it (docs/ccxt-conformance.md § 5c). Binance's universal transfer takes
# no client id: it keeps the balance re-read.
TRANSFER_CLIENT_ID_EXCHANGES = frozenset({"okx"})
TRANSFER_STATES = ("success", "pending", "failed")
# The answers to a transfer-state lookup that mean "no transfer with this clientId". 58129 is what OKX answers for an
# unknown client id, and 51000 ("Parameter clientId error") is what it answers for an unknown or malformed one. That
# mapping comes from GaloyMoney/stablesats-rs (okex-client error.rs), which uses it in production, not from OKX's
# docs. An answer with no rows means the same.
OKX_TRANSFER_NOT_FOUND_CODES = frozenset({"58129"})
# The least time, after an ambiguous send, before "not found" may count as "OKX never got it" and the transfer may be
# resent. OKX does not document how late a transfer can show in transfer-state: this is a judgement (transfers are
# described as immediate), kept well above a round trip. The polling window's own delays count towards it.
TRANSFER_NOT_FOUND_GRACE_SECONDS = 5.0
_CLIENT_ID_ERROR_CODE = "51000"


# `on_top_up(event, amount, transfer_id, wallet_before)` of `withdraw` (see `VenueClient.reports_withdrawal_top_ups`).
TopUpReport = Callable[[str, float, str, "float | None"], None]

# Order history (`CcxtVenueClient.fetch_orders`, docs/ccxt-conformance.md § 8). The hedge unwind's rerun
# (defs/hedging/steps.py `_find_unwind_order`) calls an unwind "never arrived" when the history shows the leg's own
# earlier order but not the unwind, and sends it then: a history with a gap would send a second unwind. So the client
# offers a history only where it reads one whole: the exchanges listed here; elsewhere it has no `fetch_orders`.
ORDER_HISTORY_EXCHANGES = frozenset({"binanceusdm", "okx", "bybit", "hyperliquid"})
# How far back the history reads by default. Binance's allOrders answers at most 7 days per query and drops cancelled
# orders without a fill after 3 days; OKX's orders-history keeps 7 days (unfilled cancels: 2 hours); Bybit's
# /v5/order/history (UTA) keeps every closed order 7 days (unfilled cancels/rejects: 24 hours) and takes a window of at
# most 7 days. An order the venue dropped had no fill, so sending its unwind again cannot close more than the leg
# opened. Hyperliquid keeps no window: historicalOrders is the account's last 2000 order states, whatever their age.
ORDER_HISTORY_LOOKBACK_SECONDS = 3 * 24 * 3600.0
ORDER_HISTORY_MAX_AGE_SECONDS = {"binanceusdm": 7 * 24 * 3600.0, "okx": 7 * 24 * 3600.0, "bybit": 7 * 24 * 3600.0,
                                 "hyperliquid": float("inf")}
# Each endpoint's maximum `limit` (Hyperliquid: the fixed size of its one answer, no paging).
ORDER_HISTORY_PAGE_SIZE = {"binanceusdm": 1000, "okx": 100, "bybit": 50, "hyperliquid": 2000}
ORDER_HISTORY_MAX_PAGES = 5
# How long after an order the venue's history may still not show it. Bybit documents that /v5/order/history can lag
# behind the order's real state ("may delay"), without a figure: until this long after an unwind was sent, a Bybit
# history without it proves nothing (the hedge's compensation then fails, and the recovery sweep's later attempt,
# a minute or more later, decides; docs/ccxt-conformance.md § 8). A judgement, not a measured figure. The others
# read their order state directly (Binance allOrders, OKX orders-history and pending, Hyperliquid's info endpoint).
ORDER_HISTORY_LAG_SECONDS = {"bybit": 120.0}
ORDER_HISTORY_MAX_PAGES_BY_EXCHANGE = {"bybit": 20}  # Bybit pages by 50: 1000 orders, as one Binance page
_HYPERLIQUID_CLOID = re.compile(r"0x[0-9a-f]{32}")


class IncompleteOrderHistory(list):
    """An order history the client could not read whole (too many orders for its page bound, a window the venue
    does not keep, an endpoint ccxt lacks): empty, with `reason`. Empty on purpose: no order in it, so no order
    looks absent next to one that is there; the hedge unwind then escalates instead of resending."""

    def __init__(self, reason: str):
        super().__init__()
        self.reason = reason



def _no_report(_event: str, _amount: float, _transfer_id: str, _wallet_before: float | None) -> None:
    return None


def transfer_client_id(purpose: str, *parts: object) -> str:
    """The clientId of one internal transfer: `purpose` (two letters: `tu` a withdrawal's top-up, `sw` a sweep)
    followed by the first 30 hex digits of SHA-256 over the parts joined by `|`. That is 32 letters and digits,
    the most OKX accepts. The same parts always give the same id, so a retry in another process sends and looks up the
    same transfer; 120 bits keep the ids of different transfers apart."""
    if not (len(purpose) == 2 and purpose.isascii() and purpose.isalpha()):
        raise ValueError(f"transfer purpose must be two letters, got {purpose!r}")
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()
    return purpose + digest[:30]


def withdraw_from_account_for(exchange_id: str, configured: str | None) -> str:
    """The wallet withdrawals are paid from (`configured`, else the exchange's default); ValueError if not one of its own."""
    value = configured or DEFAULT_WITHDRAW_FROM_ACCOUNT.get(exchange_id, WITHDRAW_FROM_NONE)
    allowed = (*WITHDRAW_WALLETS.get(exchange_id, ()), WITHDRAW_FROM_NONE)
    if value not in allowed:
        raise ValueError(f"{value!r} is not a withdrawal wallet of {exchange_id}; one of {', '.join(map(repr, allowed))}")
    return value


def check_fiat_deposit_reference(key: str, reference: str, addresses: Mapping[str, str]) -> None:
    """A venue's bank-deposit reference for `key` ('EUR:SEPA'): only beside its IBAN, and one Wise can carry."""
    if key not in addresses:
        raise ValueError(f"no fiat_deposit_addresses entry for {key!r}: a reference needs the account it is for")
    currency = key.split(":", 1)[0]
    problem = wise_reference_problem(reference, currency)
    if problem:
        raise ValueError(problem)


def sweep_deposits_for(withdraw_from_account: str, configured: bool | None) -> bool:
    """Whether deposits are moved into the trading account (`configured`, else: whenever there is a withdrawal
    wallet apart from it); ValueError when switched on for a venue with no such wallet."""
    if configured is None:
        return withdraw_from_account != WITHDRAW_FROM_NONE
    if configured and withdraw_from_account == WITHDRAW_FROM_NONE:
        raise ValueError("true needs a deposit/withdrawal wallet apart from the trading account, and "
                         "withdraw_from_account is 'none' (the exchange's default, or set so)")
    return bool(configured)


# Exchanges whose conditional (stop) orders live behind separate endpoints that ccxt
# reaches with `params={"trigger": True}` (Binance's Algo Order API).
# OKX's trigger orders are algo orders (`/trade/order-algo`, `orders-algo-pending`, `cancel-algos`),
# looked up by `algoClOrdId`.
SEPARATE_TRIGGER_ORDERS = {"binance", "binanceusdm", "okx"}

# Futures classes whose testnet ccxt no longer supports (it raises NotSupported and points at
# Binance's demo trading): `demo_trading` is their rehearsal environment.
FUTURES_WITHOUT_SANDBOX = {"binanceusdm", "binancecoinm"}

# ccxt options we always set per exchange (on top of the venue's own `options_json`).
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    # ccxt otherwise approves, and attaches to every order, a 0.01% builder fee paid to ccxt's builder address.
    "hyperliquid": {"builderFee": False},
    # Binance refuses an unscoped open-orders query unless told the caller knows it costs more weight.
    "binanceusdm": {"warnOnFetchOpenOrdersWithoutSymbol": False, "adjustForTimeDifference": True},
    "binance": {"warnOnFetchOpenOrdersWithoutSymbol": False, "adjustForTimeDifference": True, "defaultType": "swap"},
    "bybit": {"defaultType": "swap"},
    "okx": {"defaultType": "swap"},
}

# Exchange error codes whose meaning matters more than the ccxt class they arrive as
# (ccxt picks Binance's per-market tables by hostname, so against another host a
# -2019 arrives as a plain ExchangeError). Values: (kind, normalised code).
VENUE_ERROR_CODES: dict[str, dict[str, tuple[str, str]]] = {
    "binance": {
        "-1001": ("unknown", "internal_error"),
        "-1003": ("transient", "rate_limited"),
        "-1007": ("unknown", "backend_timeout"),
        "-1008": ("transient", "server_busy"),
        "-1021": ("transient", "timestamp_outside_recv_window"),
        "-1022": ("business", "authentication"),
        "-2014": ("business", "authentication"),
        "-2015": ("business", "authentication"),
        "-2011": ("not_found", "order_not_found"),
        "-2013": ("not_found", "order_not_found"),
        "-2019": ("business", "insufficient_margin"),
        "-2021": ("business", "would_immediately_trigger"),
        "-2022": ("business", "reduce_only_rejected"),
        "-4116": ("duplicate", "duplicate_client_order_id"),
        "-4118": ("business", "reduce_only_rejected"),
        "-4164": ("business", "min_notional"),
        "-4026": ("business", "insufficient_funds"),
        "-5013": ("business", "insufficient_funds"),
        "-4022": ("business", "below_min_amount"),
        "-4019": ("business", "unsupported_network"),
        "-4007": ("business", "address_rejected"),
        "-4035": ("business", "address_not_whitelisted"),
    },
    "bybit": {
        "110007": ("business", "insufficient_funds"),
        "110072": ("duplicate", "duplicate_client_order_id"),
        "110017": ("business", "reduce_only_rejected"),
        "10006": ("transient", "rate_limited"),
        "10002": ("transient", "timestamp_outside_recv_window"),
    },
    "okx": {
        "51008": ("business", "insufficient_funds"),
        "51016": ("duplicate", "duplicate_client_order_id"),
        "50011": ("transient", "rate_limited"),
    },
}
VENUE_ERROR_CODES["binanceusdm"] = VENUE_ERROR_CODES["binance"]

_CODE_PATTERN = re.compile(r'"(?:code|retCode|sCode)"\s*:\s*"?(-?\d+)"?')


def _family(exchange_id: str) -> str:
    return "binance" if exchange_id.startswith("binance") else exchange_id


def venue_error_code(exc: BaseException) -> str | None:
    """The exchange's own error code in a ccxt exception message (ccxt quotes the body)."""
    match = _CODE_PATTERN.search(str(exc))
    return match.group(1) if match else None


def _never_sent(exc: BaseException) -> bool:
    """True when the cause chain shows the request never left (refused, DNS, connect timeout)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = type(current).__name__
        if name in {"ConnectTimeout", "NewConnectionError", "NameResolutionError"} or isinstance(current, ConnectionRefusedError):
            return True
        text = str(current)
        if "NewConnectionError" in text or "Connection refused" in text or "Failed to resolve" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


def classify_ccxt_error(exc: BaseException, *, exchange_id: str, mutating: bool, message: str | None = None) -> ExternalServiceError:
    """Map a ccxt exception onto the platform's error taxonomy.

    `mutating`: the request could change state (an order, a cancel, a withdrawal,
    a transfer). For those, anything that leaves the outcome unknown -- a
    timeout, a dropped connection after sending, a 5xx or an "unknown error"
    answer -- is an `AmbiguousOutcomeError`, which obliges a lookup by the
    idempotency key before anything is sent again.
    """
    import ccxt  # lazy: only ever reached once a call has been made

    text = message or f"{type(exc).__name__}: {exc}"
    code = venue_error_code(exc)
    kind, normalised = VENUE_ERROR_CODES.get(_family(exchange_id), {}).get(code or "", (None, None))

    def unknown_outcome(default_code: str) -> ExternalServiceError:
        if mutating:
            return AmbiguousOutcomeError(f"{text} (outcome unknown: look it up before any retry)")
        return TransientError(text)

    if kind == "transient":
        return TransientError(text)
    if kind == "unknown":
        return unknown_outcome(normalised)
    if kind == "duplicate":
        return BusinessError(text, code=normalised)
    if kind == "not_found":
        return NotFoundError(text, code=normalised)
    if kind == "business":
        return BusinessError(text, code=normalised)

    if isinstance(exc, ccxt.InvalidNonce):  # rejected for its timestamp: nothing was applied
        return TransientError(text)
    if isinstance(exc, (ccxt.RateLimitExceeded, ccxt.DDoSProtection)):  # 418/429: not applied
        return TransientError(text, retry_after=getattr(exc, "retry_after", None))
    if isinstance(exc, ccxt.NetworkError):  # RequestTimeout, ExchangeNotAvailable (5xx), dropped connections
        if _never_sent(exc):
            return TransientError(text)
        return unknown_outcome("network")
    if isinstance(exc, ccxt.OperationFailed):  # BadResponse, NullResponse, "unknown error"
        return unknown_outcome("operation_failed")
    if isinstance(exc, ccxt.AuthenticationError):
        return BusinessError(text, code="authentication")
    if isinstance(exc, ccxt.InsufficientFunds):
        return BusinessError(text, code="insufficient_funds")
    if isinstance(exc, ccxt.OrderNotFound):
        return NotFoundError(text, code="order_not_found")
    if isinstance(exc, ccxt.DuplicateOrderId):
        return BusinessError(text, code="duplicate_client_order_id")
    if isinstance(exc, ccxt.InvalidAddress):
        return BusinessError(text, code="invalid_address")
    if isinstance(exc, ccxt.BadSymbol):
        return BusinessError(text, code="bad_symbol")
    if isinstance(exc, ccxt.InvalidOrder):
        return BusinessError(text, code="invalid_order")
    if isinstance(exc, (ccxt.BadRequest, ccxt.ArgumentsRequired)):
        return BusinessError(text, code="bad_request")
    if isinstance(exc, ccxt.NotSupported):
        return BusinessError(text, code="not_supported")
    if isinstance(exc, ccxt.OperationRejected):
        return BusinessError(text, code="rejected")
    if isinstance(exc, ccxt.ExchangeError):  # the exchange answered with an error we do not know
        return BusinessError(text, code=f"exchange_error:{code}" if code else "exchange_error")
    return unknown_outcome("unexpected")


# ---------------------------------------------------------------------------- secrets in logs


class _RedactingFilter(logging.Filter):
    """Blanks credentials and request signatures in ccxt's own log records."""

    _SIGNATURE = re.compile(r"(signature=)[0-9A-Za-z%+/=_-]+")

    def __init__(self, secrets: Iterable[str]):
        super().__init__()
        self._secrets = [s for s in secrets if s and len(s) >= 4]

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return self._SIGNATURE.sub(r"\1***", text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: drop its arguments rather than risk leaking them
            message = str(record.msg)
        record.msg = self.redact(message)
        record.args = ()
        return True


def _ccxt_logger(venue: str, redactor: _RedactingFilter) -> logging.Logger:
    logger = logging.getLogger(f"arb_orchestration.ccxt.{venue}")
    for old in [f for f in logger.filters if isinstance(f, _RedactingFilter)]:
        logger.removeFilter(old)
    logger.addFilter(redactor)
    return logger


# ---------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class CcxtVenueSettings:
    """Everything one venue client needs, credentials resolved (never logged: see __repr__)."""

    name: str
    exchange_id: str
    api_key: str = field(default="", repr=False)
    secret: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    sandbox: bool = False
    demo_trading: bool = False
    api_base_url: str = ""
    api_urls: dict[str, str] = field(default_factory=dict)
    symbols: tuple[str, ...] = ()
    withdraw_allowlist: tuple[str, ...] = ()
    fiat_deposit_addresses: dict[str, str] = field(default_factory=dict)
    # 'EUR:SEPA' -> the payment reference the venue needs to credit a bank deposit to this account
    fiat_deposit_references: dict[str, str] = field(default_factory=dict)
    default_funding_interval_hours: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    read_only: bool = False
    timeout_seconds: float = 10.0
    rate_limit_ms: int | None = None
    precheck_client_order_id: bool = True
    # "added" | "deducted"; None: the exchange's entry in DEFAULT_WITHDRAWAL_FEE_MODES (no entry: no withdrawals).
    withdrawal_fee_mode: str | None = None
    # The wallet withdrawals are paid from ("spot", "funding", "none"); None: DEFAULT_WITHDRAW_FROM_ACCOUNT.
    withdraw_from_account: str | None = None
    # Move deposits (and withdrawal leftovers) from that wallet into the trading account; None: yes if there is one.
    sweep_deposits_to_trading: bool | None = None


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(url: str, what: str) -> str:
    """Credentials never travel over plain HTTP except to loopback (the simulator)."""
    if not url:
        return url
    scheme = urlsplit(url).scheme
    if scheme == "https" or (scheme == "http" and _is_loopback(url)):
        return url.rstrip("/")
    raise ValueError(f"{what} must be https:// (or http:// on loopback for the simulator), got {url!r}")


# ---------------------------------------------------------------------------- the client


class CcxtVenueClient(VenueClient):
    """One exchange account through ccxt; blocking and thread-safe.

    `exchange`: a ready ccxt instance to use instead of building one (tests).
    """

    def __init__(
        self,
        config: CcxtVenueSettings,
        *,
        retry: RetrySettings | None = None,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], None] = time.sleep,
        exchange: Any = None,
    ):
        self.name = config.name
        self.config = config
        self._family = _family(config.exchange_id)
        self._breaker = breaker or breaker_for(f"venue:{config.name}")
        self._caller = ResilientCaller(self._breaker, retry or RetrySettings(), sleep=sleep)
        self._redactor = _RedactingFilter([config.api_key, config.secret, config.password])
        self._exchange = exchange
        self._ready = False
        self._ready_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._caller_ids: dict[str, str] = {}  # venue client id -> the caller's client order id
        self._order_symbols: dict[str, str] = {}  # order id / venue client id -> symbol
        self._trigger_orders: set[str] = set()  # ids of conditional orders (separate endpoints)
        self._last_state = self._breaker.state
        self._allowed = set(config.symbols)
        self.withdrawal_fee_mode = config.withdrawal_fee_mode or DEFAULT_WITHDRAWAL_FEE_MODES.get(config.exchange_id)
        if self.withdrawal_fee_mode not in (None, *WITHDRAWAL_FEE_MODES):
            raise ValueError(f"{config.name}: withdrawal_fee_mode must be one of {WITHDRAWAL_FEE_MODES}, "
                             f"got {config.withdrawal_fee_mode!r}")
        try:
            self.withdraw_from_account = withdraw_from_account_for(config.exchange_id, config.withdraw_from_account)
        except ValueError as exc:
            raise ValueError(f"{config.name}: withdraw_from_account: {exc}") from None
        try:
            self.sweep_deposits_to_trading = sweep_deposits_for(self.withdraw_from_account,
                                                                config.sweep_deposits_to_trading)
        except ValueError as exc:
            raise ValueError(f"{config.name}: sweep_deposits_to_trading: {exc}") from None
        for key, reference in config.fiat_deposit_references.items():
            try:
                check_fiat_deposit_reference(key, reference, config.fiat_deposit_addresses)
            except ValueError as exc:
                raise ValueError(f"{config.name}: fiat_deposit_references.{key}: {exc}") from None
        self._wallet_noted: dict[str, float] = {}  # asset -> amount last reported in the withdrawal wallet
        # One top-up-and-withdraw at a time per client: a second withdrawal must not count the first one's top-up
        # as its own (both would then withdraw it). Other processes are not covered (see docs/real-venues.md).
        self._withdraw_lock = threading.Lock()
        # withdrawal key -> what a top-up moved into the withdrawal wallet for it, not yet taken by the caller
        # (`take_withdrawal_top_up`): the saga records it as the bound of the sweep that moves it back.
        self._top_ups: dict[str, float] = {}
        # withdrawal key -> everything this client's top-ups (or the caller's record, `restore_withdrawal_top_up`)
        # moved into the withdrawal wallet for it, never taken: a retry of the same withdrawal tops up only the rest.
        self._topped_up: dict[str, float] = {}
        # withdrawal key -> (amount, the wallet's free balance before, transfer id) of a top-up transfer whose
        # outcome stayed unknown, here or in an earlier process (`restore_pending_top_up`; its balance before may be
        # None then): it counts against the withdrawal's bound and is never resent blindly; a retry looks for it
        # again (by the wallet's balance, or on OKX by its clientId, in which case the balance before is not used).
        self._top_up_unknown: dict[str, tuple[float, float | None, str]] = {}
        self._top_ups_lock = threading.Lock()
        # (mode, why, monotonic time read) of the last position-mode read; see position_mode()
        self._position_mode: tuple[str, str, float] | None = None
        self._position_mode_lock = threading.Lock()
        if config.api_base_url:
            check_endpoint(config.api_base_url, f"{config.name}: api_base_url")
        for key, url in config.api_urls.items():
            check_endpoint(url, f"{config.name}: api_urls[{key}]")

    def __repr__(self) -> str:  # never shows credentials
        return f"CcxtVenueClient(name={self.name!r}, exchange_id={self.config.exchange_id!r}, sandbox={self.config.sandbox})"

    # ------------------------------------------------------------------ plumbing

    def _build_exchange(self):
        import ccxt  # lazy: keeps the code location's import fast (ccxt loads every exchange)

        cls = getattr(ccxt, self.config.exchange_id, None)
        if cls is None or not isinstance(cls, type):
            raise BusinessError(f"{self.name}: ccxt has no exchange {self.config.exchange_id!r}", code="bad_config")
        options = {**DEFAULT_OPTIONS.get(self.config.exchange_id, {}), **self.config.options}
        params: dict[str, Any] = {
            "enableRateLimit": True,
            "timeout": int(self.config.timeout_seconds * 1000),
            "options": options,
            "logger": _ccxt_logger(self.name, self._redactor),
            "verbose": False,
        }
        for key, value in (("apiKey", self.config.api_key), ("secret", self.config.secret), ("password", self.config.password)):
            if value:
                params[key] = value
        exchange = cls(params)
        required = getattr(exchange, "requiredCredentials", None) or {}
        if required.get("walletAddress") and required.get("privateKey"):
            # Hyperliquid signs with a wallet: CCXT_<VENUE>_API_KEY is the wallet address, _SECRET its (API wallet's) key.
            exchange.apiKey, exchange.secret = "", ""
            exchange.walletAddress, exchange.privateKey = self.config.api_key, self.config.secret
        if self.config.sandbox:
            exchange.set_sandbox_mode(True)
        if self.config.demo_trading:
            exchange.enable_demo_trading(True)
        if self.config.rate_limit_ms is not None:
            exchange.rateLimit = self.config.rate_limit_ms
        api = exchange.urls.get("api")
        if self.config.api_base_url and isinstance(api, dict):
            base = self.config.api_base_url.rstrip("/")
            exchange.urls["api"] = {k: base + urlsplit(v).path for k, v in api.items() if isinstance(v, str)}
        elif self.config.api_base_url:
            exchange.urls["api"] = self.config.api_base_url
        if self.config.api_urls:
            exchange.urls["api"] = {**exchange.urls["api"], **self.config.api_urls}
        return exchange

    def _ensure_ready(self):
        with self._ready_lock:
            if self._exchange is None:
                self._exchange = self._build_exchange()
            if not self._ready:
                self._exchange.load_markets()
                self._ready = True
            return self._exchange

    def _ready_exchange(self, what: str):
        """The loaded exchange; a failure to load markets comes out typed (used in lookups)."""
        import ccxt

        try:
            return self._ensure_ready()
        except ccxt.BaseError as exc:
            raise self._translate(exc, what, mutating=False) from None  # the ccxt error (URL, query) only in redacted form

    def _redact(self, text: str) -> str:
        return self._redactor.redact(text)

    def _translate(self, exc: BaseException, what: str, mutating: bool) -> ExternalServiceError:
        message = self._redact(f"{self.name} {what}: {type(exc).__name__}: {exc}")
        return classify_ccxt_error(exc, exchange_id=self.config.exchange_id, mutating=mutating, message=message)

    def _run(self, fn: Callable[[Any], T], what: str, mutating: bool) -> T:
        """One attempt: ready the exchange, call ccxt, translate its exceptions."""
        import ccxt

        try:
            exchange = self._ensure_ready()
            return fn(exchange)
        except ccxt.BaseError as exc:
            raise self._translate(exc, what, mutating) from None  # the ccxt error (URL, query) only in redacted form

    def _call(
        self,
        fn: Callable[[Any], T],
        *,
        what: str,
        mutating: bool = False,
        reconcile: Callable[[], T | None] | None = None,
    ) -> T:
        try:
            return self._caller.call(lambda: self._run(fn, what, mutating), what=f"{self.name}: {what}", reconcile=reconcile)
        finally:
            self._note_breaker_state()

    def _note_breaker_state(self) -> None:
        state = self._breaker.state
        if state != self._last_state:
            level = logging.INFO if state == "closed" else logging.WARNING
            log.log(level, "venue %s: circuit breaker %s -> %s", self.name, self._last_state, state)
            self._last_state = state

    def _refuse_if_read_only(self, what: str) -> None:
        if self.config.read_only:
            raise BusinessError(f"{self.name}: {what} refused: the venue is configured read-only", code="read_only")

    def health(self) -> dict:
        self._note_breaker_state()
        return {
            "venue": self.name,
            "exchange_id": self.config.exchange_id,
            "sandbox": self.config.sandbox,
            "demo_trading": self.config.demo_trading,
            "read_only": self.config.read_only,
            "withdraw_from_account": self.withdraw_from_account,
            "sweep_deposits_to_trading": self.sweep_deposits_to_trading,
            "markets_loaded": self._ready,
            "breaker": self._breaker.snapshot(),
            # the last read (no request here): "one_way" | "hedge" | "unknown"; None: not read yet
            "position_mode": self._position_mode[0] if self._position_mode else None,
            "position_mode_detail": self._position_mode[1] if self._position_mode else None,
        }

    # ------------------------------------------------------------------ position mode

    def position_mode(self, *, max_age_seconds: float | None = None) -> str:
        """"one_way", "hedge" or "unknown" (no way to read it on this venue, or the read failed); cached.

        One request, no retry, never raises: the answer is kept POSITION_MODE_TTL_SECONDS (an unknown one
        POSITION_MODE_UNKNOWN_TTL_SECONDS) unless `max_age_seconds` asks for a fresher one.
        """
        with self._position_mode_lock:
            now = time.monotonic()
            cached = self._position_mode
            if cached is not None:
                ttl = POSITION_MODE_TTL_SECONDS if cached[0] != "unknown" else POSITION_MODE_UNKNOWN_TTL_SECONDS
                if max_age_seconds is not None:
                    ttl = min(ttl, max_age_seconds)
                if now - cached[2] < ttl:
                    return cached[0]
            try:
                mode, why = self._read_position_mode()
            except Exception as exc:  # best effort: a failed read must not stop anything
                mode, why = "unknown", self._redact(f"position mode not read: {type(exc).__name__}: {exc}")[:300]
                log.warning("venue %s: %s", self.name, why)
            if mode == "hedge":
                log.error("venue %s: the account is in hedge (two-way) position mode: %s", self.name, why)
            self._position_mode = (mode, why, time.monotonic())
            return mode

    def _read_position_mode(self) -> tuple[str, str]:
        exchange_id = self.config.exchange_id
        if exchange_id not in ("binanceusdm", "okx", "bybit"):
            return "unknown", f"{exchange_id}: no position-mode read (one-way only venue or not offered by ccxt)"
        ex = self._ensure_ready()
        if exchange_id in ("binanceusdm", "okx"):
            # binanceusdm: GET /fapi/v1/positionSide/dual {dualSidePosition}; okx: GET /api/v5/account/config {posMode}
            hedged = ex.fetch_position_mode().get("hedged")
            if hedged is None:
                return "unknown", f"{exchange_id}: the position-mode answer did not say"
            source = "dualSidePosition" if exchange_id == "binanceusdm" else "posMode"
            return ("hedge" if hedged else "one_way"), f"{exchange_id}: {source} says {'hedge' if hedged else 'one-way'}"
        # bybit: ccxt 4.5.90 has no fetchPositionMode and Bybit v5 no endpoint to read it; each position row carries
        # positionIdx (0 one-way, 1/2 hedge). No row: unknown.
        rows = self._read_all(ex, ex.fetch_positions, lambda params: ex.fetch_positions(None, params))
        idx = {str((r.get("info") or {}).get("positionIdx")) for r in rows} - {"None"}
        if idx & {"1", "2"}:
            return "hedge", "bybit: position rows with positionIdx 1/2 (hedge mode)"
        if "0" in idx:
            return "one_way", "bybit: position rows with positionIdx 0"
        return "unknown", "bybit: no position row to tell the mode from"

    def _refuse_if_hedge_mode(self, what: str) -> None:
        if self.position_mode() == "hedge":
            setting = ONE_WAY_SETTING.get(self.config.exchange_id, "switch the account to one-way position mode")
            raise BusinessError(
                f"{self.name}: {what} refused (hedge_mode_unsupported): the account is in hedge (two-way) position mode, which this client does "
                f"not support (the exchange would reject the order); {setting}", code="hedge_mode_unsupported")

    # ------------------------------------------------------------------ market state

    def fetch_balance(self) -> dict[str, Balance]:
        """The trading account's balances plus what sits in the withdrawal wallet (spot / funding), if any.

        Money in the withdrawal wallet is counted as the venue's: a top-up whose withdrawal then failed, a deposit
        not swept yet (Binance credits spot or funding, OKX funding), but also whatever an operator keeps there
        (the client cannot tell them apart). It is counted here so the books never lose sight of it, and logged
        at WARNING whenever its amount changes. A withdrawal never spends it: `withdraw` tops the wallet up by the
        full amount that leaves, from the trading account (docs/ccxt-conformance.md § 5a).
        """
        if self.withdraw_from_account == WITHDRAW_FROM_NONE:
            raw = self._call(lambda ex: ex.fetch_balance(), what="fetch_balance")
            return self._trading_balances(raw)
        raw, wallet = self._call(lambda ex: (ex.fetch_balance(), self._read_withdrawal_wallet(ex)), what="fetch_balance")
        result = self._trading_balances(raw)
        for asset, held in sorted(wallet.items()):
            if held.total <= 0 and asset not in result:
                continue
            mine = result.get(asset) or Balance(asset=asset, free=0.0, used=0.0, total=0.0)
            result[asset] = Balance(asset=asset, free=mine.free + held.free, used=mine.used + held.used,
                                    total=mine.total + held.total)
        self._note_withdrawal_wallet(wallet)
        return dict(sorted(result.items()))

    def fetch_spendable_balance(self) -> dict[str, Balance]:
        """What a withdrawal can spend: the trading account's balances only (see `VenueClient.fetch_spendable_balance`).

        The withdrawal wallet (spot / funding) is left out: `withdraw` tops it up by the full amount that leaves,
        from the trading account, so whatever it holds (an operator's own money, a deposit not swept yet, a failed
        withdrawal's top-up) is never what a withdrawal pays with. One read of the trading account; the wallet is
        not read. Where the exchange withdraws from the trading account itself (`withdraw_from_account` none),
        the same as `fetch_balance`.
        """
        raw = self._call(lambda ex: ex.fetch_balance(), what="fetch_balance")
        return dict(sorted(self._trading_balances(raw).items()))

    def _note_withdrawal_wallet(self, wallet: dict[str, Balance]) -> None:
        for asset, held in sorted(wallet.items()):
            if abs(held.total - self._wallet_noted.get(asset, 0.0)) <= 1e-12:
                continue
            self._wallet_noted[asset] = held.total
            if held.total > 0:
                log.warning("venue %s: %s %s sits in the %s wallet, outside the trading account (a top-up left by a "
                            "failed withdrawal, a deposit, or an operator's own money); counted in the venue's balance, "
                            "never spent by a withdrawal (each tops the wallet up by its full amount)",
                            self.name, format(held.total, ".8g"), asset, self.withdraw_from_account)

    def _read_withdrawal_wallet(self, ex) -> dict[str, Balance]:
        """The withdrawal wallet's balances (raises ccxt errors: call inside `_call`/`_run`)."""
        params: dict[str, Any] = {"type": self.withdraw_from_account}
        if self._family == "binance":
            # Anything but linear/inverse: binanceusdm's defaultSubType ('linear') would otherwise send even a spot
            # or funding read to the futures account (binance.fetch_balance checks is_linear before type).
            params["subType"] = self.withdraw_from_account
        raw = ex.fetch_balance(params)
        result = {}
        for asset in sorted(raw.get("total") or {}):
            entry = raw.get(asset) or {}
            free = float(entry.get("free") or 0.0)
            total = float(entry.get("total") or 0.0)
            used = float(entry.get("used") if entry.get("used") is not None else max(0.0, total - free))
            result[asset] = Balance(asset=asset, free=free, used=used, total=total)
        return result

    def _trading_balances(self, raw: dict) -> dict[str, Balance]:
        totals = raw.get("total") or {}
        # ccxt's futures `total` is the margin balance (wallet + unrealised PnL). The platform's
        # Balance.total is the wallet (realised), as on the simulator, so a mark move cannot look
        # like money arriving; unrealised PnL is on the positions.
        wallet: dict[str, float] = {}
        info = raw.get("info")
        if self._family == "binance" and isinstance(info, dict):
            for row in info.get("assets") or []:
                if isinstance(row, dict) and row.get("walletBalance") is not None:
                    wallet[str(row.get("asset"))] = float(row["walletBalance"])
        result = {}
        for asset in sorted(totals):
            entry = raw.get(asset) or {}
            total = wallet.get(asset, float(entry.get("total") or 0.0))
            free = float(entry.get("free") or 0.0)
            used = float(entry.get("used") if entry.get("used") is not None else max(0.0, total - free))
            result[asset] = Balance(asset=asset, free=free, used=used, total=total)
        return result

    def fetch_positions(self) -> list[Position]:
        raw = self._call(lambda ex: self._read_all(ex, ex.fetch_positions, lambda params: ex.fetch_positions(None, params),
                                                   inverse=True), what="fetch_positions")
        positions = []
        for p in raw:
            contracts = float(p.get("contracts") or 0.0)
            size = contracts * float(p.get("contractSize") or 1.0)
            if size <= 0:
                continue
            side = p.get("side")
            if side not in {"long", "short"}:
                # An open position whose direction is unknown must not read as flat (the stop-loss would
                # report FLAT): fail the read; asking again gives the same answer, so not retried.
                raise BusinessError(
                    f"{self.name}: fetch_positions: {p.get('symbol')} holds {contracts:g} contract(s) with no side "
                    f"({side!r}): cannot tell long from short", code="position_side_unknown")
            entry = float(p.get("entryPrice") or 0.0)
            market = ((self._exchange.markets if self._exchange is not None else None) or {}).get(p["symbol"]) or {}
            price = float(p.get("markPrice") or 0.0) or entry
            if market.get("inverse") and price > 0:
                size /= price  # an inverse contract is sized in quote (USD): base = USD / price
            positions.append(
                Position(
                    venue=self.name,
                    symbol=p["symbol"],
                    side=side,
                    size=size,
                    entry_price=entry,
                    mark_price=float(p.get("markPrice") or entry),
                    liquidation_price=float(p["liquidationPrice"]) if p.get("liquidationPrice") else None,
                    unrealized_pnl=float(p.get("unrealizedPnl") or 0.0),
                )
            )
        return positions

    def _read_all(self, ex, read: Callable[[], list], read_with: Callable[[dict], list], *, inverse: bool = False) -> list:
        """Every row of an account-wide read (positions, open orders): `read()`, except where ccxt answers only part.

        ccxt's bybit, asked without a symbol, reads settleCoin=USDT only and one page (orders: 20): a USDC-settled
        position would read as flat. There it reads each linear settle coin of the loaded markets, every page, and
        (`inverse`, positions) the inverse category when there are inverse contracts. Open orders on inverse
        contracts are not read: ccxt would ask for settleCoin=USDT there, and the client places none.
        """
        if self.config.exchange_id != "bybit":
            return read()
        contracts = [m for m in (ex.markets or {}).values() if m.get("contract") and m.get("swap", True)]
        settles = sorted({m["settle"] for m in contracts if m.get("linear") and m.get("settle")}) or ["USDT"]
        rows = [row for coin in settles for row in read_with({"settleCoin": coin, "paginate": True})]
        if inverse and any(m.get("inverse") for m in contracts):
            rows += read_with({"subType": "inverse", "paginate": True})
        return rows

    def _interval_hours(self, interval: str | None, symbol: str, source: str) -> float | None:
        """Hours in a venue's funding interval ("8h", "480m", "1d"); None when absent or not understood.

        A value that is there but not understood is logged (venue, symbol, raw value): the caller
        then uses the next source or the default interval, which would silently mis-normalise the
        rate if the venue's real interval differs. Funding data must not stop the hedge, so it is a
        warning, not an error.
        """
        if not interval:
            return None
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([hmd])", str(interval).strip().lower())
        value = float(match.group(1)) if match else 0.0
        if not match or value <= 0:
            log.warning(
                "%s (%s): funding interval %r for %s from %s not understood; using the next source or the default",
                self.name, self.config.exchange_id, interval, symbol, source,
            )
            return None
        return {"h": value, "m": value / 60.0, "d": value * 24.0}[match.group(2)]

    def fetch_funding_rates(self) -> list[FundingRate]:
        def fetch(ex) -> list[FundingRate]:
            symbols = sorted(self._allowed) or None
            rates = ex.fetch_funding_rates(symbols)
            intervals: dict[str, str | None] = {}
            if any(not r.get("interval") for r in rates.values()) and ex.has.get("fetchFundingIntervals"):
                # Binance names only the symbols whose interval deviates; the rest use the documented one.
                intervals = {s: r.get("interval") for s, r in ex.fetch_funding_intervals().items()}
            fallback = self.config.default_funding_interval_hours or DOCUMENTED_FUNDING_INTERVAL_HOURS.get(
                self.config.exchange_id
            )
            now = time.time()
            result = []
            for symbol, r in sorted(rates.items()):
                if r.get("fundingRate") is None:
                    continue
                hours = (
                    self._interval_hours(r.get("interval"), symbol, "fetch_funding_rates")
                    or self._interval_hours(intervals.get(symbol), symbol, "fetch_funding_intervals")
                    or fallback
                )
                if not hours:
                    raise BusinessError(
                        f"{self.name}: no funding interval for {symbol}; set default_funding_interval_hours",
                        code="unknown_funding_interval",
                    )
                ts = r.get("timestamp")
                nxt = r.get("fundingTimestamp") or r.get("nextFundingTimestamp")
                result.append(
                    FundingRate(
                        venue=self.name,
                        symbol=symbol,
                        rate=float(r["fundingRate"]),
                        interval_hours=hours,
                        next_funding_time=nxt / 1000.0 if nxt else None,
                        mark_price=float(r["markPrice"]) if r.get("markPrice") else None,
                        observed_at=ts / 1000.0 if ts else now,
                    )
                )
            return result

        return self._call(fetch, what="fetch_funding_rates")

    def fetch_mark_prices(self) -> dict[str, float]:
        def fetch(ex) -> dict[str, float]:
            if ex.has.get("fetchMarkPrices"):
                tickers = ex.fetch_mark_prices()
            else:
                tickers = ex.fetch_tickers()
            prices = {}
            for symbol, t in tickers.items():
                price = t.get("markPrice") or t.get("last") or t.get("close")
                if price:
                    prices[symbol] = float(price)
            return prices

        return self._call(fetch, what="fetch_mark_prices")

    # ------------------------------------------------------------------ orders

    def _venue_client_id(self, client_order_id: str) -> str:
        rule = CLIENT_ORDER_ID_RULES.get(self.config.exchange_id, _DEFAULT_CLIENT_ORDER_ID_RULE)
        venue_id = client_order_id
        if self.config.exchange_id == "hyperliquid" and re.fullmatch(r"[0-9a-f]{32}", client_order_id):
            venue_id = "0x" + client_order_id  # the saga's 128-bit keys are cloids already, short of the prefix
        elif not rule.fullmatch(client_order_id):
            # A stable stand-in the venue accepts; the same key always maps the same.
            digest = hashlib.sha256(client_order_id.encode()).hexdigest()
            venue_id = "0x" + digest[:32] if self.config.exchange_id == "hyperliquid" else "x" + digest[:31]
        with self._cache_lock:
            self._caller_ids[venue_id] = client_order_id
        return venue_id

    def _remember(self, order: Order, trigger: bool) -> None:
        with self._cache_lock:
            self._order_symbols[order.id] = order.symbol
            if trigger:
                self._trigger_orders.add(order.id)

    def _base_per_contract(self, symbol: str) -> float:
        """Base units per contract of `symbol` (1 for spot and for venues that count perps in base units).

        ccxt takes and returns order amounts in contracts; the platform speaks base units (BTC, ETH),
        as positions already are (`fetch_positions` multiplies by contractSize). OKX's BTC swap is
        0.01 BTC a contract: without this a 2.7 BTC close would go out as 2.7 contracts (0.027 BTC).
        """
        market = ((self._exchange.markets if self._exchange is not None else None) or {}).get(symbol) or {}
        if not market.get("contract"):
            return 1.0
        if market.get("inverse"):
            raise BusinessError(f"{self.name}: {symbol} is an inverse contract (sized in quote currency); "
                                "not supported", code="unsupported_contract")
        return float(market.get("contractSize") or 1.0)

    def _to_order(self, raw: dict, *, client_order_id: str | None = None, trigger: bool = False, assume_status: str | None = None) -> Order:
        info = raw.get("info") if isinstance(raw.get("info"), dict) else {}  # Hyperliquid's cancel: info is "success"
        try:
            per_contract = self._base_per_contract(raw.get("symbol") or "")
        except BusinessError:  # someone else's order on an inverse contract: shown as the venue counts it
            per_contract = 1.0
        venue_cid = raw.get("clientOrderId")
        with self._cache_lock:
            caller_cid = client_order_id or self._caller_ids.get(venue_cid or "", venue_cid)
        raw_type = str(info.get("origType") or info.get("type") or info.get("orderType") or "").upper()
        trigger_price = raw.get("triggerPrice") or raw.get("stopPrice")
        if trigger or raw_type in {"STOP_MARKET", "STOP"} or (trigger_price and raw.get("type") == "market"):
            order_type: OrderType = "stop_market"
        elif raw.get("type") == "limit":
            order_type = "limit"
        else:
            order_type = "market"
        status = raw.get("status") or assume_status or "open"
        status = {"expired": "canceled", "cancelled": "canceled", "canceling": "open"}.get(status, status)
        if status not in {"open", "closed", "canceled", "rejected"}:
            status = "open"
        price = raw.get("price")
        ts = raw.get("timestamp")
        order = Order(
            id=str(raw["id"]),
            client_order_id=caller_cid,
            venue=self.name,
            symbol=raw.get("symbol") or "",
            type=order_type,
            side=raw.get("side") or "buy",
            amount=float(raw.get("amount") or 0.0) * per_contract,
            price=float(price) if price and order_type == "limit" else None,
            stop_price=float(trigger_price) if trigger_price else None,
            filled=float(raw.get("filled") or 0.0) * per_contract,
            average=float(raw["average"]) if raw.get("average") else None,
            status=status,
            reduce_only=bool(raw.get("reduceOnly")),
            received_at=ts / 1000.0 if ts else None,
        )
        self._remember(order, trigger or order_type == "stop_market")
        return order

    def _uses_trigger_endpoints(self, order_type: str) -> bool:
        return order_type == "stop_market" and self.config.exchange_id in SEPARATE_TRIGGER_ORDERS

    def _lookup_order(self, venue_cid: str, symbol: str | None, *, trigger: bool | None = None) -> Order | None:
        """The order with this client order id, or None. Raises typed errors (used inside reconcile)."""
        import ccxt

        exchange = self._ready_exchange(f"lookup order {venue_cid}")
        candidates = self._candidate_symbols(symbol, venue_cid)
        kinds = [trigger] if trigger is not None else [False, True] if self.config.exchange_id in SEPARATE_TRIGGER_ORDERS else [False]
        for sym in candidates:
            for is_trigger in kinds:
                try:
                    raw = self._fetch_by_client_id(exchange, venue_cid, sym, bool(is_trigger))
                except ccxt.OrderNotFound:
                    continue
                except ccxt.BaseError as exc:
                    err = self._translate(exc, f"lookup order {venue_cid}", mutating=False)
                    if isinstance(err, NotFoundError):
                        continue
                    raise err from None  # redacted: the ccxt error text carries the signed URL
                # Only an order that carries our id is ours: Hyperliquid's "unknownOid" parses to an order
                # without an id, and a venue that ignores a filter answers someone else's orders.
                if raw is None or raw.get("id") is None or raw.get("clientOrderId") not in (None, venue_cid):
                    continue
                return self._to_order(raw, trigger=bool(is_trigger))
        return None

    def _fetch_by_client_id(self, exchange, venue_cid: str, symbol: str, trigger: bool) -> dict | None:
        """The raw ccxt order with this client order id in `symbol`, or None (raises ccxt errors)."""
        exchange_id = self.config.exchange_id
        if exchange_id == "bybit":
            # ccxt's fetch_order refuses UTA accounts (ArgumentsRequired) and never maps clientOrderId; Bybit
            # filters its open and history lists by orderLinkId (open first: history lags).
            query = {"orderLinkId": venue_cid}
            rows = exchange.fetch_open_orders(symbol, None, None, query) or exchange.fetch_canceled_and_closed_orders(
                symbol, None, None, query)
            return next((r for r in rows if r.get("clientOrderId") == venue_cid), None)
        if exchange_id == "krakenfutures":
            # ccxt's fetch_order sends orderIds=[None]; orders/status takes the client ids as cliOrdIds.
            rows = exchange.fetch_orders(None, None, None, {"cliOrdIds": venue_cid})
            return next((r for r in rows if r.get("clientOrderId") == venue_cid), None)
        params: dict[str, Any] = {"clientOrderId": venue_cid}
        if trigger:
            params["trigger"] = True
        return exchange.fetch_order(None, symbol, params)

    def _candidate_symbols(self, symbol: str | None, venue_cid: str | None = None) -> list[str]:
        if symbol:
            return [symbol]
        with self._cache_lock:
            known = self._order_symbols.get(venue_cid or "")
        if known:
            return [known]
        if self._allowed:
            return sorted(self._allowed)
        markets = self._exchange.markets or {}
        return sorted(s for s, m in markets.items() if m.get("swap") and m.get("active", True) is not False)

    def create_order(
        self,
        symbol: str,
        type: OrderType,
        side: Side,
        amount: float,
        price: float | None = None,
        *,
        client_order_id: str,
        reduce_only: bool = False,
        stop_price: float | None = None,
    ) -> Order:
        require_client_order_id(client_order_id)
        self._refuse_if_read_only(f"create_order {client_order_id}")
        if self._allowed and symbol not in self._allowed and not reduce_only:
            # Closing is always allowed: a stop-loss must be able to flatten anything it finds.
            raise BusinessError(f"{self.name}: {symbol} is not in the venue's symbol allowlist", code="symbol_not_allowed")
        if type == "stop_market" and stop_price is None:
            raise ValueError("a stop_market order needs a stop_price")
        self._refuse_if_hedge_mode(f"create_order {client_order_id}")
        venue_cid = self._venue_client_id(client_order_id)
        trigger = self._uses_trigger_endpoints(type)
        with self._cache_lock:
            self._order_symbols[venue_cid] = symbol
        if self.config.precheck_client_order_id:
            found = self._call(lambda ex: self._lookup_order(venue_cid, symbol, trigger=trigger), what=f"lookup order {client_order_id}")
            if found is not None:
                log.info("venue %s: order %s already exists (%s); not sending it again", self.name, client_order_id, found.status)
                return found.model_copy(update={"client_order_id": client_order_id})
        params: dict[str, Any] = {CLIENT_ORDER_ID_PARAMS.get(self.config.exchange_id, "clientOrderId"): venue_cid}
        if reduce_only:
            params["reduceOnly"] = True
        if type == "stop_market":
            params["triggerPrice"] = stop_price
            if self.config.exchange_id == "bybit":
                # ccxt refuses a Bybit trigger order without it: a sell stop fires on a fall, a buy stop on a rise.
                params["triggerDirection"] = "descending" if side == "sell" else "ascending"
            if self.config.exchange_id == "okx":
                params["algoClOrdId"] = venue_cid  # the id OKX keeps for an algo order (and ccxt looks up by)
        ccxt_type = "limit" if type == "limit" else "market"

        def place(ex) -> Order:
            import ccxt

            # Contracts for ccxt; rounded so that e.g. 0.3 / 0.1 is 3 contracts, not 2.999... (truncated to 2).
            contracts = round(amount / self._base_per_contract(symbol), 8)
            send_price = price
            if ccxt_type == "market" and price is None and self.config.exchange_id == "hyperliquid":
                send_price = self._hyperliquid_reference_price(ex, symbol, stop_price if type == "stop_market" else None)
            try:
                raw = ex.create_order(symbol, ccxt_type, side, contracts, send_price, dict(params))
            except ccxt.BaseError as exc:
                err = self._translate(exc, f"create_order {client_order_id}", mutating=True)
                if isinstance(err, BusinessError) and err.code == "duplicate_client_order_id":
                    # An open order already carries this id: that order is the answer.
                    found = self._lookup_order(venue_cid, symbol, trigger=trigger)
                    if found is not None:
                        return found.model_copy(update={"client_order_id": client_order_id})
                raise err from None  # redacted: the ccxt error text carries the signed URL
            return self._to_order(raw, client_order_id=client_order_id, trigger=trigger)

        def reconcile() -> Order | None:
            found = self._lookup_order(venue_cid, symbol, trigger=trigger)
            return None if found is None else found.model_copy(update={"client_order_id": client_order_id})

        order = self._call(place, what=f"create_order {client_order_id}", mutating=True, reconcile=reconcile)
        log.info("venue %s: order %s %s %s %s -> %s", self.name, client_order_id, side, amount, symbol, order.status)
        return order

    def _hyperliquid_reference_price(self, ex, symbol: str, stop_price: float | None) -> float:
        """The price ccxt bounds a Hyperliquid market order with (its IOC limit is this +/- ccxt's slippage, 5%).

        Hyperliquid has no true market order and ccxt refuses one without a price: a stop's is its
        trigger, a market order's the current mark.
        """
        if stop_price is not None:
            return float(stop_price)
        ticker = ex.fetch_ticker(symbol)
        info = ticker.get("info") if isinstance(ticker.get("info"), dict) else {}
        # ccxt's hyperliquid ticker carries the mark only in info.markPx (last/close are the mid).
        price = ticker.get("markPrice") or info.get("markPx") or ticker.get("last") or ticker.get("close")
        if not price:
            raise BusinessError(f"{self.name}: no price for {symbol} to bound a market order with", code="no_price")
        return float(price)

    def fetch_order_by_client_id(self, client_order_id: str, symbol: str | None = None) -> Order | None:
        venue_cid = self._venue_client_id(client_order_id)
        found = self._call(lambda ex: self._lookup_order(venue_cid, symbol), what=f"fetch_order {client_order_id}")
        return None if found is None else found.model_copy(update={"client_order_id": client_order_id})

    def _symbol_of(self, order_id: str) -> str | None:
        with self._cache_lock:
            return self._order_symbols.get(order_id)

    def cancel_order(self, order_id: str, symbol: str | None = None) -> Order:
        self._refuse_if_read_only(f"cancel_order {order_id}")
        symbol = symbol or self._symbol_of(order_id)
        if symbol is None:
            match = next((o for o in self.fetch_open_orders() if o.id == order_id), None)
            if match is None:
                raise NotFoundError(f"{self.name}: no open order {order_id}; pass its symbol", code="order_not_found")
            symbol = match.symbol
        separate = self.config.exchange_id in SEPARATE_TRIGGER_ORDERS  # elsewhere a stop is cancelled like any order
        with self._cache_lock:
            kinds = [separate and order_id in self._trigger_orders]
        if not kinds[0] and separate:
            kinds.append(True)

        def cancel(ex) -> Order:
            import ccxt

            last: ExternalServiceError | None = None
            for trigger in kinds:
                params = {"trigger": True} if trigger else {}
                try:
                    raw = ex.cancel_order(order_id, symbol, params)
                    if raw.get("amount") is None:  # Binance's algo cancel (and Hyperliquid's) answers ids only: read it back
                        # Hyperliquid's cancel answers "success" where an order status would be.
                        status = {"success": "canceled"}.get(raw.get("status"), raw.get("status")) or "canceled"
                        raw = {**raw, "id": raw.get("id") or order_id, "symbol": raw.get("symbol") or symbol, "status": status}
                        try:
                            fetched = ex.fetch_order(order_id, symbol, params)
                            if fetched.get("id") is not None:  # Hyperliquid's "unknownOid" parses to an order without one
                                raw = {**fetched, "status": status}
                        except ccxt.BaseError:
                            pass
                    return self._to_order(raw, trigger=trigger, assume_status="canceled")
                except ccxt.BaseError as exc:
                    err = self._translate(exc, f"cancel_order {order_id}", mutating=True)
                    if not isinstance(err, NotFoundError):
                        raise err from None  # redacted: the ccxt error text carries the signed URL
                    last = err
                # Binance answers "unknown order" for a cancelled *and* for a filled order: read it.
                try:
                    current = self._to_order(ex.fetch_order(order_id, symbol, params), trigger=trigger)
                except ccxt.OrderNotFound:
                    continue
                except ccxt.BaseError as exc:
                    err = self._translate(exc, f"fetch_order {order_id}", mutating=False)
                    if isinstance(err, NotFoundError):
                        continue
                    raise err from None  # redacted: the ccxt error text carries the signed URL
                if current.status == "canceled":
                    return current
                raise BusinessError(f"{self.name}: order {order_id} is {current.status}; cannot cancel it", code="order_not_open")
            raise last or NotFoundError(f"{self.name}: no order {order_id}", code="order_not_found")

        # Cancelling is idempotent here (a cancelled order is read back), so re-sending reconciles.
        return self._call(cancel, what=f"cancel_order {order_id}", mutating=True, reconcile=lambda: None)

    def fetch_open_orders(self, symbol: str | None = None) -> list[Order]:
        def fetch(ex) -> list[Order]:
            if symbol is None:
                raws = self._read_all(ex, ex.fetch_open_orders, lambda params: ex.fetch_open_orders(None, None, None, params))
            elif self.config.exchange_id == "bybit":
                raws = ex.fetch_open_orders(symbol, None, None, {"paginate": True})
            else:
                raws = ex.fetch_open_orders(symbol)
            orders = [self._to_order(raw) for raw in raws]
            if self.config.exchange_id in SEPARATE_TRIGGER_ORDERS:
                orders += [self._to_order(raw, trigger=True) for raw in ex.fetch_open_orders(symbol, None, None, {"trigger": True})]
            return [o for o in orders if o.status == "open"]

        return self._call(fetch, what="fetch_open_orders")

    @property
    def has_order_history(self) -> bool:
        return self.config.exchange_id in ORDER_HISTORY_EXCHANGES

    @property
    def order_history_lag_seconds(self) -> float:
        """How long after an order `fetch_orders` may still not show it (0: never); see ORDER_HISTORY_LAG_SECONDS."""
        return ORDER_HISTORY_LAG_SECONDS.get(self.config.exchange_id, 0.0)

    @property
    def fetch_orders(self) -> Callable[..., list[Order]]:
        """`fetch_orders(symbol, since=None)`: every order of `symbol` (open, filled, cancelled) placed since
        `since` (epoch seconds; default `ORDER_HISTORY_LOOKBACK_SECONDS` ago), the simulator client's order history.

        Only on exchanges whose history the client reads whole (`ORDER_HISTORY_EXCHANGES`); elsewhere the
        attribute does not exist, so callers that probe for a history (`getattr(venue, "fetch_orders", None)`)
        see none. A read that cannot be whole answers an empty `IncompleteOrderHistory`, never part of one.
        """
        if not self.has_order_history:
            raise AttributeError(f"{self.name} ({self.config.exchange_id}): no order history the client can read "
                                 "whole (docs/ccxt-conformance.md § 8)")
        return self._fetch_order_history

    def _fetch_order_history(self, symbol: str, since: float | None = None) -> list[Order]:
        if not symbol:
            raise ValueError(f"{self.name}: fetch_orders needs a symbol (the history is read per symbol)")
        exchange_id = self.config.exchange_id
        since = time.time() - ORDER_HISTORY_LOOKBACK_SECONDS if since is None else float(since)

        def fetch(ex) -> list[Order]:
            now_ms = int(ex.milliseconds())
            since_ms = int(since * 1000)
            if now_ms - since_ms > ORDER_HISTORY_MAX_AGE_SECONDS[exchange_id] * 1000:
                return self._incomplete(symbol, f"{exchange_id} keeps no order history that far back")
            page = ORDER_HISTORY_PAGE_SIZE[exchange_id]
            has = getattr(ex, "has", {}) or {}
            if exchange_id == "binanceusdm":
                rows = self._binance_history(ex, symbol, since_ms, now_ms, page, has)
            elif exchange_id == "bybit":
                rows = self._bybit_history(ex, symbol, since_ms, now_ms, page)
            elif exchange_id == "hyperliquid":
                rows = self._hyperliquid_history(ex, symbol, since_ms, page)
            else:
                rows = self._okx_history(ex, symbol, since_ms, page, has)
            if isinstance(rows, IncompleteOrderHistory):
                return rows
            by_id: dict[str, dict] = {}
            for raw in rows:  # an order read open and then closed: the later read wins
                if raw.get("id") is not None:
                    by_id[str(raw["id"])] = raw
            return [self._to_order(raw) for raw in sorted(by_id.values(), key=lambda r: r.get("timestamp") or 0)]

        return self._call(fetch, what=f"fetch_orders {symbol}")

    def _incomplete(self, symbol: str, why: str) -> IncompleteOrderHistory:
        reason = f"{self.name}: order history of {symbol} not read whole: {why}"
        log.warning("venue %s", reason)
        return IncompleteOrderHistory(reason)

    def _binance_history(self, ex, symbol: str, since_ms: int, now_ms: int, page: int, has: dict) -> list[dict]:
        """GET /fapi/v1/allOrders?symbol&startTime&endTime&limit: oldest first from startTime, so a full page is
        only the beginning; paged on by the last order's time (orders in that millisecond come again: by id)."""
        if not has.get("fetchOrders"):
            return self._incomplete(symbol, "ccxt has no fetchOrders for it")
        rows: list[dict] = []
        start = since_ms
        for _ in range(ORDER_HISTORY_MAX_PAGES):
            batch = ex.fetch_orders(symbol, start, page, {"until": now_ms})
            rows += batch
            if len(batch) < page:
                return rows
            start = max(int(r.get("timestamp") or start) for r in batch)
        return self._incomplete(symbol, f"more than {ORDER_HISTORY_MAX_PAGES} pages of {page} orders")

    def _okx_history(self, ex, symbol: str, since_ms: int, page: int, has: dict) -> list[dict]:
        """OKX has no all-orders read (ccxt: fetchOrders False): open orders (trade/orders-pending), then the
        filled (trade/orders-history state=filled) and cancelled (state=canceled) ones since `begin`. Open first:
        an order that fills between the reads shows in the later one. A full page (100) may hide older orders."""
        missing = [name for name in ("fetchOpenOrders", "fetchClosedOrders", "fetchCanceledOrders") if not has.get(name)]
        if missing:
            return self._incomplete(symbol, f"ccxt lacks {', '.join(missing)}")
        rows: list[dict] = []
        for what, read in (("open", lambda: ex.fetch_open_orders(symbol, None, page)),
                           ("filled", lambda: ex.fetch_closed_orders(symbol, since_ms, page)),
                           ("cancelled", lambda: ex.fetch_canceled_orders(symbol, since_ms, page))):
            batch = read()
            if len(batch) >= page:
                return self._incomplete(symbol, f"{len(batch)} {what} orders, a full page of OKX's {page}")
            rows += batch
        return rows

    def _bybit_history(self, ex, symbol: str, since_ms: int, now_ms: int, page: int) -> list[dict]:
        """Open orders (GET /v5/order/realtime), then the closed ones since `since` (GET /v5/order/history with
        startTime/endTime), each paged by Bybit's cursor; open first, as on OKX. ccxt's own readers
        (fetch_open_orders, fetch_canceled_and_closed_orders) are not used: they drop rows older than `since` on
        the client and hide the page's length and cursor, so a full page could pass for the last one. Here a page
        shorter than `limit` ends a read; a full page without a cursor, or more pages than the bound, is
        incomplete. The history lags order updates (Bybit says so): `order_history_lag_seconds` tells the hedge
        (ORDER_HISTORY_LAG_SECONDS), which takes an absence as proof only past that lag."""
        market = ex.market(symbol)
        query = {"category": "inverse" if market.get("inverse") else "linear", "symbol": market["id"], "limit": page}
        max_pages = ORDER_HISTORY_MAX_PAGES_BY_EXCHANGE.get("bybit", ORDER_HISTORY_MAX_PAGES)
        rows: list[dict] = []
        for what, read, extra in (("open", ex.privateGetV5OrderRealtime, {}),
                                  ("closed", ex.privateGetV5OrderHistory, {"startTime": since_ms, "endTime": now_ms})):
            cursor = None
            for _ in range(max_pages):
                request = {**query, **extra, **({"cursor": cursor} if cursor else {})}
                result = (read(request) or {}).get("result") or {}
                batch = result.get("list") or []
                rows += [ex.parse_order(raw, market) for raw in batch]
                if len(batch) < page:
                    break
                cursor = result.get("nextPageCursor")
                if not cursor:
                    return self._incomplete(symbol, f"a full page of {page} {what} orders without a next-page cursor")
            else:
                return self._incomplete(symbol, f"more than {max_pages} pages of {page} {what} orders")
        return rows

    def _hyperliquid_history(self, ex, symbol: str, since_ms: int, cap: int) -> list[dict]:
        """Open orders (frontendOpenOrders, via ccxt's fetch_open_orders), then `historicalOrders`: the account's
        most recent `cap` (2000) order states, every market, no time filter, no paging (the implicit call, not
        ccxt's fetch_orders, which filters by symbol and `since` before the length can be seen). Fewer than `cap`
        rows is everything the venue keeps, so it reaches back to any `since`; `cap` rows may have cut older ones
        off: incomplete. One order shows once per state (open, then filled): the latest state is kept."""
        market = ex.market(symbol)
        rows = list(ex.fetch_open_orders(symbol))
        user, _params = ex.handle_public_address("fetchOrders", {})
        request: dict[str, Any] = {"type": "historicalOrders", "user": user}
        dex = ex.get_dex_from_hip3_symbol(market) if hasattr(ex, "get_dex_from_hip3_symbol") else None
        if dex is not None:
            request["dex"] = dex
        answer = ex.publicPostInfo(request)
        states = answer if isinstance(answer, list) else []
        if len(states) >= cap:
            return self._incomplete(symbol, f"{len(states)} order states, Hyperliquid's cap of {cap} (older ones cut off)")
        latest: dict[str, dict] = {}
        for state in states:
            oid = str((state.get("order") or {}).get("oid"))
            if oid not in latest or int(state.get("statusTimestamp") or 0) >= int(latest[oid].get("statusTimestamp") or 0):
                latest[oid] = state
        for state in latest.values():
            raw = ex.parse_order(state, market)
            if raw.get("symbol") == symbol and int(raw.get("timestamp") or 0) >= since_ms:
                rows.append(raw)
        out = []
        for raw in rows:
            # The saga's 32-hex keys went out as cloids with a 0x prefix (`_venue_client_id`); after a restart the
            # client no longer knows that mapping, so a cloid it never hashed is shown as the key it came from.
            cid = raw.get("clientOrderId")
            with self._cache_lock:
                known = cid in self._caller_ids
            if cid and not known and _HYPERLIQUID_CLOID.fullmatch(cid):
                raw = {**raw, "clientOrderId": cid[2:]}
            out.append(raw)
        return out

    def cancel_all_orders(self, symbol: str | None = None) -> list[Order]:
        self._refuse_if_read_only("cancel_all_orders")
        open_orders = self.fetch_open_orders(symbol)
        groups: dict[tuple[str, bool], list[Order]] = {}
        separate = self.config.exchange_id in SEPARATE_TRIGGER_ORDERS  # elsewhere one cancel-all takes the stops too
        with self._cache_lock:
            for order in open_orders:
                groups.setdefault((order.symbol, separate and order.id in self._trigger_orders), []).append(order)
        if not getattr(self._ready_exchange("cancel_all_orders"), "has", {}).get("cancelAllOrders", True):
            # ccxt has no cancel-all for this exchange (OKX, Hyperliquid): cancel each listed order on its own.
            return [self._cancel_listed(order) for order in open_orders]
        if symbol is not None and (symbol, False) not in groups:
            groups[(symbol, False)] = []  # an order placed since the listing goes too
        for (sym, trigger), _orders in sorted(groups.items()):
            params = {"trigger": True} if trigger else {}
            self._call(
                lambda ex, sym=sym, params=params: ex.cancel_all_orders(sym, params),
                what=f"cancel_all_orders {sym}{' (conditional)' if trigger else ''}",
                mutating=True,
                reconcile=lambda: None,  # idempotent: sending it again is the reconciliation
            )
        return [o.model_copy(update={"status": "canceled"}) for o in open_orders]

    def _cancel_listed(self, order: Order) -> Order:
        """Cancel one order found open by cancel_all_orders; one gone or filled since the listing is no error."""
        try:
            return self.cancel_order(order.id, order.symbol)
        except NotFoundError:
            return order.model_copy(update={"status": "canceled"})
        except BusinessError as exc:
            if exc.code != "order_not_open":
                raise
            log.info("venue %s: %s", self.name, exc)
            return order.model_copy(update={"status": "closed"})

    # ------------------------------------------------------------------ transfers

    def fetch_deposit_withdraw_fees(self) -> list[NetworkFee]:
        def fetch(ex) -> list[NetworkFee]:
            if not getattr(ex, "has", {}).get("fetchDepositWithdrawFees", True):  # ccxt: None/False = not supported
                # ccxt cannot tell this exchange's withdrawal fees (Kraken Futures, Hyperliquid): no rail leaves it.
                log.info("venue %s: ccxt's %s has no withdrawal fees; no withdrawal rails", self.name, self.config.exchange_id)
                return []
            fees = ex.fetch_deposit_withdraw_fees()
            rails = []
            for code, entry in sorted(fees.items()):
                currency = (ex.currencies or {}).get(code) or {}
                for network, fee in sorted((entry.get("networks") or {}).items()):
                    withdraw_fee = (fee.get("withdraw") or {}).get("fee")
                    if withdraw_fee is None:
                        continue
                    net = (currency.get("networks") or {}).get(network) or {}
                    if net.get("withdraw") is False:
                        continue
                    limits = (net.get("limits") or {}).get("withdraw") or {}
                    eta_minutes = (net.get("info") or {}).get("estimatedArrivalTime")
                    rails.append(
                        NetworkFee(
                            asset=code,
                            network=network,
                            fee=float(withdraw_fee),
                            fee_rate=float((fee.get("withdraw") or {}).get("percentage") or 0.0),
                            min_amount=float(limits.get("min") or 0.0),
                            max_amount=float(limits["max"]) if limits.get("max") else None,
                            eta_seconds=float(eta_minutes) * 60.0 if eta_minutes else 0.0,
                        )
                    )
            return rails

        return self._call(fetch, what="fetch_deposit_withdraw_fees")

    def fetch_deposit_address(self, asset: str, network: str) -> DepositAddress:
        configured = self.config.fiat_deposit_addresses.get(f"{asset}:{network}")
        if configured:
            # Fiat rails (SEPA) have no crypto deposit address: the account's IBAN is configuration.
            # The venue's payment reference (if it needs one to credit the deposit) travels as the tag.
            reference = self.config.fiat_deposit_references.get(f"{asset}:{network}") or None
            return DepositAddress(venue=self.name, asset=asset, network=network, address=configured, tag=reference)
        raw = self._call(lambda ex: ex.fetch_deposit_address(asset, {"network": network}), what=f"fetch_deposit_address {asset}/{network}")
        # What the exchange answered for, not what was asked: the saga refuses an address of another chain
        # (an exchange may answer its default network's). Only where it does not say is the request kept.
        return DepositAddress(venue=self.name, asset=raw.get("currency") or asset, network=raw.get("network") or network,
                              address=raw["address"], tag=raw.get("tag") or None)

    def _to_withdrawal(self, raw: dict, idempotency_key: str) -> Withdrawal:
        info = raw.get("info") or {}
        status = raw.get("status")
        if self._family == "binance" and str(info.get("status", "")).isdigit():
            status = {0: "pending", 1: "canceled", 2: "pending", 3: "failed", 4: "broadcast", 5: "failed", 6: "completed"}.get(
                int(info["status"]), "pending"
            )
        else:
            status = {"ok": "completed", "pending": "broadcast" if raw.get("txid") else "pending"}.get(status, status)
        if status not in {"pending", "broadcast", "completed", "canceled", "failed"}:
            status = "pending"
        fee = raw.get("fee") or {}
        ts = raw.get("timestamp")
        return Withdrawal(
            id=str(raw["id"]),
            idempotency_key=idempotency_key,
            from_venue=self.name,
            address=raw.get("address") or raw.get("addressTo") or "",
            asset=raw.get("currency") or "",
            amount=float(raw.get("amount") or 0.0),
            fee=float(fee.get("cost") or 0.0),
            network=raw.get("network") or "",
            status=status,
            created_at=ts / 1000.0 if ts else None,
        )

    def _lookup_withdrawal(self, idempotency_key: str) -> Withdrawal | None:
        """The withdrawal sent with this key, or None. Raises typed errors."""
        import ccxt

        param = WITHDRAW_CLIENT_ID_PARAMS.get(self.config.exchange_id)
        if param is None:
            raise AmbiguousOutcomeError(
                f"{self.name}: {self.config.exchange_id} has no client withdrawal id; cannot look {idempotency_key} up"
            )
        exchange = self._ready_exchange(f"lookup withdrawal {idempotency_key}")
        try:
            rows = exchange.fetch_withdrawals(None, None, None, {param: idempotency_key})
        except ccxt.BaseError as exc:
            raise self._translate(exc, f"lookup withdrawal {idempotency_key}", mutating=False) from None  # the ccxt error (URL, query) only in redacted form
        matches = [r for r in rows if (r.get("info") or {}).get(param) == idempotency_key]
        if not matches:
            return None
        return self._to_withdrawal(max(matches, key=lambda r: r.get("timestamp") or 0), idempotency_key)

    @property
    def withdrawals_idempotent(self) -> bool:
        """Whether a withdrawal can carry our key and be looked up by it (an entry in `WITHDRAW_CLIENT_ID_PARAMS`).

        Without that a retried or relaunched withdrawal could be sent twice, so `withdraw` refuses it locally;
        the rebalance planner offers no withdrawal rail out of such a venue.
        """
        return WITHDRAW_CLIENT_ID_PARAMS.get(self.config.exchange_id) is not None

    def withdraw(
        self,
        asset: str,
        amount: float,
        *,
        address: str,
        network: str,
        idempotency_key: str,
        tag: str | None = None,
        on_top_up: TopUpReport | None = None,
    ) -> Withdrawal:
        """See `VenueClient.withdraw`; `on_top_up` reports each top-up transfer (`reports_withdrawal_top_ups`)."""
        require_withdrawal_key(idempotency_key)
        self._refuse_if_read_only(f"withdraw {idempotency_key}")
        if self.config.withdraw_allowlist and address not in self.config.withdraw_allowlist:
            raise BusinessError(f"{self.name}: withdrawal address is not in the allowlist", code="address_not_allowed")
        if self.withdrawal_fee_mode is None:
            raise BusinessError(
                f"{self.name}: unknown whether {self.config.exchange_id} adds the withdrawal fee on top or deducts it; "
                f"set withdrawal_fee_mode ('added' or 'deducted') in CCXT_VENUES[{self.name}]", code="bad_config")
        if not self.withdrawals_idempotent:
            # Refused here, before any request: a definite "nothing was sent" the saga can compensate around.
            raise BusinessError(
                f"{self.name}: {self.config.exchange_id} takes no client withdrawal id, so withdrawal "
                f"{idempotency_key} could not be looked up after a retry; refused, nothing was sent",
                code="withdrawal_not_idempotent")
        with self._withdraw_lock:
            return self._withdraw_once(asset, amount, address=address, network=network, idempotency_key=idempotency_key,
                                       tag=tag, report=on_top_up or _no_report)

    @property
    def reports_withdrawal_top_ups(self) -> bool:
        """Whether `withdraw` tops up a wallet apart from the trading account and reports it through `on_top_up`
        (see `VenueClient.reports_withdrawal_top_ups`): Binance and OKX unless `withdraw_from_account` is none."""
        return self.withdraw_from_account != WITHDRAW_FROM_NONE

    def _withdraw_once(self, asset: str, amount: float, *, address: str, network: str, idempotency_key: str,
                       tag: str | None, report: TopUpReport) -> Withdrawal:
        param = WITHDRAW_CLIENT_ID_PARAMS[self.config.exchange_id]
        # Money leaves here: look first, every time (a relaunched saga sends the same key).
        found = self._call(lambda ex: self._lookup_withdrawal(idempotency_key), what=f"lookup withdrawal {idempotency_key}")
        if found is not None:
            log.info("venue %s: withdrawal %s already exists (%s)", self.name, idempotency_key, found.status)
            return found
        # `amount` must arrive: an exchange that deducts the fee from the requested amount is asked for amount + fee.
        requested, fee = float(amount), 0.0
        if self.withdrawal_fee_mode == "deducted":
            requested, fee = self._amount_with_fee(asset, network, float(amount))
        params: dict[str, Any] = {"network": network, param: idempotency_key}
        if tag:
            params["tag"] = tag
        return self._top_up_and_send(asset, amount, address, network, idempotency_key, requested, fee, params, report)

    def _top_up_and_send(self, asset: str, amount: float, address: str, network: str, idempotency_key: str,
                         requested: float, fee: float, params: dict[str, Any], report: TopUpReport) -> Withdrawal:
        moved = 0.0
        if self.withdraw_from_account != WITHDRAW_FROM_NONE:
            # The exchange pays from its withdrawal wallet, not from the trading account: it must hold what leaves.
            leaves = requested if self.withdrawal_fee_mode == "deducted" else requested + self._fee_on_top(asset, network, requested)
            moved = self._top_up_withdrawal_wallet(asset, leaves, idempotency_key, report)
            if self._family == "binance":
                params["walletType"] = BINANCE_WALLET_TYPES[self.withdraw_from_account]

        def send(ex) -> Withdrawal:
            raw = ex.withdraw(asset, requested, address, dict(params))
            # Binance answers only the id: read the full record, but never let that read
            # turn a sent withdrawal into a "failure" the caller would retry.
            try:
                found = self._lookup_withdrawal(idempotency_key)
            except ExternalServiceError as exc:
                log.warning("venue %s: withdrawal %s sent; reading it back failed (%s)", self.name, idempotency_key, exc)
                found = None
            if found is not None:
                return found
            return Withdrawal(
                id=str(raw.get("id")),
                idempotency_key=idempotency_key,
                from_venue=self.name,
                address=address,
                asset=asset,
                amount=float(amount),
                fee=fee,
                network=network,
                status="pending",
                created_at=time.time(),
            )

        try:
            withdrawal = self._call(send, what=f"withdraw {idempotency_key}", mutating=True,
                                    reconcile=lambda: self._lookup_withdrawal(idempotency_key))
        except ExternalServiceError as exc:
            if moved > 0:
                # Not moved back here: a retry of this withdrawal (same key) sends it without a second top-up, and
                # the saga's compensation moves the recorded top-up back (`take_withdrawal_top_up`); fetch_balance
                # counts it meanwhile, so the venue's books keep it.
                log.error("venue %s: withdrawal %s failed (%s) after %s %s were moved %s -> %s for it; they stay in the "
                          "%s wallet, counted in the venue's balance, until a retry of this withdrawal sends them "
                          "or the saga's compensation moves them back",
                          self.name, idempotency_key, exc, format(moved, ".8g"), asset,
                          TRADING_ACCOUNTS[self.config.exchange_id], self.withdraw_from_account, self.withdraw_from_account)
            raise
        log.info("venue %s: withdrawal %s of %s %s over %s (requested %s, fee %s) is %s", self.name, idempotency_key,
                 amount, asset, network, requested, self.withdrawal_fee_mode, withdrawal.status)
        return withdrawal

    def _fee_on_top(self, asset: str, network: str, amount: float) -> float:
        """The network fee an exchange that adds it on top takes out of the withdrawal wallet besides `amount`."""
        rail = next((f for f in self.fetch_deposit_withdraw_fees() if f.asset == asset and f.network == network), None)
        if rail is None:
            raise BusinessError(f"{self.name}: no withdrawal fee for {asset} over {network}; not sending",
                                code="unsupported_network")
        return rail.fee + rail.fee_rate * amount

    def _round_up_to_currency(self, asset: str, value: float) -> float:
        """`value` rounded up to the currency's precision (ccxt rounds half-up: a hair short would stay short)."""
        currency = ((self._exchange.currencies if self._exchange is not None else None) or {}).get(asset) or {}
        tick = currency.get("precision")
        if not isinstance(tick, (int, float)) or not 0 < tick < 1:
            tick = 1e-8
        return round(math.ceil(value / tick - 1e-6) * tick, 12)

    def _withdrawal_wallet_free(self, asset: str) -> float:
        wallet = self._call(self._read_withdrawal_wallet, what=f"fetch_balance {self.withdraw_from_account}")
        self._note_withdrawal_wallet(wallet)
        held = wallet.get(asset)
        return held.free if held is not None else 0.0

    def _top_up_withdrawal_wallet(self, asset: str, leaves: float, idempotency_key: str,
                                  report: TopUpReport | None = None) -> float:
        """Move `leaves` (all that will leave the withdrawal wallet for this withdrawal) from the trading account
        into the withdrawal wallet, less what earlier attempts of the same withdrawal already moved there; returns
        what was moved now.

        The full amount, whatever the wallet already holds: the plan moves money out of the trading account, and
        the wallet may hold an operator's own money (or a deposit, or another withdrawal's leftover), which a
        withdrawal must not spend. What counts as already moved for this key: this client's confirmed top-ups of
        it (`_topped_up`, kept across calls), or the caller's durable record of them (`restore_withdrawal_top_up`,
        for a retry in another process), whichever is larger.

        OKX (`TRANSFER_CLIENT_ID_EXCHANGES`): every top-up carries a clientId derived from the withdrawal key and
        what earlier attempts already moved (`_top_up_client_id`), and is resolved by it (`_top_up_by_client_id`).

        Binance's universal transfer carries no client id. After an ambiguous outcome (timeout, dropped answer,
        5xx) the wallet is re-read (up to `max_attempts` times, with the retry delay): seen to grow by the amount,
        the transfer moved. Otherwise its outcome stays unknown: it counts against the bound (`leaves`) and is
        never resent, so what may have left the trading account for this withdrawal never exceeds what the
        withdrawal pays, even when the exchange applied it and shows it late. Nothing is withdrawn then
        (`TransientError`): sending would pay from whatever the wallet holds, an operator's money included. A
        retry of the same withdrawal on this client looks for the unknown transfer again and sends once it shows.

        Every transfer is reported through `report(event, amount, transfer_id, wallet_before)` (see
        `VenueClient.reports_withdrawal_top_ups`): `sending` before it is requested, `moved` / `not_moved` once
        known. Binance's transfers carry no id: `transfer_id` is the label `_top_up_client_id` (never sent). A
        top-up an earlier process left unknown (`restore_pending_top_up`) is looked for the same way, against the
        wallet's balance that process read before sending it (without one: against this key's confirmed top-ups,
        all the saga knows to be in the wallet for it); seen there, it counts, and is reported `moved`.
        """
        report = report or _no_report
        if self.internal_transfer_ids:
            return self._top_up_by_client_id(asset, leaves, idempotency_key, report)
        source, target = TRADING_ACCOUNTS[self.config.exchange_id], self.withdraw_from_account
        with self._top_ups_lock:
            unknown = self._top_up_unknown.get(idempotency_key)
            confirmed = self._topped_up.get(idempotency_key, 0.0)
        if unknown is not None:
            amount, before, transfer_id = unknown
            if before is None:  # restored without the balance before it: what the saga knows it put there
                before = confirmed
            if self._withdrawal_wallet_free(asset) + 1e-9 < before + amount:
                raise TransientError(
                    f"{self.name}: a {format(amount, '.8g')} {asset} top-up {source}->{target} for withdrawal "
                    f"{idempotency_key} still has an unknown outcome (not seen in the {target} wallet); not resent, "
                    "nothing withdrawn")
            with self._top_ups_lock:
                self._top_up_unknown.pop(idempotency_key, None)
            self._confirm_top_up(idempotency_key, amount)
            report("moved", amount, transfer_id, None)
            log.info("venue %s: the %s %s top-up for withdrawal %s with an unknown outcome has arrived in %s",
                     self.name, format(amount, ".8g"), asset, idempotency_key, target)
        with self._top_ups_lock:
            already = self._topped_up.get(idempotency_key, 0.0)
        amount = self._round_up_to_currency(asset, leaves - already)
        if amount <= 0:
            return 0.0
        before = self._withdrawal_wallet_free(asset)
        transfer_id = self._top_up_client_id(idempotency_key, already)
        what = f"transfer {format(amount, '.8g')} {asset} {source}->{target} for withdrawal {idempotency_key}"
        report("sending", amount, transfer_id, before)  # before the request: a crash after it leaves the record
        try:
            self._call(lambda ex: ex.transfer(asset, amount, source, target), what=what, mutating=True)
        except AmbiguousOutcomeError as exc:
            log.warning("venue %s: %s: outcome unknown (%s); reading the %s wallet to see whether it arrived",
                        self.name, what, exc, target)
            if not self._await_arriving(asset, before=before, amount=amount):
                with self._top_ups_lock:
                    self._top_up_unknown[idempotency_key] = (amount, before, transfer_id)
                raise TransientError(
                    f"{self.name}: {what}: outcome unknown and not seen in the {target} wallet; not resent, nothing "
                    "withdrawn (a retry of this withdrawal looks for it again)") from exc
        except ExternalServiceError:  # not ambiguous: refused, or known not to have been applied
            report("not_moved", amount, transfer_id, None)
            raise
        self._confirm_top_up(idempotency_key, amount)
        report("moved", amount, transfer_id, None)
        log.info("venue %s: moved %s %s %s -> %s for withdrawal %s", self.name, format(amount, ".8g"), asset,
                 source, target, idempotency_key)
        return amount

    @staticmethod
    def _top_up_client_id(idempotency_key: str, already: float) -> str:
        """The clientId of the top-up that follows `already` (what earlier attempts of withdrawal `idempotency_key`
        moved): a retry that knows the same `already` (this client, or the saga's record in another process) sends
        and looks up the same transfer; after a confirmed top-up the next one of the same key gets a new id."""
        return transfer_client_id("tu", "top-up", idempotency_key, format(already, ".8f"))

    def _top_up_by_client_id(self, asset: str, leaves: float, idempotency_key: str, report: TopUpReport) -> float:
        """`_top_up_withdrawal_wallet` for exchanges whose transfers carry a clientId (OKX).

        After an ambiguous send, see `_transfer_by_client_id`. If OKX reports `success` the top-up is counted. If it
        reports `failed`, or has no record after the polling window, the top-up is sent once more with the same
        clientId. If it is still `pending`, the top-up stays unknown: it counts against the bound, is not resent,
        and nothing is withdrawn (`TransientError`). A retry of the same withdrawal on this client then looks it
        up by its clientId before anything is sent. If OKX now reports `success`, it is counted at the amount OKX
        reports. If it reports `failed`, or not found twice `TRANSFER_NOT_FOUND_GRACE_SECONDS` apart, it is sent
        with the same clientId. If it is still
        `pending`, or the lookup fails, nothing is sent. Without an unknown outcome on this client nothing is
        looked up before a send, so an OKX withdrawal's requests are the same as before. A retry in another process
        is told of an unknown top-up by the caller's record (`restore_pending_top_up`, with its clientId) and
        resolves it the same way; without that record it would send the same clientId again (the id is
        deterministic), and whether OKX refuses that as a duplicate is not documented (§ 5c). Each transfer is
        reported through `report` (see `_top_up_withdrawal_wallet`), with its clientId.
        """
        source, target = TRADING_ACCOUNTS[self.config.exchange_id], self.withdraw_from_account
        moved = 0.0
        for _ in range(3):  # a found transfer may cover only part of what leaves: at most one more is sent
            with self._top_ups_lock:
                already = self._topped_up.get(idempotency_key, 0.0)
                unknown = self._top_up_unknown.pop(idempotency_key, None)
            amount = self._round_up_to_currency(asset, leaves - already)
            if amount <= 0:
                return moved
            # An unknown top-up keeps the id it was sent with (an earlier process's, from the caller's record).
            client_id = unknown[2] if unknown is not None else self._top_up_client_id(idempotency_key, already)
            what = (f"transfer {format(amount, '.8g')} {asset} {source}->{target} for withdrawal {idempotency_key} "
                    f"(clientId {client_id})")
            state, found_amount = self._transfer_state(client_id) if unknown is not None else ("not_found", None)
            if unknown is not None and state == "not_found":
                # The earlier attempt may have been sent moments ago (its process died right after), and OKX does
                # not say how late a transfer shows in transfer-state: the grace a client gives its own ambiguous
                # send (`_await_transfer_state`) before "not found" may mean "never got it" and a resend.
                self._caller.sleep(TRANSFER_NOT_FOUND_GRACE_SECONDS)
                state, found_amount = self._transfer_state(client_id)
            if state == "success":
                counted = found_amount if found_amount is not None else unknown[0]
                self._confirm_top_up(idempotency_key, counted)
                report("moved", counted, client_id, None)
                moved += counted
                log.info("venue %s: %s: the earlier attempt with an unknown outcome was made (OKX: success, %s %s); "
                         "counted, not sent",
                         self.name, what, format(counted, ".8g"), asset)
                continue
            # Read as for Binance, though not to decide anything here: it keeps the wallet's WARNING note current.
            before = self._withdrawal_wallet_free(asset)
            if state in ("pending", "unknown"):
                with self._top_ups_lock:
                    self._top_up_unknown[idempotency_key] = unknown
                raise TransientError(
                    f"{self.name}: {what}: an earlier attempt's transfer is {state} at OKX; not resent, nothing "
                    "withdrawn (a retry of this withdrawal looks it up again)")
            report("sending", amount, client_id, before)  # before the request: a crash after it leaves the record
            try:
                outcome = self._transfer_by_client_id(asset, amount, source, target, what=what, client_id=client_id)
            except AmbiguousOutcomeError:  # (resolved inside; kept unknown should one ever come through)
                with self._top_ups_lock:
                    self._top_up_unknown[idempotency_key] = (amount, before, client_id)
                raise
            except ExternalServiceError:  # refused, or not applied (after its one resend)
                report("not_moved", amount, client_id, None)
                raise
            if outcome != "moved":
                with self._top_ups_lock:
                    self._top_up_unknown[idempotency_key] = (amount, before, client_id)
                raise TransientError(
                    f"{self.name}: {what}: outcome still unknown at OKX; not resent, nothing withdrawn (a retry of "
                    "this withdrawal looks it up again by its clientId)")
            self._confirm_top_up(idempotency_key, amount)
            report("moved", amount, client_id, None)
            log.info("venue %s: moved %s %s %s -> %s for withdrawal %s (clientId %s)", self.name,
                     format(amount, ".8g"), asset, source, target, idempotency_key, client_id)
            return moved + amount
        raise TransientError(f"{self.name}: top-up for withdrawal {idempotency_key}: earlier transfers found at OKX "
                             "do not add up to what leaves; nothing withdrawn")

    @property
    def internal_transfer_ids(self) -> bool:
        """Whether this venue's internal transfers carry a clientId the client looks them up by (OKX). A caller of
        `sweep_to_trading` may then pass a `transfer_key` that makes the ids deterministic."""
        return self.config.exchange_id in TRANSFER_CLIENT_ID_EXCHANGES

    def _transfer_state(self, client_id: str) -> tuple[str, float | None]:
        """(state, amount OKX reports) of the transfer sent with `client_id`. The state is one of `success`,
        `pending` or `failed`. It is `not_found` when OKX has no such transfer, and `unknown` when the lookup failed
        or the answer is about another transfer. One request, no retry: the caller polls."""
        import ccxt

        try:
            exchange = self._ensure_ready()
            raw = exchange.privateGetAssetTransferState({"clientId": client_id, "type": "0"})
        except ccxt.BaseError as exc:
            code = venue_error_code(exc)
            if code in OKX_TRANSFER_NOT_FOUND_CODES or (code == _CLIENT_ID_ERROR_CODE and "clientId" in str(exc)):
                return "not_found", None
            log.warning("venue %s: transfer-state lookup of clientId %s failed: %s", self.name, client_id,
                        self._redact(f"{type(exc).__name__}: {exc}"))
            return "unknown", None
        rows = raw.get("data") if isinstance(raw, dict) else None
        if not rows:
            return "not_found", None
        row = rows[0] if isinstance(rows[0], dict) else {}
        if row.get("clientId") not in (None, "", client_id):
            log.warning("venue %s: transfer-state lookup of clientId %s answered clientId %s", self.name, client_id,
                        row.get("clientId"))
            return "unknown", None
        state = row.get("state")
        try:
            found_amount = float(row["amt"]) if row.get("amt") not in (None, "") else None
        except (TypeError, ValueError):
            found_amount = None
        return (state if state in TRANSFER_STATES else "unknown"), found_amount

    def _await_transfer_state(self, client_id: str) -> str:
        """After a send with an ambiguous outcome, poll the transfer's state by `client_id` up to `max_attempts`
        times, with the retry delay before each lookup. `success` or `failed` ends the polling at once.
        `not_found` counts only when the last lookup still finds nothing, no lookup ever saw it `pending`, and at
        least `TRANSFER_NOT_FOUND_GRACE_SECONDS` have passed since the send. If the window was shorter (the
        delays are jittered), the client waits out the rest and looks once more. Any other outcome is `pending` or
        `unknown`."""
        state, seen, waited = "unknown", False, 0.0
        for attempt in range(1, self._caller.retry.max_attempts + 2):
            if attempt > self._caller.retry.max_attempts:  # one more look, once the grace has passed
                if state != "not_found" or seen or waited >= TRANSFER_NOT_FOUND_GRACE_SECONDS:
                    break
                delay = TRANSFER_NOT_FOUND_GRACE_SECONDS - waited
            else:
                delay = self._caller.retry.delay(attempt)
            self._caller.sleep(delay)
            waited += delay
            state, _ = self._transfer_state(client_id)
            if state in ("success", "failed"):
                return state
            seen = seen or state == "pending"
        return "unknown" if state == "not_found" and seen else state

    def _transfer_by_client_id(self, asset: str, amount: float, source: str, target: str, *, what: str,
                               client_id: str) -> str:
        """Send one internal transfer carrying `client_id`, resolving an ambiguous outcome by that id. Returns
        `moved`, or `unknown` when OKX still reports it `pending` (or cannot be asked) after the polling window.

        After an ambiguous send (timeout, dropped answer, 5xx) the transfer is looked up (`_await_transfer_state`).
        If it is `success`, it moved. If it is `failed`, or not found after the polling window, OKX did not apply
        it, and it is sent once more with the same clientId. That is the only resend. If the resend is also not
        applied, this raises `TransientError` (nothing moved). A refusal (`BusinessError`) or a failure known not
        to be applied (`TransientError`) is raised as it comes.
        """
        for send in (1, 2):
            try:
                self._call(lambda ex: ex.transfer(asset, amount, source, target, {"clientId": client_id}),
                           what=what, mutating=True)
                return "moved"
            except AmbiguousOutcomeError as exc:
                log.warning("venue %s: %s: outcome unknown (%s); looking it up by its clientId", self.name, what, exc)
                state = self._await_transfer_state(client_id)
                if state == "success":
                    log.info("venue %s: %s: OKX reports it success", self.name, what)
                    return "moved"
                if state in ("failed", "not_found") and send == 1:
                    log.warning("venue %s: %s: OKX reports it %s (not applied); sending it again with the same "
                                "clientId", self.name, what, state)
                    continue
                if state in ("failed", "not_found"):
                    raise TransientError(f"{self.name}: {what}: not applied after one resend (OKX: {state}); nothing "
                                         "moved") from exc
                log.warning("venue %s: %s: OKX still reports it %s; not resent", self.name, what, state)
                return "unknown"
        raise AssertionError("unreachable")

    def _confirm_top_up(self, idempotency_key: str, amount: float) -> None:
        with self._top_ups_lock:  # at once: a later failure of this withdrawal must not lose it
            self._top_ups[idempotency_key] = self._top_ups.get(idempotency_key, 0.0) + amount
            self._topped_up[idempotency_key] = self._topped_up.get(idempotency_key, 0.0) + amount

    def _await_arriving(self, asset: str, *, before: float, amount: float) -> bool:
        """After a top-up of `amount` with unknown outcome: re-read the withdrawal wallet (with the retry delay, up
        to `max_attempts` times) until it shows at least `before + amount`. Whether it arrived."""
        for attempt in range(1, self._caller.retry.max_attempts + 1):
            self._caller.sleep(self._caller.retry.delay(attempt))
            if self._withdrawal_wallet_free(asset) + 1e-9 >= before + amount:
                return True
        return False

    def restore_withdrawal_top_up(self, idempotency_key: str, amount: float) -> None:
        """The caller's durable record of what earlier attempts of withdrawal `idempotency_key` (in this process
        or another) moved into the withdrawal wallet (see `VenueClient`): its top-up moves only the rest."""
        if not isinstance(amount, (int, float)) or isinstance(amount, bool) or not math.isfinite(amount) or amount < 0:
            raise ValueError(f"{self.name}: restore_withdrawal_top_up({idempotency_key}): amount must be a finite "
                             f"number >= 0, got {amount!r}")
        with self._top_ups_lock:
            self._topped_up[idempotency_key] = max(self._topped_up.get(idempotency_key, 0.0), float(amount))

    def restore_pending_top_up(self, idempotency_key: str, amount: float, transfer_id: str, *,
                               wallet_before: float | None = None) -> None:
        """The caller's record of a top-up for withdrawal `idempotency_key` that an earlier attempt reported
        `sending` and never resolved (see `VenueClient.restore_pending_top_up`). The next `withdraw` of the key
        resolves it before moving anything: OKX looks `transfer_id` (its clientId) up (`success` counts, `failed` or
        not found is sent once more with that id, `pending` or a failed lookup sends and withdraws nothing); Binance
        reads the wallet (holding `wallet_before` + `amount`, it counts; else nothing is sent or withdrawn). This
        client's own memory of an unknown top-up for the key wins (it is the same transfer, or a later one)."""
        if not isinstance(amount, (int, float)) or isinstance(amount, bool) or not math.isfinite(amount) or amount <= 0:
            raise ValueError(f"{self.name}: restore_pending_top_up({idempotency_key}): amount must be a finite "
                             f"number > 0, got {amount!r}")
        if not isinstance(transfer_id, str) or not transfer_id:
            raise ValueError(f"{self.name}: restore_pending_top_up({idempotency_key}): transfer_id is required")
        if wallet_before is not None and (not isinstance(wallet_before, (int, float)) or isinstance(wallet_before, bool)
                                          or not math.isfinite(wallet_before)):
            raise ValueError(f"{self.name}: restore_pending_top_up({idempotency_key}): wallet_before must be a "
                             f"finite number or None, got {wallet_before!r}")
        before = None if wallet_before is None else float(wallet_before)
        with self._top_ups_lock:
            self._top_up_unknown.setdefault(idempotency_key, (float(amount), before, transfer_id))

    def take_withdrawal_top_up(self, idempotency_key: str) -> float:
        """What a top-up confirmed moving into the withdrawal wallet for withdrawal `idempotency_key` since the
        last call (see `VenueClient`). A top-up transfer whose outcome stayed unknown is not counted: the bound
        of the sweep back errs low, so a sweep never moves more than the saga put there."""
        with self._top_ups_lock:
            return round(self._top_ups.pop(idempotency_key, 0.0), 12)

    def sweep_to_trading(self, asset: str, *, at_most: float,
                         on_transfer: Callable[[str, float], None] | None = None,
                         transfer_key: str | None = None) -> float:
        """Move at most `at_most` of `asset` from the withdrawal wallet (where Binance credits deposits to
        spot/funding and OKX to funding, and where a failed withdrawal leaves its top-up) into the trading
        account; returns what is known to have moved.

        The wallet may hold money that is not the caller's (an operator's own USDT in Binance spot): the caller
        bounds the sweep by what it put there (`at_most`, required), and the sweep moves
        `min(at_most, free balance)` rounded down to the currency's precision. The same account names as the
        withdrawal's top-up, reversed (Binance `spot`/`funding` -> `linear`: universal transfer MAIN_UMFUTURE /
        FUNDING_UMFUTURE; OKX `funding` -> `trading`: 6 -> 18).

        On OKX (`internal_transfer_ids`) each transfer carries the clientId
        `transfer_client_id("sw", transfer_key, n)`, where n counts this call's transfers from 0. The caller's
        `transfer_key` must be different for every call: the rebalance step derives it from the saga's key and the
        number of transfers its notes record. Without a `transfer_key`, a random key is drawn per call: the ids
        are then good only for the lookups of this call. An ambiguous outcome is resolved by that id
        (`_transfer_by_client_id`). If OKX reports it `success`, it moved. If OKX reports it `failed`, or has no
        record of it after the polling window, it is sent once more with the same id. If it is still `pending`,
        its outcome is unknown, with the same rule as below.

        Binance's internal transfers carry no id we could look up. After an ambiguous outcome (timeout, dropped
        answer, 5xx) the wallet is read again, up to `max_attempts` times with the retry delay: seen to drop by
        the amount, the transfer moved. Otherwise its outcome stays unknown and it still counts against `at_most`:
        it is never resent, so what may have moved never exceeds the bound even when the exchange applied it
        but does not show it yet. The cost of that rule is an under-sweep (the money stays in the withdrawal
        wallet, counted in the venue's balances until a person moves it), never someone else's
        money moved. `on_transfer` reports each transfer (see `VenueClient.sweep_to_trading`); the caller
        records the unknown ones. A transfer refused for insufficient balance after an earlier transfer of this
        sweep is `not_moved` and the wallet is read again; a first one refused is the exchange's word
        (BusinessError). Venues switched off (`sweep_deposits_to_trading`) or with no such wallet, or
        `at_most` <= 0: 0.0 and no request. Read-only venues refuse (BusinessError `read_only`) before any
        request. Holds the withdrawal lock: a withdrawal's top-up on this client is never swept back between
        its top-up and its send.
        """
        if not isinstance(at_most, (int, float)) or isinstance(at_most, bool) or not math.isfinite(at_most):
            raise ValueError(f"{self.name}: sweep_to_trading({asset}): at_most must be a finite number, "
                             f"got {at_most!r}")
        if not self.sweep_deposits_to_trading or at_most <= 0:
            return 0.0
        source, target = self.withdraw_from_account, TRADING_ACCOUNTS[self.config.exchange_id]
        self._refuse_if_read_only(f"sweep {asset} {source}->{target}")
        with self._withdraw_lock:
            key = None
            if self.internal_transfer_ids:
                key = transfer_key if transfer_key else f"random:{uuid.uuid4().hex}"
            return self._sweep_once(asset, source, target, float(at_most),
                                    on_transfer or (lambda _event, _amount: None), transfer_key=key)

    def _sweep_once(self, asset: str, source: str, target: str, at_most: float,
                    report: Callable[[str, float], None], *, transfer_key: str | None = None) -> float:
        moved = 0.0
        unknown = 0.0  # sent with an outcome never resolved: counts against the bound, never resent
        attempts = self._caller.retry.max_attempts
        held = self._withdrawal_wallet_free(asset)
        for attempt in range(1, attempts + 1):
            amount = self._round_down_to_currency(asset, min(held, at_most - moved - unknown))
            if amount <= 0:
                break
            what = (f"transfer {format(amount, '.8g')} {asset} {source}->{target} "
                    f"(sweep, at most {format(at_most, '.8g')})")
            client_id = None
            if transfer_key is not None:  # OKX: the n-th transfer of this call (n = attempt - 1)
                client_id = transfer_client_id("sw", "sweep", transfer_key, attempt - 1)
                what += f" (clientId {client_id})"
            report("sending", amount)  # before the request: a crash after it leaves a record of the unknown
            try:
                if client_id is not None:
                    if self._transfer_by_client_id(asset, amount, source, target, what=what,
                                                   client_id=client_id) != "moved":
                        unknown += amount
                        log.warning("venue %s: %s: outcome still unknown at OKX; counted against the bound and not "
                                    "resent (it may have moved): look it up by its clientId", self.name, what)
                        held = self._withdrawal_wallet_free(asset)
                        continue
                else:
                    self._call(lambda ex: ex.transfer(asset, amount, source, target), what=what, mutating=True)
            except AmbiguousOutcomeError as exc:
                log.warning("venue %s: %s: outcome unknown (%s); reading the %s wallet to see whether it left",
                            self.name, what, exc, source)
                held, left = self._await_leaving(asset, before=held, amount=amount)
                if left:
                    moved += amount
                    report("moved", amount)
                    continue
                unknown += amount
                log.warning("venue %s: %s: outcome still unknown; counted against the bound and not resent (it may "
                            "have moved): if %s %s of it is still in the %s wallet, move it by hand", self.name, what,
                            format(amount, ".8g"), asset, source)
                continue
            except TransientError:
                report("not_moved", amount)  # not ambiguous: the request was not applied (connect error, breaker)
                raise
            except BusinessError as exc:
                report("not_moved", amount)  # refused: nothing moved
                if exc.code != "insufficient_funds" or not (unknown or moved):
                    raise
                # The wallet still showed what an earlier transfer of this sweep had already moved: read again.
                log.warning("venue %s: %s refused (%s) after an earlier transfer of this sweep; reading the %s wallet "
                            "again", self.name, what, exc, source)
                self._caller.sleep(self._caller.retry.delay(attempt))
                held = self._withdrawal_wallet_free(asset)
                continue
            moved += amount
            report("moved", amount)
            log.info("venue %s: moved %s %s %s -> %s (what this saga put there, into the trading account)", self.name,
                     format(amount, ".8g"), asset, source, target)
            held = self._withdrawal_wallet_free(asset)
        return round(moved, 12)

    def _await_leaving(self, asset: str, *, before: float, amount: float) -> tuple[float, bool]:
        """After a transfer of `amount` with unknown outcome: re-read the wallet (with the retry delay, up to
        `max_attempts` times) until it shows at most `before - amount`. Returns (last free balance, whether it left)."""
        held = before
        for attempt in range(1, self._caller.retry.max_attempts + 1):
            self._caller.sleep(self._caller.retry.delay(attempt))
            held = self._withdrawal_wallet_free(asset)
            if held <= before - amount + 1e-9:
                return held, True
        return held, False

    def _round_down_to_currency(self, asset: str, value: float) -> float:
        """`value` rounded down to the currency's precision (a transfer of a hair more than is there is refused)."""
        currency = ((self._exchange.currencies if self._exchange is not None else None) or {}).get(asset) or {}
        tick = currency.get("precision")
        if not isinstance(tick, (int, float)) or not 0 < tick < 1:
            tick = 1e-8
        return max(0.0, round(math.floor(value / tick + 1e-6) * tick, 12))

    def _amount_with_fee(self, asset: str, network: str, amount: float) -> tuple[float, float]:
        """(amount to request, network fee) so that `amount` arrives on an exchange that deducts the fee.

        The fee is read now, right before sending (the exchange deducts its current fee, not the plan's);
        the request is rounded *up* to 8 decimals so the destination never gets a hair less.
        """
        rail = next((f for f in self.fetch_deposit_withdraw_fees() if f.asset == asset and f.network == network), None)
        if rail is None:
            raise BusinessError(f"{self.name}: no withdrawal fee for {asset} over {network}; not sending",
                                code="unsupported_network")
        if not 0.0 <= rail.fee_rate < 1.0:
            raise BusinessError(f"{self.name}: {asset}/{network} fee rate {rail.fee_rate} cannot be grossed up",
                                code="unsupported_network")
        requested = math.ceil((amount + rail.fee) / (1.0 - rail.fee_rate) * 1e8 - 1e-6) / 1e8
        return requested, round(requested - amount, 12)

    def fetch_withdrawal(self, idempotency_key: str) -> Withdrawal | None:
        return self._call(lambda ex: self._lookup_withdrawal(idempotency_key), what=f"fetch_withdrawal {idempotency_key}")

    def cancel_withdrawal(self, withdrawal_id: str) -> Withdrawal:
        # ccxt has no unified withdrawal cancel, and Binance offers none through its API.
        raise BusinessError(
            f"{self.name}: {self.config.exchange_id} withdrawals cannot be cancelled through the API "
            f"({withdrawal_id}); treat the withdrawal as the pivot",
            code="not_supported",
        )

    def transfer(self, asset: str, amount: float, from_account: str, to_account: str) -> dict:
        """An internal move between the account's wallets, by ccxt account name (Binance: `linear` = USDⓈ-M futures,
        `spot`, `funding`; OKX: `trading`, `funding`). `withdraw` tops its wallet up itself.

        Exchanges take no client id for these, so an ambiguous outcome is raised to
        the caller (check the balances, then decide) instead of being resent.
        """
        self._refuse_if_read_only(f"transfer {amount} {asset} {from_account}->{to_account}")
        raw = self._call(
            lambda ex: ex.transfer(asset, amount, from_account, to_account),
            what=f"transfer {amount} {asset} {from_account}->{to_account}",
            mutating=True,
        )
        return {"id": raw.get("id"), "asset": asset, "amount": amount, "from": from_account, "to": to_account}

    def close(self) -> None:
        exchange, self._exchange = self._exchange, None
        self._ready = False
        session = getattr(exchange, "session", None)
        if session is not None:
            session.close()


# ---------------------------------------------------------------------------- the resource


class CcxtVenueConfig(Config):
    """One venue account of `CcxtExchangeResource` (credentials: pass `EnvVar`s)."""

    name: str = Field(description="The desk's venue name (as in EXCHANGE_VENUES and asset keys).")
    exchange_id: str = Field(description="ccxt exchange class, e.g. 'binanceusdm'.")
    api_key: str = Field(default="", repr=False, description="EnvVar('CCXT_<VENUE>_API_KEY').")
    secret: str = Field(default="", repr=False, description="EnvVar('CCXT_<VENUE>_SECRET').")
    password: str = Field(default="", repr=False, description="EnvVar('CCXT_<VENUE>_PASSWORD') (OKX passphrase).")
    sandbox: bool = Field(default=False, description="ccxt set_sandbox_mode(True): the exchange's testnet.")
    demo_trading: bool = Field(default=False, description="ccxt enable_demo_trading(True) (Binance demo trading).")
    api_base_url: str = Field(default="", description="Point every API URL at this host (the simulator).")
    api_urls: dict[str, str] = Field(default_factory=dict, description="Override single entries of ccxt urls['api'].")
    symbols: list[str] = Field(default_factory=list, description="Allowlist for orders that add exposure (empty: all).")
    withdraw_allowlist: list[str] = Field(default_factory=list, description="Only these withdrawal addresses (empty: any).")
    fiat_deposit_addresses: dict[str, str] = Field(default_factory=dict, description="'EUR:SEPA' -> the account's IBAN.")
    fiat_deposit_references: dict[str, str] = Field(
        default_factory=dict,
        description="'EUR:SEPA' -> the payment reference the venue needs to credit a bank deposit to this account.",
    )
    default_funding_interval_hours: float | None = Field(default=None, description="Funding interval when the venue gives none.")
    options_json: str = Field(default="", description="Extra ccxt options as a JSON object.")
    read_only: bool = Field(default=False, description="Refuse every order, cancel, withdrawal and transfer.")
    rate_limit_ms: int | None = Field(default=None, description="ccxt rateLimit override (None: the exchange's).")
    withdrawal_fee_mode: str | None = Field(
        default=None,
        description="'added' (the network fee comes on top of the withdrawn amount) or 'deducted' (it comes out of "
        "it, e.g. Binance); empty: the exchange's documented default (DEFAULT_WITHDRAWAL_FEE_MODES).",
    )
    withdraw_from_account: str | None = Field(
        default=None,
        description="The wallet the exchange pays withdrawals from, topped up from the trading account before each "
        "withdrawal: 'spot' or 'funding' (Binance), 'funding' (OKX), 'none' (no top-up); empty: the exchange's "
        "default (DEFAULT_WITHDRAW_FROM_ACCOUNT).",
    )
    sweep_deposits_to_trading: bool | None = Field(
        default=None,
        description="Move what a rebalance delivered (and a failed withdrawal's recorded top-up), never more, from the "
        "withdrawal wallet into the trading account; empty: yes whenever withdraw_from_account is not 'none'.",
    )

    def to_settings(self, *, timeout_seconds: float, precheck_client_order_id: bool) -> CcxtVenueSettings:
        try:
            options = json.loads(self.options_json) if self.options_json else {}
        except ValueError as exc:
            raise ValueError(f"{self.name}: options_json is not JSON: {exc}") from None
        if not isinstance(options, dict):
            raise ValueError(f"{self.name}: options_json must be a JSON object")
        return CcxtVenueSettings(
            name=self.name,
            exchange_id=self.exchange_id,
            api_key=self.api_key,
            secret=self.secret,
            password=self.password,
            sandbox=self.sandbox,
            demo_trading=self.demo_trading,
            api_base_url=self.api_base_url,
            api_urls=dict(self.api_urls),
            symbols=tuple(self.symbols),
            withdraw_allowlist=tuple(self.withdraw_allowlist),
            fiat_deposit_addresses=dict(self.fiat_deposit_addresses),
            fiat_deposit_references=dict(self.fiat_deposit_references),
            default_funding_interval_hours=self.default_funding_interval_hours,
            options=options,
            read_only=self.read_only,
            timeout_seconds=timeout_seconds,
            rate_limit_ms=self.rate_limit_ms,
            precheck_client_order_id=precheck_client_order_id,
            withdrawal_fee_mode=self.withdrawal_fee_mode,
            withdraw_from_account=self.withdraw_from_account,
            sweep_deposits_to_trading=self.sweep_deposits_to_trading,
        )


class CcxtExchangeResource(ExchangeResource):
    """Real venues through ccxt: one `CcxtVenueClient` per configured venue account."""

    accounts: list[CcxtVenueConfig] = Field(description="One entry per venue account.")
    timeout_seconds: float = 10.0
    max_attempts: int = 4
    retry_base_delay: float = 0.2
    breaker_failure_threshold: int = 5
    breaker_reset_seconds: float = 10.0
    precheck_client_order_id: bool = Field(
        default=True, description="Look every order up by its client order id before sending it (never off in prod)."
    )

    _clients: dict[str, CcxtVenueClient] = PrivateAttr(default_factory=dict)
    _clients_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def venue_names(self) -> list[str]:
        return [v.name for v in self.accounts]

    def venue(self, name: str) -> CcxtVenueClient:
        config = next((v for v in self.accounts if v.name == name), None)
        if config is None:
            raise UnknownVenueError(f"unknown venue {name!r}; configured venues: {', '.join(self.venue_names())}")
        with self._clients_lock:
            client = self._clients.get(name)
            if client is None:
                client = CcxtVenueClient(
                    config.to_settings(
                        timeout_seconds=self.timeout_seconds, precheck_client_order_id=self.precheck_client_order_id
                    ),
                    retry=RetrySettings(max_attempts=self.max_attempts, base_delay=self.retry_base_delay),
                    breaker=breaker_for(f"venue:{name}", self.breaker_failure_threshold, self.breaker_reset_seconds),
                )
                self._clients[name] = client
            return client

    def close(self) -> None:
        with self._clients_lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()

    def teardown_after_execution(self, context) -> None:
        self.close()


# ---------------------------------------------------------------------------- from the environment


class _VenueEnv(BaseModel):
    """One venue's entry in CCXT_VENUES (non-secret settings only)."""

    model_config = ConfigDict(extra="forbid")

    exchange_id: str | None = None
    sandbox: bool = False
    demo_trading: bool = False
    api_base_url: str = ""
    api_urls: dict[str, str] = {}
    symbols: list[str] = []
    withdraw_allowlist: list[str] = []
    fiat_deposit_addresses: dict[str, str] = {}
    fiat_deposit_references: dict[str, str] = {}
    default_funding_interval_hours: float | None = None
    options: dict[str, Any] = {}
    read_only: bool = False
    rate_limit_ms: int | None = None
    withdrawal_fee_mode: Literal["added", "deducted"] | None = None
    withdraw_from_account: str | None = None
    sweep_deposits_to_trading: StrictBool | None = None


def credential_env_names(venue: str) -> dict[str, str]:
    """CCXT_<VENUE>_API_KEY / _SECRET / _PASSWORD for a venue name."""
    prefix = "CCXT_" + re.sub(r"[^A-Za-z0-9]", "_", venue).upper()
    return {"api_key": f"{prefix}_API_KEY", "secret": f"{prefix}_SECRET", "password": f"{prefix}_PASSWORD"}


# ccxt credential fields (`Exchange.requiredCredentials`) and their usual aliases, compared lower-case without
# '_'/'-'. CCXT_VENUES is not a secret: its `options` end up in the resource's `options_json`, which the UI shows.
# (`walletAddress` is public, so it is not listed.)
_CREDENTIAL_OPTION_KEYS = frozenset({
    "apikey", "secret", "password", "uid", "login", "twofa", "privatekey", "token",
    "apisecret", "secretkey", "passphrase",
})


def _credential_keys(options: dict[str, Any], path: str = "options") -> list[str]:
    """Paths (e.g. `options.apiKey`) of credential keys anywhere inside `options`; never their values."""
    found = []
    for key, value in options.items():
        where = f"{path}.{key}"
        if re.sub(r"[_\-]", "", str(key)).lower() in _CREDENTIAL_OPTION_KEYS:
            found.append(where)
        elif isinstance(value, dict):
            found += _credential_keys(value, where)
    return found


def _parse_ccxt_venues(raw: str) -> dict[str, _VenueEnv]:
    try:
        data = json.loads(raw or "{}")
    except ValueError as exc:
        raise settings.SettingError(f"CCXT_VENUES must be a JSON object: {exc}") from None
    if not isinstance(data, dict):
        raise settings.SettingError("CCXT_VENUES must be a JSON object of venue name -> settings")
    parsed = {}
    for name, entry in data.items():
        try:
            parsed[name] = _VenueEnv.model_validate(entry or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise settings.SettingError(f"CCXT_VENUES[{name}].{where}: {first['msg']}") from None
        credentials = _credential_keys(parsed[name].options)
        if credentials:
            env = credential_env_names(name)
            raise settings.SettingError(
                f"CCXT_VENUES[{name}].{', '.join(credentials)}: credentials are not accepted in options (CCXT_VENUES "
                f"is not a secret and the options are shown in the UI); set {env['api_key']}, {env['secret']} "
                f"and {env['password']} instead"
            )
    return parsed


def ccxt_exchange_from_env(deployment: str) -> CcxtExchangeResource:
    """The ccxt `exchange` resource from the environment (non-secrets read now, secrets as EnvVar)."""
    names = settings.get_list("EXCHANGE_VENUES", deployment)
    entries = _parse_ccxt_venues(settings.get("CCXT_VENUES", deployment=deployment))
    extra = sorted(set(entries) - set(names))
    if extra:
        raise settings.SettingError(f"CCXT_VENUES names venues not in EXCHANGE_VENUES: {', '.join(extra)}")
    venues = []
    for name in names:
        entry = entries.get(name, _VenueEnv())
        exchange_id = entry.exchange_id or DEFAULT_EXCHANGE_IDS.get(name)
        if not exchange_id:
            raise settings.SettingError(f"CCXT_VENUES[{name}].exchange_id is required (no default for {name!r})")
        for label, url in [("api_base_url", entry.api_base_url), *[(f"api_urls.{k}", v) for k, v in entry.api_urls.items()]]:
            try:
                check_endpoint(url, f"CCXT_VENUES[{name}].{label}")
            except ValueError as exc:
                raise settings.SettingError(str(exc)) from None
        fee_mode = entry.withdrawal_fee_mode or DEFAULT_WITHDRAWAL_FEE_MODES.get(exchange_id)
        if fee_mode is None:
            raise settings.SettingError(
                f"CCXT_VENUES[{name}].withdrawal_fee_mode is required for {exchange_id} (no documented default): "
                "'added' (the network fee comes on top of the withdrawn amount) or 'deducted' (it comes out of it)"
            )
        try:
            withdraw_from = withdraw_from_account_for(exchange_id, entry.withdraw_from_account)
        except ValueError as exc:
            raise settings.SettingError(f"CCXT_VENUES[{name}].withdraw_from_account: {exc}") from None
        try:
            sweep = sweep_deposits_for(withdraw_from, entry.sweep_deposits_to_trading)
        except ValueError as exc:
            raise settings.SettingError(f"CCXT_VENUES[{name}].sweep_deposits_to_trading: {exc}") from None
        for key, reference in entry.fiat_deposit_references.items():
            try:
                check_fiat_deposit_reference(key, reference, entry.fiat_deposit_addresses)
            except ValueError as exc:
                raise settings.SettingError(f"CCXT_VENUES[{name}].fiat_deposit_references.{key}: {exc}") from None
        if entry.sandbox and exchange_id in FUTURES_WITHOUT_SANDBOX:
            raise settings.SettingError(
                f"CCXT_VENUES[{name}].sandbox: ccxt refuses the {exchange_id} futures testnet; use demo_trading"
            )
        env = credential_env_names(name)
        for role in ("api_key", "secret"):
            if deployment == "prod" and not os.environ.get(env[role]):
                raise settings.SettingError(f"missing required secret {env[role]}: {role} of venue {name} ({exchange_id})")
        credentials = {role: EnvVar(var) for role, var in env.items() if os.environ.get(var)}
        venues.append(
            CcxtVenueConfig(
                name=name,
                exchange_id=exchange_id,
                sandbox=entry.sandbox,
                demo_trading=entry.demo_trading,
                api_base_url=entry.api_base_url,
                api_urls=entry.api_urls,
                symbols=entry.symbols,
                withdraw_allowlist=entry.withdraw_allowlist,
                fiat_deposit_addresses=entry.fiat_deposit_addresses,
                fiat_deposit_references=entry.fiat_deposit_references,
                default_funding_interval_hours=entry.default_funding_interval_hours,
                options_json=json.dumps(entry.options) if entry.options else "",
                read_only=entry.read_only,
                rate_limit_ms=entry.rate_limit_ms,
                withdrawal_fee_mode=fee_mode,
                withdraw_from_account=withdraw_from,
                sweep_deposits_to_trading=sweep,
                **credentials,
            )
        )
    return CcxtExchangeResource(accounts=venues)
