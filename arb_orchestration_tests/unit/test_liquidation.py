"""Liquidation planning (pure): which reduce-only orders close which positions, their client order
ids, fill summaries and the risk team's report."""

from __future__ import annotations

from arb_orchestration.domain.liquidation import (
    LiquidationReport,
    VenueOutcome,
    close_order_id,
    is_flat,
    plan_close_orders,
    render_report,
    summarize_fills,
)
from arb_orchestration.domain.models import Order, Position


def _pos(venue, symbol, side, size, mark=100.0):
    return Position(venue=venue, symbol=symbol, side=side, size=size, entry_price=mark, mark_price=mark)


def _order(id, venue, symbol, side, filled, average, cid=None):
    return Order(id=id, client_order_id=cid, venue=venue, symbol=symbol, type="market", side=side,
                 amount=filled, filled=filled, average=average, status="closed", reduce_only=True)


def test_plan_closes_each_position_with_the_opposite_reduce_only_market_order_largest_first():
    positions = [
        _pos("okx", "ETH/USDT:USDT", "short", 3.0, mark=3000),
        _pos("okx", "BTC/USDT:USDT", "long", 0.5, mark=60000),
        _pos("okx", "SOL/USDT:USDT", "long", 1e-12),  # dust
    ]
    plan = plan_close_orders(positions, base_key="k")
    assert [(o.symbol, o.side, o.amount) for o in plan] == [("BTC/USDT:USDT", "sell", 0.5),
                                                            ("ETH/USDT:USDT", "buy", 3.0)]
    assert all(o.reduce_only and o.type == "market" for o in plan)
    assert not is_flat(positions) and is_flat(positions[2:])


def test_client_order_ids_are_stable_and_move_only_with_the_attempt():
    cid = close_order_id("k", "okx", "BTC/USDT:USDT", "long", 0)
    assert cid == close_order_id("k", "okx", "BTC/USDT:USDT", "long", 0)
    others = {close_order_id("k", "okx", "BTC/USDT:USDT", "long", 1), close_order_id("k", "bybit", "BTC/USDT:USDT", "long", 0),
              close_order_id("k", "okx", "ETH/USDT:USDT", "long", 0), close_order_id("k", "okx", "BTC/USDT:USDT", "short", 0),
              close_order_id("k2", "okx", "BTC/USDT:USDT", "long", 0)}
    assert cid not in others and len(others) == 5
    assert len(cid) == 32 and cid.isalnum()
    pos = [_pos("okx", "BTC/USDT:USDT", "long", 1.0)]
    key = ("okx", "BTC/USDT:USDT", "long")
    assert plan_close_orders(pos, base_key="k")[0].client_order_id == cid  # a first close is attempt 0
    assert plan_close_orders(pos, base_key="k", attempts={key: 1})[0].client_order_id == \
        close_order_id("k", "okx", "BTC/USDT:USDT", "long", 1)
    assert plan_close_orders(pos, base_key="k", skip=[key]) == []


def test_fill_summary_is_volume_weighted_and_ignores_replayed_orders():
    orders = [
        _order("1", "okx", "BTC/USDT:USDT", "sell", 1.0, 100.0),
        _order("2", "okx", "BTC/USDT:USDT", "sell", 3.0, 104.0),
        _order("2", "okx", "BTC/USDT:USDT", "sell", 3.0, 104.0),  # same order returned by a replay
        _order("3", "okx", "ETH/USDT:USDT", "buy", 0.0, None),
    ]
    [closed] = summarize_fills(orders)
    assert closed.amount == 4.0 and closed.average_price == 103.0 and closed.orders == ["1", "2"]


def test_report_says_what_was_closed_at_what_price_and_what_is_left():
    flat = VenueOutcome(venue="okx", flat=True, orders=[_order("1", "okx", "BTC/USDT:USDT", "sell", 2.0, 61000.5)],
                        rounds=1, canceled_orders=2)
    stuck = VenueOutcome(venue="kraken", flat=False, remaining=[_pos("kraken", "ETH/USDT:USDT", "short", 1.5)],
                         errors=["close ETH: BusinessError: rejected"], business_errors=["close ETH: BusinessError: rejected"])
    report = LiquidationReport(saga_id="s1", dry_run=False, reason="capital below floor", venues=[flat, stuck])
    assert not report.flat and report.only_business_errors
    # A venue left open by a refusal AND a flaky error may still flatten on a retry: not "only business errors";
    # nor may a venue left open without any error be escalated as refused.
    mixed = stuck.model_copy(update={"errors": stuck.errors + ["fetch: TransientError: 503"]})
    assert not LiquidationReport(saga_id="s1", dry_run=False, venues=[flat, mixed]).only_business_errors
    silent = VenueOutcome(venue="kraken", flat=False, remaining=stuck.remaining)
    assert not LiquidationReport(saga_id="s1", dry_run=False, venues=[flat, silent]).only_business_errors
    positions = {"okx": ([], []), "kraken": ([_pos("kraken", "ETH/USDT:USDT", "short", 1.5)], [])}
    subject, body = render_report(report, verification=positions)
    assert "NOT FLAT" in subject
    assert "closed: sell 2 BTC/USDT:USDT @ avg 61,000.50" in body
    assert "LEFT OPEN: short 1.5 ETH/USDT:USDT" in body and "kraken: STILL OPEN" in body
    assert "capital below floor" in body and "PAUSED" in body

    ok = LiquidationReport(saga_id="s1", dry_run=False, venues=[flat])
    subject, body = render_report(ok, verification={"okx": ([], [])})
    assert subject.startswith("[stop-loss] FLAT") and "okx: flat, no open orders" in body
    subject, _ = render_report(ok, verification={}, verification_errors={"okx": "TransientError: 503"})
    assert "NOT FLAT" in subject  # an unverified venue is never reported flat
    # A fresh check that did not cover a venue of the report (and reported no error for it) leaves it unverified.
    subject, _ = render_report(ok, verification={})
    assert "NOT FLAT" in subject
    # A venue with no position left but an order still open is not flat either, and the mail says what is open.
    resting = _order("9", "okx", "BTC/USDT:USDT", "buy", 0.0, None)
    subject, body = render_report(ok, verification={"okx": ([], [resting])})
    assert "NOT FLAT" in subject and "okx: STILL OPEN: no positions; 1 open order(s)" in body
    # Without a fresh check at all, the report's own verdict stands.
    subject, _ = render_report(ok)
    assert subject == "[stop-loss] FLAT on 1 venue(s) — saga s1"


def test_dry_run_report_lists_what_would_be_sent():
    plan = plan_close_orders([_pos("okx", "BTC/USDT:USDT", "long", 0.5)], base_key="k")
    report = LiquidationReport(saga_id="s", dry_run=True, venues=[VenueOutcome(venue="okx", flat=False, planned=plan)])
    subject, body = render_report(report)
    assert "DRY RUN" in subject and "would sell 0.5 BTC/USDT:USDT" in body and "PAUSED" not in body
