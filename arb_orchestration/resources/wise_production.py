"""Production Wise: authentication, environment, profile check, and funding that needs a human.

`ProductionWiseResource` is `WiseResource` (same calls, same resilience and
reconciliation) with what a live account adds:

* **environment**: `sandbox` -> https://api.sandbox.transferwise.tech,
  `live` -> https://api.transferwise.com (`base_url` may still override, but a
  live resource refuses any other host and plain HTTP);
* **authentication**: a personal API token (`auth="personal_token"`,
  `api_token=EnvVar("WISE_API_TOKEN")`), or OAuth 2.0 for partner setups:
  `oauth_refresh_token` (user access token from a refresh token) or
  `oauth_client_credentials` (application token; Wise allows it for
  application-level calls only). OAuth tokens come from `POST /oauth/token`
  with HTTP basic auth (client id / secret), are cached until shortly before
  `expires_in`, and are refreshed once when Wise answers 401;
* **profile check**: at run start the configured `profile_id` must be one of
  the token's profiles and of `profile_type` (BUSINESS by default), so a
  token for the wrong account fails before any money moves;
* **strong customer authentication**: EU/UK personal tokens cannot fund
  transfers through the API (PSD2); Wise answers the funding call with 403
  and `x-2fa-approval-result: REJECTED` (plus a one-time token). The resource
  raises `FundingRequiresHumanError` (a `BusinessError`: retrying cannot
  help): the transfer exists, unfunded, and a person must fund it in the Wise
  app or website. The rebalance saga should park at its pivot, tell the risk
  team, and wait for the transfer to leave `incoming_payment_waiting`
  (`wait_until_funded`), with a deadline, instead of failing -- see
  docs/real-venues.md.

Secrets (`api_token`, `client_secret`, `refresh_token`) are `Field(repr=False)`
and only ever live in request headers / the token request body.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field, PrivateAttr, model_validator

from arb_orchestration.resources.errors import BusinessError, TransientError
from arb_orchestration.resources.wise import WAITING, Transfer, WiseResource
from arb_orchestration.resources.wise_webhooks import BOARD_CHECK_SECONDS, BoardWatch, WebhookBoard

log = logging.getLogger("arb_orchestration.resources.wise_production")

WISE_LIVE_URL = "https://api.transferwise.com"
WISE_SANDBOX_URL = "https://api.sandbox.transferwise.tech"
_LIVE_HOSTS = {"api.transferwise.com", "api.wise.com"}
_PAYMENTS_PATH = re.compile(r"/v3/profiles/(?P<profile>\d+)/transfers/(?P<transfer>\d+)/payments$")


class StrongCustomerAuthenticationRequired(BusinessError):
    """Wise wants strong customer authentication (403 + x-2fa-approval) for this call."""

    def __init__(self, message: str, *, path: str, has_one_time_token: bool):
        super().__init__(message, code="sca_required")
        self.path = path
        self.has_one_time_token = has_one_time_token


class FundingRequiresHumanError(StrongCustomerAuthenticationRequired):
    """The transfer was created but cannot be funded through the API: a person must fund it.

    Not retryable. The saga should park (the transfer stays unfunded and
    cancellable), notify, and wait with a deadline for it to leave
    `incoming_payment_waiting`; past the deadline, cancel it (compensate).
    """

    def __init__(self, transfer_id: int, profile_id: int, *, path: str, has_one_time_token: bool):
        super().__init__(
            f"Wise refused to fund transfer {transfer_id} through the API: strong customer authentication is "
            f"required (PSD2; personal tokens in the EU/UK cannot fund). Fund it in the Wise app or at "
            f"https://wise.com (profile {profile_id}); the transfer stays unfunded until then.",
            path=path,
            has_one_time_token=has_one_time_token,
        )
        self.code = "funding_requires_human"
        self.transfer_id = transfer_id
        self.profile_id = profile_id


class FundingNotCompletedError(TransientError):
    """`wait_until_funded` ran out of time while the transfer was still waiting for its human."""


def _raise_on_sca(response: httpx.Response) -> None:
    """httpx response hook: turn Wise's SCA challenge into a typed error before `send()` sees a 403."""
    if response.status_code != 403:
        return
    result = response.headers.get("x-2fa-approval-result", "")
    if result.upper() != "REJECTED":
        return
    path = response.request.url.path
    has_ott = bool(response.headers.get("x-2fa-approval"))
    match = _PAYMENTS_PATH.search(path)
    if match:
        raise FundingRequiresHumanError(
            int(match["transfer"]), int(match["profile"]), path=path, has_one_time_token=has_ott
        )
    raise StrongCustomerAuthenticationRequired(
        f"Wise requires strong customer authentication for {response.request.method} {path}",
        path=path,
        has_one_time_token=has_ott,
    )


