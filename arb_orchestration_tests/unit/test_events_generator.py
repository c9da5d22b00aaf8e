"""The demo event factory: every event it invents is valid, intervals match the venues, critical only when asked."""

from __future__ import annotations

from collections import Counter

import pytest

from arb_orchestration.domain.events import EventRejected, encode_event, parse_event, sign_event, verify_signature
from arb_orchestration.sim.event_generator import EventFactory, Market, default_markets

NOW = 1_772_366_400.0


def generate(n: int, **kwargs):
    factory = EventFactory(seed=7, **kwargs)
    return [factory.next_event(now=NOW + i) for i in range(n)]


def test_every_generated_event_passes_its_schema():
    events = generate(1500)
    topics = Counter(topic for topic, _ in events)
    assert set(topics) == {"market-events", "funding-rate-events", "capital-events"}
    assert topics["market-events"] > topics["funding-rate-events"] > topics["capital-events"]
    for topic, payload in events:
        parse_event(topic, encode_event(payload))  # raises EventRejected if not


def test_never_critical_by_default_but_some_warnings():
    events = [parse_event(t, encode_event(p)) for t, p in generate(3000)]
    assert not any(e.is_critical for e in events)
    shocks = Counter(e.severity for e in events if e.topic == "market-events")
    assert shocks["warning"] > 0 and shocks["info"] > 10 * shocks["warning"]


def test_critical_events_only_when_asked():
    events = [parse_event(t, encode_event(p)) for t, p in generate(500, critical_probability=0.2)]
    critical = [e for e in events if e.is_critical]
    assert critical
    assert all(abs(e.price_change_pct) >= 10 for e in critical if e.topic == "market-events")
    assert all(e.balance < e.threshold for e in critical if e.topic == "capital-events")


def test_funding_intervals_follow_the_venue():
    intervals = {(p["venue"], p["interval_hours"]) for t, p in generate(2000) if t == "funding-rate-events"}
    by_venue = dict(intervals)
    assert len(by_venue) == len(intervals)  # one interval per venue
    assert by_venue["hyperliquid"] == 1.0
    assert by_venue["binance"] == by_venue["okx"] == by_venue["bybit"] == 8.0


def test_funding_rates_stay_near_the_steady_rate_per_8h():
    markets = [Market("binance", "BTC/USDT:USDT", 0.0001, 8.0), Market("hyperliquid", "BTC/USDT:USDT", 0.0000125, 1.0)]
    factory = EventFactory(markets=markets, seed=3, weights=(0, 1, 0), funding_spike_probability=0.0)
    rates = [factory.next_event(now=NOW)[1] for _ in range(400)]
    per_8h: dict[str, list[float]] = {}
    for payload in rates:
        per_8h.setdefault(payload["venue"], []).append(payload["rate"] * 8 / payload["interval_hours"])
    assert set(per_8h) == {"binance", "hyperliquid"}
    for venue, values in per_8h.items():
        # Both walk around 1 bp per 8 h (noise ~0.3 bp): centred on it, never far off, and moving.
        assert abs(sum(values) / len(values) - 0.0001) < 0.00002, venue
        assert max(abs(v - 0.0001) for v in values) < 0.00015, venue
        assert len(set(values)) > len(values) // 2, venue


def test_same_seed_same_traffic_apart_from_ids():
    def strip(events):
        return [(t, {k: v for k, v in p.items() if k != "event_id"}) for t, p in events]

    assert strip(generate(50)) == strip(generate(50))
    assert len({p["event_id"] for _, p in generate(200)}) == 200


def test_signed_generated_events_verify():
    topic, payload = generate(1)[0]
    signed = sign_event(payload, "k")
    assert verify_signature(parse_event(topic, encode_event(signed)), "k") is None  # raises if it does not verify
    with pytest.raises(EventRejected, match="bad signature"):
        verify_signature(parse_event(topic, encode_event(signed)), "another-key")


def test_default_markets_come_from_the_simulated_venues():
    markets = default_markets()
    assert {m.venue for m in markets} >= {"binance", "hyperliquid"}
    with pytest.raises(ValueError):
        EventFactory(markets=markets, critical_probability=1.5)
