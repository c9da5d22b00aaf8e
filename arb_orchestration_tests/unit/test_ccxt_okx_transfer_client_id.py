"""OKX internal transfers (a withdrawal's top-up, the rebalance sweep) carry a clientId and an ambiguous outcome
is resolved by looking that id up, not by re-reading balances.

Like test_ccxt_withdraw_wallet, each test runs the unmodified ccxt `okx` class and replaces only its HTTP layer
(`Exchange.fetch`) with a recorder that answers like OKX. The requests asserted are the ones ccxt puts on the
wire: `POST /api/v5/asset/transfer` with `clientId` (up to 32 letters/digits, derived from what the transfer is
for), and `GET /api/v5/asset/transfer-state?clientId=...&type=0`. OKX reports `success`, `pending` or `failed`
there, and answers code 58129 for an id it does not know. The cases: `success` counts once and is not resent;
`failed`, or not found after the polling window, is resent exactly once with the same clientId; `pending` is
polled a bounded number of times and stays unknown (nothing withdrawn, nothing resent), and a retry on the same
client resolves it by the id. Binance keeps its balance re-read, and its transfers carry no clientId.
What OKX's API says: docs/ccxt-conformance.md § 5c.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import ccxt
import pytest

from arb_orchestration.resources.ccxt_venue import TRANSFER_NOT_FOUND_GRACE_SECONDS, transfer_client_id
from arb_orchestration.resources.errors import TransientError
from arb_orchestration_tests.unit.test_ccxt_withdraw_wallet import (
    ADDRESS,
    Venue,
    _binance,
    _client,
    _market,
    _okx_answer,
    _real,
)

OKX_CLIENT_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
TOP_UP = transfer_client_id("tu", "top-up", "leg1", "0.00000000")


class Okx(Venue):
    """OKX's side, plus what it records per clientId and the answers its transfer-state lookup plays."""

    def __init__(self, trading: float, funding: float):
        super().__init__(trading, funding)
        self.applied: dict[str, float] = {}  # clientId -> amount of the transfers OKX applied
        # per transfer-state lookup: "success" / "pending" / "failed" / "not_found"; empty: what OKX applied
        self.state_script: list[str] = []

    def transfer_posts(self) -> list[dict[str, Any]]:
        return [body for _query, body in self.sent("POST", "/asset/transfer")]

    def state_lookups(self) -> list[dict[str, Any]]:
        return [query for query, _body in self.sent("GET", "/asset/transfer-state")]


def _answer(venue: Okx) -> Callable[..., Any]:
    base = _okx_answer(venue)

    def answer(method, path, p):
        if path.endswith("/asset/transfer"):
            amount = float(p["amt"])
            to_funding = (p["from"], p["to"]) == ("18", "6")
            assert p.get("type", "0") == "0" and (p["from"], p["to"]) in {("18", "6"), ("6", "18")}
            outcome = venue.transfer_script.pop(0) if venue.transfer_script else "ok"
            if outcome == "5xx":  # not applied, answer lost
                raise ccxt.ExchangeNotAvailable("okx 503 Service Unavailable")
            if outcome == "timeout_lost":  # not applied, timed out
                raise ccxt.RequestTimeout("okx read timeout")
            if to_funding:
                venue.trading, venue.wallet = venue.trading - amount, venue.wallet + amount
            else:
                venue.trading, venue.wallet = venue.trading + amount, venue.wallet - amount
            venue.applied[p["clientId"]] = venue.applied.get(p["clientId"], 0.0) + amount
            if outcome == "timeout_after_commit":  # applied, answer lost
                raise ccxt.RequestTimeout("okx read timeout")
            return {"code": "0", "msg": "", "data": [{"transId": str(700000 + len(venue.applied)), "ccy": "USDT",
                                                      "clientId": p["clientId"], "from": p["from"], "amt": p["amt"],
                                                      "to": p["to"]}]}
        if path.endswith("/asset/transfer-state"):
            client_id = p["clientId"]
            state = venue.state_script.pop(0) if venue.state_script else (
                "success" if client_id in venue.applied else "not_found")
            if state == "not_found":
                raise ccxt.ExchangeError('okx {"code":"58129","msg":"clientId is incorrect","data":[]}')
            amount = venue.applied.get(client_id, 0.0)
            return {"code": "0", "msg": "", "data": [{"amt": f"{amount:.8f}", "ccy": "USDT", "clientId": client_id,
                                                      "from": "18", "to": "6", "instId": "", "toInstId": "",
                                                      "state": state, "subAcct": "", "transId": "700001",
                                                      "type": "0"}]}
        return base(method, path, p)

    return answer


