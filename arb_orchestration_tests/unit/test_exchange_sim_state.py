"""The exchange simulator's world without sockets: orders, reduce-only clamps, idempotency,
withdrawal lifecycle, deposit addresses, the seeded random walk and shocks."""

from __future__ import annotations

import pytest

from arb_orchestration.sim.exchange_specs import NetworkSpec, PerpSpec, VenueSpec, default_venues
from arb_orchestration.sim.exchange_state import ExchangeState, SimError, crypto_address, venue_iban

PERP = "BTC/USDT:USDT"


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _venue(name: str, interval: float = 8.0, **overrides) -> VenueSpec:
    spec = dict(
        name=name,
        balances={"USDT": 10_000.0, "BTC": 1.0},
        perps=(PerpSpec(PERP, 0.0001, interval),),
        networks=(
            NetworkSpec("USDT", "TRC20", 1.0, min_amount=10.0, settle_seconds=2.0),
            NetworkSpec("BTC", "BTC", 0.0005, min_amount=0.001, settle_seconds=3.0),
        ),
        leverage=5.0,
        taker_fee=0.001,
        maker_fee=0.0,
        slippage=0.0,
    )
    spec.update(overrides)
    return VenueSpec(**spec)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def state(clock):
    """Two venues, BTC index at exactly 100, no slippage: every number below is exact."""
    return ExchangeState(
        [_venue("alpha"), _venue("beta", interval=1.0)],
        seed=7,
        clock=clock,
        withdrawal_hold=0.5,
        index_prices={"BTC": 100.0},
        index_volatility={"BTC": 0.001},
    )


def _order(state, venue="alpha", **kw):
    args = dict(symbol=PERP, type="market", side="buy", amount=10.0)
    args.update(kw)
    return state.place_order(venue, **args)


def _rejection(fn, *args, **kwargs) -> SimError:
    with pytest.raises(SimError) as info:
        fn(*args, **kwargs)
    return info.value


# ---------------------------------------------------------------- orders


def test_market_buy_opens_a_long_at_mark_and_charges_the_taker_fee(state):
    order, created = _order(state, client_order_id="c1", received_at=123.0)
    assert created and order.status == "closed" and order.filled == 10 and order.average == 100.0
    assert order.received_at == 123.0 and order.client_order_id == "c1"
    (pos,) = state.positions("alpha")
    assert (pos.side, pos.size, pos.entry_price) == ("long", 10.0, 100.0)
    usdt = state.balances("alpha")["USDT"]
    assert usdt.total == pytest.approx(10_000 - 1.0)  # fee: 10 * 100 * 0.1 %
    assert usdt.used == pytest.approx(10 * 100 / 5)  # initial margin at 5x
    assert usdt.free + usdt.used == pytest.approx(usdt.total)


def test_closing_after_a_price_move_realises_pnl_into_usdt(state):
    _order(state)
    state.shock(0.10)
    (pos,) = state.positions("alpha")
    assert pos.mark_price == pytest.approx(110.0) and pos.unrealized_pnl == pytest.approx(100.0)
    _order(state, side="sell", reduce_only=True)
    assert state.positions("alpha") == []
    assert state.balances("alpha")["USDT"].total == pytest.approx(10_000 - 1.0 + 100.0 - 1.1)
    assert state.balances("alpha")["USDT"].used == 0


def test_reduce_only_is_clamped_to_the_position_and_never_flips(state):
    _order(state)
    order, _ = _order(state, side="sell", amount=25.0, reduce_only=True)
    assert order.amount == 10.0 and order.filled == 10.0
    assert state.positions("alpha") == []


def test_reduce_only_that_would_open_or_add_is_rejected_and_not_recorded(state):
    err = _rejection(_order, state, side="sell", reduce_only=True, client_order_id="r1")
    assert (err.status, err.code) == (400, "reduce_only_would_increase")
    _order(state)
    err = _rejection(_order, state, side="buy", reduce_only=True, client_order_id="r2")
    assert err.code == "reduce_only_would_increase"
    assert [o.client_order_id for o in state.orders("alpha")] == ["sim-alpha-1"]


