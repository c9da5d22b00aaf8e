"""The risk-team mail about a too-new saga goes out once even when two actors meet the saga at the same moment.

On a real SQLite instance (its kvs table, through `InstanceClaimStore`):
* two actors (threads) racing while the first one's send is still in flight: one mail; the second actor sees the
  claim and does not mail;
* the same through the real sensors: a failure-sensor tick blocked in its send while a sweep tick runs;
* a failed send is logged at ERROR, gives the claim back, and a later sweep tick mails;
* a "sending" claim left by an actor that died mid-send is taken over once it is stale (not before); a key
  written by the earlier code (no `state`) counts as mailed.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest
from dagster import Definitions

from arb_orchestration.saga import InstanceSagaLog, SagaLogTooNewError
from arb_orchestration.saga.claim import InstanceClaimStore
from arb_orchestration.saga.sensors import (
    TOO_NEW_MAIL_SENDING_STALE_SECONDS,
    report_too_new_saga,
    too_new_mail_key,
)
from arb_orchestration_tests.unit.test_saga_dagster import temp_instance
from arb_orchestration_tests.unit.test_saga_too_new import SAGA, TOO_NEW_SAGA, Ledger, _tick, failed_run

WAIT = 20.0  # upper bound for anything we wait for; nothing here should take more than a fraction of it


class BlockingMailbox:
    """The first send blocks until `release`; later sends go straight through. Every send is recorded."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def send(self, subject: str, body: str) -> None:
        with self._lock:
            self.sent.append((subject, body))
            first = len(self.sent) == 1
        if first:
            self.entered.set()
            assert self.release.wait(WAIT), "the test never released the first send"

    def about(self, saga_id: str) -> list[tuple[str, str]]:
        return [m for m in self.sent if saga_id in m[0] + m[1]]


class FlakyMailbox:
    """Fails the first `failures` sends (an SMTP outage), then delivers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.sent: list[tuple[str, str]] = []

    def send(self, subject: str, body: str) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionRefusedError("smtp down")
        self.sent.append((subject, body))


class Lines:
    """A logger that keeps (level, text)."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []

    def error(self, msg: str) -> None:
        self.lines.append((logging.ERROR, msg))

    def warning(self, msg: str) -> None:
        self.lines.append((logging.WARNING, msg))

    def info(self, msg: str) -> None:
        self.lines.append((logging.INFO, msg))


@pytest.fixture(scope="module")
def instance():
    with temp_instance() as inst:
        yield inst


def _too_new(instance) -> tuple[str, SagaLogTooNewError]:
    saga_id = failed_run(instance, too_new=True)
    with pytest.raises(SagaLogTooNewError) as caught:
        InstanceSagaLog(instance).load(saga_id)
    return saga_id, caught.value


def _key_state(instance, saga_id: str) -> dict | None:
    raw = InstanceClaimStore(instance).read(too_new_mail_key(saga_id))
    return None if raw is None else json.loads(raw)


def _wait(event: threading.Event) -> None:
    assert event.wait(WAIT), "timed out"


def test_two_actors_racing_mail_once(instance):
    saga_id, error = _too_new(instance)
    run = instance.get_run_by_id(saga_id)
    mailbox = BlockingMailbox()
    results: dict[str, bool] = {}

    def first() -> None:
        results["first"] = report_too_new_saga(instance, SAGA, run, error, {"smtp": mailbox}, Lines(),
                                               actor="sensor A")

    thread = threading.Thread(target=first)
    thread.start()
    try:
        _wait(mailbox.entered)  # A is inside its send; nothing is marked "sent" yet
        # B meets the same saga now (the other sensor, another tick, another daemon): it must not mail.
        mailed_by_b = report_too_new_saga(instance, SAGA, run, error, {"smtp": mailbox}, Lines(), actor="sweep B")
        assert len(mailbox.about(saga_id)) == 1 and mailed_by_b is False
        assert _key_state(instance, saga_id)["state"] == "sending"  # A's claim, taken before its send
    finally:
        mailbox.release.set()
        thread.join(WAIT)
    assert results == {"first": True}
    assert _key_state(instance, saga_id)["state"] == "sent"
    # And later ticks do not mail either.
    assert report_too_new_saga(instance, SAGA, run, error, {"smtp": mailbox}, Lines(), actor="sweep C") is False
    assert len(mailbox.about(saga_id)) == 1


