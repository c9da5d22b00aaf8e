"""A Wise-API-shaped simulator: quotes, recipients, transfers, balance funding, payouts.

It speaks the subset of the real Wise API the platform uses, with the real
paths and JSON field names (quotes v3, recipient accounts v1/v2, transfers v1,
balance funding v3, balances v4), so `WiseResource` talks to it exactly as it
would to the sandbox:

    GET  /v1/profiles, /v2/profiles                      one BUSINESS profile
    GET  /v4/profiles/{p}/balances?types=STANDARD        multi-currency balances
    POST /v3/profiles/{p}/quotes                         rate locked for `quote_ttl`
    GET  /v3/profiles/{p}/quotes/{quoteId}
    POST /v1/accounts                                    IBAN recipient
    GET  /v2/accounts?profile=&currency=&size=&seekPosition=&sort=
                                                         {"content": [...], "size", "seekPositionForCurrent",
                                                          "seekPositionForNext"}: a page (20, also the most)
    GET  /v2/accounts/{id}
    POST /v1/transfers                                   idempotent on customerTransactionId
    GET  /v1/transfers?profile=&status=&createdDateStart=&createdDateEnd=&limit=&offset=
                                                         oldest first; dates inclusive
    GET  /v1/transfers/{id}
    PUT  /v1/transfers/{id}/cancel                       until funds_converted (a funded one is refunded)
    POST /v3/profiles/{p}/transfers/{id}/payments        {"type": "BALANCE"} -> 201; a second one -> 422

Error answers are `{"errors": [{"code", "message", "path"?, "arguments"}]}`, as Wise's 4xx are.

After funding a transfer moves `incoming_payment_waiting → processing →
funds_converted → outgoing_payment_sent` over `settle_delay` seconds. Just
before it shows `outgoing_payment_sent` the simulator pays the recipient IBAN
through the `deliver(iban, currency, amount) -> bool` callback, exactly once;
a payout the callback refuses bounces (`bounced_back → processing → cancelled →
funds_refunded`, Wise's unhappy path) and the money returns to the balance. The simulator knows nothing about the exchange
simulator: the local world wires the callback to it. A cancelled funded transfer is refunded at once, unless
a test holds the refund (`state.refund_delay` seconds, `math.inf` until `state.release_refunds()`).

Faults are injected per operation (names in `OPERATIONS`), over HTTP at
`POST /admin/faults` or with `set_fault()`: latency, 5xx, 429 + Retry-After,
and timeout-after-commit (the request is applied, the response is dropped).
Each fires for `count` requests, or with probability `rate` from a seeded RNG.

Everything below the HTTP layer is plain Python (`WiseState`, `WiseSimulator.serve`),
so the state machine is unit-tested without sockets and
`WiseSimulator.mock_transport()` gives httpx an in-process transport.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import math
import os
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Protocol
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("arb_orchestration.sim.wise")

# Transfer statuses, as Wise names them.
WAITING = "incoming_payment_waiting"
PROCESSING = "processing"
FUNDS_CONVERTED = "funds_converted"
SENT = "outgoing_payment_sent"
CANCELLED = "cancelled"
BOUNCED_BACK = "bounced_back"
FUNDS_REFUNDED = "funds_refunded"
# Wise cancels "up until the transfer has been processed and funds converted".
CANCELLABLE = frozenset({WAITING, PROCESSING})
# GET /v2/accounts answers at most this many recipients a page, whatever `size` asks.
MAX_RECIPIENT_PAGE_SIZE = 20

# Mid-market rates, units of currency per 1 EUR.
MID_RATES = {"EUR": 1.0, "USD": 1.085, "GBP": 0.855, "CHF": 0.945, "PLN": 4.31, "SEK": 11.45, "DKK": 7.46}
# Fixed fee per transfer in the source currency, plus a variable fee on conversions.
FIXED_FEES = {"EUR": 0.39, "USD": 0.50, "GBP": 0.35, "CHF": 0.45}
CONVERSION_FEE_RATE = 0.0041
BANK_TRANSFER_EXTRA_FEE = 0.20  # pay-in by bank transfer costs a bit more than from balance

OPERATIONS = (
    "list_profiles",
    "balances",
    "create_quote",
    "get_quote",
    "create_recipient",
    "list_recipients",
    "get_recipient",
    "create_transfer",
    "list_transfers",
    "get_transfer",
    "cancel_transfer",
    "fund_transfer",
)
FAULT_KINDS = ("latency", "error", "rate_limit", "timeout_after_commit")

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class PayoutSink(Protocol):
    """Where payouts land: anything with `deliver(iban, currency, amount) -> bool`."""

    def deliver(self, iban: str, currency: str, amount: float) -> bool: ...


Deliver = Callable[[str, str, float], bool]


# GET /v2/accounts answers at most this many recipients per page unless `size` asks otherwise (Wise's default).
DEFAULT_RECIPIENT_PAGE_SIZE = 20


class WiseApiError(Exception):
    """An error answer in Wise's shape: HTTP status, an error code and a message."""

    def __init__(self, status: int, code: str, message: str, path: str | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.path = path

    def body(self) -> dict:
        # Wise's 4xx shape: an `errors` array and nothing at the top level.
        error: dict = {"code": self.code, "message": self.message, "arguments": []}
        if self.path:
            error["path"] = self.path
        return {"errors": [error]}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _wise_datetime(ts: float) -> str:
    # Transfers use Wise's older "YYYY-MM-DD HH:MM:SS" (UTC) format.
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _money(value: float) -> float:
    return round(value + 0.0, 2)


def normalise_iban(iban: str) -> str:
    """IBANs compare without spaces and case."""
    return re.sub(r"\s+", "", iban).upper()


# --------------------------------------------------------------------------- state


@dataclass
class SimQuote:
    id: str
    profile: int
    user: int
    source_currency: str
    target_currency: str
    source_amount: float
    target_amount: float
    rate: float
    fee: float
    provided_amount_type: str
    created_at: float
    expires_at: float
    settle_delay: float

    def _option(self, pay_in: str, extra_fee: float, delay: float) -> dict:
        fee = _money(self.fee + extra_fee)
        return {
            "disabled": False,
            "estimatedDelivery": _iso(self.created_at + delay),
            "formattedEstimatedDelivery": "in seconds" if delay < 60 else "by tomorrow",
            "estimatedDeliveryDelays": [],
            "fee": {"transferwise": fee, "payIn": _money(extra_fee), "discount": 0.0, "partner": 0.0, "total": fee},
            "feePercentage": round(fee / self.source_amount, 4) if self.source_amount else 0.0,
            "sourceAmount": self.source_amount,
            "targetAmount": self.target_amount if extra_fee == 0 else _money(self.target_amount - extra_fee * self.rate),
            "sourceCurrency": self.source_currency,
            "targetCurrency": self.target_currency,
            "payIn": pay_in,
            "payOut": "BANK_TRANSFER",
            "allowedProfileTypes": ["PERSONAL", "BUSINESS"],
        }

    def to_json(self) -> dict:
        # Wise puts only the amount that was asked for at the top level (a targetAmount quote has
        # no top-level sourceAmount); each payment option carries both.
        asked = {"sourceAmount": self.source_amount} if self.provided_amount_type == "SOURCE" else {"targetAmount": self.target_amount}
        return {
            "id": self.id,
            "sourceCurrency": self.source_currency,
            "targetCurrency": self.target_currency,
            **asked,
            "payOut": "BANK_TRANSFER",
            "preferredPayIn": "BALANCE",
            "rate": self.rate,
            "createdTime": _iso(self.created_at),
            "user": self.user,
            "profile": self.profile,
            "rateType": "FIXED",
            "rateExpirationTime": _iso(self.expires_at),
            "expirationTime": _iso(self.expires_at),
            "providedAmountType": self.provided_amount_type,
            "status": "PENDING",
            "paymentOptions": [
                self._option("BALANCE", 0.0, self.settle_delay),
                self._option("BANK_TRANSFER", BANK_TRANSFER_EXTRA_FEE, self.settle_delay + 86400),
            ],
            "notices": [],
        }


@dataclass
class SimRecipient:
    id: int
    profile: int
    user: int
    currency: str
    account_holder_name: str
    iban: str
    legal_type: str

    @property
    def country(self) -> str | None:
        head = normalise_iban(self.iban)[:2]
        return head if head.isalpha() else None

    def to_v1(self) -> dict:
        return {
            "id": self.id,
            "business": self.profile,
            "profile": self.profile,
            "user": self.user,
            "accountHolderName": self.account_holder_name,
            "currency": self.currency,
            "country": self.country,
            "type": "iban",
            "active": True,
            "details": {"legalType": self.legal_type, "iban": self.iban},
        }

    def to_v2(self) -> dict:
        return {
            "id": self.id,
            "creatorId": self.user,
            "profileId": self.profile,
            "name": {"fullName": self.account_holder_name},
            "currency": self.currency,
            "country": self.country,
            "type": "iban",
            "legalEntityType": self.legal_type,
            "active": True,
            "details": {"iban": self.iban},
            "accountSummary": normalise_iban(self.iban),
        }


@dataclass
class SimTransfer:
    id: int
    profile: int
    user: int
    target_account: int
    quote_uuid: str
    customer_transaction_id: str
    reference: str
    rate: float
    source_currency: str
    source_value: float
    target_currency: str
    target_value: float
    created_at: float
    status: str = WAITING
    funded_at: float | None = None
    history: list[tuple[str, float]] = field(default_factory=list)
    delivering: bool = False
    delivered: bool | None = None  # None: not paid out yet; True/False: payout accepted/refused
    refund_due_at: float | None = None  # a cancelled funded transfer whose refund is held (see `refund_delay`)

    def set_status(self, status: str, now: float) -> None:
        self.status = status
        self.history.append((status, now))

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "user": self.user,
            "targetAccount": self.target_account,
            "sourceAccount": None,
            "quote": None,
            "quoteUuid": self.quote_uuid,
            "status": self.status,
            "reference": self.reference,
            "rate": self.rate,
            "created": _wise_datetime(self.created_at),
            "business": self.profile,
            "transferRequest": None,
            "details": {"reference": self.reference},
            "hasActiveIssues": False,
            "sourceCurrency": self.source_currency,
            "sourceValue": self.source_value,
            "targetCurrency": self.target_currency,
            "targetValue": self.target_value,
            "customerTransactionId": self.customer_transaction_id,
        }


