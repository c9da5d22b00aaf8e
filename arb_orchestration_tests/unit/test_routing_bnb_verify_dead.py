"""Children the pseudo-costs call dead are probed before they are created (`routing_bnb.VERIFY_DEAD`).

When the branching rail was scored by its pseudo-costs (no solved probe at this node) and they predict that a child
cannot beat the incumbent, the library probes that child with an objective cutoff at the prune level (the dual
simplex stops once a dual feasible basis's objective reaches it: that objective bounds the child's LP from below)
and does not create a child so proven. It only skips subtrees that hold no better plan, so every proof must match
the search without it; the node counts show it prunes."""

from __future__ import annotations

import pytest

from arb_orchestration.domain import routing_bnb
from arb_orchestration_tests.unit.test_routing_bnb_parallel import (
    _agrees_on_random_small_instances,
    _nodes_without_and_with,
)

pytestmark = pytest.mark.skipif(routing_bnb.library() is None, reason="the library is not built (test_routing_bnb fails)")


def _one_thread(with_it: bool) -> int:
    """The planner's options with one search thread (node counts are repeatable), with or without the bit."""
    options = routing_bnb.OPTIONS & ~routing_bnb.TWO_THREADS
    return options if with_it else options & ~routing_bnb.VERIFY_DEAD


def test_the_planner_proves_the_same_optimum_with_fewer_nodes():
    assert routing_bnb.OPTIONS & routing_bnb.VERIFY_DEAD
    # the two slow 20-venue assets: measured 3,075 -> 2,049 (20:2 USDT) and 1,367 -> 887 (20:0 USDC) nodes
    without_nodes, with_nodes = _nodes_without_and_with([(2, "USDT"), (0, "USDC")], _one_thread(False), _one_thread(True))
    assert with_nodes * 1.25 < without_nodes, (without_nodes, with_nodes)


@pytest.mark.parametrize("seed", [1, 3])
def test_two_threads_prove_the_same_optimum_with_and_without_it(seed):
    # every asset of two more 20-venue bench instances, the planner's two-thread options (node counts vary there)
    cases = [(seed, asset) for asset in ("ETH", "USDC", "USDT")]
    _nodes_without_and_with(cases, routing_bnb.OPTIONS & ~routing_bnb.VERIFY_DEAD, routing_bnb.OPTIONS)


@pytest.mark.parametrize("cuts", [0, routing_bnb.ROOT_CUTS])
def test_same_feasibility_and_fee_as_without_it_on_random_small_instances(cuts):
    with_it = _one_thread(True) | cuts
    assert _agrees_on_random_small_instances(1611 + cuts % 7, with_it, reference=with_it & ~routing_bnb.VERIFY_DEAD) >= 1