def _okx(trading: float = 10_000.0, funding: float = 50.0):
    venue = Okx(trading, funding)
    market = _market("BTC-USDT-SWAP", contractSize=0.01, precision={"amount": 1, "price": 0.1})
    exchange = _real("okx", market, venue, _answer(venue))
    return _client("okx", exchange, password="p" * 8), venue


def _withdraw(client, key: str = "leg1"):
    return client.withdraw("USDT", 300.0, address=ADDRESS, network="TRC20", idempotency_key=key)


# ------------------------------------------------------------------------------------------------ the id


def test_the_client_id_is_okx_shaped_and_deterministic_per_purpose_and_key():
    assert OKX_CLIENT_ID.match(TOP_UP) and len(TOP_UP) == 32 and TOP_UP.startswith("tu")
    assert transfer_client_id("tu", "top-up", "leg1", "0.00000000") == TOP_UP  # same inputs, same id
    others = {transfer_client_id("tu", "top-up", "leg2", "0.00000000"),
              transfer_client_id("tu", "top-up", "leg1", "301.00000000"),
              transfer_client_id("sw", "sweep", "leg1", 0), TOP_UP}
    assert len(others) == 4
    long_key = "rebalance:" + "x" * 200 + ":withdraw:3:USDT-TRC20"
    assert OKX_CLIENT_ID.match(transfer_client_id("sw", "sweep", long_key, 17))
    with pytest.raises(ValueError):
        transfer_client_id("t-", "x")


def test_a_top_up_carries_its_client_id_on_the_wire_and_looks_nothing_up_when_answered():
    client, venue = _okx()
    _withdraw(client)
    (transfer,) = venue.transfer_posts()
    assert (transfer["from"], transfer["to"], float(transfer["amt"]), transfer["clientId"]) == ("18", "6", 301.0, TOP_UP)
    assert venue.state_lookups() == []
    assert client.take_withdrawal_top_up("leg1") == pytest.approx(301.0)


# ------------------------------------------------------------------------------------------------ top-up outcomes


def test_an_ambiguous_top_up_okx_reports_success_is_counted_once_and_not_resent():
    client, venue = _okx()
    venue.transfer_script = ["timeout_after_commit"]
    withdrawal = _withdraw(client)
    assert len(venue.transfer_posts()) == 1, "a transfer OKX reports success is never resent"
    (lookup,) = venue.state_lookups()
    assert lookup == {"clientId": TOP_UP, "type": "0"}
    assert withdrawal.idempotency_key == "leg1" and len(venue.sent("POST", "/asset/withdrawal")) == 1
    assert client.take_withdrawal_top_up("leg1") == pytest.approx(301.0)
    assert venue.trading == pytest.approx(10_000.0 - 301.0) and venue.wallet == pytest.approx(50.0)


def test_a_top_up_okx_reports_failed_is_resent_exactly_once_with_the_same_client_id():
    client, venue = _okx()
    venue.transfer_script = ["5xx"]
    venue.state_script = ["failed"]
    _withdraw(client)
    posts = venue.transfer_posts()
    assert [p["clientId"] for p in posts] == [TOP_UP, TOP_UP]
    assert [float(p["amt"]) for p in posts] == [301.0, 301.0]
    assert len(venue.state_lookups()) == 1
    assert client.take_withdrawal_top_up("leg1") == pytest.approx(301.0)
    assert venue.trading == pytest.approx(9_699.0) and venue.wallet == pytest.approx(50.0)


