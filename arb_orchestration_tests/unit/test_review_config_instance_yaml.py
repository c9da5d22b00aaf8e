"""Config review: the warm-worker run launcher's instance-yaml knobs (arb_orchestration/sim/dagster_local.yaml,
the chart's instance config). A negative, zero or NaN timeout was accepted; every fast-path launch then
raised inside the launcher, which falls back to the stock launcher: the emergency stop-loss lost its fast
path without a word at load. Now the launcher refuses it when the instance loads, naming the key."""

import math

import pytest
from dagster._config import process_config

from arb_orchestration.launcher import WarmWorkerRunLauncher


@pytest.mark.parametrize(
    "key, value",
    [(key, value) for key in ("connect_timeout_seconds", "request_timeout_seconds")
     for value in (-1.0, 0.0, math.nan, math.inf)]
    + [("unreachable_grace_seconds", value) for value in (-1.0, math.nan, math.inf)],  # 0: no grace, allowed
)
def test_a_bad_timeout_fails_the_instance_load_naming_the_key(key, value):
    processed = process_config(WarmWorkerRunLauncher.config_type(), {key: value})
    assert processed.success  # the schema only knows "a float"
    with pytest.raises(ValueError, match=key):
        WarmWorkerRunLauncher.from_config_value(None, processed.value)


def test_the_shipped_values_load():
    processed = process_config(WarmWorkerRunLauncher.config_type(),
                               {"connect_timeout_seconds": 0.5, "request_timeout_seconds": 5.0})
    launcher = WarmWorkerRunLauncher.from_config_value(None, processed.value)
    assert (launcher.connect_timeout, launcher.request_timeout) == (0.5, 5.0)
