"""Exchange-simulator venues over HTTP (placeholder: implemented by the exchange-simulator work)."""

from __future__ import annotations

from arb_orchestration.resources.venue import ExchangeResource, VenueClient


class SimExchangeResource(ExchangeResource):
    """Venues hosted by the local exchange simulator (`arb_orchestration.sim.exchange`)."""

    base_url: str
    api_key: str
    venue_list: list[str]
    timeout_seconds: float = 5.0
    max_attempts: int = 4
    retry_base_delay: float = 0.2
    breaker_failure_threshold: int = 5
    breaker_reset_seconds: float = 10.0

    def venue_names(self) -> list[str]:
        return list(self.venue_list)

    def venue(self, name: str) -> VenueClient:
        raise NotImplementedError("SimVenueClient is not implemented yet")
