"""Config review findings in defs/rebalance/*, domain/rebalance.py and resources/ccxt_venue.py: each test
says what should happen (they were xfail(strict) until fixed; the docstring below describes the defects found).

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
from arb_orchestration.domain.rebalance import (
    RULE_DAILY,
    RULE_PER_TRANSFER,
    Guardrails,
    PlannedTransfer,
    check_guardrails,
)

NAN, INF = math.nan, math.inf


def _plan_inputs(**config):
    cfg = RebalanceConfig(**config)
    return cfg, cfg.policy(), cfg.guardrails()


def test_a_nan_limit_no_longer_lets_a_10m_transfer_pass():
    """The harm this review measured: a 10 M USDT transfer passed a NaN per-transfer and daily limit
    (`check_guardrails` returned no breach). Now NaN limits are refused where the run config builds the
    guardrails and by `Guardrails` itself, and a finite limit still stops the same transfer."""
    with pytest.raises(ValueError, match=r"max_transfer\[USDT\].*nan"):
        _plan_inputs(max_transfer={"USDT": NAN}, max_daily={"USDT": NAN})
    with pytest.raises(ValueError, match=r"max_daily\[USDT\]"):
        Guardrails(max_transfer={"USDT": 250_000.0}, max_daily={"USDT": NAN}, allowed_destinations=("*:TRC20",))
    _, _, guardrails = _plan_inputs()
    move = PlannedTransfer(index=0, rail="r", kind="withdrawal", from_venue="binance", to_venue="okx", asset="USDT",
                           network="TRC20", amount=10_000_000.0, fee=1.0, credited=9_999_999.0)
    assert {b.rule for b in check_guardrails([move], guardrails)} == {RULE_PER_TRANSFER, RULE_DAILY}


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


@pytest.mark.parametrize(
    "config, key",
    [
        ({"verify_tolerance": 20.0}, "verify_tolerance"),  # read by verify_balances, after the pivot
        ({"max_transfer": {"USDT": NAN}}, r"max_transfer\[USDT\]"),  # a domain Guardrails check
        ({"tolerance": NAN}, "tolerance"),  # a domain TargetPolicy check
        ({"targets": [{"venue": "okxx", "asset": "USDT", "share": 0.3}]}, "okxx"),
    ],
)
def test_the_plan_step_refuses_a_bad_run_config_as_a_business_error_before_reading_anything(config, key):
    """In the saga, the check is the first thing `plan_rebalance` does, and a bad value is a `BusinessError`
    (the saga's op turns it into a Failure that is not retried) naming the key: no journal read, no balance read."""
    from arb_orchestration.defs.rebalance import AUTO_REBALANCE_SAGA
    from arb_orchestration.defs.rebalance.steps import PLAN, InvalidRebalanceConfig
    from arb_orchestration.resources.errors import BusinessError
    from arb_orchestration.saga import InMemorySagaLog, StepRuntime, execute_step

    class _Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"{name} was used before the config was checked")

    class _Exchange(_Untouchable):
        def venue_names(self):
            return ["binance", "okx"]

    resources = {"exchange": _Exchange(), "wise": _Untouchable(), "rebalance_journal": _Untouchable(),
                 "smtp": _Untouchable()}
    runtime = StepRuntime("saga-bad-config", InMemorySagaLog(), resources, config=RebalanceConfig(**config))
    with pytest.raises(InvalidRebalanceConfig, match=key) as caught:
        execute_step(AUTO_REBALANCE_SAGA.definition, PLAN, runtime)
    assert isinstance(caught.value, BusinessError)
