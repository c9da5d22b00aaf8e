"""Review: the saga log must see every run that works on a saga, including a re-execution made without
its parent's tags.

`saga_id_for_run` gives a re-execution the right saga id (the root's `arb/saga_id` tag, else the root run
id), so it sends the same keys. But `InstanceSagaLog.runs_of_saga` finds runs by the `arb/saga_id` tag
and by Dagster's run group (the `dagster/root_run_id` *tag*). A re-execution made through
`execute_job(reexecution_options=...)` carries neither (only the run's `root_run_id` field; GraphQL with
`useParentRunTags: false` drops the saga tag too), so its records were invisible: the steps it finished
were not done for the log, `decide` said FORWARD for a completed saga and the recovery sensor relaunched
it. The engine now tags such a run with its saga id before its first record.
"""

from __future__ import annotations

import pytest
from dagster import ReexecutionOptions, build_reconstructable_job, execute_job

from arb_orchestration.saga import SAGA_ID_TAG, Action, InstanceSagaLog, Verdict, decide, recover_run, saga_id_for_run
from arb_orchestration_tests.unit.test_saga_dagster import (
    TRANSFER_SAGA,
    LedgerResource,
    MailboxResource,
    files,  # noqa: F401 (fixture)
    temp_instance,
)


@pytest.mark.parametrize("explicit_saga_id", ["saga-review-1", None])
def test_a_reexecution_without_parent_tags_is_part_of_its_saga_log(files, explicit_saga_id):  # noqa: F811
    ledger_path, mailbox_path = files
    with temp_instance() as instance:
        first = TRANSFER_SAGA.job.execute_in_process(
            instance=instance, run_config={"amount": 1.0},
            tags={SAGA_ID_TAG: explicit_saga_id} if explicit_saga_id else {},
            resources={"ledger": LedgerResource(path=str(ledger_path), transient={"settle": 10}),
                       "smtp": MailboxResource(path=str(mailbox_path))},
            raise_on_error=False,
        )
        assert not first.success  # past the pivot: settle failed after its retries
        job = build_reconstructable_job("arb_orchestration_tests.unit.test_saga_dagster", "transfer_job_with_resources")
        with execute_job(job, instance, reexecution_options=ReexecutionOptions(parent_run_id=first.run_id)) as again:
            assert again.success
            again_run = instance.get_run_by_id(again.run_id)
        saga_id = explicit_saga_id or first.run_id
        assert again_run.root_run_id == first.run_id
        assert saga_id_for_run(again_run, instance.get_run_by_id) == saga_id  # same saga, same keys
        # (The re-execution's own ledger is not checked: Dagster caches the reconstructed job, and with it
        # the ledger path of the first test in this process that built it.)

        log = InstanceSagaLog(instance)
        assert again.run_id in {r.run_id for r in log.runs_of_saga(saga_id)}
        state = log.load(saga_id)
        assert state.step("settle").done
        assert decide(TRANSFER_SAGA.definition, state).verdict is Verdict.COMPLETED
        # The sweep sees the first run failed: a completed saga must not be relaunched.
        failed = instance.get_run_by_id(first.run_id)
        ledger = LedgerResource(path=str(ledger_path))
        outcome = recover_run(instance, TRANSFER_SAGA.definition, failed,
                              {"ledger": ledger, "smtp": MailboxResource(path=str(mailbox_path))})
        assert outcome.action is Action.NONE, outcome