class _TokenSource:
    """OAuth access tokens from `/oauth/token`, cached until shortly before they expire (`refresh_margin`)."""

    def __init__(self, resource: "ProductionWiseResource"):
        self._resource = resource
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.fetches = 0

    def token(self, *, force: bool = False) -> str:
        with self._lock:
            if force or self._token is None or time.monotonic() >= self._expires_at:
                self._token, lifetime = self._fetch()
                self.fetches += 1
                self._expires_at = time.monotonic() + max(0.0, lifetime - self.refresh_margin(lifetime))
            return self._token

    def refresh_margin(self, lifetime: float) -> float:
        """How long before expiry a token of `lifetime` seconds is refreshed.

        The fixed margin (6 h, for Wise's 12 h tokens), but never more than a fraction of the
        lifetime: a token that lives less than the margin would otherwise be "about to expire" from
        the start and be replaced on every request -- and minting one invalidates the previous one,
        which other processes (each step has its own cache) are still using.
        """
        r = self._resource
        return min(r.token_refresh_margin_seconds, max(0.0, lifetime) * r.token_refresh_margin_fraction)

    def _fetch(self) -> tuple[str, float]:
        r = self._resource
        form = {"grant_type": "client_credentials"}
        if r.auth == "oauth_refresh_token":
            form = {"grant_type": "refresh_token", "refresh_token": r.refresh_token}
        try:
            with httpx.Client(base_url=r.base_url, timeout=r.timeout_seconds, transport=r._transport, cert=r._client_cert()) as http:
                response = http.post("/oauth/token", data=form, auth=(r.client_id, r.client_secret))
        except httpx.TransportError as exc:
            raise TransientError(f"wise oauth token: transport error ({type(exc).__name__})") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(f"wise oauth token: HTTP {response.status_code}")
        if response.status_code != 200:
            # invalid_grant: the refresh token expired or was revoked; a human must re-authorise.
            error = ""
            try:
                error = str(response.json().get("error", ""))
            except ValueError:
                pass
            raise BusinessError(f"wise oauth token refused: HTTP {response.status_code} {error}".strip(), code=error or "oauth_refused")
        body = response.json()
        return str(body["access_token"]), float(body.get("expires_in") or 3600)


class _BearerAuth(httpx.Auth):
    """Bearer token on every request; on a 401 with OAuth, one fresh token and one more try."""

    def __init__(self, resource: "ProductionWiseResource", tokens: _TokenSource | None):
        self._resource = resource
        self._tokens = tokens

    def auth_flow(self, request: httpx.Request):
        token = self._tokens.token() if self._tokens is not None else self._resource.api_token
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401 and self._tokens is not None:
            # A 401 is an answer: nothing was applied, so sending again is safe.
            request.headers["Authorization"] = f"Bearer {self._tokens.token(force=True)}"
            response = yield request
            if response.status_code == 401:
                # Refused with the token just minted: Wise invalidates the previous access token when a
                # new one is minted, so another process (each step has its own cache) refreshed in
                # between. Not applied, not a verdict on the credentials (a bad refresh token fails
                # the refresh itself): transient, retried with backoff.
                raise TransientError("wise: HTTP 401 with a freshly refreshed OAuth token (refreshed elsewhere meanwhile?)")


