"""Wise API client: quote → recipient → transfer (customerTransactionId) → fund.

`WiseResource` owns its `httpx.Client`, timeouts, retries with backoff and
jitter, the process-wide `wise` circuit breaker and the typed response models.
Every call goes through `ResilientCaller`:

* reads are retried on transient errors;
* a mutating call whose outcome is unknown (timeout or dropped connection after
  sending, or a 5xx) is first *reconciled*, never resubmitted blindly:
  `create_transfer` looks the transfer up by its customerTransactionId,
  `fund_transfer` and `cancel_transfer` read the transfer's status,
  `create_recipient` looks for the IBAN. Only when nothing was applied is the
  request sent again, with the same customerTransactionId, so Wise's own
  idempotency check is a second line of defence against duplicates;
* business answers (4xx, funding `REJECTED`) are never retried and count as a
  healthy service for the breaker.

The token is a secret: it reaches the resource as `EnvVar("WISE_API_TOKEN")`,
lives only in the client's Authorization header, and is excluded from `repr`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, TypeVar

import httpx
from dagster import ConfigurableResource
from pydantic import (
    AliasChoices,
    AliasPath,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from arb_orchestration.resources.errors import BusinessError, NotFoundError, TransientError
from arb_orchestration.resources.http import send
from arb_orchestration.resources.resilience import ResilientCaller, RetrySettings, breaker_for

T = TypeVar("T")
log = logging.getLogger("arb_orchestration.resources.wise")

# Transfer statuses (https://docs.wise.com, "Tracking transfers").
WAITING = "incoming_payment_waiting"
SENT = "outgoing_payment_sent"
CANCELLED = "cancelled"
FUNDED_STATUSES = frozenset(
    {
        "incoming_payment_initiated",
        "processing",
        "funds_converted",
        SENT,
        "bounced_back",
        "funds_refunded",
        "charged_back",
    }
)
# States a transfer does not leave on its own; `bounced_back` is not one (Wise may re-send).
FAILED_STATUSES = frozenset({CANCELLED, "funds_refunded", "charged_back"})
# Wise cancels a transfer "up until the transfer has been processed and funds converted"
# (PUT /v1/transfers/{id}/cancel): a funded one in `processing` too (its money is refunded).
CANCELLABLE_STATUSES = frozenset({WAITING, "incoming_payment_initiated", "processing"})
# Codes the funding call answers with when its transfer is no longer waiting (Wise: 422
# transfer.invalid-state, "you can't fund a transfer twice"); the transfer's status decides.
_NOT_FUNDABLE_CODES = frozenset({"transfer.invalid-state", "transfer.invalid_state", "transfer.not.fundable", "wrong_status"})
# How far back `find_transfer` looks by default (createdDateStart): Wise cancels a transfer left
# unfunded for 14 days, so a saga's transfer is younger than this unless it was funded long ago.
DEFAULT_LOOKUP_WINDOW_DAYS = 30.0
# GET /v2/accounts pages: "Defaults to 20 (the maximum)".
RECIPIENT_PAGE_SIZE_MAX = 20

_CTI_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "arb-orchestration/wise/customerTransactionId")


def customer_transaction_id_for(key: str) -> str:
    """The customerTransactionId for an idempotency key.

    Wise wants a UUID. A key that already is one is used as is (normalised);
    any other key (e.g. "saga-42/step-3") maps to a stable UUIDv5, so the same
    saga step always sends the same customerTransactionId.
    """
    try:
        return str(uuid.UUID(key))
    except (ValueError, AttributeError, TypeError):
        return str(uuid.uuid5(_CTI_NAMESPACE, key))


def _normalise_iban(iban: str) -> str:
    return re.sub(r"\s+", "", iban or "").upper()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _wise_date(value: datetime) -> str:
    """A `createdDateStart`/`createdDateEnd` value: the UTC day, as the API reference's example writes it."""
    return _utc(value).date().isoformat()


# --------------------------------------------------------------------------- models


class _WiseModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class Profile(_WiseModel):
    """A Wise profile (v1 or v2 shape)."""

    id: int
    type: str
    full_name: str | None = Field(None, validation_alias=AliasChoices("fullName", AliasPath("details", "name")))

    @property
    def is_business(self) -> bool:
        return self.type.upper() == "BUSINESS"


