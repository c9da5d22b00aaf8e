"""SMTP client for the risk team's mail (placeholder: implemented by the SMTP work)."""

from __future__ import annotations

from dagster import ConfigurableResource


class SmtpResource(ConfigurableResource):
    """Sends mail to the risk team."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    sender: str
    risk_team: list[str]
    timeout_seconds: float = 10.0
