"""Hedge targets: how far each base asset is from delta-neutral, and which perp orders fix it.

Pure: no Dagster, no I/O. The desk holds spot (BTC, ETH, ... on venues) and
perpetual positions across venues, and keeps the *net delta* per base asset at
a target (zero: delta-neutral)::

    net delta(asset) = Σ spot balance totals on every venue
                       + Σ signed perp sizes (long +, short -) on every venue

Units: sizes and deltas in base units (BTC), prices and notionals in USD
(USDT is taken as USD), funding rates as fractions per 8 h (see
`domain/funding.py`).

When the drift (net - target) is worth more than the tolerance band, the
adjustment goes to the perp market whose funding is most favourable for the
side needed: a short where the normalised funding is highest (shorts receive
positive funding), a long where it is lowest. An order that only shrinks an
existing opposite position on that market is reduce-only; when it would flip
the position it is split into a reduce-only close and an opening remainder
(unless a piece would be below the minimum notional).

`plan_hedges` returns a `HedgePlan`: per-asset `AssetDelta`s and the
`HedgeOrder` intents the `funding_rate_hedge` job places. `protective_stop`
builds the exchange-native stop that guards one position.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from arb_orchestration.domain.funding import DEFAULT_BASIS_HOURS, normalised
from arb_orchestration.domain.models import Balance, FundingRate, OrderType, Position, Side

# Assets worth 1 USD when no market prices them (USDT is the desk's USD).
STABLE_ASSETS = frozenset({"USD", "USDT", "USDC", "FDUSD", "DAI", "TUSD", "BUSD"})
_EPSILON = 1e-12

HedgeStatus = Literal["within_tolerance", "hedge", "partial", "no_market", "unpriced"]


def base_asset(symbol: str) -> str:
    """Base asset of a ccxt unified symbol: ``"BTC/USDT:USDT"`` -> ``"BTC"``."""
    return symbol.split("/", 1)[0]


def settle_asset(symbol: str) -> str | None:
    """Settle asset of a ccxt unified perp symbol: ``"BTC/USDC:USDC"`` -> ``"USDC"``; None for spot."""
    return symbol.split(":", 1)[1] if ":" in symbol else None


def is_perp(symbol: str) -> bool:
    """ccxt unified perp symbols carry their settle asset after a colon."""
    return ":" in symbol


def reference_price(asset: str, marks: Mapping[str, float]) -> float | None:
    """USD price of `asset` from a venue's mark prices, or None when nothing prices it.

    Tries the spot markets against USDT/USD/USDC, then the linear perps; a
    stablecoin with no market is taken at 1.
    """
    if asset in {"USD", "USDT"}:
        return 1.0
    for quote in ("USDT", "USD", "USDC"):
        for symbol in (f"{asset}/{quote}", f"{asset}/{quote}:{quote}"):
            price = marks.get(symbol)
            if price is not None and price > 0 and math.isfinite(price):
                return float(price)
    if asset in STABLE_ASSETS:
        return 1.0
    return None


@dataclass(frozen=True)
class HedgePolicy:
    """The tolerance band and where hedges may go.

    No order is planned while ``|drift| * price <= max(drift_tolerance_usd,
    min_notional_usd)``; no single order is smaller than `min_notional_usd`.
    `max_notional_per_market_usd` caps what one (venue, symbol) takes; the rest
    spills to the next-best market (None: no cap).
    """

    min_notional_usd: float = 100.0
    drift_tolerance_usd: float = 1_000.0
    hedge_assets: tuple[str, ...] = ("BTC", "ETH")  # evaluated even when no perp lists them
    target_delta: Mapping[str, float] = field(default_factory=dict)  # base units; default 0
    include_spot: bool = True
    venues: tuple[str, ...] | None = None  # where orders may go; None: every venue with a market
    max_notional_per_market_usd: float | None = None
    amount_decimals: int = 8

    def __post_init__(self) -> None:
        if self.min_notional_usd < 0 or self.drift_tolerance_usd < 0:
            raise ValueError("min_notional_usd and drift_tolerance_usd must be >= 0")
        if self.max_notional_per_market_usd is not None and self.max_notional_per_market_usd <= 0:
            raise ValueError("max_notional_per_market_usd must be > 0 (or None for no cap)")

    @property
    def band_usd(self) -> float:
        return max(self.drift_tolerance_usd, self.min_notional_usd)


@dataclass(frozen=True)
class HedgeOrder:
    """An order intent on one venue: what the hedge job (or the stop-loss) should place."""

    venue: str
    symbol: str
    side: Side
    amount: float  # base units, > 0
    reduce_only: bool = False
    type: OrderType = "market"
    stop_price: float | None = None
    base_asset: str = ""
    funding_rate_8h: float | None = None  # fraction per 8 h on this market when planned
    notional_usd: float | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if not (self.amount > 0 and math.isfinite(self.amount)):
            raise ValueError(f"order amount must be positive, got {self.amount!r}")
        if self.type == "stop_market" and self.stop_price is None:
            raise ValueError("a stop_market order needs a stop_price")


@dataclass(frozen=True)
class AssetDelta:
    """One base asset's exposure and what the plan does about it."""

    asset: str
    spot: float  # base units held on venues
    perp: float  # Σ signed perp sizes
    target: float
    price_usd: float | None
    tolerance_usd: float
    status: HedgeStatus
    planned: float = 0.0  # signed base units the planned orders add (+ buy, - sell)

    @property
    def net_delta(self) -> float:
        return self.spot + self.perp

    @property
    def drift(self) -> float:
        """Net delta minus target, base units (positive: too long)."""
        return self.net_delta - self.target

    @property
    def drift_usd(self) -> float | None:
        return None if self.price_usd is None else abs(self.drift) * self.price_usd

    @property
    def residual_after_plan(self) -> float:
        return self.drift + self.planned

    @property
    def within_tolerance(self) -> bool:
        return self.status == "within_tolerance"


