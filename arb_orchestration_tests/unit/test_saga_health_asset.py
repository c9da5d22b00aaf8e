"""`sagas_needing_attention`, its check and its sensor on a real SQLite instance (docs/sagas-cli.md, "In the UI").

The saga log is built by the real code, as in test_sagas_cli.py (whose helpers this imports): the recovery
sweep fails compensations until one saga is escalated and another compensation-failed; a third is resolved
with `arb-orchestration sagas resolve`; a fourth completed. Materializing the asset lists exactly the two
that need a person (secrets blanked) and the check FAILS with ERROR; once both are resolved it passes. The
sensor records the same runlessly, only when the list changed.
"""

import json

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetMaterialization,
    DagsterInstance,
    DagsterRunStatus,
    SensorResult,
    SkipReason,
    build_sensor_context,
    materialize,
)

from arb_orchestration.defs.ops_control.saga_health import (
    NO_SAGA_WAITS_CHECK,
    SAGAS_NEEDING_ATTENTION_KEY,
    evaluate_attention_sensor,
    no_saga_waits_for_a_person,
    sagas_needing_attention,
    sagas_needing_attention_sensor,
)
from arb_orchestration_tests.unit.test_saga_claim import Mailbox
from arb_orchestration_tests.unit.test_sagas_cli import DB_PASSWORD, SAGA, TOKEN, Venue, cli, make_saga, sweep
# A SQLite instance at DAGSTER_HOME with WISE_API_TOKEN set (the redactor blanks it: the venue's error carries it).
from arb_orchestration_tests.unit.test_sagas_cli import sqlite_home  # noqa: F401 - a fixture


def _four_sagas(instance: DagsterInstance, capsys) -> dict[str, str]:
    """One escalated, one compensation-failed, one resolved (by the CLI), one completed: their saga ids."""
    broken, mail = Venue(fixed=False), Mailbox()
    failed = dict(steps_done=("reserve",), started="transfer", status=DagsterRunStatus.FAILURE)
    resolved = make_saga(instance, **failed)
    assert sweep(instance, broken, mail)[0].startswith(f"{resolved}: compensation_failed")
    code, _, err = cli(capsys, "resolve", resolved, "--reason", "cancelled on the venue by hand", "--by", "alice")
    assert code == 0, err
    escalated = make_saga(instance, **failed)
    sweep(instance, broken, mail)
    comp_failed = make_saga(instance, **failed)
    lines = sweep(instance, broken, mail)
    assert any(line.startswith(f"{escalated}: escalated") for line in lines), lines
    assert any(line.startswith(f"{comp_failed}: compensation_failed") for line in lines), lines
    assert not any(resolved in line for line in lines), lines  # the sweep leaves the resolved one alone
    completed = make_saga(instance, steps_done=("reserve", "transfer", "settle"), started=None,
                          status=DagsterRunStatus.SUCCESS)
    return {"escalated": escalated, "compensation_failed": comp_failed, "resolved": resolved,
            "completed": completed}


def _materialize(instance: DagsterInstance):
    result = materialize([sagas_needing_attention, no_saga_waits_for_a_person], instance=instance)
    assert result.success  # a failing check (not blocking) does not fail the run: the UI shows it red
    [materialization] = result.asset_materializations_for_node("sagas_needing_attention")
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == NO_SAGA_WAITS_CHECK and evaluation.asset_key == SAGAS_NEEDING_ATTENTION_KEY
    return materialization.metadata, evaluation


