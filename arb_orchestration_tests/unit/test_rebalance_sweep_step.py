"""The rebalance saga's `sweep_to_trading` step and the pivot compensation's sweep at the sources, on the fakes of
test_rebalance_steps (engine without Dagster), with venues whose deposits and withdrawal top-ups sit in a second
wallet that may also hold an operator's own money.

* forward: each destination venue and asset of a crypto leg that arrived is swept by at most what the legs credited
  there (not the EUR leg, not the sources); an operator's balance in that wallet stays; every transfer is noted in
  the saga log before it is sent and once its outcome is known;
* retries: a transient failure before anything moved sweeps the whole bound again; after a partial sweep only the
  rest; a transfer whose outcome stayed unknown, or that a killed run sent, counts against the bound and is never
  resent (reported as `unconfirmed`);
* compensation: a failed withdrawal's recorded top-up, and no more, goes back at the source; a leg that left took
  its top-up with it (nothing swept); a sweep that fails there is recorded, logged and does not fail the
  compensation.
"""

from __future__ import annotations

import pytest

from arb_orchestration.resources.errors import BusinessError, TransientError
from arb_orchestration.saga import StepRuntime, compensate, execute_step
from arb_orchestration_tests.unit.test_rebalance_steps import SAGA, STEPS, FakeVenue, _config, _run
from arb_orchestration_tests.unit.test_rebalance_steps import world as world  # noqa: F401 (fixture)

OPERATOR = 5_000.0  # an operator's own USDT in a venue's deposit/withdrawal wallet, unrelated to the bot
CREDITED = 8_000.0  # what the plan's b -> a USDT leg credits to a


class Killed(BaseException):
    """The run process dying mid-transfer (SIGKILL): no `except Exception` sees it."""


