"""The compiled branch-and-bound's LP reuses a basis inverse only when it is the inverse of that basis.

Found in the sixteenth session: a strong-branching probe that stopped at its iteration limit left the LP's inverse
at the basis its pivots had reached, while the LP's record of "the basis last factored" still named the node's
basis. When the caller put the node's basis back, the next LP updated that inverse (Sherman-Morrison for the changed
columns) as if it belonged to the node's basis, and solved on a wrong one (|binv·B - I| up to 2e4 on the 20-30-venue
bench assets). Now any LP stopped short of optimal or infeasible forgets its factorisation. `CHECK_INVERSE` makes the
library check every inverse it reuses; these tests fail with the old behaviour (checked by building the library
without the fix: every case below fails, e.g. one failure on each of 10:0 USDT and 10:2 USDC)."""

from __future__ import annotations

import ctypes

import pytest

from arb_orchestration.domain import routing_bnb
from arb_orchestration.domain.routing_solver import MIP_REL_GAP
from arb_orchestration_tests.unit.test_routing_bnb_parallel import _asset, _fee

pytestmark = pytest.mark.skipif(routing_bnb.library() is None, reason="the library is not built (test_routing_bnb fails)")


def _inverse_checks() -> tuple[int, int, float]:
    """(checks, failures, worst error since the last call) of CHECK_INVERSE in this process."""
    lib = routing_bnb.library()
    checks, failures, worst = ctypes.c_uint64(), ctypes.c_uint64(), ctypes.c_double()
    lib.bnb_inverse_checks.restype = None
    lib.bnb_inverse_checks(ctypes.byref(checks), ctypes.byref(failures), ctypes.byref(worst))
    return checks.value, failures.value, worst.value


@pytest.mark.parametrize("venues, seed, asset", [(10, 0, "USDT"), (10, 2, "USDC"), (20, 2, "USDT")])
@pytest.mark.parametrize("threads", [1, 2])
def test_every_reused_basis_inverse_is_the_inverse_of_its_basis(venues, seed, asset, threads):
    inst = _asset(venues, seed, asset)
    planner = routing_bnb.options_for(inst)
    if threads == 1:
        planner &= ~routing_bnb.TWO_THREADS
    checks, failures, _ = _inverse_checks()
    checked = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=60.0, options=planner | routing_bnb.CHECK_INVERSE)
    after = _inverse_checks()
    assert after[0] - checks > 0  # the check ran (the inverse is reused on every one of these assets)
    if threads == 1:
        assert after[1] - failures == 0
    else:
        # Two threads: about one solve of 20:2 USDT in six still reuses an inverse with a relative residual of 2e-3 to
        # 5e-3 (with or without VERIFY_DEAD), never with one thread on this asset; a stale inverse's is 1 (the check's
        # measure is relative, `count_inverse_check`). Traced (on 30:0 ETH, one thread) to dual simplex pivots into a
        # near-singular basis (pivot element 8e14), not to a stale inverse: docs/route-planner.md, "Sixteenth
        # session". Held to what it is, so a stale inverse still fails here.
        assert after[2] < 0.05, after
    # the diagnostic changes nothing else: the planner's own options prove the same fee
    plain = routing_bnb.solve(inst, gap=MIP_REL_GAP, time_limit=60.0, options=planner)
    assert checked.status == plain.status == "optimal"
    assert _fee(inst, checked) == pytest.approx(_fee(inst, plain), rel=1e-9)
    assert routing_bnb.CHECK_INVERSE & (routing_bnb.OPTIONS | routing_bnb.ROOT_CUTS) == 0
