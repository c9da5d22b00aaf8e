"""`domain.triggers`: routing, admission of (critical) events, replay memory, funding deviation, cursor, tally,
and the funding sensor's fast paths (AdmissionCheck, NewestPerMarket) held to the plain rules.

Pure logic: no Kafka, no Dagster.
"""

import json
import random
import uuid
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from arb_orchestration.domain.events import (
    CAPITAL_EVENTS,
    FUNDING_RATE_EVENTS,
    MARKET_EVENTS,
    TimestampWindow,
    encode_event,
    parse_event,
    screen_funding_rates,
    sign_event,
)
from arb_orchestration.domain.funding import FundingDeviation
from arb_orchestration.domain.triggers import (
    EARLIEST,
    Action,
    AdmissionCheck,
    AdmissionPolicy,
    CursorError,
    HedgeBaselines,
    NewestPerMarket,
    SeenCriticalIds,
    SensorCursor,
    TickTally,
    admit_event,
    decide_hedges,
    newest_per_market,
    route_event,
)

KEY = "unit-key"
NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)


def _market(severity="warning", *, ts=NOW, sign=False, key=KEY, event_id=None, pct=-5.0):
    obj = {
        "schema_version": 1,
        "event_id": event_id or str(uuid.uuid4()),
        "ts": ts.timestamp(),
        "venue": "binance",
        "symbol": "BTC/USDT:USDT",
        "price_change_pct": pct,
        "window_seconds": 60,
        "severity": severity,
    }
    return parse_event(MARKET_EVENTS, encode_event(sign_event(obj, key) if sign else obj))


def _capital(level):
    obj = {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "ts": NOW.timestamp(),
        "venue": "okx",
        "asset": "USDT",
        "balance": 10.0,
        "threshold": 100.0,
        "level": level,
    }
    return parse_event(CAPITAL_EVENTS, encode_event(obj))


def _funding(venue, rate, hours, *, ts=NOW, symbol="ETH/USDT:USDT"):
    obj = {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "ts": ts.timestamp(),
        "venue": venue,
        "symbol": symbol,
        "rate": rate,
        "interval_hours": hours,
    }
    return parse_event(FUNDING_RATE_EVENTS, encode_event(obj))


# --------------------------------------------------------------------------- routing


@pytest.mark.parametrize(
    ("event", "action", "critical"),
    [
        (lambda: _market("critical"), Action.STOP_LOSS, True),
        (lambda: _market("warning"), Action.REBALANCE, False),
        (lambda: _market("info"), Action.NONE, False),
        (lambda: _capital("critical"), Action.STOP_LOSS, True),
        (lambda: _capital("warning"), Action.REBALANCE, False),
        (lambda: _funding("binance", 0.0001, 8), Action.HEDGE, False),
    ],
)
def test_route_event(event, action, critical):
    route = route_event(event())
    assert (route.action, route.critical) == (action, critical)
    assert route.reason


# --------------------------------------------------------------------------- admission


def test_signed_critical_event_in_window_is_admitted_and_remembered():
    seen = SeenCriticalIds()
    event = _market("critical", sign=True, ts=NOW - timedelta(seconds=5))
    assert admit_event(event, KEY, seen, now=NOW).admitted
    assert event.event_id in seen and seen.ids[event.event_id] == event.ts.timestamp()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: _market("critical"), "missing signature"),
        (lambda: _market("critical", sign=True, key="other"), "bad signature"),
        (lambda: _market("critical", sign=True, ts=NOW - timedelta(seconds=61)), "stale"),
        (lambda: _market("critical", sign=True, ts=NOW + timedelta(seconds=30)), "from the future"),
    ],
)
def test_critical_events_that_are_not_authentic_and_fresh_are_refused(make, reason):
    seen = SeenCriticalIds()
    admission = admit_event(make(), KEY, seen, now=NOW)
    assert not admission.admitted and not admission.stale
    assert admission.reason.startswith(reason)
    assert len(seen) == 0


def test_a_replayed_critical_event_is_refused_using_the_cursor_memory():
    event = _market("critical", sign=True)
    cursor = SensorCursor()
    assert admit_event(event, KEY, cursor.seen, now=NOW).admitted
    restored = SensorCursor.parse(cursor.serialize())  # the next tick reads the saved cursor
    admission = admit_event(event, KEY, restored.seen, now=NOW + timedelta(seconds=1))
    assert not admission.admitted and admission.reason.startswith("replayed")