@dataclass(frozen=True)
class HedgePlan:
    """Per-asset deltas and the orders that bring each back inside its band."""

    deltas: tuple[AssetDelta, ...]
    orders: tuple[HedgeOrder, ...]

    def delta(self, asset: str) -> AssetDelta:
        for item in self.deltas:
            if item.asset == asset:
                return item
        raise KeyError(asset)

    def orders_for(self, asset: str) -> list[HedgeOrder]:
        return [order for order in self.orders if order.base_asset == asset]

    @property
    def all_within_tolerance(self) -> bool:
        return all(item.within_tolerance for item in self.deltas)


@dataclass(frozen=True)
class _Market:
    venue: str
    symbol: str
    rate_8h: float


def _markets(funding_rates: Iterable[FundingRate], policy: HedgePolicy) -> dict[str, list[_Market]]:
    by_key: dict[tuple[str, str], _Market] = {}
    for rate in funding_rates:
        if not is_perp(rate.symbol):
            continue
        if policy.venues is not None and rate.venue not in policy.venues:
            continue
        by_key[(rate.venue, rate.symbol)] = _Market(rate.venue, rate.symbol, normalised(rate, DEFAULT_BASIS_HOURS))
    grouped: dict[str, list[_Market]] = {}
    for market in by_key.values():
        grouped.setdefault(base_asset(market.symbol), []).append(market)
    return grouped


def _rank(markets: list[_Market], side: Side, opposite: Mapping[tuple[str, str], float]) -> list[_Market]:
    # Sell (go shorter) where funding is highest: shorts collect positive funding.
    # Buy (go longer) where it is lowest. Ties: a market we can reduce, then by name.
    sign = -1.0 if side == "sell" else 1.0
    return sorted(
        markets,
        key=lambda m: (sign * m.rate_8h, 0 if opposite.get((m.venue, m.symbol), 0.0) > 0 else 1, m.venue, m.symbol),
    )


