"""The stop-loss runner against fake venues: parallel venues, cancel and close concurrently, idempotent
resubmits after ambiguous outcomes, retries until flat, partial fills, refusals, dry run, bad venues."""

from __future__ import annotations

import itertools
import threading
import time

from arb_orchestration.defs.stop_loss.liquidator import LiquidationSettings, liquidate_all, liquidate_venue
from arb_orchestration.domain.models import Order, Position
from arb_orchestration.resources.errors import AmbiguousOutcomeError, BusinessError, TransientError
from arb_orchestration.resources.venue import VenueClient

FAST = LiquidationSettings(deadline_seconds=5.0, base_delay=0.001, max_delay=0.01)


class FakeVenue(VenueClient):
    """An in-memory perp venue: reduce-only market orders fill at mark (or `fill_ratio` of them),
    client order ids dedupe, faults are scripted per method."""

    _ids = itertools.count(1)

    def __init__(self, name, positions=(), open_orders=(), mark=100.0):
        self.name = name
        self.mark = mark
        self.lock = threading.Lock()
        self.positions = {(p[0], p[1]): p[2] for p in positions}  # (symbol, side) -> size
        self.open = [Order(id=f"o-{name}-{i}", venue=name, symbol=s, type="limit", side="buy", amount=1,
                           price=1.0, status="open") for i, s in enumerate(open_orders)]
        self.by_cid: dict[str, Order] = {}
        self.calls: list[tuple[str, float]] = []
        self.faults: dict[str, list[Exception]] = {}  # method -> errors raised before it works
        self.ambiguous_after_apply = 0  # create_order applies, then raises AmbiguousOutcomeError
        self.fill_ratio = 1.0
        self.refuse_orders = False
        self.hooks: dict[str, callable] = {}

    def _enter(self, method):
        self.calls.append((method, time.monotonic()))
        if method in self.hooks:
            self.hooks[method]()
        errors = self.faults.get(method)
        if errors:
            raise errors.pop(0)

    def fetch_positions(self):
        self._enter("fetch_positions")
        with self.lock:
            return [Position(venue=self.name, symbol=s, side=side, size=size, entry_price=self.mark,
                             mark_price=self.mark) for (s, side), size in self.positions.items() if size > 0]

    def cancel_all_orders(self, symbol=None):
        self._enter("cancel_all_orders")
        with self.lock:
            canceled, self.open = self.open, []
        return [o.model_copy(update={"status": "canceled"}) for o in canceled]

    def fetch_open_orders(self, symbol=None):
        self._enter("fetch_open_orders")
        with self.lock:
            return list(self.open)

    def create_order(self, symbol, type, side, amount, price=None, *, client_order_id, reduce_only=False,
                     stop_price=None):
        self._enter("create_order")
        assert reduce_only and type == "market"
        with self.lock:
            if client_order_id in self.by_cid:
                return self.by_cid[client_order_id]
            if self.refuse_orders:
                raise BusinessError("order rejected", code="rejected")
            pos_side = "long" if side == "sell" else "short"
            held = self.positions.get((symbol, pos_side), 0.0)
            if held <= 0:
                raise BusinessError("reduce-only would increase", code="reduce_only_would_increase")
            filled = min(amount, held) * self.fill_ratio
            self.positions[(symbol, pos_side)] = held - filled
            order = Order(id=f"{self.name}-{next(self._ids)}", client_order_id=client_order_id, venue=self.name,
                          symbol=symbol, type="market", side=side, amount=amount, filled=filled,
                          average=self.mark, status="closed", reduce_only=True)
            self.by_cid[client_order_id] = order
        if self.ambiguous_after_apply:
            self.ambiguous_after_apply -= 1
            raise AmbiguousOutcomeError("read timeout after sending")
        return order

    def order_count(self):
        return len(self.by_cid)

    # unused by the stop-loss
    def fetch_balance(self): raise NotImplementedError
    def fetch_funding_rates(self): raise NotImplementedError
    def fetch_mark_prices(self): raise NotImplementedError
    def cancel_order(self, order_id, symbol=None): raise NotImplementedError
    def fetch_order_by_client_id(self, client_order_id, symbol=None): raise NotImplementedError
    def fetch_deposit_withdraw_fees(self): raise NotImplementedError
    def fetch_deposit_address(self, asset, network): raise NotImplementedError
    def withdraw(self, *a, **k): raise NotImplementedError
    def fetch_withdrawal(self, idempotency_key): raise NotImplementedError
    def cancel_withdrawal(self, withdrawal_id): raise NotImplementedError


