"""Settings: a missing or malformed setting fails the code-location load with the variable's name; prod builds
the production Wise client from WISE_AUTH / WISE_ENVIRONMENT and requires exactly the secrets that mode needs."""

import subprocess
import sys

import pytest
from dagster import EnvVar

from arb_orchestration import settings
from arb_orchestration.defs.resources import resources_for_deployment
from arb_orchestration.resources.wise import WiseResource
from arb_orchestration.resources.wise_production import ProductionWiseResource


def test_local_defaults_load_without_any_environment(monkeypatch):
    for name in settings.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    resources = resources_for_deployment("local")
    assert set(resources) == {"exchange", "wise", "kafka", "smtp"}
    assert resources["exchange"].base_url == "http://127.0.0.1:8701"


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("SMTP_PORT", "twenty-five", "SMTP_PORT must be an integer"),
        ("EXCHANGE_SIM_URL", "localhost:8701", "EXCHANGE_SIM_URL must be an http(s) URL"),
        ("WISE_PROFILE_ID", "abc", "WISE_PROFILE_ID must be an integer"),
        ("SMTP_STARTTLS", "perhaps", "SMTP_STARTTLS must be true/false"),
        ("EXCHANGE_BACKEND", "ftx", "EXCHANGE_BACKEND must be 'sim' or 'ccxt'"),
        ("DAGSTER_DEPLOYMENT", "staging", "DAGSTER_DEPLOYMENT must be 'local' or 'prod'"),
    ],
)
def test_malformed_setting_names_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(settings.SettingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resources_for_deployment(settings.deployment_name())


def test_prod_requires_every_setting_and_secret(monkeypatch):
    for name in settings.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(settings.SettingError, match="missing required secret WISE_API_TOKEN"):
        resources_for_deployment("prod")
    monkeypatch.setenv("WISE_API_TOKEN", "t")
    monkeypatch.setenv("EVENT_SIGNING_KEY", "k")
    with pytest.raises(settings.SettingError, match="EXCHANGE_SIM_API_KEY"):
        resources_for_deployment("prod")
    monkeypatch.setenv("EXCHANGE_SIM_API_KEY", "x")
    with pytest.raises(settings.SettingError, match="missing required setting EXCHANGE_SIM_URL"):
        resources_for_deployment("prod")


def test_secrets_are_never_read_at_load():
    with pytest.raises(settings.SettingError, match="is a secret"):
        settings.raw("WISE_API_TOKEN")


def test_code_location_load_fails_naming_the_setting():
    """What an operator sees: `dagster definitions validate` fails and names the variable."""
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "arb_orchestration.definitions"],
        env={"PATH": "/usr/bin:/bin", "SMTP_PORT": "not-a-port", "HOME": "/tmp"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "SMTP_PORT must be an integer" in result.stdout + result.stderr


def test_settings_table_lists_every_variable():
    table = settings.markdown_table()
    for name in settings.SETTINGS:
        assert f"`{name}`" in table


# --------------------------------------------------------------------------- production Wise (WISE_AUTH)


def _prod_env(monkeypatch, **values):
    """Every setting prod requires (plausible values), minus the Wise credentials; then `values`."""
    for name in settings.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    base = {"WISE_API_URL": "https://api.transferwise.com", "WISE_PROFILE_ID": "10000001",
            "EXCHANGE_SIM_URL": "http://127.0.0.1:8701", "EXCHANGE_SIM_API_KEY": "x", "EVENT_SIGNING_KEY": "k",
            "SMTP_PORT": "587"}
    for name, setting in settings.SETTINGS.items():
        if setting.prod_required and not setting.secret and "<" not in name:
            monkeypatch.setenv(name, base.get(name) or setting.local_default or "x")
    for name, value in {**base, **values}.items():
        monkeypatch.setenv(name, value)


def test_prod_builds_production_wise_on_a_personal_token_by_default(monkeypatch):
    _prod_env(monkeypatch, WISE_API_TOKEN="personal-token-3f9a")
    wise = resources_for_deployment("prod")["wise"]
    assert isinstance(wise, ProductionWiseResource)
    assert (wise.environment, wise.auth, wise.base_url, wise.profile_id) == (
        "live", "personal_token", "https://api.transferwise.com", 10000001)
    assert isinstance(wise.api_token, EnvVar) and wise.api_token == "WISE_API_TOKEN"  # a reference, not the value
    assert "personal-token-3f9a" not in repr(wise)


def test_local_keeps_the_simulator_client_whatever_wise_auth_says(monkeypatch):
    for name in settings.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WISE_AUTH", "oauth_refresh_token")
    wise = resources_for_deployment("local")["wise"]
    assert type(wise) is WiseResource and wise.base_url == "http://127.0.0.1:8702"


def test_prod_oauth_refresh_token_requires_its_secrets_and_client_id_not_the_personal_token(monkeypatch):
    _prod_env(monkeypatch, WISE_AUTH="oauth_refresh_token", WISE_API_URL="https://api.sandbox.transferwise.tech")
    with pytest.raises(settings.SettingError, match="missing required secret WISE_OAUTH_CLIENT_SECRET"):
        resources_for_deployment("prod")
    monkeypatch.setenv("WISE_OAUTH_CLIENT_SECRET", "s")
    with pytest.raises(settings.SettingError, match="missing required secret WISE_OAUTH_REFRESH_TOKEN"):
        resources_for_deployment("prod")
    monkeypatch.setenv("WISE_OAUTH_REFRESH_TOKEN", "r")
    with pytest.raises(settings.SettingError, match="missing required setting WISE_OAUTH_CLIENT_ID"):
        resources_for_deployment("prod")
    monkeypatch.setenv("WISE_OAUTH_CLIENT_ID", "desk-client")
    wise = resources_for_deployment("prod")["wise"]  # no WISE_API_TOKEN needed
    assert (wise.environment, wise.auth, wise.client_id) == ("sandbox", "oauth_refresh_token", "desk-client")
    assert wise.client_secret == "WISE_OAUTH_CLIENT_SECRET" and wise.refresh_token == "WISE_OAUTH_REFRESH_TOKEN"


def test_prod_oauth_client_credentials_needs_no_refresh_token(monkeypatch):
    _prod_env(monkeypatch, WISE_AUTH="oauth_client_credentials", WISE_OAUTH_CLIENT_ID="app",
              WISE_OAUTH_CLIENT_SECRET="s")
    wise = resources_for_deployment("prod")["wise"]
    assert (wise.auth, wise.refresh_token) == ("oauth_client_credentials", "")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"WISE_AUTH": "password"}, "WISE_AUTH must be one of personal_token, oauth_refresh_token"),
        ({"WISE_ENVIRONMENT": "staging"}, "WISE_ENVIRONMENT must be sandbox, live or custom"),
        ({"WISE_ENVIRONMENT": "live", "WISE_API_URL": "https://api.sandbox.transferwise.tech"},
         "WISE_API_URL must be https://api.transferwise.com with WISE_ENVIRONMENT=live"),
        ({"WISE_API_URL": "http://api.transferwise.com"}, "WISE_API_URL must be https://api.transferwise.com"),
        ({"WISE_ENVIRONMENT": "sandbox", "WISE_API_URL": "http://127.0.0.1:8702"}, "must be https:// with WISE_ENVIRONMENT=sandbox"),
        ({"WISE_ENVIRONMENT": "custom"}, "is the live Wise API: set WISE_ENVIRONMENT=live"),
    ],
)
def test_prod_wise_settings_fail_at_load_naming_the_variable(monkeypatch, values, message):
    _prod_env(monkeypatch, WISE_API_TOKEN="t", **values)
    with pytest.raises(settings.SettingError, match=message.replace("(", r"\(")):
        resources_for_deployment("prod")


def test_prod_against_a_simulator_or_proxy_is_a_custom_environment(monkeypatch):
    _prod_env(monkeypatch, WISE_API_TOKEN="t", WISE_API_URL="http://wise-sim.staging:8702")
    wise = resources_for_deployment("prod")["wise"]
    assert (wise.environment, wise.base_url) == ("custom", "http://wise-sim.staging:8702")
