"""Self-fencing of saga claims (`saga/claim.py` `HeldClaim`, used by `saga/recovery.py` and `saga/engine.py`).

Before this, a holder whose renewals kept *failing* (database unreachable for it, statements
stalling) never learned that its lease had run out: every renewal errored instead of finding the
lease taken, so it went on acting while another actor could take the saga over. Covered here:

* renewals that all raise: the holder gives the lease up (logged at ERROR) once no renewal was
  confirmed for `ttl - margin`, before the lease can expire in storage, and every later safe point
  refuses; a renewal that recovers before the fence keeps the lease; a renewal that succeeds only
  after a statement too slow to leave the margin fences too; a safe point does not wait past the
  fence for a renewal stuck in a statement;
* a recovery actor cut off from the claims mid-compensation (real threads, short TTL): it stops
  at its next safe point with `Action.CLAIM_LOST`, records and mails nothing more, and the second
  actor acts only after the first one's last call ended;
* a continuing run's step (its claim is a `HeldClaim` now): a fenced claim neither records the
  start nor runs the action; a start recorded by a write too slow for the lease is not acted on;
* the timing rules `ClaimSpec` refuses up front.

Fake clocks (wall and monotonic) decide the fence where the test drives the beats itself; the
threaded scenarios use a TTL of 2 s. Real instances (SQLite here, PostgreSQL with a
unix-socket partition in integration/test_claim_fencing_postgres.py) are in `check_*` below.
"""

from __future__ import annotations

import glob
import os
import sqlite3
import threading
import time
from typing import Any, Callable

import pytest
from dagster import DagsterInstance, instance_for_test

from arb_orchestration.saga import (
    Action,
    ClaimLostError,
    ClaimSpec,
    FailedRun,
    InMemorySagaLog,
    InstanceSagaClaims,
    InstanceSagaLog,
    RecordKind,
    SagaBusyError,
    SagaClaims,
    StepRuntime,
    execute_step,
    recover_saga,
)
from arb_orchestration.saga.claim import (
    DEFAULT_CLAIM_TTL_SECONDS,
    DEFAULT_FENCE_MARGIN_SECONDS,
    ClaimStore,
    HeldClaim,
    InMemoryClaimStore,
    Lease,
    claim_key,
)
from arb_orchestration.saga.sensors import recover_run
from arb_orchestration_tests.unit.test_saga_claim import Mailbox
from arb_orchestration_tests.unit.test_saga_claim_heartbeat import (
    SAGA,
    FakeClock,
    ListLogger,
    Venue,
    crashed_run,
    half_done_saga,
    in_thread,
    wait_for,
)

GATE_TIMEOUT = 30.0


class Partition(ClaimStore):
    """One actor's path to the claim storage: `down` makes its statements raise, `stall` makes them hang."""

    def __init__(self, inner: ClaimStore, on_replace: Callable[[], None] | None = None) -> None:
        self.inner = inner
        self.down = False
        self.stall: threading.Event | None = None
        self.stalled = threading.Event()
        self.on_replace = on_replace

    def _gate(self) -> None:
        if self.stall is not None:
            self.stalled.set()
            self.stall.wait(GATE_TIMEOUT)
        if self.down:
            raise OSError("could not connect to server: Connection timed out")

    def read(self, key):
        self._gate()
        return self.inner.read(key)

    def insert(self, key, value):
        self._gate()
        return self.inner.insert(key, value)

    def replace(self, key, seen, value):
        self._gate()
        if self.on_replace is not None:
            self.on_replace()
        return self.inner.replace(key, seen, value)

    def delete(self, key, seen):
        self._gate()
        return self.inner.delete(key, seen)


def _two_actors(clock: FakeClock | None = None):
    """A (through a `Partition`) and B (direct) on one store; with `clock`, both clocks are fake."""
    store = InMemoryClaimStore()
    a_path = Partition(store)
    kw: dict[str, Any] = {} if clock is None else {"clock": clock, "monotonic": clock}
    return store, a_path, SagaClaims(a_path, **kw), SagaClaims(store, **kw)


