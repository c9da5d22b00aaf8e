"""Resources per deployment, chosen in this one place by `DAGSTER_DEPLOYMENT` (local | prod).

Non-secret settings are read and validated now (a bad one fails the load with its
name); secrets go in as `EnvVar` and are resolved only when a run uses them.

`wise`: the plain `WiseResource` locally (the simulator); in prod `ProductionWiseResource`
with `WISE_ENVIRONMENT` (sandbox | live | custom, inferred from `WISE_API_URL` when empty) and
`WISE_AUTH` (personal_token | oauth_refresh_token | oauth_client_credentials), requiring exactly
the secrets that mode needs. Same calls on both, so the rebalance steps take either.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from dagster import EnvVar

from arb_orchestration import settings
from arb_orchestration.resources.kafka import KafkaConfigError, KafkaResource
from arb_orchestration.resources.sim_venue import SimExchangeResource
from arb_orchestration.resources.smtp import SmtpResource
from arb_orchestration.resources.wise import WiseResource
from arb_orchestration.resources.wise_production import WISE_LIVE_URL, WISE_SANDBOX_URL, ProductionWiseResource

# Secrets every prod deployment needs; venue credentials depend on the exchange backend, Wise's on WISE_AUTH.
_SECRETS = ("EVENT_SIGNING_KEY",)

WISE_AUTH_MODES = ("personal_token", "oauth_refresh_token", "oauth_client_credentials")
# The secrets each WISE_AUTH mode needs (the OAuth client id is not a secret: WISE_OAUTH_CLIENT_ID).
_WISE_SECRETS = {
    "personal_token": ("WISE_API_TOKEN",),
    "oauth_refresh_token": ("WISE_OAUTH_CLIENT_SECRET", "WISE_OAUTH_REFRESH_TOKEN"),
    "oauth_client_credentials": ("WISE_OAUTH_CLIENT_SECRET",),
}
# Hosts ProductionWiseResource accepts with environment=live (it checks the same itself).
_WISE_LIVE_HOSTS = {urlsplit(WISE_LIVE_URL).hostname, "api.wise.com"}
_WISE_SANDBOX_HOST = urlsplit(WISE_SANDBOX_URL).hostname


def _optional_secret(name: str):
    # An optional secret that is unset stays unset; when set it is passed by reference.
    import os

    return EnvVar(name) if os.environ.get(name) else None


def exchange_resource(deployment: str):
    backend = settings.get("EXCHANGE_BACKEND", deployment=deployment)
    if backend == "sim":
        if deployment == "prod":
            settings.require_secret_present("EXCHANGE_SIM_API_KEY", deployment)
        return SimExchangeResource(
            base_url=settings.get_url("EXCHANGE_SIM_URL", deployment),
            api_key=EnvVar("EXCHANGE_SIM_API_KEY"),
            venue_list=settings.get_venues("EXCHANGE_VENUES", deployment),
        )
    if backend == "ccxt":
        from arb_orchestration.resources.ccxt_venue import ccxt_exchange_from_env

        return ccxt_exchange_from_env(deployment)
    raise settings.SettingError(f"EXCHANGE_BACKEND must be 'sim' or 'ccxt', got {backend!r}")


def _wise_auth(deployment: str) -> str:
    auth = settings.get("WISE_AUTH", deployment=deployment).strip()
    if auth not in WISE_AUTH_MODES:
        raise settings.SettingError(f"WISE_AUTH must be one of {', '.join(WISE_AUTH_MODES)}, got {auth!r}")
    return auth


def _require_wise_secrets(deployment: str) -> None:
    """In prod, the secrets the chosen WISE_AUTH needs must be set (their values are not read here)."""
    import os

    auth = _wise_auth(deployment)
    for name in _WISE_SECRETS[auth]:
        if not os.environ.get(name):
            raise settings.SettingError(
                f"missing required secret {name}: {settings.SETTINGS[name].help} (WISE_AUTH={auth})"
            )


def _wise_environment(base_url: str, deployment: str) -> str:
    explicit = settings.get("WISE_ENVIRONMENT", deployment=deployment).strip().lower()
    if explicit not in ("", "sandbox", "live", "custom"):
        raise settings.SettingError(f"WISE_ENVIRONMENT must be sandbox, live or custom (or empty), got {explicit!r}")
    url = urlsplit(base_url)
    inferred = "live" if url.hostname in _WISE_LIVE_HOSTS else "sandbox" if url.hostname == _WISE_SANDBOX_HOST else "custom"
    environment = explicit or inferred
    if environment == "live" and (url.scheme != "https" or url.hostname not in _WISE_LIVE_HOSTS):
        raise settings.SettingError(
            f"WISE_API_URL must be {WISE_LIVE_URL} with WISE_ENVIRONMENT=live, got {base_url!r}")
    if environment == "sandbox" and url.scheme != "https":
        raise settings.SettingError(f"WISE_API_URL must be https:// with WISE_ENVIRONMENT=sandbox, got {base_url!r}")
    if environment == "custom" and inferred == "live":
        raise settings.SettingError(
            f"WISE_API_URL {base_url!r} is the live Wise API: set WISE_ENVIRONMENT=live (or leave it empty), not custom")
    return environment


def wise_resource(deployment: str):
    """Local: `WiseResource` (the simulator). Prod: `ProductionWiseResource` (environment, auth, profile check, SCA)."""
    base_url = settings.get_url("WISE_API_URL", deployment)
    profile_id = settings.get_positive_int("WISE_PROFILE_ID", deployment)
    if deployment != "prod":
        return WiseResource(base_url=base_url, api_token=EnvVar("WISE_API_TOKEN"), profile_id=profile_id)
    auth = _wise_auth(deployment)
    options: dict = {"base_url": base_url, "environment": _wise_environment(base_url, deployment), "auth": auth,
                     "profile_id": profile_id}
    if auth == "personal_token":
        options["api_token"] = EnvVar("WISE_API_TOKEN")
    else:
        client_id = settings.get("WISE_OAUTH_CLIENT_ID", deployment=deployment).strip()
        if not client_id:
            raise settings.SettingError(
                f"missing required setting WISE_OAUTH_CLIENT_ID: {settings.SETTINGS['WISE_OAUTH_CLIENT_ID'].help} "
                f"(WISE_AUTH={auth})")
        options.update(client_id=client_id, client_secret=EnvVar("WISE_OAUTH_CLIENT_SECRET"))
        if auth == "oauth_refresh_token":
            options["refresh_token"] = EnvVar("WISE_OAUTH_REFRESH_TOKEN")
    return ProductionWiseResource(**options)


# KafkaResource's field -> the variable that sets it (its own checks name fields; an operator sets variables).
_KAFKA_VARIABLES = {
    "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "security_protocol": "KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "KAFKA_SASL_MECHANISM",
    "sasl_username": "KAFKA_SASL_USERNAME",
    "sasl_password": "KAFKA_SASL_PASSWORD",
    "ssl_ca_location": "KAFKA_SSL_CA_LOCATION",
}


def _checked_kafka(kafka: KafkaResource) -> KafkaResource:
    """Run the resource's own connection checks now: a typo there would otherwise fail every sensor tick.

    Only the presence of the SASL password is looked at (it is still an unresolved EnvVar here).
    """
    try:
        kafka.client_config()
    except KafkaConfigError as exc:
        message = str(exc)
        for field, variable in _KAFKA_VARIABLES.items():
            message = message.replace(f"KafkaResource.{field}", variable)
        raise settings.SettingError(message) from None
    return kafka


def _smtp_credentials(deployment: str):
    """(username, password): SMTP_USERNAME without SMTP_PASSWORD would fail the first risk mail (after a
    liquidation), so it fails the load instead."""
    username = settings.get("SMTP_USERNAME", deployment=deployment) or None
    password = _optional_secret("SMTP_PASSWORD")
    if username and password is None:
        raise settings.SettingError(f"missing required secret SMTP_PASSWORD: {settings.SETTINGS['SMTP_PASSWORD'].help} "
                                    "(SMTP_USERNAME is set)")
    return username, password


def resources_for_deployment(deployment: str) -> dict:
    if deployment == "prod":
        _require_wise_secrets(deployment)
        for name in _SECRETS:
            settings.require_secret_present(name, deployment)
    smtp_username, smtp_password = _smtp_credentials(deployment)
    return {
        "exchange": exchange_resource(deployment),
        "wise": wise_resource(deployment),
        "kafka": _checked_kafka(KafkaResource(
            bootstrap_servers=settings.get("KAFKA_BOOTSTRAP_SERVERS", deployment=deployment),
            security_protocol=settings.get("KAFKA_SECURITY_PROTOCOL", deployment=deployment),
            sasl_mechanism=settings.get("KAFKA_SASL_MECHANISM", deployment=deployment) or None,
            sasl_username=settings.get("KAFKA_SASL_USERNAME", deployment=deployment) or None,
            sasl_password=_optional_secret("KAFKA_SASL_PASSWORD"),
            ssl_ca_location=settings.get("KAFKA_SSL_CA_LOCATION", deployment=deployment) or None,
            signing_key=EnvVar("EVENT_SIGNING_KEY"),
        )),
        "smtp": SmtpResource(
            host=settings.get("SMTP_HOST", deployment=deployment),
            port=settings.get_port("SMTP_PORT", deployment),
            username=smtp_username,
            password=smtp_password,
            starttls=settings.get_bool("SMTP_STARTTLS", deployment),
            tls_ca_file=settings.get("SMTP_TLS_CA_FILE", deployment=deployment) or None,
            sender=settings.get_email("SMTP_SENDER", deployment),
            risk_team=settings.get_emails("RISK_TEAM_EMAILS", deployment),
        ),
    }
