"""Review of the money paths of the three sagas (2026-11-28): interleavings earlier reviews may not have covered.

Defect found: the rebalance journal read the earlier rebalance sagas from at most 1,000 runs of the job
(`instance.get_runs(..., limit=1000)`, newest first) and took that as all of them. The `legs_in_flight`
guardrail (a saga whose money left and was never verified as arrived blocks the next plan: balances do
not show money in transit) and the per-day limit (`used_today`) both read that list. With the market
sensor launching one rebalance after another (coalesced, one at a time; most plan "nothing to move" in
seconds), 1,000 runs fit in the 6 h the guardrail looks back and easily in a UTC day: the saga whose
legs were in flight fell off the list, the next rebalance planned the same deficit again and sent it a
second time, and the per-day limit stopped counting the oldest sagas of the day.

The runs are served by a fake instance that pages exactly as `DagsterInstance.get_runs` does (newest
first, `limit`, `cursor` = the last run id of the previous page), and the saga logs by an in-memory log:
a real instance needs ~140 s to create and read 1,000 sagas on this machine.
"""

from __future__ import annotations

import pytest
from dagster import DagsterRunStatus
from dagster._core.storage.dagster_run import DagsterRun

from arb_orchestration.defs.rebalance import journal
from arb_orchestration.defs.rebalance.config import DEFAULT_IN_FLIGHT_LOOKBACK_SECONDS
from arb_orchestration.saga import InMemorySagaLog
from arb_orchestration_tests.unit.test_rebalance_in_flight import (  # noqa: F401 - fixtures
    _rolled_back_with_withdrawal_in_flight,
    log,
    world,
)

JOB = journal.REBALANCE_JOB


class PagedRuns:
    """`get_runs` / `get_run_by_id` as a Dagster instance answers them: newest first, paged by limit and cursor."""

    def __init__(self, runs_newest_first: list[DagsterRun]):
        self.runs = runs_newest_first
        self.calls: list[tuple[str | None, int | None]] = []

    def get_runs(self, filters=None, cursor=None, limit=None, bucket_by=None, ascending=False):
        assert not ascending and bucket_by is None
        runs = [r for r in self.runs if filters is None or filters.job_name in (None, r.job_name)]
        if cursor is not None:
            runs = runs[[r.run_id for r in runs].index(cursor) + 1:]
        self.calls.append((cursor, limit))
        return runs[:limit] if limit is not None else runs

    def get_run_by_id(self, run_id):
        return next((r for r in self.runs if r.run_id == run_id), None)


@pytest.fixture
def many_runs(world, log, monkeypatch):
    """saga-1 rolled back around a withdrawal already broadcast (legs in flight), then 1,000 newer rebalance runs
    that planned nothing (each its own saga, named by its run id)."""
    _rolled_back_with_withdrawal_in_flight(world, log, saga_id="saga-1")
    blocking = DagsterRun(job_name=JOB, run_id="saga-1", status=DagsterRunStatus.FAILURE)
    newer = [DagsterRun(job_name=JOB, run_id=f"run-{i:04d}", status=DagsterRunStatus.SUCCESS) for i in range(1000)]
    instance = PagedRuns([*reversed(newer), blocking])

    class Log:  # InstanceSagaLog(instance).load(saga_id), read from the in-memory log
        def __init__(self, _instance, *args, **kwargs):
            pass

        def load(self, saga_id):
            return log.load(saga_id)

    monkeypatch.setattr(journal, "InstanceSagaLog", Log)
    return instance


def test_a_saga_with_legs_in_flight_behind_a_thousand_newer_runs_still_blocks_the_next_plan(many_runs):
    found = journal.sagas_with_legs_in_flight(many_runs, lookback_seconds=DEFAULT_IN_FLIGHT_LOOKBACK_SECONDS)
    assert [s.saga_id for s in found] == ["saga-1"], "the saga whose withdrawal is on its way must block the plan"
    assert [leg.index for leg in found[0].legs] == [1]


def test_the_daily_limit_counts_a_saga_behind_a_thousand_newer_runs(many_runs, log):
    planned = {t["asset"]: t["amount"] for t in log.load("saga-1").step("plan_rebalance").result["transfers"]
               if t["index"] == 1}
    used = journal.usage_today(many_runs)
    assert used == planned, "the leg that left (not cancellable) counts towards today's limit"


def test_every_page_of_runs_is_read_and_no_more(many_runs):
    journal.sagas_with_legs_in_flight(many_runs, lookback_seconds=DEFAULT_IN_FLIGHT_LOOKBACK_SECONDS)
    # Two pages of 1,000: the second (one run) is short, so the reading stops there.
    assert [limit for _, limit in many_runs.calls] == [1000, 1000]
    assert many_runs.calls[1][0] == many_runs.runs[999].run_id


