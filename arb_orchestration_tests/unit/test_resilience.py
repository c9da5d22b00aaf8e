"""Retry/backoff/jitter and circuit-breaker behaviour of `resources.resilience` (no I/O)."""

import random

import pytest

from arb_orchestration.resources.errors import (
    AmbiguousOutcomeError,
    BusinessError,
    CircuitOpenError,
    TransientError,
)
from arb_orchestration.resources.resilience import CircuitBreaker, ResilientCaller, RetrySettings


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def make_caller(threshold=3, reset=10.0, attempts=4):
    clock = FakeClock()
    sleeps: list[float] = []
    breaker = CircuitBreaker("test", failure_threshold=threshold, reset_timeout=reset, clock=clock)
    caller = ResilientCaller(breaker, RetrySettings(max_attempts=attempts, base_delay=0.1, max_delay=1.0),
                             sleep=sleeps.append, rng=random.Random(1))
    return caller, breaker, clock, sleeps


def trip(caller, times):
    """Fail `times` calls with a transient error (enough to open a breaker)."""

    def failing():
        raise TransientError("503")

    for _ in range(times):
        with pytest.raises(TransientError):
            caller.call(failing, what="t")


def test_backoff_is_exponential_and_capped_without_jitter():
    policy = RetrySettings(base_delay=0.1, max_delay=0.5, jitter=False)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_full_jitter_stays_within_the_exponential_cap():
    policy = RetrySettings(base_delay=0.1, max_delay=10)
    rng = random.Random(7)
    for n in range(1, 6):
        values = [policy.delay(n, rng) for _ in range(200)]
        assert all(0 <= v <= 0.1 * 2 ** (n - 1) for v in values)
        assert len(set(values)) > 100  # really jittered


def test_transient_failures_are_retried_then_succeed():
    caller, breaker, _, sleeps = make_caller(threshold=10)
    calls = iter([TransientError("503"), TransientError("503"), "ok"])

    def fn():
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    assert caller.call(fn, what="t") == "ok"
    assert len(sleeps) == 2
    assert breaker.state == "closed" and breaker.consecutive_failures == 0


def test_retry_after_is_honoured():
    caller, _, _, sleeps = make_caller(threshold=10)
    calls = iter([TransientError("429", retry_after=2.5), "ok"])

    def fn():
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    caller.call(fn, what="t")
    assert sleeps == [2.5]


def test_business_errors_are_not_retried():
    caller, _, _, sleeps = make_caller()

    def fn():
        raise BusinessError("insufficient funds")

    with pytest.raises(BusinessError):
        caller.call(fn, what="t")
    assert sleeps == []


def test_ambiguous_outcome_reconciles_instead_of_resubmitting():
    caller, _, _, _ = make_caller(threshold=10)
    submitted = []

    def submit():
        submitted.append(1)
        raise AmbiguousOutcomeError("read timeout")

    result = caller.call(submit, what="order", reconcile=lambda: "found-order")
    assert result == "found-order"
    assert len(submitted) == 1


def test_ambiguous_outcome_without_reconcile_is_raised():
    caller, _, _, _ = make_caller(threshold=10)

    def submit():
        raise AmbiguousOutcomeError("read timeout")

    with pytest.raises(AmbiguousOutcomeError):
        caller.call(submit, what="order")


def test_breaker_opens_fails_fast_then_half_opens_and_closes():
    caller, breaker, clock, _ = make_caller(threshold=3, reset=10, attempts=1)

    trip(caller, 3)
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        caller.call(lambda: "never called", what="t")
    clock.now = 10.5
    assert caller.call(lambda: "probe ok", what="t") == "probe ok"
    assert breaker.state == "closed"


def test_failed_half_open_probe_reopens():
    caller, breaker, clock, _ = make_caller(threshold=2, reset=5, attempts=1)

    trip(caller, 2)
    clock.now = 6
    trip(caller, 1)  # the half-open probe fails
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        caller.call(lambda: 1, what="t")


def test_business_error_during_half_open_probe_closes_the_breaker():
    caller, breaker, clock, _ = make_caller(threshold=2, reset=5, attempts=1)

    trip(caller, 2)
    clock.now = 6

    def not_found():
        raise BusinessError("404 not found")

    with pytest.raises(BusinessError):
        caller.call(not_found, what="t")
    assert breaker.state == "closed"
    assert caller.call(lambda: "next call goes through", what="t") == "next call goes through"


def test_unexpected_error_during_half_open_probe_does_not_wedge_the_breaker():
    caller, breaker, clock, _ = make_caller(threshold=2, reset=5, attempts=1)

    trip(caller, 2)
    clock.now = 6
    with pytest.raises(ValueError):
        caller.call(lambda: (_ for _ in ()).throw(ValueError("bad json")), what="t")
    assert breaker.state == "open"
    clock.now = 12
    assert caller.call(lambda: "recovered", what="t") == "recovered"


def test_transient_failures_give_up_after_max_attempts_with_the_last_error():
    caller, _, _, sleeps = make_caller(threshold=10, attempts=4)
    calls = []

    def fn():
        calls.append(1)
        raise TransientError(f"503 #{len(calls)}")

    with pytest.raises(TransientError, match="503 #4"):
        caller.call(fn, what="t")
    assert len(calls) == 4 and len(sleeps) == 3  # 4 attempts, a backoff between each


def test_ambiguous_outcome_not_found_is_resubmitted_at_most_max_attempts_times():
    caller, _, _, sleeps = make_caller(threshold=10, attempts=3)
    submitted, lookups = [], []

    def submit():
        submitted.append(1)
        raise AmbiguousOutcomeError("read timeout")

    def reconcile():
        lookups.append(1)
        return None  # the venue has no trace of it: safe to send again

    with pytest.raises(AmbiguousOutcomeError, match="read timeout"):
        caller.call(submit, what="order", reconcile=reconcile)
    assert len(submitted) == 3 and len(lookups) == 3 and len(sleeps) == 2


def test_a_lookup_that_keeps_failing_leaves_the_outcome_ambiguous_and_sends_nothing_again():
    caller, _, _, sleeps = make_caller(threshold=10, attempts=3)
    submitted, lookups = [], []

    def submit():
        submitted.append(1)
        raise AmbiguousOutcomeError("read timeout")

    def reconcile():
        lookups.append(1)
        raise TransientError("lookup 503")

    with pytest.raises(AmbiguousOutcomeError, match="lookup kept failing"):
        caller.call(submit, what="order", reconcile=reconcile)
    assert len(submitted) == 1 and len(lookups) == 3 and len(sleeps) == 2
