"""The rebalance saga's steps on fakes, run by the saga engine without Dagster: idempotency keys (stable per
saga, distinct per leg and saga), no duplicate after a retried pivot, the pivot's compensation (cancel what is
pending, report and mail what is gone), guardrail and infeasibility failures before anything moves, dry runs,
and the daily usage read back from the saga log."""

from __future__ import annotations

import itertools

import pytest
from dagster import Failure

from arb_orchestration.defs.rebalance import AUTO_REBALANCE_SAGA, RebalanceConfig, planning
from arb_orchestration.defs.rebalance.journal import past_rebalance
from arb_orchestration.domain.models import Balance, DepositAddress, NetworkFee, Withdrawal
from arb_orchestration.resources.errors import BusinessError, TransientError
from arb_orchestration.resources.wise import (
    CANCELLED,
    SENT,
    WAITING,
    Payment,
    Quote,
    Recipient,
    Transfer,
    customer_transaction_id_for,
)
from arb_orchestration.saga import (
    InMemorySagaLog,
    StepRuntime,
    compensate,
    derive_key,
    execute_step,
    idempotency_key,
)

SAGA = AUTO_REBALANCE_SAGA.definition
STEPS = [s.name for s in SAGA.steps]


class FakeVenue:
    def __init__(self, exchange: "FakeExchange", name: str, balances: dict[str, float], iban: str | None,
                 fee: float = 1.0):
        self.exchange, self.name, self.wallet, self.iban, self.fee = exchange, name, dict(balances), iban, fee
        self.withdrawals: dict[str, dict] = {}
        self.withdraw_calls: list[str] = []
        self.fail_withdraw: Exception | None = None

    def fetch_balance(self):
        return {a: Balance(asset=a, free=v, used=0.0, total=v) for a, v in self.wallet.items()}

    def fetch_deposit_withdraw_fees(self):
        return [NetworkFee(asset="USDT", network="TRC20", fee=self.fee, min_amount=10.0, eta_seconds=1.0)]

    def sweep_to_trading(self, asset, *, at_most, on_transfer=None):
        return 0.0  # one wallet: deposits already land in the trading account (VenueClient's default)

    def take_withdrawal_top_up(self, idempotency_key):
        return 0.0  # one wallet: no top-up (VenueClient's default)

    def fetch_deposit_address(self, asset, network):
        if asset == "EUR":
            if self.iban is None:
                raise BusinessError(f"{self.name} takes no fiat", code="unsupported_network")
            return DepositAddress(venue=self.name, asset=asset, network=network, address=self.iban)
        return DepositAddress(venue=self.name, asset=asset, network=network, address=f"sim:{self.name}:{asset}:{network}")

    def _model(self, w: dict) -> Withdrawal:
        return Withdrawal(**w)

    def withdraw(self, asset, amount, *, address, network, idempotency_key, tag=None):
        self.withdraw_calls.append(idempotency_key)
        if self.fail_withdraw is not None:
            raise self.fail_withdraw
        if idempotency_key in self.withdrawals:
            return self._model(self.withdrawals[idempotency_key])
        if amount + self.fee > self.wallet.get(asset, 0.0):
            raise BusinessError("insufficient_funds")
        self.wallet[asset] -= amount + self.fee
        to_venue = address.split(":")[1]
        self.withdrawals[idempotency_key] = dict(
            id=f"wd-{self.name}-{len(self.withdrawals) + 1}", idempotency_key=idempotency_key, from_venue=self.name,
            address=address, to_venue=to_venue, asset=asset, amount=amount, fee=self.fee, network=network,
            status="pending",
        )
        return self._model(self.withdrawals[idempotency_key])

    def fetch_withdrawal(self, key):
        w = self.withdrawals.get(key)
        if w is not None and w["status"] == "pending" and self.exchange.auto_complete:
            w["status"] = "completed"
            dest = self.exchange.venues[w["to_venue"]].wallet
            dest[w["asset"]] = dest.get(w["asset"], 0.0) + w["amount"]
        return None if w is None else self._model(w)

    def cancel_withdrawal(self, withdrawal_id):
        w = next(w for w in self.withdrawals.values() if w["id"] == withdrawal_id)
        if w["status"] not in ("pending", "canceled"):
            raise BusinessError("not_cancelable")
        if w["status"] == "pending":
            w["status"] = "canceled"
            self.wallet[w["asset"]] += w["amount"] + w["fee"]
        return self._model(w)