# ---------------------------------------------------------------------------------------- fake clock


def test_renewals_that_all_fail_fence_the_holder_before_its_lease_can_expire():
    clock = FakeClock()
    store, a_path, a, b = _two_actors(clock)
    lease = a.acquire("s1", "sensor a", ttl_seconds=60).lease
    logger = ListLogger()
    held = HeldClaim(a, lease, ttl_seconds=60, logger=logger)
    assert (held.renew_every_seconds, held.fence_margin_seconds) == (10, DEFAULT_FENCE_MARGIN_SECONDS) == (10, 15)
    a_path.down = True
    for _ in range(4):  # 10, 20, 30, 40 s: errors, but the last confirmed renewal still covers us
        clock.advance(10)
        assert held.beat() is True and held.lost is None
        assert held.renew("hedge").owner == lease.owner  # a safe point carries on, with a warning
    assert held.renewal_errors == 8 and not logger.at("error")
    clock.advance(5)  # 45 s = ttl - margin since the last confirmed renewal: the last try fails too
    assert held.beat() is False
    assert held.lost is not None and held.self_fenced and "SELF-FENCED" in held.lost
    assert len(logger.at("error")) == 1 and "CLAIM LOST" in logger.at("error")[0]
    with pytest.raises(ClaimLostError, match="SELF-FENCED"):
        held.renew("reserve")
    # It gave up 15 s before anyone else may take the saga: the lease is still its own in storage.
    assert not b.acquire("s1", "sensor b", ttl_seconds=60).acquired
    clock.advance(14.9)
    assert not b.acquire("s1", "sensor b", ttl_seconds=60).acquired
    clock.advance(0.2)
    taken = b.acquire("s1", "sensor b", ttl_seconds=60)
    assert taken.acquired and taken.took_over.owner == lease.owner
    a_path.down = False  # its database comes back: still lost, and its release leaves B's lease alone
    with pytest.raises(ClaimLostError):
        held.renew()
    assert held.release() is False and b.holder("s1").actor == "sensor b"


def test_a_renewal_that_recovers_before_the_fence_keeps_the_lease():
    clock = FakeClock()
    store, a_path, a, b = _two_actors(clock)
    lease = a.acquire("s1", "sensor a", ttl_seconds=60).lease
    held = HeldClaim(a, lease, ttl_seconds=60, logger=ListLogger())
    a_path.down = True
    for _ in range(4):
        clock.advance(10)
        assert held.beat()
    clock.advance(4)  # 44 s: just inside the fence
    a_path.down = False
    assert held.beat() and held.lost is None and held.renewals == 1
    assert store.read(claim_key("s1")) == held.lease.raw and held.lease.expires_at == clock() + 60
    a_path.down = True
    clock.advance(44)  # 44 s after *that* renewal: still inside its fence
    assert held.renew("reserve").owner == lease.owner and held.lost is None
    assert not b.acquire("s1", "sensor b", ttl_seconds=60).acquired
    a_path.down = False
    assert held.release() is True and store.read(claim_key("s1")) is None


def test_a_renewal_whose_statement_outlasts_the_fence_fences_although_it_succeeded():
    clock = FakeClock()
    store = InMemoryClaimStore()
    slow = Partition(store, on_replace=lambda: clock.advance(50))  # the UPDATE waits 50 s, then commits
    a = SagaClaims(slow, clock=clock, monotonic=clock)
    lease = a.acquire("s1", "sensor a", ttl_seconds=60).lease
    logger = ListLogger()
    held = HeldClaim(a, lease, ttl_seconds=60, logger=logger)
    with pytest.raises(ClaimLostError, match="SELF-FENCED.*too long"):
        held.renew("hedge")  # the expiry it wrote was counted from before the statement: 10 s left < 15 s
    assert held.self_fenced and len(logger.at("error")) == 1
    slow.on_replace = None
    assert held.release() is False
    assert store.read(claim_key("s1")) is None  # it stopped, so it freed the lease it had renewed


