"""The second root core sub-search (`routing_bnb.CORE_BY_AMOUNT`): extra rails ranked by the reduced-cost bound on
sending the mean deficit over them, so the optimum's relay rails get into the sub-search and the root often holds the
optimum before the tree search starts.

A heuristic only (every plan it finds is a plan of the full model), so every proof must match the search without
it; the node counts show the earlier incumbent prunes."""

from __future__ import annotations

import pytest

from arb_orchestration.domain import routing_bnb
from arb_orchestration_tests.unit.test_routing_bnb_parallel import _agrees_on_random_small_instances, _nodes_without_and_with

ONE = routing_bnb.OPTIONS & ~routing_bnb.TWO_THREADS  # one search thread: node counts are repeatable
WITHOUT = ONE & ~routing_bnb.CORE_BY_AMOUNT

pytestmark = pytest.mark.skipif(routing_bnb.library() is None, reason="the library is not built (test_routing_bnb fails)")


def test_the_planner_uses_it():
    assert routing_bnb.OPTIONS & routing_bnb.CORE_BY_AMOUNT


def test_same_optimum_with_fewer_nodes_on_twenty_venue_assets():
    without_nodes, with_nodes = _nodes_without_and_with([(0, "USDC"), (3, "USDC")], WITHOUT, ONE)
    # measured: 3,287 -> 2,602 nodes (the optimum found at the root on both, at node ~830 / ~600 without)
    assert with_nodes * 1.15 < without_nodes, (without_nodes, with_nodes)


@pytest.mark.parametrize("options", [ONE, ONE | routing_bnb.ROOT_CUTS])
def test_same_feasibility_and_fee_as_without_it_on_random_small_instances(options):
    assert _agrees_on_random_small_instances(4011 + options % 5, options, reference=options & ~routing_bnb.CORE_BY_AMOUNT) >= 1
