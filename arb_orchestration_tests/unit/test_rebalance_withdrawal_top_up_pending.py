"""`commit_transfers` notes every withdrawal top-up before it is sent (`top_up_sending`) and its outcome once known
(`top_up` / `top_up_not_moved`), and on a retry in another process hands a top-up whose outcome stayed unknown back
to the venue (`restore_pending_top_up`), which resolves it before anything is moved again (fakes of
test_rebalance_sweep_step, engine without Dagster; the ccxt client's side: test_ccxt_top_up_pending_across_processes).

* a top-up whose outcome stayed unknown is noted `top_up_sending` only; the retry (a new process: the venue's memory
  is empty) is told of it with its amount, transfer id and the wallet's balance before it;
* the venue finds it moved: nothing topped up again, the withdrawal goes out, `top_up` noted once with its id;
* still unknown: no second top-up, no withdrawal, and the next retry is told again;
* not applied: topped up once more with the same transfer id;
* a pending top-up a later attempt resolved is not handed back as pending; a `not_moved` one never is;
* a venue that does not report its top-ups (one wallet, the older doubles) is called as before.
"""

from __future__ import annotations

import pytest

from arb_orchestration.resources.errors import TransientError
from arb_orchestration.saga import StepRuntime, execute_step
from arb_orchestration_tests.unit.test_rebalance_steps import SAGA, STEPS, _config, _run
from arb_orchestration_tests.unit.test_rebalance_steps import world as world  # noqa: F401 (fixture)
from arb_orchestration_tests.unit.test_rebalance_sweep_step import OPERATOR, TwoWalletVenue, _with_operator_money
from arb_orchestration_tests.unit.test_rebalance_sweep_step import two_wallets as two_wallets  # noqa: F401

LEAVES = 8_001.0  # the leg's amount (credited 8,000 + fee 1): all of it comes from the trading account
TRADING = 60_000.0 - OPERATOR


class ReportingVenue(TwoWalletVenue):
    """Tops the withdrawal wallet up like the ccxt client and reports each top-up through `on_top_up`.

    `outcome`: what the next top-up transfer does: "ok", "unknown_applied" / "unknown_not_applied" (the answer is
    lost and nothing resolves it in this attempt), "refused" (not applied). `resolution`: what looking up a pending top-up finds:
    "moved", "pending", "failed"."""

    reports_withdrawal_top_ups = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.known: dict[str, float] = {}  # confirmed per key: the client's memory, empty in a new process
        self.pending: dict[str, tuple[float, str, float | None]] = {}
        self.restored: list[tuple[str, float]] = []
        self.restored_pending: list[tuple[str, float, str, float | None]] = []
        self.transfers: list[tuple[str, float]] = []  # (transfer id, amount) per top-up request
        self.outcome = "ok"
        self.resolution = "moved"

    def new_process(self):
        self.known.clear()
        self.pending.clear()

    def restore_withdrawal_top_up(self, idempotency_key, amount):
        self.restored.append((idempotency_key, amount))
        self.known[idempotency_key] = max(self.known.get(idempotency_key, 0.0), amount)

    def restore_pending_top_up(self, idempotency_key, amount, transfer_id, *, wallet_before=None):
        self.restored_pending.append((idempotency_key, amount, transfer_id, wallet_before))
        self.pending.setdefault(idempotency_key, (amount, transfer_id, wallet_before))

    def _confirm(self, key, amount, tid, report):
        self._top_ups[key] = self._top_ups.get(key, 0.0) + amount
        self.known[key] = self.known.get(key, 0.0) + amount
        report("moved", amount, tid, None)

    def _send(self, asset, key, amount, tid, report):
        report("sending", amount, tid, self.deposit_wallet.get(asset, 0.0))
        self.transfers.append((tid, amount))
        outcome, self.outcome = self.outcome, "ok"
        if outcome == "refused":
            report("not_moved", amount, tid, None)
            raise TransientError("top-up refused before it was applied (connect error)")
        if outcome in ("unknown_applied", "unknown_not_applied"):
            if outcome == "unknown_applied":
                self._shift(asset, amount, into_deposit=True)
            self.pending[key] = (amount, tid, None)
            raise TransientError("top-up outcome unknown; nothing withdrawn")
        self._shift(asset, amount, into_deposit=True)
        self._confirm(key, amount, tid, report)

    def withdraw(self, asset, amount, *, address, network, idempotency_key, tag=None, on_top_up=None):
        report = on_top_up or (lambda *event: None)
        key = idempotency_key
        if key not in self.withdrawals:
            if key in self.pending:
                pending_amount, tid, _before = self.pending[key]
                if self.resolution == "pending":
                    raise TransientError("the earlier top-up is still pending; nothing sent, nothing withdrawn")
                del self.pending[key]
                if self.resolution == "moved":
                    self._confirm(key, pending_amount, tid, report)
                else:  # failed: sent once more with the same id
                    self._send(asset, key, pending_amount, tid, report)
            rest = LEAVES - self.known.get(key, 0.0)
            if rest > 0:
                self._send(asset, key, rest, f"t{self.known.get(key, 0.0):.0f}", report)
            if self.fail_withdraw is None:  # the send pays the whole top-up out of the withdrawal wallet
                self._shift(asset, LEAVES, into_deposit=False)
        self.top_up = 0.0  # (TwoWalletVenue's own top-up stays off)
        return super().withdraw(asset, amount, address=address, network=network, idempotency_key=key, tag=tag)


