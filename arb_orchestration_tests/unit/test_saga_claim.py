"""Per-saga claims (`saga/claim.py`) and the recovery races they close, on SQLite.

* the lease itself: one winner among threads and among processes racing for a saga; the loser
  is told who holds it; release lets the next one in; an expired lease (or one whose run has
  ended) is taken over and its old holder learns it has lost it;
* race 1/3: two recovery actors (the failure sensor, the sweep, an orphaned tick still
  compensating) on the same saga at the same time: exactly one compensates, the other skips and
  names the holder; a dead holder's lease expires and recovery still happens; a second pass does
  nothing; the second sensor does not re-issue a relaunch the first one has just requested;
* race 2: a re-executed run's step waits for a compensating sensor and then refuses (the saga was
  rolled back), or fails transiently without recording anything if the claim stays held.

The scenarios are shared with integration/test_saga_claim_postgres.py (same code, PostgreSQL).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    SkipReason,
    build_run_status_sensor_context,
    build_sensor_context,
    instance_for_test,
)
from dagster._serdes import deserialize_value, serialize_value

from arb_orchestration.saga import (
    SAGA_ID_TAG,
    Action,
    ClaimLostError,
    ClaimSpec,
    InMemorySagaClaims,
    InMemorySagaLog,
    InstanceSagaClaims,
    InstanceSagaLog,
    SagaBusyError,
    SagaClosedError,
    SagaStep,
    StepRuntime,
    Verdict,
    build_saga,
    decide,
    execute_step,
    idempotency_key,
    on_step_failure,
    recover_run,
)
from arb_orchestration.saga.claim import InstanceClaimStore, claim_key

GATE_TIMEOUT = 30.0


class Venue:
    """A fake venue shared by threads: records effects; `unwind` (the hedge's compensation) can be held at a gate."""

    def __init__(self) -> None:
        self.effects: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()
        self.unwinding = threading.Event()

    def act(self, ctx) -> dict:
        with self.lock:
            self.effects.append(("do", ctx.step))
        return {"step": ctx.step}

    def undo(self, ctx) -> dict:
        if ctx.step == "hedge":  # looks the order up by key and then creates it: must never run twice at once
            self.unwinding.set()
            assert self.gate.wait(GATE_TIMEOUT), "test gate never opened"
        with self.lock:
            self.effects.append(("undo", ctx.step))
        return {"undone": ctx.step}

    def undone(self) -> list[str]:
        with self.lock:
            return [s for kind, s in self.effects if kind == "undo"]


class Mailbox:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, subject: str, body: str) -> None:
        self.sent.append(subject)


def _act(ctx, venue):
    return venue.act(ctx)


def _undo(ctx, venue):
    return venue.undo(ctx)


# reserve → hedge → deposit (pivot) → settle
CLAIM_SAGA = build_saga(
    "claim_saga",
    [SagaStep("reserve", _act, _undo), SagaStep("hedge", _act, _undo), SagaStep("deposit", _act, _undo, pivot=True),
     SagaStep("settle", _act)],
    retry_policy=None,
)
SAGA = CLAIM_SAGA.definition


@contextlib.contextmanager
def sqlite_instance():
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp, instance_for_test(temp_dir=tmp) as inst:
        yield inst


@pytest.fixture(scope="module")
def _module_instance():
    with sqlite_instance() as inst:
        yield inst


@pytest.fixture
def instance(_module_instance):
    return _module_instance


def crashed_run(instance: DagsterInstance, done=("reserve",), started=("hedge",), tags=None):
    """A run that died (no hook) after `done` finished and `started` began: written through the real saga log."""
    run = instance.create_run_for_job(CLAIM_SAGA.job, tags=tags or {}, status=DagsterRunStatus.STARTED)
    log = InstanceSagaLog(instance, run)
    saga_id = run.tags.get(SAGA_ID_TAG, run.run_id)
    for step in (*done, *started):
        log.record_started(saga_id, SAGA.name, step, key=idempotency_key(SAGA.name, saga_id, step))
        if step in done:
            log.record_done(saga_id, SAGA.name, step, key=idempotency_key(SAGA.name, saga_id, step),
                            result={"step": step})
    instance.report_run_failed(run, "run worker exited unexpectedly (SIGKILL)")
    return instance.get_run_by_id(run.run_id), saga_id