def _world(**venues):
    return venues, venues.__getitem__


def test_every_venue_is_flattened_in_parallel_with_cancel_and_fetch_concurrent():
    names = ["binance", "okx", "bybit"]
    venues = {n: FakeVenue(n, positions=[("BTC/USDT:USDT", "long", 1.0), ("ETH/USDT:USDT", "short", 2.0)],
                           open_orders=["BTC/USDT:USDT"]) for n in names}
    # Every venue's first position fetch waits for all venues to be fetching: only parallel venues pass.
    barrier = threading.Barrier(len(names), timeout=5)
    cancel_seen = {n: threading.Event() for n in names}
    for n, v in venues.items():
        first = [True]

        def fetch_hook(n=n, first=first):
            if first[0]:
                first[0] = False
                barrier.wait()
                # ... and the cancel-all was already fired off, not waited for before fetching.
                assert cancel_seen[n].wait(5)

        v.hooks["fetch_positions"] = fetch_hook
        v.hooks["cancel_all_orders"] = cancel_seen[n].set
    report = liquidate_all(names, venues.__getitem__, saga_id="s", base_key="k", settings=FAST)
    assert report.flat
    for n, v in venues.items():
        assert v.positions == {("BTC/USDT:USDT", "long"): 0.0, ("ETH/USDT:USDT", "short"): 0.0}
        assert v.open == [] and v.order_count() == 2
        outcome = next(o for o in report.venues if o.venue == n)
        assert outcome.canceled_orders == 1 and outcome.rounds == 1
        assert {c.symbol: c.amount for c in outcome.closed} == {"BTC/USDT:USDT": 1.0, "ETH/USDT:USDT": 2.0}
        # Nothing but the positions fetch (and the concurrent cancel) before the first order.
        first_order = next(i for i, (m, _) in enumerate(v.calls) if m == "create_order")
        assert {m for m, _ in v.calls[:first_order]} <= {"fetch_positions", "cancel_all_orders"}


def test_ambiguous_outcome_resubmits_the_same_client_order_id_and_places_one_order():
    v = FakeVenue("okx", positions=[("BTC/USDT:USDT", "long", 1.0)])
    v.ambiguous_after_apply = 2
    outcome = liquidate_venue(v, base_key="k", settings=FAST)
    assert outcome.flat and v.order_count() == 1
    sent = [m for m, _ in v.calls if m == "create_order"]
    assert len(sent) == 1  # the second round saw the position already flat: nothing to resend
    v2 = FakeVenue("okx", positions=[("BTC/USDT:USDT", "long", 1.0)])
    v2.faults["create_order"] = [TransientError("503"), TransientError("503")]
    outcome = liquidate_venue(v2, base_key="k", settings=FAST)
    assert outcome.flat and v2.order_count() == 1 and len(outcome.errors) == 2
    assert [m for m, _ in v2.calls].count("create_order") == 3
    [cid] = v2.by_cid
    assert all(cid in e for e in outcome.errors)  # every resend carried the same client order id


def test_transient_fetch_failures_are_retried_until_flat():
    v = FakeVenue("bybit", positions=[("ETH/USDT:USDT", "short", 4.0)])
    v.faults["fetch_positions"] = [TransientError("502")] * 3
    outcome = liquidate_venue(v, base_key="k", settings=FAST)
    assert outcome.flat and v.positions[("ETH/USDT:USDT", "short")] == 0


def test_partial_fills_continue_with_the_next_attempt_id_until_flat():
    v = FakeVenue("kraken", positions=[("BTC/USDT:USDT", "long", 1.0)])
    v.fill_ratio = 0.5
    outcome = liquidate_venue(v, base_key="k", settings=LiquidationSettings(deadline_seconds=5, dust=0.01))
    assert outcome.flat and v.positions[("BTC/USDT:USDT", "long")] <= 0.01
    cids = [o.client_order_id for o in v.by_cid.values()]
    assert len(cids) == len(set(cids)) == outcome.rounds >= 6


