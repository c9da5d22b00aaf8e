"""The payment reference of a rebalance's Wise leg: the destination venue's own deposit reference when it
needs one (`CCXT_VENUES[<venue>].fiat_deposit_references`), else ours, fitted to what Wise takes for the
currency (EUR 35, GBP 16, USD 10 characters: docs/wise-api-conformance.md, T4)."""

from __future__ import annotations

import json

import pytest

from arb_orchestration import settings
from arb_orchestration.domain.models import DepositAddress
from arb_orchestration.domain.rebalance import wise_reference, wise_reference_limit, wise_reference_problem
from arb_orchestration.resources.ccxt_venue import CcxtVenueClient, CcxtVenueConfig, ccxt_exchange_from_env
from arb_orchestration.saga import InMemorySagaLog
from arb_orchestration_tests.unit.test_rebalance_steps import _run, world  # noqa: F401 (fixture)

SAGA_ID = "3f9c2b7a-1d4e-4c1b-9a77-0d1e2f3a4b5c"


def test_our_reference_fits_every_currency_and_keeps_the_leg_number():
    assert wise_reference(SAGA_ID, 0, "EUR") == "rebalance 3f9c2b7a-0"
    assert wise_reference(SAGA_ID, 3, "GBP") == "3f9c2b7a-3"  # "rebalance 3f9c2b7a-3" is 20 > 16
    assert wise_reference(SAGA_ID, 3, "USD") == "3f9c2b7a-3"  # exactly 10
    assert wise_reference(SAGA_ID, 12, "USD") == "3f9c2b7-12"  # the saga part gives way, the leg stays
    assert wise_reference(SAGA_ID, 12, "CHF") == "3f9c2b7-12"  # unlisted: the shortest known limit
    for currency in ("EUR", "GBP", "USD", "SEK", "CHF"):
        for leg in (0, 9, 10, 123):
            ref = wise_reference(SAGA_ID, leg, currency)
            assert len(ref) <= wise_reference_limit(currency) and ref.endswith(f"-{leg}")


def test_a_venue_reference_is_sent_as_it_is_or_refused_never_cut():
    assert wise_reference(SAGA_ID, 1, "EUR", "BNB8F3K2QZ") == "BNB8F3K2QZ"
    with pytest.raises(ValueError, match="Wise takes at most 10 for USD"):
        wise_reference(SAGA_ID, 1, "USD", "KRAKEN-REF-12345")
    assert wise_reference_problem("", "EUR") == "must be a non-empty string"
    assert "printable ASCII" in wise_reference_problem("réf", "EUR")
    assert wise_reference_problem("A" * 35, "EUR") is None
    assert wise_reference_problem("A" * 36, "EUR") is not None


def _client(**kw) -> CcxtVenueClient:
    return CcxtVenueClient(CcxtVenueConfig(name="kraken", exchange_id="krakenfutures", **kw))


def test_the_fiat_deposit_address_carries_the_venues_reference_as_its_tag():
    client = _client(fiat_deposit_addresses={"EUR:SEPA": "LT601010012345678901"},
                     fiat_deposit_references={"EUR:SEPA": "KRK7Q2M"})
    try:
        address = client.fetch_deposit_address("EUR", "SEPA")
    finally:
        client.close()
    assert (address.address, address.tag) == ("LT601010012345678901", "KRK7Q2M")


@pytest.mark.parametrize(
    ("references", "message"),
    [
        ({"GBP:FPS": "X1"}, "no fiat_deposit_addresses entry for 'GBP:FPS'"),
        ({"EUR:SEPA": "R" * 36}, "Wise takes at most 35 for EUR"),
    ],
)
def test_a_bad_reference_fails_the_load_naming_the_field(monkeypatch, references, message):
    monkeypatch.setenv("EXCHANGE_VENUES", "kraken")
    monkeypatch.setenv("CCXT_VENUES", json.dumps({"kraken": {
        "fiat_deposit_addresses": {"EUR:SEPA": "LT601010012345678901"}, "fiat_deposit_references": references}}))
    with pytest.raises(settings.SettingError, match=r"CCXT_VENUES\[kraken\]\.fiat_deposit_references\.") as err:
        ccxt_exchange_from_env("local")
    assert message in str(err.value)
    with pytest.raises(ValueError, match=r"kraken: fiat_deposit_references\."):
        _client(fiat_deposit_addresses={"EUR:SEPA": "LT601010012345678901"}, fiat_deposit_references=references)


def test_the_saga_sends_the_venues_reference_to_wise(world):  # noqa: F811 (fixture)
    venue = world["exchange"].venues["a"]
    real = venue.fetch_deposit_address

    def with_reference(asset, network):
        address = real(asset, network)
        return DepositAddress(**{**address.model_dump(), "tag": "VENUE-REF-1" if asset == "EUR" else None})

    venue.fetch_deposit_address = with_reference
    log = _run(world, saga_id=SAGA_ID, log=InMemorySagaLog())
    [transfer] = world["wise"].transfers.values()
    assert transfer["reference"] == "VENUE-REF-1"
    legs = log.load(SAGA_ID).step("prepare_transfers").result["legs"]
    assert [leg.get("reference") for leg in legs.values() if "wise_transfer_id" in leg] == ["VENUE-REF-1"]


def test_without_a_venue_reference_the_saga_sends_ours(world):  # noqa: F811 (fixture)
    _run(world, saga_id=SAGA_ID, log=InMemorySagaLog())
    [transfer] = world["wise"].transfers.values()
    assert transfer["reference"].startswith("rebalance 3f9c2b7a-")


def test_a_venue_reference_wise_cannot_carry_fails_before_anything_is_created(world):  # noqa: F811 (fixture)
    venue = world["exchange"].venues["a"]
    real = venue.fetch_deposit_address
    venue.fetch_deposit_address = lambda asset, network: DepositAddress(
        **{**real(asset, network).model_dump(), "tag": "R" * 40 if asset == "EUR" else None})
    log = InMemorySagaLog()
    _run(world, saga_id=SAGA_ID, log=log, steps=["plan_rebalance"])
    quotes_of_the_plan = dict(world["wise"].quotes)  # planning prices the Wise rail with quotes
    with pytest.raises(Exception, match="Wise takes at most 35 for EUR"):
        _run(world, saga_id=SAGA_ID, log=log, steps=["prepare_transfers"])
    assert world["wise"].transfers == {} and world["wise"].quotes == quotes_of_the_plan