def test_critical_event_without_a_configured_key_fails_loudly():
    with pytest.raises(ValueError, match="EVENT_SIGNING_KEY"):
        admit_event(_market("critical", sign=True), None, SeenCriticalIds(), now=NOW)


def test_non_critical_events_need_no_signature_but_a_wrong_one_is_refused():
    assert admit_event(_market("warning"), KEY, SeenCriticalIds(), now=NOW).admitted
    refused = admit_event(_market("warning", sign=True, key="other"), KEY, SeenCriticalIds(), now=NOW)
    assert not refused.admitted and refused.reason.startswith("bad signature")


def test_old_non_critical_events_are_counted_not_parked():
    policy = AdmissionPolicy(max_age_seconds=900)
    admission = admit_event(_market("warning", ts=NOW - timedelta(hours=1)), KEY, SeenCriticalIds(), now=NOW, policy=policy)
    assert not admission.admitted and admission.stale and "stale" in admission.reason


def test_replay_memory_is_pruned_by_the_window_and_bounded_by_a_floor():
    seen = SeenCriticalIds(capacity=2)
    window = TimestampWindow(max_age_seconds=60)
    now = NOW.timestamp()
    seen.remember("a", now - 120)
    seen.remember("b", now - 10)
    seen.prune(now, window)
    assert set(seen.ids) == {"b"}
    seen.remember("c", now - 5)
    seen.remember("d", now - 1)  # over capacity: "b" is forgotten and the floor rises to its ts
    assert set(seen.ids) == {"c", "d"} and seen.floor == now - 10
    # An event at or before the floor can no longer be checked for replay: it is refused.
    old = _market("critical", sign=True, ts=NOW - timedelta(seconds=10))
    admission = admit_event(old, KEY, seen, now=NOW)
    assert not admission.admitted and "replay memory" in admission.reason


# --------------------------------------------------------------------------- funding


def test_funding_deviation_compares_rates_normalised_to_8h():
    deviation = FundingDeviation(threshold_bps=20)
    baselines = HedgeBaselines()
    baselines.record(_funding("hyperliquid", 0.0001, 1))  # 8 bp per 8 h
    baselines.record(_funding("binance", 0.0001, 8))  # 1 bp per 8 h
    decisions = decide_hedges(
        [_funding("hyperliquid", 0.0004, 1), _funding("binance", 0.0020, 8)], baselines, deviation
    )
    hyper, binance = decisions
    assert hyper.hedge and hyper.delta_bps == pytest.approx(24.0)  # raw +3 bp, normalised +24 bps
    assert not binance.hedge and binance.delta_bps == pytest.approx(19.0)
    assert baselines.get("hyperliquid", "ETH/USDT:USDT").rate == 0.0004  # recorded at the hedge
    assert baselines.get("binance", "ETH/USDT:USDT").rate == 0.0001  # unchanged without a hedge


def test_a_market_never_hedged_by_the_sensor_is_hedged_unless_configured_otherwise():
    event = _funding("okx", 0.0001, 8)
    assert decide_hedges([event], HedgeBaselines(), FundingDeviation())[0].hedge
    assert not decide_hedges([event], HedgeBaselines(), FundingDeviation(trigger_without_baseline=False))[0].hedge


def test_newest_rate_per_market_wins_within_a_batch():
    older = _funding("binance", 0.0050, 8, ts=NOW - timedelta(seconds=2))
    newer = _funding("binance", 0.0010, 8, ts=NOW)
    late_but_older = _funding("binance", 0.0090, 8, ts=NOW - timedelta(seconds=5))
    other = _funding("okx", 0.0010, 8)
    kept = newest_per_market([(older, 0), (newer, 1), (late_but_older, 2), (other, 3)])
    assert [event.event_id for event, _ in kept] == [newer.event_id, other.event_id]


# --------------------------------------------------------------------------- cursor


