"""Typed market-state models shared by the venue implementations, the sagas and the assets.

Shaped after ccxt's unified structures (balance, position, funding rate, order,
withdrawal) so the simulator client and the ccxt-backed client return the same
things. Amounts are floats in the asset's own units; times are UTC epoch seconds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Side = Literal["buy", "sell"]
PositionSide = Literal["long", "short"]
OrderType = Literal["market", "limit", "stop_market"]
OrderStatus = Literal["open", "closed", "canceled", "rejected"]
WithdrawalStatus = Literal["pending", "broadcast", "completed", "canceled", "failed"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Balance(_Model):
    """One asset's balance on one venue."""

    asset: str
    free: float
    used: float
    total: float


class Position(_Model):
    """An open perpetual position. `size` is in base units and always positive."""

    venue: str
    symbol: str  # ccxt unified symbol, e.g. "BTC/USDT:USDT"
    side: PositionSide
    size: float = Field(ge=0)
    entry_price: float
    mark_price: float
    liquidation_price: float | None = None
    unrealized_pnl: float = 0.0

    @property
    def signed_size(self) -> float:
        return self.size if self.side == "long" else -self.size

    @property
    def notional(self) -> float:
        return self.size * self.mark_price


class FundingRate(_Model):
    """A perpetual's current funding rate, per its own funding interval."""

    venue: str
    symbol: str
    rate: float  # fraction per interval, e.g. 0.0001 = 1 bp per interval
    interval_hours: float = Field(gt=0)
    next_funding_time: float | None = None
    mark_price: float | None = None
    observed_at: float | None = None


class Order(_Model):
    """An order as the venue reports it. `received_at` is the venue's receipt time."""

    id: str
    client_order_id: str | None = None
    venue: str
    symbol: str
    type: OrderType
    side: Side
    amount: float
    price: float | None = None
    stop_price: float | None = None
    filled: float = 0.0
    average: float | None = None
    status: OrderStatus
    reduce_only: bool = False
    received_at: float | None = None


class NetworkFee(_Model):
    """What it costs to withdraw `asset` from a venue over `network` (a route-planner rail)."""

    asset: str
    network: str
    fee: float  # fixed fee in asset units
    fee_rate: float = 0.0
    min_amount: float = 0.0
    max_amount: float | None = None
    eta_seconds: float = 0.0


class DepositAddress(_Model):
    """Where to send `asset` over `network` to credit a venue (an IBAN for fiat over SEPA)."""

    venue: str
    asset: str
    network: str
    address: str
    tag: str | None = None


class Withdrawal(_Model):
    """A withdrawal from a venue to a deposit address on a network."""

    id: str
    idempotency_key: str
    from_venue: str
    address: str
    to_venue: str | None = None  # resolved by the venue when the address is a known venue's
    asset: str
    amount: float
    fee: float
    network: str
    status: WithdrawalStatus
    created_at: float | None = None
    arrives_at: float | None = None
