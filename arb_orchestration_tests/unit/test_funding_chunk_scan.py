"""The funding sensor's C chunk scanner (`domain/_fastfunding.c` via `events.FundingChunkScan`).

It is a conservative recognizer in front of the Python path (`FundingScreen` +
`NewestPerMarket.offer_fresh_rows`): whatever it takes, the Python path must take
with the same outcome; whatever it declines, the Python path decides. These tests
hold it to that on generated and hostile values, value by value and chunk by chunk,
and check that it does take the plain rates producers send (else it is dead weight).
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arb_orchestration.domain import events as ev
from arb_orchestration.domain.events import FundingChunkScan, FundingRateEvent, EventRejected, parse_event
from arb_orchestration.domain.triggers import NewestPerMarket
from arb_orchestration_tests.unit.test_events import _funding_payloads, _wire_values, funding, raw

TS = 1772366400


def test_the_extension_is_built():
    # `pip install` builds it (optional there so an install without a compiler still works);
    # CI and the image must have it, or the sensor silently runs at its Python speed.
    assert ev.FAST_CHUNK_SCAN, "arb_orchestration.domain._fastfunding was not built (is a C compiler installed?)"


def test_the_built_extension_is_not_older_than_its_source():
    # An editable install builds the .so in place; after a pull that changed the .c, only `make`
    # (or `pip install -e .`) rebuilds it, and tests would silently run the old C.
    from pathlib import Path

    from arb_orchestration.domain import _fastfunding

    built, source = Path(_fastfunding.__file__), Path(ev.__file__).with_name("_fastfunding.c")
    if built.parent == source.parent:  # in place (editable); an installed wheel was built from its own copy
        assert built.stat().st_mtime >= source.stat().st_mtime, (
            f"{built.name} is older than _fastfunding.c: rebuild with `make install` or `pip install -e .`")


def _taken_by_python(data) -> tuple[str, str, float] | None:
    """What the Python path makes of one value: (venue, symbol, ts) of a plain rate, else None."""
    row = ev.screen_funding_rates([data])[0]
    if row is None:
        return None
    event = parse_event("funding-rate-events", data)
    assert isinstance(event, FundingRateEvent) and event.signature is None
    assert event.ts == datetime.fromtimestamp(row.ts, timezone.utc)
    return (row.venue, row.symbol, row.ts)


def _check_value(data) -> None:
    taken = ev.recognize_funding_value(data) if isinstance(data, bytes) and data else None
    if taken is not None:
        # Never more than the Python path, and the same fields (the same double for ts).
        assert _taken_by_python(data) == taken, data
        assert type(taken[2]) is float


@settings(max_examples=600, deadline=None)
@given(st.lists(_funding_payloads(), min_size=1, max_size=6))
def test_what_the_scanner_takes_the_python_path_takes_the_same(values):
    for data in values:
        _check_value(data)


@settings(max_examples=400, deadline=None)
@given(_wire_values())
def test_mutated_wire_values_are_never_taken_beyond_the_python_path(case):
    _topic, data = case
    _check_value(data)


_MUTATIONS = [b" ", b"\t", b"\n", b",", b":", b"}", b"{", b'"', b"\\", b"0", b"1", b"-", b"e", b"E", b".", b"+",
              b"null", b"true", b"[]", b"\xff", b"\x00", b"NaN", b"9" * 40]


@settings(max_examples=800, deadline=None)
@given(st.data())
def test_byte_level_mutations_of_a_plain_rate(data):
    base = ev.encode_event(funding(mark_price=123.45, note="x"))
    value = bytearray(base)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(value)))
        if data.draw(st.booleans()) and at < len(value):
            del value[at:at + data.draw(st.integers(1, 4))]
        else:
            value[at:at] = data.draw(st.sampled_from(_MUTATIONS))
    _check_value(bytes(value))


def _with(**changes) -> bytes:
    return ev.encode_event(funding(**changes))


@pytest.mark.parametrize("data", [
    _with(),
    _with(ts=TS + 0.123456, rate=-0.000125, interval_hours=8.0),
    _with(ts=1_000_000_000, interval_hours=1e-300),      # the range's ends; a tiny positive interval
    _with(ts=9_999_999_999, rate=0, interval_hours=5e-324),
    _with(signature=None, mark_price=65000.5, note="n", extra=None),
    _with(rate=1.7976931348623157e308),
    b'{ "schema_version" : 1 ,\n"event_id":"e","ts":1772366400.5,"venue":"okx","symbol":"B","rate":1E-5,'
    b'"interval_hours":8e0 }',
    _with()[:-1] + b',"x":' + b"1" * 32 + b"}",          # 32 characters: the longest number it reads
    _with()[:-1] + b',"x":1e270}',                      # exponent at the shortcut's limit
    _with()[:-1] + b',"x":1e-308}',
])
def test_plain_rates_are_taken_with_the_python_paths_fields(data):
    taken = ev.recognize_funding_value(data)
    assert taken is not None, data
    assert _taken_by_python(data) == taken


@pytest.mark.parametrize("data, why", [
    (_with(ts=999_999_999.999), "ts below the range"),
    (_with(ts=10_000_000_000), "ts above the range"),
    (_with(interval_hours=0), "interval 0"),
    (_with(interval_hours=-1.5), "negative interval"),
    (_with()[:-1].replace(b'"interval_hours":1', b'"interval_hours":1e-400') + b"}", "interval underflows to 0"),
    (_with()[:-1].replace(b'"rate":1.25e-05', b'"rate":1e400') + b"}", "rate beyond the float range"),
    (_with()[:-1] + b',"x":1e400}', "an unknown number beyond the float range (Python makes it inf)"),
    (_with()[:-1] + b',"x":' + b"1" * 33 + b"}", "a number longer than the scanner reads"),
    (_with(schema_version=2), "another schema version"),
    (_with().replace(b'"schema_version":1', b'"schema_version":1.0'), "schema version as a float"),
    (_with(schema_version=True), "schema version as a boolean"),
    (_with(event_id=""), "empty event id"),
    (_with(event_id="e" * 129), "event id too long"),
    (_with(venue="v" * 65), "venue too long"),
    (_with(symbol=""), "empty symbol"),
    (_with(venue="é"), "non-ASCII (the Python path decides)"),
    (_with(symbol="a\\b"), "an escape"),
    (_with(signature="ab" * 32), "a signature"),
    (_with(rate="0.1"), "a string for a number"),
    (_with(ts="2026-03-01T12:00:00Z"), "an ISO ts (valid, but the Python path decides)"),
    (_with(note=[1]), "an array"),
    (_with(note={"a": 1}), "a nested object"),
    (_with(note=True), "a boolean"),
    (_with()[:-1] + b',"ts":1772366401}', "a repeated field"),
    (b" " + _with(), "leading whitespace"),
    (_with() + b" ", "trailing whitespace"),
    (_with() + b"{}", "trailing data"),
    (_with().replace(b'"rate"', b'"r\\u0061te"'), "an escaped key"),
    (_with().replace(b":1.25e-05", b":01"), "a leading zero"),
    (_with().replace(b":1.25e-05", b":.5"), "no integer part"),
    (_with().replace(b":1.25e-05", b":1."), "no fraction digits"),
    (_with().replace(b":1.25e-05", b":+1"), "a plus sign"),
    (_with().replace(b":1.25e-05", b":1e"), "no exponent digits"),
    (_with().replace(b":1.25e-05", b":NaN"), "NaN"),
    (_with().replace(b":1.25e-05", b":-"), "a lone minus"),
    (b"{}", "no fields"),
    (json.dumps({k: v for k, v in funding().items() if k != "rate"}).encode(), "a missing field"),
    (_with()[:-1], "unterminated"),
])
def test_values_the_scanner_leaves_to_the_python_path(data, why):
    assert ev.recognize_funding_value(data) is None, why
    _check_value(data)


# ------------------------------------------------------------------ chunks


def _python_outcome(chunk, fresher_than, max_markets=None, held=()):
    newest = NewestPerMarket(max_markets=max_markets)
    for item in held:
        newest.offer_at(*item)
    rows = ev.FundingScreen()(chunk)
    taken = newest.offer_fresh_rows(rows, chunk, fresher_than=fresher_than)
    return taken, newest


def _scan_outcome(chunk, fresher_than, max_markets=None, held=(), scan=None):
    newest = NewestPerMarket(max_markets=max_markets)
    for item in held:
        newest.offer_at(*item)
    winners = (scan or FundingChunkScan())(chunk, fresher_than=fresher_than)
    if winners is None:
        return None, newest
    return newest.offer_scanned(winners, chunk), newest


def _state(newest):
    return {key: (held[0], held[2], held[3]) for key, held in newest._held.items()}, newest.offered, \
        newest.newest()


_MARKETS = [("binance", "BTC/USDT:USDT"), ("okx", "BTC/USDT:USDT"), ("hyperliquid", "ETH/USDT:USDT"),
            ("binance", "ETH/USDT:USDT"), ("kraken", "SOL/USD:USD")]


@st.composite
def _chunks(draw):
    """Chunks of plain rates (mostly in time order, some ties, some older), with the odd bad value."""
    size = draw(st.integers(1, 40))
    ts = TS + draw(st.integers(0, 100))
    chunk = []
    for i in range(size):
        # Sub-microsecond steps too: two different doubles whose datetimes are the same microsecond.
        step = draw(st.sampled_from([0, 0.001, 0.5, 1, 1, 2, -1, -0.5, 0.000001, -0.000001, -0.000004, -0.00001,
                                     0.0000003, -0.0000003]))
        ts = round(ts + step, 7)
        venue, symbol = draw(st.sampled_from(_MARKETS))
        chunk.append(ev.encode_event(funding(event_id=f"e{i}", ts=ts, venue=venue, symbol=symbol,
                                             mark_price=draw(st.sampled_from([1.5, 70000, 0])))))
    if draw(st.integers(0, 5)) == 0:
        chunk[draw(st.integers(0, size - 1))] = draw(st.sampled_from(
            [b"{bad", b"", None, ev.encode_event(funding(signature="ab" * 32)), raw(funding(ts="x"))]))
    return chunk


@settings(max_examples=500, deadline=None)
@given(_chunks(), st.sampled_from([0.0, TS + 50.0]), st.sampled_from([None, 2, 3, 10]),
       st.lists(st.tuples(st.sampled_from(_MARKETS), st.floats(TS, TS + 200)), max_size=3))
def test_a_chunk_the_scanner_takes_ends_as_the_python_path_ends_it(chunk, fresher_than, max_markets, held):
    held = [(venue, symbol, epoch) for (venue, symbol), epoch in held]
    py_taken, py_newest = _python_outcome(chunk, fresher_than, max_markets, held)
    c_taken, c_newest = _scan_outcome(chunk, fresher_than, max_markets, held)
    if c_taken is None or c_taken is False:
        # Declined (or a market beyond the bound): nothing offered, the Python path goes on from here.
        assert _state(c_newest) == _state(_python_outcome([], fresher_than, max_markets, held)[1])
        if c_taken is False:
            assert py_taken is False
        return
    assert py_taken is True, "the scanner took a chunk the Python path does not take whole"
    assert _state(c_newest) == _state(py_newest)


def test_a_generated_feed_in_time_order_is_taken_chunk_after_chunk():
    from arb_orchestration.sim.event_generator import EventFactory

    factory = EventFactory(seed=3, weights=(0.0, 1.0, 0.0))
    rng = random.Random(3)
    values = []
    for _ in range(2000):
        _kind, payload = factory.next_event()
        payload["mark_price"] = round(rng.uniform(0.5, 70_000), 2)
        values.append(ev.encode_event(payload))
    scan, taken = FundingChunkScan(), 0
    py_newest, c_newest = NewestPerMarket(max_markets=100), NewestPerMarket(max_markets=100)
    for start in range(0, len(values), 500):
        chunk = values[start:start + 500]
        winners = scan(chunk, fresher_than=0.0)
        assert winners is not None, "the scanner declined a chunk of the generator's plain rates"
        assert c_newest.offer_scanned(winners, chunk)
        assert py_newest.offer_fresh_rows(ev.FundingScreen()(chunk), chunk, fresher_than=0.0)
        taken += len(chunk)
    assert taken == 2000 and _state(c_newest) == _state(py_newest)
    assert len(scan._markets) == len(c_newest) > 1


def test_the_scanner_declines_whole_chunks_it_cannot_take():
    plain = [_with(event_id=f"e{i}", ts=TS + i) for i in range(4)]
    scan = FundingChunkScan()
    assert [(m, i) for m, i, _ in scan(plain, fresher_than=0.0)] == [(("hyperliquid", "ETH/USDT:USDT"), 3)]
    assert scan(plain, fresher_than=TS + 0.5) is None            # one is not later than the admission limit
    # Out of read order: the newest still wins (index 3, read first here).
    assert [(m, i) for m, i, _ in scan(list(reversed(plain)), fresher_than=0.0)] == [
        (("hyperliquid", "ETH/USDT:USDT"), 0)]
    # One market read out of time order within a few microseconds: only the Python path decides such near ties.
    near = [_with(event_id="a", ts=TS + 0.000003), _with(event_id="b", ts=TS)]
    assert scan(near, fresher_than=0.0) is None
    assert scan([near[1], near[0]], fresher_than=0.0) is not None
    assert scan(plain + [None], fresher_than=0.0) is None
    assert scan(plain + [bytearray(plain[0])], fresher_than=0.0) is None
    assert scan(plain + [plain[0].decode()], fresher_than=0.0) is None
    assert scan(plain, fresher_than=0.0, max_bytes=len(plain[0]) - 1) is None
    assert scan([], fresher_than=0.0) is None and scan(tuple(plain), fresher_than=0.0) is None
    # A market beyond the scanner's own bound: declined, and not learned.
    small = FundingChunkScan(max_markets=1)
    assert small([_with(venue="a", ts=TS), _with(venue="b", ts=TS + 1)], fresher_than=0.0) is None
    assert small._markets == [("a", "ETH/USDT:USDT")]
    assert small([_with(venue="a", ts=TS)], fresher_than=0.0) == [(("a", "ETH/USDT:USDT"), 0, float(TS))]


def test_ties_and_repeats_keep_the_last_read():
    chunk = [_with(event_id="first", ts=TS), _with(event_id="other", ts=TS, venue="okx"),
             _with(event_id="second", ts=TS)]
    winners = FundingChunkScan()(chunk, fresher_than=0.0)
    assert winners == [(("hyperliquid", "ETH/USDT:USDT"), 2, float(TS)), (("okx", "ETH/USDT:USDT"), 1, float(TS))]
    c_taken, c_newest = _scan_outcome(chunk, 0.0)
    assert c_taken and _state(c_newest) == _state(_python_outcome(chunk, 0.0)[1])


def test_a_chunk_beyond_the_tick_bound_is_refused_as_the_python_path_refuses_it():
    chunk = [_with(venue=v, ts=TS + i) for i, v in enumerate("abc")]
    c_taken, c_newest = _scan_outcome(chunk, 0.0, max_markets=2)
    assert c_taken is False and len(c_newest) == 0 and c_newest.offered == 0
    assert _python_outcome(chunk, 0.0, max_markets=2)[0] is False


def test_the_scanner_keeps_its_field_checks_in_step_with_the_model():
    from arb_orchestration.domain import _fastfunding, triggers

    assert ev._fastfunding_constants_hold()
    assert _fastfunding.SURELY_APART_S == triggers._SURELY_APART_S
    with pytest.raises(EventRejected):
        parse_event("funding-rate-events", _with(interval_hours=0))
