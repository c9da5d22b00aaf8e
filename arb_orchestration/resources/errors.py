"""Error taxonomy every resource raises, so sagas can tell retryable from business errors."""

from __future__ import annotations


class ExternalServiceError(Exception):
    """Base class for errors raised by an external-system resource."""


class TransientError(ExternalServiceError):
    """Worth retrying: 5xx, 429, connect errors, timeouts before anything was sent."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class AmbiguousOutcomeError(TransientError):
    """The request may have been applied (timeout or dropped connection after sending).

    Never resubmit blindly: look the order/transfer up by its idempotency key first.
    """


class CircuitOpenError(TransientError):
    """The circuit breaker is open; the call was not attempted."""


class BusinessError(ExternalServiceError):
    """Not retryable: insufficient funds, rejected order, bad request, limit breached."""

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.code = code


class NotFoundError(BusinessError):
    """The looked-up object does not exist."""