def race(n: int, fn) -> list[Any]:
    """Run fn(i) in n threads released together; returns results (or exceptions) by index."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def go(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except BaseException as exc:  # reported to the test
            results[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(GATE_TIMEOUT * 2)
    return results


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------- scenarios
# Shared with the PostgreSQL integration test: each takes a real instance.


def check_threads_racing_for_a_claim(instance: DagsterInstance, rounds: int = 5, n: int = 8) -> None:
    claims = InstanceSagaClaims(instance)
    for r in range(rounds):
        saga_id = f"race-{time.time_ns()}-{r}"
        results = race(n, lambda i: claims.acquire(saga_id, f"actor {i}"))
        errors = [x for x in results if isinstance(x, BaseException)]
        assert not errors, errors
        winners = [i for i, x in enumerate(results) if x.acquired]
        assert len(winners) == 1, f"round {r}: {len(winners)} winners"
        holder = claims.holder(saga_id)
        assert holder is not None and holder.actor == f"actor {winners[0]}"
        for i, x in enumerate(results):
            if i != winners[0]:
                assert x.holder.owner == holder.owner  # every loser is told who has it
        assert claims.release(results[winners[0]].lease)


def check_processes_racing_for_a_claim(instance: DagsterInstance, workdir, n: int = 3) -> None:
    """n processes, each with its own instance on the same storage, released together by a file."""
    saga_id = f"procs-{time.time_ns()}"
    ref = serialize_value(instance.get_ref())
    go = os.path.join(workdir, "go")
    children = [
        subprocess.Popen([sys.executable, "-m", "arb_orchestration_tests.unit.test_saga_claim", "claim-child",
                          ref, saga_id, f"process {i}", str(workdir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(n)
    ]
    try:
        wait_for(lambda: len([f for f in os.listdir(workdir) if f.startswith("ready-")]) == n, timeout=90,
                 what="the children to open the storage")
        open(go, "w").close()
        outputs = []
        for child in children:
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err.decode()[-2000:]
            outputs.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    winners = [o for o in outputs if o["acquired"]]
    assert len(winners) == 1, outputs
    assert all(o["holder"] == winners[0]["actor"] for o in outputs if not o["acquired"])


def check_recovery_actors_racing(instance: DagsterInstance, n: int = 3) -> None:
    """n recovery actors at once on one crashed saga: one compensates, the others skip naming it."""
    run, saga_id = crashed_run(instance)
    venue, mail = Venue(), Mailbox()
    venue.gate.clear()  # the winner stays inside the hedge unwind until every other actor has answered
    answered = []

    def actor(i: int):
        outcome = recover_run(instance, SAGA, run, {"venue": venue, "smtp": mail}, actor=f"sensor {i}")
        answered.append(i)
        if len(answered) == n - 1:
            venue.gate.set()
        return outcome

    opener = threading.Timer(GATE_TIMEOUT * 2 / 3, venue.gate.set)  # without claims the others never answer
    opener.start()
    try:
        outcomes = race(n, actor)
    finally:
        opener.cancel()
    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
    compensated = [i for i, o in enumerate(outcomes) if o.action is Action.COMPENSATED]
    assert len(compensated) == 1, [o.action for o in outcomes]
    assert venue.undone() == ["hedge", "reserve"]  # each compensation once, newest first
    for i, o in enumerate(outcomes):
        if i != compensated[0]:
            assert o.action is Action.BUSY and f"claimed by sensor {compensated[0]}" in o.reason
    # The winner let go; a second pass finds nothing to do and moves nothing.
    assert InstanceSagaClaims(instance).holder(saga_id) is None
    again = recover_run(instance, SAGA, run, {"venue": venue, "smtp": mail}, actor="sensor late")
    assert again.action is Action.NONE and venue.undone() == ["hedge", "reserve"]


def check_expired_lease_is_taken_over(instance: DagsterInstance) -> None:
    """A tick that died holding the claim: once its lease ends, the next actor recovers the saga."""
    run, saga_id = crashed_run(instance)
    venue, mail = Venue(), Mailbox()
    claims = InstanceSagaClaims(instance)
    ghost = claims.acquire(saga_id, "sensor ghost", ttl_seconds=60)
    assert ghost.acquired
    early = recover_run(instance, SAGA, run, {"venue": venue, "smtp": mail}, actor="sensor next")
    assert early.action is Action.BUSY and "sensor ghost" in early.reason and venue.undone() == []
    # 61 s later (an actor whose clock is ahead: no test waits a minute)
    later_claims = InstanceSagaClaims(instance, clock=lambda: time.time() + 61)
    later = recover_run(instance, SAGA, run, {"venue": venue, "smtp": mail}, actor="sensor next", claims=later_claims)
    assert later.action is Action.COMPENSATED and venue.undone() == ["hedge", "reserve"]
    with pytest.raises(ClaimLostError, match="sensor ghost"):
        claims.renew(ghost.lease)
    assert not claims.release(ghost.lease)  # the ghost cannot free what is no longer its own


# ---------------------------------------------------------------------------------------- the lease


@pytest.fixture(params=["memory", "sqlite"])
def claims(request, instance):
    return InMemorySagaClaims() if request.param == "memory" else InstanceSagaClaims(instance)


def test_second_actor_is_refused_and_told_who_holds_it(claims):
    first = claims.acquire("s-refused", "sensor a")
    second = claims.acquire("s-refused", "sensor b")
    assert first.acquired and not second.acquired
    assert second.holder.actor == "sensor a" and second.holder.owner == first.lease.owner
    assert "sensor a" in second.holder.describe() and "lease ends in" in second.holder.describe()


def test_a_holder_that_finishes_releases_and_the_next_actor_gets_in(claims):
    first = claims.acquire("s-release", "sensor a")
    assert claims.release(first.lease)
    assert claims.holder("s-release") is None
    second = claims.acquire("s-release", "sensor b")
    assert second.acquired and second.took_over is None


def test_an_expired_lease_is_taken_over_and_its_holder_learns_it(claims):
    old = claims.acquire("s-expired", "sensor a", ttl_seconds=0.05).lease
    wait_for(lambda: time.time() >= old.expires_at)
    new = claims.acquire("s-expired", "sensor b")
    assert new.acquired and new.took_over.owner == old.owner
    with pytest.raises(ClaimLostError):
        claims.renew(old)
    assert not claims.release(old) and claims.holder("s-expired").owner == new.lease.owner


def test_renewal_keeps_the_lease(claims):
    lease = claims.acquire("s-renew", "sensor a", ttl_seconds=0.3).lease
    renewed = claims.renew(lease, 60)
    wait_for(lambda: time.time() >= lease.expires_at)
    assert not claims.acquire("s-renew", "sensor b").acquired
    assert claims.release(renewed)


def test_waiting_acquire_gets_the_claim_when_the_holder_lets_go(claims):
    lease = claims.acquire("s-wait", "sensor a").lease
    threading.Timer(0.3, claims.release, args=(lease,)).start()
    began = time.monotonic()
    got = claims.acquire("s-wait", "step b", wait_seconds=5, poll_seconds=0.05)
    assert got.acquired and 0.2 < time.monotonic() - began < 5


def test_an_unreadable_claim_is_replaced(instance):
    InstanceClaimStore(instance).insert(claim_key("s-garbage"), "not json")
    got = InstanceSagaClaims(instance).acquire("s-garbage", "sensor a")
    assert got.acquired and "unreadable" in got.took_over.actor


def test_a_lease_held_from_inside_a_run_dies_with_the_run(instance):
    claims = InstanceSagaClaims(instance)
    live = instance.create_run_for_job(CLAIM_SAGA.job, status=DagsterRunStatus.STARTED)
    held = claims.acquire("s-run", "failure hook of a live run", run_id=live.run_id)
    assert not claims.acquire("s-run", "sensor").acquired  # its run is in progress: alive
    instance.report_run_failed(live, "run worker exited unexpectedly (SIGKILL)")
    taken = claims.acquire("s-run", "sensor")  # its run ended: the worker is gone, no need to wait for expiry
    assert taken.acquired and taken.took_over.owner == held.lease.owner


def test_a_lease_of_a_run_stopped_for_max_runtime_runs_out_its_time(instance):
    # Run monitoring marks such a run FAILURE while its worker (and its hook) may still be stopping.
    claims = InstanceSagaClaims(instance)
    run = instance.create_run_for_job(CLAIM_SAGA.job, status=DagsterRunStatus.STARTED)
    claims.acquire("s-maxrt", "failure hook", run_id=run.run_id, ttl_seconds=60)
    instance.report_run_failed(run, "Exceeded maximum runtime of 600 seconds.")
    refused = claims.acquire("s-maxrt", "sensor")
    assert not refused.acquired and refused.holder.actor == "failure hook"
    later = InstanceSagaClaims(instance, clock=lambda: time.time() + 61)
    assert later.acquire("s-maxrt", "sensor").acquired


def test_threads_racing_for_one_saga_on_sqlite_exactly_one_wins(instance):
    check_threads_racing_for_a_claim(instance)


def test_processes_racing_for_one_saga_on_sqlite_exactly_one_wins(tmp_path):
    # Its own instance directory: the module instance is not the children's business.
    (tmp_path / "home").mkdir()
    (tmp_path / "sync").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "home")) as inst:
        check_processes_racing_for_a_claim(inst, tmp_path / "sync")


# ---------------------------------------------------------------------------------------- races 1 and 3


def test_recovery_actors_racing_on_sqlite_one_compensates_the_others_skip_naming_it(instance):
    check_recovery_actors_racing(instance)


def test_expired_recovery_lease_is_taken_over_and_the_saga_recovered(instance):
    check_expired_lease_is_taken_over(instance)


def test_sweep_tick_skips_a_claimed_saga_and_names_the_holder(instance):
    run, saga_id = crashed_run(instance)
    venue, mail = Venue(), Mailbox()
    claims = InstanceSagaClaims(instance)
    orphan = claims.acquire(saga_id, "sensor claim_saga_recovery_sensor")  # its compensation outlived its tick
    _, sweep = CLAIM_SAGA.recovery_sensors(grace_seconds=0)
    with build_sensor_context(instance=instance, resources={"venue": venue, "smtp": mail}) as ctx:
        skip = sweep(ctx)
    assert isinstance(skip, SkipReason)
    assert f"{saga_id}: busy (claimed by sensor claim_saga_recovery_sensor" in skip.skip_message
    assert venue.undone() == []
    claims.release(orphan.lease)
    with build_sensor_context(instance=instance, resources={"venue": venue, "smtp": mail}) as ctx:
        sweep(ctx)
    assert venue.undone() == ["hedge", "reserve"]


def test_failure_sensor_tick_leaves_a_claimed_saga_to_the_sweep_and_logs_the_holder(instance, capfd):
    run, saga_id = crashed_run(instance)
    venue, mail = Venue(), Mailbox()
    claims = InstanceSagaClaims(instance)
    sweep_lease = claims.acquire(saga_id, "sensor claim_saga_recovery_sweep_sensor").lease
    failure_sensor, _ = CLAIM_SAGA.recovery_sensors(grace_seconds=0)
    event = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)[-1].dagster_event
    capfd.readouterr()
    with build_run_status_sensor_context(sensor_name=failure_sensor.name, dagster_event=event,
                                         dagster_instance=instance, dagster_run=run,
                                         resources={"venue": venue, "smtp": mail}) as ctx:
        assert failure_sensor(ctx) is None
    assert venue.undone() == []
    logged = capfd.readouterr().err  # Dagster's sensor logger writes to stderr, not through `logging` propagation
    assert f"saga recovery of run {run.run_id}: busy — claimed by sensor claim_saga_recovery_sweep_sensor" in logged
    claims.release(sweep_lease)


def test_second_sensor_does_not_reissue_a_relaunch_the_first_just_requested(instance):
    # Past the pivot: forward. The failure sensor records the relaunch and returns its request; the
    # sweep, before the daemon has created that run, must not issue it again (the two sensors'
    # run keys do not dedupe each other: that would be two forward runs of one saga).
    run, saga_id = crashed_run(instance, done=("reserve", "hedge", "deposit"), started=("settle",))
    resources = {"venue": Venue(), "smtp": Mailbox()}
    first = recover_run(instance, SAGA, run, resources, actor="sensor claim_saga_recovery_sensor")
    assert first.action is Action.RELAUNCH
    second = recover_run(instance, SAGA, run, resources, actor="sensor claim_saga_recovery_sweep_sensor")
    assert second.action is Action.WAITING and "requested" in second.reason
    # A request that never became a run (the tick died) is issued again once it is old enough.
    late = recover_run(instance, SAGA, run, resources, actor="sweep", reissue_after_seconds=0)
    assert late.action is Action.RELAUNCH and late.relaunch.run_key == first.relaunch.run_key
    assert InstanceSagaLog(instance).load(saga_id).forward_attempts == 1


def test_failure_hook_leaves_a_claimed_saga_alone_and_says_who_has_it():
    log, claims, venue = InMemorySagaLog(), InMemorySagaClaims(), Venue()
    for step in ("reserve", "hedge"):
        execute_step(SAGA, step, StepRuntime("s1", log, {"venue": venue}))
    claims.acquire("s1", "sensor claim_saga_recovery_sweep_sensor")
    outcome = on_step_failure(SAGA, "s1", "deposit", RuntimeError("boom"), log=log, resources={"venue": venue},
                              alert=None, claim=ClaimSpec(claims, "failure hook of run run-1", run_id="run-1"))
    assert outcome.action is Action.BUSY and "sweep_sensor" in outcome.reason and venue.undone() == []


# ---------------------------------------------------------------------------------------- race 2


def _reexecution(instance: DagsterInstance, saga_id: str, claim_wait: float, flagged: bool = False) -> StepRuntime:
    # `flagged`: what build_saga passes for a run tagged with a saga id (claim before reading the
    # log); unflagged, the step claims once the log shows another run's records.
    rerun = instance.create_run_for_job(CLAIM_SAGA.job, tags={SAGA_ID_TAG: saga_id}, status=DagsterRunStatus.STARTED)
    return StepRuntime(saga_id, InstanceSagaLog(instance, rerun, in_run=True), {"venue": Venue()}, run_id=rerun.run_id,
                       claims=InstanceSagaClaims(instance), claim_wait_seconds=claim_wait, continues_saga=flagged)


def test_reexecuted_step_waits_for_a_compensating_sensor_then_refuses(instance):
    run, saga_id = crashed_run(instance, done=("reserve", "hedge"), started=())
    venue, mail = Venue(), Mailbox()
    venue.gate.clear()
    sensor = threading.Thread(target=recover_run, args=(instance, SAGA, run, {"venue": venue, "smtp": mail}),
                              kwargs={"actor": "sensor claim_saga_recovery_sensor"})
    sensor.start()
    try:
        assert venue.unwinding.wait(GATE_TIMEOUT)  # the sensor is undoing the hedge
        rt = _reexecution(instance, saga_id, claim_wait=GATE_TIMEOUT, flagged=True)
        threading.Timer(0.3, venue.gate.set).start()
        with pytest.raises(SagaClosedError):  # it waited for the claim, then saw the rollback
            execute_step(SAGA, "deposit", rt)
    finally:
        venue.gate.set()
        sensor.join(GATE_TIMEOUT)
    assert rt.resources["venue"].effects == []  # the re-execution moved nothing
    assert venue.undone() == ["hedge", "reserve"]
    assert not InstanceSagaLog(instance).load(saga_id).step("deposit").started


@pytest.mark.parametrize("flagged", [True, False])
def test_reexecuted_step_that_cannot_get_the_claim_fails_transiently_and_records_nothing(instance, flagged):
    run, saga_id = crashed_run(instance, done=("reserve", "hedge"), started=())
    InstanceSagaClaims(instance).acquire(saga_id, "sensor claim_saga_recovery_sensor")
    rt = _reexecution(instance, saga_id, claim_wait=0.2, flagged=flagged)
    with pytest.raises(SagaBusyError, match="claimed by sensor claim_saga_recovery_sensor"):
        execute_step(SAGA, "deposit", rt)
    assert rt.resources["venue"].effects == []
    assert not InstanceSagaLog(instance).load(saga_id).step("deposit").started


def test_recovery_waits_for_a_reexecution_that_recorded_its_start(instance):
    run, saga_id = crashed_run(instance, done=("reserve", "hedge"), started=())
    rt = _reexecution(instance, saga_id, claim_wait=1)
    execute_step(SAGA, "deposit", rt)  # claim → check → record start → let go → act
    assert InstanceSagaClaims(instance).holder(saga_id) is None
    venue = Venue()
    outcome = recover_run(instance, SAGA, run, {"venue": venue, "smtp": Mailbox()}, actor="sensor")
    assert outcome.action is Action.WAITING and venue.undone() == []


def test_fresh_run_steps_never_touch_the_claim(instance):
    # The hot path: a run that starts a saga reads and writes no claim at all.
    class Untouchable(InMemorySagaClaims):
        def acquire(self, *a, **k):  # pragma: no cover - failing is the point
            raise AssertionError("a fresh run took a claim")

    fresh = instance.create_run_for_job(CLAIM_SAGA.job, status=DagsterRunStatus.STARTED)
    log = InstanceSagaLog(instance, fresh, in_run=True)
    venue = Venue()
    for i, step in enumerate(("reserve", "hedge", "deposit", "settle")):
        execute_step(SAGA, step, StepRuntime(fresh.run_id, log, {"venue": venue}, run_id=fresh.run_id,
                                             may_have_history=i > 0, claims=Untouchable()))
    assert decide(SAGA, log.load(fresh.run_id)).verdict is Verdict.COMPLETED


def test_reexecuted_job_takes_over_a_dead_holders_claim_and_says_so(instance):
    # Dagster wiring: the op gives its step the instance's claims; a lease of a tick that died
    # is taken over once it ends, and the run's log says whose.
    run, saga_id = crashed_run(instance, done=("reserve",), started=())
    InstanceSagaClaims(instance).acquire(saga_id, "sensor ghost", ttl_seconds=1.0)
    venue = Venue()
    result = CLAIM_SAGA.job.execute_in_process(instance=instance, tags={SAGA_ID_TAG: saga_id},
                                               resources={"venue": venue, "smtp": Mailbox()})
    assert result.success
    assert [s for kind, s in venue.effects if kind == "do"] == ["hedge", "deposit", "settle"]  # reserve was done
    messages = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert any("took over the claim of sensor ghost" in m for m in messages)


# ---------------------------------------------------------------------------------------- child process


def _claim_child(ref: str, saga_id: str, actor: str, workdir: str) -> None:
    instance = DagsterInstance.from_ref(deserialize_value(ref))
    claims = InstanceSagaClaims(instance)
    claims.holder("warm-up")  # open the storage before the start line
    open(os.path.join(workdir, f"ready-{os.getpid()}"), "w").close()
    go = os.path.join(workdir, "go")
    while not os.path.exists(go):
        time.sleep(0.001)
    got = claims.acquire(saga_id, actor)
    print(json.dumps({"actor": actor, "acquired": got.acquired,
                      "holder": got.holder.actor if got.holder else None}))


if __name__ == "__main__" and sys.argv[1:2] == ["claim-child"]:
    _claim_child(*sys.argv[2:6])