def test_plain_order_larger_than_the_position_flips_it(state):
    _order(state)
    _order(state, side="sell", amount=15.0)
    (pos,) = state.positions("alpha")
    assert (pos.side, pos.size, pos.entry_price) == ("short", 5.0, 100.0)


def test_same_client_order_id_returns_the_first_order_and_fills_once(state):
    first, created = _order(state, client_order_id="same")
    again, created_again = _order(state, client_order_id="same", amount=3.0)
    assert created and not created_again
    assert again == first
    assert state.positions("alpha")[0].size == 10.0
    assert len(state.orders("alpha")) == 1
    assert state.order_by_client_id("alpha", "same") == first


def test_client_order_ids_are_scoped_per_venue(state):
    _order(state, client_order_id="x")
    _, created = _order(state, venue="beta", client_order_id="x")
    assert created and state.positions("beta")[0].size == 10.0


def test_order_needing_more_margin_than_free_is_rejected(state):
    err = _rejection(_order, state, amount=1_000.0)  # 100k notional / 5 = 20k margin > 10k
    assert (err.status, err.code) == (400, "insufficient_margin")
    assert state.orders("alpha") == [] and state.positions("alpha") == []


def test_resting_limit_reserves_margin_and_fills_at_its_price_when_crossed(state):
    order, _ = _order(state, type="limit", price=95.0, client_order_id="l1")
    assert order.status == "open"
    assert state.balances("alpha")["USDT"].used == pytest.approx(10 * 95 / 5)
    assert [o.id for o in state.orders("alpha", status="open")] == [order.id]
    state.shock(-0.06)  # mark 94 <= 95
    filled = state.order_by_client_id("alpha", "l1")
    assert filled.status == "closed" and filled.average == 95.0
    assert state.positions("alpha")[0].entry_price == 95.0
    assert state.balances("alpha")["USDT"].total == pytest.approx(10_000)  # maker fee 0


def test_limit_that_crosses_on_arrival_fills_as_taker_at_the_better_price(state):
    order, _ = _order(state, type="limit", price=105.0)
    assert order.status == "closed" and order.average == 100.0


def test_reduce_only_stop_rests_then_triggers_on_the_mark_and_closes_the_position(state):
    _order(state)
    stop, _ = _order(state, type="stop_market", side="sell", amount=10.0, stop_price=95.0, reduce_only=True)
    assert stop.status == "open" and stop.reduce_only
    state.shock(-0.03)  # 97: not yet
    assert state.order(state.venue_names()[0], stop.id).status == "open"
    state.shock(-0.03)  # ~94.09: triggered
    done = state.order("alpha", stop.id)
    assert done.status == "closed" and done.average == pytest.approx(100 * 0.97 * 0.97)
    assert state.positions("alpha") == []


def test_stop_that_would_trigger_immediately_is_rejected(state):
    _order(state)
    err = _rejection(_order, state, type="stop_market", side="sell", stop_price=101.0, reduce_only=True)
    assert err.code == "would_immediately_trigger"


def test_reduce_only_stop_whose_position_is_gone_is_cancelled_on_trigger(state):
    _order(state)
    stop, _ = _order(state, type="stop_market", side="sell", stop_price=90.0, reduce_only=True)
    _order(state, side="sell", reduce_only=True)  # position closed by hand
    state.shock(-0.2)
    assert state.order("alpha", stop.id).status == "canceled"
    assert state.positions("alpha") == []


def test_cancel_order_is_idempotent_and_refuses_filled_orders(state):
    resting, _ = _order(state, type="limit", price=50.0)
    filled, _ = _order(state)
    assert state.cancel_order("alpha", resting.id).status == "canceled"
    assert state.cancel_order("alpha", resting.id).status == "canceled"
    assert _rejection(state.cancel_order, "alpha", filled.id).code == "order_not_open"
    err = _rejection(state.cancel_order, "alpha", "alpha-999")
    assert (err.status, err.code) == (404, "order_not_found")
    assert state.balances("alpha")["USDT"].used == pytest.approx(10 * 100 / 5)  # only the position


