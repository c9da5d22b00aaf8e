"""Fakes for the hedge job's unit tests: venues backed by the simulator's in-memory state, no sockets.

`StateVenue` is a `VenueClient` over `ExchangeState` (the exchange simulator's
pure world: fills at mark, reduce-only clamps, resting stops, client-order-id
replay), so the fakes behave like a venue without HTTP. Rejections become the
resources' `BusinessError`/`NotFoundError` with the venue's code; `fail_on`
scripts errors (a business refusal, a transient error, or an ambiguous outcome
*after* the order was applied). `FakeExchange` is a real `ExchangeResource`
(Dagster injects it) whose world lives in a registry keyed by `scenario`.
The test at the bottom checks the fake itself.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from arb_orchestration.domain.models import Order
from arb_orchestration.resources.errors import AmbiguousOutcomeError, BusinessError, NotFoundError
from arb_orchestration.resources.venue import ExchangeResource, VenueClient
from arb_orchestration.sim.exchange_specs import PerpSpec, PositionSpec, VenueSpec
from arb_orchestration.sim.exchange_state import ExchangeState, SimError

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"


@dataclass
class Failure:
    """Raise `error` on the `nth` matching call (1-based) of `method`; `after_apply` applies the call first."""

    method: str
    error: Exception
    nth: int = 1
    after_apply: bool = False
    match: Callable[[dict], bool] = lambda kwargs: True
    seen: int = 0


@dataclass
class StateVenue(VenueClient):
    name: str
    state: ExchangeState
    failures: list[Failure] = field(default_factory=list)
    calls: list[tuple[str, dict]] = field(default_factory=list)

    def fail_on(self, method: str, error: Exception, **kwargs: Any) -> Failure:
        rule = Failure(method, error, **kwargs)
        self.failures.append(rule)
        return rule

    def _call(self, method: str, fn: Callable[[], Any], **kwargs: Any) -> Any:
        self.calls.append((method, kwargs))
        rule = None
        for candidate in self.failures:
            if candidate.method == method and candidate.match(kwargs):
                candidate.seen += 1
                if candidate.seen == candidate.nth:
                    rule = candidate
                    break
        if rule is not None and not rule.after_apply:
            raise rule.error
        try:
            result = fn()
        except SimError as exc:
            if exc.status == 404:
                raise NotFoundError(str(exc), code=exc.code) from None
            raise BusinessError(f"{self.name}: {exc}", code=exc.code) from None
        if rule is not None:
            raise rule.error
        return result

    def fetch_balance(self):
        return self._call("fetch_balance", lambda: self.state.balances(self.name))

    def fetch_positions(self):
        return self._call("fetch_positions", lambda: self.state.positions(self.name))

    def fetch_funding_rates(self):
        return self._call("fetch_funding_rates", lambda: self.state.funding_rates(self.name))

    def fetch_mark_prices(self):
        return self._call("fetch_mark_prices", lambda: self.state.mark_prices(self.name))

    def create_order(self, symbol, type, side, amount, price=None, *, client_order_id, reduce_only=False,
                     stop_price=None) -> Order:
        def place() -> Order:
            order, _created = self.state.place_order(
                self.name, symbol=symbol, type=type, side=side, amount=amount, price=price,
                stop_price=stop_price, client_order_id=client_order_id, reduce_only=reduce_only,
            )
            return order

        return self._call("create_order", place, symbol=symbol, type=type, side=side, amount=amount,
                          client_order_id=client_order_id, reduce_only=reduce_only, stop_price=stop_price)

    def cancel_order(self, order_id, symbol=None):
        return self._call("cancel_order", lambda: self.state.cancel_order(self.name, order_id), order_id=order_id)

    def cancel_all_orders(self, symbol=None):
        return self._call("cancel_all_orders", lambda: self.state.cancel_all_orders(self.name, symbol))

    def fetch_open_orders(self, symbol=None):
        return self._call("fetch_open_orders", lambda: self.state.orders(self.name, "open", symbol))

    def fetch_order_by_client_id(self, client_order_id, symbol=None):
        try:
            return self._call("fetch_order_by_client_id",
                              lambda: self.state.order_by_client_id(self.name, client_order_id),
                              client_order_id=client_order_id)
        except NotFoundError:
            return None

    def _unused(self, *args, **kwargs):
        raise NotImplementedError("the hedge never moves money between venues")

    fetch_deposit_withdraw_fees = fetch_deposit_address = withdraw = fetch_withdrawal = cancel_withdrawal = _unused

    # -- test helpers
    def orders(self, **where: Any) -> list[Order]:
        return [o for o in self.state.orders(self.name) if all(getattr(o, k) == v for k, v in where.items())]

    def position(self, symbol: str) -> float:
        return next((p.signed_size for p in self.state.positions(self.name) if p.symbol == symbol), 0.0)

    def creates(self) -> list[dict]:
        return [kwargs for method, kwargs in self.calls if method == "create_order"]


class World:
    """An `ExchangeState` plus one `StateVenue` per venue; `.exchange` is duck-typed like ExchangeResource."""

    def __init__(self, specs: list[VenueSpec], prices: dict[str, float] | None = None):
        self.state = ExchangeState(specs, seed=3, index_prices=prices or {"BTC": 60_000.0, "ETH": 3_000.0},
                                   index_volatility={"BTC": 0.0, "ETH": 0.0})
        self.venues = {spec.name: StateVenue(spec.name, self.state) for spec in specs}

    def venue_names(self) -> list[str]:
        return list(self.venues)

    def venue(self, name: str) -> StateVenue:
        return self.venues[name]


def venue_spec(name: str, *, btc_funding: float = 0.0001, interval: float = 8.0, positions=(),
               balances: dict[str, float] | None = None, eth: bool = False) -> VenueSpec:
    perps = [PerpSpec(BTC, btc_funding, interval)]
    if eth:
        perps.append(PerpSpec(ETH, 0.0001, interval))
    return VenueSpec(
        name=name,
        balances=balances if balances is not None else {"USDT": 500_000.0},
        perps=tuple(perps),
        positions=tuple(PositionSpec(*p) for p in positions),
        leverage=5.0,
        taker_fee=0.0,
        maker_fee=0.0,
        slippage=0.0,
        fiat_deposits=(),
    )


WORLDS: dict[str, World] = {}


class FakeExchange(ExchangeResource):
    """`ExchangeResource` over a registered `World` (resource fields must be plain config)."""

    scenario: str

    def venue_names(self) -> list[str]:
        return WORLDS[self.scenario].venue_names()

    def venue(self, name: str) -> StateVenue:
        return WORLDS[self.scenario].venue(name)


def register(world: World) -> FakeExchange:
    scenario = uuid.uuid4().hex
    WORLDS[scenario] = world
    return FakeExchange(scenario=scenario)


def test_state_venue_maps_rejections_and_replays_client_ids():
    world = World([venue_spec("alpha", positions=[(BTC, "short", 1.0, 60_000.0)])])
    alpha = world.venue("alpha")
    first = alpha.create_order(BTC, "market", "buy", 0.4, client_order_id="k1", reduce_only=True)
    again = alpha.create_order(BTC, "market", "buy", 9.0, client_order_id="k1", reduce_only=True)
    assert first.id == again.id and alpha.position(BTC) == pytest.approx(-0.6)
    with pytest.raises(BusinessError) as refused:
        alpha.create_order(BTC, "market", "sell", 1.0, client_order_id="k2", reduce_only=True)
    assert refused.value.code == "reduce_only_would_increase"
    assert alpha.fetch_order_by_client_id("nope") is None
    alpha.fail_on("create_order", AmbiguousOutcomeError("dropped"), after_apply=True)
    with pytest.raises(AmbiguousOutcomeError):
        alpha.create_order(BTC, "market", "buy", 0.1, client_order_id="k3")
    assert alpha.fetch_order_by_client_id("k3").filled == pytest.approx(0.1)  # applied before the error
