"""Event schemas, parse rejections, canonical signing, the critical-event window and replay checks, the DLQ envelope;
the fast parse path, batch parsing and the funding screen held to the checked path's outcome."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arb_orchestration.domain import events as ev
from arb_orchestration.domain.events import (
    CapitalThresholdEvent,
    EventRejected,
    FundingRateEvent,
    MarketShockEvent,
    RecentEventIds,
    TimestampWindow,
    canonical_payload,
    check_critical_event,
    check_not_replayed,
    check_timestamp_window,
    dlq_envelope,
    encode_dlq_envelope,
    parse_dlq_envelope,
    parse_event,
    sign_event,
    verify_signature,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
KEY = "test-signing-key"


def market(**changes):
    payload = {
        "schema_version": 1,
        "event_id": "m-1",
        "ts": NOW.timestamp(),
        "venue": "binance",
        "symbol": "BTC/USDT:USDT",
        "price_change_pct": -4.2,
        "window_seconds": 60,
        "severity": "warning",
    }
    payload.update(changes)
    return payload


def capital(**changes):
    payload = {
        "schema_version": 1,
        "event_id": "c-1",
        "ts": "2026-03-01T12:00:00Z",
        "venue": "okx",
        "asset": "USDT",
        "balance": 41_000.5,
        "threshold": 50_000,
        "level": "warning",
    }
    payload.update(changes)
    return payload


def funding(**changes):
    payload = {
        "schema_version": 1,
        "event_id": "f-1",
        "ts": 1772366400,
        "venue": "hyperliquid",
        "symbol": "ETH/USDT:USDT",
        "rate": 0.0000125,
        "interval_hours": 1,
    }
    payload.update(changes)
    return payload


def raw(payload) -> bytes:
    return json.dumps(payload).encode()


def rejected(topic, data, **kwargs) -> EventRejected:
    with pytest.raises(EventRejected) as info:
        parse_event(topic, data, **kwargs)
    return info.value


# ------------------------------------------------------------------ valid events


def test_each_topic_parses_into_its_model():
    m = parse_event("market-events", raw(market()))
    c = parse_event("capital-events", raw(capital()))
    f = parse_event("funding-rate-events", raw(funding()))
    assert isinstance(m, MarketShockEvent) and m.price_change_pct == -4.2 and m.topic == "market-events"
    assert isinstance(c, CapitalThresholdEvent) and c.threshold == 50_000.0
    assert isinstance(f, FundingRateEvent) and f.interval_hours == 1.0


def test_ts_accepts_epoch_seconds_and_iso_with_offset_as_utc():
    assert parse_event("market-events", raw(market(ts=NOW.timestamp()))).ts == NOW
    assert parse_event("market-events", raw(market(ts="2026-03-01T12:00:00Z"))).ts == NOW
    assert parse_event("market-events", raw(market(ts="2026-03-01T14:00:00+02:00"))).ts == NOW


def test_criticality_follows_severity_and_level():
    assert parse_event("market-events", raw(market(severity="critical"))).is_critical
    assert not parse_event("market-events", raw(market(severity="warning"))).is_critical
    assert parse_event("capital-events", raw(capital(level="critical"))).is_critical
    assert not parse_event("funding-rate-events", raw(funding())).is_critical


def test_raw_is_the_object_as_received():
    payload = market(extra_field="kept for the signature")
    event = parse_event("market-events", raw(payload))
    assert event.raw == payload


# ------------------------------------------------------------------ rejections


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"", "empty message"),
        (None, "empty message"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b'{"a": NaN}', "not JSON"),
        (b"[1, 2]", "not a JSON object (got array)"),
        (b'"hello"', "not a JSON object (got string)"),
    ],
)
def test_undecodable_values_are_rejected_with_a_reason(data, expected):
    assert expected in rejected("market-events", data).reason


def test_oversized_values_are_rejected_before_decoding():
    payload = raw(market(note="x" * 2000))
    error = rejected("market-events", payload, max_bytes=1024)
    assert error.reason == f"oversized: {len(payload)} bytes > limit 1024 bytes"


def test_default_size_limit_is_64_kib():
    assert ev.DEFAULT_MAX_EVENT_BYTES == 65536
    assert "oversized" in rejected("market-events", raw(market(note="x" * 70_000))).reason


def test_unknown_topic():
    error = rejected("trades", raw(market()))
    assert "unknown topic 'trades'" in error.reason and "market-events" in error.reason


@pytest.mark.parametrize("version, expected", [(2, "unknown schema_version 2"), ("1", "must be an integer"),
                                                (True, "must be an integer")])
def test_schema_version_must_be_known(version, expected):
    error = rejected("market-events", raw(market(schema_version=version)))
    assert expected in error.reason and error.field == "schema_version"


def test_missing_schema_version():
    payload = market()
    del payload["schema_version"]
    assert rejected("market-events", raw(payload)).reason == "missing field 'schema_version'"


@pytest.mark.parametrize("field", ["event_id", "ts", "venue", "symbol", "price_change_pct", "window_seconds", "severity"])
def test_missing_fields_are_named(field):
    payload = market()
    del payload[field]
    error = rejected("market-events", raw(payload))
    assert error.reason == f"missing field '{field}'" and error.field == field


@pytest.mark.parametrize(
    "topic, payload, field",
    [
        ("market-events", market(price_change_pct="4.2"), "price_change_pct"),  # strings are not numbers
        ("market-events", market(price_change_pct=True), "price_change_pct"),
        ("market-events", market(window_seconds=1.5), "window_seconds"),
        ("market-events", market(window_seconds=0), "window_seconds"),
        ("market-events", market(severity="panic"), "severity"),
        ("market-events", market(venue=""), "venue"),
        ("market-events", market(event_id=17), "event_id"),
        ("capital-events", capital(level="info"), "level"),
        ("capital-events", capital(threshold=-1), "threshold"),
        ("funding-rate-events", funding(interval_hours=0), "interval_hours"),
        ("funding-rate-events", funding(interval_hours=-8), "interval_hours"),
        ("funding-rate-events", funding(rate=[0.1]), "rate"),
        ("market-events", market(signature="not-hex"), "signature"),
    ],
)
def test_wrong_types_and_values_name_the_field(topic, payload, field):
    error = rejected(topic, raw(payload))
    assert error.field == field
    assert error.reason.startswith(f"field '{field}':")


@pytest.mark.parametrize(
    "ts, expected",
    [
        ("2026-03-01T12:00:00", "no UTC offset"),
        ("yesterday", "not an ISO-8601 timestamp"),
        (NOW.timestamp() * 1000, "milliseconds?"),
        (True, "boolean"),
    ],
)
def test_bad_timestamps(ts, expected):
    error = rejected("market-events", raw(market(ts=ts)))
    assert error.field == "ts" and expected in error.reason


def test_several_problems_are_counted():
    error = rejected("market-events", raw(market(venue="", severity="x", window_seconds=-1)))
    assert "(and 2 more problems)" in error.reason


# ------------------------------------------------------------------ signing


def test_canonical_payload_is_sorted_compact_utf8_without_signature():
    obj = {"b": 1, "a": "é", "signature": "ignored", "c": {"y": 2, "x": 1.5}}
    assert canonical_payload(obj) == '{"a":"é","b":1,"c":{"x":1.5,"y":2}}'.encode("utf-8")


def test_signature_is_hmac_sha256_hex_of_the_canonical_payload():
    import hashlib
    import hmac

    signed = sign_event(market(), KEY)
    expected = hmac.new(KEY.encode(), canonical_payload(market()), hashlib.sha256).hexdigest()
    assert signed["signature"] == expected and len(expected) == 64


def test_signed_event_verifies_after_a_round_trip_through_bytes():
    signed = sign_event(market(severity="critical", ts="2026-03-01T12:00:00Z"), KEY)
    event = parse_event("market-events", raw(signed))
    assert event.raw == signed  # the round trip kept every field, the signature included
    assert verify_signature(event, KEY) is None  # raises EventRejected when it does not verify
    assert verify_signature(signed, KEY) is None  # a plain dict works too
    # The same round trip with one field changed is refused: the check above could have failed.
    with pytest.raises(EventRejected, match="bad signature"):
        verify_signature(parse_event("market-events", raw({**signed, "severity": "warning"})), KEY)


def test_key_order_and_whitespace_on_the_wire_do_not_matter():
    signed = sign_event(market(), KEY)
    reordered = json.dumps(dict(reversed(list(signed.items()))), indent=2).encode()
    assert reordered != raw(signed) and json.loads(reordered) == signed  # other bytes, same object
    assert verify_signature(parse_event("market-events", reordered), KEY) is None  # raises if it does not verify
    with pytest.raises(EventRejected, match="bad signature"):  # and the order is not what makes it pass
        verify_signature(parse_event("market-events", reordered), "another-key")


def test_tampering_wrong_key_and_missing_signature_are_rejected():
    signed = sign_event(market(), KEY)
    tampered = parse_event("market-events", raw({**signed, "price_change_pct": -40.0}))
    with pytest.raises(EventRejected, match="bad signature"):
        verify_signature(tampered, KEY)
    with pytest.raises(EventRejected, match="bad signature"):
        verify_signature(parse_event("market-events", raw(signed)), "another-key")
    with pytest.raises(EventRejected, match="missing signature"):
        verify_signature(parse_event("market-events", raw(market())), KEY)


def test_unknown_fields_are_covered_by_the_signature():
    signed = sign_event(market(extra="a"), KEY)
    with pytest.raises(EventRejected, match="bad signature"):
        verify_signature(parse_event("market-events", raw({**signed, "extra": "b"})), KEY)


def test_resigning_replaces_the_old_signature_and_empty_keys_are_refused():
    once = sign_event(market(), KEY)
    assert sign_event(once, KEY) == once
    with pytest.raises(ValueError, match="empty"):
        sign_event(market(), "")


@settings(max_examples=50, deadline=None)
@given(
    venue=st.text(min_size=1, max_size=20),
    pct=st.floats(allow_nan=False, allow_infinity=False, width=64),
    window=st.integers(min_value=1, max_value=10**6),
)
def test_any_valid_market_event_round_trips_its_signature(venue, pct, window):
    signed = sign_event(market(venue=venue, price_change_pct=pct, window_seconds=window), KEY)
    event = parse_event("market-events", ev.encode_event(signed))
    assert verify_signature(event, KEY) is None  # raises EventRejected when it does not verify
    with pytest.raises(EventRejected, match="bad signature"):  # one field changed after signing: refused
        verify_signature(parse_event("market-events", ev.encode_event({**signed, "window_seconds": window + 1})), KEY)


# ------------------------------------------------------------------ window and replay


def critical_event(ts: datetime, event_id: str = "crit-1", key: str | None = KEY):
    payload = market(severity="critical", ts=ts.isoformat(), event_id=event_id, price_change_pct=-18.0)
    if key:
        payload = sign_event(payload, key)
    return parse_event("market-events", raw(payload))


def test_timestamp_window_past_and_future_edges():
    window = TimestampWindow(max_age_seconds=60, max_future_seconds=5)
    check_timestamp_window(critical_event(NOW - timedelta(seconds=60)), now=NOW, window=window)
    check_timestamp_window(critical_event(NOW + timedelta(seconds=5)), now=NOW, window=window)
    with pytest.raises(EventRejected, match=r"stale: event is 61.0 s old \(window 60 s\)"):
        check_timestamp_window(critical_event(NOW - timedelta(seconds=61)), now=NOW, window=window)
    with pytest.raises(EventRejected, match="from the future"):
        check_timestamp_window(critical_event(NOW + timedelta(seconds=6)), now=NOW, window=window)


def test_replay_check_records_then_refuses_the_same_id():
    seen: set[str] = set()
    event = critical_event(NOW)
    check_not_replayed(event, seen)
    assert "crit-1" in seen
    with pytest.raises(EventRejected, match="replayed"):
        check_not_replayed(event, seen)


def test_recent_event_ids_is_bounded_and_serialisable():
    store = RecentEventIds(capacity=3)
    for i in range(5):
        store.add(f"e{i}")
    assert store.to_list() == ["e2", "e3", "e4"] and "e0" not in store and len(store) == 3
    assert RecentEventIds(store.to_list(), capacity=3).to_list() == store.to_list()


def test_critical_event_admission():
    seen = RecentEventIds()
    check_critical_event(critical_event(NOW), KEY, seen, now=NOW)
    with pytest.raises(EventRejected, match="replayed"):
        check_critical_event(critical_event(NOW), KEY, seen, now=NOW)
    with pytest.raises(EventRejected, match="missing signature"):
        check_critical_event(critical_event(NOW, "crit-2", key=None), KEY, seen, now=NOW)
    with pytest.raises(EventRejected, match="stale"):
        check_critical_event(critical_event(NOW - timedelta(minutes=5), "crit-3"), KEY, seen, now=NOW)
    # Refused events are not remembered: a later valid delivery of the same id is accepted.
    assert "crit-2" not in seen and "crit-3" not in seen
    with pytest.raises(ValueError, match="EVENT_SIGNING_KEY"):
        check_critical_event(critical_event(NOW, "crit-4"), None, seen, now=NOW)


def test_non_critical_events_need_no_signature_but_a_present_one_must_be_valid():
    seen: set[str] = set()
    check_critical_event(parse_event("market-events", raw(market())), KEY, seen, now=NOW)
    forged = parse_event("market-events", raw({**market(), "signature": "0" * 64}))
    with pytest.raises(EventRejected, match="bad signature"):
        check_critical_event(forged, KEY, seen, now=NOW)
    assert seen == set()  # only critical events are tracked for replay


# ------------------------------------------------------------------ DLQ envelope and topics


def test_dlq_envelope_keeps_the_original_losslessly():
    value = b"\x00\xffnot json"
    envelope = dlq_envelope(value=value, reason="not JSON", topic="market-events", partition=2, offset=41,
                            timestamp_ms=1_772_366_400_000, key=b"binance:BTC", parked_at=NOW)
    assert envelope["reason"] == "not JSON"
    assert envelope["source"] == {"topic": "market-events", "partition": 2, "offset": 41,
                                  "timestamp_ms": 1_772_366_400_000}
    assert base64.b64decode(envelope["original"]["value_b64"]) == value
    assert envelope["original"]["value_text"] is None  # not UTF-8: no readable copy
    assert envelope["parked_at"] == "2026-03-01T12:00:00+00:00"

    parsed = parse_dlq_envelope(encode_dlq_envelope(value=value, reason="not JSON", topic="market-events",
                                                    partition=2, offset=41, timestamp_ms=None, key=b"binance:BTC"))
    assert parsed.original_value() == value and parsed.original_key() == b"binance:BTC"
    assert parsed.source.offset == 41 and parsed.reason == "not JSON"


def test_dlq_envelope_of_a_tombstone_and_a_readable_value():
    assert dlq_envelope(value=None, reason="empty", topic="t", partition=0, offset=0,
                        timestamp_ms=None)["original"]["value_b64"] is None
    readable = dlq_envelope(value=b'{"a":1}', reason="r", topic="t", partition=0, offset=0, timestamp_ms=None)
    assert readable["original"]["value_text"] == '{"a":1}'


def test_parse_dlq_envelope_rejects_other_messages():
    with pytest.raises(EventRejected, match="not a DLQ envelope"):
        parse_dlq_envelope(b'{"hello": 1}')
    with pytest.raises(EventRejected, match="not a DLQ envelope"):
        parse_dlq_envelope(b"garbage")


def test_validate_payload_rejects_values_json_cannot_carry():
    with pytest.raises(EventRejected, match="not JSON"):
        ev.validate_payload("market-events", market(price_change_pct=float("nan")))
    assert ev.validate_payload("market-events", market()).event_id == "m-1"


def test_topic_helpers():
    assert ev.dlq_topic("market-events") == "market-events.dlq"
    assert ev.source_topic_of("market-events.dlq") == "market-events"
    with pytest.raises(ValueError):
        ev.source_topic_of("market-events")
    assert ev.topic_name("capital-events", "bench-") == "bench-capital-events"
    assert ev.base_topic("bench-capital-events", "bench-") == "capital-events"
    with pytest.raises(ValueError, match="unknown topic"):
        ev.base_topic("orders", "")


# ------------------------------------------------------------------ fast path, batches, the funding screen
#
# parse_event validates most values in Rust (pydantic-core) and falls back to the checked path
# (Python's decoder, explicit checks, the model), which defines what is accepted and words every
# rejection. These tests hold every way in to the checked path's outcome.

_TOKENS = [b"NaN", b"-Infinity", b"Infinity", b"1.0", b"true", b"null", b"1e400", b'"\\ud800"', b'"\\u0000"',
           b"\xff", b"\xc3\xa9", b" ", b"\x0c", b",", b":", b"}", b"{", b"]", b"[", b'"', b"\\", b"01", b"1e0",
           b'"critical"', b'"signature"', b'"schema_version"', b'"ts"']
_VALUES = [1, 1.0, True, None, "1", "", 0, 2, 1e308, "2026-03-01T12:00:00Z", "2026-03-01T12:00:00", 1772366400000,
           999_999_999.5, 1_000_000_000, 9_999_999_999, 10**30, [], {}, "critical", "warning", "0" * 64]
_PAYLOADS = {"market-events": market, "capital-events": capital, "funding-rate-events": funding}


@st.composite
def _wire_values(draw):
    """Valid events, events with changed/removed/duplicated fields, and byte-level mutations of them."""
    topic = draw(st.sampled_from(sorted(_PAYLOADS)))
    payload = _PAYLOADS[topic]()
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(payload) + ["extra", "signature"]))
        if draw(st.booleans()):
            payload[key] = draw(st.sampled_from(_VALUES))
        else:
            payload.pop(key, None)
    data = json.dumps(payload, allow_nan=True).encode()
    if draw(st.booleans()):  # a duplicated key: the last one wins in both parsers
        key = draw(st.sampled_from(sorted(payload) or ["x"]))
        data = data[:-1] + b',"%s":%s}' % (key.encode(), json.dumps(draw(st.sampled_from(_VALUES))).encode())
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from(_TOKENS)) + data[at:]
    return topic, data


def _outcome(parse, topic, data):
    try:
        event = parse(topic, data)
    except EventRejected as exc:
        return ("rejected", exc.reason, exc.field)
    return ("event", type(event).__name__, event.model_dump(mode="json"), event.ts, event.raw)


def _checked(topic, data):
    return ev._parse_checked(ev.EVENT_MODELS[topic], data, ev.DEFAULT_MAX_EVENT_BYTES)


@settings(max_examples=400, deadline=None)
@given(_wire_values())
def test_every_way_in_gives_the_checked_paths_outcome(case):
    topic, data = case
    expected = _outcome(_checked, topic, data)
    assert _outcome(parse_event, topic, data) == expected
    batch = ev.parse_events(topic, [data])[0]
    if isinstance(batch, EventRejected):
        assert ("rejected", batch.reason, batch.field) == expected
    else:
        assert ("event", type(batch).__name__, batch.model_dump(mode="json"), batch.ts, batch.raw) == expected


@pytest.mark.parametrize("extra", [b'"x":NaN', b'"x":Infinity', b'"x":-Infinity', b'"x":[1,NaN]'])
def test_nan_and_infinity_anywhere_are_still_not_json(extra):
    data = raw(funding())[:-1] + b"," + extra + b"}"
    assert "not JSON" in rejected("funding-rate-events", data).reason
    assert "not JSON" in ev.parse_events("funding-rate-events", [data])[0].reason
    assert ev.screen_funding_rates([data, raw(funding())])[0] is None


@pytest.mark.parametrize("version", [b"1.0", b"true", b"1e0"])
def test_schema_version_must_be_the_integer_1_on_every_path(version):
    data = raw(funding()).replace(b'"schema_version": 1', b'"schema_version": ' + version)
    assert "must be an integer" in rejected("funding-rate-events", data).reason
    assert ev.screen_funding_rates([data])[0] is None


def test_deep_nesting_and_huge_integer_timestamps_are_rejected_not_raised():
    deep = raw(funding())[:-1] + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}"  # well under 64 KiB
    assert rejected("funding-rate-events", deep).reason == "not JSON: nested too deeply"
    huge = raw(funding(ts=10**30))
    error = rejected("funding-rate-events", huge)
    assert error.field == "ts" and "not plausible epoch seconds" in error.reason


def test_raw_of_a_fast_parsed_event_is_decoded_on_demand_and_is_the_object_received():
    payload = funding(mark_price=123.5, note="é")
    data = ev.encode_event(payload)
    event = parse_event("funding-rate-events", data)
    assert event._received == data  # kept as bytes until needed
    assert event.raw == payload and isinstance(event._received, dict)


def test_signed_and_critical_events_take_the_checked_path():
    signed = parse_event("funding-rate-events", raw(sign_event(funding(), KEY)))
    critical = parse_event("market-events", raw(market(severity="critical")))
    assert isinstance(signed._received, dict) and isinstance(critical._received, dict)
    verify_signature(signed, KEY)


def test_events_built_in_code_have_their_own_json_form_as_raw():
    event = FundingRateEvent.model_validate(funding())
    assert event.raw["venue"] == "hyperliquid" and "signature" not in event.raw
    assert event.model_copy(update={"rate": 0.5}).raw["rate"] == 0.5  # a copy is not what was received


def _same_as_parse_event(row, data):
    event = parse_event("funding-rate-events", data)
    assert isinstance(event, FundingRateEvent) and event.signature is None
    assert event.ts == datetime.fromtimestamp(row.ts, timezone.utc)
    fields = ("schema_version", "event_id", "venue", "symbol", "rate", "interval_hours")
    assert {k: getattr(event, k) for k in fields} == {k: getattr(row, k) for k in fields}
    assert {k: type(getattr(event, k)) for k in fields} == {k: type(getattr(row, k)) for k in fields}


def _screen_should_take(data) -> bool:
    """What the screen must take: parse_event's plain (unsigned) funding rates with a numeric `ts`...

    ...except values holding a lone UTF-16 surrogate escape (`"\\ud800"`), which Python's JSON
    reader decodes and msgspec refuses; parse_event decides those (and see duplicate keys below).
    """
    try:
        event = parse_event("funding-rate-events", data)
    except EventRejected:
        return False
    if not isinstance(event, FundingRateEvent) or event.signature is not None:
        return False
    ts = event.raw["ts"]
    if type(ts) not in (int, float):
        return False
    try:
        json.dumps(event.raw, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _has_duplicate_keys(data) -> bool:
    found = []

    def pairs(items):
        keys = [key for key, _ in items]
        found.append(len(keys) != len(set(keys)))
        return dict(items)

    try:
        json.loads(data, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return False
    return any(found)


def _check_screen(values):
    rows = ev.screen_funding_rates(values)
    assert len(rows) == len(values)
    for row, data in zip(rows, values):
        if _has_duplicate_keys(data):
            # The last occurrence wins in both readers, but msgspec also validates the earlier
            # ones and may refuse what Python's reader takes: then parse_event decides.
            assert row is None or _screen_should_take(data), data
        else:
            assert (row is not None) == _screen_should_take(data), data
        if row is not None:
            _same_as_parse_event(row, data)
    # The one-call path and the value-by-value path agree.
    assert [ev.screen_funding_rates([v])[0] for v in values] == rows
    # The sensor's learning screen too, before and after it knows the chunk's names (and also the
    # chunk's valid values alone, which it then decodes with the Struct narrowed to those names).
    screen = ev.FundingScreen()
    for chunk in (values, values, [v for v, row in zip(values, rows) if row is not None]):
        assert _fields(screen(chunk)) == _fields(ev.screen_funding_rates(chunk))


def _fields(rows):
    import msgspec

    return [None if row is None else msgspec.structs.astuple(row) for row in rows]


@settings(max_examples=200, deadline=None)
@given(st.lists(_wire_values(), min_size=1, max_size=12), st.lists(st.integers(0, 3), min_size=1, max_size=12))
def test_the_funding_screen_takes_exactly_the_plain_rates_parse_event_accepts(cases, valid_slots):
    values = [data for _topic, data in cases]
    for slot in valid_slots:  # clean chunks too, so the one-call path is exercised
        values.insert(slot % (len(values) + 1), raw(funding(event_id=f"v{slot}", ts=1772366400 + slot / 1000)))
    _check_screen(values)
    _check_screen([v for v in values if parse_outcome_is_plain_funding(v)])


_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
_NAMES = st.text(min_size=0, max_size=70) | st.sampled_from(["", "binance", "ETH/USDT:USDT", "é" * 64, "é" * 65,
                                                            "😀" * 64, "😀" * 65, "\x00", "\ud800", "a" * 128])
_NUMBERS = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**20), 10**20)
            | st.sampled_from([0, -0.0, 5e-324, 1.7976931348623157e308, 999_999_999.9999999, 1_000_000_000,
                               9_999_999_999, 9_999_999_999.000001, 10_000_000_000]))


@st.composite
def _funding_payloads(draw):
    """Funding events with every field drawn from plausible and hostile values, some fields missing."""
    payload = {
        "schema_version": draw(st.sampled_from([1, 1, 1, 0, 2, 1.0, True, "1", None])),
        "event_id": draw(_NAMES | st.text(min_size=120, max_size=140)),
        "ts": draw(_NUMBERS | st.floats(1e9, 1e10) | st.sampled_from(["2026-03-01T12:00:00Z", True, None])),
        "venue": draw(_NAMES),
        "symbol": draw(_NAMES),
        "rate": draw(_NUMBERS | st.sampled_from(["0.1", None, True])),
        "interval_hours": draw(_NUMBERS | st.sampled_from([8, 1, 0, -1, "8", None])),
    }
    for key in draw(st.lists(st.sampled_from(sorted(payload)), max_size=2)):
        payload.pop(key, None)
    if draw(st.booleans()):
        payload[draw(st.sampled_from(["mark_price", "note", "signature", "extra"]))] = draw(_ANY_JSON)
    if draw(st.integers(0, 9)) == 0:
        payload["signature"] = "ab" * 32  # well formed: only parse_event may check it
    return json.dumps(payload, allow_nan=True, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


@settings(max_examples=600, deadline=None)
@given(st.lists(_funding_payloads(), min_size=1, max_size=6))
def test_the_funding_screen_agrees_with_the_model_on_generated_payloads(values):
    _check_screen(values)


@pytest.mark.parametrize("data, why", [
    (raw(funding())[:-1] + b',"note":"\xff"}', "invalid UTF-8 in a field msgspec would skip"),
    (raw(funding())[:-1] + b',"x":' + b"1" * 4301 + b"}", "an integer longer than Python's digit limit"),
    (raw(funding())[:-1] + b',"x":"\ud800"}', "a lone surrogate escape (Python takes it, msgspec does not)"),
    (raw(funding())[:-1] + b',"x":NaN}', "NaN is not JSON"),
    (raw(funding(rate=1e308)).replace(b"1e+308", b"1e400"), "a rate beyond the float range"),
    (raw(funding())[:-1] + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
    (b"\xef\xbb\xbf" + raw(funding()), "a byte order mark"),
    (raw(funding(signature=None)), None),  # null signature: a plain rate
    (raw(funding(signature="")), "an empty signature (the model refuses it)"),
    (raw(funding(rate=5, interval_hours=8, ts=1772366400)), None),  # integers for float fields
])
def test_the_screen_leaves_what_msgspec_reads_differently_to_parse_event(data, why):
    row = ev.screen_funding_rates([data, raw(funding())])[0]
    assert (row is None) == (why is not None), why
    assert ev.screen_funding_rates([data])[0] == row
    assert (row is not None) == _screen_should_take(data)


def test_the_row_struct_is_the_models_fields():
    import msgspec

    info = msgspec.inspect.type_info(ev.FundingRateRow)
    assert [f.name for f in info.fields] == list(FundingRateEvent.model_fields)
    by_name = {f.name: f for f in info.fields}
    assert (by_name["event_id"].type.min_length, by_name["event_id"].type.max_length) == (1, 128)
    assert (by_name["venue"].type.max_length, by_name["symbol"].type.max_length) == (64, 64)
    assert (by_name["schema_version"].type.ge, by_name["schema_version"].type.le) == (1, 1)
    assert by_name["interval_hours"].type.gt == 0
    assert (by_name["ts"].type.ge, by_name["ts"].type.le) == (ev._MIN_EPOCH_S, ev._MAX_EPOCH_S)
    assert not by_name["signature"].required and isinstance(by_name["signature"].type, msgspec.inspect.NoneType)
    with pytest.raises(TypeError, match="no msgspec form"):
        ev._row_constraints("x", [object()])


def test_a_digit_limit_below_the_default_shrinks_what_the_screen_takes():
    import sys

    long_int = raw(funding())[:-1] + b',"x":' + b"7" * 700 + b"}"
    assert ev.screen_funding_rates([long_int])[0] is not None
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        assert ev.screen_funding_rates([long_int])[0] is None
        assert rejected("funding-rate-events", long_int).reason.startswith("not JSON")
    finally:
        sys.set_int_max_str_digits(before)


def parse_outcome_is_plain_funding(data) -> bool:
    try:
        event = parse_event("funding-rate-events", data)
    except EventRejected:
        return False
    return event.signature is None


def test_the_screen_takes_plain_rates_and_leaves_the_rest_to_parse_event():
    plain = [raw(funding(event_id=f"f{i}", ts=1772366400 + i)) for i in range(3)]
    rows = ev.screen_funding_rates(plain)
    assert [row.event_id for row in rows] == ["f0", "f1", "f2"] and rows[2].ts == 1772366402.0
    iso = raw(funding(ts="2026-03-01T12:00:00Z"))  # valid, but ts is not a number: parse_event decides
    signed = raw(sign_event(funding(), KEY))
    assert ev.screen_funding_rates(plain + [iso, signed, b"", None, b"{bad"]) == rows + [None] * 5
    assert ev.screen_funding_rates([]) == []
    assert ev.screen_funding_rates([raw(funding(note="x" * 2000))], max_bytes=1024) == [None]
    # A bytes-like value is screened as the same bytes (parse_event reads it so); text is not screened.
    assert ev.screen_funding_rates([bytearray(plain[0]), memoryview(plain[1])]) == rows[:2]
    assert ev.screen_funding_rates([plain[0].decode()]) == [None]
    assert ev.screen_funding_rates([bytearray(plain[0]), plain[0].decode(), plain[2]]) == [rows[0], None, rows[2]]
    assert parse_event("funding-rate-events", bytearray(plain[0])).event_id == "f0"


def test_the_learning_screen_decodes_known_names_into_the_same_strings():
    chunk = [raw(funding(event_id=f"f{i}", venue=v, symbol=sym, ts=1772366400 + i))
             for i, (v, sym) in enumerate([("binance", "BTC/USDT:USDT"), ("okx", "BTC/USDT:USDT"), ("binance", "E")])]
    screen = ev.FundingScreen()
    first = screen(chunk)  # the general screen; it learns the names
    assert type(first[0]) is ev.FundingRateRow
    escaped = raw(funding(venue="binance", symbol="E")).replace(b'"binance"', b'"bin\\u0061nce"')
    again = screen(chunk + [escaped])  # a known name, escaped
    assert type(again[0]) is not ev.FundingRateRow and again[3].venue == "binance"
    assert again[0].venue is again[2].venue is again[3].venue  # one string per name
    assert _fields(again[:3]) == _fields(first)
    # A new name, or a value the screen refuses: that chunk takes the general way, and teaches the name.
    mixed = screen(chunk + [raw(funding(venue="kraken")), b"{bad"])
    assert type(mixed[0]) is ev.FundingRateRow and mixed[4] is None and mixed[3].venue == "kraken"
    assert type(screen([raw(funding(venue="kraken"))])[0]) is not ev.FundingRateRow
    # The model's constraints still hold for names nobody taught it: too long is refused either way.
    assert screen([raw(funding(venue="k" * 65))]) == [None]


def test_the_learning_screen_stops_learning_at_its_bound():
    screen = ev.FundingScreen(max_names=2)
    assert all(screen([raw(funding(venue=v))])[0] is not None for v in ("a", "b", "c"))
    assert screen._venues == {"a", "b"}  # "c" would be a third name: screened the general way
    assert screen([raw(funding(venue="c"))])[0].venue == "c"
