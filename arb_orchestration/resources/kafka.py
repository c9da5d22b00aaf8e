"""Kafka client configuration (placeholder: implemented by the Kafka work)."""

from __future__ import annotations

from dagster import ConfigurableResource


class KafkaResource(ConfigurableResource):
    """Kafka producer/consumer/admin configuration, including SASL/TLS, and the event-signing key."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca_location: str | None = None
    client_id: str = "arb-orchestration"
    signing_key: str | None = None
