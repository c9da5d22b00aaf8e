"""The pivot compensation's sweep at the sources (`cancel_uncommitted` -> `_sweep_sources`) run again after the
compensating process died: it notes every transfer as its own progress (`ctx.note`), so a rerun never sweeps the
recorded top-up twice and an operator's own money in the withdrawal wallet stays (fakes of
test_rebalance_sweep_step, engine without Dagster).

* killed after its sweep moved the top-up back and before the compensation's result was recorded: the rerun moves
  nothing (no sweep call at all) and records what the first attempt moved;
* killed after a transfer was sent and before its outcome was known: counted as moved, never resent, reported as
  `unconfirmed`;
* killed after half of it moved: the rerun moves only the rest; a venue with transfer client ids (OKX) gets a
  transfer key per attempt that no later attempt reuses;
* a compensating actor that lost the saga's claim writes no note and so sends nothing, and records no failure.
"""

from __future__ import annotations

import pytest

from arb_orchestration.resources.errors import BusinessError
from arb_orchestration.saga import ClaimLostError, InMemorySagaLog, RecordKind, StepRuntime, compensate, execute_step
from arb_orchestration_tests.unit.test_rebalance_steps import SAGA, STEPS, _config, _run
from arb_orchestration_tests.unit.test_rebalance_steps import world as world  # noqa: F401 (fixture)
from arb_orchestration_tests.unit.test_rebalance_sweep_step import OPERATOR, Killed, TwoWalletVenue
from arb_orchestration_tests.unit.test_rebalance_sweep_step import two_wallets as two_wallets  # noqa: F401

TOP_UP = 3_001.0  # what the failed withdrawal moved into b's withdrawal wallet (recorded by commit_transfers)
TRADING = 60_000.0  # b's trading wallet in the fake world, before the operator's money was set aside


class DyingVenue(TwoWalletVenue):
    """`die`: "after_sweep" (the transfer moved and was reported, then the process dies), "after_half" (half
    moved and reported, then it dies); anything else behaves as TwoWalletVenue. Records `transfer_key`s."""

    internal_transfer_ids = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.die: str | None = None
        self.transfer_keys: list[str | None] = []

    def sweep_to_trading(self, asset, *, at_most, on_transfer=None, transfer_key=None):
        self.transfer_keys.append(transfer_key)
        die, self.die = self.die, None
        if die == "after_half":
            self.sweeps.append((asset, at_most))
            half = min(at_most, self.deposit_wallet.get(asset, 0.0)) / 2
            on_transfer("sending", half)
            self._shift(asset, half, into_deposit=False)
            on_transfer("moved", half)
            raise Killed()
        moved = super().sweep_to_trading(asset, at_most=at_most, on_transfer=on_transfer)
        if die == "after_sweep":
            raise Killed()
        return moved


@pytest.fixture
def failed_withdrawal(two_wallets):  # noqa: F811
    """commit_transfers failed at b's withdrawal after topping b's withdrawal wallet up by TOP_UP (recorded);
    the operator's own OPERATOR USDT sits in that wallet too."""
    exchange = two_wallets["exchange"]
    old = exchange.venues["b"]
    source = exchange.venues["b"] = DyingVenue(exchange, "b", old.wallet, old.iban, old.fee)
    source.wallet["USDT"] -= OPERATOR
    source.deposit_wallet["USDT"] = OPERATOR
    log = _run(two_wallets, steps=STEPS[:2])
    source.top_up = TOP_UP
    source.fail_withdraw = BusinessError("insufficient balance", code="insufficient_funds")
    with pytest.raises(BusinessError):
        execute_step(SAGA, "commit_transfers", StepRuntime("saga-1", log, two_wallets, config=_config()))
    assert source.deposit_wallet["USDT"] == pytest.approx(OPERATOR + TOP_UP)
    return two_wallets, source, log


def _compensate(resources, log):
    return compensate(SAGA, "saga-1", log=log, resources=resources, config=_config())


def _sweep_notes(log):
    return [(n["sweep"], n["amount"]) for n in log.load("saga-1").step("commit_transfers").compensation_progress]


