"""The saga engine: money-moving jobs as Temporal-style sagas on Dagster.

Declare steps, build the job, add the recovery sensors — see docs/sagas.md:

    from arb_orchestration.saga import SagaStep, build_saga

    saga = build_saga("auto_rebalance_saga", [quote, withdraw, credit], config=RebalanceConfig)
    defs = Definitions(jobs=[saga.job], sensors=saga.recovery_sensors())

Pure parts (no Dagster): `engine` (steps, execution, compensation),
`recovery` (what to do with a saga a run left unfinished), `state`/`log`
(the durable saga log), `keys` (saga ids and idempotency keys),
`kill_switch` (the trading pause), `claim` (per-saga leases: one actor at a
time). Dagster parts: `build` (ops, job, hook)
and `sensors` (crash recovery).
"""

from arb_orchestration.saga.build import DEFAULT_STEP_RETRY, Saga, build_saga
from arb_orchestration.saga.claim import (
    ClaimLostError,
    ClaimResult,
    InMemorySagaClaims,
    InstanceSagaClaims,
    Lease,
    SagaClaims,
)
from arb_orchestration.saga.engine import (
    CompensationContext,
    CompensationDeferred,
    CompensationDeferredError,
    CompensationFailedError,
    SagaBusyError,
    SagaClosedError,
    SagaDefinition,
    SagaError,
    SagaStep,
    StepContext,
    StepRuntime,
    TradingPausedError,
    compensate,
    execute_step,
    pending_compensations,
    saga_step,
)
from arb_orchestration.saga.keys import (
    FORWARD_ATTEMPT_TAG,
    RECOVERY_OF_TAG,
    SAGA_ID_TAG,
    SAGA_TAG,
    derive_key,
    idempotency_key,
    saga_id_for_run,
)
from arb_orchestration.saga.kill_switch import (
    InMemoryTradingSwitch,
    InstanceTradingSwitch,
    TradingPause,
    TradingSwitch,
    pause_trading,
    resume_trading,
    trading_paused,
)
from arb_orchestration.saga.log import InMemorySagaLog, InstanceSagaLog, SagaLog
from arb_orchestration.saga.recovery import (
    Action,
    ClaimSpec,
    Decision,
    FailedRun,
    RecoveryOutcome,
    Verdict,
    decide,
    on_step_failure,
    recover_saga,
)
from arb_orchestration.saga.sensors import build_saga_recovery_sensors, recover_run, sweep_failed_sagas
from arb_orchestration.saga.state import RecordKind, SagaLogTooNewError, SagaRecord, SagaState, StepState

__all__ = [
    "DEFAULT_STEP_RETRY",
    "FORWARD_ATTEMPT_TAG",
    "RECOVERY_OF_TAG",
    "SAGA_ID_TAG",
    "SAGA_TAG",
    "Action",
    "ClaimLostError",
    "ClaimResult",
    "ClaimSpec",
    "CompensationContext",
    "CompensationDeferred",
    "CompensationDeferredError",
    "CompensationFailedError",
    "Decision",
    "FailedRun",
    "InMemorySagaClaims",
    "InMemorySagaLog",
    "InMemoryTradingSwitch",
    "InstanceSagaClaims",
    "InstanceSagaLog",
    "InstanceTradingSwitch",
    "RecordKind",
    "Lease",
    "RecoveryOutcome",
    "Saga",
    "SagaBusyError",
    "SagaClaims",
    "SagaClosedError",
    "SagaDefinition",
    "SagaError",
    "SagaLog",
    "SagaLogTooNewError",
    "SagaRecord",
    "SagaState",
    "SagaStep",
    "StepContext",
    "StepRuntime",
    "StepState",
    "TradingPause",
    "TradingPausedError",
    "TradingSwitch",
    "Verdict",
    "build_saga",
    "build_saga_recovery_sensors",
    "compensate",
    "decide",
    "derive_key",
    "execute_step",
    "idempotency_key",
    "on_step_failure",
    "pause_trading",
    "pending_compensations",
    "recover_run",
    "recover_saga",
    "resume_trading",
    "saga_id_for_run",
    "saga_step",
    "sweep_failed_sagas",
    "trading_paused",
]
