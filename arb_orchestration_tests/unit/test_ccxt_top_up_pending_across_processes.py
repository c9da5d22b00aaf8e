"""A withdrawal top-up whose outcome stayed unknown in one process (client A) is resolved, not sent again, by a
retry in another process (client B, a fresh `CcxtVenueClient` on the same exchange) that the saga hands the pending
top-up to (`restore_pending_top_up`, from the `top_up_sending` note it wrote through `withdraw(on_top_up=...)`).

Same recorders as test_ccxt_okx_transfer_client_id.py / test_ccxt_withdraw_wallet.py: the unmodified ccxt class,
only its HTTP layer replaced.

* `on_top_up(event, amount, transfer_id, wallet_before)`: `sending` before the transfer is requested (with the
  OKX clientId and the wallet's balance before), `moved` / `not_moved` once known; nothing more while unknown; a
  callback that raises on `sending` stops the top-up before anything is sent;
* OKX, B told of A's pending top-up: OKX reports `success` -> no second top-up, the withdrawal goes out and B
  reports `moved`; still `pending` -> neither a top-up nor a withdrawal; `failed` -> topped up once, with A's
  clientId;
* Binance, B told of A's pending top-up: the wallet shows it above what it held before -> no second top-up, the
  withdrawal goes out; it does not -> nothing sent, nothing withdrawn (the operator's money is never spent).
"""

from __future__ import annotations

import pytest

from arb_orchestration.resources.ccxt_venue import transfer_client_id
from arb_orchestration.resources.errors import TransientError
from arb_orchestration_tests.unit.test_ccxt_okx_transfer_client_id import TOP_UP, _okx
from arb_orchestration_tests.unit.test_ccxt_withdraw_wallet import ADDRESS, _binance, _client

OPERATOR = 1_000.0  # USDT an operator keeps in the withdrawal wallet, unrelated to the bot
BINANCE_LABEL = transfer_client_id("tu", "top-up", "leg1", "0.00000000")  # Binance sends no id: a label for notes


def _withdraw(client, events: list, key: str = "leg1"):
    return client.withdraw("USDT", 300.0, address=ADDRESS, network="TRC20", idempotency_key=key,
                           on_top_up=lambda *event: events.append(event))


def _okx_pending_in_a(transfer: str):
    """Client A sends the top-up, the answer is lost, OKX keeps reporting it pending: A gives up (unknown)."""
    a, venue = _okx(trading=10_000.0, funding=OPERATOR)
    venue.transfer_script = [transfer]
    venue.state_script = ["pending"] * 3
    events: list = []
    with pytest.raises(TransientError, match="outcome still unknown at OKX"):
        _withdraw(a, events)
    assert events == [("sending", 301.0, TOP_UP, OPERATOR)], "noted before the send, nothing after while unknown"
    assert venue.sent("POST", "/asset/withdrawal") == []
    b = _client("okx", a._exchange, password="p" * 8)  # another process: no memory of A
    b.restore_pending_top_up("leg1", 301.0, TOP_UP, wallet_before=OPERATOR)
    return b, venue


def test_the_ccxt_client_reports_its_top_ups_and_a_one_wallet_setting_does_not():
    client, _venue = _okx()
    assert client.reports_withdrawal_top_ups is True
    one_wallet, _ = _binance(trading=10_000.0, spot=0.0, withdraw_from_account="none")
    assert one_wallet.reports_withdrawal_top_ups is False


def test_okx_events_sending_before_the_transfer_then_moved():
    client, venue = _okx(trading=10_000.0, funding=OPERATOR)
    posts_at_sending: list[int] = []
    events: list = []

    def on_top_up(*event):
        if event[0] == "sending":
            posts_at_sending.append(len(venue.transfer_posts()))
        events.append(event)

    client.withdraw("USDT", 300.0, address=ADDRESS, network="TRC20", idempotency_key="leg1", on_top_up=on_top_up)
    assert posts_at_sending == [0], "noted before the request goes out"
    assert events == [("sending", 301.0, TOP_UP, OPERATOR), ("moved", 301.0, TOP_UP, None)]
    assert client.take_withdrawal_top_up("leg1") == pytest.approx(301.0)


def test_a_callback_that_raises_on_sending_stops_the_top_up_before_anything_is_sent():
    client, venue = _okx(trading=10_000.0, funding=OPERATOR)

    def on_top_up(event, *_):
        raise RuntimeError("claim lost")

    with pytest.raises(RuntimeError, match="claim lost"):
        client.withdraw("USDT", 300.0, address=ADDRESS, network="TRC20", idempotency_key="leg1", on_top_up=on_top_up)
    assert venue.transfer_posts() == [] and venue.sent("POST", "/asset/withdrawal") == []


