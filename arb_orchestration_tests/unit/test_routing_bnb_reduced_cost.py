"""Reduced-cost fixing that counts each rail's fee column (`routing_bnb.RC_FEE`) and the amount caps that follow from
the same bound (`routing_bnb.RC_CAPS`): the same proofs as the search without them, with fewer nodes.

Both only remove plans that cannot beat the incumbent (lib.rs `fix_by_reduced_cost` says why), so every fee must
match the plain search's to the planner's gap; the node counts show they fire."""

from __future__ import annotations

import pytest

from arb_orchestration.domain import routing_bnb
from arb_orchestration_tests.unit.test_routing_bnb_parallel import _agrees_on_random_small_instances, _nodes_without_and_with

RC = routing_bnb.RC_FEE | routing_bnb.RC_CAPS
ONE = routing_bnb.OPTIONS & ~routing_bnb.TWO_THREADS  # one search thread: node counts are repeatable
PLAIN = ONE & ~RC

pytestmark = pytest.mark.skipif(routing_bnb.library() is None, reason="the library is not built (test_routing_bnb fails)")


def test_the_planner_uses_both():
    assert routing_bnb.OPTIONS & RC == RC


def test_same_optimum_with_far_fewer_nodes_on_twenty_venue_assets():
    plain_nodes, fixed_nodes = _nodes_without_and_with([(0, "ETH"), (1, "ETH"), (1, "USDC"), (2, "USDC")], PLAIN, ONE)
    # measured: 1,750 -> 220 nodes (RC_FEE alone: 664); a fixing rule that never fired would leave them equal
    assert fixed_nodes * 3 < plain_nodes, (plain_nodes, fixed_nodes)


@pytest.mark.parametrize("options", [ONE, ONE & ~routing_bnb.RC_CAPS, ONE | routing_bnb.ROOT_CUTS])
def test_same_feasibility_and_fee_as_the_plain_search_on_random_small_instances(options):
    # some instance needed a tree, where the fixing can act
    assert _agrees_on_random_small_instances(2811 + options % 7, options, reference=PLAIN) >= 1