def test_a_refusing_venue_is_given_up_on_and_reported_without_blocking_the_others():
    good = FakeVenue("binance", positions=[("BTC/USDT:USDT", "long", 1.0)])
    bad = FakeVenue("okx", positions=[("BTC/USDT:USDT", "short", 1.0)])
    bad.refuse_orders = True
    report = liquidate_all(["binance", "okx", "nope"], {"binance": good, "okx": bad}.__getitem__,
                           saga_id="s", base_key="k", settings=FAST)
    by = {v.venue: v for v in report.venues}
    assert by["binance"].flat and not by["okx"].flat and not by["nope"].flat
    assert len(by["okx"].business_errors) == FAST.max_refusals_per_position
    assert by["okx"].remaining[0].size == 1.0
    assert "KeyError" in by["nope"].errors[0]
    assert not report.flat


def test_orders_that_reappear_are_cancelled_before_the_venue_counts_as_flat():
    v = FakeVenue("okx", positions=[("BTC/USDT:USDT", "long", 1.0)])
    reappear = [True]

    def add_order_once():
        if reappear[0]:
            reappear[0] = False
            with v.lock:
                v.open.append(Order(id="late", venue="okx", symbol="BTC/USDT:USDT", type="limit", side="buy",
                                    amount=1, price=1.0, status="open"))

    v.hooks["fetch_open_orders"] = add_order_once
    outcome = liquidate_venue(v, base_key="k", settings=FAST)
    assert outcome.flat and v.open == []
    assert [m for m, _ in v.calls].count("cancel_all_orders") == 2


def test_dry_run_moves_nothing_and_lists_the_plan():
    v = FakeVenue("okx", positions=[("BTC/USDT:USDT", "long", 1.0)], open_orders=["BTC/USDT:USDT"])
    report = liquidate_all(["okx"], {"okx": v}.__getitem__, saga_id="s", base_key="k",
                           settings=LiquidationSettings(dry_run=True))
    [outcome] = report.venues
    assert report.dry_run and [o.side for o in outcome.planned] == ["sell"]
    assert v.order_count() == 0 and len(v.open) == 1
    assert {m for m, _ in v.calls} == {"fetch_positions", "fetch_open_orders"}


def test_dry_run_judges_positions_with_the_runs_dust():
    # 0.0005 BTC is dust for this run (dust 0.001): the dry run plans nothing for it and reports the venue flat,
    # as the real run would; 0.002 BTC is not dust and is planned.
    v = FakeVenue("okx", positions=[("BTC/USDT:USDT", "long", 0.0005)])
    [outcome] = liquidate_all(["okx"], {"okx": v}.__getitem__, saga_id="s", base_key="k",
                              settings=LiquidationSettings(dry_run=True, dust=0.001)).venues
    assert outcome.planned == [] and outcome.remaining == [] and outcome.flat
    v = FakeVenue("okx", positions=[("BTC/USDT:USDT", "long", 0.002)])
    [outcome] = liquidate_all(["okx"], {"okx": v}.__getitem__, saga_id="s", base_key="k",
                              settings=LiquidationSettings(dry_run=True, dust=0.001)).venues
    assert [(o.side, o.amount) for o in outcome.planned] == [("sell", 0.002)] and not outcome.flat
    assert v.order_count() == 0


def test_same_base_key_gives_the_same_ids_so_a_rerun_replays_instead_of_resending():
    v = FakeVenue("okx", positions=[("BTC/USDT:USDT", "long", 1.0)])
    liquidate_venue(v, base_key="k", settings=FAST)
    with v.lock:
        v.positions[("BTC/USDT:USDT", "long")] = 1.0  # pretend the first fill was not seen
    outcome = liquidate_venue(v, base_key="k", settings=FAST)
    # Attempt 0 replays the recorded order; only attempt 1 is new.
    assert outcome.flat and v.order_count() == 2 and outcome.rounds == 2
