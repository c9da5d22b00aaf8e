"""Deployment review: the staging cluster must not trade on the live exchanges.

values-staging.yaml runs `EXCHANGE_BACKEND=ccxt` against the Wise sandbox and a staging Kafka. A
venue missing from `CCXT_VENUES` gets its default ccxt class in live mode, so staging's hedge
schedule and sensors would send orders to the real exchanges (next to production's) with whatever
keys the staging Secret holds.

For each environment, the venues are built the way the pods build them: the code location's env
from the merged Helm values plus the Secret keys of k8s/secrets.template.yaml (placeholders),
through the app's own `ccxt_exchange_from_env`, then each venue's ccxt client offline
(`CcxtVenueClient._build_exchange`: no network). A venue is on a test environment when its API
endpoints or headers differ from the same class in live mode (Binance demo hosts, Bybit/Kraken/
Hyperliquid testnet hosts, OKX's simulated-trading header).
"""

from __future__ import annotations

import dataclasses

import pytest

from arb_orchestration import settings
from arb_orchestration.resources.ccxt_venue import CcxtVenueClient, ccxt_exchange_from_env
from arb_orchestration_tests.unit import deploy_model as model


def _pod_environment(environment: str, monkeypatch) -> list[str]:
    """Set the env a pod of this environment gets; return its venue names."""
    (deployment,) = model.user_deployments(model.merged_values(environment))
    for name in settings.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in deployment["env"].items():
        monkeypatch.setenv(name, str(value))
    for document in model.k8s_documents("secrets.template.yaml"):
        for key in document["stringData"]:
            monkeypatch.setenv(key, "placeholder")
    assert deployment["env"]["EXCHANGE_BACKEND"] == "ccxt"
    return settings.get_list("EXCHANGE_VENUES", "prod")


def _endpoints(venue) -> tuple[dict, dict]:
    """(API URLs, headers) of the ccxt client the venue builds, and of its class in live mode."""
    config = venue.to_settings(timeout_seconds=10.0, precheck_client_order_id=True)
    config = dataclasses.replace(config, api_key="", secret="", password="")  # built offline, never sent
    built = CcxtVenueClient(config)._build_exchange()
    live = CcxtVenueClient(dataclasses.replace(config, sandbox=False, demo_trading=False, api_base_url="",
                                               api_urls={}))._build_exchange()
    return (
        {"urls": built.urls["api"], "headers": dict(built.headers or {})},
        {"urls": live.urls["api"], "headers": dict(live.headers or {})},
    )


def test_every_staging_venue_points_at_the_exchanges_test_environment(monkeypatch):
    names = _pod_environment("staging", monkeypatch)
    resource = ccxt_exchange_from_env("prod")  # DAGSTER_DEPLOYMENT=prod in staging too
    assert resource.venue_names() == names
    live = []
    for venue in resource.accounts:
        built, live_mode = _endpoints(venue)
        if built == live_mode:
            live.append(f"{venue.name} ({venue.exchange_id})")
    assert not live, f"staging trades on the LIVE exchange for: {', '.join(live)}"


def test_staging_talks_to_the_wise_sandbox(monkeypatch):
    _pod_environment("staging", monkeypatch)
    assert settings.get_url("WISE_API_URL", "prod") == "https://api.sandbox.transferwise.tech"


@pytest.mark.parametrize("environment", ["base", "prod"])
def test_production_venues_are_the_live_exchanges(environment, monkeypatch):
    # The other direction: a testnet flag copied into prod would leave the desk unhedged.
    _pod_environment(environment, monkeypatch)
    resource = ccxt_exchange_from_env("prod")
    for venue in resource.accounts:
        assert not (venue.sandbox or venue.demo_trading or venue.api_base_url or venue.api_urls), venue.name
        built, live_mode = _endpoints(venue)
        assert built == live_mode, venue.name
