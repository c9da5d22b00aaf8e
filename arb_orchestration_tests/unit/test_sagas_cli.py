"""`arb-orchestration sagas` on a real SQLite instance at a temporary DAGSTER_HOME (docs/sagas-cli.md).

Sagas are brought into their states by the real code: the recovery sweep (`sweep_failed_sagas`) fails a
compensation once (compensation_failed) or up to `max_compensation_attempts` (escalated, with its mail);
the CLI's `main(argv)` then lists, shows and resolves them (not while another actor holds the saga's claim),
and the same sweep afterwards leaves the resolved sagas alone (no compensation, no mail) while it still
compensates an unresolved one in the same tick.
A completed saga and one with a run in progress are refused without --force. Secrets in error texts never
reach the output. The scenario is shared with integration/test_sagas_cli_postgres.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from arb_orchestration.commands import sagas as sagas_cmd
from arb_orchestration.saga import (
    SAGA_ID_TAG,
    InstanceSagaClaims,
    InstanceSagaLog,
    RecordKind,
    SagaStep,
    build_saga,
    idempotency_key,
)
from arb_orchestration.saga.sensors import sweep_failed_sagas
from arb_orchestration_tests.unit.test_saga_claim import Mailbox

TOKEN = "tok-3f9a2c71d5e8b604"  # a made-up secret, set as WISE_API_TOKEN for the CLI
DB_PASSWORD = "pw-81c4e2a9"


class Venue:
    """A venue whose undo fails (with a credential in the error, like a careless client) until `fixed`."""

    def __init__(self, fixed: bool) -> None:
        self.fixed = fixed
        self.undone: list[tuple[str, str]] = []

    def undo(self, ctx) -> dict:
        if not self.fixed:
            raise RuntimeError(f"venue refused the cancel (Authorization: Bearer {TOKEN}; "
                               f"postgresql://arb:{DB_PASSWORD}@db/arb)")
        self.undone.append((ctx.saga_id, ctx.step))
        return {"undone": ctx.step}


def _act(ctx, venue):
    return {"step": ctx.step}


def _undo(ctx, venue):
    return venue.undo(ctx)


CLI_SAGA = build_saga(
    "sagas_cli_saga",
    [SagaStep("reserve", _act, _undo), SagaStep("transfer", _act, _undo, pivot=True), SagaStep("settle", _act)],
    retry_policy=None,
    max_compensation_attempts=2,
)
SAGA = CLI_SAGA.definition


def make_saga(instance: DagsterInstance, *, steps_done: tuple[str, ...], started: str | None,
              status: DagsterRunStatus) -> str:
    """A run of the saga that did `steps_done`, started `started`, and ended in `status`; returns the saga id."""
    initial = DagsterRunStatus.SUCCESS if status == DagsterRunStatus.SUCCESS else DagsterRunStatus.STARTED
    # With the job's tags (arb/saga=<name>), as every run Dagster launches of a saga job has them.
    run = instance.create_run_for_job(CLI_SAGA.job, status=initial, tags=dict(CLI_SAGA.job.tags))
    log = InstanceSagaLog(instance, run)
    saga_id = run.tags.get(SAGA_ID_TAG, run.run_id)
    for step in [*steps_done, *([started] if started else [])]:
        key = idempotency_key(SAGA.name, saga_id, step)
        log.record_started(saga_id, SAGA.name, step, key=key)
        if step in steps_done:
            log.record_done(saga_id, SAGA.name, step, key=key, result={"step": step})
    if status == DagsterRunStatus.FAILURE:
        instance.report_run_failed(run, "run worker exited unexpectedly (SIGKILL)")
    return saga_id


def sweep(instance: DagsterInstance, venue: Venue, mail: Mailbox) -> list[str]:
    requests, lines = sweep_failed_sagas(instance, {CLI_SAGA.job.name: SAGA}, {"venue": venue, "smtp": mail},
                                         lookback_seconds=3600, grace_seconds=0,
                                         logger=logging.getLogger("sagas-cli-test"))
    assert requests == []
    return lines


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = sagas_cmd.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def resolutions(instance: DagsterInstance, saga_id: str) -> int:
    return sum(1 for r in InstanceSagaLog(instance).load_records(saga_id) if r.kind is RecordKind.OPERATOR_RESOLVED)


def check_the_sagas_command(instance: DagsterInstance, capsys) -> None:
    broken, mail = Venue(fixed=False), Mailbox()
    escalated = make_saga(instance, steps_done=("reserve",), started="transfer", status=DagsterRunStatus.FAILURE)
    assert sweep(instance, broken, mail) == [f"{escalated}: compensation_failed (saga {SAGA.name} [{escalated}]: "
                                             "compensation of step 'transfer' failed)"]
    comp_failed = make_saga(instance, steps_done=("reserve",), started="transfer", status=DagsterRunStatus.FAILURE)
    lines = sweep(instance, broken, mail)
    assert any(line.startswith(f"{escalated}: escalated") for line in lines), lines
    assert any(line.startswith(f"{comp_failed}: compensation_failed") for line in lines), lines
    assert [m for m in mail.sent if "ESCALATED" in m] == [f"[saga] ESCALATED: {SAGA.name} [{escalated}] needs an operator"]
    plain = make_saga(instance, steps_done=("reserve",), started="transfer", status=DagsterRunStatus.FAILURE)
    completed = make_saga(instance, steps_done=("reserve", "transfer", "settle"), started=None,
                          status=DagsterRunStatus.SUCCESS)
    running = make_saga(instance, steps_done=("reserve",), started="transfer", status=DagsterRunStatus.STARTED)

    # list: exactly the two that need a person, the escalated one first (newer), secrets blanked.
    code, out, err = cli(capsys, "list")
    assert code == 0, err
    assert TOKEN not in out + err and DB_PASSWORD not in out + err
    lines = out.splitlines()
    assert lines[0].split() == ["saga", "name", "state", "since", "run", "why"]
    assert [line.split()[:3] for line in lines[1:]] == [[escalated, SAGA.name, "escalated"],
                                                        [comp_failed, SAGA.name, "compensation_failed"]]
    assert "compensation of transfer failed 2 times" in lines[1]  # the escalation reason
    assert "compensation of transfer failed (1 time(s)" in lines[2]
    assert all(len(line.split("  ")[-1]) <= sagas_cmd.WHY_WIDTH for line in lines[1:])

    code, out, _ = cli(capsys, "list", "--all", "--json")
    assert code == 0
    listed = {s["saga_id"]: s for s in json.loads(out)["sagas"]}
    assert TOKEN not in out and DB_PASSWORD not in out
    assert f"Bearer ***; postgresql://arb:***@db/arb" in listed[escalated]["why"]
    assert {k: listed[k]["state"] for k in (escalated, comp_failed, plain, completed, running)} == {
        escalated: "escalated", comp_failed: "compensation_failed", plain: "failed", completed: "completed",
        running: "running"}
    assert listed[escalated]["needs_person"] and not listed[completed]["needs_person"]
    assert listed[escalated]["run_id"] == escalated  # the escalation was recorded in the saga's (only) run

    # show: records in order, the failures with their (redacted) errors; an unknown id is exit 2.
    code, out, err = cli(capsys, "show", escalated)
    assert code == 0, err
    kinds = [line.split()[1] for line in out.splitlines() if line.startswith("  20")]
    assert kinds == ["step_started", "step_done", "step_started", "compensation_failed", "compensation_failed",
                     "escalated"]
    assert "state: escalated" in out and TOKEN not in out and DB_PASSWORD not in out
    code, out, err = cli(capsys, "show", "no-such-saga")
    assert code == 2 and "no saga 'no-such-saga'" in err and out == ""

    # resolve: refused for a completed saga and for one with a run in progress (nothing written).
    code, _, err = cli(capsys, "resolve", completed, "--reason", "checked")
    assert code == 2 and "completed" in err and "--force" in err and resolutions(instance, completed) == 0
    code, _, err = cli(capsys, "resolve", running, "--reason", "checked")
    assert code == 2 and "run in progress" in err and resolutions(instance, running) == 0
    code, _, err = cli(capsys, "resolve", "no-such-saga", "--reason", "checked")
    assert code == 2 and "no saga" in err

    # resolve the escalated and the compensation-failed one; twice is harmless.
    code, out, err = cli(capsys, "resolve", escalated, "--reason", f"cancelled on the venue by hand, token {TOKEN}",
                         "--by", "alice")
    assert code == 0, err
    assert "resolved saga" in out and "by alice" in out and TOKEN not in out
    code, out, _ = cli(capsys, "resolve", escalated, "--reason", "again", "--by", "bob")
    assert code == 0 and "already resolved" in out and "by alice" in out
    assert resolutions(instance, escalated) == 1
    # While a recovery actor holds the saga's claim, resolve writes nothing and says to try again (exit 3).
    claims = InstanceSagaClaims(instance)
    held = claims.acquire(comp_failed, "sensor test_sweep", ttl_seconds=60)
    assert held.acquired and held.lease is not None
    wait, sagas_cmd.CLAIM_WAIT_SECONDS = sagas_cmd.CLAIM_WAIT_SECONDS, 0.2
    try:
        code, _, err = cli(capsys, "resolve", comp_failed, "--reason", "refunded by hand")
    finally:
        sagas_cmd.CLAIM_WAIT_SECONDS = wait
        claims.release(held.lease)
    assert code == 3 and "sensor test_sweep" in err and "try again" in err and resolutions(instance, comp_failed) == 0
    assert cli(capsys, "resolve", comp_failed, "--reason", "refunded by hand", "--by", "carol")[0] == 0
    state = InstanceSagaLog(instance).load(escalated)
    assert state.resolved and state.resolution["by"] == "alice" and state.resolution["state_before"] == "escalated"

    # The sweep now leaves both resolved sagas alone — even with the venue fixed — and still recovers the plain one.
    fixed, mail_after = Venue(fixed=True), Mailbox()
    lines = sweep(instance, fixed, mail_after)
    assert lines == [f"{plain}: compensated (compensated)"]
    assert sorted(fixed.undone) == sorted([(plain, "transfer"), (plain, "reserve")])
    assert all(escalated not in m and comp_failed not in m for m in mail_after.sent)
    assert sweep(instance, fixed, mail_after) == []  # and the next tick too

    # list: nothing needs a person any more; --all shows them resolved.
    code, out, _ = cli(capsys, "list")
    assert code == 0 and out.strip() == "no saga needs a person"
    code, out, _ = cli(capsys, "list", "--all", "--json")
    listed = {s["saga_id"]: s for s in json.loads(out)["sagas"]}
    assert listed[escalated]["state"] == "resolved" and "by alice" in listed[escalated]["why"]
    assert listed[comp_failed]["state"] == "resolved" and TOKEN not in out

    # --force resolves the completed saga, and says what it was.
    code, out, _ = cli(capsys, "resolve", completed, "--reason", "audit", "--force", "--by", "dan")
    assert code == 0 and "forced; it was completed" in out and resolutions(instance, completed) == 1


@pytest.fixture
def sqlite_home(tmp_path: Path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("WISE_API_TOKEN", TOKEN)
    with DagsterInstance.get() as instance:
        yield instance


def test_list_show_resolve_and_the_sweep_leaves_resolved_sagas_alone_on_sqlite(sqlite_home, capsys):
    assert "sqlite" in type(sqlite_home.event_log_storage).__module__
    check_the_sagas_command(sqlite_home, capsys)


def test_without_dagster_home_it_says_so(monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    code, out, err = cli(capsys, "list")
    assert code == 2 and "DAGSTER_HOME is not set" in err


def test_resolve_needs_a_reason(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    code, _, err = cli(capsys, "resolve", "abc", "--reason", "  ")
    assert code == 2 and "--reason must not be empty" in err
