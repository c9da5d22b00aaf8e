"""Event schemas of the three Kafka topics, their validation, signing and the DLQ envelope.

Pure: no Dagster, no I/O. Everything a sensor needs to turn a raw Kafka value into
a typed event, or into a typed rejection with a reason a human can act on:

- `parse_event(topic, raw_bytes)` -> `MarketShockEvent | CapitalThresholdEvent |
  FundingRateEvent`, or `EventRejected(reason, field=...)`; `iter_events(topic,
  values)` / `parse_events` do a whole batch (what the sensors call), one result
  per value.
- Signing: HMAC-SHA256 over `canonical_payload(obj)` (the JSON object as sent,
  without `signature`, as sorted-keys compact UTF-8 JSON), hex in `signature`.
  Verification uses the object as received (`event.raw`), never a re-serialised
  model, so a producer in any language signs exactly what it sends.
- Critical events (`event.is_critical`) must also be signed, inside a timestamp
  window and not replayed: `check_critical_event`.
- `dlq_envelope(...)` builds the message parked on `<topic>.dlq`;
  `parse_dlq_envelope` reads it back for `arb-orchestration replay-dlq`.

Parsing has two paths with one outcome. The checked path (`_parse_checked`:
Python's JSON decoder, then explicit checks, then the model) defines what is
accepted and words every rejection. The fast path validates the bytes in
pydantic-core (Rust) in one call; it is taken only for values it provably
agrees on (see `_fast_path_applies`), and only for events that need no
signature check: a critical or signed event is always re-parsed by the checked
path, so its fields and the signed object come from the same decoded JSON.
Anything the fast path refuses goes through the checked path, which decides.
`screen_funding_rates` is a third way in for the funding sensor's bulk: the
model's own fields and constraints as a msgspec Struct, validated without
building models; it only ever takes values parse_event would accept (else it
says "ask parse_event").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import sys
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from operator import attrgetter
from typing import Annotated, Any, Literal, Protocol, Union

import msgspec
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1
DLQ_SCHEMA_VERSION = 1

MARKET_EVENTS = "market-events"
CAPITAL_EVENTS = "capital-events"
FUNDING_RATE_EVENTS = "funding-rate-events"
TOPICS: tuple[str, ...] = (MARKET_EVENTS, CAPITAL_EVENTS, FUNDING_RATE_EVENTS)
DLQ_SUFFIX = ".dlq"

DEFAULT_MAX_EVENT_BYTES = 64 * 1024

# Plausible epoch seconds (2001-09-09 .. 2286-11-20): a value outside is most
# likely milliseconds or garbage, and guessing the unit would move money on a guess.
_MIN_EPOCH_S = 1_000_000_000
_MAX_EPOCH_S = 9_999_999_999
_UTC = timezone.utc


class EventRejected(ValueError):
    """An event that must not be acted on; `reason` says why, `field` names the culprit if one does."""

    def __init__(self, reason: str, field: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.field = field


def topic_name(base: str, prefix: str = "") -> str:
    """The full name of one of the three topics under a deployment prefix (ARB_EVENT_TOPIC_PREFIX)."""
    if base not in TOPICS:
        raise ValueError(f"unknown topic '{base}' (expected one of {', '.join(TOPICS)})")
    return prefix + base


def base_topic(name: str, prefix: str = "") -> str:
    """Inverse of `topic_name`: 'bench-market-events' with prefix 'bench-' -> 'market-events'."""
    base = name[len(prefix) :] if prefix and name.startswith(prefix) else name
    if base not in TOPICS:
        raise ValueError(f"unknown topic '{name}' (expected one of {', '.join(prefix + t for t in TOPICS)})")
    return base


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of `topic`."""
    return topic + DLQ_SUFFIX


def source_topic_of(dlq: str) -> str:
    """The topic a dead-letter topic belongs to; raises ValueError for a name without `.dlq`."""
    if not dlq.endswith(DLQ_SUFFIX) or len(dlq) == len(DLQ_SUFFIX):
        raise ValueError(f"{dlq!r} is not a dead-letter topic (expected '<topic>{DLQ_SUFFIX}')")
    return dlq[: -len(DLQ_SUFFIX)]


# --------------------------------------------------------------------------- schemas