def test_the_timing_rules_are_refused_before_a_lease_is_taken():
    claims = SagaClaims(InMemoryClaimStore())
    with pytest.raises(ValueError, match="fence_margin_seconds"):
        ClaimSpec(claims, "sensor a", ttl_seconds=60, renew_every_seconds=30, fence_margin_seconds=30)
    with pytest.raises(ValueError, match="fence_margin_seconds"):
        ClaimSpec(claims, "sensor a", ttl_seconds=60, fence_margin_seconds=-1)
    assert ClaimSpec(claims, "sensor a", ttl_seconds=1.2)  # default margin: a quarter of a short TTL
    assert claims.store.read(claim_key("s1")) is None
    assert DEFAULT_CLAIM_TTL_SECONDS - DEFAULT_FENCE_MARGIN_SECONDS == 45


# ---------------------------------------------------------------------------------------- real time


def test_a_safe_point_does_not_wait_past_the_fence_for_a_renewal_stuck_in_a_statement():
    store, a_path, a, b = _two_actors()
    ttl = 2.0  # beat every 0.33 s, margin 0.5 s: fence 1.5 s after the last confirmed renewal
    lease = a.acquire("s1", "sensor a", ttl_seconds=ttl).lease
    logger = ListLogger()
    held = HeldClaim(a, lease, ttl_seconds=ttl, logger=logger)
    a_path.stall = threading.Event()
    held.start_heartbeat()
    try:
        assert a_path.stalled.wait(5)  # the heartbeat's UPDATE hangs (a stalled connection)
        with pytest.raises(ClaimLostError, match="stuck in a statement"):
            held.renew("hedge")
        fenced_at = time.time()
        stored = Lease.from_json(store.read(claim_key("s1")))
        assert stored.owner == lease.owner and fenced_at < stored.expires_at  # before it could expire
        assert any("SELF-FENCED" in m for m in logger.at("error"))
    finally:
        a_path.stall.set()
        a_path.stall = None
    held.release()


def _recover(log, claims, actor, venue, mail, logger, ttl):
    return recover_saga(SAGA, "s1", FailedRun("run-1", SAGA.name), log=log, resources={"venue": venue},
                        alert=mail.send, claim=ClaimSpec(claims, actor, ttl_seconds=ttl), logger=logger)