class ProductionWiseResource(WiseResource):
    """`WiseResource` for a real Wise account: environment, OAuth or personal token, SCA, profile check."""

    base_url: str = Field(default="", description="Overrides the environment's URL (the simulator, a proxy).")
    api_token: str = Field(default="", repr=False, description="Personal token: EnvVar('WISE_API_TOKEN').")
    environment: Literal["sandbox", "live", "custom"] = Field(default="custom", description="sandbox | live | custom (base_url).")
    auth: Literal["personal_token", "oauth_refresh_token", "oauth_client_credentials"] = "personal_token"
    client_id: str = Field(default="", description="OAuth client id (with oauth_* auth).")
    client_secret: str = Field(default="", repr=False, description="EnvVar('WISE_OAUTH_CLIENT_SECRET').")
    refresh_token: str = Field(default="", repr=False, description="EnvVar('WISE_OAUTH_REFRESH_TOKEN').")
    token_refresh_margin_seconds: float = Field(default=6 * 3600.0, description="Refresh this long before expiry (Wise: 6 h of 12 h).")
    token_refresh_margin_fraction: float = Field(
        default=0.5, ge=0.0, lt=1.0,
        description="...but at most this fraction of the token's lifetime, so a short-lived token is reused for a while.",
    )
    profile_type: Literal["BUSINESS", "PERSONAL"] = "BUSINESS"
    verify_profile_on_setup: bool = True
    mtls_cert_path: str = Field(default="", description="Client certificate (PEM) where Wise requires mTLS (OAuth partners).")
    mtls_key_path: str = Field(default="", description="Its private key (PEM).")

    _tokens: _TokenSource | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _environment_url(cls, data: Any) -> Any:
        if isinstance(data, dict):
            env = data.get("environment", "custom")
            if not data.get("base_url"):
                url = {"sandbox": WISE_SANDBOX_URL, "live": WISE_LIVE_URL}.get(env)
                if url is None:
                    raise ValueError("set base_url, or environment='sandbox' or 'live'")
                data = {**data, "base_url": url}
        return data

    @model_validator(mode="after")
    def _check(self) -> "ProductionWiseResource":
        url = urlsplit(self.base_url)
        if self.environment == "live" and (url.scheme != "https" or url.hostname not in _LIVE_HOSTS):
            raise ValueError(f"a live Wise resource talks to {WISE_LIVE_URL} only, not {self.base_url!r}")
        if self.environment == "sandbox" and url.scheme != "https":
            raise ValueError("the Wise sandbox is https:// only")
        if self.auth.startswith("oauth") and not self.client_id:
            raise ValueError(f"auth={self.auth} needs client_id and client_secret")
        return self

    # ------------------------------------------------------------ plumbing

    def _client_cert(self):
        if self.mtls_cert_path and self.mtls_key_path:
            return (self.mtls_cert_path, self.mtls_key_path)
        return None

    def token_source(self) -> _TokenSource | None:
        if self.auth == "personal_token":
            return None
        if self._tokens is None:
            self._tokens = _TokenSource(self)
        return self._tokens

    def _http(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    base_url=self.base_url,
                    timeout=httpx.Timeout(self.timeout_seconds),
                    headers={"User-Agent": "arb-orchestration"},
                    auth=_BearerAuth(self, self.token_source()),
                    event_hooks={"response": [_raise_on_sca]},
                    transport=self._transport,
                    cert=self._client_cert(),
                )
            return self._client

    def setup_for_execution(self, context) -> None:
        if self.verify_profile_on_setup:
            self.check_profile()

    def check_profile(self) -> None:
        """Fail fast when the token cannot act for `profile_id` (or it is not a `profile_type` profile)."""
        profiles = self.list_profiles()
        match = next((p for p in profiles if p.id == self.profile_id), None)
        if match is None or match.type.upper() != self.profile_type:
            available = ", ".join(f"{p.id} ({p.type})" for p in profiles) or "none"
            raise BusinessError(
                f"Wise profile {self.profile_id} ({self.profile_type}) is not available to this token; "
                f"its profiles: {available}",
                code="wrong_profile",
            )

    def wait_until_funded(
        self,
        transfer_id: int,
        *,
        timeout: float,
        poll_interval: float | None = None,
        board: WebhookBoard | None = None,
        board_check_interval: float = BOARD_CHECK_SECONDS,
    ) -> Transfer:
        """After `FundingRequiresHumanError`: wait for a person to fund the transfer in the Wise app.

        Returns the transfer once it left `incoming_payment_waiting`; a transfer
        cancelled meanwhile is a `BusinessError`; at the deadline
        `FundingNotCompletedError` (transient: the saga may wait again, or cancel
        the transfer and compensate). With a webhook `board` (the instance's,
        written by `arb-orchestration wise-webhooks serve`), the wait looks at it
        every `board_check_interval` and reads the transfer as soon as a webhook
        says it moved; Wise is still polled every `poll_interval`, and only
        what Wise's API answers decides.
        """
        interval = self.poll_interval_seconds if poll_interval is None else poll_interval
        watch = BoardWatch(board, lambda event: event.current_state != WAITING, poll_interval=interval,
                           check_interval=board_check_interval)
        deadline = time.monotonic() + timeout
        while True:
            watch.reading([transfer_id])
            try:
                transfer = self.get_transfer(transfer_id)
            except TransientError as exc:
                log.warning("wise: polling transfer %s for its funding failed (%s)", transfer_id, exc)
                transfer = None
            if transfer is not None and transfer.status != WAITING:
                if transfer.is_failed:
                    raise BusinessError(f"wise transfer {transfer_id} is {transfer.status}; it will not be funded", code=transfer.status)
                return transfer
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FundingNotCompletedError(f"wise transfer {transfer_id} still waits for a person to fund it after {timeout:g}s")
            watch.pause([transfer_id], min(interval, remaining))
