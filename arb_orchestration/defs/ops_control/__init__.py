"""Dagster definitions of the ops_control domain: the trading kill switch (pause/resume jobs), and the sagas
that need a person (`sagas_needing_attention`, its check and sensor: saga_health.py).

`trading_paused(instance) -> (paused, reason)` is the accessor money-moving jobs and sensors use.
"""

from dagster import Definitions

from arb_orchestration.defs.ops_control.kill_switch import (
    pause_trading_job,
    resume_blockers,
    resume_trading_job,
    skip_if_trading_paused,
)
from arb_orchestration.defs.ops_control.saga_health import (
    no_saga_waits_for_a_person,
    sagas_needing_attention,
    sagas_needing_attention_sensor,
)
from arb_orchestration.saga.kill_switch import pause_trading, resume_trading, trading_paused

defs = Definitions(
    jobs=[pause_trading_job, resume_trading_job],
    assets=[sagas_needing_attention],
    asset_checks=[no_saga_waits_for_a_person],
    sensors=[sagas_needing_attention_sensor],
)

__all__ = [
    "defs",
    "pause_trading",
    "pause_trading_job",
    "resume_blockers",
    "resume_trading",
    "resume_trading_job",
    "skip_if_trading_paused",
    "trading_paused",
]