def test_a_top_up_okx_never_recorded_is_resent_once_after_the_polling_window_and_the_grace():
    client, venue = _okx()
    slept: list[float] = []
    client._caller.sleep = slept.append  # the retry delays are 0 here: the grace is waited out before the last look
    venue.transfer_script = ["timeout_lost"]  # not applied: OKX answers 58129 for its clientId
    _withdraw(client)
    assert [p["clientId"] for p in venue.transfer_posts()] == [TOP_UP, TOP_UP]
    assert len(venue.state_lookups()) == 3 + 1, "the whole window (max_attempts lookups), then one after the grace"
    assert sum(slept) >= TRANSFER_NOT_FOUND_GRACE_SECONDS
    assert client.take_withdrawal_top_up("leg1") == pytest.approx(301.0)


def test_a_transfer_that_shows_up_pending_is_never_taken_for_not_found():
    client, venue = _okx()
    venue.transfer_script = ["timeout_lost"]
    venue.state_script = ["not_found", "pending", "not_found"]  # an odd answer sequence: not resent on it
    with pytest.raises(TransientError, match="outcome still unknown at OKX"):
        _withdraw(client)
    assert len(venue.transfer_posts()) == 1 and venue.sent("POST", "/asset/withdrawal") == []


def test_a_resend_that_is_not_applied_either_withdraws_nothing_and_sends_no_third_time():
    client, venue = _okx()
    venue.transfer_script = ["5xx", "5xx"]
    venue.state_script = ["failed", "failed"]
    with pytest.raises(TransientError, match="not applied after one resend"):
        _withdraw(client)
    assert len(venue.transfer_posts()) == 2
    assert venue.sent("POST", "/asset/withdrawal") == []
    assert client.take_withdrawal_top_up("leg1") == 0.0
    assert venue.trading == pytest.approx(10_000.0) and venue.wallet == pytest.approx(50.0)


def test_a_pending_top_up_is_polled_a_bounded_number_of_times_then_stays_unknown_and_a_retry_resolves_it():
    client, venue = _okx()
    venue.transfer_script = ["timeout_after_commit"]
    venue.state_script = ["pending"] * 3
    with pytest.raises(TransientError, match="outcome still unknown at OKX"):
        _withdraw(client)
    assert len(venue.state_lookups()) == 3, "bounded: max_attempts lookups"
    assert len(venue.transfer_posts()) == 1, "pending is never resent"
    assert venue.sent("POST", "/asset/withdrawal") == [], "nothing is withdrawn while the top-up is unknown"
    assert client.take_withdrawal_top_up("leg1") == 0.0
    # Still pending on the retry: nothing sent, nothing withdrawn.
    venue.state_script = ["pending"]
    with pytest.raises(TransientError, match="pending at OKX"):
        _withdraw(client)
    assert len(venue.transfer_posts()) == 1 and venue.sent("POST", "/asset/withdrawal") == []
    # Now OKX reports it success: counted at its amount, the withdrawal goes out without a second transfer.
    _withdraw(client)
    assert len(venue.transfer_posts()) == 1
    assert venue.state_lookups()[-1] == {"clientId": TOP_UP, "type": "0"}
    assert len(venue.sent("POST", "/asset/withdrawal")) == 1
    assert client.take_withdrawal_top_up("leg1") == pytest.approx(301.0)
    assert venue.wallet == pytest.approx(50.0)


def test_a_pending_top_up_that_later_failed_is_sent_again_with_the_same_client_id_on_the_retry():
    client, venue = _okx()
    venue.transfer_script = ["5xx"]
    venue.state_script = ["pending"] * 3 + ["failed"]
    with pytest.raises(TransientError):
        _withdraw(client)
    _withdraw(client)
    assert [p["clientId"] for p in venue.transfer_posts()] == [TOP_UP, TOP_UP]
    assert client.take_withdrawal_top_up("leg1") == pytest.approx(301.0)
    assert len(venue.sent("POST", "/asset/withdrawal")) == 1


