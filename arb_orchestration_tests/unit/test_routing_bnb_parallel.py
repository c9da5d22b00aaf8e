"""The compiled branch-and-bound's two-thread search (`routing_bnb.TWO_THREADS`): the same proofs as one thread,
and it stops on the caller's cancel flag, time limit and node limit like the one-thread search."""

from __future__ import annotations

import ctypes
import random
import threading
import time

import pytest

from arb_orchestration.domain import routing_bnb
from arb_orchestration.domain.routing import parse_problem
from arb_orchestration.domain.routing_solver import MIP_REL_GAP, asset_instance
from arb_orchestration_tests.unit.routing_solvers import random_small_instance
from arb_orchestration_tests.unit.test_routing_bnb import _bench_instance

ONE = routing_bnb.OPTIONS & ~routing_bnb.TWO_THREADS
TWO = routing_bnb.OPTIONS | routing_bnb.TWO_THREADS

pytestmark = pytest.mark.skipif(routing_bnb.library() is None, reason="the library is not built (test_routing_bnb fails)")


def _fee(inst, outcome: routing_bnb.Outcome) -> float:
    k = len(inst.rails)
    return sum(inst.rails[j].fee(outcome.solution[j]) for j in range(k) if outcome.solution[k + j] > 0.5)


def _asset(venues: int, seed: int, asset: str):
    instance = _bench_instance(venues, seed)
    return asset_instance(parse_problem(instance["balances"], instance["targets"], instance["rails"]), asset)


def _nodes_without_and_with(cases, without: int, with_: int) -> tuple[int, int]:
    """Solve each (seed, asset) of the 20-venue bench with `without` and with `with_` (each plus the root cuts the
    planner adds there): both proven, the same fee; the total nodes of each."""
    totals = [0, 0]
    for seed, asset in cases:
        inst = _asset(20, seed, asset)
        cuts = routing_bnb.options_for(inst) & routing_bnb.ROOT_CUTS  # what the planner adds at 20 venues
        outcomes = [routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=60.0, options=o | cuts) for o in (without, with_)]
        assert [o.status for o in outcomes] == ["optimal", "optimal"], (seed, asset)
        assert _fee(inst, outcomes[1]) == pytest.approx(_fee(inst, outcomes[0]), rel=1e-9), (seed, asset)
        totals = [t + o.nodes for t, o in zip(totals, outcomes)]
    return totals[0], totals[1]


def test_two_threads_prove_the_same_optimum_as_one_on_the_ten_venue_bench():
    deepest = 0
    for seed in range(3):
        instance = _bench_instance(10, seed)
        problem = parse_problem(instance["balances"], instance["targets"], instance["rails"])
        for asset in problem.assets:
            inst = asset_instance(problem, asset)
            one = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=60.0, options=ONE)
            two = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=60.0, options=TWO)
            assert one.status == two.status == "optimal", (seed, asset)
            assert _fee(inst, two) == pytest.approx(_fee(inst, one), rel=1e-9), (seed, asset)
            deepest = max(deepest, two.nodes)
    # some tree was searched by both threads, not settled at the root (the deepest of these trees: > 100 nodes before
    # reduced-cost fixing, 50-73 with it, 37-47 over 8 runs with the second root core sub-search, 40 with one thread)
    assert deepest > 20


def _agrees_on_random_small_instances(seed: int, options: int, reference: int = ONE) -> int:
    """120 random 4-7-venue instances: `options` proves what `reference` (one plain thread) proves. How many needed a
    tree."""
    rng = random.Random(seed)
    searched = 0
    for _ in range(120):
        balances, targets, rails = random_small_instance(rng)
        inst = asset_instance(parse_problem(balances, targets, rails), "X")
        if not inst.rails or not inst.needs:
            continue
        one = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=30.0, options=reference)
        other = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=30.0, options=options)
        assert one.status == other.status, (balances, targets, rails)
        if one.status == "optimal":
            assert _fee(inst, other) == pytest.approx(_fee(inst, one), rel=1e-9, abs=1e-12), (balances, targets, rails)
        searched += other.nodes > 1
    return searched


def test_two_threads_agree_with_one_on_random_small_instances():
    assert _agrees_on_random_small_instances(28112026, TWO) >= 5  # not all settled at the root


def test_a_cancelled_two_thread_search_stops_at_once():
    inst = _asset(20, 2, "USDT")  # about a second of search with two threads (1.5 s with one), 3,000+ nodes
    cancel = ctypes.c_int32(0)
    threading.Timer(0.1, lambda: setattr(cancel, "value", 1)).start()
    started = time.monotonic()
    outcome = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=60.0, options=TWO, cancel=cancel)
    assert outcome.status == "limit" and outcome.solution is None
    assert time.monotonic() - started < 10.0  # both threads saw the flag (the caller's, read from worker threads)