def test_cursor_round_trip_and_defaults():
    cursor = SensorCursor.parse(None)
    assert cursor.offset("market-events", 0) == EARLIEST
    cursor.advance("market-events", 0, 41)
    cursor.advance("market-events", 0, 7)  # never moves back
    cursor.seen.remember("id-1", 123.0)
    cursor.baselines.record(_funding("binance", 0.0001, 8))
    text = cursor.serialize()
    obj = json.loads(text)
    assert obj["v"] == 1 and obj["offsets"] == {"market-events/0": 42} and obj["seen"] == {"id-1": 123.0}
    again = SensorCursor.parse(text)
    assert again.offset("market-events", 0) == 42 and "id-1" in again.seen
    assert again.baselines.get("binance", "ETH/USDT:USDT").interval_hours == 8
    assert again.serialize() == text


@pytest.mark.parametrize(
    "text",
    ["not json", '{"offsets": {}}', '{"v": 2}', '{"v": 1, "offsets": {"no-partition": 3}}', '{"v": 1, "offsets": {"t/0": -5}}'],
)
def test_an_unreadable_cursor_is_refused_not_guessed(text):
    with pytest.raises(CursorError):
        SensorCursor.parse(text)


def test_tick_tally_text_names_every_count_and_lag():
    tally = TickTally(read=12, acted=1, parked=2, ignored=9, lag={"market-events/1": None, "market-events/0": 0})
    assert tally.text() == "read 12, acted 1, parked 2, ignored 9, lag {market-events/0: 0, market-events/1: ?}"


# --------------------------------------------------------------------------- the funding sensor's fast paths


def test_admission_check_answers_as_admit_event():
    policy = AdmissionPolicy(max_age_seconds=900)
    cases = [
        _funding("binance", 0.0001, 8, ts=NOW - timedelta(seconds=age)) for age in (0, 1, 899.998, 899.9995, 900, 901, 5000)
    ] + [
        _market("warning", ts=NOW - timedelta(seconds=10)),
        _market("warning", ts=NOW - timedelta(seconds=10), sign=True, key="other"),  # signed, wrong key
        _market("critical", sign=True, ts=NOW - timedelta(seconds=5)),
        _market("critical"),
    ]
    for event in cases:
        expected = admit_event(event, KEY, SeenCriticalIds(), now=NOW, policy=policy)
        assert AdmissionCheck(KEY, SeenCriticalIds(), now=NOW, policy=policy)(event) == expected, event
    check = AdmissionCheck(KEY, SeenCriticalIds(), now=NOW, policy=policy)
    assert check.fresh_after_epoch == pytest.approx(NOW.timestamp() - 900 + 0.001)


def _rates(rng: random.Random, count: int) -> list:
    """Funding events for 3 markets with many exact ties and sub-microsecond near-ties, in read order."""
    base = 1_795_000_000.0
    events = []
    for _ in range(count):
        ts = base + rng.choice([0, 0, 0.001, 0.002, 0.0000004, 0.0000006, 0.0000015, 0.5]) + rng.randint(0, 3) * 0.001
        obj = {"schema_version": 1, "event_id": str(uuid.uuid4()), "ts": ts, "venue": rng.choice(["a", "b"]),
               "symbol": rng.choice(["X", "Y"]), "rate": 0.0001, "interval_hours": 8}
        events.append(encode_event(obj))
    return events


def _chunks(rng: random.Random, count: int) -> list[tuple[int, int]]:
    """Random [start, end) slices covering range(count), in order."""
    bounds, at = [], 0
    while at < count:
        end = min(count, at + rng.randint(1, 25))
        bounds.append((at, end))
        at = end
    return bounds


def _batch_rule(values: list) -> tuple[list, list, list]:
    """The values' events, the event ids the batch rule (`newest_per_market`) keeps, and their screened rows."""
    events = [parse_event(FUNDING_RATE_EVENTS, v) for v in values]
    expected = [event.event_id for event, _ in newest_per_market((e, i) for i, e in enumerate(events))]
    return events, expected, screen_funding_rates(values)