@dataclass(frozen=True)
class Delivery:
    """One payout attempted through the callback."""

    transfer_id: int
    iban: str
    currency: str
    amount: float
    accepted: bool
    at: float


class WiseState:
    """The simulator's books and its transfer state machine. Thread-safe; no I/O.

    `clock` is injectable so the state machine can be driven in unit tests;
    `advance()` moves funded transfers along and pays them out.
    """

    def __init__(
        self,
        *,
        deliver: Deliver | PayoutSink | None = None,
        balances: dict[str, float] | None = None,
        profile_id: int = 1001,
        user_id: int = 5001,
        seed: int = 42,
        settle_delay: float = 1.0,
        quote_ttl: float = 1800.0,
        clock: Callable[[], float] = time.time,
    ):
        if deliver is not None and not callable(deliver):
            deliver = deliver.deliver  # a PayoutSink object
        self._deliver: Deliver | None = deliver
        self._initial_balances = dict(balances if balances is not None else {"EUR": 1_000_000.0, "USD": 1_000_000.0})
        self.profile_id = profile_id
        self.user_id = user_id
        self.seed = seed
        self.settle_delay = max(0.0, settle_delay)
        self.quote_ttl = quote_ttl
        self.clock = clock
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._rng = random.Random(self.seed)
            self._balances = {c: float(v) for c, v in self._initial_balances.items()}
            self._quotes: dict[str, SimQuote] = {}
            self._recipients: dict[int, SimRecipient] = {}
            self._transfers: dict[int, SimTransfer] = {}
            self._by_customer_id: dict[str, int] = {}
            self._quote_used_by: dict[str, int] = {}
            self._next_recipient_id = 40_000_001
            self._next_transfer_id = 50_000_001
            self.deliveries: list[Delivery] = []
            # Test hook: how long Wise takes to refund a cancelled funded transfer (`cancelled → funds_refunded`).
            # 0 (the default, restored by `reset`): at once, in the cancel itself. > 0: the transfer stays
            # `cancelled` and `advance()` refunds it that many seconds later; `math.inf`: never, until
            # `release_refunds()`. Real Wise states no delay.
            self.refund_delay = 0.0

    # ----------------------------------------------------------------- balances

    def credit(self, currency: str, amount: float) -> float:
        """Top up a balance (the treasury's job in real life); returns the new balance."""
        with self._lock:
            self._balances[currency] = _money(self._balances.get(currency, 0.0) + amount)
            return self._balances[currency]

    def balances(self) -> dict[str, float]:
        with self._lock:
            return dict(self._balances)

    def _check_profile(self, profile_id: int) -> None:
        if profile_id != self.profile_id:
            raise WiseApiError(404, "profile.not_found", f"profile {profile_id} not found")

    # ------------------------------------------------------------------- quotes

    def create_quote(
        self,
        profile_id: int,
        source_currency: str,
        target_currency: str,
        *,
        source_amount: float | None = None,
        target_amount: float | None = None,
    ) -> SimQuote:
        self._check_profile(profile_id)
        for path, currency in (("sourceCurrency", source_currency), ("targetCurrency", target_currency)):
            if currency not in MID_RATES:
                raise WiseApiError(422, "currency.not_supported", f"{currency!r} is not supported", path)
        if (source_amount is None) == (target_amount is None):
            raise WiseApiError(422, "amount.invalid", "give exactly one of sourceAmount and targetAmount")
        amount = source_amount if source_amount is not None else target_amount
        if not isinstance(amount, (int, float)) or not math.isfinite(amount) or amount <= 0:
            raise WiseApiError(422, "amount.invalid", f"amount must be a positive number, got {amount!r}")
        with self._lock:
            now = self.clock()
            if source_currency == target_currency:
                rate, variable = 1.0, 0.0
            else:
                mid = MID_RATES[target_currency] / MID_RATES[source_currency]
                rate, variable = round(mid * (1 + self._rng.uniform(-0.0005, 0.0005)), 6), CONVERSION_FEE_RATE
            fixed = FIXED_FEES.get(source_currency, 0.5)
            if source_amount is not None:
                fee = _money(fixed + variable * source_amount)
                source, target, provided = _money(source_amount), _money((source_amount - fee) * rate), "SOURCE"
            else:
                source = _money((target_amount / rate + fixed) / (1 - variable))
                fee = _money(source - target_amount / rate)
                target, provided = _money(target_amount), "TARGET"
            if target <= 0:
                raise WiseApiError(422, "amount.too_small", f"{amount} {source_currency} does not cover the fee {fee}")
            quote = SimQuote(
                id=str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
                profile=profile_id,
                user=self.user_id,
                source_currency=source_currency,
                target_currency=target_currency,
                source_amount=source,
                target_amount=target,
                rate=rate,
                fee=fee,
                provided_amount_type=provided,
                created_at=now,
                expires_at=now + self.quote_ttl,
                settle_delay=self.settle_delay,
            )
            self._quotes[quote.id] = quote
            return quote

    def get_quote(self, profile_id: int, quote_id: str) -> SimQuote:
        self._check_profile(profile_id)
        with self._lock:
            quote = self._quotes.get(quote_id)
        if quote is None or quote.profile != profile_id:
            raise WiseApiError(404, "quote.not_found", f"quote {quote_id} not found")
        return quote

    # --------------------------------------------------------------- recipients

    def create_recipient(
        self, profile_id: int, currency: str, account_holder_name: str, iban: str, legal_type: str = "BUSINESS"
    ) -> SimRecipient:
        self._check_profile(profile_id)
        if currency not in MID_RATES:
            raise WiseApiError(422, "currency.not_supported", f"{currency!r} is not supported", "currency")
        if not account_holder_name or not account_holder_name.strip():
            raise WiseApiError(422, "NOT_VALID", "accountHolderName is required", "accountHolderName")
        iban = (iban or "").strip()
        if len(normalise_iban(iban)) < 5:
            raise WiseApiError(422, "NOT_VALID", "details.iban is not a valid IBAN", "details.iban")
        with self._lock:
            recipient = SimRecipient(
                id=self._next_recipient_id,
                profile=profile_id,
                user=self.user_id,
                currency=currency,
                account_holder_name=account_holder_name.strip(),
                iban=iban,
                legal_type=legal_type,
            )
            self._next_recipient_id += 1
            self._recipients[recipient.id] = recipient
            return recipient

    def get_recipient(self, recipient_id: int) -> SimRecipient:
        with self._lock:
            recipient = self._recipients.get(recipient_id)
        if recipient is None:
            raise WiseApiError(404, "account.not_found", f"recipient account {recipient_id} not found")
        return recipient

    def list_recipients(self, profile_id: int | None = None, currency: str | None = None) -> list[SimRecipient]:
        with self._lock:
            items = list(self._recipients.values())
        return [
            r
            for r in items
            if (profile_id is None or r.profile == profile_id) and (currency is None or r.currency == currency)
        ]

    # ---------------------------------------------------------------- transfers

    def create_transfer(
        self, target_account: int, quote_uuid: str, customer_transaction_id: str, reference: str = ""
    ) -> tuple[SimTransfer, bool]:
        """Create a transfer; returns (transfer, created). A repeated customerTransactionId
        returns the transfer it created the first time and creates nothing."""
        if not isinstance(customer_transaction_id, str) or not _UUID_RE.match(customer_transaction_id):
            raise WiseApiError(
                422, "NOT_VALID", "customerTransactionId must be a UUID", "customerTransactionId"
            )
        cti = customer_transaction_id.lower()
        with self._lock:
            existing = self._by_customer_id.get(cti)
            if existing is not None:
                return self._transfers[existing], False
            quote = self._quotes.get(quote_uuid)
            if quote is None:
                raise WiseApiError(422, "quote.not_found", f"quote {quote_uuid} not found", "quoteUuid")
            recipient = self._recipients.get(target_account)
            if recipient is None:
                raise WiseApiError(422, "account.not_found", f"recipient {target_account} not found", "targetAccount")
            if recipient.currency != quote.target_currency:
                raise WiseApiError(
                    422,
                    "account.currency.mismatch",
                    f"recipient currency {recipient.currency} != quote target {quote.target_currency}",
                    "targetAccount",
                )
            now = self.clock()
            if now > quote.expires_at:
                raise WiseApiError(422, "quote.expired", f"quote {quote.id} expired", "quoteUuid")
            if quote.id in self._quote_used_by:
                raise WiseApiError(
                    409, "quote.already.used", f"quote {quote.id} already used by transfer {self._quote_used_by[quote.id]}"
                )
            transfer = SimTransfer(
                id=self._next_transfer_id,
                profile=quote.profile,
                user=self.user_id,
                target_account=recipient.id,
                quote_uuid=quote.id,
                customer_transaction_id=cti,
                reference=reference or "",
                rate=quote.rate,
                source_currency=quote.source_currency,
                source_value=quote.source_amount,
                target_currency=quote.target_currency,
                target_value=quote.target_amount,
                created_at=now,
            )
            transfer.history.append((WAITING, now))
            self._next_transfer_id += 1
            self._transfers[transfer.id] = transfer
            self._by_customer_id[cti] = transfer.id
            self._quote_used_by[quote.id] = transfer.id
            return transfer, True

    def get_transfer(self, transfer_id: int) -> SimTransfer:
        with self._lock:
            transfer = self._transfers.get(transfer_id)
        if transfer is None:
            raise WiseApiError(404, "transfer.not_found", f"transfer {transfer_id} not found")
        return transfer

    def transfer_by_customer_id(self, customer_transaction_id: str) -> SimTransfer | None:
        with self._lock:
            tid = self._by_customer_id.get(customer_transaction_id.lower())
            return self._transfers[tid] if tid is not None else None

    def list_transfers(
        self,
        *,
        profile_id: int | None = None,
        statuses: set[str] | None = None,
        source_currency: str | None = None,
        target_currency: str | None = None,
        created_start: float | None = None,
        created_end: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[SimTransfer]:
        """Oldest first, as a recorded sandbox listing came (Wise's reference states no order)."""
        with self._lock:
            items = sorted(self._transfers.values(), key=lambda t: t.id)
        selected = [
            t
            for t in items
            if (profile_id is None or t.profile == profile_id)
            and (not statuses or t.status in statuses)
            and (source_currency is None or t.source_currency == source_currency)
            and (target_currency is None or t.target_currency == target_currency)
            and (created_start is None or t.created_at >= created_start)
            and (created_end is None or t.created_at < created_end)
        ]
        return selected[offset : offset + limit]

    def cancel_transfer(self, transfer_id: int) -> SimTransfer:
        """Cancel until the funds are converted (a funded `processing` transfer too: its source
        amount goes back to the balance, `cancelled → funds_refunded`); cancelling twice is harmless.
        Returns the transfer as the cancel answers it (`cancelled`)."""
        with self._lock:
            transfer = self.get_transfer(transfer_id)
            if transfer.status == CANCELLED or (transfer.status == FUNDS_REFUNDED and any(s == CANCELLED for s, _ in transfer.history)):
                return transfer
            if transfer.status not in CANCELLABLE or transfer.delivering:
                raise WiseApiError(
                    409,
                    "transfer.cancellation.not.allowed",
                    f"transfer {transfer_id} is {transfer.status}; it can no longer be cancelled",
                )
            now = self.clock()
            transfer.set_status(CANCELLED, now)
            answer = SimTransfer(**{**transfer.__dict__, "history": list(transfer.history)})
            if transfer.funded_at is not None:
                if self.refund_delay > 0:
                    transfer.refund_due_at = now + self.refund_delay  # held: `advance()` refunds it when due
                else:
                    self._refund(transfer, now)
            return answer

    def _refund(self, transfer: SimTransfer, now: float) -> None:
        self._balances[transfer.source_currency] = _money(
            self._balances.get(transfer.source_currency, 0.0) + transfer.source_value
        )
        transfer.refund_due_at = None
        transfer.set_status(FUNDS_REFUNDED, now)

    def release_refunds(self, transfer_id: int | None = None) -> int:
        """Test hook: refund now the held refunds (of `transfer_id` only, if given); returns how many."""
        with self._lock:
            now = self.clock()
            held = [t for t in self._transfers.values() if t.status == CANCELLED and t.refund_due_at is not None
                    and (transfer_id is None or t.id == transfer_id)]
            for transfer in held:
                self._refund(transfer, now)
            return len(held)

    def fund_transfer(self, profile_id: int, transfer_id: int, payment_type: str = "BALANCE") -> dict:
        """Pay a transfer from the balance: `COMPLETED`, or `REJECTED` when the balance is short.
        Funding a transfer that is no longer waiting (funded already, cancelled) is refused with
        422 `transfer.invalid-state` and debits nothing."""
        self._check_profile(profile_id)
        if payment_type != "BALANCE":
            raise WiseApiError(422, "payment.type.not_supported", f"payment type {payment_type!r} is not supported", "type")
        with self._lock:
            transfer = self.get_transfer(transfer_id)
            if transfer.profile != profile_id:
                raise WiseApiError(404, "transfer.not_found", f"transfer {transfer_id} not found")
            if transfer.status != WAITING:
                # Wise: "you can't fund a transfer twice"; nor a cancelled one.
                raise WiseApiError(422, "transfer.invalid-state", f"transfer {transfer_id} is {transfer.status}")
            available = self._balances.get(transfer.source_currency, 0.0)
            if available + 1e-9 < transfer.source_value:
                return {"type": "BALANCE", "status": "REJECTED", "errorCode": "transfer.insufficient_funds"}
            self._balances[transfer.source_currency] = _money(available - transfer.source_value)
            now = self.clock()
            transfer.funded_at = now
            transfer.set_status(PROCESSING, now)
        self.advance()
        return {"type": "BALANCE", "status": "COMPLETED", "errorCode": None}

    # ----------------------------------------------------------- state machine

    def advance(self) -> int:
        """Move funded transfers along; pay out the ones due. Returns how many changed state."""
        changed = 0
        while True:
            due: list[SimTransfer] = []
            with self._lock:
                now = self.clock()
                for transfer in self._transfers.values():
                    if transfer.status == CANCELLED and transfer.refund_due_at is not None and now >= transfer.refund_due_at:
                        self._refund(transfer, now)  # a held refund that is due (`refund_delay`)
                        changed += 1
                        continue
                    if transfer.funded_at is None or transfer.delivering:
                        continue
                    if transfer.status == PROCESSING and now >= transfer.funded_at + self.settle_delay / 2:
                        transfer.set_status(FUNDS_CONVERTED, now)
                        changed += 1
                    if transfer.status == FUNDS_CONVERTED and now >= transfer.funded_at + self.settle_delay:
                        # Claimed under the lock: only one thread pays a transfer out.
                        transfer.delivering = True
                        due.append(transfer)
            if not due:
                return changed
            for transfer in due:
                self._pay_out(transfer)
                changed += 1

    def _pay_out(self, transfer: SimTransfer) -> None:
        recipient = self._recipients[transfer.target_account]
        accepted = True
        if self._deliver is not None:
            try:
                accepted = bool(self._deliver(recipient.iban, transfer.target_currency, transfer.target_value))
            except Exception:
                log.exception("payout callback failed for transfer %s; bouncing it", transfer.id)
                accepted = False
        with self._lock:
            now = self.clock()
            self.deliveries.append(
                Delivery(transfer.id, recipient.iban, transfer.target_currency, transfer.target_value, accepted, now)
            )
            transfer.delivered = accepted
            transfer.set_status(SENT, now)
            if not accepted:
                # The receiving bank refused it: Wise refunds the source amount to the balance.
                # Wise's unhappy path: outgoing_payment_sent → bounced_back → processing → cancelled → funds_refunded.
                for status in (BOUNCED_BACK, PROCESSING, CANCELLED, FUNDS_REFUNDED):
                    transfer.set_status(status, now)
                self._balances[transfer.source_currency] = _money(
                    self._balances.get(transfer.source_currency, 0.0) + transfer.source_value
                )
            transfer.delivering = False

    def snapshot(self) -> dict:
        """Everything, for the admin page and for tests."""
        with self._lock:
            return {
                "profileId": self.profile_id,
                "balances": dict(self._balances),
                "transfers": [
                    {**t.to_json(), "history": [s for s, _ in t.history], "delivered": t.delivered}
                    for t in sorted(self._transfers.values(), key=lambda t: t.id)
                ],
                "recipients": [r.to_v1() for r in self._recipients.values()],
                "quotes": len(self._quotes),
                "deliveries": [d.__dict__ for d in self.deliveries],
            }


# --------------------------------------------------------------------------- faults


@dataclass
class Fault:
    """One injected fault. `count` and `rate` both None: fires on every matching request."""

    kind: str
    endpoint: str = "*"
    count: int | None = None
    rate: float | None = None
    latency: float = 0.0
    status: int = 503
    retry_after: float = 1.0
    fired: int = 0

    def to_json(self) -> dict:
        return dict(self.__dict__)


class FaultBook:
    """The active faults, per operation, with a seeded RNG for rate-based ones."""

    def __init__(self, seed: int = 42):
        self._seed = seed
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._faults: list[Fault] = []
            self._rng = random.Random(self._seed)

    def add(self, spec: dict) -> Fault:
        kind = spec.get("kind")
        endpoint = spec.get("endpoint", "*")
        if kind not in FAULT_KINDS:
            raise WiseApiError(422, "fault.kind", f"kind must be one of {FAULT_KINDS}, got {kind!r}", "kind")
        if endpoint != "*" and endpoint not in OPERATIONS:
            raise WiseApiError(422, "fault.endpoint", f"endpoint must be '*' or one of {OPERATIONS}", "endpoint")
        unknown = set(spec) - {"kind", "endpoint", "count", "rate", "latency", "status", "retry_after"}
        if unknown:
            raise WiseApiError(422, "fault.field", f"unknown fault fields {sorted(unknown)}")
        try:
            fault = Fault(
                kind=kind,
                endpoint=endpoint,
                count=None if spec.get("count") is None else int(spec["count"]),
                rate=None if spec.get("rate") is None else float(spec["rate"]),
                latency=float(spec.get("latency", 0.0)),
                status=int(spec.get("status", 503)),
                retry_after=float(spec.get("retry_after", 1.0)),
            )
        except (TypeError, ValueError) as exc:
            raise WiseApiError(422, "fault.value", f"bad fault value: {exc}") from None
        if fault.kind == "error" and not 500 <= fault.status <= 599:
            raise WiseApiError(422, "fault.status", "an error fault's status must be 5xx", "status")
        if fault.rate is not None and not 0.0 <= fault.rate <= 1.0:
            raise WiseApiError(422, "fault.rate", "rate must be within [0, 1]", "rate")
        with self._lock:
            self._faults.append(fault)
        return fault

    def list(self) -> list[dict]:
        with self._lock:
            return [f.to_json() for f in self._faults]

    def pick(self, operation: str) -> list[Fault]:
        """The faults that fire for this request: any latency ones, then at most one other."""
        fired: list[Fault] = []
        terminal = False
        with self._lock:
            for fault in self._faults:
                if fault.endpoint not in ("*", operation):
                    continue
                if fault.count is not None and fault.fired >= fault.count:
                    continue
                if terminal and fault.kind != "latency":
                    continue
                if fault.rate is not None and self._rng.random() >= fault.rate:
                    continue
                fault.fired += 1
                fired.append(fault)
                terminal = terminal or fault.kind != "latency"
            self._faults = [f for f in self._faults if f.count is None or f.fired < f.count]
        return fired


# --------------------------------------------------------------------------- HTTP layer


@dataclass
class SimResponse:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """What the transport does: send `response`, or drop the connection (`drop`)."""

    response: SimResponse | None
    drop: bool = False


_ROUTES: list[tuple[str, re.Pattern, str]] = [
    ("GET", re.compile(r"^/v[12]/profiles$"), "list_profiles"),
    ("GET", re.compile(r"^/v4/profiles/(?P<pid>\d+)/balances$"), "balances"),
    ("POST", re.compile(r"^/v3/profiles/(?P<pid>\d+)/quotes$"), "create_quote"),
    ("GET", re.compile(r"^/v3/profiles/(?P<pid>\d+)/quotes/(?P<qid>[^/]+)$"), "get_quote"),
    ("POST", re.compile(r"^/v1/accounts$"), "create_recipient"),
    ("GET", re.compile(r"^/v2/accounts$"), "list_recipients"),
    ("GET", re.compile(r"^/v[12]/accounts/(?P<rid>\d+)$"), "get_recipient"),
    ("POST", re.compile(r"^/v1/transfers$"), "create_transfer"),
    ("GET", re.compile(r"^/v1/transfers$"), "list_transfers"),
    ("GET", re.compile(r"^/v1/transfers/(?P<tid>\d+)$"), "get_transfer"),
    ("PUT", re.compile(r"^/v1/transfers/(?P<tid>\d+)/cancel$"), "cancel_transfer"),
    ("POST", re.compile(r"^/v3/profiles/(?P<pid>\d+)/transfers/(?P<tid>\d+)/payments$"), "fund_transfer"),
    ("POST", re.compile(r"^/admin/faults$"), "admin_add_fault"),
    ("GET", re.compile(r"^/admin/faults$"), "admin_list_faults"),
    ("DELETE", re.compile(r"^/admin/faults$"), "admin_clear_faults"),
    ("POST", re.compile(r"^/admin/reset$"), "admin_reset"),
    ("GET", re.compile(r"^/admin/state$"), "admin_state"),
    ("POST", re.compile(r"^/admin/balances$"), "admin_credit"),
]


def _route(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    for route_method, pattern, operation in _ROUTES:
        if route_method == method:
            match = pattern.match(path)
            if match:
                return operation, match.groupdict()
    return None


def _parse_date(value: str, name: str, *, end: bool = False) -> float:
    """A createdDateStart/End: a date (both inclusive of that day, as Wise documents) or a datetime."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise WiseApiError(422, "NOT_VALID", f"{name} must be an ISO date or datetime", name) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    if end and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        parsed += timedelta(days=1)
    return parsed.timestamp()


def _number(body: dict, name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise WiseApiError(422, "NOT_VALID", f"{name} must be a number", name) from None


class WiseSimulator:
    """The Wise API on loopback (see the module docstring for what it covers).

    `deliver` pays recipients (callable or object with `.deliver`); `api_token`
    None disables auth; `balances` are the starting multi-currency balances.
    """

    def __init__(
        self,
        deliver: Deliver | PayoutSink | None = None,
        api_token: str | None = None,
        seed: int = 42,
        balances: dict[str, float] | None = None,
        settle_delay: float = 1.0,
        *,
        profile_id: int = 1001,
        quote_ttl: float = 1800.0,
        clock: Callable[[], float] = time.time,
        tick: float = 0.05,
    ):
        self.state = WiseState(
            deliver=deliver,
            balances=balances,
            profile_id=profile_id,
            seed=seed,
            settle_delay=settle_delay,
            quote_ttl=quote_ttl,
            clock=clock,
        )
        self.faults = FaultBook(seed)
        self._api_token = api_token
        self._tick = tick
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._log_lock = threading.Lock()
        self.request_log: list[tuple[float, str, int]] = []  # (time, operation, status or 0 when dropped)
        self.url: str | None = None

    def __repr__(self) -> str:  # never show the token
        return f"WiseSimulator(url={self.url!r}, profile_id={self.profile_id})"

    @property
    def profile_id(self) -> int:
        return self.state.profile_id

    # ------------------------------------------------------------ lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._server is not None:
            raise RuntimeError("WiseSimulator already started")
        handler = type("_BoundWiseHandler", (_WiseHandler,), {"sim": self})
        server = ThreadingHTTPServer((host, port), handler)
        server.daemon_threads = True
        self._server = server
        self._stopping.clear()
        bound_host, bound_port = server.server_address[:2]
        self.url = f"http://{bound_host}:{bound_port}"
        self._threads = [
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="wise-sim-http", daemon=True),
            threading.Thread(target=self._ticker, name="wise-sim-ticker", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        log.info("Wise simulator listening on %s (profile %s)", self.url, self.profile_id)
        return self.url

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def __enter__(self) -> "WiseSimulator":
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _ticker(self) -> None:
        while not self._stopping.wait(self._tick):
            try:
                self.state.advance()
            except Exception:  # keep ticking; the error is in the log
                log.exception("Wise simulator: advancing transfers failed")

    # ------------------------------------------------------- test/demo helpers

    def set_fault(self, endpoint: str = "*", kind: str = "error", **options: Any) -> Fault:
        return self.faults.add({"endpoint": endpoint, "kind": kind, **options})

    def clear_faults(self) -> None:
        self.faults.clear()

    def reset(self) -> None:
        self.faults.clear()
        self.state.reset()
        with self._log_lock:
            self.request_log.clear()

    def credit(self, currency: str, amount: float) -> float:
        return self.state.credit(currency, amount)

    def balances(self) -> dict[str, float]:
        return self.state.balances()

    def transfers(self) -> list[dict]:
        return self.state.snapshot()["transfers"]

    @property
    def deliveries(self) -> list[Delivery]:
        return list(self.state.deliveries)

    def request_count(self, operation: str | None = None, status: int | None = None) -> int:
        with self._log_lock:
            return sum(
                1
                for _, op, st in self.request_log
                if (operation is None or op == operation) and (status is None or st == status)
            )

    def request_times(self, operation: str) -> list[float]:
        with self._log_lock:
            return [t for t, op, _ in self.request_log if op == operation]

    # ------------------------------------------------------------- dispatch

    def _authorised(self, headers: dict[str, str]) -> bool:
        if self._api_token is None:
            return True
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip().encode(), self._api_token.encode())

    def serve(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes = b"",
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Outcome:
        """Handle one request, faults included: what any transport should do with it."""
        method = method.upper()
        path = urlsplit(target).path
        routed = _route(method, path)
        operation = routed[0] if routed else "unknown"
        faults = self.faults.pick(operation) if operation in OPERATIONS and self._authorised(headers) else []
        terminal = None
        for fault in faults:
            if fault.kind == "latency":
                sleep(fault.latency)
            else:
                terminal = fault
        if terminal is not None and terminal.kind == "error":
            return self._logged(operation, Outcome(SimResponse(terminal.status, {"code": "internal.error", "message": "simulated outage"})))
        if terminal is not None and terminal.kind == "rate_limit":
            retry_after = f"{terminal.retry_after:g}"
            return self._logged(
                operation,
                Outcome(SimResponse(429, {"code": "rate.limited", "message": "too many requests"}, {"Retry-After": retry_after})),
            )
        response = self.handle(method, target, headers, body)
        if terminal is not None and terminal.kind == "timeout_after_commit":
            if terminal.latency:
                sleep(terminal.latency)
            return self._logged(operation, Outcome(None, drop=True))
        return self._logged(operation, Outcome(response))

    def _logged(self, operation: str, outcome: Outcome) -> Outcome:
        status = outcome.response.status if outcome.response is not None else 0
        with self._log_lock:
            self.request_log.append((time.monotonic(), operation, status))
        return outcome

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> SimResponse:
        """The API without faults: auth, routing, validation, state change, JSON answer."""
        method = method.upper()
        split = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        if not self._authorised(headers):
            return SimResponse(401, {"error": "invalid_token", "error_description": "Invalid token"})
        routed = _route(method, split.path)
        if routed is None:
            return SimResponse(404, {"code": "not.found", "message": f"no route for {method} {split.path}"})
        operation, params = routed
        try:
            payload: Any = {}
            if body:
                try:
                    payload = json.loads(body)
                except ValueError:
                    raise WiseApiError(400, "json.invalid", "request body is not JSON") from None
                if not isinstance(payload, dict):
                    raise WiseApiError(400, "json.invalid", "request body must be a JSON object")
            self.state.advance()
            return getattr(self, f"_op_{operation}")(params, query, payload)
        except WiseApiError as exc:
            return SimResponse(exc.status, exc.body())

    # One method per operation: parse the request, call the state, shape the answer.

    def _op_list_profiles(self, params, query, body) -> SimResponse:
        return SimResponse(
            200,
            [
                {
                    "id": self.profile_id,
                    "type": "BUSINESS",
                    "fullName": "Arb Desk Treasury Ltd",
                    "businessName": "Arb Desk Treasury Ltd",
                    "currentState": "VISIBLE",
                    "details": {"name": "Arb Desk Treasury Ltd"},
                }
            ],
        )

    def _op_balances(self, params, query, body) -> SimResponse:
        pid = int(params["pid"])
        self.state._check_profile(pid)
        return SimResponse(
            200,
            [
                {
                    "id": 70_000_000 + i,
                    "currency": currency,
                    "type": "STANDARD",
                    "amount": {"value": value, "currency": currency},
                    "reservedAmount": {"value": 0.0, "currency": currency},
                    "visible": True,
                }
                for i, (currency, value) in enumerate(sorted(self.state.balances().items()))
            ],
        )

    def _op_create_quote(self, params, query, body) -> SimResponse:
        quote = self.state.create_quote(
            int(params["pid"]),
            str(body.get("sourceCurrency", "")),
            str(body.get("targetCurrency", "")),
            source_amount=_number(body, "sourceAmount"),
            target_amount=_number(body, "targetAmount"),
        )
        return SimResponse(200, quote.to_json())

    def _op_get_quote(self, params, query, body) -> SimResponse:
        return SimResponse(200, self.state.get_quote(int(params["pid"]), params["qid"]).to_json())

    def _op_create_recipient(self, params, query, body) -> SimResponse:
        if body.get("type", "iban") != "iban":
            raise WiseApiError(422, "NOT_VALID", "only type 'iban' recipients are simulated", "type")
        details = body.get("details") or {}
        try:
            profile = int(body.get("profile", self.profile_id))
        except (TypeError, ValueError):
            raise WiseApiError(422, "NOT_VALID", "profile must be an integer", "profile") from None
        recipient = self.state.create_recipient(
            profile,
            str(body.get("currency", "")),
            str(body.get("accountHolderName", "")),
            str(details.get("iban", "")),
            str(details.get("legalType", "BUSINESS")),
        )
        return SimResponse(200, recipient.to_v1())

    def _op_list_recipients(self, params, query, body) -> SimResponse:
        # Wise pages this listing by seek position: `size` recipients (20 unless asked), from the
        # recipient id `seekPosition` on, in `sort` order (id,asc or id,desc); the answer's
        # `seekPositionForNext` (absent on the last page) is the next call's `seekPosition`.
        profile = query.get("profile") or query.get("profileId")
        try:
            size = int(query.get("size", DEFAULT_RECIPIENT_PAGE_SIZE))
            seek = int(query["seekPosition"]) if query.get("seekPosition") else None
        except ValueError:
            raise WiseApiError(422, "NOT_VALID", "size and seekPosition must be integers") from None
        if size < 1:
            raise WiseApiError(422, "NOT_VALID", "size must be positive", "size")
        size = min(size, MAX_RECIPIENT_PAGE_SIZE)
        sort = query.get("sort", "id,asc").replace(" ", "").lower()
        if sort not in ("id,asc", "id,desc"):
            raise WiseApiError(422, "NOT_VALID", f"unsupported sort {sort!r} (the simulator sorts by id)", "sort")
        descending = sort == "id,desc"
        items = sorted(self.state.list_recipients(int(profile) if profile else None, query.get("currency")),
                       key=lambda r: r.id, reverse=descending)
        if seek is not None:
            items = [r for r in items if (r.id <= seek if descending else r.id >= seek)]
        page, rest = items[:size], items[size:]
        answer: dict = {"content": [r.to_v2() for r in page], "size": len(page)}
        if page:
            answer["seekPositionForCurrent"] = page[0].id
        if rest:
            answer["seekPositionForNext"] = rest[0].id
        return SimResponse(200, answer)

    def _op_get_recipient(self, params, query, body) -> SimResponse:
        return SimResponse(200, self.state.get_recipient(int(params["rid"])).to_v2())

    def _op_create_transfer(self, params, query, body) -> SimResponse:
        try:
            target_account = int(body.get("targetAccount"))
        except (TypeError, ValueError):
            raise WiseApiError(422, "NOT_VALID", "targetAccount must be a recipient id", "targetAccount") from None
        details = body.get("details") or {}
        transfer, _created = self.state.create_transfer(
            target_account,
            str(body.get("quoteUuid", "")),
            body.get("customerTransactionId"),
            str(details.get("reference", "")),
        )
        return SimResponse(200, transfer.to_json())

    def _op_list_transfers(self, params, query, body) -> SimResponse:
        try:
            limit = max(1, min(1000, int(query.get("limit", 100))))
            offset = max(0, int(query.get("offset", 0)))
            profile = int(query["profile"]) if query.get("profile") else None
        except ValueError:
            raise WiseApiError(422, "NOT_VALID", "limit, offset and profile must be integers") from None
        statuses = {s for s in query.get("status", "").split(",") if s} or None
        items = self.state.list_transfers(
            profile_id=profile,
            statuses=statuses,
            source_currency=query.get("sourceCurrency"),
            target_currency=query.get("targetCurrency"),
            created_start=_parse_date(query["createdDateStart"], "createdDateStart") if query.get("createdDateStart") else None,
            created_end=_parse_date(query["createdDateEnd"], "createdDateEnd", end=True) if query.get("createdDateEnd") else None,
            limit=limit,
            offset=offset,
        )
        return SimResponse(200, [t.to_json() for t in items])

    def _op_get_transfer(self, params, query, body) -> SimResponse:
        return SimResponse(200, self.state.get_transfer(int(params["tid"])).to_json())

    def _op_cancel_transfer(self, params, query, body) -> SimResponse:
        return SimResponse(200, self.state.cancel_transfer(int(params["tid"])).to_json())

    def _op_fund_transfer(self, params, query, body) -> SimResponse:
        payment = self.state.fund_transfer(int(params["pid"]), int(params["tid"]), str(body.get("type", "")))
        return SimResponse(201, payment)  # a recorded sandbox funding answered 201 Created

    def _op_admin_add_fault(self, params, query, body) -> SimResponse:
        return SimResponse(201, self.faults.add(body).to_json())

    def _op_admin_list_faults(self, params, query, body) -> SimResponse:
        return SimResponse(200, self.faults.list())

    def _op_admin_clear_faults(self, params, query, body) -> SimResponse:
        self.faults.clear()
        return SimResponse(200, {"faults": []})

    def _op_admin_reset(self, params, query, body) -> SimResponse:
        self.reset()
        return SimResponse(200, {"reset": True})

    def _op_admin_state(self, params, query, body) -> SimResponse:
        return SimResponse(200, self.state.snapshot())

    def _op_admin_credit(self, params, query, body) -> SimResponse:
        amount = _number(body, "amount")
        currency = str(body.get("currency", ""))
        if amount is None or currency not in MID_RATES:
            raise WiseApiError(422, "NOT_VALID", "give a supported currency and an amount")
        return SimResponse(200, {"currency": currency, "balance": self.state.credit(currency, amount)})

    # ---------------------------------------------------------- in-process

    def mock_transport(self, *, sleep: Callable[[float], None] = time.sleep):
        """An httpx transport that serves requests in-process (faults included): unit tests."""
        import httpx

        def handler(request: httpx.Request) -> httpx.Response:
            outcome = self.serve(
                request.method, request.url.raw_path.decode(), dict(request.headers), request.content, sleep=sleep
            )
            if outcome.drop:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
            response = outcome.response
            return httpx.Response(response.status, headers=response.headers, json=response.body)

        return httpx.MockTransport(handler)


class _WiseHandler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so a stopped simulator really is gone
    # and a dropped response is a closed socket.
    protocol_version = "HTTP/1.0"
    server_version = "WiseSimulator/1.0"
    sim: WiseSimulator

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            outcome = self.sim.serve(self.command, self.path, dict(self.headers.items()), body)
        except Exception:
            log.exception("Wise simulator: unhandled error on %s %s", self.command, urlsplit(self.path).path)
            outcome = Outcome(SimResponse(500, {"code": "internal.error", "message": "simulator bug"}))
        if outcome.drop:
            self.close_connection = True
            return
        response = outcome.response
        payload = b"" if response.body is None else json.dumps(response.body).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # The request line only (never headers: they carry the bearer token).
        log.debug("wise-sim %s - %s", self.address_string(), format % args)


def main(argv: list[str] | None = None) -> int:
    """Run the simulator alone: `python -m arb_orchestration.sim.wise --port 8702`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8702)
    parser.add_argument("--settle-delay", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sim = WiseSimulator(api_token=os.environ.get("WISE_API_TOKEN") or None, seed=args.seed, settle_delay=args.settle_delay)
    url = sim.start(args.host, args.port)
    print(f"Wise simulator on {url} (profile {sim.profile_id}); auth {'on' if sim._api_token else 'off'}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