class TimedVenue(Venue):
    """A venue that stamps every compensation call's start and end (real time)."""

    def __init__(self, during_hedge: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.calls: list[tuple[str, float, float]] = []
        self.during_hedge = during_hedge

    def undo(self, ctx) -> dict:
        began = time.time()
        if ctx.step == "hedge" and self.during_hedge is not None:
            self.during_hedge()
        try:
            return super().undo(ctx)
        finally:
            self.calls.append((ctx.step, began, time.time()))


def test_a_recovery_actor_cut_off_from_its_claim_stops_before_another_actor_acts():
    store, a_path, a, b = _two_actors()
    log, mail_a, mail_b, logger_a = half_done_saga(), Mailbox(), Mailbox(), ListLogger()
    ttl = 2.0
    at_fence: list[tuple[float, Lease]] = []
    a_acting = threading.Event()

    def cut_off_mid_call() -> None:
        a_acting.set()
        a_path.down = True  # from here on every renewal of A errors; its compensation call runs on
        try:
            wait_for(lambda: any("SELF-FENCED" in m for m in logger_a.at("error")), timeout=5,
                     what="A to fence itself")
        finally:  # the call in flight ends right after the fence (it cannot be aborted)
            at_fence.append((time.time(), Lease.from_json(store.read(claim_key("s1")))))

    venue_a, venue_b = TimedVenue(cut_off_mid_call), TimedVenue()
    actor_a, box = in_thread(_recover, log, a, "sensor a", venue_a, mail_a, logger_a, ttl)
    outcomes_b = []
    try:
        # A holds the saga and is inside its compensation call before B starts trying (else B may win
        # the first acquire on a loaded host and A, not B, is the one turned away).
        assert a_acting.wait(GATE_TIMEOUT), "A never started compensating"
        deadline = time.monotonic() + 20
        while True:  # B keeps trying all along, as the sweep would
            outcome = _recover(log, b, "sensor b", venue_b, mail_b, ListLogger(), ttl)
            outcomes_b.append(outcome)
            if outcome.action is not Action.BUSY:
                break
            assert time.monotonic() < deadline, "B never got the saga"
            time.sleep(0.02)
    finally:
        actor_a.join(GATE_TIMEOUT)
    assert "error" not in box, box
    assert box["result"].action is Action.CLAIM_LOST and "SELF-FENCED" in box["result"].reason
    # A fenced while its lease was still its own and unexpired in storage, and its call ended in time ...
    [(fenced_at, stored)] = at_fence
    assert stored.actor == "sensor a" and fenced_at < stored.expires_at
    assert venue_a.calls[-1][2] < stored.expires_at
    # ... made one call (the one in flight), never the next, and wrote and mailed nothing after it.
    assert [c[0] for c in venue_a.calls] == ["hedge"]
    assert mail_a.sent == []
    assert any("NOT recorded" in m for m in logger_a.at("error"))
    # B acted only after A's last call had ended, and did the whole job once.
    assert outcomes_b[-1].action is Action.COMPENSATED
    assert [c[0] for c in venue_b.calls] == ["hedge", "reserve"]
    assert venue_b.calls[0][1] >= venue_a.calls[-1][2]
    compensated = [r.step for r in log.all_records() if r.kind is RecordKind.STEP_COMPENSATED]
    assert compensated == ["hedge", "reserve"]
    assert len(mail_b.sent) == 1


def test_a_recovery_actor_whose_claim_path_comes_back_before_the_fence_keeps_the_saga():
    store, a_path, a, b = _two_actors()
    log, mail, logger = half_done_saga(), Mailbox(), ListLogger()
    ttl = 2.0

    def blip() -> None:
        a_path.down = True
        wait_for(lambda: any("could not renew" in m for m in logger.at("warning")), timeout=5,
                 what="a failed renewal")
        a_path.down = False  # back well inside the 1.5 s fence
        wait_for(lambda: Lease.from_json(store.read(claim_key("s1"))).expires_at > time.time() + ttl * 0.8,
                 timeout=5, what="a renewal after the blip")
        busy = _recover(log, b, "sensor b", Venue(), Mailbox(), ListLogger(), ttl)
        assert busy.action is Action.BUSY and "sensor a" in busy.reason

    venue = TimedVenue(blip)
    outcome = _recover(log, a, "sensor a", venue, mail, logger, ttl)
    assert outcome.action is Action.COMPENSATED, outcome
    assert [c[0] for c in venue.calls] == ["hedge", "reserve"] and not logger.at("error")
    assert store.read(claim_key("s1")) is None


# ---------------------------------------------------------------------------------------- a continuing step


class _SlowLog(InMemorySagaLog):
    """A saga log whose reads (`on_load`) or `step_started` writes (`on_started`) take fake time."""

    def __init__(self, inner: InMemorySagaLog) -> None:
        super().__init__()
        self.__dict__.update(inner.__dict__)
        self.on_load: Callable[[], None] | None = None
        self.on_started: Callable[[], None] | None = None

    def load(self, saga_id):
        if self.on_load is not None:
            self.on_load()
        return super().load(saga_id)

    def append(self, record, *, error=None):
        super().append(record, error=error)
        if record.kind is RecordKind.STEP_STARTED and self.on_started is not None:
            self.on_started()


def _continuing_step(log, claims, venue) -> StepRuntime:
    return StepRuntime("s1", log, {"venue": venue}, run_id="run-2", continues_saga=True, claims=claims,
                       logger=ListLogger())


def _starts(log, step: str) -> int:
    return len([r for r in log.all_records() if r.kind is RecordKind.STEP_STARTED and r.step == step])


def test_a_continuing_step_whose_claim_fenced_while_it_read_the_log_neither_records_nor_acts():
    clock = FakeClock()
    store, a_path, a, b = _two_actors(clock)
    log = _SlowLog(half_done_saga())

    def slow_read() -> None:  # the database stalls for 110 s of the step's 120 s lease, then answers
        a_path.down = True
        clock.advance(110)

    log.on_load = slow_read
    venue = Venue()
    rt = _continuing_step(log, a, venue)
    with pytest.raises(SagaBusyError, match="did not start.*SELF-FENCED"):
        execute_step(SAGA, "deposit", rt)
    assert _starts(log, "deposit") == 0 and venue.effects == []
    assert any("SELF-FENCED" in m for m in rt.logger.at("error"))


def test_a_continuing_step_whose_start_was_recorded_too_late_does_not_run_its_action():
    clock = FakeClock()
    store, a_path, a, b = _two_actors(clock)
    log = _SlowLog(half_done_saga())
    log.on_started = lambda: (setattr(a_path, "down", True), clock.advance(110))
    venue = Venue()
    with pytest.raises(SagaBusyError, match="did not run its action"):
        execute_step(SAGA, "deposit", _continuing_step(log, a, venue))
    assert _starts(log, "deposit") == 1  # reads as "started, outcome unknown": compensable by key
    assert venue.effects == []
    log.on_started = None
    a_path.down = False
    clock.advance(11)  # the lease (never freed: its path was down) runs out; a retry goes through
    assert execute_step(SAGA, "deposit", _continuing_step(log, a, venue)) == {"step": "deposit"}
    assert venue.effects == [("do", "deposit")] and store.read(claim_key("s1")) is None


def test_a_continuing_step_releases_its_claim_and_leaves_no_heartbeat_behind():
    from arb_orchestration_tests.unit.test_saga_claim_heartbeat import heartbeat_threads

    store, a_path, a, b = _two_actors()
    log = half_done_saga()
    venue = Venue()
    assert execute_step(SAGA, "deposit", _continuing_step(log, a, venue)) == {"step": "deposit"}
    assert store.read(claim_key("s1")) is None and not [t for t in heartbeat_threads() if "s1" in t.name]


# ---------------------------------------------------------------------------------------- real instances
# Shared with integration/test_claim_fencing_postgres.py.


def check_cut_off_holder_never_acts_with_a_second_actor(
    instance: DagsterInstance,
    claims_a: SagaClaims,
    cut: Callable[[], None],
    restore: Callable[[], None],
    *,
    ttl: float = 2.0,
    b_tries_while_cut: bool = True,
) -> None:
    """A recovers a crashed saga holding its claim through `claims_a`; mid-compensation `cut()` makes
    every statement on that path fail or hang, and the call in flight runs on until just past A's
    fence (still inside its lease). A must stop at its next safe point (`Action.CLAIM_LOST`), make
    no further call and write nothing; B (the instance's own claims, trying all along if
    `b_tries_while_cut`, else from when A has fenced and `restore()` ran) then compensates the saga,
    each step once, and none of B's calls overlaps one of A's."""
    run, saga_id = crashed_run(instance)
    claims_b = InstanceSagaClaims(instance)
    logger_a = ListLogger()
    margin = ttl / 4  # the default for a short TTL (claim.default_fence_margin)
    seen: dict[str, Any] = {}

    def cut_mid_call() -> None:
        cut()
        # No renewal of A can commit from here on: this is the last expiry A confirmed.
        final = seen["final"] = claims_b.holder(saga_id)
        assert final is not None and final.actor == "sensor a"
        # Just past A's fence (which is at most `final.expires_at - margin`), well before the expiry.
        while time.time() < final.expires_at - margin + 0.05:
            time.sleep(0.01)

    def restore_once_fenced() -> None:
        wait_for(lambda: any("SELF-FENCED" in m for m in logger_a.at("error")), timeout=ttl * 5,
                 what="A to fence itself")
        restore()

    venue_a, venue_b = TimedVenue(cut_mid_call), TimedVenue()
    actor_a, box = in_thread(recover_run, instance, SAGA, run, {"venue": venue_a, "smtp": Mailbox()},
                             logger_a, actor="sensor a", claims=claims_a, claim_ttl_seconds=ttl)
    outcome_b = None
    try:
        wait_for(lambda: "final" in seen, timeout=GATE_TIMEOUT, what="A's call in flight (A holds the claim)")
        if not b_tries_while_cut:
            restore_once_fenced()
        deadline = time.monotonic() + 30
        while True:
            outcome_b = recover_run(instance, SAGA, run, {"venue": venue_b, "smtp": Mailbox()}, ListLogger(),
                                    actor="sensor b", claim_ttl_seconds=ttl)
            if outcome_b.action is not Action.BUSY:
                break
            assert "sensor a" in outcome_b.reason, outcome_b
            assert time.monotonic() < deadline, "B never got the saga"
            time.sleep(0.05)
    finally:
        actor_a.join(GATE_TIMEOUT)
        restore()
    assert "error" not in box, box
    outcome_a = box["result"]
    assert outcome_a.action is Action.CLAIM_LOST and "SELF-FENCED" in outcome_a.reason, outcome_a
    final = seen["final"]
    # A's call in flight ended inside its lease; A then made no call and wrote nothing more.
    assert [c[0] for c in venue_a.calls] == ["hedge"] and venue_a.calls[0][2] < final.expires_at
    assert any("NOT recorded" in m for m in logger_a.at("error"))
    # B did the whole job, once, and only after A's last call had ended.
    assert outcome_b is not None and outcome_b.action is Action.COMPENSATED, outcome_b
    assert [c[0] for c in venue_b.calls] == ["hedge", "reserve"]
    assert venue_b.calls[0][1] >= venue_a.calls[-1][2]
    if b_tries_while_cut:  # A could not free its lease through the cut: B got it only once it ran out
        assert venue_b.calls[0][1] >= final.expires_at
    records = InstanceSagaLog(instance).load(saga_id).records
    assert [r.step for r in records if r.kind is RecordKind.STEP_COMPENSATED] == ["hedge", "reserve"]
    assert claims_b.holder(saga_id) is None


def _runs_db(instance: DagsterInstance) -> str:
    [path] = glob.glob(os.path.join(instance.root_directory, "**", "runs.db"), recursive=True)
    return path


def test_a_holder_locked_out_of_sqlite_fences_itself_and_the_next_actor_takes_over(tmp_path):
    # A real stalled statement: another connection holds SQLite's write lock on the runs database
    # (where the claims live), so A's heartbeat UPDATE waits (Dagster's busy timeout is 30 s). The
    # saga log (the event log's own files) is not locked, so only the fence can stop A: its next safe
    # point does not wait for the stuck renewal past the fence.
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        lock: dict[str, sqlite3.Connection] = {}

        def cut() -> None:
            conn = sqlite3.connect(_runs_db(instance), timeout=10, isolation_level=None, check_same_thread=False)
            conn.execute("BEGIN EXCLUSIVE")
            lock["conn"] = conn

        def restore() -> None:
            conn = lock.pop("conn", None)
            if conn is not None:
                conn.execute("ROLLBACK")
                conn.close()

        check_cut_off_holder_never_acts_with_a_second_actor(instance, InstanceSagaClaims(instance), cut, restore,
                                                             ttl=2.0, b_tries_while_cut=False)