class TwoWalletVenue(FakeVenue):
    """A FakeVenue whose deposits land in a second wallet (`deposit_wallet`, counted in its balances) until swept,
    and whose withdrawals first top that wallet up by `top_up` (reported by key, like the ccxt client)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.deposit_wallet: dict[str, float] = {}
        self.sweeps: list[tuple[str, float]] = []  # (asset, at_most) per call
        # per sweep call: an Exception raised before anything moves, or "partial", "unknown_applied",
        # "unknown_not_applied", "killed"
        self.script: list = []
        self.top_up = 0.0
        self._top_ups: dict[str, float] = {}

    def fetch_balance(self):
        wallets = dict(self.wallet)
        for asset, amount in self.deposit_wallet.items():
            wallets[asset] = wallets.get(asset, 0.0) + amount
        return FakeVenue.fetch_balance(type("W", (), {"wallet": wallets})())

    def fetch_withdrawal(self, key):
        w = self.withdrawals.get(key)
        if w is not None and w["status"] == "pending" and self.exchange.auto_complete:
            w["status"] = "completed"
            dest = self.exchange.venues[w["to_venue"]].deposit_wallet  # Binance: deposits land in spot
            dest[w["asset"]] = dest.get(w["asset"], 0.0) + w["amount"]
        return None if w is None else self._model(w)

    def withdraw(self, asset, amount, *, address, network, idempotency_key, tag=None):
        if self.top_up and idempotency_key not in self.withdrawals:
            self._shift(asset, self.top_up, into_deposit=True)
            self._top_ups[idempotency_key] = self._top_ups.get(idempotency_key, 0.0) + self.top_up
            if self.fail_withdraw is None:  # the send pays from the withdrawal wallet: the top-up leaves with it
                self._shift(asset, self.top_up, into_deposit=False)  # (FakeVenue's withdraw pays from `wallet`)
        return super().withdraw(asset, amount, address=address, network=network, idempotency_key=idempotency_key,
                                tag=tag)

    def take_withdrawal_top_up(self, idempotency_key):
        return self._top_ups.pop(idempotency_key, 0.0)

    def sweep_to_trading(self, asset, *, at_most, on_transfer=None):
        report = on_transfer or (lambda event, amount: None)
        self.sweeps.append((asset, at_most))
        step = self.script.pop(0) if self.script else None
        if isinstance(step, Exception):
            raise step
        amount = min(at_most, self.deposit_wallet.get(asset, 0.0))
        if amount <= 0:
            return 0.0
        if step == "partial":  # half moves, then the venue goes away
            half = amount / 2
            report("sending", half)
            self._shift(asset, half, into_deposit=False)
            report("moved", half)
            report("sending", half)
            report("not_moved", half)
            raise TransientError("venue down after part of the sweep")
        report("sending", amount)
        if step == "unknown_applied":  # the answer is lost and the wallet never shows it leave (in time)
            self._shift(asset, amount, into_deposit=False)
            return 0.0
        if step == "unknown_not_applied":
            return 0.0
        self._shift(asset, amount, into_deposit=False)
        if step == "killed":
            raise Killed()
        report("moved", amount)
        return amount

    def _shift(self, asset, amount, *, into_deposit):
        src, dst = (self.wallet, self.deposit_wallet) if into_deposit else (self.deposit_wallet, self.wallet)
        src[asset] = src.get(asset, 0.0) - amount
        dst[asset] = dst.get(asset, 0.0) + amount


@pytest.fixture
def two_wallets(world):  # noqa: F811
    exchange = world["exchange"]
    for name, old in list(exchange.venues.items()):
        venue = TwoWalletVenue(exchange, name, old.wallet, old.iban, old.fee)
        exchange.venues[name] = venue
    return world


def _sweep(resources, log, attempt=0):
    return execute_step(SAGA, "sweep_to_trading", StepRuntime("saga-1", log, resources, config=_config(),
                                                             attempt=attempt))


def _with_operator_money(resources, venue="a"):
    """The operator's own USDT in `venue`'s deposit wallet, taken from its trading wallet (the plan is unchanged)."""
    v = resources["exchange"].venues[venue]
    v.wallet["USDT"] -= OPERATOR
    v.deposit_wallet["USDT"] = OPERATOR
    return v


def test_the_step_sweeps_what_arrived_and_leaves_an_operators_balance_alone(two_wallets):
    a = _with_operator_money(two_wallets)
    log = _run(two_wallets, steps=STEPS[:-1])
    assert a.deposit_wallet["USDT"] == pytest.approx(OPERATOR + CREDITED) and all(
        v.sweeps == [] for v in two_wallets["exchange"].venues.values())
    _sweep(two_wallets, log)
    venues = two_wallets["exchange"].venues
    assert (a.sweeps, venues["b"].sweeps, venues["c"].sweeps) == ([("USDT", CREDITED)], [], [])  # not EUR, not sources
    assert a.deposit_wallet["USDT"] == pytest.approx(OPERATOR)  # the operator's money stays where it was
    assert a.wallet["USDT"] == pytest.approx(12_000.0 - OPERATOR)
    state = log.load("saga-1")
    expected = [{"venue": "a", "asset": "USDT", "arrived": CREDITED, "moved": CREDITED}]
    assert state.step("sweep_to_trading").result == {"swept": expected}
    assert state.step("sweep_to_trading").progress == [  # noted before the transfer, and once it moved
        {"venue": "a", "asset": "USDT", "sweep": "sending", "amount": CREDITED},
        {"venue": "a", "asset": "USDT", "sweep": "moved", "amount": CREDITED}]
    [(_step, message, metadata)] = [r for r in two_wallets["rebalance_journal"].reports if r[0] == "sweep_to_trading"]
    assert "a 8000 USDT" in message and metadata["swept"] == expected


def test_a_transient_sweep_failure_before_anything_moved_fails_the_step_and_the_retry_sweeps_the_bound(two_wallets):
    a = _with_operator_money(two_wallets)
    log = _run(two_wallets, steps=STEPS[:-1])
    a.script = [TransientError("venue down")]
    with pytest.raises(TransientError):
        _sweep(two_wallets, log)
    assert not log.load("saga-1").step("sweep_to_trading").done
    _sweep(two_wallets, log, attempt=1)
    assert a.sweeps == [("USDT", CREDITED), ("USDT", CREDITED)] and log.load("saga-1").step("sweep_to_trading").done
    assert a.deposit_wallet["USDT"] == pytest.approx(OPERATOR)


def test_a_retry_after_a_partial_sweep_moves_only_the_rest_of_the_bound(two_wallets):
    a = _with_operator_money(two_wallets)
    log = _run(two_wallets, steps=STEPS[:-1])
    a.script = ["partial"]
    with pytest.raises(TransientError):
        _sweep(two_wallets, log)
    assert a.deposit_wallet["USDT"] == pytest.approx(OPERATOR + CREDITED / 2)
    _sweep(two_wallets, log, attempt=1)
    assert a.sweeps == [("USDT", CREDITED), ("USDT", CREDITED / 2)]  # the retry's bound: what is left of it
    assert a.deposit_wallet["USDT"] == pytest.approx(OPERATOR)
    assert log.load("saga-1").step("sweep_to_trading").result["swept"] == [
        {"venue": "a", "asset": "USDT", "arrived": CREDITED, "moved": CREDITED}]


def test_a_transfer_sent_by_a_killed_run_counts_against_the_bound_and_is_never_resent(two_wallets):
    a = _with_operator_money(two_wallets)
    log = _run(two_wallets, steps=STEPS[:-1])
    a.script = ["killed"]  # the transfer applied; the process died before it learned so
    with pytest.raises(Killed):
        _sweep(two_wallets, log)
    assert a.deposit_wallet["USDT"] == pytest.approx(OPERATOR)
    result = _sweep(two_wallets, log, attempt=1)  # the relaunch
    assert a.sweeps == [("USDT", CREDITED)]  # nothing sent again: the operator's 5,000 were not taken for it
    assert a.deposit_wallet["USDT"] == pytest.approx(OPERATOR)
    assert result["swept"] == [{"venue": "a", "asset": "USDT", "arrived": CREDITED, "moved": 0.0,
                                "unconfirmed": CREDITED}]


@pytest.mark.parametrize("outcome", ["unknown_applied", "unknown_not_applied"])
def test_an_unknown_outcome_is_reported_and_a_re_run_does_not_resend_it(two_wallets, outcome):
    a = _with_operator_money(two_wallets)
    log = _run(two_wallets, steps=STEPS[:-1])
    a.script = [outcome]
    result = _sweep(two_wallets, log)
    assert result["swept"] == [{"venue": "a", "asset": "USDT", "arrived": CREDITED, "moved": 0.0,
                                "unconfirmed": CREDITED}]
    [(_step, message, _metadata)] = [r for r in two_wallets["rebalance_journal"].reports if r[0] == "sweep_to_trading"]
    assert "outcome unknown" in message and "check the wallet" in message
    # A re-execution of the step in a new run (the log says done: recorded result) sends nothing either.
    assert _sweep(two_wallets, log, attempt=1) == result and len(a.sweeps) == 1
    # Conservative both ways: applied, the operator's money is intact; not applied, the deposit stays in the
    # deposit wallet (counted in the balances; a person moves it) rather than risking a second transfer.
    left = OPERATOR if outcome == "unknown_applied" else OPERATOR + CREDITED
    assert a.deposit_wallet["USDT"] == pytest.approx(left)


def test_nothing_to_move_sweeps_nothing(two_wallets):
    for venue in two_wallets["exchange"].venues.values():
        venue.wallet = {"USDT": 20_000.0, "EUR": 10_000.0}  # every venue at its target
    log = _run(two_wallets)
    assert log.load("saga-1").step("sweep_to_trading").result == {"skipped": "nothing to move"}
    assert all(v.sweeps == [] for v in two_wallets["exchange"].venues.values())


@pytest.mark.parametrize("sweep_fails", [False, True])
def test_the_pivots_compensation_moves_back_only_the_failed_withdrawals_top_up(two_wallets, sweep_fails):
    source = _with_operator_money(two_wallets, "b")
    log = _run(two_wallets, steps=STEPS[:2])
    source.top_up = 3_001.0  # the withdrawal wallet lacked 3,001 of the 8,001 the withdrawal pays
    source.fail_withdraw = BusinessError("insufficient balance", code="insufficient_funds")
    if sweep_fails:
        source.script = [TransientError("venue b down")]
    with pytest.raises(BusinessError):
        execute_step(SAGA, "commit_transfers", StepRuntime("saga-1", log, two_wallets, config=_config()))
    commit = log.load("saga-1").step("commit_transfers")
    [note] = [p for p in commit.progress if "top_up" in p]  # recorded although the withdrawal failed
    assert (note["venue"], note["asset"], note["amount"]) == ("b", "USDT", 3_001.0)
    done = compensate(SAGA, "saga-1", log=log, resources=two_wallets, config=_config())
    assert done == ["commit_transfers", "prepare_transfers", "plan_rebalance"]  # never blocked by the sweep
    compensation = log.load("saga-1").step("commit_transfers").compensation
    assert source.sweeps == [("USDT", 3_001.0)]
    if sweep_fails:
        assert "swept" not in compensation
        [failed] = compensation["sweep_failed"]
        assert (failed["venue"], failed["asset"]) == ("b", "USDT") and "venue b down" in failed["error"]
        assert source.deposit_wallet == {"USDT": pytest.approx(OPERATOR + 3_001.0)}
    else:
        assert compensation["swept"] == [{"venue": "b", "asset": "USDT", "moved": 3_001.0}]
        assert source.deposit_wallet == {"USDT": pytest.approx(OPERATOR)}  # the operator's money stays
        assert source.wallet["USDT"] == pytest.approx(60_000.0 - OPERATOR)


def test_a_leg_that_left_took_its_top_up_with_it_nothing_is_swept_back(two_wallets):
    source = _with_operator_money(two_wallets, "b")
    log = _run(two_wallets, steps=STEPS[:2])
    source.top_up = 3_001.0
    two_wallets["wise"].fail_fund = BusinessError("funding refused", code="funding_refused")
    with pytest.raises(BusinessError):
        execute_step(SAGA, "commit_transfers", StepRuntime("saga-1", log, two_wallets, config=_config()))
    compensate(SAGA, "saga-1", log=log, resources=two_wallets, config=_config())
    compensation = log.load("saga-1").step("commit_transfers").compensation
    assert compensation["in_flight"] and "swept" not in compensation
    assert source.sweeps == [] and source.deposit_wallet == {"USDT": pytest.approx(OPERATOR)}


def test_a_withdrawal_without_a_top_up_sweeps_nothing_back(two_wallets):
    source = _with_operator_money(two_wallets, "b")  # the wallet held enough: nothing topped up
    log = _run(two_wallets, steps=STEPS[:2])
    source.fail_withdraw = BusinessError("insufficient balance", code="insufficient_funds")
    with pytest.raises(BusinessError):
        execute_step(SAGA, "commit_transfers", StepRuntime("saga-1", log, two_wallets, config=_config()))
    compensate(SAGA, "saga-1", log=log, resources=two_wallets, config=_config())
    assert source.sweeps == [] and source.deposit_wallet == {"USDT": OPERATOR}
