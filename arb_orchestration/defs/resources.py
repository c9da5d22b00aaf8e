"""Resources per deployment, chosen in this one place by `DAGSTER_DEPLOYMENT` (local | prod).

Non-secret settings are read and validated now (a bad one fails the load with its
name); secrets go in as `EnvVar` and are resolved only when a run uses them.
"""

from __future__ import annotations

from dagster import EnvVar

from arb_orchestration import settings
from arb_orchestration.resources.kafka import KafkaResource
from arb_orchestration.resources.sim_venue import SimExchangeResource
from arb_orchestration.resources.smtp import SmtpResource
from arb_orchestration.resources.wise import WiseResource

# Secrets every prod deployment needs; venue credentials depend on the exchange backend.
_SECRETS = ("WISE_API_TOKEN", "EVENT_SIGNING_KEY")


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
            venue_list=settings.get_list("EXCHANGE_VENUES", deployment),
        )
    if backend == "ccxt":
        from arb_orchestration.resources.ccxt_venue import ccxt_exchange_from_env

        return ccxt_exchange_from_env(deployment)
    raise settings.SettingError(f"EXCHANGE_BACKEND must be 'sim' or 'ccxt', got {backend!r}")


def resources_for_deployment(deployment: str) -> dict:
    if deployment == "prod":
        for name in _SECRETS:
            settings.require_secret_present(name, deployment)
    return {
        "exchange": exchange_resource(deployment),
        "wise": WiseResource(
            base_url=settings.get_url("WISE_API_URL", deployment),
            api_token=EnvVar("WISE_API_TOKEN"),
            profile_id=settings.get_int("WISE_PROFILE_ID", deployment),
        ),
        "kafka": KafkaResource(
            bootstrap_servers=settings.get("KAFKA_BOOTSTRAP_SERVERS", deployment=deployment),
            security_protocol=settings.get("KAFKA_SECURITY_PROTOCOL", deployment=deployment),
            sasl_mechanism=settings.get("KAFKA_SASL_MECHANISM", deployment=deployment) or None,
            sasl_username=settings.get("KAFKA_SASL_USERNAME", deployment=deployment) or None,
            sasl_password=_optional_secret("KAFKA_SASL_PASSWORD"),
            ssl_ca_location=settings.get("KAFKA_SSL_CA_LOCATION", deployment=deployment) or None,
            signing_key=EnvVar("EVENT_SIGNING_KEY"),
        ),
        "smtp": SmtpResource(
            host=settings.get("SMTP_HOST", deployment=deployment),
            port=settings.get_int("SMTP_PORT", deployment),
            username=settings.get("SMTP_USERNAME", deployment=deployment) or None,
            password=_optional_secret("SMTP_PASSWORD"),
            starttls=settings.get_bool("SMTP_STARTTLS", deployment),
            sender=settings.get("SMTP_SENDER", deployment=deployment),
            risk_team=settings.get_list("RISK_TEAM_EMAILS", deployment),
        ),
    }
