"""Maps HTTP outcomes onto the resource error taxonomy.

Small on purpose: each resource owns its own `httpx.Client` (and tests swap in
a transport); this only decides what a response or exception *means*.
"""

from __future__ import annotations

from typing import Any

import httpx

from arb_orchestration.resources.errors import (
    AmbiguousOutcomeError,
    BusinessError,
    NotFoundError,
    TransientError,
)

_MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def send(client: httpx.Client, method: str, url: str, **kwargs: Any) -> Any:
    """Send one request and return its decoded JSON body, or raise a typed error.

    A mutating request that timed out or lost its connection after being sent,
    or that got a 5xx, has an *unknown* outcome: `AmbiguousOutcomeError`.
    """
    method = method.upper()
    mutating = method in _MUTATING
    try:
        response = client.request(method, url, **kwargs)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise TransientError(f"{method} {url}: cannot connect ({type(exc).__name__})") from exc
    except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError) as exc:
        message = f"{method} {url}: no response ({type(exc).__name__})"
        if mutating:
            raise AmbiguousOutcomeError(message) from exc
        raise TransientError(message) from exc
    except httpx.TransportError as exc:
        raise TransientError(f"{method} {url}: transport error ({type(exc).__name__})") from exc

    status = response.status_code
    if status == 429:
        raise TransientError(f"{method} {url}: 429 rate limited", retry_after=_retry_after(response))
    if status >= 500:
        message = f"{method} {url}: HTTP {status}"
        if mutating:
            raise AmbiguousOutcomeError(message)
        raise TransientError(message, retry_after=_retry_after(response))
    if status == 404:
        raise NotFoundError(f"{method} {url}: not found", code=_error_code(response))
    if status >= 400:
        raise BusinessError(
            f"{method} {url}: HTTP {status}: {_error_message(response)}", code=_error_code(response)
        )
    if not response.content:
        return None
    return response.json()


def _error_body(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _first_error(body: dict) -> dict:
    # Some APIs (Wise) answer 4xx with only `{"errors": [{"code": ..., "message": ...}, ...]}`.
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return errors[0]
    return {}


def _error_code(response: httpx.Response) -> str | None:
    body = _error_body(response)
    code = body.get("code") or body.get("error") or _first_error(body).get("code")
    return str(code) if code is not None else None


def _error_message(response: httpx.Response) -> str:
    body = _error_body(response)
    return str(body.get("message") or body.get("error") or _first_error(body).get("message") or response.text[:200])