def test_the_asset_lists_exactly_the_sagas_that_need_a_person_and_the_check_fails_until_resolved(
        sqlite_home, capsys):
    instance = sqlite_home
    assert "sqlite" in type(instance.event_log_storage).__module__
    ids = _four_sagas(instance, capsys)

    metadata, evaluation = _materialize(instance)
    assert metadata["count"].value == 2
    assert sorted(metadata["saga_ids"].value) == sorted([ids["escalated"], ids["compensation_failed"]])
    table = metadata["sagas"].value
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) == 2
    by_id = {row.split("`")[1]: [cell.strip() for cell in row.split(" | ")] for row in rows}
    assert by_id[ids["escalated"]][1:3] == [SAGA.name, "escalated"]
    assert by_id[ids["compensation_failed"]][1:3] == [SAGA.name, "compensation_failed"]
    # The run where the deciding record is, as a link into the UI (each saga here has one run: its id).
    assert f"[{ids['escalated']}](/runs/{ids['escalated']})" in table
    assert "compensation of transfer failed 2 times" in by_id[ids["escalated"]][5]  # why
    assert ids["resolved"] not in table and ids["completed"] not in table
    assert "arb-orchestration sagas resolve" in table and "arb-orchestration sagas show" in table
    assert metadata["scan_truncated"].value is False
    everything = repr({k: v.value for k, v in metadata.items()}) + repr(evaluation)
    assert TOKEN not in everything and DB_PASSWORD not in everything
    assert "Bearer ***" in table  # the error text is there, redacted

    assert evaluation.passed is False
    assert evaluation.severity == AssetCheckSeverity.ERROR
    assert evaluation.metadata["count"].value == 2
    assert "1 compensation_failed, 1 escalated" in (evaluation.description or "")

    for saga_id in (ids["escalated"], ids["compensation_failed"]):
        code, _, err = cli(capsys, "resolve", saga_id, "--reason", "settled by hand", "--by", "bob")
        assert code == 0, err
    metadata, evaluation = _materialize(instance)
    assert metadata["count"].value == 0 and metadata["saga_ids"].value == []
    assert evaluation.passed is True and evaluation.metadata["count"].value == 0


def test_the_sensor_records_the_asset_and_check_only_when_the_list_changed(sqlite_home, capsys):
    instance = sqlite_home
    first = evaluate_attention_sensor(instance, None, now=1000.0)
    assert isinstance(first, SensorResult)  # nothing recorded yet: the empty list is recorded once
    assert [e.passed for e in first.asset_events if isinstance(e, AssetCheckEvaluation)] == [True]
    assert isinstance(evaluate_attention_sensor(instance, first.cursor, now=1010.0), SkipReason)

    ids = _four_sagas(instance, capsys)
    # Through the real sensor definition, as the daemon calls it.
    changed = sagas_needing_attention_sensor(build_sensor_context(instance=instance, cursor=first.cursor))
    assert isinstance(changed, SensorResult) and not changed.run_requests
    [materialization] = [e for e in changed.asset_events if isinstance(e, AssetMaterialization)]
    [check] = [e for e in changed.asset_events if isinstance(e, AssetCheckEvaluation)]
    assert materialization.asset_key == SAGAS_NEEDING_ATTENTION_KEY
    assert sorted(materialization.metadata["saga_ids"].value) == sorted([ids["escalated"],
                                                                         ids["compensation_failed"]])
    assert check.passed is False and check.severity == AssetCheckSeverity.ERROR
    assert check.check_name == NO_SAGA_WAITS_CHECK and check.metadata["count"].value == 2

    # Unchanged: skipped, until the heartbeat re-records it.
    recorded_at = json.loads(changed.cursor)["recorded_at"]
    skip = evaluate_attention_sensor(instance, changed.cursor, now=recorded_at + 60)
    assert isinstance(skip, SkipReason) and "2 saga(s) need a person" in (skip.skip_message or "")
    assert isinstance(evaluate_attention_sensor(instance, changed.cursor, now=recorded_at + 3601), SensorResult)

    code, _, err = cli(capsys, "resolve", ids["escalated"], "--reason", "settled by hand", "--by", "bob")
    assert code == 0, err
    after = evaluate_attention_sensor(instance, changed.cursor, now=recorded_at + 60)
    assert isinstance(after, SensorResult)
    [check] = [e for e in after.asset_events if isinstance(e, AssetCheckEvaluation)]
    assert check.passed is False and check.metadata["count"].value == 1  # the compensation-failed one is left


def test_the_sensor_runs_by_default_in_the_code_location():
    from dagster import DefaultSensorStatus

    from arb_orchestration.definitions import defs

    sensor = defs.get_repository_def().get_sensor_def(sagas_needing_attention_sensor.name)
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 300
