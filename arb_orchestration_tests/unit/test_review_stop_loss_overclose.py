"""Review evidence (no bug found): the stop-loss cannot close a position twice, past flat, into the other
side — across a retry of `liquidate` (same saga: same client order ids) or across two stop-loss sagas
running at once (two critical events: different ids). Against the simulator's own order book
(`ExchangeState`: fills at mark, client-order-id replay, reduce-only clamp), no sockets.

What makes it safe: every close is reduce-only and sized from a fresh position snapshot; the venue clamps
or refuses a reduce-only order that would go past flat. Nothing in the stop-loss lane limits it to one run
(helm-values: "no limit on purpose"), so this is the only guard between two runs.
"""

from __future__ import annotations

import threading

import pytest

from arb_orchestration.defs.stop_loss.liquidator import LiquidationSettings, liquidate_all
from arb_orchestration.resources.errors import AmbiguousOutcomeError
from arb_orchestration_tests.unit.test_hedge_job_fakes import BTC, ETH, World, venue_spec

FAST = LiquidationSettings(deadline_seconds=5.0, base_delay=0.001, max_delay=0.01)


def _world() -> World:
    return World([venue_spec("alpha", eth=True, positions=[(BTC, "long", 1.5, 60_000.0), (ETH, "short", 20.0, 3_000.0)])])


def _closed(world: World, symbol: str) -> float:
    return sum(o.filled for o in world.venue("alpha").orders(symbol=symbol) if o.reduce_only)


def test_two_stop_loss_sagas_at_once_close_each_position_exactly_once():
    world = _world()
    reports = {}
    start = threading.Barrier(2)

    def run(saga_id: str) -> None:
        start.wait()
        reports[saga_id] = liquidate_all(["alpha"], world.venue, saga_id=saga_id, base_key=f"key-{saga_id}",
                                         settings=FAST)

    threads = [threading.Thread(target=run, args=(s,)) for s in ("critical-1", "critical-2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(r.flat for r in reports.values())
    alpha = world.venue("alpha")
    assert alpha.position(BTC) == 0.0 and alpha.position(ETH) == 0.0
    assert _closed(world, BTC) == pytest.approx(1.5) and _closed(world, ETH) == pytest.approx(20.0)


def test_a_retried_liquidate_after_an_ambiguous_close_sends_nothing_past_flat():
    world = _world()
    alpha = world.venue("alpha")
    alpha.fail_on("create_order", AmbiguousOutcomeError("read timeout after sending"), after_apply=True,
                  match=lambda kw: kw["symbol"] == BTC)
    first = liquidate_all(["alpha"], world.venue, saga_id="s", base_key="key-s",
                          settings=LiquidationSettings(deadline_seconds=0.0, base_delay=0.001, max_delay=0.01))
    assert not first.flat or alpha.position(BTC) == 0.0
    again = liquidate_all(["alpha"], world.venue, saga_id="s", base_key="key-s", settings=FAST)  # the op retry
    assert again.flat
    assert alpha.position(BTC) == 0.0 and _closed(world, BTC) == pytest.approx(1.5)
    assert _closed(world, ETH) == pytest.approx(20.0)
