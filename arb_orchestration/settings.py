"""Every environment variable the platform reads, in one table.

Non-secret settings are read when the code location loads and validated there,
so a missing or malformed one fails the load with the variable's name.
Secrets are *never* read here: they reach resources as `dagster.EnvVar` and are
resolved at run time; at load we only check that they are set (in `prod`).
The README's configuration table is this table (`arb-orchestration settings`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from email.utils import parseaddr
from urllib.parse import urlsplit
from typing import Callable


class SettingError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Setting:
    name: str
    help: str
    local_default: str | None = None  # None: required in local too
    prod_required: bool = True
    secret: bool = False


def _as_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingError(f"{name} must be an integer, got {raw!r}") from None


def _as_float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise SettingError(f"{name} must be a number, got {raw!r}") from None


def _as_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise SettingError(f"{name} must be true/false, got {raw!r}")


def _as_url(name: str, raw: str) -> str:
    if "@" in raw.partition("://")[2].split("/")[0] or ("://" not in raw and "@" in raw):
        # user:token@host puts a secret in a non-secret variable (shown in the UI's resource config): never echo it.
        raise SettingError(f"{name} must not carry credentials (user:password@): pass secrets as their own variables")
    if not raw.startswith(("http://", "https://")):
        raise SettingError(f"{name} must be an http(s) URL, got {raw!r}")
    try:
        host = urlsplit(raw).hostname
    except ValueError:
        host = None
    if not host:
        raise SettingError(f"{name} must be an http(s) URL with a host, got {raw!r}")
    return raw.rstrip("/")


def _as_list(name: str, raw: str) -> list[str]:
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if not items:
        raise SettingError(f"{name} must be a non-empty comma-separated list")
    return items


def _as_port(name: str, raw: str) -> int:
    port = _as_int(name, raw)
    if not 0 < port < 65536:
        raise SettingError(f"{name} must be a TCP port (1-65535), got {raw!r}")
    return port


def _as_positive_int(name: str, raw: str) -> int:
    value = _as_int(name, raw)
    if value < 1:
        raise SettingError(f"{name} must be a positive integer, got {raw!r}")
    return value


def _email(name: str, item: str) -> str:
    # "Risk <risk@desk.example>" or "risk@desk.example"; anything else is refused by the first SMTP relay.
    _, address = parseaddr(item)
    local, _, domain = address.rpartition("@")
    if not local or not domain or " " in address:
        raise SettingError(f"{name}: {item!r} is not an e-mail address")
    return item


def _as_email(name: str, raw: str) -> str:
    return _email(name, raw.strip())


def _as_emails(name: str, raw: str) -> list[str]:
    return [_email(name, item) for item in _as_list(name, raw)]


# `wise` names the desk's Wise balance in plans (domain.rebalance.FIAT_SOURCE): no venue may be called that.
RESERVED_VENUE_NAMES = frozenset({"wise"})
# Lower-case, and within what Dagster accepts in a tag value (the `venue` tag of the per-venue assets).
_VENUE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


def _as_venues(name: str, raw: str) -> list[str]:
    venues = _as_list(name, raw)
    for venue in venues:
        if not _VENUE_NAME.fullmatch(venue):
            raise SettingError(f"{name}: {venue!r} is not a venue name (lower-case letters, digits, '_', '.', '-')")
        if venue in RESERVED_VENUE_NAMES:
            raise SettingError(f"{name}: {venue!r} is reserved (the desk's Wise balance), not a venue name")
        if venues.count(venue) > 1:
            raise SettingError(f"{name} names {venue} twice")
    return venues


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        Setting("DAGSTER_DEPLOYMENT", "Which resources to wire: `local` (simulators) or `prod`.", "local", False),
        Setting("EXCHANGE_BACKEND", "`sim` (the exchange simulator) or `ccxt` (real venues).", "sim", False),
        Setting("EXCHANGE_SIM_URL", "Base URL of the exchange simulator (in prod: required with EXCHANGE_BACKEND=sim, unused with ccxt).", "http://127.0.0.1:8701"),
        Setting("EXCHANGE_SIM_API_KEY", "API key the simulator expects (secret; in prod: required with EXCHANGE_BACKEND=sim, unused with ccxt).", None, True, True),
        Setting("EXCHANGE_VENUES", "Comma-separated venue names.", "binance,okx,bybit,kraken,hyperliquid"),
        # EXCHANGE_BACKEND=ccxt (resources/ccxt_venue.py; docs/real-venues.md). <VENUE> is the venue name upper-cased.
        Setting("CCXT_VENUES", "JSON object, venue name -> {exchange_id, sandbox, demo_trading, symbols, withdraw_allowlist, fiat_deposit_addresses, fiat_deposit_references, default_funding_interval_hours, options, read_only, rate_limit_ms, api_base_url, api_urls, withdrawal_fee_mode, withdraw_from_account, sweep_deposits_to_trading} (docs/real-venues.md); a missing venue uses its default ccxt class.", "{}", False),
        Setting("CCXT_<VENUE>_API_KEY", "API key of that venue account (secret; required in prod with EXCHANGE_BACKEND=ccxt).", "", False, True),
        Setting("CCXT_<VENUE>_SECRET", "API secret of that venue account (secret; required in prod with EXCHANGE_BACKEND=ccxt).", "", False, True),
        Setting("CCXT_<VENUE>_PASSWORD", "API passphrase, where the venue has one (OKX) (secret).", "", False, True),
        Setting("WISE_API_URL", "Wise API base URL (sandbox: https://api.sandbox.transferwise.tech).", "http://127.0.0.1:8702"),
        Setting("WISE_API_TOKEN", "Wise personal API token (secret; required in prod with WISE_AUTH=personal_token, the default).", None, False, True),
        Setting("WISE_PROFILE_ID", "Wise business profile id that pays.", "1001"),
        # Production Wise in prod (resources/wise_production.py; docs/real-venues.md). Local runs use the simulator.
        Setting("WISE_AUTH", "How prod authenticates to Wise: `personal_token` (WISE_API_TOKEN; in the EU/UK Wise refuses to fund through the API and the rebalance saga waits for a person to fund in the Wise app), `oauth_refresh_token` (WISE_OAUTH_CLIENT_ID, WISE_OAUTH_CLIENT_SECRET, WISE_OAUTH_REFRESH_TOKEN) or `oauth_client_credentials` (client id and secret).", "personal_token", False),
        Setting("WISE_ENVIRONMENT", "`sandbox`, `live` or `custom` (WISE_API_URL as given: a simulator, a proxy); empty: from WISE_API_URL's host (api.transferwise.com/api.wise.com: live, api.sandbox.transferwise.tech: sandbox, else custom). Live talks https to the live host only.", "", False),
        Setting("WISE_OAUTH_CLIENT_ID", "Wise OAuth client id (required in prod with WISE_AUTH=oauth_*).", "", False),
        Setting("WISE_OAUTH_CLIENT_SECRET", "Wise OAuth client secret (secret; required in prod with WISE_AUTH=oauth_*).", "", False, True),
        Setting("WISE_OAUTH_REFRESH_TOKEN", "Wise OAuth refresh token of the desk's user (secret; required in prod with WISE_AUTH=oauth_refresh_token).", "", False, True),
        # Wise webhooks (`arb-orchestration wise-webhooks serve`; docs/real-venues.md). A public key: not a secret.
        Setting("WISE_WEBHOOK_PUBLIC_KEY", "Wise's webhook signing public key (PEM file path, or the PEM itself; sandbox and live differ); read by `arb-orchestration wise-webhooks serve` only.", "", False),
        Setting("KAFKA_BOOTSTRAP_SERVERS", "Kafka bootstrap servers, host:port[,host:port].", "127.0.0.1:9092"),
        Setting("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.", "PLAINTEXT", False),
        Setting("KAFKA_SASL_MECHANISM", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_*).", "", False),
        Setting("KAFKA_SASL_USERNAME", "SASL username.", "", False),
        Setting("KAFKA_SASL_PASSWORD", "SASL password (secret).", "", False, True),
        Setting("KAFKA_SSL_CA_LOCATION", "CA bundle path for SSL/SASL_SSL.", "", False),
        Setting("EVENT_SIGNING_KEY", "HMAC-SHA256 key that signs critical events (secret).", None, True, True),
        Setting("SMTP_HOST", "SMTP server host.", "127.0.0.1"),
        Setting("SMTP_PORT", "SMTP server port.", "8025"),
        Setting("SMTP_USERNAME", "SMTP username (empty: no auth).", "", False),
        Setting("SMTP_PASSWORD", "SMTP password (secret).", "", False, True),
        Setting("SMTP_STARTTLS", "Use STARTTLS.", "false", False),
        Setting("SMTP_TLS_CA_FILE", "CA bundle (file path) that signed the SMTP relay's certificate, for STARTTLS to a relay with a private CA (empty: the system's CAs).", "", False),
        Setting("SMTP_SENDER", "From address of risk mails.", "arb-orchestration@localhost"),
        Setting("RISK_TEAM_EMAILS", "Comma-separated addresses of the risk team.", "risk@localhost"),
        # Kafka-triggered sensors (defs/events; docs/sensors.md).
        Setting("ARB_EVENT_TOPIC_PREFIX", "Prefix for the three event topics and their .dlq (tests, benchmarks); empty in prod.", "", False),
        Setting("ARB_SENSOR_LONG_POLL_SECONDS", "How long the market/capital sensors wait for events inside one tick (0-30).", "4.0", False),
        Setting("ARB_SENSOR_MAX_MESSAGES", "Most messages one sensor tick reads.", "50000", False),
        Setting("ARB_SENSOR_LOOP_RESERVE_SECONDS", "Market/capital sensors end their long poll this long before the daemon's next 5 s loop iteration (0: fixed long poll instead).", "0.35", False),
        Setting("ARB_EVENT_MAX_AGE_SECONDS", "Non-critical events older than this are read but not acted on.", "900", False),
        Setting("ARB_CRITICAL_EVENT_MAX_AGE_SECONDS", "Timestamp window of signed critical events (older: refused).", "60", False),
        Setting("ARB_FUNDING_DEVIATION_BPS", "Hedge when a funding rate (per 8 h) moved more than this since the last hedge.", "20", False),
        # Wise refund follow-up (defs/rebalance/refunds.py; docs/refund-followup.md).
        Setting("ARB_WISE_REFUND_ALERT_AFTER_SECONDS", "Escalate (one mail) a funded Wise transfer the rebalance saga cancelled that Wise has still not refunded this long after the cancel.", "86400", False),
    ]
}


def raw(name: str, deployment: str | None = None) -> str:
    """The raw value of a non-secret setting, or its local default; raises naming the variable."""
    setting = SETTINGS[name]
    if setting.secret:
        raise SettingError(f"{name} is a secret: pass it as dagster.EnvVar({name!r}), never read it at load")
    deployment = deployment or deployment_name()
    value = os.environ.get(name)
    if value is not None and value != "":
        return value
    if deployment == "local" and setting.local_default is not None:
        return setting.local_default
    if not setting.prod_required and setting.local_default is not None:
        return setting.local_default
    raise SettingError(f"missing required setting {name}: {setting.help}")


def get(name: str, parse: Callable[[str, str], object] | None = None, deployment: str | None = None):
    value = raw(name, deployment)
    return parse(name, value) if parse else value


def get_int(name: str, deployment: str | None = None) -> int:
    return _as_int(name, raw(name, deployment))


def get_float(name: str, deployment: str | None = None) -> float:
    return _as_float(name, raw(name, deployment))


def get_bool(name: str, deployment: str | None = None) -> bool:
    return _as_bool(name, raw(name, deployment))


def get_url(name: str, deployment: str | None = None) -> str:
    return _as_url(name, raw(name, deployment))


def get_list(name: str, deployment: str | None = None) -> list[str]:
    return _as_list(name, raw(name, deployment))


def get_port(name: str, deployment: str | None = None) -> int:
    return _as_port(name, raw(name, deployment))


def get_positive_int(name: str, deployment: str | None = None) -> int:
    return _as_positive_int(name, raw(name, deployment))


def get_email(name: str, deployment: str | None = None) -> str:
    return _as_email(name, raw(name, deployment))


def get_emails(name: str, deployment: str | None = None) -> list[str]:
    return _as_emails(name, raw(name, deployment))


def get_venues(name: str = "EXCHANGE_VENUES", deployment: str | None = None) -> list[str]:
    return _as_venues(name, raw(name, deployment))


def deployment_name() -> str:
    value = os.environ.get("DAGSTER_DEPLOYMENT", "local") or "local"
    if value not in {"local", "prod"}:
        raise SettingError(f"DAGSTER_DEPLOYMENT must be 'local' or 'prod', got {value!r}")
    return value


def require_secret_present(name: str, deployment: str | None = None) -> None:
    """Fail at load when a required secret is unset (its value is not read into config)."""
    setting = SETTINGS[name]
    deployment = deployment or deployment_name()
    if deployment == "prod" and setting.prod_required and not os.environ.get(name):
        raise SettingError(f"missing required secret {name}: {setting.help}")


def markdown_table() -> str:
    rows = ["| variable | local default | required in prod | secret | meaning |", "|---|---|---|---|---|"]
    for s in SETTINGS.values():
        default = "—" if s.local_default is None else f"`{s.local_default}`" if s.local_default else "(empty)"
        rows.append(
            f"| `{s.name}` | {default} | {'yes' if s.prod_required else 'no'} | {'yes' if s.secret else 'no'} | {s.help} |"
        )
    return "\n".join(rows)
