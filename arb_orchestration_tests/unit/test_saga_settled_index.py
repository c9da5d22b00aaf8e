"""The recovery sweep's index of settled sagas (saga/settled.py), its time budget, and the batched reads of
`needing_attention`, on a real SQLite instance with saga logs written by the real code.

Before the index, every sweep tick took each failed saga run of the last three days through the claim and
its log again: 300 rolled-back hedge sagas cost 14-24 s a tick (Dagster's sensor timeout is 60 s).
"""

import logging

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.storage.tags import PARENT_RUN_ID_TAG, ROOT_RUN_ID_TAG

from arb_orchestration.saga import sensors as saga_sensors
from arb_orchestration.saga.attention import SagaReader, needing_attention
from arb_orchestration.saga.keys import SAGA_ID_TAG
from arb_orchestration.saga.log import InstanceSagaLog
from arb_orchestration.saga.sensors import sweep_failed_sagas
from arb_orchestration.saga.settled import SettledIndex, index_key
from arb_orchestration_tests.unit.test_saga_claim import Mailbox
from arb_orchestration_tests.unit.test_saga_health_asset import sqlite_home  # noqa: F401 - a fixture
from arb_orchestration_tests.unit.test_sagas_cli import CLI_SAGA, SAGA, Venue, cli, make_saga


@pytest.fixture
def recoveries(monkeypatch) -> list[str]:
    """The saga ids the sweep took through recovery (claim + log), in order."""
    seen: list[str] = []
    real = saga_sensors.recover_run

    def counting(instance, definition, run, *args, **kwargs):
        seen.append(saga_sensors.saga_id_of(run, instance))
        return real(instance, definition, run, *args, **kwargs)

    monkeypatch.setattr(saga_sensors, "recover_run", counting)
    return seen


def _sweep(instance: DagsterInstance, venue: Venue, **kwargs) -> list[str]:
    requests, lines = sweep_failed_sagas(instance, {CLI_SAGA.job.name: SAGA}, {"venue": venue, "smtp": Mailbox()},
                                         lookback_seconds=3600, grace_seconds=0,
                                         logger=logging.getLogger("settled-index-test"), **kwargs)
    assert requests == []
    return lines


def _failed(instance: DagsterInstance) -> str:
    return make_saga(instance, steps_done=("reserve",), started="transfer", status=DagsterRunStatus.FAILURE)


def _another_failed_run(instance: DagsterInstance, saga_id: str, status=DagsterRunStatus.FAILURE):
    """A later run of the same saga (as a trigger naming the saga id would start one)."""
    run = instance.create_run_for_job(CLI_SAGA.job, status=DagsterRunStatus.STARTED,
                                      tags={**CLI_SAGA.job.tags, SAGA_ID_TAG: saga_id})
    if status == DagsterRunStatus.FAILURE:
        instance.report_run_failed(run, "run worker exited unexpectedly (SIGKILL)")
    return run


def test_a_settled_saga_is_read_once_then_skipped_until_a_newer_run_of_it_fails(sqlite_home, recoveries):
    instance, venue = sqlite_home, Venue(fixed=True)
    sagas = [_failed(instance) for _ in range(3)]
    lines = _sweep(instance, venue)
    assert sorted(recoveries) == sorted(sagas)
    assert sorted(line.split(":")[0] for line in lines if ": compensated" in line) == sorted(sagas)

    recoveries.clear()
    assert _sweep(instance, venue) == []
    assert sorted(recoveries) == sorted(sagas)  # compensated last tick: read once more, found settled

    recoveries.clear()
    assert _sweep(instance, venue) == []
    assert recoveries == []  # now in the index: nothing read
    index = SettledIndex.load(instance, SAGA.name)
    assert {saga_id: entry["verdict"] for saga_id, entry in index.entries.items()} == dict.fromkeys(sagas, "compensated")

    _another_failed_run(instance, sagas[1])
    _sweep(instance, venue)
    assert recoveries == [sagas[1]]  # its newest failed run is not the one the index names
    assert venue.undone.count((sagas[1], "reserve")) == 1  # and nothing is undone twice


def test_a_saga_that_is_not_settled_is_read_every_tick(sqlite_home, recoveries):
    instance = sqlite_home
    saga_id = _failed(instance)
    lines = _sweep(instance, Venue(fixed=False))
    assert lines[0].startswith(f"{saga_id}: compensation_failed")
    assert SettledIndex.load(instance, SAGA.name).entries == {}
    fixed = Venue(fixed=True)
    lines = _sweep(instance, fixed)  # the compensation is retried: the failed one was not skipped
    assert recoveries == [saga_id, saga_id] and lines[0].startswith(f"{saga_id}: compensated")
    assert fixed.undone == [(saga_id, "transfer"), (saga_id, "reserve")]


def test_a_settled_saga_with_a_run_in_progress_is_read_again(sqlite_home, recoveries):
    instance, venue = sqlite_home, Venue(fixed=True)
    saga_id = _failed(instance)
    _sweep(instance, venue)
    _sweep(instance, venue)
    assert SettledIndex.load(instance, SAGA.name).verdict  # settled now
    recoveries.clear()
    _another_failed_run(instance, saga_id, status=DagsterRunStatus.STARTED)
    lines = _sweep(instance, venue)
    assert recoveries == [saga_id]
    assert lines == [f"{saga_id}: waiting (1 run(s) of this saga still in progress)"]