def plan_hedges(
    positions: Iterable[Position],
    spot_balances: Mapping[str, Mapping[str, Balance]],
    funding_rates: Iterable[FundingRate],
    prices: Mapping[str, float],
    policy: HedgePolicy | None = None,
) -> HedgePlan:
    """Hedge targets for every base asset the desk holds or trades.

    `spot_balances` is ``{venue: {asset: Balance}}``; `prices` is USD per base
    asset (``{"BTC": 65000.0}``). Assets covered: `policy.hedge_assets` plus the
    base of every perp position and every listed perp market.
    """
    policy = policy or HedgePolicy()
    positions = [p for p in positions if is_perp(p.symbol)]
    funding_rates = list(funding_rates)
    markets = _markets(funding_rates, policy)

    assets = set(policy.hedge_assets) | {base_asset(p.symbol) for p in positions} | set(markets)
    deltas: list[AssetDelta] = []
    orders: list[HedgeOrder] = []
    for asset in sorted(assets):
        spot = 0.0
        if policy.include_spot:
            spot = sum((balances[asset].total for balances in spot_balances.values() if asset in balances), 0.0)
        perp = sum((p.signed_size for p in positions if base_asset(p.symbol) == asset), 0.0)  # 0.0, not int 0, when flat
        target = float(policy.target_delta.get(asset, 0.0))
        price = prices.get(asset)
        if price is not None and not (price > 0 and math.isfinite(price)):
            price = None
        drift = spot + perp - target

        def delta(status: HedgeStatus, planned: float = 0.0) -> AssetDelta:
            return AssetDelta(
                asset=asset,
                spot=spot,
                perp=perp,
                target=target,
                price_usd=price,
                tolerance_usd=policy.band_usd,
                status=status,
                planned=planned,
            )

        if abs(drift) < _EPSILON:
            deltas.append(delta("within_tolerance"))
            continue
        if price is None:
            deltas.append(delta("unpriced"))
            continue
        if abs(drift) * price <= policy.band_usd:
            deltas.append(delta("within_tolerance"))
            continue
        asset_markets = markets.get(asset, [])
        if not asset_markets:
            deltas.append(delta("no_market"))
            continue

        side: Side = "sell" if drift > 0 else "buy"
        opposite_side = "long" if side == "sell" else "short"
        opposite = {
            (p.venue, p.symbol): p.size for p in positions if p.side == opposite_side and base_asset(p.symbol) == asset
        }
        remaining = round(abs(drift), policy.amount_decimals)
        asset_orders: list[HedgeOrder] = []
        for market in _rank(asset_markets, side, opposite):
            # `<= 0` as well: with min_notional_usd=0 the size checks alone would let a fully
            # covered drift (or a cap that rounds to 0) plan a zero-sized order on the next market.
            if remaining <= 0 or remaining * price < policy.min_notional_usd:
                break
            take = remaining
            if policy.max_notional_per_market_usd is not None:
                take = min(take, round(policy.max_notional_per_market_usd / price, policy.amount_decimals))
            if take <= 0 or take * price < policy.min_notional_usd:
                break
            asset_orders.extend(
                _orders_on_market(asset, market, side, take, opposite.get((market.venue, market.symbol), 0.0), price, policy)
            )
            remaining = round(remaining - take, policy.amount_decimals)
        planned = sum(o.amount if o.side == "buy" else -o.amount for o in asset_orders)
        residual_usd = abs(drift + planned) * price
        status: HedgeStatus = "hedge" if residual_usd <= policy.band_usd else "partial"
        orders.extend(asset_orders)
        deltas.append(delta(status, planned))
    return HedgePlan(deltas=tuple(deltas), orders=tuple(orders))