class FakeExchange:
    def __init__(self):
        self.auto_complete = True
        self.venues = {
            "a": FakeVenue(self, "a", {"USDT": 4_000.0, "EUR": 1_000.0}, "LT00AAAA"),
            "b": FakeVenue(self, "b", {"USDT": 60_000.0, "EUR": 20_000.0}, "LT00BBBB"),
            "c": FakeVenue(self, "c", {"USDT": 60_000.0}, None, fee=2.0),
        }

    def venue_names(self):
        return list(self.venues)

    def venue(self, name):
        return self.venues[name]

    def withdrawals(self):
        return [w for v in self.venues.values() for w in v.withdrawals.values()]


class FakeWise:
    def __init__(self, exchange: FakeExchange, eur: float = 50_000.0):
        self.exchange, self.balance = exchange, {"EUR": eur}
        self.transfers: dict[int, dict] = {}
        self.quotes: dict[str, float] = {}
        self.ids = itertools.count(1)
        self.fail_fund: Exception | None = None

    def balances(self):
        return dict(self.balance)

    def create_quote(self, source, target, source_amount=None, *, target_amount=None):
        quote_id = f"q{next(self.ids)}"
        if source_amount is None:  # a target-amount quote: the 0.39 fee on top
            source_amount = round(target_amount + 0.39, 2)
        self.quotes[quote_id] = source_amount
        return Quote.model_validate(dict(id=quote_id, sourceCurrency=source, targetCurrency=target,
                                         sourceAmount=source_amount, targetAmount=source_amount - 0.39, rate=1.0,
                                         fee_total=0.39))

    def create_recipient(self, currency, iban, holder, **_):
        return Recipient.model_validate(dict(id=7, accountHolderName=holder, currency=currency, type="iban",
                                             details={"iban": iban}))

    def _model(self, t):
        return Transfer.model_validate(t)

    def create_transfer(self, quote_id, recipient_id, customer_transaction_id, reference=""):
        cti = customer_transaction_id_for(customer_transaction_id)
        for t in self.transfers.values():
            if t["customerTransactionId"] == cti:
                return self._model(t)
        tid = next(self.ids)
        amount = self.quotes[quote_id]
        self.transfers[tid] = dict(id=tid, status=WAITING, targetAccount=recipient_id, quoteUuid=quote_id,
                                   customerTransactionId=cti, sourceCurrency="EUR", sourceValue=amount,
                                   targetCurrency="EUR", targetValue=round(amount - 0.39, 2), reference=reference)
        return self._model(self.transfers[tid])

    def find_transfer(self, key):
        cti = customer_transaction_id_for(key)
        return next((self._model(t) for t in self.transfers.values() if t["customerTransactionId"] == cti), None)

    def get_transfer(self, tid):
        return self._model(self.transfers[tid])

    def fund_transfer(self, tid):
        if self.fail_fund is not None:
            raise self.fail_fund
        t = self.transfers[tid]
        if t["status"] == WAITING:
            self.balance["EUR"] -= t["sourceValue"]
            t["status"] = SENT
            self.exchange.venues["a"].wallet["EUR"] += t["targetValue"]
        return Payment(type="BALANCE", status="COMPLETED")

    def cancel_transfer(self, tid):
        self.transfers[tid]["status"] = CANCELLED
        return self._model(self.transfers[tid])


