"""The pure parts of the funding reader processes: merging their kept rates, the setting, the message stand-in."""

import pickle

import pytest

from arb_orchestration import settings
from arb_orchestration.defs.events.kafka_source import Record
from arb_orchestration.defs.events.tuning import AUTO_READ_PROCESSES_MAX, parse_read_processes
from arb_orchestration.domain.triggers import NewestPerMarket
from arb_orchestration.readers.funding_shards import ShardMessage

A, B, C = ("binance", "BTC/USDT:USDT"), ("okx", "BTC/USDT:USDT"), ("bybit", "ETH/USDT:USDT")


def test_absorbing_a_readers_winners_is_the_same_as_offering_its_rates_after_ours():
    reference, merged = NewestPerMarket(), NewestPerMarket()
    ours = [(A, 100.0, "a1"), (B, 105.0, "b1")]
    theirs = [(A, 99.0, "a2"), (A, 101.0, "a3"), (C, 50.0, "c1"), (B, 105.0, "b2")]  # b2 ties b1: the later read wins
    for market, epoch, item in ours + theirs:
        reference.offer_at(*market, epoch, item)
    for market, epoch, item in ours:
        merged.offer_at(*market, epoch, item)
    # What the other reader kept: the newest per market, with its read order there.
    kept = [(A, 101.0, 1, "a3"), (C, 50.0, 2, "c1"), (B, 105.0, 3, "b2")]

    merged.absorb(kept, offered=len(theirs))

    assert merged.newest() == reference.newest() == ["a3", "c1", "b2"]
    assert merged.offered == reference.offered == 6
    assert merged.superseded == reference.superseded == 3


def test_an_older_rate_from_another_reader_does_not_replace_a_newer_one_held():
    newest = NewestPerMarket()
    newest.offer_at(*A, 200.0, "held")
    newest.absorb([(A, 150.0, 0, "older")], offered=1)
    assert newest.newest() == ["held"] and newest.superseded == 1


def test_absorbing_beyond_the_markets_bound_takes_nothing():
    newest = NewestPerMarket(max_markets=2)
    newest.offer_at(*A, 1.0, "a")
    assert newest.fits([A, B]) and not newest.fits([B, C])
    with pytest.raises(ValueError):
        newest.absorb([(B, 2.0, 0, "b"), (C, 3.0, 1, "c")], offered=2)
    assert newest.newest() == ["a"] and newest.offered == 1


@pytest.mark.parametrize(("raw", "cpus", "expected"), [
    ("auto", 1, 0), ("auto", 2, AUTO_READ_PROCESSES_MAX), ("auto", 64, AUTO_READ_PROCESSES_MAX),
    (" AUTO ", 2, AUTO_READ_PROCESSES_MAX), ("0", 8, 0), ("3", 1, 3),
])
def test_the_read_processes_setting(raw, cpus, expected):
    assert parse_read_processes("ARB_SENSOR_READ_PROCESSES", raw, cpus=cpus) == expected


@pytest.mark.parametrize("raw", ["-1", "two", "1.5", ""])
def test_a_bad_read_processes_setting_names_the_variable_and_the_value(raw):
    with pytest.raises(settings.SettingError, match=r"ARB_SENSOR_READ_PROCESSES must be 'auto' or a whole number"):
        parse_read_processes("ARB_SENSOR_READ_PROCESSES", raw, cpus=2)


def test_a_kept_message_crosses_processes_and_reads_like_the_sensors_own():
    msg = ShardMessage("t", 2, 41, b"k", b'{"v": 1}', (1, 1700000000000), [("h", b"x")])
    copy = pickle.loads(pickle.dumps(msg))
    record = Record.of(copy, with_headers=True)
    assert (record.topic, record.partition, record.offset, record.key, record.value) == ("t", 2, 41, b"k", b'{"v": 1}')
    assert record.timestamp_ms == 1700000000000 and record.headers == (("h", b"x"),)
    assert copy.error() is None and record.source == "t/2/41"