# ------------------------------------------------------------------------------------------------ the sweep


def _sweep(client, at_most: float, key: str | None = "saga-7:sweep:okx:USDT:0"):
    events: list[tuple[str, float]] = []
    moved = client.sweep_to_trading("USDT", at_most=at_most, on_transfer=lambda e, a: events.append((e, a)),
                                    transfer_key=key)
    return moved, events


def test_sweep_transfers_carry_ids_from_the_transfer_key_and_a_counter():
    client, venue = _okx(trading=100.0, funding=1_000.0)
    moved, events = _sweep(client, 400.0)
    (transfer,) = venue.transfer_posts()
    assert (transfer["from"], transfer["to"], float(transfer["amt"])) == ("6", "18", 400.0)
    assert transfer["clientId"] == transfer_client_id("sw", "sweep", "saga-7:sweep:okx:USDT:0", 0)
    assert OKX_CLIENT_ID.match(transfer["clientId"])
    assert moved == pytest.approx(400.0) and events == [("sending", 400.0), ("moved", 400.0)]
    # Without a key the ids are still OKX-shaped, and differ per call.
    _sweep(client, 10.0, key=None)
    _sweep(client, 10.0, key=None)
    ids = [p["clientId"] for p in venue.transfer_posts()[1:]]
    assert len(set(ids)) == 2 and all(OKX_CLIENT_ID.match(i) for i in ids)


def test_an_ambiguous_sweep_okx_reports_success_is_moved_once():
    client, venue = _okx(trading=100.0, funding=1_000.0)
    venue.transfer_script = ["timeout_after_commit"]
    moved, events = _sweep(client, 400.0)
    assert len(venue.transfer_posts()) == 1 and len(venue.state_lookups()) == 1
    assert moved == pytest.approx(400.0) and events == [("sending", 400.0), ("moved", 400.0)]
    assert venue.wallet == pytest.approx(600.0)


def test_a_sweep_okx_reports_failed_is_resent_once_with_the_same_id():
    client, venue = _okx(trading=100.0, funding=1_000.0)
    venue.transfer_script = ["5xx"]
    venue.state_script = ["failed"]
    moved, events = _sweep(client, 400.0)
    cid = transfer_client_id("sw", "sweep", "saga-7:sweep:okx:USDT:0", 0)
    assert [p["clientId"] for p in venue.transfer_posts()] == [cid, cid]
    assert moved == pytest.approx(400.0) and events == [("sending", 400.0), ("moved", 400.0)]
    assert venue.wallet == pytest.approx(600.0)


def test_a_pending_sweep_stays_unknown_counted_against_the_bound_and_never_resent():
    client, venue = _okx(trading=100.0, funding=1_000.0)
    venue.transfer_script = ["timeout_after_commit"]
    venue.state_script = ["pending"] * 3
    moved, events = _sweep(client, 400.0)
    assert len(venue.transfer_posts()) == 1, "no second transfer: the unknown one used up the bound"
    assert len(venue.state_lookups()) == 3
    assert moved == 0.0 and events == [("sending", 400.0)]  # the caller records it as unknown


# ------------------------------------------------------------------------------------------------ Binance


def test_binance_transfers_carry_no_client_id_and_never_ask_a_transfer_state():
    client, venue = _binance(trading=10_000.0, spot=0.0)
    venue.transfer_script = ["timeout_after_commit"]
    client.withdraw("USDT", 300.0, address=ADDRESS, network="TRC20", idempotency_key="leg1")
    (transfer,) = venue.sent("POST", "/sapi/v1/asset/transfer")
    assert "clientId" not in transfer[1] and "clientTranId" not in transfer[1]
    assert not client.internal_transfer_ids
    assert not any("transfer-state" in p for p in venue.paths())
    # The re-read rule: the spot wallet was read again after the ambiguous transfer.
    assert len(venue.sent("GET", "/api/v3/account")) >= 2