class FakeJournal:
    def __init__(self, used=None):
        self.used, self.reports = dict(used or {}), []
        self.in_flight = []  # earlier sagas with legs in flight (test_rebalance_in_flight.py reads real logs)

    def used_today(self, *, exclude_saga=None):
        return dict(self.used)

    def legs_in_flight(self, *, lookback_seconds, exclude_saga=None):
        return list(self.in_flight)

    def report(self, step, message, metadata):
        self.reports.append((step, message, metadata))

    def tag_run(self, tags):
        self.tags = {**getattr(self, "tags", {}), **tags}


class FakeMail:
    def __init__(self):
        self.sent = []

    def send(self, subject, body):
        self.sent.append((subject, body))


@pytest.fixture
def world():
    exchange = FakeExchange()
    wise = FakeWise(exchange)
    return {"exchange": exchange, "wise": wise, "smtp": FakeMail(), "rebalance_journal": FakeJournal()}


def _config(**kw):
    base = dict(assets=["USDT", "EUR"], use_market_data_floors=False, poll_interval_seconds=0.001,
                arrival_timeout_seconds=1.0)
    return RebalanceConfig(**{**base, **kw})


def _run(resources, saga_id="saga-1", log=None, config=None, steps=STEPS, attempt=0):
    log = log or InMemorySagaLog()
    for name in steps:
        execute_step(SAGA, name, StepRuntime(saga_id, log, resources, config=config or _config(), attempt=attempt))
    return log


def test_happy_path_on_fakes_moves_each_leg_once_with_keys_derived_from_saga_step_and_leg(world):
    log = _run(world)
    state = log.load("saga-1")
    plan = state.step("plan_rebalance").result
    assert [t["rail"] for t in plan["transfers"]] == ["wise->a:EUR:SEPA", "b->a:USDT:TRC20"]
    usdt = plan["transfers"][1]
    commit_key = idempotency_key("auto_rebalance_saga", "saga-1", "commit_transfers")
    assert [w["idempotency_key"] for w in world["exchange"].withdrawals()] == [
        derive_key(commit_key, "withdraw", usdt["index"], usdt["rail"])
    ]
    eur = plan["transfers"][0]
    prepare_key = idempotency_key("auto_rebalance_saga", "saga-1", "prepare_transfers")
    [transfer] = world["wise"].transfers.values()
    assert transfer["customerTransactionId"] == customer_transaction_id_for(
        derive_key(prepare_key, "wise", eur["index"], eur["rail"])
    )
    assert world["exchange"].venues["a"].wallet == {"USDT": 12_000.0, "EUR": 6_000.0}
    assert all(r["ok"] for r in state.step("verify_balances").result["verified"])
    assert [step for step, _, _ in world["rebalance_journal"].reports] == STEPS


def test_running_a_finished_saga_again_moves_nothing(world):
    log = _run(world)
    _run(world, log=log)  # every step is done in the log: nothing runs again
    assert len(world["exchange"].venues["b"].withdraw_calls) == 1 and len(world["wise"].transfers) == 1


def test_another_saga_uses_other_keys(world):
    _run(world, steps=STEPS[:3])
    other = {"exchange": FakeExchange(), "smtp": FakeMail(), "rebalance_journal": FakeJournal()}
    other["wise"] = FakeWise(other["exchange"])
    _run(other, saga_id="saga-2", steps=STEPS[:3])
    assert world["exchange"].withdrawals()[0]["idempotency_key"] != other["exchange"].withdrawals()[0]["idempotency_key"]


