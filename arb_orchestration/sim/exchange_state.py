"""The exchange simulator's world: pure, in-memory, one lock, no sockets.

`ExchangeState` holds every venue's wallet, positions, orders and withdrawals,
the index prices and funding rates, and moves them by a seeded random walk
(`tick()`). Reads return the domain models of `arb_orchestration.domain.models`,
so the HTTP layer only serialises them and the client parses them back
unchanged. Rejections raise `SimError` carrying the HTTP status and an error
code (`insufficient_funds`, `reduce_only_would_increase`, ...).

Money model (USDT-margined, like the venues' unified accounts):
* the wallet is the realised balance per asset; `total` = wallet;
* `used` = initial margin of positions (entry notional / leverage) + funds
  reserved by resting orders + funds held by pending withdrawals;
* `free` = total - used (never below 0).
A fill pays the taker (market, stop, crossing limit) or maker (resting limit)
fee on notional in the settle asset and realises pnl into it when it reduces
a position. A withdrawal holds `amount + fee` while pending, leaves the wallet
when broadcast, and credits `amount` to the destination venue on completion.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from arb_orchestration.domain.models import (
    Balance,
    DepositAddress,
    FundingRate,
    NetworkFee,
    Order,
    Position,
    Withdrawal,
)
from arb_orchestration.sim.exchange_specs import (
    DEFAULT_INDEX_PRICES,
    DEFAULT_INDEX_VOLATILITY,
    QUOTE,
    PositionSpec,
    VenueSpec,
    default_venues,
)

_PREMIUM_REVERSION = 0.9  # AR(1) pull of each venue's premium back to its steady basis
_PREMIUM_SIGMA = 0.00005
_FUNDING_REVERSION = 0.95
_FUNDING_SIGMA_PER_8H = 0.00001
_EPS = 1e-12


class SimError(Exception):
    """A request the simulated venue refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _not_found(code: str, message: str) -> SimError:
    return SimError(404, code, message)


def _rejected(code: str, message: str) -> SimError:
    return SimError(400, code, message)


def crypto_address(venue: str, asset: str, network: str) -> str:
    """The deterministic fake deposit address of a venue for `asset` on `network`."""
    return f"sim:{venue}:{asset}:{network}"


def venue_iban(venue: str) -> str:
    """A deterministic, checksum-valid Lithuanian-style IBAN for a venue's fiat account."""
    digits = str(int(hashlib.sha256(venue.encode()).hexdigest(), 16))[-11:].rjust(11, "0")
    bban = "32500" + digits
    numeric = "".join(str(int(ch, 36)) for ch in bban + "LT00")
    check = 98 - int(numeric) % 97
    return f"LT{check:02d}{bban}"


def _normalise_address(address: str) -> str:
    return address.replace(" ", "").strip()


def _base_of(symbol: str) -> str:
    return symbol.split("/", 1)[0]


def _settle_of(symbol: str) -> str | None:
    return symbol.split(":", 1)[1] if ":" in symbol else None


@dataclass
class _Pos:
    side: str
    size: float
    entry_price: float

    @property
    def signed(self) -> float:
        return self.size if self.side == "long" else -self.size


@dataclass
class _OrderRec:
    id: str
    client_order_id: str
    venue: str
    symbol: str
    type: str
    side: str
    amount: float
    price: float | None
    stop_price: float | None
    reduce_only: bool
    received_at: float
    status: str = "open"
    filled: float = 0.0
    average: float | None = None
    fee: float = 0.0

    def model(self) -> Order:
        return Order(
            id=self.id,
            client_order_id=self.client_order_id,
            venue=self.venue,
            symbol=self.symbol,
            type=self.type,
            side=self.side,
            amount=self.amount,
            price=self.price,
            stop_price=self.stop_price,
            filled=self.filled,
            average=self.average,
            status=self.status,
            reduce_only=self.reduce_only,
            received_at=self.received_at,
        )


@dataclass
class _WithdrawalRec:
    id: str
    idempotency_key: str
    from_venue: str
    address: str
    to_venue: str | None
    asset: str
    amount: float
    fee: float
    network: str
    tag: str | None
    created_at: float
    broadcast_at: float
    arrives_at: float
    status: str = "pending"

    def model(self) -> Withdrawal:
        return Withdrawal(
            id=self.id,
            idempotency_key=self.idempotency_key,
            from_venue=self.from_venue,
            address=self.address,
            to_venue=self.to_venue,
            asset=self.asset,
            amount=self.amount,
            fee=self.fee,
            network=self.network,
            status=self.status,
            created_at=self.created_at,
            arrives_at=self.arrives_at,
        )


