"""`rebalance_plan`: what a rebalance would do right now — dry, nothing moves.

Materialised on demand (UI, `dagster asset materialize --select rebalance_plan`)
from a fresh fetch of every venue, so operators see the plan, its fee against
the direct-only baseline, the targets and the guardrail verdict before any
saga runs. It takes the same policy config as `auto_rebalance_saga`, checked
the same way first: a bad value fails the materialisation with a `Failure`
naming the key ("invalid run config: ..."), before any venue is read.
"""

# No `from __future__ import annotations`: Dagster reads the config annotation at definition time.
from dagster import AssetExecutionContext, AssetKey, Failure, MaterializeResult, asset

from arb_orchestration.defs.market_data.keys import balances_key
from arb_orchestration.defs.rebalance.config import RebalancePolicyConfig
from arb_orchestration.defs.rebalance.journal import usage_today
from arb_orchestration.defs.rebalance.planning import check_config, propose
from arb_orchestration.defs.rebalance.report import proposal_metadata
from arb_orchestration.resources.venue import ExchangeResource
from arb_orchestration.resources.wise import WiseResource

REBALANCE_PLAN_KEY = AssetKey("rebalance_plan")
GROUP_NAME = "rebalance"


def build_rebalance_plan(venues: list[str]):
    @asset(
        key=REBALANCE_PLAN_KEY,
        group_name=GROUP_NAME,
        deps=[balances_key(v) for v in venues],
        kinds={"python"},
        description=(
            "The current cheapest rebalancing plan (exact MILP over withdrawal networks and Wise) for the target "
            "policy, with its fee against direct transfers only and the guardrail verdict. Dry: moves nothing."
        ),
    )
    def rebalance_plan(
        context: AssetExecutionContext, config: RebalancePolicyConfig, exchange: ExchangeResource, wise: WiseResource
    ) -> MaterializeResult:
        names = exchange.venue_names()
        if set(names) != set(venues):
            context.log.warning(f"exchange resource venues {sorted(names)} differ from the asset deps {sorted(venues)}")
        # The checks of the saga's plan step (InvalidRebalanceConfig there), with its message: a bad value is
        # the operator's to fix, shown as a Failure naming the key rather than a ValueError traceback.
        try:
            check_config(config, names)
        except ValueError as exc:
            raise Failure(description=f"invalid run config: {exc}", allow_retries=False) from exc
        proposal = propose(exchange, wise, config, usage_today(context.instance), logger=context.log)
        for t in proposal.run_now:
            context.log.info(f"would send {t.amount:g} {t.asset} {t.rail} (fee {t.fee:g})")
        return MaterializeResult(metadata=proposal_metadata(proposal, title="Rebalance plan (dry)"))

    return rebalance_plan
