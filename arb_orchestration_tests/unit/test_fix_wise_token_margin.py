"""Fix: an OAuth access token that lives less than the refresh margin is reused, not re-minted per request.

`ProductionWiseResource` refreshed a cached token once it was within a fixed 6 h of expiry; a token
Wise issues with a shorter `expires_in` was "about to expire" from the start, so every request
minted a new one (and Wise invalidates the previous one, under other processes' feet). The margin
is now min(6 h, a fraction of the lifetime). Wise's usual 12 h tokens keep the 6 h margin.
Fake-transport style of test_review_wise_oauth.py; the clock is `time.monotonic`, patched.
"""

from __future__ import annotations

import itertools
import json

import httpx
import pytest

from arb_orchestration.resources import wise_production
from arb_orchestration_tests.unit.test_review_wise_oauth import _wise  # the resource over a fake Wise transport

TRANSFER = {"id": 1, "status": "incoming_payment_waiting", "targetAccount": 7, "sourceCurrency": "EUR",
            "sourceValue": 100.0, "targetCurrency": "EUR", "targetValue": 99.61}


class FakeWiseTokens:
    """Mints access tokens living `expires_in` seconds; only the newest is valid."""

    def __init__(self, expires_in: float):
        self.expires_in = expires_in
        self.numbers = itertools.count(1)
        self.current: str | None = None
        self.minted = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            self.minted += 1
            self.current = f"access-{next(self.numbers)}"
            return httpx.Response(200, json={"access_token": self.current, "expires_in": self.expires_in})
        if request.headers.get("Authorization") != f"Bearer {self.current}":
            return httpx.Response(401, json={"error": "invalid_token"})
        return httpx.Response(200, content=json.dumps(TRANSFER))


class Clock:
    def __init__(self):
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(wise_production.time, "monotonic", clock)
    return clock


def test_a_one_hour_token_is_minted_once_for_many_requests_and_refreshed_before_it_expires(clock):
    fake = FakeWiseTokens(expires_in=3600)
    wise = _wise(fake)
    for _ in range(5):
        assert wise.get_transfer(1).id == 1
        clock.now += 60
    assert fake.minted == 1
    clock.now += 1400  # 28 min 20 s in: still inside the first half of the hour
    wise.get_transfer(1)
    assert fake.minted == 1
    clock.now += 200  # 31 min 40 s in: past half its life, refreshed before it expires
    wise.get_transfer(1)
    assert fake.minted == 2


def test_wise_twelve_hour_tokens_keep_the_six_hour_margin(clock):
    fake = FakeWiseTokens(expires_in=43_200)
    wise = _wise(fake)
    wise.get_transfer(1)
    clock.now += 6 * 3600 - 10
    wise.get_transfer(1)
    assert fake.minted == 1
    clock.now += 20
    wise.get_transfer(1)
    assert fake.minted == 2


@pytest.mark.parametrize("lifetime, margin", [(43_200, 21_600), (86_400, 21_600), (3_600, 1_800), (60, 30), (0, 0)])
def test_the_margin_is_the_fixed_one_or_half_the_lifetime_whichever_is_smaller(lifetime, margin):
    wise = _wise(FakeWiseTokens(expires_in=lifetime))
    assert wise.token_source().refresh_margin(lifetime) == pytest.approx(margin)
