"""Audit regressions for money paths: an error caught on the way must never turn into a reassuring
default (a venue reported flat, a compensation reported done) when the facts are unknown."""

from __future__ import annotations

from arb_orchestration.defs.stop_loss.liquidator import LiquidationSettings, liquidate_all
from arb_orchestration.resources.errors import TransientError
from arb_orchestration_tests.unit.test_stop_loss_liquidator import FakeVenue


def test_dry_run_does_not_call_a_venue_flat_when_its_open_orders_could_not_be_read():
    # No positions, but the open orders are unknown: the dry-run report must not say "flat".
    v = FakeVenue("okx", open_orders=["BTC/USDT:USDT"])
    v.faults["fetch_open_orders"] = [TransientError("HTTP 503")]
    report = liquidate_all(["okx"], {"okx": v}.__getitem__, saga_id="s", base_key="k",
                           settings=LiquidationSettings(dry_run=True))
    [outcome] = report.venues
    assert not outcome.flat and not report.flat
    assert outcome.planned == [] and any("fetch_open_orders" in e and "503" in e for e in outcome.errors)
    assert v.order_count() == 0 and len(v.open) == 1  # still a dry run: nothing moved


def test_dry_run_still_calls_a_venue_flat_when_it_read_no_positions_and_no_orders():
    v = FakeVenue("okx")
    report = liquidate_all(["okx"], {"okx": v}.__getitem__, saga_id="s", base_key="k",
                           settings=LiquidationSettings(dry_run=True))
    assert report.venues[0].flat and report.venues[0].errors == []
