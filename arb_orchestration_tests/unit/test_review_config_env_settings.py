"""Config review: environment variables that loaded fine with a bad value and broke later, mid-run.

Each case used to load the code location without a word, then:
- SMTP_PORT=-1 / 99999: smtplib raised OverflowError in the stop-loss's risk mail, after the liquidation;
- SMTP_USERNAME without SMTP_PASSWORD (prod): BusinessError at the first mail, after the liquidation;
- RISK_TEAM_EMAILS / SMTP_SENDER without an address in it: refused at the first mail;
- WISE_PROFILE_ID=0 / -3: every Wise call of the rebalance went to a profile that cannot exist;
- EXCHANGE_SIM_URL/WISE_API_URL 'http://' (no host): the first request failed;
  a URL with credentials in it (`https://user:token@host`) put a secret in a non-secret variable,
  shown in the Dagster UI's resource config, and the error echoed it;
- KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_MECHANISM typos, SASL without its username or password: every
  sensor tick failed (stop-loss events included) while the code location looked healthy;
- EXCHANGE_VENUES with a duplicate, the reserved name `wise`, or a name Dagster refuses in a tag
  (the last failed the load, but with Dagster's "Invalid tag value", not the variable's name).
"""

import subprocess
import sys

import pytest

from arb_orchestration import settings
from arb_orchestration.defs.market_data.keys import configured_venues
from arb_orchestration.defs.resources import resources_for_deployment


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in list(settings.SETTINGS) + ["KAFKA_SASL_PASSWORD", "SMTP_PASSWORD"]:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("SMTP_PORT", "-1", "SMTP_PORT must be a TCP port (1-65535), got '-1'"),
        ("SMTP_PORT", "99999", "SMTP_PORT must be a TCP port (1-65535), got '99999'"),
        ("SMTP_PORT", "0", "SMTP_PORT must be a TCP port (1-65535), got '0'"),
        ("WISE_PROFILE_ID", "0", "WISE_PROFILE_ID must be a positive integer, got '0'"),
        ("WISE_PROFILE_ID", "-3", "WISE_PROFILE_ID must be a positive integer, got '-3'"),
        ("EXCHANGE_SIM_URL", "http://", "EXCHANGE_SIM_URL must be an http(s) URL with a host"),
        ("WISE_API_URL", "https://", "WISE_API_URL must be an http(s) URL with a host"),
        ("RISK_TEAM_EMAILS", "risk-team", "RISK_TEAM_EMAILS: 'risk-team' is not an e-mail address"),
        ("RISK_TEAM_EMAILS", "risk@desk.example,ops desk", "RISK_TEAM_EMAILS: 'ops desk' is not an e-mail address"),
        ("SMTP_SENDER", "arb orchestration", "SMTP_SENDER: 'arb orchestration' is not an e-mail address"),
        ("KAFKA_SECURITY_PROTOCOL", "SASL_SSLL", "KAFKA_SECURITY_PROTOCOL"),
        ("KAFKA_BOOTSTRAP_SERVERS", "kafka.internal", "KAFKA_BOOTSTRAP_SERVERS"),
        ("EXCHANGE_VENUES", "binance,okx,binance", "EXCHANGE_VENUES names binance twice"),
        ("EXCHANGE_VENUES", "binance,wise", "EXCHANGE_VENUES: 'wise' is reserved"),
        ("EXCHANGE_VENUES", "binance,okx eu", "EXCHANGE_VENUES: 'okx eu' is not a venue name"),
        ("EXCHANGE_VENUES", "Binance", "EXCHANGE_VENUES: 'Binance' is not a venue name"),
    ],
)
def test_bad_value_fails_the_load_naming_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(settings.SettingError) as caught:
        resources_for_deployment("local")  # the load itself fails (a second call in this block could hide it)
    assert message in str(caught.value)
    if name == "EXCHANGE_VENUES":  # and the asset keys, read from the same variable, refuse it the same way
        with pytest.raises(settings.SettingError) as caught:
            configured_venues()
        assert message in str(caught.value)


def test_sasl_typo_and_missing_sasl_credentials_fail_the_load(monkeypatch):
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-265")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "arb")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "kafka-password-value")
    with pytest.raises(settings.SettingError, match="KAFKA_SASL_MECHANISM") as caught:
        resources_for_deployment("local")
    assert "kafka-password-value" not in str(caught.value)
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.delenv("KAFKA_SASL_PASSWORD")
    with pytest.raises(settings.SettingError, match="KAFKA_SASL_PASSWORD"):
        resources_for_deployment("local")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "kafka-password-value")
    kafka = resources_for_deployment("local")["kafka"]
    assert kafka.sasl_mechanism == "SCRAM-SHA-256"


def test_smtp_username_without_password_fails_the_prod_load(monkeypatch):
    for name, value in [("EVENT_SIGNING_KEY", "k"), ("WISE_API_TOKEN", "t"), ("EXCHANGE_SIM_API_KEY", "x"),
                        ("EXCHANGE_SIM_URL", "http://sim:8701"), ("WISE_API_URL", "https://api.sandbox.transferwise.tech"),
                        ("WISE_PROFILE_ID", "1"), ("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092"), ("SMTP_HOST", "smtp"),
                        ("SMTP_PORT", "587"), ("SMTP_SENDER", "arb@desk.example"), ("RISK_TEAM_EMAILS", "risk@desk.example"),
                        ("EXCHANGE_VENUES", "binance,okx")]:
        monkeypatch.setenv(name, value)
    assert set(resources_for_deployment("prod")) == {"exchange", "wise", "kafka", "smtp"}
    monkeypatch.setenv("SMTP_USERNAME", "arb")
    with pytest.raises(settings.SettingError, match="SMTP_PASSWORD"):
        resources_for_deployment("prod")
    monkeypatch.setenv("SMTP_PASSWORD", "smtp-password-value")
    assert resources_for_deployment("prod")["smtp"].username == "arb"


def test_credentials_in_a_url_are_refused_without_echoing_them(monkeypatch):
    monkeypatch.setenv("EXCHANGE_SIM_URL", "http://desk:hunter2-secret@sim.internal:8701")
    with pytest.raises(settings.SettingError, match="EXCHANGE_SIM_URL") as caught:
        resources_for_deployment("local")
    assert "hunter2-secret" not in str(caught.value)
    assert "credentials" in str(caught.value)


def test_good_values_still_load(monkeypatch):
    monkeypatch.setenv("SMTP_PORT", "587")
    monkeypatch.setenv("RISK_TEAM_EMAILS", " risk@desk.example , Ops <ops@desk.example>")
    monkeypatch.setenv("EXCHANGE_VENUES", "binance, okx ,gate_io,crypto.com,bit-get")
    monkeypatch.setenv("EXCHANGE_SIM_URL", "http://127.0.0.1:8701/")
    resources = resources_for_deployment("local")
    assert resources["smtp"].port == 587
    assert resources["smtp"].risk_team == ["risk@desk.example", "Ops <ops@desk.example>"]
    assert resources["exchange"].base_url == "http://127.0.0.1:8701"
    assert configured_venues() == ["binance", "okx", "gate_io", "crypto.com", "bit-get"]


def test_dagster_definitions_validate_names_the_variable():
    """What an operator sees for a venue name Dagster would refuse in a tag: the variable, not 'Invalid tag value'."""
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "arb_orchestration.definitions"],
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "EXCHANGE_VENUES": "binance,okx eu"},
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode != 0
    assert "EXCHANGE_VENUES: 'okx eu' is not a venue name" in result.stdout + result.stderr
