"""The stop-loss gives up on a position at once when the venue refuses it for the account (hedge position
mode: `hedge_mode_unsupported`), instead of sending `max_refusals_per_position` refused orders first; an
ordinary refusal is still retried up to that limit. A fake venue: the liquidator's own loop is under test."""

from __future__ import annotations

from arb_orchestration.defs.stop_loss.liquidator import LiquidationSettings, liquidate_venue
from arb_orchestration.domain.models import Position
from arb_orchestration.resources.errors import BusinessError


class RefusingVenue:
    name = "binance"

    def __init__(self, code: str):
        self.code = code
        self.orders_sent = 0
        self.position = Position(venue=self.name, symbol="BTC/USDT:USDT", side="long", size=1.0,
                                 entry_price=100000.0, mark_price=100000.0)

    def fetch_positions(self):
        return [self.position]

    def fetch_open_orders(self, symbol=None):
        return []

    def cancel_all_orders(self, symbol=None):
        return []

    def create_order(self, *args, **kwargs):
        self.orders_sent += 1
        raise BusinessError(f"refused ({self.code})", code=self.code)


def _liquidate(venue: RefusingVenue):
    return liquidate_venue(venue, base_key="sl-1", sleep=lambda s: None,
                           settings=LiquidationSettings(deadline_seconds=5.0, base_delay=0.0, max_delay=0.0,
                                                        max_refusals_per_position=3))


def test_an_account_refusal_is_given_up_on_after_one_order():
    venue = RefusingVenue("hedge_mode_unsupported")
    outcome = _liquidate(venue)
    assert venue.orders_sent == 1
    assert not outcome.flat and outcome.remaining == [venue.position]
    assert len(outcome.business_errors) == 1 and "hedge_mode_unsupported" in outcome.business_errors[0]


def test_an_ordinary_refusal_is_still_retried_up_to_the_limit():
    venue = RefusingVenue("order_rejected")
    outcome = _liquidate(venue)
    assert venue.orders_sent == 3
    assert not outcome.flat and len(outcome.business_errors) == 3
