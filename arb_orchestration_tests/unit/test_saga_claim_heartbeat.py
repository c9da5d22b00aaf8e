"""The saga claim's heartbeat (`saga/claim.py` `HeldClaim`, wired in `saga/recovery.py`).

Before the heartbeat a lease was renewed only *between* compensations, so one compensation call
that outlived the lease (a cancel stuck behind retries, a slow venue) could be taken over while it
still ran. Covered here:

* a compensation blocked for many TTLs keeps its lease (renewed in the background) and a second
  actor is refused, naming the holder; the lease is released afterwards (no stale compare value);
* a holder whose heartbeat stops (a simulated death) is taken over once its lease has run out;
* a lease lost while a call is in flight: the heartbeat logs it at ERROR at once; when the call
  returns its outcome is NOT recorded, the next compensation does not start, no mail goes out and
  the outcome is `Action.CLAIM_LOST`; a compensation that *fails* after the loss is not counted
  either (it would push someone else's saga towards escalation);
* a transient storage error in one heartbeat is retried, a renewal whose reply was lost is
  recognised as ours, a holder past `max_hold_seconds` stops renewing (a hung call cannot keep a
  saga forever), no heartbeat thread outlives its held section, and the failure hook inside a
  real Dagster run compensates under a live heartbeat.

Fake clocks decide expiry (no test waits for a lease to run out in real time); the heartbeat's
period is real time but short. `check_*` scenarios run on a real instance: SQLite here, PostgreSQL
in integration/test_saga_claim_heartbeat_postgres.py, including a holder in another process
killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from dagster import DagsterInstance, DagsterRunStatus, instance_for_test
from dagster._serdes import deserialize_value, serialize_value

from arb_orchestration.saga import (
    SAGA_ID_TAG,
    Action,
    ClaimLostError,
    ClaimSpec,
    FailedRun,
    InMemorySagaClaims,
    InMemorySagaLog,
    InstanceSagaClaims,
    InstanceSagaLog,
    RecordKind,
    SagaClaims,
    SagaStep,
    StepRuntime,
    build_saga,
    execute_step,
    idempotency_key,
    recover_run,
    recover_saga,
)
from arb_orchestration.saga.claim import InMemoryClaimStore, Lease, claim_key

GATE_TIMEOUT = 30.0
HEARTBEAT_THREAD = "saga-claim-heartbeat"


class FakeClock:
    """Wall clock for the claims, moved only by the test."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class ListLogger:
    """Collects (level, message) from any thread."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def _add(self, level: str, msg: str) -> None:
        with self._lock:
            self.lines.append((level, str(msg)))

    def debug(self, msg, *a, **k): self._add("debug", msg)
    def info(self, msg, *a, **k): self._add("info", msg)
    def warning(self, msg, *a, **k): self._add("warning", msg)
    def error(self, msg, *a, **k): self._add("error", msg)
    def exception(self, msg, *a, **k): self._add("error", msg)

    def at(self, level: str) -> list[str]:
        with self._lock:
            return [m for lv, m in self.lines if lv == level]


class Venue:
    """Records effects; `hedge`'s compensation waits at a gate; counts calls in flight at once."""

    def __init__(self, fail_hedge_undo: bool = False) -> None:
        self.effects: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()
        self.unwinding = threading.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.fail_hedge_undo = fail_hedge_undo

    def act(self, ctx) -> dict:
        with self.lock:
            self.effects.append(("do", ctx.step))
        return {"step": ctx.step}

    def undo(self, ctx) -> dict:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if ctx.step == "hedge":
                self.unwinding.set()
                assert self.gate.wait(GATE_TIMEOUT), "test gate never opened"
                if self.fail_hedge_undo:
                    raise RuntimeError("venue says 502 on cancel")
            with self.lock:
                self.effects.append(("undo", ctx.step))
            return {"undone": ctx.step}
        finally:
            with self.lock:
                self.in_flight -= 1

    def undone(self) -> list[str]:
        with self.lock:
            return [s for kind, s in self.effects if kind == "undo"]