def test_a_pivot_retried_after_a_partial_commit_does_not_withdraw_twice(world):
    log = _run(world, steps=STEPS[:2])
    world["wise"].fail_fund = TransientError("wise 503")
    with pytest.raises(TransientError):
        execute_step(SAGA, "commit_transfers", StepRuntime("saga-1", log, world, config=_config()))
    assert len(world["exchange"].withdrawals()) == 1
    world["wise"].fail_fund = None
    # The funds check must not count the withdrawal that already holds the money.
    execute_step(SAGA, "commit_transfers", StepRuntime("saga-1", log, world, config=_config(), attempt=1))
    assert len(world["exchange"].withdrawals()) == 1
    assert log.load("saga-1").step("commit_transfers").done


def test_pivot_failure_is_compensated_newest_first_pending_withdrawal_and_unfunded_transfer_cancelled(world):
    world["exchange"].auto_complete = False
    log = _run(world, steps=STEPS[:2])
    world["wise"].fail_fund = BusinessError("REJECTED")
    with pytest.raises(BusinessError):
        execute_step(SAGA, "commit_transfers", StepRuntime("saga-1", log, world, config=_config()))
    done = compensate(SAGA, "saga-1", log=log, resources=world, config=_config())
    assert done == ["commit_transfers", "prepare_transfers", "plan_rebalance"]
    assert [w["status"] for w in world["exchange"].withdrawals()] == ["canceled"]
    assert [t["status"] for t in world["wise"].transfers.values()] == [CANCELLED]
    assert world["exchange"].venues["b"].wallet["USDT"] == 60_000.0
    state = log.load("saga-1")
    assert state.step("commit_transfers").compensation == {"cancelled": [1], "not_created": [0], "in_flight": []}
    assert world["smtp"].sent == []


def test_a_leg_that_already_left_is_reported_in_flight_and_mailed(world):
    world["exchange"].auto_complete = False
    log = _run(world, steps=STEPS[:2])
    world["wise"].fail_fund = BusinessError("REJECTED")
    with pytest.raises(BusinessError):
        execute_step(SAGA, "commit_transfers", StepRuntime("saga-1", log, world, config=_config()))
    world["exchange"].withdrawals()[0]["status"] = "broadcast"
    compensate(SAGA, "saga-1", log=log, resources=world, config=_config())
    state = log.load("saga-1")
    assert state.step("commit_transfers").compensation["in_flight"] == [1]
    [(subject, body)] = world["smtp"].sent
    assert "partially committed" in subject and "b->a:USDT:TRC20" in body
    # The leg that left still counts against today's limit; the cancelled Wise leg does not.
    past = past_rebalance(state, since=0.0)
    assert past.rolled_back and 1 in past.committed and 0 in past.cancelled


def prepare_dies_after_the_wise_leg(world) -> InMemorySagaLog:
    """Plan, then prepare_transfers fails (crypto deposit-address endpoint down) after creating the Wise transfer."""
    log = _run(world, steps=STEPS[:1])
    venue = world["exchange"].venues["a"]
    real = venue.fetch_deposit_address

    def crypto_address_down(asset, network):
        if asset != "EUR":
            raise TransientError("deposit-address endpoint down")
        return real(asset, network)

    venue.fetch_deposit_address = crypto_address_down
    with pytest.raises(TransientError):
        execute_step(SAGA, "prepare_transfers", StepRuntime("saga-1", log, world, config=_config()))
    assert [t["status"] for t in world["wise"].transfers.values()] == [WAITING]  # created before the crypto leg
    return log


def test_compensating_a_saga_whose_prepare_never_finished_finds_the_wise_transfer_by_key(world):
    log = prepare_dies_after_the_wise_leg(world)
    compensate(SAGA, "saga-1", log=log, resources=world, config=_config())
    assert [t["status"] for t in world["wise"].transfers.values()] == [CANCELLED]
    assert log.load("saga-1").step("prepare_transfers").compensation["cancelled"] == [0]


