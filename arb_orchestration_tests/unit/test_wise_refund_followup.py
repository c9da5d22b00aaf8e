"""The Wise refund follow-up (domain/wise_refunds.py, defs/rebalance/refunds.py) with fakes for Wise and SMTP.

Covers: which compensation records owe a follow-up (pending legs, `cancel_prepared` legs, a transfer both
compensations recorded, legs the pivot already mailed as refunded); what is mailed and when (refund arrived,
escalation after the deadline, the cancel_prepared notice), each exactly once across ticks, lost cursors and
re-discovery; a Wise or SMTP failure fails the tick after the other legs were handled and loses nothing;
the tick's message counts; the setting; the sensor in the code location. The saga log and the key-value
state live in a real temporary SQLite Dagster instance.
"""

from __future__ import annotations

import math
import time

import pytest
from dagster import build_sensor_context, instance_for_test
from dagster._core.test_utils import create_run_for_test

from arb_orchestration import settings
from arb_orchestration.defs.rebalance.refunds import (
    ALERT_AFTER_SETTING,
    DEFAULT_ALERT_AFTER_SECONDS,
    OPEN_KEY,
    SENSOR_NAME,
    FollowUpCursor,
    RefundFollowUpFailed,
    RefundWatchStore,
    alert_after_seconds_from_env,
    build_wise_refund_followup_sensor,
    follow_up,
)
from arb_orchestration.domain.wise_refunds import (
    ESCALATION,
    NOTICE,
    PIVOT_COMPENSATION,
    PREPARE_COMPENSATION,
    REFUNDED,
    RecordedRefund,
    decide,
    mailed,
    needs_check,
    watches_from_records,
)
from arb_orchestration.resources.errors import BusinessError, TransientError
from arb_orchestration.saga import InstanceSagaLog
from arb_orchestration.saga.keys import SAGA_ID_TAG

DAY = 86_400.0


def entry(transfer_id=50_000_001, *, index=0, amount=3000.0, currency="EUR", status="cancelled", refunded=False):
    return {"index": index, "wise_transfer_id": transfer_id, "amount": amount, "currency": currency,
            "status": status, "refunded": refunded}


def rec(e, compensation=PIVOT_COMPENSATION, at=1000.0, saga="saga-1"):
    return RecordedRefund(saga, "run-1", compensation, at, e)


# --------------------------------------------------------------------------- domain: which legs


def test_a_leg_the_pivot_mailed_as_refunded_owes_nothing():
    assert watches_from_records([rec(entry(status="funds_refunded", refunded=True))]) == {}


def test_a_pending_leg_of_the_pivot_is_watched_without_a_notice():
    [w] = watches_from_records([rec(entry())]).values()
    assert (w.transfer_id, w.amount, w.currency, w.saga_id, w.recorded_at) == (50_000_001, 3000.0, "EUR", "saga-1", 1000.0)
    assert needs_check(w) and not w.notice_owed


@pytest.mark.parametrize("refunded", [False, True])
def test_a_cancel_prepared_leg_owes_a_notice_whatever_its_state(refunded):
    e = entry(status="funds_refunded" if refunded else "cancelled", refunded=refunded)
    [w] = watches_from_records([rec(e, PREPARE_COMPENSATION)]).values()
    assert w.notice_owed and needs_check(w) is not refunded


def test_a_transfer_both_compensations_recorded_is_one_watch_owing_the_refund_mail_not_a_notice():
    records = [rec(entry(), PIVOT_COMPENSATION, at=1000.0),
               rec(entry(status="funds_refunded", refunded=True), PREPARE_COMPENSATION, at=1001.0)]
    [w] = watches_from_records(records).values()
    assert w.compensations == (PIVOT_COMPENSATION, PREPARE_COMPENSATION) and not w.notice_owed
    assert w.recorded_status == "cancelled" and w.refunded  # the pivot's mail said pending
    assert [m.kind for m in decide(w, None, now=1002.0, alert_after_seconds=DAY).mails] == [REFUNDED]


# --------------------------------------------------------------------------- domain: what to mail


def _watch(compensation=PIVOT_COMPENSATION, **kw):
    [w] = watches_from_records([rec(entry(**kw), compensation)]).values()
    return w


def test_pending_within_the_deadline_mails_nothing_then_the_refund_once():
    w = _watch()
    d = decide(w, "cancelled", now=2000.0, alert_after_seconds=DAY)
    assert d.mails == () and d.watch.checked_at == 2000.0
    d = decide(d.watch, "funds_refunded", now=3000.0, alert_after_seconds=DAY)
    [mail] = d.mails
    assert mail.kind == REFUNDED and "50000001" in mail.subject and "3000 EUR" in mail.subject
    assert "saga-1" in mail.body and "run-1" in mail.body
    w = mailed(d.watch, mail, now=3001.0)
    assert w.closed and not needs_check(w)
    assert decide(w, None, now=4000.0, alert_after_seconds=DAY).mails == ()


