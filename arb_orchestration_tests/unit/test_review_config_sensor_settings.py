"""Config review: the event sensors' environment knobs (EventSensorSettings.from_env) refuse values that would
silently switch a safety check off or make every event fail, and every refusal names the variable.

- ARB_CRITICAL_EVENT_MAX_AGE_SECONDS=nan/inf disabled the staleness check of signed critical events
  (`age > nan` is never true: a captured stop-loss event stays replayable for ever); 0 or a negative
  value refused every critical event (the stop-loss path never fires). Both loaded fine.
- ARB_EVENT_MAX_AGE_SECONDS=nan/negative: every non-critical event acted on / none ever acted on.
- ARB_FUNDING_DEVIATION_BPS=nan failed the load with "threshold_bps must be ..." (no variable name), and a
  fraction (0.002 for 20 bps) was taken as 0.002 bps: a hedge on every tick's rounding noise.
"""

import pytest

from arb_orchestration import settings
from arb_orchestration.defs.events.tuning import EventSensorSettings


@pytest.mark.parametrize(
    "name, value",
    [
        ("ARB_CRITICAL_EVENT_MAX_AGE_SECONDS", "nan"),
        ("ARB_CRITICAL_EVENT_MAX_AGE_SECONDS", "inf"),
        ("ARB_CRITICAL_EVENT_MAX_AGE_SECONDS", "0"),
        ("ARB_CRITICAL_EVENT_MAX_AGE_SECONDS", "-60"),
        ("ARB_EVENT_MAX_AGE_SECONDS", "nan"),
        ("ARB_EVENT_MAX_AGE_SECONDS", "-1"),
        ("ARB_EVENT_MAX_AGE_SECONDS", "0"),
        ("ARB_FUNDING_DEVIATION_BPS", "nan"),
        ("ARB_FUNDING_DEVIATION_BPS", "inf"),
        ("ARB_FUNDING_DEVIATION_BPS", "-20"),
        ("ARB_FUNDING_DEVIATION_BPS", "0.002"),
        ("ARB_SENSOR_LONG_POLL_SECONDS", "nan"),
        ("ARB_SENSOR_MAX_MESSAGES", "0"),
    ],
)
def test_bad_sensor_knob_fails_the_load_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(settings.SettingError) as caught:
        EventSensorSettings.from_env("local")
    assert name in str(caught.value)
    assert value in str(caught.value)


def test_the_defaults_and_sane_values_still_load(monkeypatch):
    for name in settings.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    loaded = EventSensorSettings.from_env("local")
    assert loaded == EventSensorSettings()  # the table's defaults are the dataclass's defaults
    monkeypatch.setenv("ARB_FUNDING_DEVIATION_BPS", "35")
    monkeypatch.setenv("ARB_CRITICAL_EVENT_MAX_AGE_SECONDS", "120")
    monkeypatch.setenv("ARB_EVENT_MAX_AGE_SECONDS", "300")
    loaded = EventSensorSettings.from_env("local")
    assert (loaded.funding_deviation_bps, loaded.critical_window.max_age_seconds, loaded.event_max_age_seconds) == (
        35.0, 120.0, 300.0)


def test_zero_deviation_threshold_still_means_every_move(monkeypatch):
    """0 bps is a deliberate setting (hedge on any move), not a fraction mistake."""
    monkeypatch.setenv("ARB_FUNDING_DEVIATION_BPS", "0")
    assert EventSensorSettings.from_env("local").funding_deviation_bps == 0.0


def test_the_settings_dataclass_itself_refuses_a_non_finite_window():
    with pytest.raises(ValueError, match="event_max_age_seconds"):
        EventSensorSettings(event_max_age_seconds=float("nan"))
