"""A rerun of the hedge's unwind compensation never sends an unwind order twice.

`unwind_hedge_orders` notes each unwind order before sending it (`sending`) and its outcome after. Alpha holds
a short of its own (1 BTC) before the hedge adds 2/3 BTC to it, so an unwind sent twice would close a third of
a BTC the hedge never opened. Covered:

* the compensating actor killed between send and outcome, the venue having forgotten the client order id (and
  no order history): the rerun sends nothing, fails loudly naming the order (mail included);
* the same with the venue still finding the order (by client order id, or only in its order history): the
  rerun records the outcome and completes, no second order;
* an unwind that never reached the venue (5xx, nothing applied): sent again once when the order history shows
  the leg but not the unwind; not sent when the history does not reach back to the leg;
* a rerun after a recorded outcome makes no request at all for that leg;
* a refused unwind (nothing placed) is sent again by the rerun, once;
* the notes the normal path writes;
* an opening leg the venue forgot is unwound from the fill the step noted.
"""

from __future__ import annotations

import pytest

from arb_orchestration.defs.hedging import HEDGE_SAGA, HedgeConfig
from arb_orchestration.defs.hedging.journal import InMemoryHedgeJournal
from arb_orchestration.defs.hedging import steps as hedge_steps
from arb_orchestration.defs.hedging.steps import PLACE, PLAN, HedgeLegRejected, UnwindOutcomeUnknown, unwind_ledger
from arb_orchestration.resources.errors import AmbiguousOutcomeError, BusinessError
from arb_orchestration.saga import (
    Action,
    CompensationFailedError,
    InMemorySagaLog,
    InMemoryTradingSwitch,
    StepRuntime,
    execute_step,
    on_step_failure,
)
from arb_orchestration_tests.unit.test_hedge_job_fakes import BTC, StateVenue, World, venue_spec

SAGA = HEDGE_SAGA.definition
PAIR = HedgeConfig(max_notional_per_market_usd=40_000.0, hedge_assets=["BTC"])
OWN_SHORT = -1.0  # alpha's short before the hedge: not the hedge's to close
LEG = 2 / 3


@pytest.fixture(autouse=True)
def _no_grace(monkeypatch):
    """Reruns here come right after the kill; the 5 s wait before judging an order absent is not under test."""
    monkeypatch.setattr(hedge_steps, "UNWIND_ABSENT_GRACE_SECONDS", 0.0)


class Killed(BaseException):
    """The compensating actor dying (SIGKILL): no `except Exception` sees it, nothing more is recorded."""


class HistoryVenue(StateVenue):
    """A venue client that also lists its order history (`fetch_orders`), like the simulator's HTTP client."""

    def fetch_orders(self, symbol=None):
        return self._call("fetch_orders", lambda: self.state.orders(self.name, "all", symbol), symbol=symbol)


class ShortHistoryVenue(StateVenue):
    """Order history that covers recent orders only (none from before the unwind)."""

    def fetch_orders(self, symbol=None):
        return self._call("fetch_orders", lambda: [o for o in self.state.orders(self.name, "all", symbol)
                                                   if o.reduce_only], symbol=symbol)


