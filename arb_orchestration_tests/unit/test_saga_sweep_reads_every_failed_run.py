"""The recovery sweep reads every failed saga run of its lookback, not the newest page only.

It read the newest 500 failed/canceled runs per job. Sagas it had already settled still count towards those
500, so a saga whose compensation failed falls out of the sweep once 500 newer runs fail behind it — e.g.
rebalances refused by the `legs_in_flight` guardrail every few seconds while that very saga's legs are in
flight. It was then never retried, nor escalated: a cancellable withdrawal or Wise transfer stayed as it was
and nobody was mailed again. Here the page size is made small so a real SQLite instance shows it cheaply.
"""

from arb_orchestration.saga import sensors as saga_sensors
from arb_orchestration_tests.unit.test_saga_health_asset import sqlite_home  # noqa: F401 - a fixture
from arb_orchestration_tests.unit.test_saga_settled_index import _failed, _sweep, recoveries  # noqa: F401
from arb_orchestration_tests.unit.test_sagas_cli import Venue


def test_a_saga_behind_a_full_page_of_newer_failures_is_still_recovered(sqlite_home, recoveries, monkeypatch):
    monkeypatch.setattr(saga_sensors, "SWEEP_RUNS_PAGE", 3)
    instance, venue = sqlite_home, Venue(fixed=True)
    oldest = _failed(instance)
    newer = [_failed(instance) for _ in range(7)]  # more than two pages of newer failures

    lines = _sweep(instance, venue)

    assert sorted(recoveries) == sorted([oldest, *newer])
    assert (oldest, "reserve") in venue.undone, "the oldest saga's compensation must run"
    assert any(line.startswith(f"{oldest}: compensated") for line in lines), lines


def test_every_page_is_read_once_and_no_more(sqlite_home, monkeypatch):
    monkeypatch.setattr(saga_sensors, "SWEEP_RUNS_PAGE", 2)
    instance = sqlite_home
    sagas = [_failed(instance) for _ in range(4)]  # two full pages, then an empty one
    calls = []
    real = instance.get_run_records

    def counting(*args, **kwargs):
        records = real(*args, **kwargs)
        calls.append((kwargs.get("cursor"), kwargs.get("limit"), len(records)))
        return records

    monkeypatch.setattr(instance, "get_run_records", counting)
    _sweep(instance, Venue(fixed=True))
    assert [(limit, n) for _, limit, n in calls] == [(2, 2), (2, 2), (2, 0)]
    assert calls[0][0] is None and calls[1][0] is not None and len(set(sagas)) == 4