def test_a_two_thread_search_keeps_the_time_and_node_limits():
    inst = _asset(20, 2, "USDT")  # about a second with two threads: a tenth of it is a limit, not a close call
    started = time.monotonic()
    timed = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=0.1, options=TWO)
    assert timed.status == "limit" and timed.solution is None
    assert time.monotonic() - started < 10.0
    counted = routing_bnb.solve(_asset(10, 0, "ETH"), gap=MIP_REL_GAP, max_nodes=5, options=TWO)
    assert counted.status == "limit" and counted.solution is None and counted.nodes <= 5 + 2


# ---------------------------------------------------------------- the root's venue-bound cuts (from 20 venues)


def test_the_planner_adds_the_root_cuts_from_twenty_venues():
    assert routing_bnb.options_for(_asset(10, 0, "ETH")) == routing_bnb.OPTIONS
    assert routing_bnb.options_for(_asset(20, 0, "ETH")) == routing_bnb.OPTIONS | routing_bnb.ROOT_CUTS


@pytest.mark.parametrize("seed,asset", [(0, "ETH"), (2, "ETH"), (2, "USDC"), (1, "USDT")])
def test_root_cuts_prove_the_same_optimum_on_twenty_venue_assets(seed, asset):
    inst = _asset(20, seed, asset)
    plain = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=60.0, options=ONE)
    cut = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=60.0)  # options_for: cuts and two threads
    assert plain.status == cut.status == "optimal"
    assert _fee(inst, cut) == pytest.approx(_fee(inst, plain), rel=1e-9)
    assert cut.nodes < plain.nodes  # the cuts did their job (fewer nodes on each of these)


@pytest.mark.parametrize("options", [ONE | routing_bnb.ROOT_CUTS, TWO | routing_bnb.ROOT_CUTS])
def test_root_cuts_agree_with_the_plain_search_on_random_small_instances(options):
    assert _agrees_on_random_small_instances(2811, options) >= 1


# ---------------------------------------------------------------- the root's last core sub-search on a search thread


def _overlap_runs() -> int:
    lib = routing_bnb.library()
    lib.bnb_core_overlap_runs.restype = ctypes.c_uint64
    return int(lib.bnb_core_overlap_runs())


def test_the_core_sub_search_after_the_root_cuts_runs_on_a_search_thread_with_the_same_proof():
    """CORE_OVERLAP (in ROOT_CUTS): with two threads, the root leaves its core sub-searches after the cuts to the first
    search thread. 20:3 USDC is an asset where that sub-search improved the root's plan (fifteenth session); its tree
    takes ~1,000 nodes, so both sub-searches (the two rankings) run before the other thread finishes."""
    inst = _asset(20, 3, "USDC")
    planner = routing_bnb.options_for(inst)
    assert planner & routing_bnb.CORE_OVERLAP and planner & routing_bnb.TWO_THREADS
    before = _overlap_runs()
    overlapped = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=60.0)
    assert _overlap_runs() - before == 2
    before = _overlap_runs()
    at_root = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=60.0, options=planner & ~routing_bnb.CORE_OVERLAP)
    one = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=60.0, options=planner & ~routing_bnb.TWO_THREADS)
    assert _overlap_runs() == before  # the root ran them itself: without the bit, and with one thread
    assert overlapped.status == at_root.status == one.status == "optimal"
    assert _fee(inst, overlapped) == pytest.approx(_fee(inst, at_root), rel=1e-9)
    assert _fee(inst, overlapped) == pytest.approx(_fee(inst, one), rel=1e-9)


@pytest.mark.parametrize("seed", [0, 2])
def test_overlapping_the_root_core_sub_search_keeps_the_proofs_on_twenty_venue_assets(seed):
    # every asset of two 20-venue bench instances (20:0 USDC and 20:2 USDT are the slow ones), with and without it
    instance = _bench_instance(20, seed)
    problem = parse_problem(instance["balances"], instance["targets"], instance["rails"])
    for asset in problem.assets:
        inst = asset_instance(problem, asset)
        with_ = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=60.0)
        without = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=60.0,
                                    options=routing_bnb.options_for(inst) & ~routing_bnb.CORE_OVERLAP)
        assert with_.status == without.status == "optimal", asset
        assert _fee(inst, with_) == pytest.approx(_fee(inst, without), rel=1e-9), asset


def test_a_two_thread_search_with_the_overlap_keeps_the_time_limit_and_cancel_flag():
    # the thread running the root's core sub-searches sees a limit too (they stop at their next node)
    inst = _asset(20, 2, "USDT")
    options = routing_bnb.options_for(inst)
    assert options & routing_bnb.CORE_OVERLAP
    started = time.monotonic()
    timed = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=0.15, options=options)
    assert timed.status == "limit" and timed.solution is None
    cancel = ctypes.c_int32(0)
    threading.Timer(0.15, lambda: setattr(cancel, "value", 1)).start()
    cancelled = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=60.0, options=options, cancel=cancel)
    assert cancelled.status == "limit" and cancelled.solution is None
    assert time.monotonic() - started < 10.0