# The same mailbox and step functions as the claim tests' saga (its steps call the venue's act/undo).
from arb_orchestration_tests.unit.test_saga_claim import Mailbox, _act, _undo  # noqa: E402


# reserve → hedge → deposit (pivot) → settle; a crash after hedge started compensates hedge, then reserve.
HB_SAGA = build_saga(
    "heartbeat_saga",
    [SagaStep("reserve", _act, _undo), SagaStep("hedge", _act, _undo), SagaStep("deposit", _act, _undo, pivot=True),
     SagaStep("settle", _act)],
    retry_policy=None,
)
SAGA = HB_SAGA.definition


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.005)


def heartbeat_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(HEARTBEAT_THREAD)]


def half_done_saga(saga_id: str = "s1") -> InMemorySagaLog:
    """reserve and hedge done, then the run died: compensation pending for hedge, then reserve."""
    log = InMemorySagaLog()
    venue = Venue()
    for step in ("reserve", "hedge"):
        execute_step(SAGA, step, StepRuntime(saga_id, log, {"venue": venue}))
    return log


def in_thread(fn, *args, **kwargs) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def go() -> None:
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    t = threading.Thread(target=go, name="actor")
    t.start()
    return t, box


def _recover(log, claims, actor, venue, mail, logger, ttl, **spec):
    return recover_saga(SAGA, "s1", FailedRun("run-1", SAGA.name), log=log, resources={"venue": venue},
                        alert=mail.send, claim=ClaimSpec(claims, actor, ttl_seconds=ttl, **spec), logger=logger)


def _take_over(claims: SagaClaims, saga_id: str, actor: str) -> Lease:
    """Another actor replaces the current lease, as after the holder's renewals failed for a whole TTL."""
    key = claim_key(saga_id)
    raw = claims.store.read(key)
    assert raw is not None
    now = time.time()
    thief = Lease(saga_id, "thief0000000", actor, now, now + 3600)
    thief = Lease(**{**thief.__dict__, "raw": thief.to_json()})
    assert claims.store.replace(key, raw, thief.raw)
    return thief


# ---------------------------------------------------------------------------------------- fake clock


def test_a_compensation_blocked_for_many_ttls_keeps_its_lease_and_a_second_actor_is_refused():
    clock = FakeClock()
    claims = InMemorySagaClaims(clock=clock)
    log, venue, mail, logger = half_done_saga(), Venue(), Mailbox(), ListLogger()
    venue.gate.clear()
    ttl = 0.2  # the heartbeat renews every ttl/4 = 50 ms of real time; expiry is judged on the fake clock
    actor, box = in_thread(_recover, log, claims, "sensor a", venue, mail, logger, ttl)
    try:
        assert venue.unwinding.wait(GATE_TIMEOUT)  # hedge's cancel is in flight
        for _ in range(25):  # 25 x ttl/2 = 12.5 TTLs of fake time while the call blocks
            clock.advance(ttl / 2)
            wait_for(lambda: claims.holder("s1").expires_at >= clock() + ttl * 0.99, timeout=5,
                     what="the heartbeat to renew the lease at the new time")
            assert claims.holder("s1").actor == "sensor a"
        second = _recover(log, claims, "sensor b", Venue(), mail, ListLogger(), ttl)
        assert second.action is Action.BUSY and "claimed by sensor a" in second.reason
    finally:
        venue.gate.set()
        actor.join(GATE_TIMEOUT)
    assert "error" not in box, box
    assert box["result"].action is Action.COMPENSATED
    assert venue.undone() == ["hedge", "reserve"] and venue.max_in_flight == 1
    assert claims.holder("s1") is None  # released with the heartbeat's latest value, not the first one
    assert [s for s in mail.sent if "rolled back" in s] == [mail.sent[0]] and len(mail.sent) == 1
    assert not logger.at("error")


