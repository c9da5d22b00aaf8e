"""Review: the mail's fresh-check verdict used the default dust (1e-9) while `notify_risk_team` decided with
the run's `dust`: with `dust: 0.001` a 0.0005 BTC remnant made the mail say "NOT FLAT — manual action
needed" on a saga that succeeded; with `dust: 0` a 5e-10 remnant made it say "FLAT" on a saga that then
escalated as not flat. The mail and the step must judge with the same dust."""

from __future__ import annotations

from arb_orchestration_tests.unit.test_stop_loss_job import FakeExchange, FakeSmtp, _run, instance  # noqa: F401
from arb_orchestration_tests.unit.test_stop_loss_liquidator import FakeVenue


def _remnant(size):
    venue = FakeVenue("alpha", positions=[("BTC/USDT:USDT", "long", 1.0)], mark=60_000.0)
    venue.fill_ratio = 1.0 - size  # the close leaves `size` BTC behind
    return venue


def test_a_remnant_under_the_runs_dust_is_flat_in_the_mail_too(instance):  # noqa: F811
    smtp = FakeSmtp()
    result = _run(instance, FakeExchange([_remnant(0.0005)]), smtp, config={"dust": 0.001})
    assert result.success
    [(subject, _)] = smtp.sent
    assert subject.startswith("[stop-loss] FLAT"), subject


def test_a_remnant_over_a_zero_dust_is_not_flat_in_the_mail(instance):  # noqa: F811
    from arb_orchestration.domain.liquidation import LiquidationReport, VenueOutcome, render_report
    from arb_orchestration.domain.models import Position

    left = Position(venue="alpha", symbol="BTC/USDT:USDT", side="long", size=5e-10, entry_price=1, mark_price=1)
    report = LiquidationReport(saga_id="s", dry_run=False, venues=[VenueOutcome(venue="alpha", flat=True)])
    subject, body = render_report(report, verification={"alpha": ([left], [])}, dust=0.0)
    assert "NOT FLAT" in subject and "STILL OPEN" in body
