"""Retries with exponential backoff and jitter, and a circuit breaker.

Every resource that talks to an external API routes its calls through
`ResilientCaller.call`. Policy:

* `TransientError` (5xx, 429, connect errors) is retried with exponential
  backoff and full jitter, honouring a server's Retry-After when it is longer.
* `AmbiguousOutcomeError` (the request may have been applied) is *not* retried
  here: the caller must reconcile (look the object up by its idempotency key)
  and only then decide. `call(..., reconcile=fn)` does exactly that.
* `BusinessError` is never retried.
* After `failure_threshold` consecutive transient failures the breaker opens;
  calls fail fast with `CircuitOpenError` until `reset_timeout` has passed,
  then one half-open probe is let through: success closes it, failure reopens.

Breakers are shared per process and keyed by name (e.g. "venue:binance"), so
all resource instances of one run worker see the same state.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from arb_orchestration.resources.errors import (
    AmbiguousOutcomeError,
    BusinessError,
    CircuitOpenError,
    TransientError,
)

T = TypeVar("T")
log = logging.getLogger("arb_orchestration.resilience")


@dataclass(frozen=True)
class RetrySettings:
    """How often and how patiently to retry transient failures."""

    max_attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 5.0
    jitter: bool = True

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number `attempt` (1-based): full jitter over base·2^(n-1)."""
        cap = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        if not self.jitter:
            return cap
        return (rng or random).uniform(0, cap)


@dataclass
class CircuitBreaker:
    """Closed → open after N consecutive failures → half-open after a cool-down."""

    name: str
    failure_threshold: int = 5
    reset_timeout: float = 10.0
    clock: Callable[[], float] = time.monotonic
    state: str = "closed"
    consecutive_failures: int = 0
    opened_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _probe_in_flight: bool = False

    def before_call(self) -> None:
        with self._lock:
            if self.state == "open":
                if self.clock() - self.opened_at < self.reset_timeout:
                    raise CircuitOpenError(
                        f"circuit '{self.name}' is open after {self.consecutive_failures} "
                        f"consecutive failures; retry after {self.reset_timeout:.1f}s cool-down"
                    )
                self.state = "half_open"
                self._probe_in_flight = False
                log.warning("circuit %s half-open: letting one probe through", self.name)
            if self.state == "half_open":
                if self._probe_in_flight:
                    raise CircuitOpenError(f"circuit '{self.name}' is half-open; probe in flight")
                self._probe_in_flight = True

    def record_success(self) -> None:
        with self._lock:
            if self.state != "closed":
                log.warning("circuit %s closed after successful probe", self.name)
            self.state = "closed"
            self.consecutive_failures = 0
            self._probe_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self.consecutive_failures += 1
            self._probe_in_flight = False
            if self.state == "half_open" or self.consecutive_failures >= self.failure_threshold:
                if self.state != "open":
                    log.error(
                        "circuit %s OPEN after %d consecutive failures",
                        self.name,
                        self.consecutive_failures,
                    )
                self.state = "open"
                self.opened_at = self.clock()

    def snapshot(self) -> dict:
        """State for logs and metadata."""
        return {
            "name": self.name,
            "state": self.state,
            "consecutive_failures": self.consecutive_failures,
        }


_BREAKERS: dict[str, CircuitBreaker] = {}
_BREAKERS_LOCK = threading.Lock()


def breaker_for(name: str, failure_threshold: int = 5, reset_timeout: float = 10.0) -> CircuitBreaker:
    """The process-wide breaker for `name` (created on first use)."""
    with _BREAKERS_LOCK:
        breaker = _BREAKERS.get(name)
        if breaker is None:
            breaker = CircuitBreaker(name, failure_threshold, reset_timeout)
            _BREAKERS[name] = breaker
        return breaker


def all_breakers() -> list[dict]:
    with _BREAKERS_LOCK:
        return [b.snapshot() for b in _BREAKERS.values()]


def reset_breakers() -> None:
    """Forget all breaker state (tests, and the local world's reset)."""
    with _BREAKERS_LOCK:
        _BREAKERS.clear()


@dataclass
class ResilientCaller:
    """Runs a call under a retry policy and a circuit breaker."""

    breaker: CircuitBreaker
    retry: RetrySettings = RetrySettings()
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random | None = None

    def call(
        self,
        fn: Callable[[], T],
        *,
        what: str,
        reconcile: Callable[[], T | None] | None = None,
    ) -> T:
        """Call `fn`, retrying transient failures.

        `reconcile` is called after an ambiguous outcome; if it finds the object
        (returns non-None) that is the result, otherwise the call is retried.
        Without `reconcile`, an ambiguous outcome is raised to the caller.
        """
        attempt = 0
        while True:
            attempt += 1
            self.breaker.before_call()
            try:
                result = fn()
            except AmbiguousOutcomeError as exc:
                self.breaker.record_failure()
                if reconcile is None:
                    raise
                log.warning("%s: ambiguous outcome (%s); reconciling before any retry", what, exc)
                found = self._reconcile(reconcile, what)
                if found is not None:
                    return found
                if attempt >= self.retry.max_attempts:
                    raise
                self.sleep(self.retry.delay(attempt, self.rng))
                continue
            except CircuitOpenError:
                raise
            except TransientError as exc:
                self.breaker.record_failure()
                if attempt >= self.retry.max_attempts:
                    raise
                delay = self.retry.delay(attempt, self.rng)
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, self.retry.max_delay * 4))
                log.warning(
                    "%s: transient failure (%s); retry %d/%d in %.2fs",
                    what,
                    exc,
                    attempt,
                    self.retry.max_attempts - 1,
                    delay,
                )
                self.sleep(delay)
                continue
            except BusinessError:
                # The service answered (a 4xx is an answer): it is healthy, whatever we asked.
                self.breaker.record_success()
                raise
            except BaseException:
                # Anything unexpected still ends a half-open probe, or the breaker would stay stuck.
                self.breaker.record_failure()
                raise
            self.breaker.record_success()
            return result

    def _reconcile(self, reconcile: Callable[[], T | None], what: str) -> T | None:
        # The lookup itself is retried (it is idempotent), but never resubmits.
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                return reconcile()
            except TransientError as exc:
                if attempt >= self.retry.max_attempts:
                    raise AmbiguousOutcomeError(
                        f"{what}: outcome unknown and lookup kept failing: {exc}"
                    ) from exc
                self.sleep(self.retry.delay(attempt, self.rng))
        return None
