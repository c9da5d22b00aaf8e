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

ONE = routing_bnb.OPTIONS & ~routing_bnb.TWO_THREADS  # one search thread: node counts are repeatable
WITHOUT = ONE & ~routing_bnb.VERIFY_DEAD

pytestmark = pytest.mark.skipif(routing_bnb.library() is None, reason="the library is not built (test_routing_bnb fails)")


def test_the_planner_uses_it():
    assert routing_bnb.OPTIONS & routing_bnb.VERIFY_DEAD


def test_same_optimum_with_fewer_nodes_on_twenty_venue_assets():
    # the two slow 20-venue assets: measured 3,075 -> 2,049 (20:2 USDT) and 1,367 -> 887 (20:0 USDC) nodes
    without_nodes, with_nodes = _nodes_without_and_with([(2, "USDT"), (0, "USDC")], WITHOUT, ONE)
    assert with_nodes * 1.25 < without_nodes, (without_nodes, with_nodes)


@pytest.mark.parametrize("seed", [1, 3])
def test_two_threads_prove_the_same_optimum_with_and_without_it(seed):
    # every asset of two more 20-venue bench instances, the planner's two-thread options (node counts vary there)
    cases = [(seed, asset) for asset in ("ETH", "USDC", "USDT")]
    _nodes_without_and_with(cases, routing_bnb.OPTIONS & ~routing_bnb.VERIFY_DEAD, routing_bnb.OPTIONS)


@pytest.mark.parametrize("options", [ONE, ONE | routing_bnb.ROOT_CUTS])
def test_same_feasibility_and_fee_as_without_it_on_random_small_instances(options):
    assert _agrees_on_random_small_instances(1611 + options % 7, options, reference=options & ~routing_bnb.VERIFY_DEAD) >= 1