def test_the_pages_follow_a_real_instance_cursor_newest_first(monkeypatch):
    """The same paging on a real (temporary) instance, with pages of 2: every run, once, newest first."""
    from datetime import datetime, timedelta, timezone

    from dagster import instance_for_test

    monkeypatch.setattr(journal, "_RUNS_PAGE", 2)
    with instance_for_test() as instance:
        ids = []
        for _ in range(5):
            run = DagsterRun(job_name=JOB, status=DagsterRunStatus.SUCCESS)
            instance.add_run(run)
            ids.append(run.run_id)
        instance.add_run(DagsterRun(job_name="funding_rate_hedge", status=DagsterRunStatus.SUCCESS))
        since = datetime.now(timezone.utc) - timedelta(hours=1)
        got = [r.run_id for r in journal._runs_of_job(instance, job_name=JOB, updated_after=since)]
    assert got == list(reversed(ids))


# --------------------------------------------------------------------------- reading every page, cheaply
#
# Reading every run (above) made the journal read the log of every rebalance saga of the window; most of them
# planned nothing. The plan step tags its run with how many transfers it moves; sagas whose runs all say "0"
# are not read (their plan is empty or dry: no legs in flight, no usage).


def _tagged(run_id: str, moves: str | None) -> DagsterRun:
    tags = {} if moves is None else {journal.PLANNED_MOVES_TAG: moves}
    return DagsterRun(job_name=JOB, run_id=run_id, status=DagsterRunStatus.SUCCESS, tags=tags)


def test_sagas_whose_plan_moved_nothing_are_not_read_and_the_answer_is_the_same(many_runs, log, monkeypatch):
    untagged = journal.sagas_with_legs_in_flight(many_runs, lookback_seconds=DEFAULT_IN_FLIGHT_LOOKBACK_SECONDS)
    usage = journal.usage_today(many_runs)
    # The 1,000 newer runs planned nothing: tag them as the plan step now does; saga-1 (legs in flight) untagged.
    many_runs.runs = [_tagged(r.run_id, "0") if r.run_id != "saga-1" else r for r in many_runs.runs]
    read: list[str] = []
    real_load = log.load
    monkeypatch.setattr(log, "load", lambda saga_id: read.append(saga_id) or real_load(saga_id))

    assert journal.sagas_with_legs_in_flight(many_runs, lookback_seconds=DEFAULT_IN_FLIGHT_LOOKBACK_SECONDS) == untagged
    assert journal.usage_today(many_runs) == usage
    assert read == ["saga-1", "saga-1"], "only the saga that may have moved money is read (once per question)"


def test_a_saga_with_any_run_not_saying_zero_is_read(monkeypatch):
    from arb_orchestration.saga.keys import SAGA_ID_TAG

    runs = [_tagged("r1", "0"), _tagged("r2", "3"), _tagged("r3", None), _tagged("r4", "0")]
    # r4 re-executes r1's saga without running the plan step again: no tag -> read.
    runs.append(DagsterRun(job_name=JOB, run_id="r5", status=DagsterRunStatus.SUCCESS, tags={SAGA_ID_TAG: "r4"}))
    read: list[str] = []

    class Log:
        def __init__(self, _instance):
            pass

        def load(self, saga_id):
            read.append(saga_id)
            return InMemorySagaLog("x").load(saga_id)

    monkeypatch.setattr(journal, "InstanceSagaLog", Log)
    journal.rebalances_today(PagedRuns(runs))
    assert sorted(read) == ["r2", "r3", "r4"]


def test_the_plan_step_tags_its_run_with_the_moves_it_planned():
    from arb_orchestration_tests.unit import test_rebalance_steps as steps_tests

    def plan(config):
        world = {"exchange": steps_tests.FakeExchange(), "smtp": steps_tests.FakeMail(),
                 "rebalance_journal": steps_tests.FakeJournal()}
        world["wise"] = steps_tests.FakeWise(world["exchange"])
        log = steps_tests._run(world, config=config, steps=["plan_rebalance"])
        return world["rebalance_journal"].tags, log.load("saga-1").step("plan_rebalance").result

    tags, result = plan(steps_tests._config())
    assert len(result["transfers"]) == 2 and tags == {journal.PLANNED_MOVES_TAG: "2"}
    tags, result = plan(steps_tests._config(dry_run=True))
    assert len(result["transfers"]) == 2 and tags == {journal.PLANNED_MOVES_TAG: "0"}  # a dry run moves nothing
