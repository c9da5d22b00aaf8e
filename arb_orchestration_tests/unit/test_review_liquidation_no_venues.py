"""Review: an exchange resource with no venue configured (an empty venue list in the deployment's env)
made the stop-loss close nothing and mail "[stop-loss] FLAT on 0 venue(s)" — `all([])` is True — and the
saga succeeded. Nothing was checked, so nothing may be called flat: refuse it (escalated at once)."""

from __future__ import annotations

from arb_orchestration.saga import InstanceSagaLog
from arb_orchestration_tests.unit.test_stop_loss_job import FakeExchange, FakeSmtp, _run, instance  # noqa: F401


def test_no_venue_to_flatten_is_never_reported_flat(instance):  # noqa: F811
    smtp = FakeSmtp()
    result = _run(instance, FakeExchange([]), smtp)
    assert not result.success
    assert not any("FLAT on" in s for s, _ in smtp.sent)
    assert "no venue" in result.failure_data_for_node("liquidate").error.message
    assert InstanceSagaLog(instance).load(result.run_id).escalated