def _to_utc_datetime(value: Any) -> datetime:
    """`ts` is UTC epoch seconds (int/float) or an ISO-8601 string with an offset."""
    kind = type(value)
    # The common case first (runs for every event): a plain in-range number. NaN, inf, bool
    # and out-of-range values fall through to the checks below, which word the refusal.
    if (kind is float or kind is int) and _MIN_EPOCH_S <= value <= _MAX_EPOCH_S:
        return datetime.fromtimestamp(value, _UTC)
    if isinstance(value, bool):
        raise ValueError("must be epoch seconds or an ISO-8601 string, got a boolean")
    if isinstance(value, (int, float)):
        # isfinite() of an int beyond float range raises OverflowError (which would escape
        # validation and fail the sensor tick); the range check below refuses such ints.
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number of epoch seconds")
        if not _MIN_EPOCH_S <= value <= _MAX_EPOCH_S:
            raise ValueError(
                f"{value!r} is not plausible epoch seconds (milliseconds? send seconds, e.g. 1767225600)"
            )
        return datetime.fromtimestamp(value, tz=timezone.utc)
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO-8601 timestamp") from None
        if parsed.tzinfo is None:
            raise ValueError(f"{value!r} has no UTC offset (append 'Z' or '+00:00')")
        return parsed.astimezone(timezone.utc)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("datetime has no timezone")
        return value.astimezone(timezone.utc)
    raise ValueError(f"must be epoch seconds or an ISO-8601 string, got {type(value).__name__}")


