"""Settings: a missing or malformed setting fails the code-location load with the variable's name."""

import subprocess
import sys

import pytest

from arb_orchestration import settings
from arb_orchestration.defs.resources import resources_for_deployment


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
