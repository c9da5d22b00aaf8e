"""Wise API client (placeholder: implemented by the Wise work)."""

from __future__ import annotations

from dagster import ConfigurableResource


class WiseResource(ConfigurableResource):
    """The Wise API: quote → recipient → transfer (customerTransactionId) → fund."""

    base_url: str
    api_token: str
    profile_id: int
    timeout_seconds: float = 10.0
    max_attempts: int = 4
    retry_base_delay: float = 0.3
    breaker_failure_threshold: int = 5
    breaker_reset_seconds: float = 15.0