def test_okx_a_resend_not_applied_either_is_reported_not_moved():
    client, venue = _okx(trading=10_000.0, funding=OPERATOR)
    venue.transfer_script = ["5xx", "5xx"]
    venue.state_script = ["failed", "failed"]
    events: list = []
    with pytest.raises(TransientError, match="not applied after one resend"):
        _withdraw(client, events)
    assert events == [("sending", 301.0, TOP_UP, OPERATOR), ("not_moved", 301.0, TOP_UP, None)]


def test_okx_pending_in_a_that_b_finds_success_is_not_topped_up_again_and_b_withdraws():
    b, venue = _okx_pending_in_a("timeout_after_commit")  # applied; OKX reported it pending to A
    venue.state_script = []  # now OKX reports what it applied: success
    events: list = []
    withdrawal = _withdraw(b, events)
    assert withdrawal.idempotency_key == "leg1"
    assert len(venue.transfer_posts()) == 1, "no second top-up"
    assert venue.state_lookups()[-1] == {"clientId": TOP_UP, "type": "0"}
    assert len(venue.sent("POST", "/asset/withdrawal")) == 1
    assert events == [("moved", 301.0, TOP_UP, None)]
    assert b.take_withdrawal_top_up("leg1") == pytest.approx(301.0)
    assert venue.trading == pytest.approx(10_000.0 - 301.0) and venue.wallet == pytest.approx(OPERATOR)


def test_okx_pending_in_a_still_pending_for_b_neither_tops_up_nor_withdraws():
    b, venue = _okx_pending_in_a("timeout_after_commit")
    venue.state_script = ["pending"]
    events: list = []
    with pytest.raises(TransientError, match="pending at OKX"):
        _withdraw(b, events)
    assert len(venue.transfer_posts()) == 1 and venue.sent("POST", "/asset/withdrawal") == []
    assert events == [] and b.take_withdrawal_top_up("leg1") == 0.0
    assert venue.trading == pytest.approx(10_000.0 - 301.0), "moved once (by A), never twice"


def test_okx_pending_in_a_that_b_finds_failed_is_topped_up_once_with_the_same_client_id():
    b, venue = _okx_pending_in_a("5xx")  # not applied; OKX reported it pending to A, failed now
    venue.state_script = ["failed"]
    events: list = []
    _withdraw(b, events)
    assert [p["clientId"] for p in venue.transfer_posts()] == [TOP_UP, TOP_UP]
    assert len(venue.sent("POST", "/asset/withdrawal")) == 1
    assert events == [("sending", 301.0, TOP_UP, OPERATOR), ("moved", 301.0, TOP_UP, None)]
    assert venue.trading == pytest.approx(10_000.0 - 301.0) and venue.wallet == pytest.approx(OPERATOR)


def test_okx_a_restored_pending_top_up_with_a_withdrawal_already_made_looks_nothing_up():
    b, venue = _okx_pending_in_a("timeout_after_commit")
    venue.state_script = []
    _withdraw(b, [])
    lookups = len(venue.state_lookups())
    c = _client("okx", b._exchange, password="p" * 8)
    c.restore_pending_top_up("leg1", 301.0, TOP_UP, wallet_before=OPERATOR)
    _withdraw(c, [])  # a relaunch: the withdrawal is found by its clientId first
    assert len(venue.state_lookups()) == lookups and len(venue.transfer_posts()) == 1


def _binance_pending_in_a():
    a, venue = _binance(trading=10_000.0, spot=OPERATOR)
    venue.transfer_script = ["5xx"]  # not applied, but a 5xx may have been: unknown to A
    events: list = []
    with pytest.raises(TransientError):
        _withdraw(a, events)
    assert events == [("sending", 301.0, BINANCE_LABEL, OPERATOR)]
    b = _client("binanceusdm", a._exchange)
    b.restore_pending_top_up("leg1", 301.0, BINANCE_LABEL, wallet_before=OPERATOR)
    return b, venue


def _binance_transfers(venue) -> list[float]:
    return [float(body["amount"]) for _q, body in venue.sent("POST", "/sapi/v1/asset/transfer")]


def test_binance_pending_in_a_that_the_wallet_shows_to_b_is_not_topped_up_again():
    b, venue = _binance_pending_in_a()
    venue.trading, venue.wallet = venue.trading - 301.0, venue.wallet + 301.0  # Binance shows it late
    events: list = []
    _withdraw(b, events)
    assert _binance_transfers(venue) == [301.0], "no second top-up"
    assert len(venue.sent("POST", "/sapi/v1/capital/withdraw/apply")) == 1
    assert events == [("moved", 301.0, BINANCE_LABEL, None)]
    assert b.take_withdrawal_top_up("leg1") == pytest.approx(301.0)
    assert venue.wallet == pytest.approx(OPERATOR) and venue.trading == pytest.approx(10_000.0 - 301.0)


