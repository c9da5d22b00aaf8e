"""Audit: secrets stay out of repr() once Dagster has resolved them, for every resource the prod deployment builds.

The existing checks look at the resources as the code location loads them, where each secret is still an
`EnvVar` reference (its repr is the variable's name). A run sees the resolved copy Dagster makes from them:
that copy's repr/str (tracebacks with locals, debug logs, error reporters) is what this file checks.
"""

from __future__ import annotations

import pytest

from arb_orchestration.defs.resources import resources_for_deployment
from arb_orchestration.resources.wise_production import ProductionWiseResource
from arb_orchestration_tests.unit.test_settings import _prod_env

SENTINELS = {
    "WISE_API_TOKEN": "wise-token-SENTINEL-5c1e",
    "EVENT_SIGNING_KEY": "signing-key-SENTINEL-9a7b",
    "KAFKA_SASL_PASSWORD": "sasl-password-SENTINEL-33d0",
    "SMTP_PASSWORD": "smtp-password-SENTINEL-e4f2",
    "EXCHANGE_SIM_API_KEY": "sim-api-key-SENTINEL-71aa",
    "CCXT_BINANCE_API_KEY": "ccxt-key-SENTINEL-0b3c",
    "CCXT_BINANCE_SECRET": "ccxt-secret-SENTINEL-6d21",
}


def _prod_resources(monkeypatch, **values):
    _prod_env(monkeypatch, KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
              KAFKA_SASL_USERNAME="desk", SMTP_USERNAME="alerts", **SENTINELS, **values)
    # A live Wise resource checks its profile on setup (a network call): not what is tested here.
    monkeypatch.setattr(ProductionWiseResource, "check_profile", lambda self: None)
    return resources_for_deployment("prod")


def _leaks(text: str) -> list[str]:
    return [name for name, value in SENTINELS.items() if value in text]


def _resolved_reprs(resource) -> str:
    """repr and str of the copy a run uses (Dagster resolves the EnvVars and sets the resource up)."""
    with resource.process_config_and_initialize_cm() as live:
        return f"{live!r}\n{live!s}"


@pytest.mark.parametrize("key", ["wise", "kafka", "smtp"])
def test_resolved_resources_do_not_show_their_secrets(monkeypatch, key):
    resource = _prod_resources(monkeypatch)[key]
    text = _resolved_reprs(resource)
    assert type(resource).__name__ in text  # the repr was produced from the resolved copy
    assert _leaks(text) == []


def test_resolved_ccxt_exchange_does_not_show_venue_credentials(monkeypatch):
    exchange = _prod_resources(monkeypatch, EXCHANGE_BACKEND="ccxt", EXCHANGE_VENUES="binance",
                               CCXT_VENUES='{"binance": {"demo_trading": true}}')["exchange"]
    assert _leaks(_resolved_reprs(exchange)) == []


def test_resolved_sim_exchange_does_not_show_its_api_key(monkeypatch):
    exchange = _prod_resources(monkeypatch, EXCHANGE_BACKEND="sim")["exchange"]
    assert _leaks(_resolved_reprs(exchange)) == []