def test_the_time_budget_leaves_older_sagas_to_the_next_tick(sqlite_home, recoveries):
    instance, venue = sqlite_home, Venue(fixed=True)
    sagas = [_failed(instance) for _ in range(4)]  # newest last
    ticks = iter(range(0, 10_000, 10))  # every look at the clock is 10 s later

    lines = _sweep(instance, venue, time_budget_seconds=25.0, clock=lambda: float(next(ticks)))
    assert recoveries == [sagas[3], sagas[2]]  # newest first, then the budget was used up
    assert lines[-1] == "time budget of 25 s used up: 2 older failed saga run(s) left to the next tick"
    assert {s for s, _step in venue.undone} == {sagas[3], sagas[2]}

    recoveries.clear()
    ticks = iter(range(0, 10_000, 10))
    _sweep(instance, venue, time_budget_seconds=25.0, clock=lambda: float(next(ticks)))
    # The two compensated last tick are read once more (and settled); then the budget stops it again.
    assert recoveries == [sagas[3], sagas[2]]
    ticks = iter(range(0, 10_000, 10))
    recoveries.clear()
    lines = _sweep(instance, venue, time_budget_seconds=25.0, clock=lambda: float(next(ticks)))
    assert recoveries == [sagas[1], sagas[0]]  # the settled ones skipped: the budget reaches the older two
    assert {s for s, _step in venue.undone} == set(sagas)
    assert not any("time budget" in line for line in lines)


def test_without_a_budget_every_saga_is_taken_in_one_tick(sqlite_home, recoveries):
    instance, venue = sqlite_home, Venue(fixed=True)
    sagas = [_failed(instance) for _ in range(3)]
    ticks = iter(range(0, 10_000, 100))
    _sweep(instance, venue, time_budget_seconds=None, clock=lambda: float(next(ticks)))
    assert sorted(recoveries) == sorted(sagas)


def test_an_unreadable_index_is_read_as_empty_and_rewritten(sqlite_home, recoveries):
    instance, venue = sqlite_home, Venue(fixed=True)
    saga_id = _failed(instance)
    _sweep(instance, venue)
    instance.run_storage.set_cursor_values({index_key(SAGA.name): "{not json"})
    recoveries.clear()
    _sweep(instance, venue)
    assert recoveries == [saga_id]
    assert SettledIndex.load(instance, SAGA.name).entries[saga_id]["verdict"] == "compensated"
    recoveries.clear()
    _sweep(instance, venue)
    assert recoveries == []


def test_needing_attention_skips_quiet_indexed_sagas_but_always_reads_escalated_ones(sqlite_home, monkeypatch,
                                                                                       capsys):
    instance = sqlite_home
    escalated = _failed(instance)
    broken = Venue(fixed=False)
    _sweep(instance, broken)
    assert any(line.startswith(f"{escalated}: escalated") for line in _sweep(instance, broken))
    quiet = [_failed(instance) for _ in range(2)]
    fixed = Venue(fixed=True)
    _sweep(instance, fixed)
    _sweep(instance, fixed)  # settles the two compensated ones and the escalated one in the index
    verdicts = {s: e["verdict"] for s, e in SettledIndex.load(instance, SAGA.name).entries.items()}
    assert verdicts == {escalated: "escalated", quiet[0]: "compensated", quiet[1]: "compensated"}

    read: list[str] = []
    real = InstanceSagaLog.load_records

    def counting(self, saga_id, **kwargs):
        read.append(saga_id)
        return real(self, saga_id, **kwargs)

    monkeypatch.setattr(InstanceSagaLog, "load_records", counting)
    attention = needing_attention(SagaReader(instance))
    assert [s.saga_id for s in attention.sagas] == [escalated] and attention.sagas[0].state == "escalated"
    assert read == [escalated]

    code, _out, err = cli(capsys, "resolve", escalated, "--reason", "closed on the venue by hand", "--by", "bob")
    assert code == 0, err
    read.clear()
    assert needing_attention(SagaReader(instance)).sagas == []  # read again: the resolution shows
    assert read == [escalated]


def test_batched_runs_and_summaries_match_the_one_by_one_reads(sqlite_home):
    instance = sqlite_home
    tagged = _failed(instance)
    _another_failed_run(instance, tagged)
    root_saga = _failed(instance)  # a saga named by its run id ...
    root = instance.get_run_by_id(root_saga)
    reexecution = instance.create_run_for_job(  # ... re-executed from the UI (no saga tag: it inherits the saga)
        CLI_SAGA.job, status=DagsterRunStatus.STARTED, parent_run_id=root.run_id, root_run_id=root.run_id,
        tags={**CLI_SAGA.job.tags, ROOT_RUN_ID_TAG: root.run_id, PARENT_RUN_ID_TAG: root.run_id})
    instance.report_run_failed(reexecution, "failed again")
    unknown = "no-such-saga"

    log = InstanceSagaLog(instance)
    batched = log.runs_of_sagas([tagged, root_saga, unknown])
    for saga_id in (tagged, root_saga, unknown):
        assert sorted(r.run_id for r in batched[saga_id]) == sorted(r.run_id for r in log.runs_of_saga(saga_id))
    assert len(batched[tagged]) == 2 and len(batched[root_saga]) == 2 and batched[unknown] == []
    assert reexecution.run_id in {r.run_id for r in batched[root_saga]}

    reader = SagaReader(instance)
    pairs = [(tagged, SAGA.name), (root_saga, SAGA.name), (unknown, SAGA.name)]
    assert reader.summaries(pairs) == [SagaReader(instance).summary(saga_id, tag) for saga_id, tag in pairs]
