"""Dagster wiring of the engine: `build_saga` turns step definitions into a job.

Each step becomes one op, chained by `Nothing` dependencies (data flows
through the saga log, not IO managers, so any executor and any re-execution
works). A job-level `ConfigMapping` hands the saga's single `Config` to every
step. One failure hook per saga compensates or alerts; the logic it calls is
`recovery.on_step_failure`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from dagster import (
    Backoff,
    ConfigMapping,
    DagsterRun,
    ExecutorDefinition,
    Failure,
    HookContext,
    In,
    Jitter,
    JobDefinition,
    MetadataValue,
    Nothing,
    OpExecutionContext,
    Out,
    RetryPolicy,
    SensorDefinition,
    failure_hook,
    in_process_executor,
    job,
    op,
)
from pydantic import ValidationError

from arb_orchestration.resources.errors import BusinessError
from arb_orchestration.saga.claim import DEFAULT_CLAIM_TTL_SECONDS, InstanceSagaClaims
from arb_orchestration.saga.engine import SagaDefinition, SagaStep, StepRuntime, execute_step
from arb_orchestration.saga.keys import SAGA_ID_TAG, SAGA_TAG, may_have_history, saga_id_for_run
from arb_orchestration.saga.kill_switch import InstanceTradingSwitch
from arb_orchestration.saga.log import InstanceSagaLog
from arb_orchestration.saga.recovery import ClaimSpec, on_step_failure
from arb_orchestration.saga.state import SagaLogTooNewError

# The failure hook waits this long for a saga claimed by someone else (a recovery sensor acting on
# an earlier run of the saga) before leaving the compensation to the recovery sweep.
HOOK_CLAIM_WAIT_SECONDS = 10.0
# While it holds the claim, the hook's heartbeat (a daemon thread of the run worker, dying with it)
# renews the lease every DEFAULT_CLAIM_TTL_SECONDS / RENEWALS_PER_TTL, i.e. ttl/6 (claim.py;
# recovery.holding_claim).

# Transient failures (5xx, timeouts, an open breaker) get 3 more tries: ~1 s, 3 s, 7 s apart (±jitter).
DEFAULT_STEP_RETRY = RetryPolicy(max_retries=3, delay=1.0, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)


@dataclass(frozen=True)
class Saga:
    """A saga job and what the rest of the platform needs from it."""

    definition: SagaDefinition
    job: JobDefinition

    @property
    def name(self) -> str:
        return self.definition.name

    def recovery_sensors(self, **kwargs: Any) -> list[SensorDefinition]:
        """`<name>_recovery_sensor` (run failures) and `<name>_recovery_sweep_sensor` (periodic).

        Keyword arguments go to `build_saga_recovery_sensors` (e.g. `sweep_interval_seconds`)."""
        from arb_orchestration.saga.sensors import build_saga_recovery_sensors

        return build_saga_recovery_sensors([self], name=f"{self.name}_recovery_sensor", **kwargs)


def build_saga(
    name: str,
    steps: Sequence[SagaStep],
    *,
    config: type | None = None,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    executor_def: ExecutorDefinition = in_process_executor,
    retry_policy: RetryPolicy | None = DEFAULT_STEP_RETRY,
    refuse_while_trading_paused: bool = True,
    alert_resource_key: str | None = "smtp",
    max_forward_attempts: int = 3,
    max_compensation_attempts: int = 5,
) -> Saga:
    """Build the job `name` from `steps` (run in order).

    `config`: a `dagster.Config` class; its run config is the top level of the
    job's run config and every step sees it as `ctx.config`.
    `tags`: job tags (e.g. `dagster/priority`); `arb/saga=<name>` is added.
    `retry_policy`: default for steps that do not set their own.
    `refuse_while_trading_paused`: the first step fails (nothing moved) while
    the kill switch is engaged. Only the stop-loss turns this off.
    `alert_resource_key`: resource with `send(subject, body)` for the risk team.
    """
    definition = SagaDefinition(
        name=name,
        steps=tuple(steps),
        config_class=config,
        refuse_while_trading_paused=refuse_while_trading_paused,
        alert_resource_key=alert_resource_key,
        max_forward_attempts=max_forward_attempts,
        max_compensation_attempts=max_compensation_attempts,
    )
    config_schema = config.to_config_schema() if config is not None else None
    ops = [_step_op(definition, step, i, retry_policy, config_schema) for i, step in enumerate(definition.steps)]
    hook = _failure_hook(definition)

    job_kwargs: dict[str, Any] = dict(
        name=name,
        description=description or f"Saga {name}: {' → '.join(s.name for s in definition.steps)}"
        f" (pivot: {definition.pivot.name}).",
        tags={SAGA_TAG: name, **(tags or {})},
        executor_def=executor_def,
        hooks={hook},
    )
    if config is not None:
        job_kwargs["config"] = ConfigMapping(
            config_fn=lambda cfg: {"ops": {s.name: {"config": cfg} for s in definition.steps}},
            config_schema=config_schema,
        )

    @job(**job_kwargs)
    def _saga_job():
        previous = None
        for step_op in ops:
            previous = step_op() if previous is None else step_op(after=previous)

    return Saga(definition=definition, job=_saga_job)


def _step_op(definition: SagaDefinition, step: SagaStep, index: int, default_retry: RetryPolicy | None,
             config_schema: Any):
    @op(
        name=step.name,
        description=step.description,
        ins={"after": In(Nothing)} if index else {},
        out=Out(Nothing),
        required_resource_keys=set(step.resource_keys),
        retry_policy=step.retry_policy or default_retry,
        config_schema=config_schema,
        tags={"arb/saga_step": step.name, **({"arb/saga_pivot": "true"} if step.pivot else {})},
    )
    def _op(context) -> None:  # (no annotation: dagster checks it at definition time)
        try:
            runtime = _runtime(definition, step, context)
        except InvalidSagaConfig as exc:
            raise Failure(
                description=f"saga {definition.name} step {step.name}: {exc} (business error: not retried)",
                allow_retries=False,
            ) from exc
        try:
            result = execute_step(definition, step.name, runtime)
        except SagaLogTooNewError as exc:
            # Retrying cannot help: only an upgrade of this code can read the saga. Nothing was done or recorded.
            raise Failure(
                description=too_new_description(definition.name, exc),
                metadata={SAGA_ID_TAG: MetadataValue.text(exc.saga_id),
                          "arb/unknown_record_kinds": MetadataValue.text(", ".join(exc.kinds))},
                allow_retries=False,
            ) from exc
        except BusinessError as exc:
            raise Failure(
                description=f"saga {definition.name} step {step.name}: {exc} (business error: not retried)",
                metadata={SAGA_ID_TAG: MetadataValue.text(runtime.saga_id)},
                allow_retries=False,
            ) from exc
        context.log.info(f"saga {definition.name} [{runtime.saga_id}] step {step.name} done: {result}")

    return _op


class InvalidSagaConfig(BusinessError):
    """The run config passed Dagster's schema but not the config class's own checks (a retry cannot fix it)."""


def parse_saga_config(definition: SagaDefinition, raw: Mapping[str, Any] | None) -> Any:
    """The saga's config object; `InvalidSagaConfig` naming the field when the class refuses the values.

    Dagster checks run config against the schema at launch; constraints the class
    adds (pydantic `Field(gt=...)`, validators) are only checked here.
    """
    if definition.config_class is None:
        return None
    try:
        return definition.config_class(**(raw or {}))
    except (ValidationError, TypeError, ValueError) as exc:
        raise InvalidSagaConfig(f"run config refused by {definition.config_class.__name__}: {exc}") from None


def config_or_none(definition: SagaDefinition, raw: Mapping[str, Any] | None, logger: Any) -> Any:
    """`parse_saga_config`, or None (logged) when the config does not parse: for compensations,
    which must not die on it (a config that never parsed let no step run)."""
    try:
        return parse_saga_config(definition, raw)
    except InvalidSagaConfig as exc:
        logger.error(f"saga {definition.name}: {exc}; compensating without it")
        return None


def saga_id_of(run: DagsterRun, instance: Any) -> str:
    return saga_id_for_run(run, instance.get_run_by_id)


def _runtime(definition: SagaDefinition, step: SagaStep, context: OpExecutionContext) -> StepRuntime:
    run = context.dagster_run
    instance = context.instance
    saga_id = saga_id_of(run, instance)
    if run.root_run_id and SAGA_ID_TAG not in run.tags:
        # A re-execution made without its parent's tags (execute_job, GraphQL useParentRunTags=false)
        # carries neither the saga tag nor always Dagster's root-run tag: the saga log finds runs by
        # those tags, so name the saga on the run before it writes its first record.
        instance.add_run_tags(run.run_id, {SAGA_ID_TAG: saga_id})
    return StepRuntime(
        saga_id=saga_id,
        log=InstanceSagaLog(instance, run, in_run=True),
        resources={key: getattr(context.resources, key) for key in step.resource_keys},
        config=parse_saga_config(definition, context.op_config),
        run_id=run.run_id,
        attempt=context.retry_number,
        logger=context.log,
        trading_switch=InstanceTradingSwitch(instance),
        run_tags=dict(run.tags),
        may_have_history=may_have_history(run),
        claims=InstanceSagaClaims(instance),  # no I/O unless the run continues a saga
        continues_saga=may_have_history(run),  # tagged with a saga id, or a re-execution
    )


def too_new_description(saga_name: str, exc: SagaLogTooNewError) -> str:
    return (f"saga {saga_name} [{exc.saga_id}]: its log has record kind(s) {', '.join(exc.kinds)} from a newer "
            "version that this code does not know and must not ignore; nothing was done or recorded: "
            "upgrade this code location (and every code location/daemon that runs saga steps or recovery), "
            "then re-execute or let the recovery sweep handle it (not retried: a retry cannot read it either).")


def too_new_cause(error: BaseException | None) -> SagaLogTooNewError | None:
    """The `SagaLogTooNewError` behind a step's failure (raised as is, or as the cause of its `Failure`)."""
    seen = 0
    while error is not None and seen < 5:
        if isinstance(error, SagaLogTooNewError):
            return error
        error, seen = error.__cause__, seen + 1
    return None