@pytest.mark.parametrize(
    "config, used, rule",
    [
        (dict(max_transfer={"USDT": 1_000.0, "EUR": 1e6}), {}, "per_transfer_limit"),
        ({}, {"USDT": 999_000.0}, "daily_limit"),
        # The planner sees only allowed rails (test_rebalance_allowlist_routing.py); the guardrail is the defence in
        # depth behind that filter, so this case hands the planner every rail, as a bug in the filter would.
        (dict(allowed_destinations=["*:SEPA"]), {}, "destination_allowlist"),
    ],
)
def test_a_guardrail_breach_fails_the_plan_naming_the_rule_and_nothing_moves(world, config, used, rule, monkeypatch):
    if rule == "destination_allowlist":
        monkeypatch.setattr(planning, "split_by_allowlist", lambda specs, guardrails: (list(specs), []))
    world["rebalance_journal"].used = used
    with pytest.raises(Failure) as failure:
        _run(world, config=_config(**config), steps=STEPS[:1])
    assert failure.value.metadata["arb/guardrail"].value == rule
    assert failure.value.allow_retries is False
    assert world["exchange"].withdrawals() == [] and world["wise"].transfers == {}


def test_an_infeasible_plan_fails_before_anything_moves(world):
    world["wise"].balance["EUR"] = 100.0
    with pytest.raises(Failure) as failure:
        _run(world, steps=STEPS[:1])
    assert failure.value.metadata["arb/guardrail"].value == "plan_infeasible"
    assert "EUR" in failure.value.description


def test_min_benefit_skips_an_asset_without_failing(world):
    log = _run(world, config=_config(min_deficit={"USDT": 100_000.0, "EUR": 0.0}))
    plan = log.load("saga-1").step("plan_rebalance").result
    assert [t["asset"] for t in plan["transfers"]] == ["EUR"] and "USDT" in plan["skipped"]
    assert world["exchange"].withdrawals() == []


def test_a_dry_run_plans_reports_and_moves_nothing(world):
    log = _run(world, config=_config(dry_run=True))
    state = log.load("saga-1")
    assert state.step("plan_rebalance").result["dry_run"] is True
    assert len(state.step("plan_rebalance").result["transfers"]) == 2
    assert all(state.step(s).result.get("skipped") == "dry run: nothing moves" for s in STEPS[1:])
    assert world["exchange"].withdrawals() == [] and world["wise"].transfers == {}
    assert past_rebalance(state, since=0.0).dry_run


def test_trigger_is_logged_and_recorded(world):
    trigger = {"event_id": "e-7", "kind": "capital_threshold", "payload": {"venue": "a", "asset": "USDT"}}
    log = _run(world, config=_config(dry_run=True, trigger=trigger), steps=STEPS[:1])
    assert log.load("saga-1").step("plan_rebalance").result["trigger"]["event_id"] == "e-7"
    plan_report = world["rebalance_journal"].reports[0][2]
    assert plan_report["trigger"].value["payload"] == {"venue": "a", "asset": "USDT"}


def test_a_leg_cancelled_after_commit_is_a_business_error_in_await(world):
    log = _run(world, steps=STEPS[:3])
    world["exchange"].withdrawals()[0]["status"] = "canceled"
    with pytest.raises(BusinessError, match="after it was committed"):
        execute_step(SAGA, "await_arrival", StepRuntime("saga-1", log, world, config=_config()))


def test_await_times_out_as_a_transient_error_while_legs_are_still_moving(world):
    world["exchange"].auto_complete = False
    log = _run(world, steps=STEPS[:3])
    with pytest.raises(TransientError, match="not arrived"):
        execute_step(SAGA, "await_arrival", StepRuntime("saga-1", log, world, config=_config(arrival_timeout_seconds=0.05)))


def test_a_short_destination_fails_verification_transiently(world):
    log = _run(world, steps=STEPS[:4])
    world["exchange"].venues["a"].wallet["USDT"] -= 500.0
    with pytest.raises(TransientError, match="a USDT"):
        execute_step(SAGA, "verify_balances", StepRuntime("saga-1", log, world, config=_config()))
