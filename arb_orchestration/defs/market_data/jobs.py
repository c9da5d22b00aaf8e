"""`observe_market_state_job`: observe venue state now, as a run an operator can launch and read.

Same observations as the sensor (same functions), plus a run with logs: the
way to refresh the catalog on demand, or to see why a venue does not answer.
Healthy venues are observed even when another fails; the run then fails
naming the venues that did not answer.
"""


from dagster import Config, Failure, OpExecutionContext, job, op
from pydantic import Field

from arb_orchestration.defs.market_data.checks import balance_floors_outcome
from arb_orchestration.defs.market_data.observations import market_observations
from arb_orchestration.defs.market_data.policy import MarketDataPolicy
from arb_orchestration.defs.market_data.snapshot import fetch_market_snapshot
from arb_orchestration.resources.venue import ExchangeResource


class ObserveMarketStateConfig(Config):
    """Which venues to observe (empty: all) and whether to draw the charts."""

    venues: list[str] = Field(default_factory=list, description="Venue names; empty means every venue.")
    plots: bool = Field(default=True, description="Attach PNG charts to the observations.")


def build_observe_market_state_job(venues: list[str], policy: MarketDataPolicy):
    @op(
        name="observe_market_state",
        description="Fetch balances, positions, funding rates and marks from the venues; record observations.",
    )
    def observe_market_state(
        context: OpExecutionContext, config: ObserveMarketStateConfig, exchange: ExchangeResource
    ) -> None:
        wanted = list(config.venues) or list(venues)
        unknown = sorted(set(wanted) - set(venues))
        if unknown:
            raise Failure(description=f"unknown venues {unknown}; known: {sorted(venues)}", allow_retries=False)
        snapshot = fetch_market_snapshot(exchange, wanted, deadline_seconds=policy.fetch_deadline_seconds)
        plots = config.plots and policy.plots
        events = market_observations(snapshot, with_plot=lambda key: plots, all_venues=venues)
        for event in events:
            context.log_event(event)
        for venue, state in snapshot.states.items():
            free = {asset: balance.free for asset, balance in state.balances.items()}
            context.log_event(balance_floors_outcome(venue, free, policy.floors).as_evaluation())
        context.log.info(
            f"observed {len(events)} assets from {len(snapshot.states)}/{len(wanted)} venues"
        )
        if snapshot.errors:
            raise Failure(
                description="venues did not answer: " + ", ".join(sorted(snapshot.errors)),
                metadata={f"error/{venue}": reason for venue, reason in sorted(snapshot.errors.items())},
            )

    @job(
        name="observe_market_state_job",
        description="Observe every venue's balances and positions, and all funding rates, now.",
        tags={"arb/job": "observe_market_state"},
    )
    def observe_market_state_job():
        observe_market_state()

    return observe_market_state_job