def test_a_holder_whose_heartbeat_stops_is_taken_over_after_the_ttl():
    from arb_orchestration.saga.claim import HeldClaim

    clock = FakeClock()
    claims = InMemorySagaClaims(clock=clock)
    first = claims.acquire("s-dead", "sensor a", ttl_seconds=60)
    held = HeldClaim(claims, first.lease, ttl_seconds=60, renew_every_seconds=0.01, logger=ListLogger())
    held.start_heartbeat()
    clock.advance(50)
    wait_for(lambda: claims.holder("s-dead").expires_at >= clock() + 59.9, what="a renewal")
    held.stop_heartbeat()  # the process "dies": no more renewals, no release
    assert not claims.acquire("s-dead", "sensor b", ttl_seconds=60).acquired
    clock.advance(59)
    assert not claims.acquire("s-dead", "sensor b", ttl_seconds=60).acquired  # still inside its TTL
    clock.advance(1.5)
    taken = claims.acquire("s-dead", "sensor b", ttl_seconds=60)
    assert taken.acquired and taken.took_over.owner == first.lease.owner
    with pytest.raises(ClaimLostError, match="sensor b"):
        held.renew()
    assert not held.release() and claims.holder("s-dead").actor == "sensor b"


def test_a_claim_lost_while_a_compensation_is_in_flight_stops_at_the_next_safe_point():
    claims = InMemorySagaClaims()
    log, venue, mail, logger = half_done_saga(), Venue(), Mailbox(), ListLogger()
    venue.gate.clear()
    actor, box = in_thread(_recover, log, claims, "sensor a", venue, mail, logger, 2.0)
    try:
        assert venue.unwinding.wait(GATE_TIMEOUT)
        _take_over(claims, "s1", "sensor thief")
        # The heartbeat (every 0.5 s) notices while the call is still in flight, and says so loudly.
        wait_for(lambda: any("sensor thief" in m for m in logger.at("error")), timeout=5,
                 what="the heartbeat to report the lost claim")
    finally:
        venue.gate.set()
        actor.join(GATE_TIMEOUT)
    assert "error" not in box, box
    outcome = box["result"]
    assert outcome.action.value == "claim_lost" and "sensor thief" in outcome.reason
    assert venue.undone() == ["hedge"]  # the call in flight finished (it cannot be aborted) ...
    compensated = [r for r in log.all_records() if r.kind is RecordKind.STEP_COMPENSATED]
    assert compensated == []  # ... but the lost actor wrote nothing: the new holder repeats it by key
    assert mail.sent == []  # no "rolled back" mail from an actor that no longer owns the saga
    assert any("not recorded" in m.lower() and "hedge" in m for m in logger.at("error"))
    assert claims.holder("s1").actor == "sensor thief"  # not released by the loser


def test_a_compensation_failing_after_the_claim_was_lost_is_not_counted_or_mailed():
    claims = InMemorySagaClaims()
    log, venue, mail, logger = half_done_saga(), Venue(fail_hedge_undo=True), Mailbox(), ListLogger()
    venue.gate.clear()
    actor, box = in_thread(_recover, log, claims, "sensor a", venue, mail, logger, 2.0)
    try:
        assert venue.unwinding.wait(GATE_TIMEOUT)
        _take_over(claims, "s1", "sensor thief")
    finally:
        venue.gate.set()
        actor.join(GATE_TIMEOUT)
    assert "error" not in box, box
    assert box["result"].action.value == "claim_lost"
    assert log.load("s1").step("hedge").compensation_failures == 0  # would push the new holder towards escalation
    assert mail.sent == []  # no COMPENSATION FAILED mail either
    assert any("502" in m and "not recorded" in m.lower() for m in logger.at("error"))


def test_a_transient_storage_error_in_one_heartbeat_is_retried_and_the_lease_kept():
    from arb_orchestration.saga.claim import HeldClaim

    class FlakyStore(InMemoryClaimStore):
        failures = 0

        def replace(self, key, seen, value):
            if self.failures:
                self.failures -= 1
                raise OSError("could not connect to server: Connection refused")
            return super().replace(key, seen, value)

    clock, store = FakeClock(), FlakyStore()
    claims = SagaClaims(store, clock=clock)
    lease = claims.acquire("s-flaky", "sensor a", ttl_seconds=60).lease
    logger = ListLogger()
    held = HeldClaim(claims, lease, ttl_seconds=60, renew_every_seconds=0.01, logger=logger)
    store.failures = 2
    with held:
        clock.advance(30)
        wait_for(lambda: claims.holder("s-flaky").expires_at >= clock() + 59.9, what="a renewal after the errors")
        assert held.lost is None
    assert len([m for m in logger.at("warning") if "Connection refused" in m]) == 2
    assert claims.holder("s-flaky") is None and not heartbeat_threads()