def alert_from(resources: Any, key: str | None):
    """`send(subject, body)` of the alert resource, or None when the saga has none."""
    if key is None:
        return None
    mailer = resources[key] if isinstance(resources, Mapping) else getattr(resources, key)
    return mailer.send


def _failure_hook(definition: SagaDefinition):
    @failure_hook(name=f"{definition.name}_on_step_failure", required_resource_keys=definition.compensation_resource_keys)
    def _hook(context) -> None:
        # Thin on purpose: find the saga, hand over to the tested function.
        run = context.instance.get_run_by_id(context.run_id)
        assert run is not None
        saga_id = saga_id_of(run, context.instance)
        too_new = too_new_cause(context.op_exception)
        if too_new is None:
            try:
                _hand_over(context, run, saga_id)
                return
            except SagaLogTooNewError as exc:  # the step failed otherwise, but the log became unreadable since
                too_new = exc
        # Nothing can be decided from a log this code cannot read: compensating from a partial reading could
        # undo what a newer version already did differently. The recovery sensors report (and mail) it once.
        context.log.error(f"saga {definition.name} [{saga_id}] step {context.op.name}: not compensating — "
                          f"{too_new_description(definition.name, too_new)}")

    def _hand_over(context, run: DagsterRun, saga_id: str) -> None:
        on_step_failure(
            definition,
            saga_id,
            context.op.name,
            context.op_exception,
            log=InstanceSagaLog(context.instance, run, in_run=True),
            resources={key: getattr(context.resources, key) for key in definition.compensation_resource_keys},
            alert=alert_from(context.resources, definition.alert_resource_key),
            config=config_or_none(definition, context.op_config, context.log),
            claim=ClaimSpec(InstanceSagaClaims(context.instance),
                            f"failure hook of run {run.run_id} (step {context.op.name})", run_id=run.run_id,
                            ttl_seconds=DEFAULT_CLAIM_TTL_SECONDS, wait_seconds=HOOK_CLAIM_WAIT_SECONDS),
            logger=context.log,
        )

    return _hook
