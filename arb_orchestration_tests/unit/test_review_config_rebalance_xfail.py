"""Config review, open findings in files other people are editing (defs/rebalance/*, domain/rebalance.py,
resources/ccxt_venue.py): each test says what should happen and is xfail(strict) until it does.

Rebalance run config (`RebalanceConfig`): the plan step builds `policy()` and `guardrails()` from it, and
`TargetPolicy`/`TargetRule` check their own numbers, but `Guardrails` checks none and the run-only fields
(arrival, polling, verification, Wise fee) are not checked anywhere. NaN compares false both ways, so
`t.amount > NaN` never breaches: a NaN (or infinite) `max_transfer`/`max_daily` switches the limit off
and lets any amount leave. The run-only fields are first read after the pivot, i.e. after money moved.
The expected fix: `RebalanceConfig` (or `Guardrails.__post_init__`) refuses these when the plan step
builds its inputs, with a ValueError naming the key (pydantic's ValidationError is one too).
"""

import math

import pytest

from arb_orchestration.defs.rebalance.config import RebalanceConfig
from arb_orchestration.domain.rebalance import PlannedTransfer, check_guardrails

NAN, INF = math.nan, math.inf
REBALANCE_OPEN = "open: defs/rebalance/config.py (or domain.rebalance.Guardrails) does not check it; see module docstring"


def _plan_inputs(**config):
    cfg = RebalanceConfig(**config)
    return cfg, cfg.policy(), cfg.guardrails()


def test_what_a_nan_limit_does_today():
    """Not xfail: the harm, measured. A 10 M USDT transfer passes a NaN per-transfer and daily limit."""
    _, _, guardrails = _plan_inputs(max_transfer={"USDT": NAN}, max_daily={"USDT": NAN})
    move = PlannedTransfer(index=0, rail="r", kind="withdrawal", from_venue="binance", to_venue="okx", asset="USDT",
                           network="TRC20", amount=10_000_000.0, fee=1.0, credited=9_999_999.0)
    assert check_guardrails([move], guardrails) == []


@pytest.mark.xfail(strict=True, reason=REBALANCE_OPEN)
@pytest.mark.parametrize(
    "key, value",
    [
        ("max_transfer", {"USDT": NAN}), ("max_transfer", {"USDT": INF}), ("max_transfer", {"USDT": -1.0}),
        ("max_daily", {"USDT": NAN}), ("max_daily", {"EUR": INF}),
        ("min_deficit", {"USDT": NAN}), ("min_deficit", {"USDT": -5.0}),
        ("max_fee_ratio", NAN), ("max_fee_ratio", -0.01),
        ("max_fee_ratio", 1.0),  # "1" meant as 1 %: fees up to the whole deficit pass the min-benefit rule
        ("wise_reserve", {"EUR": NAN}), ("wise_reserve", {"EUR": -5.0}),
        ("planner_time_limit_seconds", NAN), ("planner_time_limit_seconds", 0.0),
    ],
)
def test_policy_and_guardrail_numbers_are_checked_before_planning(key, value):
    with pytest.raises(ValueError, match=key):
        _plan_inputs(**{key: value})


@pytest.mark.xfail(strict=True, reason=REBALANCE_OPEN + " (these are first read after the pivot)")
@pytest.mark.parametrize(
    "key, value",
    [
        ("arrival_timeout_seconds", NAN), ("arrival_timeout_seconds", -1.0),
        ("poll_interval_seconds", 0.0), ("poll_interval_seconds", -1.0),  # time.sleep(-1) raises mid-await
        ("verify_tolerance", NAN), ("verify_tolerance", 1.0), ("verify_tolerance", 20.0),  # 20 meant as 20 %?
        ("max_fee_increase", NAN), ("max_fee_increase", -2.0),
        ("human_funding_timeout_seconds", NAN), ("human_funding_poll_seconds", 0.0),
        ("in_flight_lookback_seconds", NAN), ("in_flight_lookback_seconds", -1.0),
    ],
)
def test_run_only_numbers_are_checked_before_anything_moves(key, value):
    with pytest.raises(ValueError, match=key):
        _plan_inputs(**{key: value})


@pytest.mark.xfail(strict=True, reason="open: defs/rebalance/planning.py does not check target venues against the "
                                       "exchange's (a typo's rule is silently never applied)")
def test_a_target_for_a_venue_the_exchange_does_not_have_is_refused():
    from arb_orchestration.defs.rebalance.planning import propose

    class _Exchange:
        def venue_names(self):
            return ["binance", "okx"]

        def venue(self, name):
            raise AssertionError("the config should have been refused before any venue is read")

    config = RebalanceConfig(targets=[{"venue": "okxx", "asset": "USDT", "share": 0.3}])
    with pytest.raises(ValueError, match="okxx"):
        propose(_Exchange(), wise=None, config=config, used_today={})


def test_credentials_inside_ccxt_venues_options_are_refused_without_echoing_them(monkeypatch):
    from arb_orchestration import settings
    from arb_orchestration.defs.resources import exchange_resource

    monkeypatch.setenv("EXCHANGE_BACKEND", "ccxt")
    monkeypatch.setenv("EXCHANGE_VENUES", "binance")
    monkeypatch.setenv("CCXT_VENUES", '{"binance": {"options": {"apiKey": "AKIA-venue-key", "secret": "s3cr3t-value"}}}')
    with pytest.raises(settings.SettingError, match=r"CCXT_VENUES\[binance\]") as caught:
        exchange_resource("local")
    assert "s3cr3t-value" not in str(caught.value) and "AKIA-venue-key" not in str(caught.value)