def test_a_logger_that_stops_working_does_not_stop_the_renewals():
    # A sensor tick that timed out keeps compensating in the code server after its log capture was
    # closed: the heartbeat's log calls may raise from then on, and it must go on renewing.
    from arb_orchestration.saga.claim import HeldClaim

    class BrokenLogger(ListLogger):
        def _add(self, level, msg):
            raise ValueError("I/O operation on closed file")

    class FlakyStore(InMemoryClaimStore):
        failures = 1

        def replace(self, key, seen, value):
            if self.failures:
                self.failures -= 1
                raise OSError("server closed the connection unexpectedly")
            return super().replace(key, seen, value)

    clock, store = FakeClock(), FlakyStore()
    claims = SagaClaims(store, clock=clock)
    lease = claims.acquire("s-mute", "sensor a", ttl_seconds=60).lease
    with HeldClaim(claims, lease, ttl_seconds=60, renew_every_seconds=0.01, logger=BrokenLogger()) as held:
        for _ in range(3):
            clock.advance(40)
            wait_for(lambda: claims.holder("s-mute").expires_at >= clock() + 59.9, what="a renewal")
        assert held.renewal_errors == 1 and held.renewals >= 3
    assert claims.holder("s-mute") is None


def test_a_renewal_whose_reply_was_lost_is_recognised_as_ours():
    # The UPDATE committed but the connection dropped before its reply: the store holds our lease
    # with a later expiry than the one we know. Nobody took it over, so renewing must not say "lost".
    claims = InMemorySagaClaims()
    lease = claims.acquire("s-reply", "sensor a", ttl_seconds=60).lease
    unseen = Lease(**{**lease.__dict__, "expires_at": lease.expires_at + 10})
    assert claims.store.replace(claim_key("s-reply"), lease.raw, unseen.to_json())
    renewed = claims.renew(lease, 60)
    assert renewed.owner == lease.owner and claims.release(renewed)


def test_a_holder_past_its_maximum_hold_stops_renewing_and_is_then_taken_over():
    from arb_orchestration.saga.claim import HeldClaim

    clock = FakeClock()
    claims = InMemorySagaClaims(clock=clock)
    lease = claims.acquire("s-hung", "sensor a", ttl_seconds=60).lease
    logger = ListLogger()
    with HeldClaim(claims, lease, ttl_seconds=60, renew_every_seconds=0.01, max_hold_seconds=600,
                   logger=logger) as held:
        clock.advance(599)
        wait_for(lambda: claims.holder("s-hung").expires_at >= clock() + 59.9, what="a renewal within the hold")
        clock.advance(2)  # past 600 s: a call hung this long must not keep the saga forever
        wait_for(lambda: any("600" in m for m in logger.at("error")), what="the max-hold error")
        clock.advance(61)
        taken = claims.acquire("s-hung", "sensor b", ttl_seconds=60)
        assert taken.acquired and taken.took_over.owner == lease.owner
        with pytest.raises(ClaimLostError):
            held.renew()  # the hung holder, once its call returns, is stopped at its next safe point


def test_no_heartbeat_thread_outlives_its_held_section():
    claims = InMemorySagaClaims()
    log, mail = half_done_saga(), Mailbox()
    venue = Venue(fail_hedge_undo=True)
    seen_during: list[int] = []
    original = venue.undo

    def undo(ctx):
        seen_during.append(len([t for t in heartbeat_threads() if "s1" in t.name]))
        return original(ctx)

    venue.undo = undo  # type: ignore[method-assign]
    outcome = _recover(log, claims, "sensor a", venue, mail, ListLogger(), 60)
    assert outcome.action is Action.COMPENSATION_FAILED
    assert seen_during == [1]  # one heartbeat while the call ran ...
    assert not [t for t in heartbeat_threads() if "s1" in t.name]  # ... and none after, also when it raised
    assert claims.holder("s1") is None


