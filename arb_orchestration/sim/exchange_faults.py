"""Fault injection for the exchange simulator's HTTP API.

A `Fault` matches requests by venue and endpoint name (see `ENDPOINTS`) and
fires either on the next `count` matching requests or with probability `rate`
(drawn from its own seeded RNG, so a test run is repeatable), or both.

Kinds:
* `latency`               — wait `latency_ms` before handling (adds up with others);
* `error_5xx`             — answer `status` (default 503) without applying anything;
* `rate_limit`            — answer 429 with `Retry-After: retry_after` without applying;
* `error_4xx`             — a business refusal: answer `status` (default 400) with the
                            exchange error `code` (default "order_rejected") and
                            `message`, without applying anything (clients map it to
                            `BusinessError`: not retried, not ambiguous);
* `timeout_after_commit`  — apply the request, then wait `hang_ms` and close the
                            connection without a response (the client sees a
                            dropped connection, or its read timeout if `hang_ms`
                            is longer than it).
At most one of the last four fires per request (the first in insertion order).
"""

from __future__ import annotations

import itertools
import random
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

KINDS = ("latency", "error_5xx", "error_4xx", "rate_limit", "timeout_after_commit")

DEFAULT_STATUS = {"error_5xx": 503, "error_4xx": 400}
DEFAULT_REJECT_CODE = "order_rejected"

# Endpoint names faults can target ("*" or None: every non-admin endpoint).
ENDPOINTS = (
    "list_venues",
    "balances",
    "positions",
    "funding_rates",
    "tickers",
    "list_orders",
    "get_order",
    "get_order_by_client_id",
    "create_order",
    "cancel_order",
    "cancel_all_orders",
    "networks",
    "deposit_address",
    "list_withdrawals",
    "create_withdrawal",
    "get_withdrawal",
    "cancel_withdrawal",
)


@dataclass
class Fault:
    """One injected fault rule; `remaining` counts down when `count` is set."""

    kind: str
    venue: str | None = None
    endpoint: str | None = None
    count: int | None = None
    rate: float = 1.0
    latency_ms: float = 0.0
    status: int | None = None  # error_5xx: 503, error_4xx: 400 when not given
    code: str = DEFAULT_REJECT_CODE  # error_4xx only: the exchange error code in the body
    message: str | None = None  # error_4xx only: the body's message (default names the fault)
    retry_after: float | None = 1.0
    hang_ms: float = 0.0
    id: str = ""
    remaining: int | None = None
    hits: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        if self.endpoint == "*":
            self.endpoint = None
        if self.endpoint is not None and self.endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {self.endpoint!r}; endpoints: {', '.join(ENDPOINTS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], got {self.rate}")
        if self.count is not None and self.count < 0:
            raise ValueError("count must be >= 0")
        if self.status is None:
            self.status = DEFAULT_STATUS.get(self.kind, 503)
        if isinstance(self.status, bool) or not isinstance(self.status, int):
            raise ValueError(f"status must be an integer HTTP status, got {self.status!r}")
        if self.kind == "error_5xx" and not 500 <= self.status <= 599:
            raise ValueError(f"error_5xx status must be 5xx, got {self.status}")
        if self.kind == "error_4xx":
            # 429 reads as "rate limited, retry" to every client; 404 as "no such object": neither is a refusal.
            if not 400 <= self.status <= 499 or self.status in (404, 429):
                raise ValueError(f"error_4xx status must be a 4xx other than 404 and 429, got {self.status}")
            if not isinstance(self.code, str) or not self.code.strip() or len(self.code) > 64:
                raise ValueError(f"error_4xx code must be a non-empty string of at most 64 characters, got {self.code!r}")
            if self.message is not None and not isinstance(self.message, str):
                raise ValueError(f"error_4xx message must be a string, got {self.message!r}")
        if self.remaining is None:
            self.remaining = self.count

    def matches(self, venue: str | None, endpoint: str) -> bool:
        if self.venue is not None and self.venue != venue:
            return False
        if self.endpoint is not None and self.endpoint != endpoint:
            return False
        return self.remaining is None or self.remaining > 0

    def rejection_message(self) -> str:
        """The body's message of an `error_4xx` answer."""
        return self.message or f"injected refusal: {self.code} ({self.id})"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FaultDecision:
    """What to do to one request."""

    latency_s: float = 0.0
    response_fault: Fault | None = None
    fired: list[str] = field(default_factory=list)


_FIELDS = {"kind", "venue", "endpoint", "count", "rate", "latency_ms", "status", "code", "message", "retry_after",
           "hang_ms"}


class FaultInjector:
    """The active fault rules, thread-safe; `decide()` is called once per request."""

    def __init__(self, seed: int = 42):
        self._seed = seed
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        self._rng = random.Random(seed + 7)

    def add(self, fault: Fault | Mapping[str, Any]) -> Fault:
        if not isinstance(fault, Fault):
            unknown = set(fault) - _FIELDS
            if unknown:
                raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
            fault = Fault(**fault)
        with self._lock:
            fault.id = f"fault-{next(self._ids)}"
            self._faults.append(fault)
        return fault

    def remove(self, fault_id: str) -> bool:
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.id != fault_id]
            return len(self._faults) != before

    def clear(self) -> None:
        """Drop every rule and reseed, so the same rules fire the same way again."""
        with self._lock:
            self._faults.clear()
            self._rng = random.Random(self._seed + 7)

    def list(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def decide(self, venue: str | None, endpoint: str) -> FaultDecision:
        decision = FaultDecision()
        with self._lock:
            for fault in self._faults:
                if not fault.matches(venue, endpoint):
                    continue
                is_response = fault.kind != "latency"
                if is_response and decision.response_fault is not None:
                    continue
                if fault.rate < 1.0 and self._rng.random() >= fault.rate:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                fault.hits += 1
                decision.fired.append(fault.id)
                if is_response:
                    decision.response_fault = fault
                else:
                    decision.latency_s += fault.latency_ms / 1000.0
        return decision