def test_cancel_all_orders_filters_by_symbol(state):
    a, _ = _order(state, type="limit", price=50.0)
    b, _ = _order(state, symbol="BTC/USDT", type="limit", price=50.0, amount=1.0)
    cancelled = state.cancel_all_orders("alpha", symbol="BTC/USDT")
    assert [o.id for o in cancelled] == [b.id]
    assert [o.id for o in state.orders("alpha", status="open")] == [a.id]
    assert [o.id for o in state.cancel_all_orders("alpha")] == [a.id]


def test_spot_orders_move_both_wallet_balances(state):
    _order(state, symbol="BTC/USDT", amount=1.0)
    balances = state.balances("alpha")
    assert balances["BTC"].total == pytest.approx(2.0)
    assert balances["USDT"].total == pytest.approx(10_000 - 100 - 0.1)
    err = _rejection(_order, state, symbol="BTC/USDT", side="sell", amount=5.0)
    assert err.code == "insufficient_funds"


def test_bad_orders_are_rejected_with_codes(state):
    assert _rejection(_order, state, symbol="DOGE/USDT:USDT").code == "unknown_symbol"
    assert _rejection(_order, state, type="limit").code == "bad_request"
    assert _rejection(_order, state, amount=0).code == "bad_request"
    assert _rejection(_order, state, type="stop_market").code == "bad_request"
    assert _rejection(state.orders, "nope").status == 404


# ---------------------------------------------------------------- withdrawals


def _withdraw(state, key="w1", amount=1_000.0, **kw):
    args = dict(asset="USDT", amount=amount, address=crypto_address("beta", "USDT", "TRC20"), network="TRC20",
                idempotency_key=key)
    args.update(kw)
    return state.withdraw("alpha", **args)


def test_withdrawal_goes_pending_broadcast_completed_and_credits_the_destination(state, clock):
    wd, created = _withdraw(state)
    assert created and wd.status == "pending" and wd.to_venue == "beta" and wd.fee == 1.0
    assert wd.arrives_at == pytest.approx(clock.now + 0.5 + 2.0)
    usdt = state.balances("alpha")["USDT"]
    assert (usdt.total, usdt.used) == (10_000, 1_001)
    clock.now += 0.5
    assert state.withdrawal_by_key("alpha", "w1").status == "broadcast"
    assert state.balances("alpha")["USDT"].total == 10_000 - 1_001
    assert state.balances("beta")["USDT"].total == 10_000
    clock.now += 2.0
    assert state.withdrawal_by_key("alpha", "w1").status == "completed"
    assert state.balances("beta")["USDT"].total == 11_000


def test_same_withdrawal_key_returns_the_first_withdrawal(state):
    first, _ = _withdraw(state)
    again, created = _withdraw(state, amount=5.0)
    assert not created and again == first
    assert len(state.withdrawals("alpha")) == 1
    assert state.balances("alpha")["USDT"].used == 1_001


def test_cancel_is_allowed_only_while_pending(state, clock):
    first, _ = _withdraw(state, key="a")
    assert state.cancel_withdrawal("alpha", first.id).status == "canceled"
    assert state.cancel_withdrawal("alpha", first.id).status == "canceled"
    assert state.balances("alpha")["USDT"].free == 10_000
    second, _ = _withdraw(state, key="b")
    clock.now += 0.6
    err = _rejection(state.cancel_withdrawal, "alpha", second.id)
    assert (err.status, err.code) == (400, "not_cancelable")
    clock.now += 10
    assert state.balances("beta")["USDT"].total == 11_000  # the cancelled one never arrived