UtcTimestamp = Annotated[datetime, BeforeValidator(_to_utc_datetime)]
Name = Annotated[str, Field(min_length=1, max_length=64)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
HexSignature = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _EventBase(BaseModel):
    """Fields every event carries. Strict types: "5" is not a number here."""

    # Unknown fields are ignored (additive, optional fields may appear within a
    # schema version); they are still covered by the signature, which is
    # computed over the object as received.
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    # What the event was parsed from (`raw`): the received bytes, or the object the
    # checked path decoded. A plain slot, not a pydantic private attribute: those
    # cost a Python-level `model_post_init` call on every instance (~1/3 of a
    # funding event's validation, bench/sensor_throughput.py). Copies do not carry
    # it (a `model_copy(update=...)` is no longer what was received).
    __slots__ = ("_received",)

    # A strict int pinned to the one version (not `Literal[1]`, which also takes
    # `1.0` and `true`): the same in Python and in JSON mode, so the fast path
    # refuses what the checked path's explicit version check refuses.
    schema_version: Annotated[int, Field(ge=SCHEMA_VERSION, le=SCHEMA_VERSION)]
    event_id: Annotated[str, Field(min_length=1, max_length=128)]
    ts: UtcTimestamp
    venue: Name
    signature: HexSignature | None = None

    @property
    def raw(self) -> dict[str, Any]:
        """The JSON object this event was parsed from (what the signature covers).

        Decoded from the received bytes on first use (only a signature check needs
        it), with the checked path's decoder; an event built in code has none and
        gets its own JSON form.
        """
        received = getattr(self, "_received", None)
        if received is None:
            return self.model_dump(mode="json", exclude_none=True)
        if not isinstance(received, dict):
            received = _decode_object(received)
            object.__setattr__(self, "_received", received)
        return received

    @property
    def is_critical(self) -> bool:
        return False

    @property
    def topic(self) -> str:
        raise NotImplementedError


class MarketShockEvent(_EventBase):
    """A price move on one venue/symbol within a window; `critical` means an extreme shock (stop-loss)."""

    symbol: Name
    price_change_pct: FiniteFloat
    window_seconds: Annotated[int, Field(gt=0)]
    severity: Literal["info", "warning", "critical"]

    @property
    def is_critical(self) -> bool:
        return self.severity == "critical"

    @property
    def topic(self) -> str:
        return MARKET_EVENTS


class CapitalThresholdEvent(_EventBase):
    """A balance on one venue crossed its floor; `critical` triggers the emergency path."""

    asset: Name
    balance: FiniteFloat
    threshold: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    level: Literal["warning", "critical"]

    @property
    def is_critical(self) -> bool:
        return self.level == "critical"

    @property
    def topic(self) -> str:
        return CAPITAL_EVENTS


class FundingRateEvent(_EventBase):
    """A perp funding rate as the venue quotes it: `rate` per `interval_hours` (8 on most venues, 1 on hyperliquid)."""

    symbol: Name
    rate: FiniteFloat
    interval_hours: Annotated[float, Field(gt=0, allow_inf_nan=False)]

    @property
    def topic(self) -> str:
        return FUNDING_RATE_EVENTS


Event = Union[MarketShockEvent, CapitalThresholdEvent, FundingRateEvent]

EVENT_MODELS: dict[str, type[_EventBase]] = {
    MARKET_EVENTS: MarketShockEvent,
    CAPITAL_EVENTS: CapitalThresholdEvent,
    FUNDING_RATE_EVENTS: FundingRateEvent,
}


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every message: `json.loads(text, parse_constant=...)` builds a new
# JSONDecoder per call, which was ~40% of parse_event (bench/sensor_throughput.py).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else type(value).__name__


def _reason_from(error: ValidationError) -> EventRejected:
    first = error.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    count = error.error_count()
    more = f" (and {count - 1} more problem{'s' if count > 2 else ''})" if count > 1 else ""
    if first["type"] == "missing":
        return EventRejected(f"missing field '{field}'{more}", field)
    message = first["msg"].removeprefix("Value error, ")
    return EventRejected(f"field '{field}': {message}{more}", field)


def _decode_object(data: bytes | str) -> dict[str, Any]:
    """The checked path's decoding: UTF-8 text, then JSON without NaN/Infinity, then an object."""
    if isinstance(data, str):
        text = data
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventRejected(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        obj = _DECODER.decode(text)
    except RecursionError:
        # Python's decoder recurses per nesting level; a value nested a few thousand deep
        # (well within 64 KiB) would otherwise escape as RecursionError and fail every tick.
        raise EventRejected("not JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and NaN/Infinity
        raise EventRejected(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise EventRejected(f"not a JSON object (got {_json_type(obj)})")
    return obj


def _parse_checked(model: type[_EventBase], raw: bytes | str | None, max_bytes: int) -> Event:
    """The reference parse: every rejection with its reason; the event keeps the decoded object."""
    if raw is None or len(raw) == 0:
        raise EventRejected("empty message (no value)")
    data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    if len(data) > max_bytes:
        raise EventRejected(f"oversized: {len(data)} bytes > limit {max_bytes} bytes")
    obj = _decode_object(data)
    if "schema_version" not in obj:
        raise EventRejected("missing field 'schema_version'", "schema_version")
    version = obj["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise EventRejected(
            f"field 'schema_version': must be an integer, got {type(version).__name__}", "schema_version"
        )
    if version != SCHEMA_VERSION:
        raise EventRejected(
            f"unknown schema_version {version} (this consumer understands {SCHEMA_VERSION})", "schema_version"
        )
    try:
        event = model.model_validate(obj)
    except ValidationError as exc:
        raise _reason_from(exc) from None
    object.__setattr__(event, "_received", obj)
    return event  # type: ignore[return-value]


# pydantic-core's JSON parser takes the tokens NaN, Infinity and -Infinity, which the
# checked path refuses as "not JSON" (in a declared float field the model refuses them
# anyway, but an unknown field is ignored). A value that contains either spelling
# anywhere, even inside a string, takes the checked path. Measured as the only JSON the
# fast parser takes and Python's refuses, apart from integers longer than Python's
# int_max_str_digits when that was lowered below the parser's own 4,300-digit limit
# (also sent to the checked path); see the differential tests in test_events.py.
_RUST_INT_DIGITS = 4300
_FAST_VALIDATORS = {topic: model.__pydantic_validator__.validate_json for topic, model in EVENT_MODELS.items()}


def _fast_path_applies(data: bytes, max_bytes: int) -> bool:
    if not 0 < len(data) <= max_bytes or b"NaN" in data or b"Infinity" in data:
        return False
    digits = sys.get_int_max_str_digits()
    return not (0 < digits < _RUST_INT_DIGITS and len(data) > digits)


def parse_event(topic: str, raw: bytes | str | None, *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Event:
    """Decode and validate one Kafka value of `topic`; raises `EventRejected` with the reason."""
    model = EVENT_MODELS.get(topic)
    if model is None:
        raise EventRejected(f"unknown topic '{topic}' (expected one of {', '.join(TOPICS)})")
    if type(raw) is bytes and _fast_path_applies(raw, max_bytes):
        try:
            event = _FAST_VALIDATORS[topic](raw)
        except ValidationError:
            pass  # the checked path words the reason (or accepts what the fast parser would not)
        else:
            if event.signature is None and not event.is_critical:
                object.__setattr__(event, "_received", raw)
                return event  # type: ignore[return-value]
    return _parse_checked(model, raw, max_bytes)


def parse_events(
    topic: str, values: Iterable[bytes | str | None], *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> list[Event | EventRejected]:
    """`parse_event` over a batch: for each value, its event or the `EventRejected` saying why not."""
    return list(iter_events(topic, values, max_bytes=max_bytes))


def iter_events(
    topic: str, values: Iterable[bytes | str | None], *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> Iterator[Event | EventRejected]:
    """`parse_event` over a batch, lazily: for each value, its event or the `EventRejected` saying why not.

    The same outcome as calling `parse_event` on each value (the tests hold it to
    that). What the sensors call: one call per batch keeps the per-message Python
    overhead to the loop, and yielding lets each event die as soon as the caller
    is done with it (a list of a thousand live models gets them promoted by the
    garbage collector, which then sweeps the code server's whole heap more often).
    """
    model = EVENT_MODELS.get(topic)
    if model is None:
        raise EventRejected(f"unknown topic '{topic}' (expected one of {', '.join(TOPICS)})")
    validate = _FAST_VALIDATORS[topic]
    set_received = object.__setattr__
    digits = sys.get_int_max_str_digits()
    long_ints_differ = 0 < digits < _RUST_INT_DIGITS
    for raw in values:
        if (
            type(raw) is bytes
            and 0 < len(raw) <= max_bytes
            and b"NaN" not in raw
            and b"Infinity" not in raw
            and not (long_ints_differ and len(raw) > digits)
        ):
            try:
                event = validate(raw)
            except ValidationError:
                pass
            else:
                if event.signature is None and not event.is_critical:
                    set_received(event, "_received", raw)
                    yield event
                    continue
        try:
            yield _parse_checked(model, raw, max_bytes)
        except EventRejected as exc:
            yield exc


# --------------------------------------------------------------------------- funding-rate screen
#
# The funding sensor's bulk: nearly all its messages are plain rates, and to keep the newest
# rate per market it needs only venue, symbol and time. `screen_funding_rates` validates them
# with msgspec (~0.5 us a value, vs ~1.3 us for the pydantic-core screen it replaced) against
# `FundingRateRow`, a Struct derived from `FundingRateEvent.model_fields` at import, so it
# cannot drift from the model: same fields, types and constraints; only `ts` is narrowed to a
# number in the plausible epoch range (what `_to_utc_datetime` takes without a string). The
# screen only ever says "this value is a plain rate, here are its fields" or "ask parse_event";
# parse_event (the pydantic model) stays the one that accepts, refuses and words the reason.
#
# What msgspec's JSON reader takes and Python's refuses (measured, and held by tests), kept
# away from it: invalid UTF-8 inside a string it skips (an unknown field) -> only all-ASCII or
# valid UTF-8 values are screened; integers longer than `sys.get_int_max_str_digits()` digits
# in a skipped field -> values longer than that are not screened. Everything else it refuses
# too (NaN/Infinity tokens, control characters, trailing data, deep nesting) or refuses where
# Python accepts (a lone surrogate escape, an ISO-8601 `ts`), which parse_event then decides.


def _row_constraints(name: str, metadata: list[Any]) -> dict[str, Any]:
    """msgspec.Meta keywords for a model field's constraints; raises for one it cannot express."""
    meta: dict[str, Any] = {}
    for item in metadata:
        kind = type(item).__name__
        if kind in ("Ge", "Le", "Gt", "Lt", "MinLen", "MaxLen"):
            key = {"MinLen": "min_length", "MaxLen": "max_length"}.get(kind, kind.lower())
            meta[key] = getattr(item, key)
        elif kind == "AllowInfNan" and item.allow_inf_nan is False:
            # A msgspec `float` read from JSON is always finite: it refuses the NaN/Infinity
            # tokens as malformed and a literal beyond the float range as "out of range".
            continue
        else:
            raise TypeError(f"FundingRateRow: no msgspec form for {name}'s constraint {item!r}")
    return meta


def _row_struct(model: type[_EventBase], names: Mapping[str, list[str]] | None = None) -> type[msgspec.Struct]:
    """A msgspec Struct with `model`'s fields and constraints, `ts` as epoch seconds (see above).

    `names`: string fields narrowed to `Literal` of those values (each already valid for the field).
    """
    config = model.model_config
    # strict pydantic and msgspec agree on JSON types: an int is no float's substitute for `int`
    # (1.0 and true are refused), a float field takes an integer, strings are only strings.
    if config.get("strict") is not True or config.get("extra") != "ignore":
        raise TypeError("FundingRateRow assumes a strict model that ignores unknown fields")
    fields: list[Any] = []
    for name, info in model.model_fields.items():
        if name == "ts":
            fields.append((name, Annotated[float, msgspec.Meta(ge=_MIN_EPOCH_S, le=_MAX_EPOCH_S)]))
            continue
        if not info.is_required():
            # An optional field (the signature) may only be absent or null in a row: a value that
            # carries one is refused here and parse_event decides (a signature may need checking).
            if info.default is not None:
                raise TypeError(f"FundingRateRow: optional field {name} must default to None")
            fields.append((name, None, None))
            continue
        if info.annotation not in (str, int, float):
            raise TypeError(f"FundingRateRow: no msgspec form for {name}: {info.annotation!r}")
        if names and name in names:
            if info.annotation is not str:
                raise TypeError(f"FundingRateRow: {name} is not a string field")
            fields.append((name, Literal[tuple(names[name])]))
            continue
        meta = _row_constraints(name, info.metadata)
        fields.append((name, Annotated[info.annotation, msgspec.Meta(**meta)] if meta else info.annotation))
    # gc=False: a row holds only str/int/float/None, it can never be part of a cycle, so the
    # garbage collector need not track (and later walk) the ~100,000 rows a busy tick makes.
    return msgspec.defstruct(f"{model.__name__[:-5]}Row", fields, kw_only=True, frozen=True, gc=False)


FundingRateRow = _row_struct(FundingRateEvent)
_OPTIONAL_ROW_FIELDS = [n for n, i in FundingRateEvent.model_fields.items() if not i.is_required()]
assert _OPTIONAL_ROW_FIELDS == ["signature"], (
    "screen_funding_rates refuses rows that carry a signature: revisit it when the model gains an optional field"
)
_DECODE_ROW = msgspec.json.Decoder(FundingRateRow).decode
_VENUE_OF, _SYMBOL_OF = attrgetter("venue"), attrgetter("symbol")


def _screen_limit(max_bytes: int) -> int:
    """The longest value screened: `max_bytes`, and no longer than Python's integer digit limit."""
    digits = sys.get_int_max_str_digits()
    return min(max_bytes, digits) if digits > 0 else max_bytes


def _screen_one(value: Any, limit: int) -> Any:
    if isinstance(value, str) or not 0 < len(value or b"") <= limit:
        return None
    try:
        if not bytes(value).isascii():
            bytes(value).decode("utf-8")
        return _DECODE_ROW(value)
    except (ValueError, RecursionError):  # msgspec's DecodeError/ValidationError are ValueErrors, as is
        return None  # UnicodeDecodeError


def screen_funding_rates(values: list[bytes | None], *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> list[Any]:
    """For each value, its `FundingRateRow` when it is a plain funding-rate event, else None.

    A row (`venue`, `symbol`, `ts` as epoch seconds, `rate`, ... as attributes)
    comes back only for a value that `parse_event(FUNDING_RATE_EVENTS, value)`
    would return as an unsigned `FundingRateEvent` with a numeric `ts`, with the
    same field values and `event.ts == datetime.fromtimestamp(row.ts, timezone.utc)`
    (the tests hold it to that, and to taking every such value but the kinds
    listed above). For None, call `parse_event`: it decides, and words the reason
    if it refuses. No event is built; the funding sensor builds the event of the
    few rates it keeps. A bytes-like value (bytearray, memoryview) is screened
    as the same bytes (parse_event reads it so); a `str` is not screened.

    A chunk of ASCII values within the size limit is decoded with one C-level
    `map`; a chunk where any value is refused is screened value by value.
    """
    if not values:
        return []
    limit = _screen_limit(max_bytes)
    return _screen_whole(values, limit, _DECODE_ROW) or [_screen_one(value, limit) for value in values]


def _screen_whole(values: list[Any], limit: int, decode: Any) -> list[Any] | None:
    """Every value of a non-empty chunk decoded by `decode` in one C-level map; None when any is refused."""
    try:
        # One C-level pass: refuses None and str (TypeError); ASCII means no invalid UTF-8
        # that msgspec could skip over. An empty value is malformed JSON to msgspec.
        clean = b"".join(values).isascii()
    except TypeError:
        return None
    if clean and max(map(len, values)) <= limit:
        try:
            return list(map(decode, values))
        except (ValueError, RecursionError):
            pass  # somebody in the chunk is refused: the caller screens one by one
    return None


class FundingScreen:
    """`screen_funding_rates` that learns the venues and symbols it has seen, for the funding sensor.

    A chunk whose venues and symbols were all seen before is decoded by a Struct
    like `FundingRateRow` whose `venue` and `symbol` are `Literal[...]` of those
    names: msgspec then returns the one stored string of each name instead of
    building new ones (about half the decoding, measured: 0.51 vs 0.92 us a
    value), and their hashes are already computed when the rows are grouped by
    market. The names are learned from rows `FundingRateRow` took (so they meet
    the model's constraints); a value is taken by the specialised Struct only if
    `FundingRateRow` would take it too, with the same field values. A chunk with a
    new name, or anything refused, is screened by `screen_funding_rates` as
    before (whose rows teach the new names). At most `max_names` venues and
    symbols are learned; beyond that, chunks with other names take the general
    way.
    """

    def __init__(self, max_names: int = 1024):
        self.max_names = max_names
        self._venues: set[str] = set()
        self._symbols: set[str] = set()
        self._decode: Any = None
        self._lock = threading.Lock()

    def __call__(self, values: list[bytes | None], *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> list[Any]:
        if not values:
            return []
        decode = self._decode
        if decode is not None:
            rows = _screen_whole(values, _screen_limit(max_bytes), decode)
            if rows is not None:
                return rows
        rows = screen_funding_rates(values, max_bytes=max_bytes)
        self._learn(rows)
        return rows

    def _learn(self, rows: list[Any]) -> None:
        taken = [row for row in rows if row is not None]
        venues = set(map(_VENUE_OF, taken)) - self._venues
        symbols = set(map(_SYMBOL_OF, taken)) - self._symbols
        if not venues and not symbols:
            return
        with self._lock:
            if len(self._venues | venues) > self.max_names or len(self._symbols | symbols) > self.max_names:
                return  # too many names to specialise on: the general screen takes the rest
            self._venues |= venues
            self._symbols |= symbols
            self._decode = msgspec.json.Decoder(
                _row_struct(FundingRateEvent, names={"venue": sorted(self._venues), "symbol": sorted(self._symbols)})
            ).decode


try:  # built from _fastfunding.c by `pip install` (optional there: without a C compiler it is absent)
    from arb_orchestration.domain import _fastfunding
except ImportError:  # pragma: no cover - the test suite fails when it was not built
    _fastfunding = None

FAST_CHUNK_SCAN = _fastfunding is not None
# The fields the C scanner checks (schema_version the token 1; event_id 1..128 and venue/symbol 1..64 characters;
# ts in the plausible epoch range; rate finite; interval_hours > 0; signature absent or null), with the string
# lengths it hard-codes; `_fastfunding_constants_hold` ties them to the model.
_C_SCANNED_FIELDS = frozenset({"schema_version", "event_id", "ts", "venue", "symbol", "rate", "interval_hours",
                               "signature"})
_C_SCANNED_LENGTHS = {"event_id": (1, 128), "venue": (1, 64), "symbol": (1, 64)}


def _fastfunding_constants_hold() -> bool:
    """The C scanner's hard-coded limits are the model's (checked at import: a model change fails loudly)."""
    fields = FundingRateEvent.model_fields
    if set(fields) != _C_SCANNED_FIELDS or SCHEMA_VERSION != 1:
        return False
    return all(_row_constraints(name, fields[name].metadata) == {"min_length": low, "max_length": high}
               for name, (low, high) in _C_SCANNED_LENGTHS.items())


if not _fastfunding_constants_hold():
    raise TypeError(
        "FundingRateEvent changed: update arb_orchestration/domain/_fastfunding.c (its field checks) and "
        "_C_SCANNED_FIELDS / _C_SCANNED_LENGTHS before the funding sensor may use it"
    )


class FundingChunkScan:
    """Each market's newest rate in a chunk of plain funding-rate values, in one C pass; or None.

    The funding sensor's common chunk (every value a plain, fresh, unsigned rate)
    without a Python step per message: what `FundingScreen`
    followed by `NewestPerMarket.offer_fresh_rows` does for such a chunk, with the
    same outcome (the tests hold it to that, value by value and chunk by chunk).
    The C side (`_fastfunding.c`) is a conservative recognizer: it takes a value
    only in a plain flat-JSON shape it fully checks against the model's fields,
    and answers None for the whole chunk as soon as one value is anything else
    (an escape, a nested value, a field out of range, a rate older than
    `fresher_than`, a market beyond `max_markets`, two rates of one market read
    out of time order within a few microseconds...).
    None is never a verdict: the caller then takes the Python path, which
    decides and words every reason.

    A result is a list of `((venue, symbol), index, ts)`: per market of the
    chunk, its last value's index and `ts` (epoch seconds), in the order the
    markets first appear. Holds the markets it has seen (at most `max_markets`),
    so their names are built once.
    """

    def __init__(self, max_markets: int = 4096):
        self.max_markets = max_markets
        self._slots: dict[bytes, int] = {}
        self._markets: list[tuple[str, str]] = []

    def __call__(
        self, values: list[Any], *, fresher_than: float, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
    ) -> list[tuple[tuple[str, str], int, float]] | None:
        if _fastfunding is None or not values or type(values) is not list:
            return None
        return _fastfunding.newest_in_chunk(
            values, float(fresher_than), _screen_limit(max_bytes), float(_MIN_EPOCH_S), float(_MAX_EPOCH_S),
            self._slots, self._markets, self.max_markets,
        )


def recognize_funding_value(value: bytes) -> tuple[str, str, float] | None:
    """For the tests: (venue, symbol, ts) when the C scanner takes this one value, else None."""
    if _fastfunding is None:
        raise RuntimeError("the _fastfunding extension is not built")
    return _fastfunding.recognize_one(value, float(_MIN_EPOCH_S), float(_MAX_EPOCH_S))


def validate_payload(topic: str, payload: Mapping[str, Any]) -> Event:
    """`parse_event` for an object built in code (e.g. by the `publish` command)."""
    try:
        data = encode_event(payload)
    except (TypeError, ValueError) as exc:  # NaN/Infinity, non-JSON types
        raise EventRejected(f"not JSON: {exc}") from None
    return parse_event(topic, data, max_bytes=DEFAULT_MAX_EVENT_BYTES)


def new_event_id() -> str:
    return str(uuid.uuid4())


def encode_event(payload: Mapping[str, Any]) -> bytes:
    """The bytes put on the wire: compact JSON, UTF-8."""
    return json.dumps(dict(payload), separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def partition_key(payload: Mapping[str, Any]) -> bytes:
    """Kafka message key: venue and instrument, so one instrument's events stay in order."""
    instrument = payload.get("symbol") or payload.get("asset") or ""
    return f"{payload.get('venue', '')}:{instrument}".encode("utf-8")


# --------------------------------------------------------------------------- signing


def _key_bytes(key: str | bytes) -> bytes:
    data = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if not data:
        raise ValueError("the signing key is empty")
    return data


def canonical_payload(obj: Mapping[str, Any]) -> bytes:
    """What the signature covers: the object without `signature`, sorted keys, compact, UTF-8."""
    unsigned = {k: v for k, v in obj.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def compute_signature(obj: Mapping[str, Any], key: str | bytes) -> str:
    return hmac.new(_key_bytes(key), canonical_payload(obj), hashlib.sha256).hexdigest()


def sign_event(event: Mapping[str, Any], key: str | bytes) -> dict[str, Any]:
    """A copy of `event` with `signature` = hex HMAC-SHA256 of its canonical payload."""
    signed = {k: v for k, v in event.items() if k != "signature"}
    signed["signature"] = compute_signature(signed, key)
    return signed


def verify_signature(event: Event | Mapping[str, Any], key: str | bytes) -> None:
    """Raises `EventRejected` unless the event carries a valid signature under `key`."""
    obj = event.raw if isinstance(event, _EventBase) else event
    signature = obj.get("signature")
    if not signature:
        raise EventRejected("missing signature", "signature")
    if not isinstance(signature, str):
        raise EventRejected("field 'signature': must be a hex string", "signature")
    key_bytes = _key_bytes(key)  # an empty key is a deployment error (ValueError), not the event's fault
    try:
        canonical = canonical_payload(obj)
    except (ValueError, RecursionError) as exc:
        # Valid JSON that has no canonical form: a number beyond float range (1e400 reads as inf),
        # a lone surrogate escape (not encodable as UTF-8), nesting deeper than the encoder goes.
        # Nobody can have signed it; refusing it here keeps it from failing the sensor tick.
        raise EventRejected(
            f"bad signature: the payload has no canonical form to verify ({type(exc).__name__}: {exc})", "signature"
        ) from None
    expected = hmac.new(key_bytes, canonical, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise EventRejected("bad signature (HMAC-SHA256 does not match the payload)", "signature")


@dataclass(frozen=True)
class TimestampWindow:
    """How old (or how far ahead of our clock) a critical event may be."""

    max_age_seconds: float = 60.0
    max_future_seconds: float = 5.0


DEFAULT_WINDOW = TimestampWindow()


def check_timestamp_window(
    event: Event, *, now: datetime | None = None, window: TimestampWindow = DEFAULT_WINDOW
) -> None:
    """Raises `EventRejected` when `event.ts` is outside `window` around `now` (UTC)."""
    now = now or datetime.now(timezone.utc)
    age = (now - event.ts).total_seconds()
    if age > window.max_age_seconds:
        raise EventRejected(f"stale: event is {age:.1f} s old (window {window.max_age_seconds:g} s)", "ts")
    if -age > window.max_future_seconds:
        raise EventRejected(
            f"from the future: ts is {-age:.1f} s ahead of now (allowed {window.max_future_seconds:g} s)", "ts"
        )


class SeenEventIds(Protocol):
    """Where replay protection remembers event ids: a `set` works, so does `RecentEventIds`."""

    def __contains__(self, event_id: object) -> bool: ...

    def add(self, event_id: str) -> None: ...


class RecentEventIds:
    """A bounded set of the most recently seen event ids (oldest evicted first); serialisable into a cursor.

    Bounded because critical events outside the timestamp window are rejected
    anyway: the store only has to cover ids young enough to pass the window.
    """

    def __init__(self, ids: Iterable[str] = (), capacity: int = 10_000):
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()
        for event_id in ids:
            self.add(event_id)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def to_list(self) -> list[str]:
        return list(self._ids)


def check_not_replayed(event: Event, seen: SeenEventIds) -> None:
    """Raises `EventRejected` if `event.event_id` was seen; otherwise records it."""
    if event.event_id in seen:
        raise EventRejected(f"replayed: event id '{event.event_id}' was already accepted", "event_id")
    seen.add(event.event_id)


def check_critical_event(
    event: Event,
    signing_key: str | bytes | None,
    seen: SeenEventIds,
    *,
    now: datetime | None = None,
    window: TimestampWindow = DEFAULT_WINDOW,
) -> None:
    """The admission rule for acting on an event.

    Critical events must be signed, inside the timestamp window and new (their id
    is recorded only once all three checks pass). A non-critical event that
    carries a signature must carry a valid one. Raises `EventRejected`; raises
    `ValueError` when a critical event arrives and no key is configured (a
    deployment error, not the event's fault).
    """
    if event.is_critical:
        if not signing_key:
            raise ValueError("EVENT_SIGNING_KEY is not configured: critical events cannot be verified")
        verify_signature(event, signing_key)
        check_timestamp_window(event, now=now, window=window)
        check_not_replayed(event, seen)
    elif event.signature is not None and signing_key:
        verify_signature(event, signing_key)


# --------------------------------------------------------------------------- dead-letter envelope


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def dlq_envelope(
    *,
    value: bytes | None,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None = None,
    headers: Iterable[tuple[str, bytes | None]] | None = None,
    parked_at: datetime | None = None,
    with_text: bool = True,
) -> dict[str, Any]:
    """The JSON object parked on `<topic>.dlq`: the original message, losslessly, and why it was parked.

    `headers` are the original record's headers (kept so a replay can put them back);
    `with_text=False` leaves out the readable copy of the value (`value_text`), for an
    envelope that would otherwise be too large for the DLQ (replay uses `value_b64`).
    """
    text = None
    if value is not None and with_text:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    original: dict[str, Any] = {
        "value_b64": _b64(value),
        # Readable copy for people browsing the topic; replay uses value_b64.
        "value_text": text,
        "key_b64": _b64(key),
        "size_bytes": 0 if value is None else len(value),
    }
    if headers:
        original["headers"] = [{"key": name, "value_b64": _b64(data)} for name, data in headers]
    return {
        "dlq_schema_version": DLQ_SCHEMA_VERSION,
        "reason": reason,
        "source": {"topic": topic, "partition": partition, "offset": offset, "timestamp_ms": timestamp_ms},
        "original": original,
        "parked_at": (parked_at or datetime.now(timezone.utc)).isoformat(),
    }


def encode_dlq_envelope(**kwargs: Any) -> bytes:
    """`dlq_envelope(...)` as the bytes to produce."""
    return json.dumps(dlq_envelope(**kwargs), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class DlqSource(BaseModel):
    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


class DlqHeader(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    value_b64: str | None = None


class DlqOriginal(BaseModel):
    model_config = ConfigDict(frozen=True)

    value_b64: str | None = None
    value_text: str | None = None
    key_b64: str | None = None
    size_bytes: int = 0
    headers: list[DlqHeader] = []  # envelopes written before headers were kept have none


class DlqEnvelope(BaseModel):
    """A parked message read back from a `.dlq` topic."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    dlq_schema_version: Literal[1]
    reason: str
    source: DlqSource
    original: DlqOriginal
    parked_at: str

    def original_value(self) -> bytes | None:
        v = self.original.value_b64
        return None if v is None else base64.b64decode(v)

    def original_key(self) -> bytes | None:
        k = self.original.key_b64
        return None if k is None else base64.b64decode(k)

    def original_headers(self) -> list[tuple[str, bytes | None]]:
        """The original record's headers, in order (empty when it had none)."""
        return [
            (h.key, None if h.value_b64 is None else base64.b64decode(h.value_b64)) for h in self.original.headers
        ]


def parse_dlq_envelope(raw: bytes | str) -> DlqEnvelope:
    """Read a `.dlq` message; raises `EventRejected` if it is not an envelope this code wrote."""
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise EventRejected(f"not a DLQ envelope: not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise EventRejected("not a DLQ envelope: not a JSON object")
    try:
        return DlqEnvelope.model_validate(obj)
    except ValidationError as exc:
        rejected = _reason_from(exc)
        raise EventRejected(f"not a DLQ envelope: {rejected.reason}", rejected.field) from None
