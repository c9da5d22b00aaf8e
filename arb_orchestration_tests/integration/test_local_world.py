"""The local world as `arb-orchestration dev` composes it: Wise payouts land on the exchange venues."""


import pytest

from arb_orchestration.defs.resources import resources_for_deployment

pytestmark = pytest.mark.integration


def test_env_points_every_resource_at_the_world(world):
    resources = resources_for_deployment("local")
    exchange = resources["exchange"]
    assert exchange.base_url == world.exchange_url
    assert set(exchange.venue_names()) == set(world.exchange.state.venue_names())
    assert resources["wise"].base_url == world.wise_url
    assert resources["smtp"].port == world.smtp_port


def test_wise_payout_credits_the_venue_that_owns_the_iban(world):
    venue = world.exchange.state.venue_names()[0]
    iban = world.exchange.state.deposit_address(venue, "EUR", "SEPA").address
    before = world.exchange.state.balances(venue)["EUR"].total

    assert world._deliver_fiat(iban, "EUR", 1234.5) is True
    assert world.exchange.state.balances(venue)["EUR"].total == pytest.approx(before + 1234.5)
    assert world._deliver_fiat("DE00NOT-A-VENUE", "EUR", 1.0) is False


def test_reset_restores_the_seeded_state(world):
    venue = world.exchange.state.venue_names()[0]
    before = world.exchange.state.balances(venue)["USDT"].total
    world.exchange.state.credit(venue, "USDT", 500.0)
    world.reset()
    assert world.exchange.state.balances(venue)["USDT"].total == pytest.approx(before)
