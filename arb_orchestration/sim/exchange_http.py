"""The exchange simulator's HTTP layer: routing, auth, fault injection, JSON.

`ExchangeApi.handle(ApiRequest) -> ApiResponse` is socket-free (the routes
call `ExchangeState`); `_Handler`/`SimHTTPServer` put it on a stdlib
`ThreadingHTTPServer` with HTTP/1.1 keep-alive, and close every open
connection on stop so a stopped simulator really stops answering.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel

from arb_orchestration.sim.exchange_faults import Fault, FaultInjector
from arb_orchestration.sim.exchange_state import ExchangeState, SimError
from arb_orchestration.sim.http_base import KeepAliveHandler, LoopbackHTTPServer

log = logging.getLogger("arb_orchestration.sim.exchange")

API_KEY_HEADER = "X-API-Key"


@dataclass
class ApiRequest:
    method: str
    segments: list[str]
    query: dict[str, str]
    body: Any
    headers: dict[str, str]
    received_at: float


@dataclass
class ApiResponse:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering (timeout after commit)
    hang_s: float = 0.0  # wait this long before dropping


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> ApiResponse:
    return ApiResponse(status, {"code": code, "message": message}, headers or {})


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


Handler = Callable[[ApiRequest, dict[str, str]], ApiResponse]

_ORDER_FIELDS = {"symbol", "type", "side", "amount", "price", "stop_price", "client_order_id", "reduce_only"}
_WITHDRAWAL_FIELDS = {"asset", "amount", "address", "network", "idempotency_key", "tag"}


class ExchangeApi:
    """Routes requests to `ExchangeState`, applying auth and injected faults first."""

    def __init__(
        self,
        state: ExchangeState,
        faults: FaultInjector,
        api_key: str | None = None,
        wait: Callable[[float], None] = time.sleep,
    ):
        self.state = state
        self.faults = faults
        self._api_key = api_key
        self._wait = wait
        # (method, pattern, endpoint name, handler, is_admin); "{x}" captures one segment.
        self._routes: list[tuple[str, tuple[str, ...], str, Handler, bool]] = []
        r = self._add
        r("GET", "health", "health", self._health, admin=True)
        r("GET", "venues", "list_venues", self._list_venues)
        r("GET", "venues/{v}/balances", "balances", self._balances)
        r("GET", "venues/{v}/positions", "positions", self._positions)
        r("GET", "venues/{v}/funding-rates", "funding_rates", self._funding_rates)
        r("GET", "venues/{v}/tickers", "tickers", self._tickers)
        r("GET", "venues/{v}/orders", "list_orders", self._list_orders)
        r("POST", "venues/{v}/orders", "create_order", self._create_order)
        r("DELETE", "venues/{v}/orders", "cancel_all_orders", self._cancel_all_orders)
        r("GET", "venues/{v}/orders/by-client-id/{cid}", "get_order_by_client_id", self._get_order_by_client_id)
        r("GET", "venues/{v}/orders/{id}", "get_order", self._get_order)
        r("DELETE", "venues/{v}/orders/{id}", "cancel_order", self._cancel_order)
        r("GET", "venues/{v}/networks", "networks", self._networks)
        r("GET", "venues/{v}/deposit-address", "deposit_address", self._deposit_address)
        r("GET", "venues/{v}/withdrawals", "list_withdrawals", self._list_withdrawals)
        r("POST", "venues/{v}/withdrawals", "create_withdrawal", self._create_withdrawal)
        r("GET", "venues/{v}/withdrawals/{key}", "get_withdrawal", self._get_withdrawal)
        r("POST", "venues/{v}/withdrawals/{id}/cancel", "cancel_withdrawal", self._cancel_withdrawal)
        r("GET", "admin/faults", "admin_list_faults", self._admin_list_faults, admin=True)
        r("POST", "admin/faults", "admin_add_faults", self._admin_add_faults, admin=True)
        r("DELETE", "admin/faults", "admin_clear_faults", self._admin_clear_faults, admin=True)
        r("DELETE", "admin/faults/{id}", "admin_remove_fault", self._admin_remove_fault, admin=True)
        r("POST", "admin/shock", "admin_shock", self._admin_shock, admin=True)
        r("POST", "admin/reset", "admin_reset", self._admin_reset, admin=True)
        r("POST", "admin/positions", "admin_positions", self._admin_positions, admin=True)
        r("POST", "admin/credit", "admin_credit", self._admin_credit, admin=True)
        r("POST", "admin/tick", "admin_tick", self._admin_tick, admin=True)

    def _add(self, method: str, pattern: str, name: str, handler: Handler, *, admin: bool = False) -> None:
        self._routes.append((method, tuple(pattern.split("/")), name, handler, admin))

    def _route(self, method: str, segments: list[str]):
        path_matched = False
        for route_method, pattern, name, handler, admin in self._routes:
            if len(pattern) != len(segments):
                continue
            params: dict[str, str] = {}
            for part, seg in zip(pattern, segments):
                if part.startswith("{"):
                    params[part[1:-1]] = seg
                elif part != seg:
                    break
            else:
                path_matched = True
                if route_method == method:
                    return name, handler, admin, params
        return None, None, path_matched, None

    # ------------------------------------------------------------------ dispatch

    def handle(self, req: ApiRequest) -> ApiResponse:
        name, handler, admin, params = self._route(req.method, req.segments)
        if handler is None:
            if admin:  # the path exists under another method
                return _error(405, "method_not_allowed", f"{req.method} not allowed here")
            return _error(404, "not_found", "no such endpoint")
        if not admin and self._api_key is not None:
            supplied = req.headers.get(API_KEY_HEADER.lower(), "")
            if not hmac.compare_digest(supplied.encode(), self._api_key.encode()):
                return _error(401, "unauthorized", f"missing or wrong {API_KEY_HEADER} header")
        decision = None
        if not admin:
            decision = self.faults.decide(params.get("v"), name)
            if decision.latency_s > 0:
                self._wait(decision.latency_s)
            fault = decision.response_fault
            if fault is not None and fault.kind == "error_5xx":
                return _error(fault.status, "injected_error", f"injected {fault.status} ({fault.id})")
            if fault is not None and fault.kind == "error_4xx":  # a business refusal: nothing applied
                return _error(fault.status, fault.code, fault.rejection_message())
            if fault is not None and fault.kind == "rate_limit":
                headers = {} if fault.retry_after is None else {"Retry-After": _format_seconds(fault.retry_after)}
                return _error(429, "rate_limited", f"injected rate limit ({fault.id})", headers)
        try:
            response = handler(req, params)
        except SimError as exc:
            response = _error(exc.status, exc.code, exc.message)
        except (ValueError, TypeError, KeyError) as exc:
            response = _error(400, "bad_request", str(exc))
        if decision is not None and decision.response_fault is not None:
            fault = decision.response_fault  # timeout_after_commit: applied, answer lost
            return ApiResponse(500, drop=True, hang_s=fault.hang_ms / 1000.0)
        return response

    @staticmethod
    def _object(req: ApiRequest, allowed: set[str] | None = None) -> dict[str, Any]:
        if not isinstance(req.body, dict):
            raise SimError(400, "bad_request", "expected a JSON object body")
        if allowed is not None:
            unknown = set(req.body) - allowed
            if unknown:
                raise SimError(400, "bad_request", f"unknown fields: {', '.join(sorted(unknown))}")
        return req.body

    # ------------------------------------------------------------------ venue endpoints

    def _health(self, req, p):
        return ApiResponse(200, {"ok": True, "venues": self.state.venue_names()})

    def _list_venues(self, req, p):
        return ApiResponse(200, self.state.venue_info())

    def _balances(self, req, p):
        return ApiResponse(200, list(self.state.balances(p["v"]).values()))

    def _positions(self, req, p):
        return ApiResponse(200, self.state.positions(p["v"]))

    def _funding_rates(self, req, p):
        return ApiResponse(200, self.state.funding_rates(p["v"]))

    def _tickers(self, req, p):
        return ApiResponse(200, self.state.tickers(p["v"]))

    def _list_orders(self, req, p):
        return ApiResponse(
            200, self.state.orders(p["v"], status=req.query.get("status", "open"), symbol=req.query.get("symbol"))
        )

    def _create_order(self, req, p):
        body = self._object(req, _ORDER_FIELDS)
        missing = {"symbol", "type", "side", "amount"} - set(body)
        if missing:
            raise SimError(400, "bad_request", f"missing fields: {', '.join(sorted(missing))}")
        order, created = self.state.place_order(
            p["v"],
            symbol=body["symbol"],
            type=body["type"],
            side=body["side"],
            amount=body["amount"],
            price=body.get("price"),
            stop_price=body.get("stop_price"),
            client_order_id=body.get("client_order_id"),
            reduce_only=bool(body.get("reduce_only", False)),
            received_at=req.received_at,
        )
        return ApiResponse(201 if created else 200, order, {"X-Idempotent-Replay": "false" if created else "true"})

    def _cancel_all_orders(self, req, p):
        return ApiResponse(200, self.state.cancel_all_orders(p["v"], symbol=req.query.get("symbol")))

    def _get_order_by_client_id(self, req, p):
        return ApiResponse(200, self.state.order_by_client_id(p["v"], p["cid"]))

    def _get_order(self, req, p):
        return ApiResponse(200, self.state.order(p["v"], p["id"]))

    def _cancel_order(self, req, p):
        return ApiResponse(200, self.state.cancel_order(p["v"], p["id"]))

    def _networks(self, req, p):
        return ApiResponse(200, self.state.networks(p["v"]))

    def _deposit_address(self, req, p):
        asset, network = req.query.get("asset"), req.query.get("network")
        if not asset or not network:
            raise SimError(400, "bad_request", "query parameters asset and network are required")
        return ApiResponse(200, self.state.deposit_address(p["v"], asset, network))

    def _list_withdrawals(self, req, p):
        return ApiResponse(200, self.state.withdrawals(p["v"]))

    def _create_withdrawal(self, req, p):
        body = self._object(req, _WITHDRAWAL_FIELDS)
        missing = {"asset", "amount", "address", "network", "idempotency_key"} - set(body)
        if missing:
            raise SimError(400, "bad_request", f"missing fields: {', '.join(sorted(missing))}")
        withdrawal, created = self.state.withdraw(p["v"], **body)
        return ApiResponse(
            201 if created else 200, withdrawal, {"X-Idempotent-Replay": "false" if created else "true"}
        )

    def _get_withdrawal(self, req, p):
        return ApiResponse(200, self.state.withdrawal_by_key(p["v"], p["key"]))

    def _cancel_withdrawal(self, req, p):
        return ApiResponse(200, self.state.cancel_withdrawal(p["v"], p["id"]))

    # ------------------------------------------------------------------ admin endpoints

    def _admin_list_faults(self, req, p):
        return ApiResponse(200, [f.as_dict() for f in self.faults.list()])

    def _admin_add_faults(self, req, p):
        items = req.body if isinstance(req.body, list) else [self._object(req)]
        specs = [dict(item) for item in items]
        for spec in specs:  # validate all before adding any
            Fault(**spec)
        return ApiResponse(201, [self.faults.add(spec).as_dict() for spec in specs])

    def _admin_clear_faults(self, req, p):
        self.faults.clear()
        return ApiResponse(200, [])

    def _admin_remove_fault(self, req, p):
        if not self.faults.remove(p["id"]):
            raise SimError(404, "fault_not_found", f"no fault {p['id']!r}")
        return ApiResponse(200, [f.as_dict() for f in self.faults.list()])

    def _admin_shock(self, req, p):
        body = self._object(req, {"venue", "symbol", "pct", "funding_rate"})
        return ApiResponse(
            200,
            self.state.shock(
                float(body.get("pct", 0.0)),
                venue=body.get("venue"),
                symbol=body.get("symbol"),
                funding_rate=body.get("funding_rate"),
            ),
        )

    def _admin_reset(self, req, p):
        self.state.reset()
        self.faults.clear()
        return ApiResponse(200, {"ok": True})

    def _admin_positions(self, req, p):
        body = self._object(req, {"venue", "positions"})
        return ApiResponse(200, self.state.set_positions(body["venue"], body.get("positions", [])))

    def _admin_credit(self, req, p):
        body = self._object(req, {"venue", "asset", "amount"})
        return ApiResponse(200, self.state.credit(body["venue"], body["asset"], float(body["amount"])))

    def _admin_tick(self, req, p):
        body = req.body if isinstance(req.body, dict) else {}
        steps = int(body.get("steps", 1))
        if not 1 <= steps <= 100_000:
            raise SimError(400, "bad_request", "steps must be within 1..100000")
        self.state.tick(steps)
        return ApiResponse(200, {"ticks": self.state.ticks, "index": self.state.index_prices()})


class _Handler(KeepAliveHandler):
    server_version = "arb-exchange-sim/1"

    server: "SimHTTPServer"

    def _serve(self, method: str) -> None:
        received_at = time.time()  # before any injected latency
        started = time.monotonic()
        parsed = urlsplit(self.path)
        path = parsed.path.strip("/")
        segments = [unquote(s) for s in path.split("/")] if path else []
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            response = _error(400, "bad_request", "body is not valid JSON")
        else:
            response = self.server.api.handle(ApiRequest(method, segments, query, body, headers, received_at))
        if response.drop:
            self._drop(response.hang_s)
            log.debug("%s /%s -> dropped without response (%.3fs)", method, path, time.monotonic() - started)
            return
        payload = json.dumps(_jsonable(response.body)).encode()
        self._send_json(response.status, payload, response.headers, "application/json")
        log.debug("%s /%s -> %d (%.3fs)", method, path, response.status, time.monotonic() - started)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # Request lines go to the module logger at DEBUG (never headers: they carry the API key).
        log.debug("%s " + format, self.address_string(), *args)


class SimHTTPServer(LoopbackHTTPServer):
    """Serves an `ExchangeApi`; closes its keep-alive connections on stop."""

    def __init__(self, address: tuple[str, int], api: ExchangeApi, stopping: threading.Event | None = None):
        self.api = api
        super().__init__(address, _Handler)
        if stopping is not None:
            self.stopping = stopping