@dataclass
class _Venue:
    spec: VenueSpec
    wallet: dict[str, float]
    positions: dict[str, _Pos] = field(default_factory=dict)
    orders: dict[str, _OrderRec] = field(default_factory=dict)  # id -> order, in arrival order
    by_client_id: dict[str, str] = field(default_factory=dict)
    withdrawals: dict[str, _WithdrawalRec] = field(default_factory=dict)  # id -> withdrawal
    by_idempotency_key: dict[str, str] = field(default_factory=dict)
    next_order: int = 1
    next_withdrawal: int = 1

    @property
    def name(self) -> str:
        return self.spec.name


class ExchangeState:
    """Every simulated venue's state behind one re-entrant lock.

    `clock` is the wall clock used for withdrawal timing and timestamps (tests
    pass a fake one); the random walk is driven only by `tick()`, so a seed and
    a number of ticks fully determine prices and funding rates.
    """

    def __init__(
        self,
        venues: Iterable[VenueSpec] | None = None,
        seed: int = 42,
        *,
        clock: Callable[[], float] = time.time,
        withdrawal_hold: float = 0.5,
        settle_delay: float | None = None,
        index_prices: Mapping[str, float] | None = None,
        index_volatility: Mapping[str, float] | None = None,
    ):
        specs = list(venues) if venues is not None else default_venues()
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"venue names must be unique, got {names}")
        self._specs = specs
        self._seed = seed
        self._clock = clock
        self.withdrawal_hold = withdrawal_hold
        self.settle_delay = settle_delay
        self._index_spec = dict(index_prices or DEFAULT_INDEX_PRICES)
        self._volatility = dict(index_volatility or DEFAULT_INDEX_VOLATILITY)
        self._lock = threading.RLock()
        self._addresses = self._build_address_book(specs)
        self._init_world()

    # ------------------------------------------------------------------ setup

    @staticmethod
    def _build_address_book(specs: list[VenueSpec]) -> dict[str, tuple[str, str, str]]:
        book: dict[str, tuple[str, str, str]] = {}
        for spec in specs:
            for rail in spec.networks:
                book[crypto_address(spec.name, rail.asset, rail.network)] = (spec.name, rail.asset, rail.network)
            for fiat in spec.fiat_deposits:
                book[venue_iban(spec.name)] = (spec.name, fiat, "SEPA")
        return book

    def _init_world(self) -> None:
        self._rng = random.Random(self._seed)
        self._fill_rng = random.Random(self._seed + 1)
        self.ticks = 0
        self._index = dict(self._index_spec)
        self._venues: dict[str, _Venue] = {}
        self._premium: dict[tuple[str, str], float] = {}
        self._premium_anchor: dict[tuple[str, str], float] = {}
        self._funding: dict[tuple[str, str], float] = {}
        self._funding_anchor: dict[tuple[str, str], float] = {}
        for spec in self._specs:
            venue = _Venue(spec=spec, wallet={asset: float(v) for asset, v in spec.balances.items()})
            self._venues[spec.name] = venue
            for symbol in spec.spot_symbols():
                self._require_index(_base_of(symbol))
                self._premium[(spec.name, symbol)] = self._premium_anchor[(spec.name, symbol)] = 0.0
            for perp in spec.perps:
                self._require_index(_base_of(perp.symbol))
                key = (spec.name, perp.symbol)
                self._premium[key] = self._premium_anchor[key] = perp.basis
                self._funding[key] = self._funding_anchor[key] = perp.funding_rate
            for pos in spec.positions:
                self._set_position(venue, pos.symbol, pos.side, pos.size, pos.entry_price)

    def _require_index(self, base: str) -> None:
        if base not in self._index:
            raise ValueError(f"no index price for {base!r}; pass index_prices=")

    def reset(self) -> None:
        """Back to the seeded initial state: balances, positions, prices, no orders/withdrawals."""
        with self._lock:
            self._init_world()

    # ------------------------------------------------------------------ lookups

    def venue_names(self) -> list[str]:
        return [spec.name for spec in self._specs]

    def _venue(self, name: str) -> _Venue:
        venue = self._venues.get(name)
        if venue is None:
            raise _not_found("unknown_venue", f"no venue {name!r}; venues: {', '.join(self._venues)}")
        return venue

    def _perp(self, venue: _Venue, symbol: str):
        for perp in venue.spec.perps:
            if perp.symbol == symbol:
                return perp
        return None

    def _is_market(self, venue: _Venue, symbol: str) -> bool:
        return (venue.name, symbol) in self._premium

    def _mark(self, venue_name: str, symbol: str) -> float:
        return self._index[_base_of(symbol)] * (1.0 + self._premium[(venue_name, symbol)])

    def resolve_address(self, address: str) -> tuple[str, str, str] | None:
        """(venue, asset, network) of a known deposit address (crypto or IBAN), else None."""
        return self._addresses.get(_normalise_address(address))

    def venue_info(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "name": v.name,
                    "perps": [p.symbol for p in v.spec.perps],
                    "spot": v.spec.spot_symbols(),
                    "assets": sorted(v.wallet),
                    "funding_interval_hours": {p.symbol: p.funding_interval_hours for p in v.spec.perps},
                    "leverage": v.spec.leverage,
                }
                for v in self._venues.values()
            ]

    # ------------------------------------------------------------------ reads

    def balances(self, venue: str) -> dict[str, Balance]:
        with self._lock:
            self._advance()
            v = self._venue(venue)
            used = self._used(v)
            result = {}
            for asset in sorted(set(v.wallet) | set(used)):
                total = v.wallet.get(asset, 0.0)
                free = max(0.0, total - used.get(asset, 0.0))
                result[asset] = Balance(asset=asset, free=free, used=total - free, total=total)
            return result

    def _free(self, v: _Venue, asset: str) -> float:
        return v.wallet.get(asset, 0.0) - self._used(v).get(asset, 0.0)

    def _used(self, v: _Venue) -> dict[str, float]:
        used: dict[str, float] = {}

        def add(asset: str, amount: float) -> None:
            used[asset] = used.get(asset, 0.0) + amount

        for symbol, pos in v.positions.items():
            add(_settle_of(symbol), pos.size * pos.entry_price / v.spec.leverage)
        for order in v.orders.values():
            if order.status != "open" or order.type != "limit" or order.reduce_only:
                continue
            settle = _settle_of(order.symbol)
            if settle:
                add(settle, order.amount * order.price / v.spec.leverage)
            elif order.side == "buy":
                add(QUOTE, order.amount * order.price * (1 + v.spec.maker_fee))
            else:
                add(_base_of(order.symbol), order.amount)
        for wd in v.withdrawals.values():
            if wd.status == "pending":
                add(wd.asset, wd.amount + wd.fee)
        return used

    def positions(self, venue: str) -> list[Position]:
        with self._lock:
            v = self._venue(venue)
            return [self._position_model(v, symbol, pos) for symbol, pos in v.positions.items()]

    def _position_model(self, v: _Venue, symbol: str, pos: _Pos) -> Position:
        mark = self._mark(v.name, symbol)
        lev, mmr = v.spec.leverage, v.spec.maintenance_margin
        if pos.side == "long":
            liquidation = pos.entry_price * (1 - 1 / lev + mmr)
            pnl = (mark - pos.entry_price) * pos.size
        else:
            liquidation = pos.entry_price * (1 + 1 / lev - mmr)
            pnl = (pos.entry_price - mark) * pos.size
        return Position(
            venue=v.name,
            symbol=symbol,
            side=pos.side,
            size=pos.size,
            entry_price=pos.entry_price,
            mark_price=mark,
            liquidation_price=liquidation,
            unrealized_pnl=pnl,
        )

    def funding_rates(self, venue: str) -> list[FundingRate]:
        with self._lock:
            v = self._venue(venue)
            now = self._clock()
            rates = []
            for perp in v.spec.perps:
                interval = perp.funding_interval_hours * 3600.0
                rates.append(
                    FundingRate(
                        venue=v.name,
                        symbol=perp.symbol,
                        rate=self._funding[(v.name, perp.symbol)],
                        interval_hours=perp.funding_interval_hours,
                        next_funding_time=(math.floor(now / interval) + 1) * interval,
                        mark_price=self._mark(v.name, perp.symbol),
                        observed_at=now,
                    )
                )
            return rates

    def mark_prices(self, venue: str) -> dict[str, float]:
        with self._lock:
            v = self._venue(venue)
            return {symbol: self._mark(v.name, symbol) for (name, symbol) in self._premium if name == v.name}

    def tickers(self, venue: str) -> list[dict[str, Any]]:
        with self._lock:
            v = self._venue(venue)
            now = self._clock()
            return [
                {
                    "symbol": symbol,
                    "type": "swap" if ":" in symbol else "spot",
                    "mark_price": self._mark(name, symbol),
                    "index_price": self._index[_base_of(symbol)],
                    "timestamp": now,
                }
                for (name, symbol) in self._premium
                if name == v.name
            ]

    def index_prices(self) -> dict[str, float]:
        with self._lock:
            return dict(self._index)

    def orders(self, venue: str, status: str = "all", symbol: str | None = None) -> list[Order]:
        """Orders in arrival order; `status="open"` for resting ones only."""
        if status not in {"all", "open"}:
            raise _rejected("bad_request", f"status must be 'open' or 'all', got {status!r}")
        with self._lock:
            v = self._venue(venue)
            return [
                o.model()
                for o in v.orders.values()
                if (status == "all" or o.status == "open") and (symbol is None or o.symbol == symbol)
            ]

    def order(self, venue: str, order_id: str) -> Order:
        with self._lock:
            return self._order_rec(self._venue(venue), order_id).model()

    def _order_rec(self, v: _Venue, order_id: str) -> _OrderRec:
        rec = v.orders.get(order_id)
        if rec is None:
            raise _not_found("order_not_found", f"{v.name}: no order {order_id!r}")
        return rec

    def order_by_client_id(self, venue: str, client_order_id: str) -> Order:
        with self._lock:
            v = self._venue(venue)
            order_id = v.by_client_id.get(client_order_id)
            if order_id is None:
                raise _not_found("order_not_found", f"{v.name}: no order with client id {client_order_id!r}")
            return v.orders[order_id].model()

    def networks(self, venue: str) -> list[NetworkFee]:
        with self._lock:
            v = self._venue(venue)
            return [
                NetworkFee(
                    asset=rail.asset,
                    network=rail.network,
                    fee=rail.fee,
                    min_amount=rail.min_amount,
                    eta_seconds=self.withdrawal_hold + self._settle_seconds(rail),
                )
                for rail in v.spec.networks
            ]

    def _settle_seconds(self, rail) -> float:
        return rail.settle_seconds if self.settle_delay is None else self.settle_delay

    def deposit_address(self, venue: str, asset: str, network: str) -> DepositAddress:
        with self._lock:
            v = self._venue(venue)
            if network == "SEPA" and asset in v.spec.fiat_deposits:
                return DepositAddress(venue=v.name, asset=asset, network="SEPA", address=venue_iban(v.name))
            if any(r.asset == asset and r.network == network for r in v.spec.networks):
                return DepositAddress(
                    venue=v.name, asset=asset, network=network, address=crypto_address(v.name, asset, network)
                )
            raise _rejected("unsupported_network", f"{v.name} takes no {asset} deposits over {network!r}")

    def withdrawals(self, venue: str) -> list[Withdrawal]:
        with self._lock:
            self._advance()
            return [w.model() for w in self._venue(venue).withdrawals.values()]

    def withdrawal_by_key(self, venue: str, idempotency_key: str) -> Withdrawal:
        with self._lock:
            self._advance()
            v = self._venue(venue)
            wd_id = v.by_idempotency_key.get(idempotency_key)
            if wd_id is None:
                raise _not_found("withdrawal_not_found", f"{v.name}: no withdrawal with key {idempotency_key!r}")
            return v.withdrawals[wd_id].model()

    # ------------------------------------------------------------------ admin

    def credit(self, venue: str, asset: str, amount: float) -> Balance:
        """Add `amount` (negative: remove) to a venue's wallet; e.g. fiat delivered by Wise."""
        with self._lock:
            v = self._venue(venue)
            if not math.isfinite(amount) or amount == 0:
                raise _rejected("bad_request", f"credit amount must be a non-zero number, got {amount!r}")
            if amount < 0 and self._free(v, asset) + amount < -_EPS:
                raise _rejected("insufficient_funds", f"{v.name}: cannot debit {-amount} {asset}")
            v.wallet[asset] = v.wallet.get(asset, 0.0) + amount
            return self.balances(venue)[asset]

    def set_positions(
        self, venue: str, positions: Iterable[Mapping[str, Any] | PositionSpec | Position]
    ) -> list[Position]:
        """Replace a venue's open positions; `entry_price` defaults to the current mark."""
        with self._lock:
            v = self._venue(venue)
            parsed = []
            for raw in positions:
                item = _as_mapping(raw)
                symbol = item.get("symbol")
                if self._perp(v, symbol) is None:
                    raise _rejected("unknown_symbol", f"{v.name} lists no perpetual {symbol!r}")
                side = item.get("side")
                if side not in {"long", "short"}:
                    raise _rejected("bad_request", f"position side must be long or short, got {side!r}")
                size = float(item.get("size", 0.0))
                if size < 0:
                    raise _rejected("bad_request", "position size must be >= 0 (use side for direction)")
                entry = item.get("entry_price")
                entry = self._mark(v.name, symbol) if entry is None else float(entry)
                parsed.append((symbol, side, size, entry))
            v.positions.clear()
            for symbol, side, size, entry in parsed:
                self._set_position(v, symbol, side, size, entry)
            return self.positions(venue)

    def _set_position(self, v: _Venue, symbol: str, side: str, size: float, entry: float) -> None:
        if size > _EPS:
            v.positions[symbol] = _Pos(side=side, size=size, entry_price=entry)
        else:
            v.positions.pop(symbol, None)

    def shock(
        self,
        pct: float = 0.0,
        *,
        venue: str | None = None,
        symbol: str | None = None,
        funding_rate: float | None = None,
    ) -> list[dict[str, Any]]:
        """Move prices by `pct` (e.g. -0.1 = -10 %) and/or pin a funding rate.

        Without `venue` the index moves (every venue's markets on that base);
        with `venue` only that venue's marks move (its premium shifts and stays
        shifted). `symbol` narrows to one market (its base, without `venue`).
        `funding_rate` sets the matching perps' rate and keeps it there.
        Resting limit and stop orders that the new marks cross are executed.
        """
        with self._lock:
            if venue is not None:
                self._venue(venue)
            if pct <= -1:
                raise _rejected("bad_request", "pct must be > -1")
            def selected(name: str, sym: str) -> bool:
                if venue is not None and name != venue:
                    return False
                if symbol is None or sym == symbol:
                    return True
                # An index move reaches every market on the same base.
                return venue is None and _base_of(sym) == _base_of(symbol)

            keys = [(name, sym) for (name, sym) in self._premium if selected(name, sym)]
            if not keys:
                raise _rejected("unknown_symbol", f"no market matches venue={venue!r} symbol={symbol!r}")
            if pct:
                if venue is None:
                    for base in sorted({_base_of(sym) for _, sym in keys}):
                        self._index[base] *= 1 + pct
                else:
                    for key in keys:
                        shifted = (1 + self._premium[key]) * (1 + pct) - 1
                        self._premium_anchor[key] += shifted - self._premium[key]
                        self._premium[key] = shifted
            if funding_rate is not None:
                for key in keys:
                    if key in self._funding:
                        self._funding[key] = self._funding_anchor[key] = float(funding_rate)
            self._process_resting_orders()
            return [
                {
                    "venue": name,
                    "symbol": sym,
                    "mark_price": self._mark(name, sym),
                    "funding_rate": self._funding.get((name, sym)),
                }
                for name, sym in keys
            ]

    def tick(self, steps: int = 1) -> None:
        """Advance the seeded random walk `steps` steps (one step ≈ one second)."""
        with self._lock:
            for _ in range(steps):
                self._step()
                self._process_resting_orders()
            self._advance()

    def _step(self) -> None:
        rng = self._rng
        for base in sorted(self._index):
            shock = rng.gauss(0.0, self._volatility.get(base, 0.0002))
            if base == "USDC":  # a stablecoin hugs its peg
                self._index[base] = 1.0 + 0.9 * (self._index[base] - 1.0) + shock
            else:
                self._index[base] *= math.exp(shock)
        for key in sorted(self._premium):
            anchor = self._premium_anchor[key]
            drift = _PREMIUM_REVERSION * (self._premium[key] - anchor)
            self._premium[key] = anchor + drift + rng.gauss(0.0, _PREMIUM_SIGMA)
        for key in sorted(self._funding):
            anchor = self._funding_anchor[key]
            interval = self._perp(self._venues[key[0]], key[1]).funding_interval_hours
            sigma = _FUNDING_SIGMA_PER_8H * interval / 8.0
            self._funding[key] = anchor + _FUNDING_REVERSION * (self._funding[key] - anchor) + rng.gauss(0.0, sigma)
        self.ticks += 1

    # ------------------------------------------------------------------ orders

    def place_order(
        self,
        venue: str,
        *,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: float | None = None,
        stop_price: float | None = None,
        client_order_id: str | None = None,
        reduce_only: bool = False,
        received_at: float | None = None,
    ) -> tuple[Order, bool]:
        """Place an order; returns (order, created). A known `client_order_id` returns the first order."""
        with self._lock:
            v = self._venue(venue)
            if client_order_id and client_order_id in v.by_client_id:
                return v.orders[v.by_client_id[client_order_id]].model(), False
            self._validate_order(v, symbol, type, side, amount, price, stop_price, reduce_only)
            amount = float(amount)
            if reduce_only:
                amount = self._reduce_only_amount(v, symbol, side, amount)
            mark = self._mark(v.name, symbol)
            if type == "stop_market" and self._stop_triggered(side, stop_price, mark):
                raise _rejected(
                    "would_immediately_trigger",
                    f"{v.name}: {side} stop at {stop_price} would trigger now (mark {mark:.2f})",
                )
            order_id = f"{v.name}-{v.next_order}"
            rec = _OrderRec(
                id=order_id,
                client_order_id=client_order_id or f"sim-{order_id}",
                venue=v.name,
                symbol=symbol,
                type=type,
                side=side,
                amount=amount,
                price=float(price) if price is not None else None,
                stop_price=float(stop_price) if stop_price is not None else None,
                reduce_only=bool(reduce_only),
                received_at=self._clock() if received_at is None else received_at,
            )
            if type == "market" or (type == "limit" and self._limit_crosses(side, rec.price, mark)):
                fill_price = self._taker_price(v, side, mark)
                if type == "limit":
                    fill_price = min(fill_price, rec.price) if side == "buy" else max(fill_price, rec.price)
                self._check_funds(v, symbol, side, amount, fill_price, reduce_only)
                self._fill(v, rec, fill_price, v.spec.taker_fee)
            elif type == "limit":
                self._check_funds(v, symbol, side, amount, rec.price, reduce_only)
            v.next_order += 1
            v.orders[order_id] = rec
            v.by_client_id[rec.client_order_id] = order_id
            return rec.model(), True

    def _validate_order(self, v, symbol, type, side, amount, price, stop_price, reduce_only) -> None:
        if not self._is_market(v, symbol):
            raise _rejected("unknown_symbol", f"{v.name} lists no market {symbol!r}")
        if type not in {"market", "limit", "stop_market"}:
            raise _rejected("bad_request", f"order type must be market, limit or stop_market, got {type!r}")
        if side not in {"buy", "sell"}:
            raise _rejected("bad_request", f"side must be buy or sell, got {side!r}")
        if not isinstance(amount, (int, float)) or not math.isfinite(amount) or amount <= 0:
            raise _rejected("bad_request", f"amount must be a positive number, got {amount!r}")
        if type == "limit" and (price is None or price <= 0):
            raise _rejected("bad_request", "a limit order needs a positive price")
        if type == "stop_market" and (stop_price is None or stop_price <= 0):
            raise _rejected("bad_request", "a stop_market order needs a positive stop_price")
        if reduce_only and _settle_of(symbol) is None:
            raise _rejected("bad_request", "reduce_only applies to perpetuals only")

    def _reduce_only_amount(self, v: _Venue, symbol: str, side: str, amount: float) -> float:
        """Clamp a reduce-only order to the position it reduces; refuse one that would open or add."""
        pos = v.positions.get(symbol)
        closing_side = None if pos is None else ("sell" if pos.side == "long" else "buy")
        if closing_side != side:
            held = "no position" if pos is None else f"a {pos.side} position"
            raise _rejected(
                "reduce_only_would_increase",
                f"{v.name}: reduce-only {side} on {symbol} would increase exposure ({held})",
            )
        return min(amount, pos.size)

    @staticmethod
    def _stop_triggered(side: str, stop_price: float, mark: float) -> bool:
        return mark <= stop_price if side == "sell" else mark >= stop_price

    @staticmethod
    def _limit_crosses(side: str, price: float, mark: float) -> bool:
        return mark <= price if side == "buy" else mark >= price

    def _taker_price(self, v: _Venue, side: str, mark: float) -> float:
        slip = v.spec.slippage * self._fill_rng.uniform(0.5, 1.5)
        return mark * (1 + slip) if side == "buy" else mark * (1 - slip)

    def _check_funds(self, v, symbol, side, amount, price, reduce_only) -> None:
        settle = _settle_of(symbol)
        if settle is None:
            if side == "buy":
                need, asset = amount * price * (1 + v.spec.taker_fee), QUOTE
            else:
                need, asset = amount, _base_of(symbol)
        else:
            if reduce_only:
                return
            pos = v.positions.get(symbol)
            delta = amount if side == "buy" else -amount
            current = pos.signed if pos else 0.0
            # Margin is needed only for the part that opens or adds exposure (not for the part that closes).
            added = abs(delta) if current * delta >= 0 else max(0.0, abs(delta) - abs(current))
            need, asset = added * price / v.spec.leverage + amount * price * v.spec.taker_fee, settle
        free = self._free(v, asset)
        if need > free + _EPS:
            code = "insufficient_funds" if settle is None else "insufficient_margin"
            raise _rejected(code, f"{v.name}: needs {need:.8f} {asset}, {max(free, 0.0):.8f} free")

    def _fill(self, v: _Venue, rec: _OrderRec, price: float, fee_rate: float) -> None:
        settle = _settle_of(rec.symbol)
        notional = rec.amount * price
        if settle is None:
            base = _base_of(rec.symbol)
            fee = notional * fee_rate
            if rec.side == "buy":
                v.wallet[QUOTE] = v.wallet.get(QUOTE, 0.0) - notional - fee
                v.wallet[base] = v.wallet.get(base, 0.0) + rec.amount
            else:
                v.wallet[base] = v.wallet.get(base, 0.0) - rec.amount
                v.wallet[QUOTE] = v.wallet.get(QUOTE, 0.0) + notional - fee
        else:
            fee = notional * fee_rate
            realised = self._apply_to_position(v, rec.symbol, rec.amount if rec.side == "buy" else -rec.amount, price)
            v.wallet[settle] = v.wallet.get(settle, 0.0) + realised - fee
        rec.status = "closed"
        rec.filled = rec.amount
        rec.average = price
        rec.fee = fee

    def _apply_to_position(self, v: _Venue, symbol: str, delta: float, price: float) -> float:
        """Apply a signed fill to the position; returns the pnl it realises."""
        pos = v.positions.get(symbol)
        current = pos.signed if pos else 0.0
        if current == 0 or current * delta > 0:
            size = abs(current) + abs(delta)
            entry = ((abs(current) * pos.entry_price if pos else 0.0) + abs(delta) * price) / size
            self._set_position(v, symbol, "long" if delta > 0 else "short", size, entry)
            return 0.0
        closing = min(abs(delta), abs(current))
        direction = 1.0 if current > 0 else -1.0
        realised = closing * (price - pos.entry_price) * direction
        remaining = abs(delta) - abs(current)
        if remaining > _EPS:  # flipped through zero
            self._set_position(v, symbol, "long" if delta > 0 else "short", remaining, price)
        else:
            self._set_position(v, symbol, pos.side, abs(current) - closing, pos.entry_price)
        return realised

    def _process_resting_orders(self) -> None:
        for v in self._venues.values():
            for rec in list(v.orders.values()):
                if rec.status != "open":
                    continue
                mark = self._mark(v.name, rec.symbol)
                if rec.type == "stop_market" and self._stop_triggered(rec.side, rec.stop_price, mark):
                    self._execute_triggered(v, rec, self._taker_price(v, rec.side, mark), v.spec.taker_fee)
                elif rec.type == "limit" and self._limit_crosses(rec.side, rec.price, mark):
                    self._execute_triggered(v, rec, rec.price, v.spec.maker_fee)

    def _execute_triggered(self, v: _Venue, rec: _OrderRec, price: float, fee_rate: float) -> None:
        if rec.reduce_only:
            try:
                rec.amount = self._reduce_only_amount(v, rec.symbol, rec.side, rec.amount)
            except SimError:
                rec.status = "canceled"  # nothing left to reduce: the venue expires it
                return
        else:
            # A resting limit's own reservation is released as it fills.
            rec.status = "filling"
            try:
                self._check_funds(v, rec.symbol, rec.side, rec.amount, price, False)
            except SimError:
                rec.status = "rejected"
                return
        self._fill(v, rec, price, fee_rate)

    def cancel_order(self, venue: str, order_id: str) -> Order:
        """Cancel a resting order; cancelling a cancelled order returns it unchanged."""
        with self._lock:
            v = self._venue(venue)
            rec = self._order_rec(v, order_id)
            if rec.status == "open":
                rec.status = "canceled"
            elif rec.status != "canceled":
                raise _rejected("order_not_open", f"{v.name}: order {order_id} is {rec.status}")
            return rec.model()

    def cancel_all_orders(self, venue: str, symbol: str | None = None) -> list[Order]:
        with self._lock:
            v = self._venue(venue)
            cancelled = []
            for rec in v.orders.values():
                if rec.status == "open" and (symbol is None or rec.symbol == symbol):
                    rec.status = "canceled"
                    cancelled.append(rec.model())
            return cancelled

    # ------------------------------------------------------------------ withdrawals

    def withdraw(
        self,
        venue: str,
        *,
        asset: str,
        amount: float,
        address: str,
        network: str,
        idempotency_key: str,
        tag: str | None = None,
        fee_deducted: bool = False,
    ) -> tuple[Withdrawal, bool]:
        """Request a withdrawal; returns (withdrawal, created). A known key returns the first one.

        By default `amount` arrives and `amount + fee` leaves (the native API, OKX, Bybit's default).
        `fee_deducted`: `amount` leaves and `amount - fee` arrives, as Binance's `withdraw/apply` does; the
        record then holds what arrives as its `amount` (so `amount + fee` is still what left).
        """
        with self._lock:
            self._advance()
            v = self._venue(venue)
            if not idempotency_key:
                raise _rejected("bad_request", "idempotency_key is required")
            if idempotency_key in v.by_idempotency_key:
                return v.withdrawals[v.by_idempotency_key[idempotency_key]].model(), False
            if not isinstance(amount, (int, float)) or not math.isfinite(amount) or amount <= 0:
                raise _rejected("bad_request", f"amount must be a positive number, got {amount!r}")
            rail = next((r for r in v.spec.networks if r.asset == asset and r.network == network), None)
            if rail is None:
                hint = " (fiat leaves a venue through Wise, not here)" if network == "SEPA" else ""
                raise _rejected("unsupported_network", f"{v.name} cannot withdraw {asset} over {network!r}{hint}")
            if amount < rail.min_amount:
                raise _rejected(
                    "below_min_amount", f"{v.name}: minimum {asset} withdrawal over {network} is {rail.min_amount}"
                )
            if fee_deducted and amount <= rail.fee:
                raise _rejected(
                    "below_min_amount", f"{v.name}: {amount} {asset} does not cover the {rail.fee} fee over {network}"
                )
            if not address:
                raise _rejected("bad_request", "address is required")
            destination = self.resolve_address(address)
            if destination is not None:
                to_venue, to_asset, to_network = destination
                if (to_asset, to_network) != (asset, network):
                    raise _rejected(
                        "address_mismatch",
                        f"address takes {to_asset} over {to_network}, not {asset} over {network}",
                    )
                if to_venue == v.name:
                    raise _rejected("bad_request", "cannot withdraw to the venue's own deposit address")
            free = self._free(v, asset)
            leaves = amount if fee_deducted else amount + rail.fee
            if leaves > free + _EPS:
                raise _rejected(
                    "insufficient_funds",
                    f"{v.name}: withdrawing {amount} {asset}{'' if fee_deducted else f' + fee {rail.fee}'} needs more "
                    f"than the {max(free, 0.0)} free",
                )
            now = self._clock()
            broadcast_at = now + self.withdrawal_hold
            rec = _WithdrawalRec(
                id=f"wd-{v.name}-{v.next_withdrawal}",
                idempotency_key=idempotency_key,
                from_venue=v.name,
                address=address,
                to_venue=destination[0] if destination else None,
                asset=asset,
                amount=float(amount) - rail.fee if fee_deducted else float(amount),
                fee=rail.fee,
                network=network,
                tag=tag,
                created_at=now,
                broadcast_at=broadcast_at,
                arrives_at=broadcast_at + self._settle_seconds(rail),
            )
            v.next_withdrawal += 1
            v.withdrawals[rec.id] = rec
            v.by_idempotency_key[idempotency_key] = rec.id
            return rec.model(), True

    def cancel_withdrawal(self, venue: str, withdrawal_id: str) -> Withdrawal:
        """Cancel a withdrawal still pending; cancelling a cancelled one returns it unchanged."""
        with self._lock:
            self._advance()
            v = self._venue(venue)
            rec = v.withdrawals.get(withdrawal_id)
            if rec is None:
                raise _not_found("withdrawal_not_found", f"{v.name}: no withdrawal {withdrawal_id!r}")
            if rec.status == "pending":
                rec.status = "canceled"
            elif rec.status != "canceled":
                raise _rejected("not_cancelable", f"{v.name}: withdrawal {withdrawal_id} is already {rec.status}")
            return rec.model()

    def advance(self) -> None:
        """Move withdrawals along by the clock (also done by every read)."""
        with self._lock:
            self._advance()

    def _advance(self) -> None:
        now = self._clock()
        for v in self._venues.values():
            for rec in v.withdrawals.values():
                if rec.status == "pending" and now >= rec.broadcast_at:
                    rec.status = "broadcast"
                    v.wallet[rec.asset] = v.wallet.get(rec.asset, 0.0) - rec.amount - rec.fee
                if rec.status == "broadcast" and now >= rec.arrives_at:
                    rec.status = "completed"
                    if rec.to_venue is not None:
                        dest = self._venues[rec.to_venue]
                        dest.wallet[rec.asset] = dest.wallet.get(rec.asset, 0.0) + rec.amount


def _as_mapping(raw: Any) -> Mapping[str, Any]:
    if isinstance(raw, Mapping):
        return raw
    if hasattr(raw, "model_dump"):
        return raw.model_dump()
    if hasattr(raw, "__dataclass_fields__"):
        return {name: getattr(raw, name) for name in raw.__dataclass_fields__}
    raise _rejected("bad_request", f"cannot read a position from {type(raw).__name__}")
