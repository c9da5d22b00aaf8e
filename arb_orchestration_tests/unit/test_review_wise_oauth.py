"""Review of `ProductionWiseResource`'s OAuth handling against a Wise-shaped fake transport.

Wise invalidates the previous user access token the moment a new one is minted from the refresh token
(docs.wise.com, "Refreshing user access tokens"). Every Dagster step process (and every sensor tick)
has its own token cache, so another process refreshing between our refresh and our retry makes the
retry a 401 although nothing is wrong with the credentials. Nothing was applied (401), so the call is
safe to repeat: it must be a transient failure the resource retries, not a `BusinessError` that fails
the pivot (funding) as if Wise had refused the payment. A refresh token Wise refuses (`invalid_grant`)
stays a business error: a person must authorise again.
"""

from __future__ import annotations

import itertools
import json

import httpx
import pytest

from arb_orchestration.resources.errors import BusinessError
from arb_orchestration.resources.resilience import reset_breakers
from arb_orchestration.resources.wise_production import ProductionWiseResource

TRANSFER = {"id": 1, "status": "incoming_payment_waiting", "targetAccount": 7, "sourceCurrency": "EUR",
            "sourceValue": 100.0, "targetCurrency": "EUR", "targetValue": 99.61}


class FakeWiseOAuth:
    """Only the newest minted access token is valid; `other_process_refreshes` mints one behind our back."""

    def __init__(self, refresh_token_valid: bool = True):
        self.numbers = itertools.count(1)
        self.current: str | None = None
        self.other_process_refreshes = 0
        self.refresh_token_valid = refresh_token_valid
        self.seen: list[tuple[str, str]] = []

    def _mint(self) -> str:
        self.current = f"access-{next(self.numbers)}"
        return self.current

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            if not self.refresh_token_valid:
                return httpx.Response(400, json={"error": "invalid_grant"})
            return httpx.Response(200, json={"access_token": self._mint(), "expires_in": 43199})
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen.append((request.url.path, token))
        if token != self.current:
            return httpx.Response(401, json={"error": "invalid_token"})
        if self.other_process_refreshes:  # another step process refreshes right after our call got through auth
            self.other_process_refreshes -= 1
            self._mint()
            return httpx.Response(401, json={"error": "invalid_token"})
        return httpx.Response(200, content=json.dumps(TRANSFER))


def _wise(fake: FakeWiseOAuth) -> ProductionWiseResource:
    reset_breakers()
    resource = ProductionWiseResource(
        base_url="http://wise.test", auth="oauth_refresh_token", client_id="app", client_secret="s3cret",
        refresh_token="refresh-abc", profile_id=1001, verify_profile_on_setup=False, retry_base_delay=0.001,
        retry_max_delay=0.01,
    )
    return resource.with_transport(httpx.MockTransport(fake))


def test_a_401_after_the_refresh_because_another_process_refreshed_is_retried_not_a_business_error():
    fake = FakeWiseOAuth()
    wise = _wise(fake)
    assert wise.get_transfer(1).id == 1  # warm: token 1
    fake.other_process_refreshes = 2  # our call 401s, we refresh, and the other process refreshes again
    assert wise.get_transfer(1).status == "incoming_payment_waiting"
    assert fake.seen[-1][1] == fake.current


def test_a_refused_refresh_token_is_a_business_error():
    wise = _wise(FakeWiseOAuth(refresh_token_valid=False))
    with pytest.raises(BusinessError) as refused:
        wise.get_transfer(1)
    assert refused.value.code == "invalid_grant"
