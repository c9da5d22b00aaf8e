"""Fix: the Wise recipient lookup follows GET /v2/accounts' seek-position pages, so an existing recipient
beyond the first page is reused (and a timed-out create is reconciled) instead of duplicated.

Against the real Wise simulator over HTTP (no mocks): the simulator pages the listing like Wise
(`size`, default 20; `seekPosition`; `seekPositionForNext` absent on the last page; `sort=id,asc|desc`);
`WiseResource` follows the pages up to `lookup_max_pages` and logs when that bound stops it.
"""

import logging

import httpx
import pytest

from arb_orchestration.resources.resilience import reset_breakers
from arb_orchestration.resources.wise import WiseResource
from arb_orchestration.sim.wise import WiseSimulator

pytestmark = pytest.mark.integration

TOKEN = "recipient-pages-token-51c0"
IBAN = "DE44500105175407324931"
HOLDER = "OKX Europe"


@pytest.fixture
def sim():
    reset_breakers()
    simulator = WiseSimulator(deliver=lambda *a: True, api_token=TOKEN, balances={"EUR": 1_000.0})
    simulator.start()
    # 30 older recipients, the one to reuse, 30 newer ones: it is on no edge page in either order.
    for i in range(30):
        simulator.state.create_recipient(simulator.profile_id, "EUR", f"Old {i}", f"DE{10**19 + i}")
    target = simulator.state.create_recipient(simulator.profile_id, "EUR", HOLDER, IBAN)
    for i in range(30):
        simulator.state.create_recipient(simulator.profile_id, "EUR", f"New {i}", f"DE{2 * 10**19 + i}")
    simulator.target_id = target.id
    yield simulator
    simulator.stop()
    reset_breakers()


def client(sim, **overrides) -> WiseResource:
    config = dict(base_url=sim.url, api_token=TOKEN, profile_id=sim.profile_id, timeout_seconds=2.0,
                  retry_base_delay=0.01, retry_max_delay=0.05, lookup_page_size=10)
    config.update(overrides)
    return WiseResource(**config)


def _recipient_count(sim) -> int:
    return len(sim.state.list_recipients(sim.profile_id, "EUR"))


def test_the_simulator_pages_recipients_by_seek_position():
    sim = WiseSimulator(deliver=lambda *a: True, api_token=TOKEN)
    for i in range(45):
        sim.state.create_recipient(sim.profile_id, "EUR", f"R {i}", f"DE{10**19 + i}")
    sim.start()
    try:
        with httpx.Client(base_url=sim.url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            pages, seek = [], None
            while True:
                params = {"profile": sim.profile_id, "currency": "EUR", **({"seekPosition": seek} if seek else {})}
                body = api.get("/v2/accounts", params=params).json()
                pages.append([r["id"] for r in body["content"]])
                assert body["size"] == len(body["content"]) and body["seekPositionForCurrent"] == pages[-1][0]
                seek = body.get("seekPositionForNext")
                if seek is None:
                    break
            assert [len(p) for p in pages] == [20, 20, 5]  # Wise's default page size
            ids = [i for p in pages for i in p]
            assert ids == sorted(ids) and len(set(ids)) == 45
            newest = api.get("/v2/accounts", params={"profile": sim.profile_id, "size": 7, "sort": "id,desc"}).json()
            assert [r["id"] for r in newest["content"]] == sorted(ids, reverse=True)[:7]
            assert newest["seekPositionForNext"] == sorted(ids, reverse=True)[7]
    finally:
        sim.stop()


def test_a_recipient_beyond_the_first_page_is_reused_not_duplicated(sim):
    before = _recipient_count(sim)
    recipient = client(sim).create_recipient("EUR", IBAN, HOLDER)
    assert recipient.id == sim.target_id
    assert _recipient_count(sim) == before and sim.request_count("create_recipient") == 0
    assert sim.request_count("list_recipients") == 4  # newest first, 10 a page: the 31st newest is on page 4


def test_a_timed_out_create_is_reconciled_from_the_listing(sim):
    sim.set_fault("create_recipient", "timeout_after_commit", count=1)
    before = _recipient_count(sim)
    recipient = client(sim).create_recipient("EUR", "FR7630006000011234567890189", "Kraken EU", reuse=False)
    assert _recipient_count(sim) == before + 1 and sim.request_count("create_recipient") == 1
    assert recipient.account_holder_name == "Kraken EU"


def test_the_lookup_is_bounded_and_says_so(sim, caplog):
    before = _recipient_count(sim)
    with caplog.at_level(logging.WARNING, logger="arb_orchestration.resources.wise"):
        recipient = client(sim, lookup_max_pages=2).create_recipient("EUR", IBAN, HOLDER)
    assert recipient.id != sim.target_id and _recipient_count(sim) == before + 1
    assert sim.request_count("list_recipients") == 2
    assert any("lookup_max_pages" in r.getMessage() and "4931" in r.getMessage() for r in caplog.records)