def test_the_escalation_comes_once_after_the_deadline_and_the_refund_is_still_mailed_later():
    w = _watch()
    assert decide(w, "cancelled", now=1000.0 + DAY - 1, alert_after_seconds=DAY).mails == ()
    d = decide(w, "cancelled", now=1000.0 + DAY, alert_after_seconds=DAY)
    [mail] = d.mails
    assert mail.kind == ESCALATION and "ESCALATION" in mail.subject and "cancelled" in mail.body
    w = mailed(d.watch, mail, now=1000.0 + DAY)
    assert decide(w, "cancelled", now=1000.0 + 3 * DAY, alert_after_seconds=DAY).mails == ()
    assert not w.closed and needs_check(w)
    [late] = decide(w, "funds_refunded", now=1000.0 + 4 * DAY, alert_after_seconds=DAY).mails
    assert late.kind == REFUNDED


def test_a_notice_that_says_refunded_is_the_only_mail():
    w = _watch(PREPARE_COMPENSATION, status="funds_refunded", refunded=True)
    d = decide(w, None, now=1001.0, alert_after_seconds=DAY)
    [mail] = d.mails
    assert mail.kind == NOTICE and "refunded" in mail.subject and "pending" not in mail.subject
    w = mailed(d.watch, mail, now=1001.0)
    assert w.closed and decide(w, None, now=1002.0, alert_after_seconds=DAY).mails == ()


def test_a_pending_notice_is_followed_by_the_refund_mail():
    w = _watch(PREPARE_COMPENSATION)
    [notice] = decide(w, "cancelled", now=1001.0, alert_after_seconds=DAY).mails
    assert notice.kind == NOTICE and "refund pending" in notice.subject
    w = mailed(decide(w, "cancelled", now=1001.0, alert_after_seconds=DAY).watch, notice, now=1001.0)
    assert [m.kind for m in decide(w, "funds_refunded", now=1002.0, alert_after_seconds=DAY).mails] == [REFUNDED]


def test_a_mail_keeps_its_message_id_across_attempts():
    w = _watch()
    a = decide(w, "funds_refunded", now=2.0, alert_after_seconds=DAY).mails[0]
    b = decide(w, "funds_refunded", now=3.0, alert_after_seconds=DAY).mails[0]
    assert a.message_id == b.message_id == "<arb-wise-refund-refunded-50000001@arb-orchestration>"


# --------------------------------------------------------------------------- the tick, on a real instance


class FakeTransfer:
    def __init__(self, status):
        self.status = status


class FakeWise:
    def __init__(self, **statuses):
        self.statuses = {int(k.lstrip("t")): v for k, v in statuses.items()}
        self.failing: dict[int, Exception] = {}
        self.reads: list[int] = []
        self.api_token = "sk-live-SECRET-TOKEN"

    def get_transfer(self, transfer_id):
        self.reads.append(int(transfer_id))
        if int(transfer_id) in self.failing:
            raise self.failing[int(transfer_id)]
        return FakeTransfer(self.statuses[int(transfer_id)])


class FakeSmtp:
    def __init__(self):
        self.sent: list[tuple[str, str, str]] = []
        self.fail_next = 0

    def send(self, subject, body, *, message_id=None, **_):
        if self.fail_next:
            self.fail_next -= 1
            raise TransientError("smtp 127.0.0.1:25: 451 try again")
        self.sent.append((subject, body, message_id))
        return message_id


@pytest.fixture
def instance(tmp_path):
    with instance_for_test(temp_dir=str(tmp_path)) as inst:
        yield inst


def record_compensation(instance, saga_id, step, refunded, *, job_name="auto_rebalance_saga"):
    run = create_run_for_test(instance, job_name=job_name, tags={SAGA_ID_TAG: saga_id})
    InstanceSagaLog(instance, run).record_compensated(
        saga_id, "auto_rebalance_saga", step, key="k", details={"cancelled": [0], "refunded": refunded})
    return run


def tick(instance, wise, smtp, cursor=None, *, now, alert=DAY):
    report, new_cursor = follow_up(instance, wise, smtp, cursor or FollowUpCursor(), alert_after_seconds=alert, now=now)
    return report, new_cursor