@pytest.fixture
def reporting(two_wallets):  # noqa: F811
    exchange = two_wallets["exchange"]
    old = exchange.venues["b"]
    exchange.venues["b"] = ReportingVenue(exchange, "b", old.wallet, old.iban, old.fee)
    return two_wallets


def _commit(resources, log, attempt):
    return execute_step(SAGA, "commit_transfers", StepRuntime("saga-1", log, resources, config=_config(),
                                                             attempt=attempt))


def _notes(log, kind):
    return [dict(p) for p in log.load("saga-1").step("commit_transfers").progress if kind in p]


def _pending_after_first_attempt(resources, outcome):
    source = _with_operator_money(resources, "b")
    log = _run(resources, steps=STEPS[:2])
    source.outcome = outcome
    with pytest.raises(TransientError):
        _commit(resources, log, attempt=0)
    [sending] = _notes(log, "top_up_sending")
    assert (sending["venue"], sending["asset"], sending["amount"], sending["transfer_id"],
            sending["wallet_before"]) == ("b", "USDT", LEAVES, "t0", OPERATOR)
    assert _notes(log, "top_up") == [] and source.withdrawals == {}
    source.new_process()
    return source, log


def test_a_pending_top_up_found_moved_by_the_retry_is_not_topped_up_again(reporting):
    source, log = _pending_after_first_attempt(reporting, "unknown_applied")
    source.resolution = "moved"
    _commit(reporting, log, attempt=1)
    [key] = source.withdrawals
    assert source.restored_pending == [(key, LEAVES, "t0", OPERATOR)] and source.restored == []
    assert source.transfers == [("t0", LEAVES)], "topped up once"
    [top_up] = _notes(log, "top_up")
    assert (top_up["amount"], top_up["transfer_id"]) == (LEAVES, "t0")
    assert source.wallet["USDT"] == pytest.approx(TRADING - LEAVES)
    assert source.deposit_wallet["USDT"] == pytest.approx(OPERATOR)


def test_a_top_up_still_pending_on_the_retry_is_neither_resent_nor_withdrawn_and_handed_back_again(reporting):
    source, log = _pending_after_first_attempt(reporting, "unknown_applied")
    source.resolution = "pending"
    with pytest.raises(TransientError, match="still pending"):
        _commit(reporting, log, attempt=1)
    assert source.transfers == [("t0", LEAVES)] and source.withdrawals == {}
    source.new_process()
    source.resolution = "moved"
    _commit(reporting, log, attempt=2)
    assert [r[2] for r in source.restored_pending] == ["t0", "t0"]
    assert source.transfers == [("t0", LEAVES)] and len(source.withdrawals) == 1
    assert source.wallet["USDT"] == pytest.approx(TRADING - LEAVES)


def test_a_pending_top_up_that_was_not_applied_is_sent_once_more_with_its_id(reporting):
    source, log = _pending_after_first_attempt(reporting, "unknown_not_applied")
    source.resolution = "failed"
    _commit(reporting, log, attempt=1)
    assert source.transfers == [("t0", LEAVES), ("t0", LEAVES)]
    assert [(n["amount"], n["transfer_id"]) for n in _notes(log, "top_up")] == [(LEAVES, "t0")]
    assert source.wallet["USDT"] == pytest.approx(TRADING - LEAVES) and len(source.withdrawals) == 1


def test_a_pending_top_up_a_later_attempt_resolved_is_restored_as_confirmed_not_pending(reporting):
    source, log = _pending_after_first_attempt(reporting, "unknown_applied")
    source.resolution = "moved"
    source.fail_withdraw = TransientError("venue b: withdraw/apply 503, not applied")
    with pytest.raises(TransientError):
        _commit(reporting, log, attempt=1)
    assert [n["transfer_id"] for n in _notes(log, "top_up")] == ["t0"]
    source.new_process()
    source.restored_pending.clear()
    source.fail_withdraw = None
    _commit(reporting, log, attempt=2)
    [key] = source.withdrawals
    assert source.restored_pending == [] and source.restored == [(key, LEAVES)]
    assert source.transfers == [("t0", LEAVES)]
    assert [n["amount"] for n in _notes(log, "top_up")] == [LEAVES], "noted once, not again by take_withdrawal_top_up"


def test_a_refused_top_up_is_noted_not_moved_and_never_handed_back(reporting):
    source = _with_operator_money(reporting, "b")
    log = _run(reporting, steps=STEPS[:2])
    source.outcome = "refused"
    with pytest.raises(TransientError, match="refused"):
        _commit(reporting, log, attempt=0)
    [not_moved] = _notes(log, "top_up_not_moved")
    assert (not_moved["amount"], not_moved["transfer_id"]) == (LEAVES, "t0")
    source.new_process()
    _commit(reporting, log, attempt=1)
    assert source.restored_pending == [] and source.restored == []
    assert len(source.withdrawals) == 1 and source.wallet["USDT"] == pytest.approx(TRADING - LEAVES)


def test_a_venue_that_does_not_report_top_ups_is_called_without_the_callback(two_wallets):  # noqa: F811
    source = two_wallets["exchange"].venues["b"]
    source.top_up = LEAVES  # TwoWalletVenue.withdraw takes no on_top_up: passing it would raise TypeError
    log = _run(two_wallets, steps=STEPS[:3])
    assert len(source.withdrawals) == 1
    assert [n["amount"] for n in _notes(log, "top_up")] == [LEAVES]
    assert _notes(log, "top_up_sending") == []
