"""The local world: every external system the platform talks to, on loopback.

`LocalWorld` starts the exchange simulator (several venues), the Wise simulator
(delivering fiat into the exchange simulator's venues), the SMTP sink with its
mailbox page and, unless a broker is given, the embedded Kafka-protocol broker
(librdkafka's mock cluster: demo only, the tests use real Apache Kafka).
`env()` returns the environment variables that point the platform at it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORTS = {"exchange": 8701, "wise": 8702, "mailbox": 8703, "smtp": 8025}


@dataclass
class WorldSecrets:
    """Per-start random credentials for the simulators and the event-signing key."""

    exchange_api_key: str = field(default_factory=lambda: secrets.token_hex(16))
    wise_api_token: str = field(default_factory=lambda: secrets.token_hex(16))
    event_signing_key: str = field(default_factory=lambda: secrets.token_hex(32))


class LocalWorld:
    """Starts and stops the simulators, the SMTP sink and (optionally) the demo broker."""

    def __init__(
        self,
        *,
        ports: dict[str, int] | None = None,
        maildir: Path | None = None,
        kafka_bootstrap: str | None = None,
        start_mock_kafka: bool = True,
        seed: int = 42,
        world_secrets: WorldSecrets | None = None,
        wise_settle_delay: float = 1.0,
        exchange_options: dict | None = None,
    ):
        self.ports = {**DEFAULT_PORTS, **(ports or {})}
        self.maildir = maildir
        self.kafka_bootstrap = kafka_bootstrap
        self.start_mock_kafka = start_mock_kafka and not kafka_bootstrap
        self.seed = seed
        self.secrets = world_secrets or WorldSecrets()
        self.wise_settle_delay = wise_settle_delay
        # ExchangeSimulator keyword options: tick_interval, withdrawal_hold, settle_delay.
        self.exchange_options = dict(exchange_options or {})
        self.exchange = None
        self.wise = None
        self.smtp = None
        self.mock_kafka = None
        self.exchange_url = self.wise_url = self.mailbox_url = None
        self.smtp_host, self.smtp_port = "127.0.0.1", None

    def start(self) -> "LocalWorld":
        from arb_orchestration.sim.exchange import ExchangeSimulator
        from arb_orchestration.sim.smtp_sink import SmtpSink
        from arb_orchestration.sim.wise import WiseSimulator

        try:
            self.exchange = ExchangeSimulator(
                seed=self.seed, api_key=self.secrets.exchange_api_key, **self.exchange_options
            )
            self.exchange_url = self.exchange.start(port=self.ports["exchange"])
            self.wise = WiseSimulator(
                deliver=self._deliver_fiat,
                api_token=self.secrets.wise_api_token,
                seed=self.seed,
                settle_delay=self.wise_settle_delay,
            )
            self.wise_url = self.wise.start(port=self.ports["wise"])
            self.smtp = SmtpSink(maildir=self.maildir)
            self.smtp_host, self.smtp_port = self.smtp.start(port=self.ports["smtp"])
            self.mailbox_url = self.smtp.start_http(port=self.ports["mailbox"])
            if self.start_mock_kafka:
                from arb_orchestration.sim.kafka_mock import MockKafkaCluster

                self.mock_kafka = MockKafkaCluster()
                self.kafka_bootstrap = self.mock_kafka.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _deliver_fiat(self, iban: str, currency: str, amount: float) -> bool:
        """Wise pays out to an IBAN: credit the venue that owns it."""
        resolved = self.exchange.state.resolve_address(iban)
        if resolved is None:
            return False
        venue, _asset, _network = resolved
        self.exchange.state.credit(venue, currency, amount)
        return True

    def reset(self) -> None:
        """Back to the seeded initial state: balances, positions, orders, transfers, mail, faults."""
        from arb_orchestration.resources.resilience import reset_breakers

        self.exchange.faults.clear()
        self.exchange.state.reset()
        self.wise.reset()
        self.smtp.clear()
        reset_breakers()

    def stop(self) -> None:
        for part in (self.mock_kafka, self.smtp, self.wise, self.exchange):
            if part is not None:
                try:
                    part.stop()
                except Exception:  # stopping the rest matters more than one stop error
                    pass

    def env(self) -> dict[str, str]:
        """Environment that points the platform (and `dagster dev`) at this world."""
        from arb_orchestration import settings

        env = {
            "DAGSTER_DEPLOYMENT": "local",
            "EXCHANGE_BACKEND": "sim",
            "EXCHANGE_SIM_URL": self.exchange_url,
            "EXCHANGE_SIM_API_KEY": self.secrets.exchange_api_key,
            "EXCHANGE_VENUES": ",".join(self.exchange.state.venue_names()),
            "WISE_API_URL": self.wise_url,
            "WISE_API_TOKEN": self.secrets.wise_api_token,
            "WISE_PROFILE_ID": str(self.wise.profile_id),
            "SMTP_HOST": self.smtp_host,
            "SMTP_PORT": str(self.smtp_port),
            "EVENT_SIGNING_KEY": self.secrets.event_signing_key,
            "RISK_TEAM_EMAILS": settings.SETTINGS["RISK_TEAM_EMAILS"].local_default,
        }
        if self.kafka_bootstrap:
            env["KAFKA_BOOTSTRAP_SERVERS"] = self.kafka_bootstrap
        return env

    def __enter__(self) -> "LocalWorld":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