def test_withdrawal_rejections(state):
    assert _rejection(_withdraw, state, amount=20_000.0).code == "insufficient_funds"
    assert _rejection(_withdraw, state, amount=5.0).code == "below_min_amount"
    err = _rejection(_withdraw, state, network="ERC20")
    assert err.code == "unsupported_network"
    err = _rejection(_withdraw, state, asset="EUR", network="SEPA", address=venue_iban("beta"))
    assert err.code == "unsupported_network" and "Wise" in err.message
    err = _rejection(_withdraw, state, asset="BTC", network="BTC", amount=0.1)
    assert err.code == "address_mismatch"
    assert state.withdrawals("alpha") == []


def test_withdrawal_to_an_outside_address_leaves_and_credits_no_venue(state, clock):
    wd, _ = _withdraw(state, address="TXexternalWallet")
    assert wd.to_venue is None
    clock.now += 10
    assert state.withdrawal_by_key("alpha", "w1").status == "completed"
    assert state.balances("beta")["USDT"].total == 10_000
    assert state.balances("alpha")["USDT"].total == 10_000 - 1_001


def test_settle_delay_override_and_network_fees(clock):
    state = ExchangeState([_venue("alpha")], clock=clock, withdrawal_hold=0.2, settle_delay=0.3,
                          index_prices={"BTC": 100.0})
    fees = {(n.asset, n.network): n for n in state.networks("alpha")}
    assert fees[("USDT", "TRC20")].fee == 1.0 and fees[("USDT", "TRC20")].min_amount == 10.0
    assert fees[("BTC", "BTC")].eta_seconds == pytest.approx(0.5)


def test_deposit_addresses_resolve_back_to_their_venue():
    state = ExchangeState()
    address = state.deposit_address("binance", "USDT", "TRC20")
    assert address.address == "sim:binance:USDT:TRC20"
    assert state.resolve_address(address.address) == ("binance", "USDT", "TRC20")
    iban = state.deposit_address("kraken", "EUR", "SEPA").address
    assert iban.startswith("LT") and len(iban) == 20
    numeric = "".join(str(int(ch, 36)) for ch in iban[4:] + iban[:4])
    assert int(numeric) % 97 == 1  # a checksum-valid IBAN
    spaced = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    assert state.resolve_address(spaced) == ("kraken", "EUR", "SEPA")
    assert state.resolve_address("sim:nowhere:USDT:TRC20") is None
    assert _rejection(state.deposit_address, "hyperliquid", "EUR", "SEPA").code == "unsupported_network"


# ---------------------------------------------------------------- admin helpers


def test_credit_adds_and_refuses_to_debit_below_free(state):
    assert state.credit("alpha", "EUR", 2_500.0).total == 2_500.0
    assert state.credit("alpha", "EUR", -500.0).total == 2_000.0
    assert _rejection(state.credit, "alpha", "EUR", -5_000.0).code == "insufficient_funds"
    assert _rejection(state.credit, "nope", "EUR", 1.0).status == 404


def test_set_positions_replaces_them_and_prices_liquidation(state):
    _order(state)
    positions = state.set_positions("alpha", [{"symbol": PERP, "side": "short", "size": 2.0, "entry_price": 120.0}])
    (pos,) = positions
    assert (pos.side, pos.size, pos.entry_price) == ("short", 2.0, 120.0)
    assert pos.liquidation_price == pytest.approx(120 * (1 + 1 / 5 - 0.005))
    assert pos.unrealized_pnl == pytest.approx(40.0)
    (at_mark,) = state.set_positions("alpha", [{"symbol": PERP, "side": "long", "size": 1.0}])
    assert at_mark.entry_price == pytest.approx(100.0)
    assert _rejection(state.set_positions, "alpha", [{"symbol": "X/USDT:USDT", "side": "long", "size": 1}]).code == (
        "unknown_symbol"
    )
    assert state.set_positions("alpha", []) == []


# ---------------------------------------------------------------- random walk, shocks, reset


def _snapshot(state):
    return (
        {v: state.mark_prices(v) for v in state.venue_names()},
        {v: [f.rate for f in state.funding_rates(v)] for v in state.venue_names()},
    )