def _orders_on_market(
    asset: str,
    market: _Market,
    side: Side,
    amount: float,
    reducible: float,
    price: float,
    policy: HedgePolicy,
) -> list[HedgeOrder]:
    def order(size: float, reduce_only: bool, why: str) -> HedgeOrder:
        size = round(size, policy.amount_decimals)
        return HedgeOrder(
            venue=market.venue,
            symbol=market.symbol,
            side=side,
            amount=size,
            reduce_only=reduce_only,
            base_asset=asset,
            funding_rate_8h=market.rate_8h,
            notional_usd=size * price,
            reason=why,
        )

    funding = f"funding {market.rate_8h * 1e4:+.2f} bp/8h"
    if reducible >= amount - _EPSILON:
        return [order(amount, True, f"reduce {asset} exposure ({funding})")]
    if reducible > 0:
        # Rounded down: rounding a position reported with more decimals to the nearest would
        # make the reduce-only close larger than the position (the venue refuses or clamps it).
        close = _round_down(reducible, policy.amount_decimals)
        rest = amount - close
        if close > 0 and close * price >= policy.min_notional_usd and rest * price >= policy.min_notional_usd:
            return [
                order(close, True, f"close the opposite {asset} position ({funding})"),
                order(rest, False, f"open the {asset} hedge remainder ({funding})"),
            ]
    return [order(amount, False, f"hedge {asset} drift ({funding})")]


def _round_down(amount: float, decimals: int) -> float:
    """`amount` truncated to `decimals` (a hair of slack so 0.3, stored as 0.29999..., stays 0.3)."""
    scale = 10**decimals
    return math.floor(amount * scale + 1e-6) / scale


def hedge_orders(
    positions: Iterable[Position],
    spot_balances: Mapping[str, Mapping[str, Balance]],
    funding_rates: Iterable[FundingRate],
    prices: Mapping[str, float],
    policy: HedgePolicy | None = None,
) -> list[HedgeOrder]:
    """Just the order intents of `plan_hedges`."""
    return list(plan_hedges(positions, spot_balances, funding_rates, prices, policy).orders)


def protective_stop(position: Position, distance_pct: float, *, liquidation_buffer_pct: float = 0.5) -> HedgeOrder:
    """The reduce-only stop-market that closes `position` if the mark moves `distance_pct` % against it.

    `distance_pct` is in percent of the mark price (2.0 = 2 %). A long gets a
    sell stop below the mark, a short a buy stop above it, for the full size.
    When the liquidation price would be hit before the stop, the stop moves
    inside it by `liquidation_buffer_pct` % of the liquidation price (the reason
    says so): a stop beyond liquidation protects nothing.
    """
    if not (0 < distance_pct < 100):
        raise ValueError(f"distance_pct must be in (0, 100), got {distance_pct!r}")
    if liquidation_buffer_pct < 0:
        raise ValueError("liquidation_buffer_pct must be >= 0")
    if not position.size > 0:
        raise ValueError(f"no stop for an empty position on {position.venue} {position.symbol}")
    mark = position.mark_price
    if not (mark > 0 and math.isfinite(mark)):
        raise ValueError(f"mark price must be positive, got {mark!r}")

    liq = position.liquidation_price if position.liquidation_price and position.liquidation_price > 0 else None
    clamped = False
    if position.side == "long":
        side: Side = "sell"
        stop = mark * (1 - distance_pct / 100)
        if liq is not None and stop <= liq * (1 + liquidation_buffer_pct / 100):
            stop, clamped = liq * (1 + liquidation_buffer_pct / 100), True
    else:
        side = "buy"
        stop = mark * (1 + distance_pct / 100)
        if liq is not None and stop >= liq * (1 - liquidation_buffer_pct / 100):
            stop, clamped = liq * (1 - liquidation_buffer_pct / 100), True
    reason = f"protective stop {distance_pct:g}% from mark {mark:g}"
    if clamped and liq is not None and (stop >= mark if side == "sell" else stop <= mark):
        # The mark is already within the buffer of liquidation: the clamp would put a sell stop
        # above the mark (a buy stop below it), which fires at once or is refused. Halfway between
        # the mark and liquidation is still on the right side of both.
        stop = (mark + liq) / 2
        reason += f", halfway to liquidation price {liq:g} (the mark is within {liquidation_buffer_pct:g}% of it)"
    elif clamped:
        reason += f", moved inside liquidation price {liq:g}"
    return HedgeOrder(
        venue=position.venue,
        symbol=position.symbol,
        side=side,
        amount=position.size,
        reduce_only=True,
        type="stop_market",
        stop_price=round(stop, 8),
        base_asset=base_asset(position.symbol),
        notional_usd=position.notional,
        reason=reason,
    )