class Quote(_WiseModel):
    """A v3 quote, with the amounts, fee and delivery estimate of the payment option we pay with.

    The fee lives per payment option in Wise's answer; the option that matters
    is the one whose payIn is how we fund (BALANCE) and whose payOut is the
    quote's payOut. Its sourceAmount/targetAmount are the ones we use: the top
    level carries only the amount that was asked for.
    """

    id: str
    source_currency: str = Field(validation_alias="sourceCurrency")
    target_currency: str = Field(validation_alias="targetCurrency")
    source_amount: float = Field(validation_alias="sourceAmount")
    target_amount: float = Field(validation_alias="targetAmount")
    rate: float
    pay_in: str = "BALANCE"
    pay_out: str = Field("BANK_TRANSFER", validation_alias="payOut")
    fee_total: float
    fee_percentage: float = 0.0
    estimated_delivery: datetime | None = None
    rate_expiration_time: datetime | None = Field(None, validation_alias="rateExpirationTime")
    provided_amount_type: str | None = Field(None, validation_alias="providedAmountType")

    @model_validator(mode="before")
    @classmethod
    def _from_payment_option(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "paymentOptions" not in data:
            return data
        pay_in = data.get("pay_in") or data.get("preferredPayIn") or "BALANCE"
        pay_out = data.get("payOut")
        options = [o for o in data.get("paymentOptions") or [] if not o.get("disabled")]
        chosen = next(
            (o for o in options if o.get("payIn") == pay_in and (pay_out is None or o.get("payOut") == pay_out)),
            None,
        )
        if chosen is None:
            raise ValueError(f"quote {data.get('id')} has no enabled payment option with payIn={pay_in}")
        fee = chosen.get("fee") or {}
        # The amounts of the option we pay with: Wise leaves out the top-level amount that was not
        # asked for (a targetAmount quote has no top-level sourceAmount), and what the balance
        # pays differs from the bank-transfer price anyway.
        amounts = {name: chosen[name] for name in ("sourceAmount", "targetAmount") if chosen.get(name) is not None}
        return {
            **data,
            **amounts,
            "pay_in": pay_in,
            "fee_total": fee.get("total", 0.0),
            "fee_percentage": chosen.get("feePercentage") or 0.0,
            "estimated_delivery": chosen.get("estimatedDelivery"),
        }


class Recipient(_WiseModel):
    """A recipient account (v1 create answer or v2 list entry)."""

    id: int
    profile: int | None = Field(None, validation_alias=AliasChoices("profile", "profileId"))
    account_holder_name: str = Field(
        validation_alias=AliasChoices("accountHolderName", AliasPath("name", "fullName"))
    )
    currency: str
    type: str
    iban: str | None = Field(None, validation_alias=AliasPath("details", "iban"))
    active: bool = True


class Transfer(_WiseModel):
    """A v1 transfer."""

    id: int
    status: str
    target_account: int = Field(validation_alias="targetAccount")
    quote_uuid: str | None = Field(None, validation_alias="quoteUuid")
    customer_transaction_id: str | None = Field(None, validation_alias="customerTransactionId")
    reference: str | None = Field(None, validation_alias=AliasChoices(AliasPath("details", "reference"), "reference"))
    rate: float | None = None
    source_currency: str = Field(validation_alias="sourceCurrency")
    source_value: float = Field(validation_alias="sourceValue")
    target_currency: str = Field(validation_alias="targetCurrency")
    target_value: float = Field(validation_alias="targetValue")
    created: datetime | None = None

    @field_validator("created")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # Wise writes "YYYY-MM-DD HH:MM:SS" in UTC, without a zone.
        return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value

    @property
    def is_funded(self) -> bool:
        return self.status in FUNDED_STATUSES

    @property
    def is_sent(self) -> bool:
        return self.status == SENT

    @property
    def is_failed(self) -> bool:
        return self.status in FAILED_STATUSES


class Payment(_WiseModel):
    """The answer to funding a transfer: COMPLETED or REJECTED (with an error code)."""

    type: str
    status: str
    error_code: str | None = Field(None, validation_alias="errorCode")

    @property
    def completed(self) -> bool:
        return self.status == "COMPLETED"


class TransferNotSettledError(TransientError):
    """`wait_for_state` ran out of time while the transfer was still moving."""


def poll_transfer_state(
    read: Callable[[], Transfer],
    transfer_id: int,
    wanted: set[str],
    *,
    timeout: float,
    pause: Callable[[float], None],
    read_error_log: str = "wise: polling transfer %s failed (%s); still waiting",
) -> Transfer:
    """Read the transfer until it is in one of `wanted`, calling `pause(seconds_left)` between reads.

    The end conditions of every wait for a transfer state (`WiseResource.wait_for_state` and the
    webhook-assisted `wise_webhooks.wait_for_transfer_state`): a failed end state instead →
    BusinessError; still moving at the deadline → TransferNotSettledError (transient: waiting
    longer is the remedy). Transient read errors are logged (`read_error_log`) and tolerated
    until the deadline.
    """
    deadline = time.monotonic() + timeout
    last: Transfer | None = None
    last_error: TransientError | None = None
    while True:
        try:
            last = read()
            last_error = None
        except TransientError as exc:
            last_error = exc
            log.warning(read_error_log, transfer_id, exc)
        if last is not None and last.status in wanted:
            return last
        if last is not None and last.status in FAILED_STATUSES:
            raise BusinessError(
                f"wise transfer {transfer_id} ended {last.status} while waiting for {sorted(wanted)}", code=last.status
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            status = last.status if last is not None else "unknown"
            raise TransferNotSettledError(
                f"wise transfer {transfer_id} still {status} after {timeout:.1f}s (waiting for {sorted(wanted)})"
            ) from last_error
        pause(remaining)


@dataclass(frozen=True)
class _Answer:
    # A 4xx is an answer from a healthy service: carried out of the breaker's
    # view as a value, raised again outside it.
    value: Any = None
    error: BusinessError | None = None


# --------------------------------------------------------------------------- resource


class WiseResource(ConfigurableResource):
    """The Wise API: quote → recipient → transfer (customerTransactionId) → fund."""

    base_url: str
    api_token: str = Field(repr=False, description="Wise API token; pass EnvVar('WISE_API_TOKEN').")
    profile_id: int
    timeout_seconds: float = 10.0
    max_attempts: int = 4
    retry_base_delay: float = 0.3
    breaker_failure_threshold: int = 5
    breaker_reset_seconds: float = 15.0
    retry_max_delay: float = 5.0
    poll_interval_seconds: float = 1.0
    lookup_page_size: int = 100
    lookup_max_pages: int = 10
    lookup_window_days: float = DEFAULT_LOOKUP_WINDOW_DAYS

    _client: httpx.Client | None = PrivateAttr(default=None)
    _client_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _transport: httpx.BaseTransport | None = PrivateAttr(default=None)

    # ------------------------------------------------------------ plumbing

    def with_transport(self, transport: httpx.BaseTransport) -> "WiseResource":
        """Use `transport` instead of the network (tests: `WiseSimulator.mock_transport()`)."""
        self.close()
        self._transport = transport
        return self

    def _http(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    base_url=self.base_url,
                    timeout=httpx.Timeout(self.timeout_seconds),
                    headers={"Authorization": f"Bearer {self.api_token}", "User-Agent": "arb-orchestration"},
                    transport=self._transport,
                )
            return self._client

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def teardown_after_execution(self, context) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        return send(self._http(), method, path, **kwargs)

    def _caller(self) -> ResilientCaller:
        return ResilientCaller(
            breaker_for("wise", self.breaker_failure_threshold, self.breaker_reset_seconds),
            RetrySettings(
                max_attempts=self.max_attempts, base_delay=self.retry_base_delay, max_delay=self.retry_max_delay
            ),
        )

    def _call(self, what: str, fn: Callable[[], T], reconcile: Callable[[], T | None] | None = None) -> T:
        def guarded() -> _Answer:
            try:
                return _Answer(value=fn())
            except BusinessError as exc:
                return _Answer(error=exc)

        result = self._caller().call(guarded, what=what, reconcile=reconcile)
        if isinstance(result, _Answer):
            if result.error is not None:
                raise result.error
            return result.value
        return result  # found by reconcile

    def health(self) -> dict:
        """Breaker state, for logs and metadata."""
        return breaker_for("wise", self.breaker_failure_threshold, self.breaker_reset_seconds).snapshot()

    # ------------------------------------------------------------- profiles

    def list_profiles(self) -> list[Profile]:
        return self._call("wise list profiles", lambda: [Profile.model_validate(p) for p in self._request("GET", "/v2/profiles")])

    def balances(self) -> dict[str, float]:
        """Available amount per currency on the profile's STANDARD balances."""

        def fetch() -> dict[str, float]:
            rows = self._request("GET", f"/v4/profiles/{self.profile_id}/balances", params={"types": "STANDARD"})
            return {row["currency"]: float(row["amount"]["value"]) for row in rows}

        return self._call("wise balances", fetch)

    # --------------------------------------------------------------- quotes

    def create_quote(
        self,
        source: str,
        target: str,
        source_amount: float | None = None,
        *,
        target_amount: float | None = None,
    ) -> Quote:
        """Lock a rate for `source_amount` (or to deliver exactly `target_amount`)."""
        if (source_amount is None) == (target_amount is None):
            raise ValueError("give exactly one of source_amount and target_amount")
        body: dict[str, Any] = {"sourceCurrency": source, "targetCurrency": target, "payOut": "BANK_TRANSFER", "preferredPayIn": "BALANCE"}
        if source_amount is not None:
            body["sourceAmount"] = source_amount
        else:
            body["targetAmount"] = target_amount
        path = f"/v3/profiles/{self.profile_id}/quotes"
        # An orphaned quote costs nothing, so after an unknown outcome just ask again.
        return self._call(
            f"wise create quote {source}->{target}",
            lambda: Quote.model_validate(self._request("POST", path, json=body)),
            reconcile=lambda: None,
        )

    def get_quote(self, quote_id: str) -> Quote:
        path = f"/v3/profiles/{self.profile_id}/quotes/{quote_id}"
        return self._call("wise get quote", lambda: Quote.model_validate(self._request("GET", path)))

    # ----------------------------------------------------------- recipients

    def _lookup_recipient(self, currency: str, iban: str, holder: str | None) -> Recipient | None:
        # GET /v2/accounts is paged by seek position (Wise answers 20 per page unless `size` asks
        # otherwise): follow `seekPositionForNext` until it is absent, newest first so a recipient
        # created just before a timeout is on the first page. Bounded by `lookup_max_pages`; reading
        # only the first page made a profile with many recipients get a duplicate.
        wanted = _normalise_iban(iban)
        seek: Any = None
        for _ in range(self.lookup_max_pages):
            params: dict[str, Any] = {
                "profile": self.profile_id, "currency": currency, "sort": "id,desc",
                # Wise documents 20 as this listing's default and its most; ask for no more.
                "size": min(self.lookup_page_size, RECIPIENT_PAGE_SIZE_MAX),
            }
            if seek is not None:
                params["seekPosition"] = seek
            body = self._request("GET", "/v2/accounts", params=params)
            items = body.get("content", []) if isinstance(body, dict) else body
            for item in items:
                recipient = Recipient.model_validate(item)
                if (
                    recipient.active
                    and recipient.currency == currency
                    and _normalise_iban(recipient.iban or "") == wanted
                    and (holder is None or recipient.account_holder_name.strip().lower() == holder.strip().lower())
                ):
                    return recipient
            following = body.get("seekPositionForNext") if isinstance(body, dict) else None
            if following is None or not items or following == seek:
                return None
            seek = following
        log.warning(
            "wise: no %s recipient for IBAN ...%s in the first %d pages of recipients (lookup_max_pages); "
            "a new one may duplicate an older one",
            currency, wanted[-4:], self.lookup_max_pages,
        )
        return None

    def find_recipient(self, currency: str, iban: str, holder: str | None = None) -> Recipient | None:
        """An active recipient for this IBAN (and holder name, when given), or None."""
        return self._call("wise find recipient", lambda: self._lookup_recipient(currency, iban, holder))

    def create_recipient(
        self, currency: str, iban: str, holder: str, *, legal_type: str = "BUSINESS", reuse: bool = True
    ) -> Recipient:
        """An IBAN recipient; reuses an existing one with the same IBAN and holder name."""
        if reuse:
            existing = self.find_recipient(currency, iban, holder)
            if existing is not None:
                return existing
        body = {
            "profile": self.profile_id,
            "currency": currency,
            "type": "iban",
            "accountHolderName": holder,
            "ownedByCustomer": False,
            "details": {"legalType": legal_type, "iban": iban},
        }
        return self._call(
            "wise create recipient",
            lambda: Recipient.model_validate(self._request("POST", "/v1/accounts", json=body)),
            reconcile=lambda: self._lookup_recipient(currency, iban, holder),
        )

    # ------------------------------------------------------------ transfers

    def create_transfer(
        self, quote_id: str, recipient_id: int, customer_transaction_id: str, reference: str = ""
    ) -> Transfer:
        """Create (or find again) the transfer for `customer_transaction_id`.

        The same id twice yields the same transfer, never a second one. Any
        idempotency key works: see `customer_transaction_id_for`.
        """
        cti = customer_transaction_id_for(customer_transaction_id)
        body = {
            "targetAccount": recipient_id,
            "quoteUuid": quote_id,
            "customerTransactionId": cti,
            "details": {"reference": reference},
        }
        try:
            transfer = self._call(
                f"wise create transfer {cti}",
                lambda: Transfer.model_validate(self._request("POST", "/v1/transfers", json=body)),
                reconcile=lambda: self._lookup_transfer(cti),
            )
        except BusinessError as exc:
            # Wise documents that a repeated customerTransactionId creates no duplicate, not what the
            # repeat answers. Were it a 4xx, the transfer the first attempt made is the answer.
            if isinstance(exc, NotFoundError):
                raise
            existing = self._call(f"wise find transfer {cti}", lambda: self._lookup_transfer(cti))
            if existing is None:
                raise
            log.warning("wise: creating transfer %s was refused (%s) but it exists: transfer %s", cti, exc.code, existing.id)
            return existing
        log.info("wise transfer %s (%s) is %s", transfer.id, cti, transfer.status)
        return transfer

    def get_transfer(self, transfer_id: int) -> Transfer:
        return self._call(f"wise get transfer {transfer_id}", lambda: self._get_transfer_once(transfer_id))

    def _get_transfer_once(self, transfer_id: int) -> Transfer:
        return Transfer.model_validate(self._request("GET", f"/v1/transfers/{transfer_id}"))

    def list_transfers(
        self, *, status: str | Iterable[str] | None = None, limit: int = 100, offset: int = 0, created_after: datetime | None = None
    ) -> list[Transfer]:
        """The profile's transfers, newest first."""
        params: dict[str, Any] = {"profile": self.profile_id, "limit": limit, "offset": offset}
        if status:
            params["status"] = status if isinstance(status, str) else ",".join(status)
        if created_after is not None:
            params["createdDateStart"] = _wise_date(created_after)

        def fetch() -> list[Transfer]:
            transfers = [Transfer.model_validate(t) for t in self._request("GET", "/v1/transfers", params=params)]
            # createdDateStart is a day (inclusive): drop what that day had before `created_after`.
            return [t for t in transfers if created_after is None or t.created is None or t.created >= _utc(created_after)]

        return self._call("wise list transfers", fetch)

    def _lookup_transfer(self, cti: str, created_after: datetime | None = None) -> Transfer | None:
        # Wise has no lookup by customerTransactionId: page through the listing. Its order is not
        # documented (a recorded sandbox listing came oldest first), so the listing is narrowed with
        # createdDateStart (a date, as in the reference's example) and every page is read.
        since = created_after or datetime.now(timezone.utc) - timedelta(days=self.lookup_window_days)
        for page in range(self.lookup_max_pages):
            params: dict[str, Any] = {
                "profile": self.profile_id,
                "limit": self.lookup_page_size,
                "offset": page * self.lookup_page_size,
                "createdDateStart": _wise_date(since),
            }
            items = self._request("GET", "/v1/transfers", params=params)
            for item in items:
                if str(item.get("customerTransactionId", "")).lower() == cti:
                    return Transfer.model_validate(item)
            if len(items) < self.lookup_page_size:
                return None
        log.warning(
            "wise: customerTransactionId %s not among %d transfers created since %s (lookup_max_pages)",
            cti, self.lookup_max_pages * self.lookup_page_size, _wise_date(since),
        )
        return None

    def find_transfer(self, customer_transaction_id: str, *, created_after: datetime | None = None) -> Transfer | None:
        """The transfer created with this customerTransactionId (or idempotency key), or None."""
        cti = customer_transaction_id_for(customer_transaction_id)
        return self._call(f"wise find transfer {cti}", lambda: self._lookup_transfer(cti, created_after))

    def fund_transfer(self, transfer_id: int) -> Payment:
        """Pay the transfer from the balance. REJECTED (e.g. insufficient funds) → BusinessError.

        Funding twice is harmless: Wise refuses the second funding (422
        transfer.invalid-state) and pays nothing; the transfer being funded, the
        answer is COMPLETED.
        """
        path = f"/v3/profiles/{self.profile_id}/transfers/{transfer_id}/payments"

        def reconcile() -> Payment | None:
            transfer = self._get_transfer_once(transfer_id)
            if transfer.is_funded:
                return Payment(type="BALANCE", status="COMPLETED", error_code=None)
            if transfer.status == WAITING:
                return None  # not applied: fund again
            raise BusinessError(f"wise transfer {transfer_id} is {transfer.status}; cannot fund it", code="transfer.not.fundable")

        try:
            payment = self._call(
                f"wise fund transfer {transfer_id}",
                lambda: Payment.model_validate(self._request("POST", path, json={"type": "BALANCE"})),
                reconcile=reconcile,
            )
        except BusinessError as exc:
            if exc.code not in _NOT_FUNDABLE_CODES:
                raise
            # Wise refuses a second funding (422 transfer.invalid-state): an earlier attempt whose
            # answer was lost, or a person in the Wise app, funded it. Funded is funded; anything
            # else (cancelled, refunded) is the refusal it looks like.
            transfer = self.get_transfer(transfer_id)
            if not transfer.is_funded or transfer.is_failed:
                raise
            log.warning("wise transfer %s was already funded (%s; now %s)", transfer_id, exc.code, transfer.status)
            return Payment(type="BALANCE", status="COMPLETED", error_code=None)
        if not payment.completed:
            raise BusinessError(
                f"wise funding of transfer {transfer_id} {payment.status}: {payment.error_code}", code=payment.error_code
            )
        log.info("wise transfer %s funded from balance", transfer_id)
        return payment

    def cancel_transfer(self, transfer_id: int) -> Transfer:
        """Cancel a transfer (a compensation). Cancelling twice is harmless.

        Wise cancels until the funds are converted (`CANCELLABLE_STATUSES`: a
        funded transfer still `processing` is cancelled and its money refunded);
        from `funds_converted` on it refuses (409
        transfer.cancellation.not.allowed): BusinessError."""

        def reconcile() -> Transfer | None:
            transfer = self._get_transfer_once(transfer_id)
            if transfer.status == CANCELLED:
                return transfer
            if transfer.status in CANCELLABLE_STATUSES:
                return None
            raise BusinessError(
                f"wise transfer {transfer_id} is {transfer.status}; it can no longer be cancelled",
                code="transfer.cancellation.not.allowed",
            )

        transfer = self._call(
            f"wise cancel transfer {transfer_id}",
            lambda: Transfer.model_validate(self._request("PUT", f"/v1/transfers/{transfer_id}/cancel")),
            reconcile=reconcile,
        )
        log.info("wise transfer %s cancelled", transfer_id)
        return transfer

    def wait_for_state(
        self,
        transfer_id: int,
        states: str | Iterable[str] = (SENT,),
        *,
        timeout: float = 120.0,
        poll_interval: float | None = None,
    ) -> Transfer:
        """Poll until the transfer reaches one of `states`.

        A transfer that ends in a failed state instead (cancelled, refunded) →
        BusinessError; still moving at the deadline → TransferNotSettledError
        (transient: waiting longer is the remedy). Transient read errors while
        polling are tolerated until the deadline.
        """
        wanted = {states} if isinstance(states, str) else set(states)
        interval = self.poll_interval_seconds if poll_interval is None else poll_interval
        return poll_transfer_state(
            lambda: self.get_transfer(transfer_id),
            transfer_id,
            wanted,
            timeout=timeout,
            pause=lambda remaining: time.sleep(min(interval, remaining)),
        )