def test_the_random_walk_is_determined_by_the_seed():
    a, b, c = ExchangeState(seed=1), ExchangeState(seed=1), ExchangeState(seed=2)
    start = _snapshot(a)
    for s in (a, b, c):
        s.tick(200)
    assert _snapshot(a) == _snapshot(b)
    assert _snapshot(a) != _snapshot(c)
    assert _snapshot(a) != start
    btc = a.mark_prices("binance")["BTC/USDT:USDT"]
    assert 0.8 * 65_000 < btc < 1.2 * 65_000  # moves, but sanely


def test_venues_on_the_same_base_stay_close_to_each_other():
    state = ExchangeState(seed=3)
    state.tick(500)
    marks = [state.mark_prices(v)["BTC/USDT:USDT"] for v in state.venue_names()]
    assert max(marks) / min(marks) < 1.005


def test_reset_restores_the_seeded_initial_world():
    state = ExchangeState(seed=5)
    initial = (_snapshot(state), state.balances("binance"), state.positions("okx"))
    state.tick(30)
    state.place_order("binance", symbol="ETH/USDT:USDT", type="market", side="buy", amount=1.0, client_order_id="z")
    state.credit("kraken", "EUR", 1_000.0)
    state.reset()
    assert (_snapshot(state), state.balances("binance"), state.positions("okx")) == initial
    assert state.orders("binance") == [] and state.ticks == 0
    state.tick(30)
    again = ExchangeState(seed=5)
    again.tick(30)
    assert _snapshot(state) == _snapshot(again)


def test_index_shock_moves_every_venue_and_venue_shock_only_one(state):
    state.shock(-0.10)
    assert state.mark_prices("alpha")[PERP] == pytest.approx(90.0)
    assert state.mark_prices("beta")[PERP] == pytest.approx(90.0)
    state.shock(0.05, venue="beta", symbol=PERP)
    assert state.mark_prices("alpha")[PERP] == pytest.approx(90.0)
    assert state.mark_prices("beta")[PERP] == pytest.approx(94.5)
    state.tick(50)  # the venue's premium reverts to its shifted anchor, so the gap persists
    gap = state.mark_prices("beta")[PERP] / state.mark_prices("alpha")[PERP]
    assert gap == pytest.approx(1.05, abs=0.003)


def test_funding_rate_shock_pins_the_rate(state):
    state.shock(venue="beta", symbol=PERP, funding_rate=0.003)
    state.tick(20)
    (rate,) = state.funding_rates("beta")
    assert rate.rate == pytest.approx(0.003, abs=0.0002)
    assert state.funding_rates("alpha")[0].rate == pytest.approx(0.0001, abs=0.0002)
    assert _rejection(state.shock, 0.1, venue="alpha", symbol="DOGE/USDT:USDT").code == "unknown_symbol"


def test_funding_intervals_and_next_funding_time(clock):
    state = ExchangeState(clock=clock)
    intervals = {v: {f.interval_hours for f in state.funding_rates(v)} for v in state.venue_names()}
    assert intervals == {"binance": {8.0}, "okx": {8.0}, "bybit": {8.0}, "kraken": {4.0}, "hyperliquid": {1.0}}
    for rate in state.funding_rates("hyperliquid"):
        assert rate.next_funding_time % 3600 == 0 and 0 < rate.next_funding_time - clock.now <= 3600


def test_default_world_has_five_funded_venues_with_consistent_balances():
    state = ExchangeState()
    assert state.venue_names() == ["binance", "okx", "bybit", "kraken", "hyperliquid"]
    assert [v.name for v in default_venues()] == state.venue_names()
    for venue in state.venue_names():
        perps = {f.symbol for f in state.funding_rates(venue)}
        assert {"BTC/USDT:USDT", "ETH/USDT:USDT"} <= perps
        for bal in state.balances(venue).values():
            assert bal.free + bal.used == pytest.approx(bal.total) and bal.free >= 0
        for pos in state.positions(venue):
            assert pos.liquidation_price is not None and pos.size > 0