def test_the_failure_sensor_and_the_sweep_interleaved_mail_once(instance):
    mailbox = BlockingMailbox()
    resources = {"ledger": Ledger(), "smtp": mailbox}
    failure_sensor, sweep = TOO_NEW_SAGA.recovery_sensors(grace_seconds=0)
    repo = Definitions(jobs=[TOO_NEW_SAGA.job], sensors=[failure_sensor, sweep], resources=resources
                       ).get_repository_def()
    failure_sensor, sweep = repo.get_sensor_def(failure_sensor.name), repo.get_sensor_def(sweep.name)
    _, cursor = _tick(failure_sensor, instance, repo, resources, None)  # the first tick only sets the cursor
    # Sagas of the other tests are mailed already; only this one is new.
    saga_id, _ = _too_new(instance)
    outcome: dict[str, object] = {}

    def failure_tick() -> None:
        try:
            outcome["result"] = _tick(failure_sensor, instance, repo, resources, cursor)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=failure_tick)
    thread.start()
    try:
        _wait(mailbox.entered)  # the failure sensor is mailing about the saga
        with pytest.raises(Exception, match="SagaLogTooNewError"):  # the sweep still reports it (red tick)
            _tick(sweep, instance, repo, resources, None)
        assert len(mailbox.about(saga_id)) == 1  # ... but does not mail it
    finally:
        mailbox.release.set()
        thread.join(WAIT)
    assert "error" not in outcome and "result" in outcome
    assert len(mailbox.about(saga_id)) == 1 and len(mailbox.sent) == 1
    assert _key_state(instance, saga_id)["state"] == "sent"


def test_a_failed_send_is_logged_at_error_and_retried_by_a_later_tick(instance, capfd):
    mailbox = FlakyMailbox(failures=1)
    resources = {"ledger": Ledger(), "smtp": mailbox}
    _, sweep = TOO_NEW_SAGA.recovery_sensors(grace_seconds=0)
    repo = Definitions(jobs=[TOO_NEW_SAGA.job], sensors=[sweep], resources=resources).get_repository_def()
    sweep = repo.get_sensor_def(sweep.name)
    saga_id, _ = _too_new(instance)

    capfd.readouterr()
    with pytest.raises(Exception, match="SagaLogTooNewError"):
        _tick(sweep, instance, repo, resources, None)
    errors = [line for line in capfd.readouterr().err.splitlines() if " - ERROR - " in line]
    assert [line for line in errors if "could not mail the risk team" in line and saga_id in line
            and "ConnectionRefusedError" in line]
    assert not [m for m in mailbox.sent if saga_id in m[0] + m[1]]
    assert _key_state(instance, saga_id) is None  # the claim was given back

    with pytest.raises(Exception, match="SagaLogTooNewError"):
        _tick(sweep, instance, repo, resources, None)
    assert len([m for m in mailbox.sent if saga_id in m[0] + m[1]]) == 1
    assert _key_state(instance, saga_id)["state"] == "sent"


def test_a_dead_senders_claim_is_taken_over_once_stale_and_an_old_format_key_counts_as_mailed(instance):
    saga_id, error = _too_new(instance)
    run = instance.get_run_by_id(saga_id)
    store = InstanceClaimStore(instance)
    key = too_new_mail_key(saga_id)
    now = time.time()
    assert store.insert(key, json.dumps({"state": "sending", "run_id": run.run_id, "kinds": list(error.kinds),
                                         "by": "a daemon that was killed", "claimed_at": now - 5, "nonce": "x"}))
    mailbox = FlakyMailbox(failures=0)
    resources = {"smtp": mailbox}
    # Fresh: somebody may be sending right now.
    assert report_too_new_saga(instance, SAGA, run, error, resources, Lines(), actor="sweep", now=now) is False
    assert mailbox.sent == []
    # Stale: its sender is gone; we take it over and mail.
    later = now + TOO_NEW_MAIL_SENDING_STALE_SECONDS
    assert report_too_new_saga(instance, SAGA, run, error, resources, Lines(), actor="sweep", now=later) is True
    assert len(mailbox.sent) == 1 and _key_state(instance, saga_id)["state"] == "sent"

    other_id, other_error = _too_new(instance)
    other_run = instance.get_run_by_id(other_id)
    # What the earlier code wrote after its mail went out.
    assert store.insert(too_new_mail_key(other_id), json.dumps({"run_id": other_id, "kinds": list(other_error.kinds),
                                                                "mailed_at": now}))
    assert report_too_new_saga(instance, SAGA, other_run, other_error, resources, Lines(), actor="sweep") is False
    assert len(mailbox.sent) == 1
