"""Review of the funding sensor's C chunk scanner (`domain/_fastfunding.c`): defects found, held by tests.

Each test here failed on the scanner as first committed (10e6b57) and names what it guards.
"""

from __future__ import annotations

import gc

from arb_orchestration.domain import events as ev
from arb_orchestration.domain.events import FundingChunkScan
from arb_orchestration_tests.unit.test_events import funding

TS = 1772366400


def _value(venue: str, ts: float = TS) -> bytes:
    return ev.encode_event(funding(venue=venue, ts=ts))


def _consistent(scan: FundingChunkScan) -> bool:
    """The scanner's market memory: `slots[b"venue\\0symbol"]` is the index of that market in `markets`."""
    if len(scan._slots) != len(scan._markets):
        return False
    return all(scan._markets[slot] == tuple(key.decode().split("\0")) for key, slot in scan._slots.items())


def test_a_market_added_while_the_scanner_is_inside_a_call_does_not_take_its_slot():
    # Adding a market allocates a tuple, which may run the garbage collector, and with it Python code
    # (finalizers, gc callbacks): another thread's tick, or this one, may scan with the same memory
    # meanwhile. The scanner read its new slot number before that allocation, so the market added
    # meanwhile got the same slot: the value of venue "a" was reported as venue "b" (a hedge decided
    # on the wrong market's rate), and `slots` kept pointing "a" at "b".
    from arb_orchestration.domain import _fastfunding

    outcomes = []
    old_threshold = gc.get_threshold()
    try:
        for junk_count in range(4):
            scan = FundingChunkScan()
            inner: list = []
            armed: list = []

            def callback(phase, _info, scan=scan, inner=inner, armed=armed):
                if phase == "start" and armed and not inner:
                    inner.append(scan([_value("b", TS + 1)], fresher_than=0.0))

            args = ([_value("a")], 0.0, ev._screen_limit(ev.DEFAULT_MAX_EVENT_BYTES), float(ev._MIN_EPOCH_S),
                    float(ev._MAX_EPOCH_S), scan._slots, scan._markets, scan.max_markets)
            gc.callbacks.append(callback)
            try:
                gc.collect()
                gc.set_threshold(1)
                # Each allocation moves the young generation's count 0 -> 1 -> (collect) 0 ..., so over
                # the trials a collection runs at the scanner's first allocation in one of them.
                junk = []
                for _ in range(junk_count):
                    junk.append([])
                armed.append(True)
                outer = _fastfunding.newest_in_chunk(*args)
            finally:
                gc.set_threshold(*old_threshold)
                gc.callbacks.remove(callback)
            del junk
            outcomes.append((junk_count, outer, inner, list(scan._markets), dict(scan._slots)))
            # Declining (the Python path decides) is fine; naming another market is not.
            assert outer is None or [market for market, _, _ in outer] == [("a", "ETH/USDT:USDT")], outcomes[-1]
            if inner and inner[0] is not None:
                assert [market for market, _, _ in inner[0]] == [("b", "ETH/USDT:USDT")], outcomes[-1]
            assert _consistent(scan), outcomes[-1]
    finally:
        gc.set_threshold(*old_threshold)
    # The test is only worth something if a collection did run inside one of the calls.
    assert any(inner for _, _, inner, _, _ in outcomes), outcomes


def test_a_large_markets_bound_neither_crashes_nor_allocates_for_it():
    # The per-call arrays were `max_known + 1` long: 2**62 + 1 entries of 8 bytes wrapped to an 8-byte
    # allocation, then written 2**62 times (a segfault of the code server); sys.maxsize + 1 overflowed;
    # 10**12 asked for terabytes (MemoryError every tick). A chunk can add at most its own length of
    # markets, so that bounds the arrays. In a subprocess: the failure mode was a crash.
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from arb_orchestration.domain import events as ev\n"
        "from arb_orchestration_tests.unit.test_events import funding\n"
        "values = [ev.encode_event(funding(venue=v, ts=1772366400 + i)) for i, v in enumerate('aba')]\n"
        "for bound in (2**62, sys.maxsize, 10**12):\n"
        "    print(ev.FundingChunkScan(max_markets=bound)(values, fresher_than=0.0))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    expected = str([(("a", "ETH/USDT:USDT"), 2, float(TS + 2)), (("b", "ETH/USDT:USDT"), 1, float(TS + 1))])
    assert done.stdout.splitlines() == [expected] * 3


# ------------------------------------------------------------------ chunks, against the rule itself
#
# test_funding_chunk_scan compares `offer_scanned` with `offer_fresh_rows`, which since 84a662c goes
# through `offer_scanned` itself; this holds one scanner, kept across chunks as the sensor keeps it,
# to the rule as `NewestPerMarket.offer` states it for parsed events (exact datetimes, rate by rate).

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from arb_orchestration.domain.events import parse_event  # noqa: E402
from arb_orchestration.domain.triggers import NewestPerMarket  # noqa: E402
from arb_orchestration_tests.unit.test_funding_chunk_scan import _chunks  # noqa: E402


def _held(newest: NewestPerMarket):
    return sorted((key, held[2], held[3]) for key, held in newest._held.items()), newest.offered, newest.newest()


@settings(max_examples=150, deadline=None)
@given(st.lists(_chunks(), min_size=1, max_size=4), st.sampled_from([None, 2, 3, 10]))
def test_chunks_the_scanner_takes_end_as_rate_by_rate_offers_of_the_parsed_events(chunks, max_markets):
    scan = FundingChunkScan()
    scanned, reference = NewestPerMarket(max_markets=max_markets), NewestPerMarket(max_markets=max_markets)
    for chunk in chunks:
        winners = scan(chunk, fresher_than=0.0)
        if winners is None:
            continue  # the Python path's; keep both sides as they are
        trial = NewestPerMarket(max_markets=max_markets)
        trial._held = {key: list(held) for key, held in reference._held.items()}
        trial.offered = reference.offered
        fits = all(trial.offer(parse_event("funding-rate-events", value), value) for value in chunk)
        before = _held(scanned)
        taken = scanned.offer_scanned(winners, chunk)
        assert taken is fits
        if taken:
            reference = trial
            assert _held(scanned) == _held(reference)
        else:
            assert _held(scanned) == before