def test_the_failure_hook_in_a_real_run_compensates_under_a_live_heartbeat(tmp_path):
    # The hook runs inside the Dagster run process: the heartbeat is a thread of that process and
    # opens its own storage connections; it must be running during the compensation and gone after.
    seen: list[list[str]] = []

    def undo(ctx, venue):
        seen.append([t.name for t in heartbeat_threads()])
        return venue.undo(ctx)

    def boom(ctx, venue):
        raise RuntimeError("deposit refused by the bank")

    saga = build_saga("heartbeat_hook_saga",
                      [SagaStep("reserve", _act, undo), SagaStep("deposit", boom, undo, pivot=True)],
                      retry_policy=None)
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        venue = Venue()
        result = saga.job.execute_in_process(instance=instance, resources={"venue": venue, "smtp": Mailbox()},
                                             raise_on_error=False)
        assert not result.success
        assert venue.undone() == ["deposit", "reserve"]
        assert len(seen) == 2 and all(len(names) == 1 and result.run_id in names[0] for names in seen)
        assert not heartbeat_threads()
        assert InstanceSagaClaims(instance).holder(result.run_id) is None


# ---------------------------------------------------------------------------------------- real instances
# Shared with integration/test_saga_claim_heartbeat_postgres.py.


def crashed_run(instance: DagsterInstance):
    """A run that died (no hook) while hedge's action was under way: written through the real saga log."""
    run = instance.create_run_for_job(HB_SAGA.job, status=DagsterRunStatus.STARTED)
    log = InstanceSagaLog(instance, run)
    saga_id = run.tags.get(SAGA_ID_TAG, run.run_id)
    for step in ("reserve", "hedge"):
        key = idempotency_key(SAGA.name, saga_id, step)
        log.record_started(saga_id, SAGA.name, step, key=key)
        if step == "reserve":
            log.record_done(saga_id, SAGA.name, step, key=key, result={"step": step})
    instance.report_run_failed(run, "run worker exited unexpectedly (SIGKILL)")
    return instance.get_run_by_id(run.run_id), saga_id


def check_long_compensation_keeps_its_lease(instance: DagsterInstance, ttl: float = 2.0) -> None:
    """Threads on one instance: a sensor's compensation blocks for 2 TTLs (real time) while a
    second actor keeps trying; every try is refused, the saga is compensated once."""
    run, saga_id = crashed_run(instance)
    venue, mail = Venue(), Mailbox()
    venue.gate.clear()
    actor, box = in_thread(recover_run, instance, SAGA, run, {"venue": venue, "smtp": mail},
                           actor="sensor a", claim_ttl_seconds=ttl)
    claims = InstanceSagaClaims(instance)
    tries: list[Any] = []
    try:
        assert venue.unwinding.wait(GATE_TIMEOUT)
        acquired_at = claims.holder(saga_id).acquired_at
        while time.time() < acquired_at + 2 * ttl:
            other = recover_run(instance, SAGA, run, {"venue": Venue(), "smtp": Mailbox()},
                                actor="sensor b", claim_ttl_seconds=ttl)
            tries.append(other)
            assert other.action is Action.BUSY and "claimed by sensor a" in other.reason, other
            time.sleep(0.1)
        assert claims.holder(saga_id).expires_at > acquired_at + 1.5 * ttl  # renewed while the call blocked
    finally:
        venue.gate.set()
        actor.join(GATE_TIMEOUT)
    assert "error" not in box, box
    assert box["result"].action is Action.COMPENSATED
    assert venue.undone() == ["hedge", "reserve"] and len(tries) >= 3
    assert claims.holder(saga_id) is None


