"""Venues of the exchange simulator over HTTP (`arb_orchestration.sim.exchange`).

`SimVenueClient` is one venue account: one `httpx.Client` (timeout, X-API-Key
header), every call through a `ResilientCaller` (retries with backoff and
jitter, Retry-After honoured, the process-wide breaker `venue:<name>`), and
typed results parsed into the domain models. Orders and withdrawals carry the
caller's idempotency key; after an ambiguous outcome (dropped connection,
timeout or 5xx after sending) the client looks the object up by that key and
only resubmits when the venue has no trace of it, so nothing happens twice.

`SimExchangeResource` is the `exchange` resource of the local deployment.
"""

from __future__ import annotations

import functools
import logging
import ssl
import threading
import time
from typing import Any, Callable, TypeVar
from urllib.parse import quote

import httpx
from pydantic import Field, PrivateAttr

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
from arb_orchestration.resources.errors import NotFoundError
from arb_orchestration.resources.http import send
from arb_orchestration.resources.resilience import (
    CircuitBreaker,
    ResilientCaller,
    RetrySettings,
    breaker_for,
)
from arb_orchestration.resources.venue import (
    ExchangeResource,
    UnknownVenueError,  # re-exported: callers import it from this module too
    VenueClient,
    require_client_order_id,
    require_withdrawal_key,
)

T = TypeVar("T")
log = logging.getLogger("arb_orchestration.resources.sim_venue")

API_KEY_HEADER = "X-API-Key"


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    # Building the default context (loading the CA bundle) costs ~0.1 s; one per
    # venue client per run adds up, and the context is safe to share.
    return httpx.create_ssl_context()


def _seg(value: str) -> str:
    """One URL path segment (client order ids and keys may hold '/', ':' ...)."""
    return quote(value, safe="")