@pytest.mark.parametrize("seed", range(20))
def test_newest_per_market_while_reading_equals_the_batch_rule(seed):
    rng = random.Random(seed)
    values = _rates(rng, 60)
    events, expected, rows = _batch_rule(values)
    ids = [row.event_id for row in rows]

    by_event, by_fields, mixed, by_rows, by_chunks = (NewestPerMarket() for _ in range(5))
    for i, (event, row) in enumerate(zip(events, rows)):
        by_event.offer(event, event.event_id)
        by_fields.offer_at(row.venue, row.symbol, row.ts, row.event_id)
        if rng.random() < 0.5:
            mixed.offer(event, event.event_id)
        else:
            mixed.offer_at(row.venue, row.symbol, row.ts, row.event_id)
    assert by_rows.offer_rows(rows, ids, fresher_than=0.0) == len(rows)
    for start, end in _chunks(rng, len(rows)):
        part = rows[start:end]
        assert by_chunks.offer_fresh_rows(part, ids[start:end], fresher_than=0.0)
    for kept in (by_event, by_fields, mixed, by_rows, by_chunks):
        assert kept.newest() == expected
        assert kept.offered == 60 and kept.superseded == 60 - len(expected)


def _far_apart_rates(rng: random.Random, count: int) -> list:
    """Rates whose different times are milliseconds apart (exact ties kept): offer_fresh_rows' sorted case."""
    base = 1_795_000_000.0
    return [encode_event({"schema_version": 1, "event_id": str(uuid.uuid4()),
                          "ts": base + rng.choice([0, 0.001, 0.002, 0.5, 1.25, -0.75]) + rng.randint(0, 3) * 0.004,
                          "venue": rng.choice(["a", "b", "c"]), "symbol": rng.choice(["X", "Y"]), "rate": 0.0001,
                          "interval_hours": 8}) for _ in range(count)]


@pytest.mark.parametrize("seed", range(30))
def test_offer_fresh_rows_keeps_what_offering_one_by_one_keeps(seed):
    rng = random.Random(seed)
    values = _far_apart_rates(rng, 120)
    events, expected, rows = _batch_rule(values)
    kept = NewestPerMarket()
    # An event offered first (held with its exact datetime), then chunks of rows.
    kept.offer(events[0], events[0].event_id)
    for start, end in _chunks(rng, len(rows) - 1):
        part = rows[1 + start:1 + end]
        assert kept.offer_fresh_rows(part, [r.event_id for r in part], fresher_than=0.0)
    assert kept.newest() == expected and kept.offered == 120


def test_times_within_a_microsecond_are_ties_that_the_later_read_wins():
    # Two different floats that are the same datetime: 1795000000.0000002 and 1795000000.0 are both
    # ...:00.000000 once rounded to the microsecond. The later read wins the tie on every path
    # (offer_rows compared them as floats before and kept the earlier one).
    earlier, later = 1_795_000_000.0000002, 1_795_000_000.0
    assert earlier != later
    assert datetime.fromtimestamp(earlier, timezone.utc) == datetime.fromtimestamp(later, timezone.utc)
    values = [encode_event({"schema_version": 1, "event_id": name, "ts": ts, "venue": "v", "symbol": "S",
                            "rate": 0.0001, "interval_hours": 8}) for name, ts in (("first", earlier), ("second", later))]
    events = [parse_event(FUNDING_RATE_EVENTS, v) for v in values]
    assert [e.event_id for e, _ in newest_per_market((e, i) for i, e in enumerate(events))] == ["second"]
    rows = screen_funding_rates(values)
    by_rows, by_chunk, by_fields, split = (NewestPerMarket() for _ in range(4))
    assert by_rows.offer_rows(rows, ["first", "second"], fresher_than=0.0) == 2
    assert by_chunk.offer_fresh_rows(rows, ["first", "second"], fresher_than=0.0)
    by_fields.offer_at("v", "S", earlier, "first")
    by_fields.offer_at("v", "S", later, "second")
    assert split.offer_fresh_rows(rows[:1], ["first"], fresher_than=0.0)
    assert split.offer_fresh_rows(rows[1:], ["second"], fresher_than=0.0)
    for kept in (by_rows, by_chunk, by_fields, split):
        assert kept.newest() == ["second"]


