"""The platform's exchange and SMTP resources pointed at the local world, from the environment
the `world` fixture exports (EXCHANGE_SIM_URL, EXCHANGE_SIM_API_KEY, EXCHANGE_VENUES, SMTP_HOST,
SMTP_PORT).

Shared by the saga tests against the world (test_hedge_job_sim.py, test_stop_loss_sim.py); each
module keeps its own retry tuning, i.e. how quickly a failing test gives up.
"""

from __future__ import annotations

import os

from dagster import EnvVar

from arb_orchestration.resources.sim_venue import SimExchangeResource
from arb_orchestration.resources.smtp import SmtpResource


def world_exchange(*, timeout_seconds: float, max_attempts: int, retry_base_delay: float) -> SimExchangeResource:
    """Every venue of the world's exchange simulator."""
    return SimExchangeResource(
        base_url=os.environ["EXCHANGE_SIM_URL"],
        api_key=EnvVar("EXCHANGE_SIM_API_KEY"),
        venue_list=os.environ["EXCHANGE_VENUES"].split(","),
        timeout_seconds=timeout_seconds,
        max_attempts=max_attempts,
        retry_base_delay=retry_base_delay,
    )


def world_smtp() -> SmtpResource:
    """The world's SMTP sink; the risk team is risk@localhost."""
    return SmtpResource(
        host=os.environ["SMTP_HOST"], port=int(os.environ["SMTP_PORT"]),
        sender="arb-orchestration@localhost", risk_team=["risk@localhost"], retry_base_delay=0.05,
    )
