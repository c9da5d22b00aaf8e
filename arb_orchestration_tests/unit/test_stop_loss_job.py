"""`emergency_stop_loss_saga` as a Dagster job on a real SQLite instance with fake venues and a fake
mailer: flattens and reports, pauses trading, honours `venues` and `dry_run`, re-execution moves
nothing, a refusing venue escalates; and the whole code location loads with the stop-loss wired."""

from __future__ import annotations

from dagster import DagsterEventType, ReexecutionOptions, build_reconstructable_job, execute_job

from arb_orchestration.defs.k8s import STOP_LOSS_RUN_TAGS
from arb_orchestration.defs.stop_loss import emergency_stop_loss_saga, stop_loss_saga
from arb_orchestration.saga import InstanceSagaLog, Verdict, decide, trading_paused
from arb_orchestration_tests.unit.test_saga_dagster import temp_instance
from arb_orchestration_tests.unit.test_stop_loss_liquidator import FakeVenue

import pytest


class FakeExchange:
    def __init__(self, venues):
        self.venues_by_name = {v.name: v for v in venues}

    def venue_names(self):
        return list(self.venues_by_name)

    def venue(self, name):
        return self.venues_by_name[name]


class FakeSmtp:
    def __init__(self):
        self.sent = []

    def send(self, subject, body):
        self.sent.append((subject, body))


_WORLD: dict = {}


def stop_loss_job_with_fakes():
    """Reconstructable target for the re-execution test (the fakes live in this module)."""
    from dagster import Definitions

    return Definitions(jobs=[emergency_stop_loss_saga], resources=_WORLD).get_job_def(emergency_stop_loss_saga.name)


def _venues():
    return [
        FakeVenue("binance", positions=[("BTC/USDT:USDT", "long", 1.5)], open_orders=["BTC/USDT:USDT"], mark=60000),
        FakeVenue("okx", positions=[("ETH/USDT:USDT", "short", 10.0)], mark=3000),
        FakeVenue("bybit", positions=[("SOL/USDT:USDT", "long", 50.0)], mark=150),
    ]


@pytest.fixture(scope="module")
def instance():
    with temp_instance() as inst:
        yield inst


def _run(instance, exchange, smtp, config=None, **kw):
    return emergency_stop_loss_saga.execute_in_process(
        instance=instance, run_config={"deadline_seconds": 5.0, **(config or {})},
        resources={"exchange": exchange, "smtp": smtp}, raise_on_error=False, **kw,
    )


def test_stop_loss_flattens_every_venue_reports_and_pauses_trading(instance):
    exchange, smtp = FakeExchange(_venues()), FakeSmtp()
    result = _run(instance, exchange, smtp, tags={"arb/event_id": "evt-7", "arb/source": "capital-events/0/42"})
    assert result.success
    for v in exchange.venues_by_name.values():
        assert all(size == 0 for size in v.positions.values()) and v.open == []
    [(subject, body)] = smtp.sent
    assert subject.startswith("[stop-loss] FLAT on 3 venue(s)")
    assert "closed: sell 1.5 BTC/USDT:USDT @ avg 60,000.00" in body and "event evt-7" in body
    paused, reason = trading_paused(instance)
    assert paused and result.run_id in reason
    run = instance.get_run_by_id(result.run_id)
    assert run.tags["dagster/priority"] == STOP_LOSS_RUN_TAGS["dagster/priority"]
    assert "dagster-k8s/config" in run.tags
    state = InstanceSagaLog(instance).load(result.run_id)
    assert decide(stop_loss_saga.definition, state).verdict is Verdict.COMPLETED
    assert len(state.step("liquidate").result["venues"]) == 3

    # Re-executing the finished run (same saga: root run id) sends nothing and mails nothing.
    _WORLD.clear()
    _WORLD.update({"exchange": exchange, "smtp": smtp})
    for v in exchange.venues_by_name.values():
        v.positions = {k: 1.0 for k in v.positions}  # even if exposure came back, this saga is done
    job = build_reconstructable_job(__name__, "stop_loss_job_with_fakes")
    with execute_job(job, instance, run_config={"deadline_seconds": 5.0},
                     reexecution_options=ReexecutionOptions(parent_run_id=result.run_id)) as again:
        assert again.success
    assert sum(v.order_count() for v in exchange.venues_by_name.values()) == 3
    assert len(smtp.sent) == 1


def test_dry_run_on_a_subset_moves_nothing_and_leaves_trading_alone(instance):
    from arb_orchestration.saga import resume_trading

    resume_trading(instance, "test", by="test")
    exchange, smtp = FakeExchange(_venues()), FakeSmtp()
    result = _run(instance, exchange, smtp, {"dry_run": True, "venues": ["okx", "bybit"]})
    assert result.success
    assert sum(v.order_count() for v in exchange.venues_by_name.values()) == 0
    assert exchange.venues_by_name["binance"].calls == []  # not in the subset: not even read
    assert len(exchange.venues_by_name["binance"].open) == 1
    [(subject, body)] = smtp.sent
    assert "DRY RUN" in subject and "would buy 10 ETH/USDT:USDT" in body and "BTC" not in body
    assert trading_paused(instance) == (False, "test")
    lines = [r.user_message for r in instance.all_logs(result.run_id) if r.user_message.startswith("stop-loss okx:")]
    assert len(lines) == 1 and lines[0].endswith("no order sent")  # was "first order after Nones"


def test_a_venue_that_refuses_to_close_escalates_to_the_risk_team(instance):
    venues = _venues()
    venues[1].refuse_orders = True
    exchange, smtp = FakeExchange(venues), FakeSmtp()
    result = _run(instance, exchange, smtp)
    assert not result.success
    failure = result.failure_data_for_node("liquidate")
    assert "refused by the venue" in failure.error.message
    # Business refusal: no op retry, no relaunch; the hook escalated by mail.
    starts = [e for e in instance.all_logs(result.run_id, of_type=DagsterEventType.STEP_START) if e.step_key == "liquidate"]
    assert len(starts) == 1
    assert any("ESCALATED" in s and "okx" in b for s, b in smtp.sent)
    assert all(size == 0 for size in venues[0].positions.values())  # the others were still flattened
    state = InstanceSagaLog(instance).load(result.run_id)
    assert state.escalated and state.step("liquidate").progress  # the partial report is in the log
    assert trading_paused(instance)[0]


def test_code_location_loads_with_the_stop_loss_saga_and_kill_switch_wired():
    from arb_orchestration.definitions import defs

    repo = defs.get_repository_def()
    assert repo.get_job("emergency_stop_loss_saga").executor_def.name == "in_process"
    for name in ("pause_trading_job", "resume_trading_job"):
        assert repo.get_job(name)
    sensors = {s.name for s in repo.sensor_defs}
    assert {"emergency_stop_loss_saga_recovery_sensor", "emergency_stop_loss_saga_recovery_sweep_sensor"} <= sensors