def test_offer_rows_stops_at_what_it_cannot_take():
    values = [encode_event({"schema_version": 1, "event_id": f"e{i}", "ts": 1_795_000_000 + i, "venue": "v",
                            "symbol": f"S{i % 3}", "rate": 0.0001, "interval_hours": 8}) for i in range(6)]
    rows = screen_funding_rates(values)
    rows[2] = None  # e.g. a malformed message: the caller parses it
    kept = NewestPerMarket(max_markets=2)
    assert kept.offer_rows(rows, list(range(6)), fresher_than=0.0) == 2
    assert kept.offer_rows(rows, list(range(6)), fresher_than=0.0, start=3) == 5  # row 5 would be a 3rd market
    assert kept.offered == 4 and len(kept) == 2 and kept.newest() == [3, 4]
    assert not kept.offer_at("v", "S9", 1_795_000_100.0)  # refused and not counted
    assert kept.offered == 4
    stale = NewestPerMarket()
    assert stale.offer_rows(rows, list(range(6)), fresher_than=1_795_000_000.5) == 0  # ts not later: the caller decides


def test_offer_fresh_rows_is_all_or_nothing_at_the_market_bound():
    def rows(*fields):
        return [SimpleNamespace(venue="v", symbol=symbol, ts=1.0e9 + at) for symbol, at in fields]

    kept = NewestPerMarket(max_markets=2)
    assert kept.offer_fresh_rows(rows(("A", 1), ("B", 2), ("A", 3)), [0, 1, 2], fresher_than=0.0)
    assert not kept.offer_fresh_rows(rows(("A", 4), ("C", 5)), [3, 4], fresher_than=0.0)  # C is a third market
    assert kept.offered == 3 and kept.newest() == [1, 2]
    assert kept.offer_fresh_rows(rows(("B", 6)), [5], fresher_than=0.0) and kept.newest() == [2, 5]
    with pytest.raises(ValueError):
        kept.offer_fresh_rows(rows(("B", 7)), [], fresher_than=0.0)


def test_tick_tally_says_which_limit_ended_the_read():
    tally = TickTally(read=5, acted=5, limit="5 run requests per tick")
    assert tally.text().endswith(", stopped at the 5 run requests per tick limit (the rest is read next tick)")


def _in_read_order_with_near_ties(rng: random.Random, count: int) -> list:
    """Rates whose times never go back in read order, many of them under a microsecond apart."""
    at, values = 1_795_000_000.0, []
    for _ in range(count):
        at += rng.choice([0.0, 1e-7, 2e-7, 4e-7, 1e-6, 3e-6, 0.001])
        values.append(encode_event({"schema_version": 1, "event_id": str(uuid.uuid4()), "ts": at,
                                    "venue": rng.choice(["a", "b"]), "symbol": rng.choice(["X", "Y"]),
                                    "rate": 0.0001, "interval_hours": 8}))
    return values


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("make", [_in_read_order_with_near_ties, _far_apart_rates, _rates])
def test_offer_fresh_rows_keeps_what_the_batch_rule_keeps(seed, make):
    # In read order (the dict-only path, near ties included: fromtimestamp rounds monotonically),
    # interleaved (the sorted path) and near ties out of order (rate by rate): all as the batch rule.
    rng = random.Random(seed)
    values = make(rng, 90)
    _events, expected, rows = _batch_rule(values)
    kept = NewestPerMarket()
    for start, end in _chunks(rng, len(rows)):
        assert kept.offer_fresh_rows(rows[start:end], [r.event_id for r in rows[start:end]], fresher_than=0.0)
    assert kept.newest() == expected and kept.offered == 90


def test_offer_fresh_rows_takes_a_chunk_whole_or_not_at_all():
    values = [encode_event({"schema_version": 1, "event_id": f"e{i}", "ts": 1_795_000_000 + i, "venue": "v",
                            "symbol": f"S{i % 3}", "rate": 0.0001, "interval_hours": 8}) for i in range(6)]
    rows = screen_funding_rates(values)
    kept = NewestPerMarket(max_markets=2)
    assert not kept.offer_fresh_rows(rows, list(range(6)), fresher_than=0.0)  # S2 is a third market
    assert not kept.offer_fresh_rows(rows[:2], [0, 1], fresher_than=1_795_000_000.0)  # row 0 is not later
    assert not kept.offer_fresh_rows([rows[0], None], [0, 1], fresher_than=0.0)  # a message for parse_event
    assert kept.offered == 0 and len(kept) == 0
    assert kept.offer_fresh_rows([rows[1], rows[0], rows[3]], [1, 0, 3], fresher_than=0.0)  # out of read order
    assert kept.newest() == [1, 3] and kept.offered == 3 and kept.superseded == 1
    assert kept.offer_fresh_rows([], [], fresher_than=0.0)