def test_a_pending_refund_is_mailed_once_over_many_ticks_and_after_a_lost_cursor(instance):
    record_compensation(instance, "saga-a", "commit_transfers", [entry(50_000_001)])
    wise, smtp = FakeWise(t50000001="cancelled"), FakeSmtp()
    now = time.time()

    report, cursor = tick(instance, wise, smtp, now=now)
    assert (report.discovered, report.checked, report.pending, report.mailed, report.open_after) == (1, 1, 1, 0, 1)
    assert smtp.sent == []

    wise.statuses[50_000_001] = "funds_refunded"
    report, cursor = tick(instance, wise, smtp, cursor, now=now + 60)
    assert (report.discovered, report.refunded, report.mailed, report.closed, report.open_after) == (0, 1, 1, 1, 0)
    [(subject, body, message_id)] = smtp.sent
    assert "refund arrived" in subject and "50000001" in subject and "3000 EUR" in subject and "saga-a" in subject

    reads = len(wise.reads)
    tick(instance, wise, smtp, cursor, now=now + 120)
    tick(instance, wise, smtp, None, now=now + 180)  # cursor lost: everything re-read, nothing re-sent
    assert len(smtp.sent) == 1 and len(wise.reads) == reads  # a closed watch is never asked about again


def test_a_refund_that_never_comes_is_escalated_once(instance):
    record_compensation(instance, "saga-b", "commit_transfers", [entry(50_000_002)])
    wise, smtp = FakeWise(t50000002="cancelled"), FakeSmtp()
    now = time.time()
    cursor = None
    for i in range(4):
        report, cursor = tick(instance, wise, smtp, cursor, now=now + 10 * i, alert=15.0)
    assert [s for s, _, _ in smtp.sent if "ESCALATION" in s] == [smtp.sent[0][0]] and len(smtp.sent) == 1
    assert RefundWatchStore(instance).load([50_000_002])[50_000_002].escalated_at is not None


def test_cancel_prepared_legs_are_mailed_once_the_pivot_ones_only_when_pending(instance):
    record_compensation(instance, "saga-c", "commit_transfers",
                        [entry(1, status="funds_refunded", refunded=True), entry(2, index=1)])
    record_compensation(instance, "saga-c", "prepare_transfers",
                        [entry(1, status="funds_refunded", refunded=True),
                         entry(3, index=2, amount=12.5, currency="USD", status="funds_refunded", refunded=True)])
    wise, smtp = FakeWise(t2="cancelled", t3="funds_refunded"), FakeSmtp()
    now = time.time()
    report, cursor = tick(instance, wise, smtp, now=now)
    assert report.discovered == 2  # transfer 1: the pivot's mail said refunded already
    [(subject, body, _)] = smtp.sent
    assert "transfer 3 cancelled, refunded" in subject and "12.5 USD" in subject and "cancel_prepared" in body
    assert wise.reads == [2]  # 3 was recorded refunded: not asked
    tick(instance, wise, smtp, None, now=now + 1)
    assert len(smtp.sent) == 1


def test_a_wise_failure_fails_the_tick_after_the_other_legs_and_loses_nothing(instance):
    record_compensation(instance, "saga-d", "commit_transfers", [entry(10), entry(11, index=1)])
    wise, smtp = FakeWise(t10="funds_refunded", t11="funds_refunded"), FakeSmtp()
    wise.failing[10] = TransientError("wise get transfer 10: 503 after 4 attempts")
    now = time.time()
    with pytest.raises(RefundFollowUpFailed) as caught:
        tick(instance, wise, smtp, now=now)
    assert "transfer 10" in str(caught.value) and "503" in str(caught.value)
    assert "SECRET" not in str(caught.value)
    assert [s for s, _, _ in smtp.sent] == [smtp.sent[0][0]] and "transfer 11" in smtp.sent[0][0]
    assert RefundWatchStore(instance).open_ids() == [10]

    del wise.failing[10]
    report, _ = tick(instance, wise, smtp, None, now=now + 60)  # the failed tick saved no cursor
    assert report.mailed == 1 and sorted(s for s, _, _ in smtp.sent)[0].count("transfer 10") == 1
    assert len(smtp.sent) == 2 and RefundWatchStore(instance).open_ids() == []


def test_a_business_error_from_wise_fails_the_tick_too(instance):
    record_compensation(instance, "saga-e", "commit_transfers", [entry(12)])
    wise = FakeWise(t12="cancelled")
    wise.failing[12] = BusinessError("wise: transfer 12 not found", code="transfer.not_found")
    with pytest.raises(RefundFollowUpFailed, match="transfer.not_found|not found"):
        tick(instance, wise, FakeSmtp(), now=time.time())