def test_a_compensation_killed_after_its_sweep_moves_nothing_more_on_rerun(failed_withdrawal):
    resources, source, log = failed_withdrawal
    source.die = "after_sweep"
    with pytest.raises(Killed):
        _compensate(resources, log)
    assert source.deposit_wallet["USDT"] == pytest.approx(OPERATOR)  # the top-up went back ...
    state = log.load("saga-1").step("commit_transfers")
    assert not state.compensated and state.compensation_failures == 0  # ... and nothing says so but the notes
    assert _sweep_notes(log) == [("sending", TOP_UP), ("moved", TOP_UP)]

    done = _compensate(resources, log.bind("run-2"))  # another actor, another run: the recovery sweep
    assert done == ["commit_transfers", "prepare_transfers", "plan_rebalance"]
    assert source.sweeps == [("USDT", TOP_UP)]  # no second sweep call: nothing left of the bound
    assert source.deposit_wallet["USDT"] == pytest.approx(OPERATOR)  # the operator's money: untouched
    assert source.wallet["USDT"] == pytest.approx(TRADING - OPERATOR)  # the top-up is back, once
    compensation = log.load("saga-1").step("commit_transfers").compensation
    assert compensation["swept"] == [{"venue": "b", "asset": "USDT", "moved": TOP_UP}]
    assert "sweep_failed" not in compensation


def test_a_transfer_sent_by_a_killed_compensation_is_never_resent(failed_withdrawal):
    resources, source, log = failed_withdrawal
    source.script = ["killed"]  # sent (and applied), then the process died before the answer
    with pytest.raises(Killed):
        _compensate(resources, log)
    assert _sweep_notes(log) == [("sending", TOP_UP)]
    _compensate(resources, log.bind("run-2"))
    assert source.sweeps == [("USDT", TOP_UP)]
    assert source.deposit_wallet["USDT"] == pytest.approx(OPERATOR)
    compensation = log.load("saga-1").step("commit_transfers").compensation
    assert compensation["swept"] == [{"venue": "b", "asset": "USDT", "moved": 0.0, "unconfirmed": TOP_UP}]


def test_a_compensation_killed_after_half_its_sweep_moves_only_the_rest_on_rerun(failed_withdrawal):
    resources, source, log = failed_withdrawal
    source.internal_transfer_ids = True  # OKX: each attempt's transfers get ids from a key no later attempt reuses
    source.die = "after_half"
    with pytest.raises(Killed):
        _compensate(resources, log)
    _compensate(resources, log.bind("run-2"))
    assert source.sweeps == [("USDT", TOP_UP), ("USDT", TOP_UP / 2)]
    assert source.deposit_wallet["USDT"] == pytest.approx(OPERATOR)
    assert source.wallet["USDT"] == pytest.approx(TRADING - OPERATOR)
    assert _sweep_notes(log) == [("sending", TOP_UP / 2), ("moved", TOP_UP / 2),
                                 ("sending", TOP_UP / 2), ("moved", TOP_UP / 2)]
    first, second = source.transfer_keys
    assert first and second and first != second
    compensation = log.load("saga-1").step("commit_transfers").compensation
    assert compensation["swept"] == [{"venue": "b", "asset": "USDT", "moved": TOP_UP}]


class LostClaimLog(InMemorySagaLog):
    """A compensating actor's fenced log after its claim was taken over: every write raises, nothing is written."""

    def append(self, record, *, error=None):
        if record.kind is RecordKind.COMPENSATION_PROGRESS:
            raise ClaimLostError("saga saga-1: the claim is held by sensor thief")
        super().append(record, error=error)


def test_a_compensation_that_lost_its_claim_sends_nothing_and_records_nothing(failed_withdrawal):
    resources, source, log = failed_withdrawal
    lost = LostClaimLog("run-2", log._store)
    with pytest.raises(ClaimLostError):
        _compensate(resources, lost)
    assert source.deposit_wallet["USDT"] == pytest.approx(OPERATOR + TOP_UP)  # not sent: the note comes first
    state = log.load("saga-1").step("commit_transfers")
    assert state.compensation_progress == [] and state.compensation_failures == 0 and not state.compensated