def check_killed_holder_is_taken_over_after_its_ttl(instance: DagsterInstance, workdir, ttl: float = 3.0) -> None:
    """A recovery actor in another process blocks in a compensation for 2 TTLs (its heartbeat
    keeps the lease; a second actor is refused), then is SIGKILLed mid-call: the second actor takes
    over once the lease has run out, and compensates the saga (newest first, each step once)."""
    run, saga_id = crashed_run(instance)
    workdir = str(workdir)
    child = subprocess.Popen(
        [sys.executable, "-m", "arb_orchestration_tests.unit.test_saga_claim_heartbeat", "heartbeat-child",
         serialize_value(instance.get_ref()), run.run_id, workdir, str(ttl)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    claims = InstanceSagaClaims(instance)
    venue = Venue()
    resources = {"venue": venue, "smtp": Mailbox()}
    try:
        unwinding = os.path.join(workdir, "unwinding-hedge")
        wait_for(lambda: os.path.exists(unwinding) or child.poll() is not None, timeout=120,
                 what="the child to start compensating")
        assert child.poll() is None, child.communicate()[1].decode()[-3000:]
        holder = claims.holder(saga_id)
        assert holder.actor == "sensor child" and holder.pid == child.pid
        while time.time() < holder.acquired_at + 2 * ttl:
            other = recover_run(instance, SAGA, run, resources, actor="sensor b", claim_ttl_seconds=ttl)
            assert other.action is Action.BUSY and "claimed by sensor child" in other.reason, other
            time.sleep(0.1)
        assert venue.undone() == []
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        killed_at = time.time()
        last = claims.holder(saga_id)
        assert last.owner == holder.owner and last.expires_at > holder.acquired_at + 1.5 * ttl
        early = recover_run(instance, SAGA, run, resources, actor="sensor b", claim_ttl_seconds=ttl)
        if time.time() < last.expires_at - 0.2:  # only meaningful if we asked well inside its lease
            assert early.action is Action.BUSY, early
        deadline = killed_at + ttl + 30
        outcome = early
        while outcome.action is Action.BUSY:
            assert time.time() < deadline, f"the dead holder's lease was never taken over: {outcome.reason}"
            time.sleep(0.1)
            outcome = recover_run(instance, SAGA, run, resources, actor="sensor b", claim_ttl_seconds=ttl)
        taken_at = time.time()
        assert outcome.action is Action.COMPENSATED, outcome
        assert taken_at >= last.expires_at  # not before the dead holder's lease ran out
        assert venue.undone() == ["hedge", "reserve"]
        assert not os.path.exists(os.path.join(workdir, "undone-reserve"))  # the child never went on
        assert claims.holder(saga_id) is None
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)


def test_long_compensation_keeps_its_lease_on_sqlite(tmp_path):
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        check_long_compensation_keeps_its_lease(instance)


def test_killed_holder_is_taken_over_after_its_ttl_on_sqlite(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "sync").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        check_killed_holder_is_taken_over_after_its_ttl(instance, tmp_path / "sync")


# ---------------------------------------------------------------------------------------- child process


class _FileVenue:
    """The child's venue: hedge's cancel hangs (until the process is killed); files say what happened."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir

    def undo(self, ctx) -> dict:
        open(os.path.join(self.workdir, f"unwinding-{ctx.step}"), "w").close()
        if ctx.step == "hedge":
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                time.sleep(0.05)
            raise RuntimeError("the test never killed this process")
        open(os.path.join(self.workdir, f"undone-{ctx.step}"), "w").close()
        return {"undone": ctx.step}


def _heartbeat_child(ref: str, run_id: str, workdir: str, ttl: str) -> None:
    instance = DagsterInstance.from_ref(deserialize_value(ref))
    run = instance.get_run_by_id(run_id)
    outcome = recover_run(instance, SAGA, run, {"venue": _FileVenue(workdir), "smtp": Mailbox()},
                          actor="sensor child", claim_ttl_seconds=float(ttl))
    print(json.dumps({"action": outcome.action.value, "reason": outcome.reason}))


if __name__ == "__main__" and sys.argv[1:2] == ["heartbeat-child"]:
    _heartbeat_child(*sys.argv[2:6])
