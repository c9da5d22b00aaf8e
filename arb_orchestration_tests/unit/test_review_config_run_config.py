"""Config review: run config of `funding_rate_hedge` and `emergency_stop_loss_saga` that was accepted and then
did the wrong thing quietly. The first step now refuses it before anything is sent to a venue, as a
business error (not retried) whose message names the run-config field: `HedgeConfig.check()` (via
`policy()`/`stop_settings()`, so `InvalidHedgeConfig`) and `StopLossConfig.check()` (`InvalidStopLossConfig`).

- stop-loss `dust: .nan` (or `.inf`, or 1e9 for 1e-9): `size > dust` is never true, so every position
  counted as flat: the emergency stop-loss closed nothing and reported the book flat;
- hedge `dust: .inf`: every position counted as closed, so the protective stops were cancelled;
- hedge `drift_tolerance_usd: .nan`: no asset ever outside the band: the hedge never traded;
- hedge `stop_distance_pct: 0.05` with a band under it (5 % written as a fraction): stops 0.05 % from the
  mark, closing the hedge on noise;
- hedge `order_venues: [binanc]` (a typo): no market eligible, so no hedge order at all, and the run
  succeeded ("nothing to do"); now the plan step refuses it naming the unknown venue;
- stop-loss `deadline_seconds: .nan`/0: never expires / expires before the first order.
"""

import math

import pytest

from arb_orchestration.defs.hedging.config import HedgeConfig
from arb_orchestration.defs.stop_loss.saga import InvalidStopLossConfig, StopLossConfig, liquidate
from arb_orchestration.resources.errors import BusinessError

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    "field, value",
    [
        ("dust", NAN), ("dust", INF), ("dust", 1e9), ("dust", -1.0),
        ("deadline_seconds", NAN), ("deadline_seconds", 0.0), ("deadline_seconds", -5.0), ("deadline_seconds", INF),
    ],
)
def test_stop_loss_config_refuses(field, value):
    with pytest.raises(InvalidStopLossConfig) as caught:
        StopLossConfig(**{field: value}).check()
    assert field in str(caught.value)
    assert isinstance(caught.value, BusinessError)  # not retried: a retry cannot fix a run config


def test_stop_loss_with_a_nan_dust_sends_nothing_and_fails():
    class _Exchange:
        def venue_names(self):
            raise AssertionError("no venue may be touched before the config is checked")

    class _Ctx:
        config = StopLossConfig(dust=NAN)

    with pytest.raises(InvalidStopLossConfig, match="dust must be"):
        liquidate(_Ctx(), _Exchange())


@pytest.mark.parametrize(
    "field, value",
    [
        ("dust", NAN), ("dust", INF), ("dust", 1e9),
        ("drift_tolerance_usd", NAN), ("drift_tolerance_usd", INF),
        ("min_notional_usd", NAN),
        ("max_notional_per_market_usd", NAN), ("max_notional_per_market_usd", INF),
        ("stop_distance_pct", NAN), ("stop_distance_pct", 0.05), ("stop_distance_pct", 100.0),
        ("stop_replace_band_pct", NAN), ("stop_size_tolerance_pct", NAN),
        ("liquidation_buffer_pct", NAN), ("liquidation_buffer_pct", 200.0),
        ("fetch_deadline_seconds", 0.0), ("fetch_deadline_seconds", NAN),
        ("target_delta", {"BTC": NAN}), ("target_delta", {"BTC": INF}),
    ],
)
def test_hedge_config_refuses(field, value):
    config = HedgeConfig(**{field: value})
    with pytest.raises(ValueError) as caught:
        config.policy()
    assert field in str(caught.value)
    with pytest.raises(ValueError, match=field.replace("[", r"\[")):
        config.stop_settings()


def test_the_defaults_and_ordinary_values_pass():
    StopLossConfig().check()
    StopLossConfig(dust=1e-6, deadline_seconds=30).check()
    HedgeConfig().stop_settings()
    config = HedgeConfig(stop_distance_pct=3, stop_replace_band_pct=0.5, target_delta={"BTC": -0.5},
                         max_notional_per_market_usd=None, dust=0.0)
    assert config.policy().target_delta == {"BTC": -0.5}


def test_fraction_for_percent_is_refused_even_with_a_matching_band():
    """5 % written as 0.05 (and the band as 0.01): the band check alone let that through."""
    with pytest.raises(ValueError, match="stop_distance_pct .*fraction"):
        HedgeConfig(stop_distance_pct=0.05, stop_replace_band_pct=0.01).stop_settings()


def test_hedge_plan_refuses_order_venues_the_exchange_does_not_have():
    from arb_orchestration.defs.hedging.steps import InvalidHedgeConfig, plan_hedge

    class _Exchange:
        def venue_names(self):
            return ["binance", "okx"]

    class _Ctx:
        config = HedgeConfig(order_venues=["binance", "binanc"])
        run_tags: dict = {}

    with pytest.raises(InvalidHedgeConfig, match="order_venues.*binanc"):
        plan_hedge(_Ctx(), _Exchange(), None)