def test_a_mail_that_fails_is_sent_on_a_later_tick_exactly_once(instance):
    record_compensation(instance, "saga-f", "commit_transfers", [entry(20)])
    wise, smtp = FakeWise(t20="funds_refunded"), FakeSmtp()
    smtp.fail_next = 1
    now = time.time()
    with pytest.raises(RefundFollowUpFailed, match="could not mail the refunded"):
        tick(instance, wise, smtp, now=now)
    reads = len(wise.reads)
    report, _ = tick(instance, wise, smtp, now=now + 60)
    tick(instance, wise, smtp, now=now + 120)
    assert len(smtp.sent) == 1 and report.mailed == 1
    assert len(wise.reads) == reads  # the refund was stored on the failed tick: not asked again


def test_other_jobs_and_runs_without_refunds_are_ignored(instance):
    record_compensation(instance, "saga-g", "commit_transfers", [entry(30)], job_name="emergency_stop_loss_saga")
    record_compensation(instance, "saga-h", "commit_transfers", [])
    wise, smtp = FakeWise(), FakeSmtp()
    report, _ = tick(instance, wise, smtp, now=time.time())
    assert report.sagas_read == 1 and report.discovered == 0 and wise.reads == [] and smtp.sent == []
    assert instance.run_storage.get_cursor_values({OPEN_KEY}).get(OPEN_KEY) is None


def test_the_sensor_reports_its_counts_and_writes_the_watermark(instance):
    record_compensation(instance, "saga-i", "commit_transfers", [entry(40)])
    wise, smtp = FakeWise(t40="cancelled"), FakeSmtp()
    sensor = build_wise_refund_followup_sensor(alert_after_seconds=DAY)
    context = build_sensor_context(instance=instance, resources={"wise": wise, "smtp": smtp})
    result = sensor(context)
    assert not result.run_requests
    reason = result.skip_reason.skip_message
    assert "1 new refund leg(s)" in reason and "checked 1 with Wise" in reason and "1 still pending" in reason
    assert "SECRET" not in reason
    assert FollowUpCursor.parse(result.cursor).scanned_until is not None
    wise.statuses[40] = "funds_refunded"
    again = sensor(build_sensor_context(instance=instance, cursor=result.cursor, resources={"wise": wise, "smtp": smtp}))
    assert "mailed 1" in again.skip_reason.skip_message and len(smtp.sent) == 1


def test_an_unreadable_cursor_means_a_full_re_read():
    assert FollowUpCursor.parse("{not json") == FollowUpCursor() == FollowUpCursor.parse(None)
    assert FollowUpCursor.parse(FollowUpCursor(12.5).dump()).scanned_until == 12.5


# --------------------------------------------------------------------------- setting and code location


def test_the_alert_setting_defaults_to_a_day(monkeypatch):
    monkeypatch.delenv(ALERT_AFTER_SETTING, raising=False)
    assert alert_after_seconds_from_env("local") == DEFAULT_ALERT_AFTER_SECONDS == 86_400.0
    assert not settings.SETTINGS[ALERT_AFTER_SETTING].secret
    monkeypatch.setenv(ALERT_AFTER_SETTING, "3600")
    assert alert_after_seconds_from_env("prod") == 3600.0


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-5", "a day"])
def test_a_bad_alert_setting_fails_the_load_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv(ALERT_AFTER_SETTING, value)
    with pytest.raises(settings.SettingError) as caught:
        alert_after_seconds_from_env("local")
    assert ALERT_AFTER_SETTING in str(caught.value) and value in str(caught.value)
    assert not math.isnan(DEFAULT_ALERT_AFTER_SECONDS)


def test_the_code_location_holds_the_sensor_with_the_wise_and_smtp_resources():
    from arb_orchestration.definitions import defs

    repo = defs.get_repository_def()
    sensor = repo.get_sensor_def(SENSOR_NAME)
    assert {"wise", "smtp"} <= set(sensor.required_resource_keys)
    assert not sensor.targets  # it launches nothing: reads, asks Wise, mails


def test_an_id_listed_open_without_its_watch_is_watched_after_the_next_discovery(instance):
    """A tick that died between listing a new watch as open and storing it: nothing is lost."""
    record_compensation(instance, "saga-j", "commit_transfers", [entry(60)])
    store = RefundWatchStore(instance)
    store._set_open([60])  # the first half of `add`, then the crash
    wise, smtp = FakeWise(t60="funds_refunded"), FakeSmtp()
    report, _ = tick(instance, wise, smtp, now=time.time())
    assert report.discovered == 1 and report.mailed == 1 and store.open_ids() == []
