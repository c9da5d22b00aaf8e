"""The venue interface: what sagas and assets need from an exchange.

Shaped after ccxt's unified API (method names and semantics), so the simulator
client (`SimVenueClient`) and the ccxt-backed client (`CcxtVenueClient`) both
fit it naturally. Every order and withdrawal carries an idempotency key the
caller derives (client order id / withdrawal key); implementations must, after
an ambiguous timeout, look the object up by that key before retrying.

`ExchangeResource` is the Dagster resource ops receive (`exchange`); it
hands out one `VenueClient` per venue name.
"""

from __future__ import annotations

import abc
from typing import Callable

from dagster import ConfigurableResource

from arb_orchestration.domain.models import (
    Balance,
    DepositAddress,
    FundingRate,
    NetworkFee,
    Order,
    OrderType,
    Position,
    Side,
    Withdrawal,
)


class UnknownVenueError(LookupError):
    """`venue(name)` was asked for a venue the resource is not configured with."""


def require_client_order_id(client_order_id: str) -> None:
    """Refuse an order without its idempotency key: without it a retry could place it twice."""
    if not client_order_id:
        raise ValueError("create_order needs a client_order_id (the idempotency key)")


def require_withdrawal_key(idempotency_key: str) -> None:
    """Refuse a withdrawal without its idempotency key: without it a retry could send money twice."""
    if not idempotency_key:
        raise ValueError("withdraw needs an idempotency_key")