class KillAfterNote(InMemorySagaLog):
    """Dies right after durably writing the compensation note `event` (the next statement never runs)."""

    def __init__(self, event: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.event = event

    def append(self, record, *, error=None):
        super().append(record, error=error)
        if record.data.get("unwind") == self.event:
            raise Killed()


def _failed_pair(history: type[StateVenue] | None = None):
    """Leg 0 (alpha, sell 2/3 BTC onto its own 1 BTC short) filled, leg 1 (beta) refused: the step failed."""
    world = World([
        venue_spec("alpha", btc_funding=0.0005, balances={"USDT": 500_000.0, "BTC": 2.0},
                   positions=[(BTC, "short", 1.0, 60_000.0)]),
        venue_spec("beta", btc_funding=0.0004),
        venue_spec("gamma", btc_funding=0.0001),
    ])
    if history is not None:
        world.venues["alpha"] = history("alpha", world.state)
    world.venue("beta").fail_on("create_order", BusinessError("insufficient margin", code="insufficient_margin"))
    log = InMemorySagaLog()
    rt = StepRuntime(saga_id="saga-1", log=log, resources={"exchange": world, "hedge_journal": InMemoryHedgeJournal()},
                     config=PAIR, run_id=log.run_id, attempt=0, trading_switch=InMemoryTradingSwitch())
    execute_step(SAGA, PLAN, rt)
    with pytest.raises(HedgeLegRejected) as failed:
        execute_step(SAGA, PLACE, rt)
    assert world.venue("alpha").position(BTC) == pytest.approx(OWN_SHORT - LEG)
    return world, log, failed.value


def _compensate(world, log, error, mail=None):
    alert = (lambda subject, body: mail.append((subject, body))) if mail is not None else None
    return on_step_failure(SAGA, "saga-1", PLACE, error, log=log, resources={"exchange": world}, alert=alert,
                           config=PAIR)


def _unwinds(venue: StateVenue) -> list[dict]:
    return [c for c in venue.creates() if c["reduce_only"]]


def _kill_between_send_and_outcome(world, log, error) -> str:
    """The first attempt sends the unwind (the venue fills it) and dies before noting the outcome."""
    alpha = world.venue("alpha")
    alpha.fail_on("create_order", Killed(), after_apply=True, match=lambda kwargs: kwargs.get("reduce_only") is True)
    with pytest.raises(Killed):
        _compensate(world, log, error)
    assert alpha.position(BTC) == pytest.approx(OWN_SHORT)  # the unwind did fill
    notes = log.load("saga-1").step(PLACE).compensation_progress
    assert [n["unwind"] for n in notes] == ["sending"]  # outcome never recorded
    sending = notes[0]
    assert (sending["venue"], sending["symbol"], sending["side"], sending["leg"]) == ("alpha", BTC, "buy", 0)
    assert sending["amount"] == pytest.approx(LEG)
    return sending["client_order_id"]


def _forget(world, venue: str, client_order_id: str) -> None:
    """The venue no longer finds the order by its client order id (Kraken Futures: recent orders only)."""
    world.state._venue(venue).by_client_id.pop(client_order_id)


def test_a_rerun_after_a_kill_with_the_id_forgotten_sends_nothing_and_fails_naming_the_order():
    world, log, error = _failed_pair()
    ucid = _kill_between_send_and_outcome(world, log, error)
    _forget(world, "alpha", ucid)
    alpha = world.venue("alpha")
    mail: list[tuple[str, str]] = []

    with pytest.raises(CompensationFailedError) as failed:
        _compensate(world, log, error, mail)

    cause = failed.value.__cause__
    assert isinstance(cause, UnwindOutcomeUnknown)
    assert ucid in str(cause) and "NOT sent again" in str(cause) and "alpha" in str(cause)
    assert len(_unwinds(alpha)) == 1  # the killed attempt's; nothing sent by the rerun
    assert alpha.position(BTC) == pytest.approx(OWN_SHORT)  # alpha's own short untouched
    step = log.load("saga-1").step(PLACE)
    assert step.compensation_failures == 1 and not step.compensated and ucid in step.last_compensation_error
    assert [subject for subject, _ in mail] == [f"[saga] COMPENSATION FAILED: {SAGA.name} step {PLACE} [saga-1]"]
    assert ucid in mail[0][1]

    # The sweep's next attempt is no different: still nothing sent.
    with pytest.raises(CompensationFailedError):
        _compensate(world, log, error)
    assert len(_unwinds(alpha)) == 1 and alpha.position(BTC) == pytest.approx(OWN_SHORT)


def test_a_rerun_after_a_kill_finds_the_order_by_its_id_and_records_it_without_resending():
    world, log, error = _failed_pair()
    ucid = _kill_between_send_and_outcome(world, log, error)
    alpha = world.venue("alpha")

    outcome = _compensate(world, log, error)

    assert outcome.action is Action.COMPENSATED
    assert len(_unwinds(alpha)) == 1 and alpha.position(BTC) == pytest.approx(OWN_SHORT)
    step = log.load("saga-1").step(PLACE)
    [row] = step.compensation["unwound"]
    assert (row["client_order_id"], row["earlier_attempt"], row["side"]) == (ucid, True, "buy")
    assert row["amount"] == pytest.approx(LEG)
    assert unwind_ledger(step.compensation_progress)[ucid]["outcome"]["resolved"] == "by client order id"


def test_a_rerun_finds_a_forgotten_order_in_the_order_history():
    world, log, error = _failed_pair(history=HistoryVenue)
    ucid = _kill_between_send_and_outcome(world, log, error)
    _forget(world, "alpha", ucid)
    alpha = world.venue("alpha")

    outcome = _compensate(world, log, error)

    assert outcome.action is Action.COMPENSATED
    assert len(_unwinds(alpha)) == 1 and alpha.position(BTC) == pytest.approx(OWN_SHORT)
    step = log.load("saga-1").step(PLACE)
    assert unwind_ledger(step.compensation_progress)[ucid]["outcome"]["resolved"] == "in the order history"
    assert step.compensation["unwound"][0]["amount"] == pytest.approx(LEG)


def test_a_rerun_after_a_recorded_outcome_makes_no_request_for_that_leg():
    world, log, error = _failed_pair()
    dying = KillAfterNote("filled", log.run_id, log._store)  # same store: the actor dies after noting the fill
    with pytest.raises(Killed):
        _compensate(world, dying, error)
    alpha, beta = world.venue("alpha"), world.venue("beta")
    assert alpha.position(BTC) == pytest.approx(OWN_SHORT)
    assert [n["unwind"] for n in log.load("saga-1").step(PLACE).compensation_progress] == ["sending", "placed", "filled"]
    alpha.calls.clear()
    beta.calls.clear()

    outcome = _compensate(world, log, error)

    assert outcome.action is Action.COMPENSATED
    assert alpha.calls == []  # no lookup, no order: the outcome was recorded
    assert [m for m, _ in beta.calls] == ["fetch_order_by_client_id"]  # leg 1 (never placed) is still looked up
    assert alpha.position(BTC) == pytest.approx(OWN_SHORT)
    [row] = log.load("saga-1").step(PLACE).compensation["unwound"]
    assert row["earlier_attempt"] is True and row["amount"] == pytest.approx(LEG)


def test_a_refused_unwind_is_sent_again_by_the_rerun_once():
    world, log, error = _failed_pair()
    alpha = world.venue("alpha")
    alpha.fail_on("create_order", BusinessError("price band", code="price_out_of_band"),
                  match=lambda kwargs: kwargs.get("reduce_only") is True)
    with pytest.raises(CompensationFailedError):
        _compensate(world, log, error)
    assert alpha.position(BTC) == pytest.approx(OWN_SHORT - LEG)  # refused: nothing placed
    assert [n["unwind"] for n in log.load("saga-1").step(PLACE).compensation_progress] == ["sending", "refused"]

    outcome = _compensate(world, log, error)

    assert outcome.action is Action.COMPENSATED
    assert len(_unwinds(alpha)) == 2  # the refused one and the one that filled
    assert alpha.position(BTC) == pytest.approx(OWN_SHORT)
    assert _compensate(world, log, error).action is Action.NONE  # nothing left to do
    assert len(_unwinds(alpha)) == 2


def test_the_normal_path_notes_sending_then_the_outcome():
    world, log, error = _failed_pair()

    assert _compensate(world, log, error).action is Action.COMPENSATED

    alpha = world.venue("alpha")
    assert len(_unwinds(alpha)) == 1 and alpha.position(BTC) == pytest.approx(OWN_SHORT)
    notes = log.load("saga-1").step(PLACE).compensation_progress
    assert [n["unwind"] for n in notes] == ["sending", "placed", "filled"]
    assert len({n["client_order_id"] for n in notes}) == 1
    order = alpha.orders(client_order_id=notes[0]["client_order_id"])[0]
    assert notes[-1]["order_id"] == order.id and notes[-1]["filled"] == pytest.approx(LEG)


def test_a_leg_the_venue_forgot_is_unwound_from_the_fill_the_step_noted():
    world, log, error = _failed_pair()
    alpha = world.venue("alpha")
    [leg_order] = [o for o in alpha.orders() if not o.reduce_only]
    _forget(world, "alpha", leg_order.client_order_id)  # the compensation runs long after: the id is gone

    assert _compensate(world, log, error).action is Action.COMPENSATED

    assert len(_unwinds(alpha)) == 1 and alpha.position(BTC) == pytest.approx(OWN_SHORT)
    [row] = log.load("saga-1").step(PLACE).compensation["unwound"]
    assert row["amount"] == pytest.approx(LEG)


def _unwind_never_applied(world, log, error) -> str:
    """Every unwind order fails with an ambiguous 5xx that applied nothing; the compensation fails."""
    alpha = world.venue("alpha")
    alpha.fail_on("create_order", AmbiguousOutcomeError("POST /orders: HTTP 503"),
                  match=lambda kwargs: kwargs.get("reduce_only") is True)
    with pytest.raises(CompensationFailedError):
        _compensate(world, log, error)
    assert alpha.position(BTC) == pytest.approx(OWN_SHORT - LEG) and alpha.orders(reduce_only=True) == []
    [sending] = log.load("saga-1").step(PLACE).compensation_progress
    assert sending["unwind"] == "sending"
    return sending["client_order_id"]


def test_an_unwind_the_history_shows_never_arrived_is_sent_again_once():
    world, log, error = _failed_pair(history=HistoryVenue)
    ucid = _unwind_never_applied(world, log, error)
    alpha = world.venue("alpha")

    assert _compensate(world, log, error).action is Action.COMPENSATED

    assert [o.client_order_id for o in alpha.orders(reduce_only=True)] == [ucid]
    assert alpha.position(BTC) == pytest.approx(OWN_SHORT)
    notes = log.load("saga-1").step(PLACE).compensation_progress
    assert [n["unwind"] for n in notes] == ["sending", "not_placed", "sending", "placed", "filled"]
    assert _compensate(world, log, error).action is Action.NONE and len(alpha.orders(reduce_only=True)) == 1


@pytest.mark.parametrize("venue_class", [StateVenue, ShortHistoryVenue])
def test_an_unwind_that_never_arrived_is_not_resent_without_a_history_reaching_back_to_the_leg(venue_class):
    world, log, error = _failed_pair(history=venue_class)
    ucid = _unwind_never_applied(world, log, error)
    alpha = world.venue("alpha")
    sends = len(_unwinds(alpha))

    with pytest.raises(CompensationFailedError) as failed:
        _compensate(world, log, error)

    assert isinstance(failed.value.__cause__, UnwindOutcomeUnknown) and ucid in str(failed.value.__cause__)
    assert len(_unwinds(alpha)) == sends  # nothing sent: "not found" cannot tell forgotten from never arrived
    assert alpha.position(BTC) == pytest.approx(OWN_SHORT - LEG)  # the reverse risk: the leg stays open