def test_binance_pending_in_a_not_shown_to_b_sends_nothing_and_spends_no_operator_money():
    b, venue = _binance_pending_in_a()
    events: list = []
    with pytest.raises(TransientError, match="unknown outcome"):
        _withdraw(b, events)
    assert _binance_transfers(venue) == [301.0] and venue.sent("POST", "/sapi/v1/capital/withdraw/apply") == []
    assert events == [] and venue.wallet == pytest.approx(OPERATOR)


def test_restore_pending_top_up_validates_its_input():
    client, _venue = _okx()
    for bad in (float("nan"), -1.0, 0.0, True):
        with pytest.raises(ValueError):
            client.restore_pending_top_up("leg1", bad, TOP_UP)
    with pytest.raises(ValueError):
        client.restore_pending_top_up("leg1", 301.0, "")


# ------------------------------------------------------------------------------------------------ through the saga step


class _StepContext:
    """What `_create_withdrawals` uses of the engine's step context: keys, the notes of earlier attempts
    (`progress`, read at the start of an attempt) and `note` (durable in the engine; a list here)."""

    def __init__(self, notes: list):
        import logging

        self.notes, self.progress, self.log = notes, list(notes), logging.getLogger("test")

    def key(self, *parts):
        return "leg1"  # the withdrawal key the recorders above expect

    def note(self, **fields):
        self.notes.append(fields)


def _step(client, notes: list):
    from arb_orchestration.defs.rebalance.steps import _create_withdrawals
    from arb_orchestration.domain.rebalance import PlannedTransfer

    leg = PlannedTransfer(index=1, rail="okx->a:USDT:TRC20", kind="withdrawal", from_venue="okx", to_venue="a",
                          asset="USDT", network="TRC20", amount=301.0, fee=1.0, credited=300.0)
    exchange = type("Exchange", (), {"venue": lambda self, name: client})()
    return _create_withdrawals(_StepContext(notes), exchange, [leg], {"1": {"address": ADDRESS}})


def test_the_saga_step_notes_a_pending_okx_top_up_and_a_fresh_client_resolves_it_without_a_second_top_up():
    a, venue = _okx(trading=10_000.0, funding=OPERATOR)
    venue.transfer_script = ["timeout_after_commit"]
    venue.state_script = ["pending"] * 3
    notes: list = []
    with pytest.raises(TransientError):
        _step(a, notes)  # process A: the top-up's outcome stays unknown
    assert notes == [{"top_up_sending": 1, "venue": "okx", "asset": "USDT", "amount": 301.0, "transfer_id": TOP_UP,
                      "wallet_before": OPERATOR}]
    b = _client("okx", a._exchange, password="p" * 8)  # process B
    venue.state_script = ["pending"]
    with pytest.raises(TransientError, match="pending at OKX"):
        _step(b, notes)
    assert len(venue.transfer_posts()) == 1 and venue.sent("POST", "/asset/withdrawal") == []
    c = _client("okx", a._exchange, password="p" * 8)  # process C: OKX now reports what it applied
    venue.state_script = []
    committed = _step(c, notes)
    assert committed["1"]["idempotency_key"] == "leg1"
    assert len(venue.transfer_posts()) == 1, "topped up once over three processes"
    assert len(venue.sent("POST", "/asset/withdrawal")) == 1
    assert [(n["amount"], n["transfer_id"]) for n in notes if "top_up" in n] == [(301.0, TOP_UP)]
    assert venue.trading == pytest.approx(10_000.0 - 301.0) and venue.wallet == pytest.approx(OPERATOR)


def test_without_the_saga_record_a_fresh_client_would_top_up_again():
    """The gap this closes, shown on the client alone: B not told of A's pending top-up moves the money twice."""
    a, venue = _okx(trading=10_000.0, funding=OPERATOR)
    venue.transfer_script = ["timeout_after_commit"]
    venue.state_script = ["pending"] * 3
    with pytest.raises(TransientError):
        _withdraw(a, [])
    venue.state_script = []
    b = _client("okx", a._exchange, password="p" * 8)
    _withdraw(b, [])  # same clientId resent: this recorder applies it again (OKX's duplicate rule is unknown)
    assert len(venue.transfer_posts()) == 2 and venue.trading == pytest.approx(10_000.0 - 2 * 301.0)