class VenueClient(abc.ABC):
    """One exchange account. All methods are blocking and safe to call from threads."""

    name: str

    @abc.abstractmethod
    def fetch_balance(self) -> dict[str, Balance]: ...

    def fetch_spendable_balance(self) -> dict[str, Balance]:
        """What a withdrawal from this venue can actually spend, per asset.

        `fetch_balance` is the venue's money for the books: on exchanges that pay withdrawals from a wallet apart
        from the trading account (Binance spot/funding, OKX funding) it also counts what sits in that wallet. A
        withdrawal never spends that (it tops the wallet up from the trading account, see `sweep_to_trading`), so
        this is the trading account only there. The default is for venues whose trading and withdrawals share one
        account (the simulator's native client): the whole balance, `fetch_balance()`.
        """
        return self.fetch_balance()

    @abc.abstractmethod
    def fetch_positions(self) -> list[Position]: ...

    @abc.abstractmethod
    def fetch_funding_rates(self) -> list[FundingRate]: ...

    @abc.abstractmethod
    def fetch_mark_prices(self) -> dict[str, float]:
        """Mark price per unified symbol (perps) and per spot symbol."""

    @abc.abstractmethod
    def create_order(
        self,
        symbol: str,
        type: OrderType,
        side: Side,
        amount: float,
        price: float | None = None,
        *,
        client_order_id: str,
        reduce_only: bool = False,
        stop_price: float | None = None,
    ) -> Order:
        """Place an order; the same `client_order_id` twice returns the first order."""

    @abc.abstractmethod
    def cancel_order(self, order_id: str, symbol: str | None = None) -> Order: ...

    @abc.abstractmethod
    def cancel_all_orders(self, symbol: str | None = None) -> list[Order]: ...

    @abc.abstractmethod
    def fetch_open_orders(self, symbol: str | None = None) -> list[Order]: ...

    @abc.abstractmethod
    def fetch_order_by_client_id(self, client_order_id: str, symbol: str | None = None) -> Order | None:
        """Reconcile lookup after an ambiguous outcome; None when no such order exists."""

    @abc.abstractmethod
    def fetch_deposit_withdraw_fees(self) -> list[NetworkFee]: ...

    @abc.abstractmethod
    def fetch_deposit_address(self, asset: str, network: str) -> DepositAddress:
        """This venue's deposit address for `asset` on `network`."""

    @abc.abstractmethod
    def withdraw(
        self,
        asset: str,
        amount: float,
        *,
        address: str,
        network: str,
        idempotency_key: str,
        tag: str | None = None,
    ) -> Withdrawal:
        """Withdraw to `address` on `network`; the same key twice returns the first withdrawal."""

    @abc.abstractmethod
    def fetch_withdrawal(self, idempotency_key: str) -> Withdrawal | None: ...

    @abc.abstractmethod
    def cancel_withdrawal(self, withdrawal_id: str) -> Withdrawal:
        """Cancel a withdrawal that has not been broadcast yet (BusinessError otherwise)."""

    def sweep_to_trading(self, asset: str, *, at_most: float,
                         on_transfer: Callable[[str, float], None] | None = None) -> float:
        """Move at most `at_most` of `asset` from the wallet deposits land in into the trading account; returns
        what is known to have moved.

        For exchanges where deposits (and a failed withdrawal's top-up) sit outside the account margin is drawn
        from (Binance spot/funding, OKX funding). That wallet may hold money nobody asked to move (an operator's
        own funds), so the caller says how much is its own: what its legs credited there, or the top-up its
        failed withdrawal left. `at_most` is required; there is no "sweep everything". Moves
        `min(at_most, free balance)`, nothing when either is 0.

        `on_transfer(event, amount)` is called, when given, with `"sending"` before each transfer is requested,
        then `"moved"` once it is known to have moved (answered, or seen leaving the wallet) or `"not_moved"`
        when the exchange refused it. A transfer with `"sending"` and neither of the others has an unknown
        outcome: it counts against `at_most` and is never sent again (so what may have moved never exceeds
        the bound), and the caller should record it as such. Raising inside `on_transfer` before a transfer
        stops the sweep before that transfer is sent.

        The default is for venues with one wallet (the simulator's native client): nothing to move, 0.0.
        """
        return 0.0

    def take_withdrawal_top_up(self, idempotency_key: str) -> float:
        """What this client moved into its withdrawal wallet for withdrawal `idempotency_key` since the last call
        (confirmed transfers only), so the caller can record it durably: the bound of the sweep that moves it back
        if that withdrawal fails or is cancelled. 0.0 for venues with one wallet (the default)."""
        return 0.0

    def restore_withdrawal_top_up(self, idempotency_key: str, amount: float) -> None:
        """Tell the client what earlier attempts of withdrawal `idempotency_key` (this process or another) already
        moved into its withdrawal wallet, as the caller recorded it from `take_withdrawal_top_up`: a retried
        withdrawal then tops up only the rest. Nothing to do for venues with one wallet (the default)."""
        return None

    # Whether `withdraw` takes the keyword `on_top_up` and reports through it every transfer that tops its
    # withdrawal wallet up, so the caller can note a top-up durably before it is sent:
    #
    #     withdraw(..., on_top_up=callback)   callback(event, amount, transfer_id, wallet_before)
    #
    # `event` is "sending" before the transfer is requested (with `wallet_before`, the wallet's free balance of the
    # asset read right before it, else None), then "moved" once it is known to have moved (counted, also by
    # `take_withdrawal_top_up`) or "not_moved" once it is known not to have been applied. A "sending" with neither
    # after it has an unknown outcome: nothing is withdrawn meanwhile, and a retry in another process must be told
    # of it with `restore_pending_top_up`. `transfer_id` names the transfer (OKX: the clientId on the wire; an
    # exchange whose transfers take no id: a label, unique per transfer of the key). Raising in the callback on
    # "sending" stops the withdrawal before that transfer is sent. False (the default): `withdraw` takes no such
    # keyword (one wallet, nothing is topped up), and callers must not pass it.
    reports_withdrawal_top_ups: bool = False

    def restore_pending_top_up(self, idempotency_key: str, amount: float, transfer_id: str, *,
                               wallet_before: float | None = None) -> None:
        """Tell the client of a top-up for withdrawal `idempotency_key` that an earlier attempt (this process or
        another) reported "sending" and never resolved (see `reports_withdrawal_top_ups`), with the `amount`,
        `transfer_id` and `wallet_before` it reported. The next `withdraw` of that key resolves it before anything
        is moved: found moved, it counts (reported "moved") and is not topped up again; found not applied, it is
        sent once more (with the same id where the exchange takes one); still unknown, nothing is topped up or
        withdrawn (`TransientError`). Nothing to do for venues with one wallet (the default)."""
        return None

    def health(self) -> dict:
        """Circuit-breaker state and anything else worth showing in metadata."""
        return {}


class ExchangeResource(ConfigurableResource, abc.ABC):
    """All trading venues of the desk. Ops ask it for a `VenueClient` by name."""

    @abc.abstractmethod
    def venue_names(self) -> list[str]: ...

    @abc.abstractmethod
    def venue(self, name: str) -> VenueClient: ...

    def venues(self) -> list[VenueClient]:
        return [self.venue(name) for name in self.venue_names()]
