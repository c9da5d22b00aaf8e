"""What the simulated venues look like at start: balances, perps, positions, rails.

Plain frozen dataclasses, so a test can build its own world (`VenueSpec(...)`)
and `ExchangeState.reset()` can rebuild the seeded initial state from them.
Numbers are shaped after the real venues (fees per network, funding intervals:
8 h on most, 4 h on kraken, 1 h on hyperliquid) but the settle delays are
seconds, not minutes, so tests and the demo stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

# Index prices in USDT per unit of each base asset, and their per-tick volatility
# (log-return standard deviation; one tick is one second in the demo).
DEFAULT_INDEX_PRICES: Mapping[str, float] = MappingProxyType(
    {"BTC": 65_000.0, "ETH": 3_200.0, "SOL": 150.0, "EUR": 1.08, "USDC": 1.0}
)
DEFAULT_INDEX_VOLATILITY: Mapping[str, float] = MappingProxyType(
    {"BTC": 0.0002, "ETH": 0.0003, "SOL": 0.0005, "EUR": 0.00002, "USDC": 0.00001}
)

QUOTE = "USDT"  # every simulated market is quoted in USDT


@dataclass(frozen=True)
class PerpSpec:
    """A USDT-margined perpetual listed on a venue, with its steady funding rate."""

    symbol: str  # ccxt unified, e.g. "BTC/USDT:USDT"
    funding_rate: float  # steady rate per interval (the random walk reverts to it)
    funding_interval_hours: float = 8.0
    basis: float = 0.0  # steady premium of this venue's mark over the index (fraction)


@dataclass(frozen=True)
class PositionSpec:
    """An open position at start."""

    symbol: str
    side: str  # "long" | "short"
    size: float
    entry_price: float


@dataclass(frozen=True)
class NetworkSpec:
    """A withdrawal rail: `asset` leaves the venue over `network` for a fixed fee."""

    asset: str
    network: str
    fee: float
    min_amount: float = 0.0
    settle_seconds: float = 1.5  # from broadcast until credited at the destination


@dataclass(frozen=True)
class VenueSpec:
    """One simulated venue at start."""

    name: str
    balances: Mapping[str, float]  # wallet balance per asset
    perps: tuple[PerpSpec, ...] = ()
    positions: tuple[PositionSpec, ...] = ()
    networks: tuple[NetworkSpec, ...] = ()
    fiat_deposits: tuple[str, ...] = ("EUR",)  # fiat assets with an IBAN (SEPA) deposit address
    leverage: float = 5.0
    maintenance_margin: float = 0.005
    taker_fee: float = 0.0005
    maker_fee: float = 0.0002
    slippage: float = 0.0002  # market orders fill this much worse than mark, times U(0.5, 1.5)
    spot_assets: tuple[str, ...] = field(default=())  # tradable against USDT; default: every non-USDT balance

    def spot_symbols(self) -> list[str]:
        assets = self.spot_assets or tuple(a for a in self.balances if a != QUOTE)
        return [f"{asset}/{QUOTE}" for asset in assets]


def _usdt_rails(trc20: float, erc20: float, sol: float | None, arbitrum: float) -> tuple[NetworkSpec, ...]:
    rails = [
        NetworkSpec("USDT", "TRC20", trc20, min_amount=10.0, settle_seconds=1.0),
        NetworkSpec("USDT", "ERC20", erc20, min_amount=20.0, settle_seconds=2.0),
        NetworkSpec("USDT", "ARBITRUM", arbitrum, min_amount=5.0, settle_seconds=1.0),
    ]
    if sol is not None:
        rails.append(NetworkSpec("USDT", "SOL", sol, min_amount=5.0, settle_seconds=0.5))
    return tuple(rails)


_USDC_RAILS = (
    NetworkSpec("USDC", "ERC20", 4.0, min_amount=20.0, settle_seconds=2.0),
    NetworkSpec("USDC", "SOL", 0.8, min_amount=5.0, settle_seconds=0.5),
    NetworkSpec("USDC", "ARBITRUM", 0.5, min_amount=5.0, settle_seconds=1.0),
)
_BTC_RAILS = (NetworkSpec("BTC", "BTC", 0.0002, min_amount=0.001, settle_seconds=2.0),)
_ETH_RAILS = (
    NetworkSpec("ETH", "ERC20", 0.0015, min_amount=0.01, settle_seconds=2.0),
    NetworkSpec("ETH", "ARBITRUM", 0.0002, min_amount=0.005, settle_seconds=1.0),
)


def default_venues() -> list[VenueSpec]:
    """The five venues of the local world: an approximately delta-neutral book.

    Two layers of perp positions, netted per market (one position per venue and symbol):
    cross-venue funding pairs (BTC long binance / short okx and long kraken / short
    hyperliquid, ETH short binance / long bybit, SOL short bybit / long hyperliquid),
    and short perps hedging the 5.5 BTC and 90 ETH of spot held on the venues. The
    hedge is left a small drift off neutral (BTC +0.04, ETH -0.45: a few thousand USD,
    just outside the default 1,000 USD band) so the first `funding_rate_hedge` run
    makes modest adjustments, as on a desk whose book moved since the last hedge.
    """
    return [
        VenueSpec(
            name="binance",
            balances={"USDT": 250_000.0, "USDC": 60_000.0, "EUR": 20_000.0, "BTC": 2.5, "ETH": 40.0},
            perps=(
                PerpSpec("BTC/USDT:USDT", 0.00010, 8.0, basis=0.0002),
                PerpSpec("ETH/USDT:USDT", 0.00010, 8.0, basis=0.0003),
                PerpSpec("SOL/USDT:USDT", 0.00012, 8.0, basis=0.0004),
            ),
            positions=(
                PositionSpec("BTC/USDT:USDT", "long", 1.5, 64_200.0),
                PositionSpec("ETH/USDT:USDT", "short", 52.0, 3_250.0),
            ),
            networks=_usdt_rails(1.0, 4.5, 1.0, 0.8) + _USDC_RAILS + _BTC_RAILS + _ETH_RAILS,
            leverage=5.0,
        ),
        VenueSpec(
            name="okx",
            balances={"USDT": 180_000.0, "USDC": 40_000.0, "EUR": 10_000.0, "BTC": 1.2, "ETH": 25.0},
            perps=(
                PerpSpec("BTC/USDT:USDT", 0.00008, 8.0, basis=0.0001),
                PerpSpec("ETH/USDT:USDT", 0.00009, 8.0, basis=0.0002),
            ),
            positions=(PositionSpec("BTC/USDT:USDT", "short", 2.7, 64_900.0),),
            networks=_usdt_rails(1.5, 5.0, 1.0, 0.5) + _USDC_RAILS + _BTC_RAILS + _ETH_RAILS,
            leverage=5.0,
        ),
        VenueSpec(
            name="bybit",
            balances={"USDT": 150_000.0, "USDC": 30_000.0, "EUR": 5_000.0, "BTC": 0.8, "ETH": 15.0},
            perps=(
                PerpSpec("BTC/USDT:USDT", 0.00012, 8.0, basis=0.0003),
                PerpSpec("ETH/USDT:USDT", 0.00011, 8.0, basis=0.0002),
                PerpSpec("SOL/USDT:USDT", 0.00015, 8.0, basis=0.0005),
            ),
            positions=(
                PositionSpec("BTC/USDT:USDT", "short", 3.26, 65_050.0),
                PositionSpec("ETH/USDT:USDT", "long", 12.0, 3_180.0),
                PositionSpec("SOL/USDT:USDT", "short", 300.0, 152.0),
            ),
            networks=_usdt_rails(1.0, 4.0, 1.0, 1.0) + _USDC_RAILS + _BTC_RAILS + _ETH_RAILS,
            leverage=5.0,
        ),
        VenueSpec(
            name="kraken",
            balances={"USDT": 90_000.0, "USDC": 20_000.0, "EUR": 150_000.0, "BTC": 1.0, "ETH": 10.0},
            perps=(
                PerpSpec("BTC/USDT:USDT", 0.00005, 4.0, basis=0.0001),
                PerpSpec("ETH/USDT:USDT", 0.00005, 4.0, basis=0.0001),
            ),
            positions=(
                PositionSpec("BTC/USDT:USDT", "long", 0.3, 65_100.0),
                PositionSpec("ETH/USDT:USDT", "short", 20.0, 3_190.0),
            ),
            networks=_usdt_rails(2.5, 6.0, None, 1.5) + _USDC_RAILS + _BTC_RAILS + _ETH_RAILS[:1],
            leverage=3.0,
            taker_fee=0.0005,
        ),
        VenueSpec(
            name="hyperliquid",
            balances={"USDT": 60_000.0, "USDC": 200_000.0, "BTC": 0.0, "ETH": 0.0},
            perps=(
                PerpSpec("BTC/USDT:USDT", 0.0000125, 1.0, basis=0.0004),
                PerpSpec("ETH/USDT:USDT", 0.0000125, 1.0, basis=0.0004),
                PerpSpec("SOL/USDT:USDT", 0.0000150, 1.0, basis=0.0006),
            ),
            positions=(
                PositionSpec("BTC/USDT:USDT", "short", 1.3, 65_300.0),
                PositionSpec("ETH/USDT:USDT", "short", 30.45, 3_205.0),
                PositionSpec("SOL/USDT:USDT", "long", 300.0, 149.0),
            ),
            # Hyperliquid moves stablecoins over Arbitrum only and has no fiat.
            networks=(
                NetworkSpec("USDC", "ARBITRUM", 1.0, min_amount=5.0, settle_seconds=1.0),
                NetworkSpec("USDT", "ARBITRUM", 1.0, min_amount=5.0, settle_seconds=1.0),
            ),
            fiat_deposits=(),
            leverage=10.0,
            taker_fee=0.00035,
            maker_fee=0.0001,
            spot_assets=("USDC",),
        ),
    ]