class SimVenueClient(VenueClient):
    """One simulator venue account; blocking and thread-safe."""

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 5.0,
        retry: RetrySettings | None = None,
        breaker: CircuitBreaker | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.name = name
        self._base = f"/venues/{_seg(name)}"
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        # Plain-HTTP simulators need no CA bundle: skipping it keeps ~0.1 s off the first order.
        verify = _ssl_context() if base_url.startswith("https://") else False
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), timeout=timeout, headers=headers, transport=transport, verify=verify
        )
        self._breaker = breaker or breaker_for(f"venue:{name}")
        self._caller = ResilientCaller(self._breaker, retry or RetrySettings(), sleep=sleep)
        self._last_state = self._breaker.state
        self._state_lock = threading.Lock()

    def __repr__(self) -> str:  # never shows the API key
        return f"SimVenueClient(name={self.name!r}, base_url={str(self._http.base_url)!r})"

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ plumbing

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        return send(self._http, method, self._base + path, **kwargs)

    def _call(self, fn: Callable[[], T], *, what: str, reconcile: Callable[[], T | None] | None = None) -> T:
        try:
            return self._caller.call(fn, what=f"{self.name}: {what}", reconcile=reconcile)
        finally:
            self._note_breaker_state()

    def _note_breaker_state(self) -> None:
        with self._state_lock:
            state = self._breaker.state
            if state != self._last_state:
                level = logging.INFO if state == "closed" else logging.WARNING
                log.log(level, "venue %s: circuit breaker %s -> %s", self.name, self._last_state, state)
                self._last_state = state

    def _get(self, path: str, what: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self._call(lambda: self._send("GET", path, params=clean), what=what)

    def health(self) -> dict:
        self._note_breaker_state()
        return {"venue": self.name, "base_url": str(self._http.base_url), "breaker": self._breaker.snapshot()}

    # ------------------------------------------------------------------ market state

    def fetch_balance(self) -> dict[str, Balance]:
        rows = self._get("/balances", "fetch_balance")
        return {b.asset: b for b in (Balance.model_validate(row) for row in rows)}

    def fetch_positions(self) -> list[Position]:
        return [Position.model_validate(row) for row in self._get("/positions", "fetch_positions")]

    def fetch_funding_rates(self) -> list[FundingRate]:
        return [FundingRate.model_validate(row) for row in self._get("/funding-rates", "fetch_funding_rates")]

    def fetch_mark_prices(self) -> dict[str, float]:
        return {row["symbol"]: float(row["mark_price"]) for row in self._get("/tickers", "fetch_mark_prices")}

    # ------------------------------------------------------------------ orders

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
        body = {
            "symbol": symbol,
            "type": type,
            "side": side,
            "amount": amount,
            "client_order_id": client_order_id,
            "reduce_only": reduce_only,
        }
        if price is not None:
            body["price"] = price
        if stop_price is not None:
            body["stop_price"] = stop_price
        return self._call(
            lambda: Order.model_validate(self._send("POST", "/orders", json=body)),
            what=f"create_order {client_order_id}",
            reconcile=lambda: self._lookup_order(client_order_id),
        )

    def _lookup_order(self, client_order_id: str) -> Order | None:
        # Not through the caller: ResilientCaller retries this lookup itself.
        try:
            return Order.model_validate(self._send("GET", f"/orders/by-client-id/{_seg(client_order_id)}"))
        except NotFoundError:
            return None

    def cancel_order(self, order_id: str, symbol: str | None = None) -> Order:
        # Cancelling is idempotent on the venue (a cancelled order is returned as is),
        # so after an ambiguous outcome re-sending is the reconciliation.
        return self._call(
            lambda: Order.model_validate(self._send("DELETE", f"/orders/{_seg(order_id)}")),
            what=f"cancel_order {order_id}",
            reconcile=lambda: None,
        )

    def cancel_all_orders(self, symbol: str | None = None) -> list[Order]:
        params = {"symbol": symbol} if symbol else {}
        rows = self._call(
            lambda: self._send("DELETE", "/orders", params=params),
            what="cancel_all_orders",
            reconcile=lambda: None,
        )
        return [Order.model_validate(row) for row in rows]

    def fetch_open_orders(self, symbol: str | None = None) -> list[Order]:
        rows = self._get("/orders", "fetch_open_orders", status="open", symbol=symbol)
        return [Order.model_validate(row) for row in rows]

    def fetch_orders(self, symbol: str | None = None) -> list[Order]:
        """Every order of the venue (open, filled, cancelled), oldest first."""
        rows = self._get("/orders", "fetch_orders", status="all", symbol=symbol)
        return [Order.model_validate(row) for row in rows]

    def fetch_order_by_client_id(self, client_order_id: str, symbol: str | None = None) -> Order | None:
        return self._call(lambda: self._lookup_order(client_order_id), what=f"fetch_order {client_order_id}")

    # ------------------------------------------------------------------ transfers

    def fetch_deposit_withdraw_fees(self) -> list[NetworkFee]:
        return [NetworkFee.model_validate(row) for row in self._get("/networks", "fetch_deposit_withdraw_fees")]

    def fetch_deposit_address(self, asset: str, network: str) -> DepositAddress:
        row = self._get("/deposit-address", "fetch_deposit_address", asset=asset, network=network)
        return DepositAddress.model_validate(row)

    def withdraw(
        self,
        asset: str,
        amount: float,
        *,
        address: str,
        network: str,
        idempotency_key: str,
        tag: str | None = None,
    ) -> Withdrawal:
        require_withdrawal_key(idempotency_key)
        body = {
            "asset": asset,
            "amount": amount,
            "address": address,
            "network": network,
            "idempotency_key": idempotency_key,
        }
        if tag is not None:
            body["tag"] = tag
        return self._call(
            lambda: Withdrawal.model_validate(self._send("POST", "/withdrawals", json=body)),
            what=f"withdraw {idempotency_key}",
            reconcile=lambda: self._lookup_withdrawal(idempotency_key),
        )

    def _lookup_withdrawal(self, idempotency_key: str) -> Withdrawal | None:
        try:
            return Withdrawal.model_validate(self._send("GET", f"/withdrawals/{_seg(idempotency_key)}"))
        except NotFoundError:
            return None

    def fetch_withdrawal(self, idempotency_key: str) -> Withdrawal | None:
        return self._call(lambda: self._lookup_withdrawal(idempotency_key), what=f"fetch_withdrawal {idempotency_key}")

    def fetch_withdrawals(self) -> list[Withdrawal]:
        """Every withdrawal of the venue, oldest first."""
        return [Withdrawal.model_validate(row) for row in self._get("/withdrawals", "fetch_withdrawals")]

    def cancel_withdrawal(self, withdrawal_id: str) -> Withdrawal:
        # Idempotent on the venue (a cancelled withdrawal is returned as is): re-sending reconciles.
        return self._call(
            lambda: Withdrawal.model_validate(self._send("POST", f"/withdrawals/{_seg(withdrawal_id)}/cancel")),
            what=f"cancel_withdrawal {withdrawal_id}",
            reconcile=lambda: None,
        )


class SimExchangeResource(ExchangeResource):
    """Venues hosted by the local exchange simulator (`arb_orchestration.sim.exchange`)."""

    base_url: str
    api_key: str = Field(repr=False, description="EnvVar('EXCHANGE_SIM_API_KEY').")
    venue_list: list[str]
    timeout_seconds: float = 5.0
    max_attempts: int = 4
    retry_base_delay: float = 0.2
    breaker_failure_threshold: int = 5
    breaker_reset_seconds: float = 10.0

    _clients: dict[str, SimVenueClient] = PrivateAttr(default_factory=dict)
    _clients_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    # Tests may set this (e.g. an httpx.MockTransport) before the first `venue()` call.
    _transport: httpx.BaseTransport | None = PrivateAttr(default=None)

    def venue_names(self) -> list[str]:
        return list(self.venue_list)

    def retry_settings(self) -> RetrySettings:
        return RetrySettings(max_attempts=self.max_attempts, base_delay=self.retry_base_delay)

    def venue(self, name: str) -> SimVenueClient:
        if name not in self.venue_list:
            raise UnknownVenueError(f"unknown venue {name!r}; configured venues: {', '.join(self.venue_list)}")
        with self._clients_lock:
            client = self._clients.get(name)
            if client is None:
                client = SimVenueClient(
                    name,
                    self.base_url,
                    self.api_key or None,
                    timeout=self.timeout_seconds,
                    retry=self.retry_settings(),
                    breaker=breaker_for(
                        f"venue:{name}", self.breaker_failure_threshold, self.breaker_reset_seconds
                    ),
                    transport=self._transport,
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
