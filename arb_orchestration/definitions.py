"""The code location: assembles each domain's definitions and the resources for this deployment.

Nothing here opens a connection or calls an API; resources are configured, not started.
"""

from dagster import Definitions

from arb_orchestration.defs import events, hedging, market_data, ops_control, rebalance, stop_loss
from arb_orchestration.defs.resources import resources_for_deployment
from arb_orchestration.settings import deployment_name

defs = Definitions.merge(
    market_data.defs,
    rebalance.defs,
    hedging.defs,
    stop_loss.defs,
    ops_control.defs,
    events.defs,
    Definitions(resources=resources_for_deployment(deployment_name())),
)
