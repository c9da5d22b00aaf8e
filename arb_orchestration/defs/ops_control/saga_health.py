"""`sagas_needing_attention`: the sagas that wait for a person, in the Dagster UI (docs/sagas-cli.md, "In the UI").

The asset reads the durable saga log exactly as `arb-orchestration sagas list` does (`saga.attention`) and
records the count and a table of each saga that needs a person (id, name, state, since, why, run), plus what
to do about it. Its check `no_saga_waits_for_a_person` FAILS (ERROR) while any saga is escalated, has a failed
compensation or a log too new for this code, and is not resolved; `sagas resolve` makes it pass again.

`sagas_needing_attention_sensor` (every 5 min, RUNNING by default) keeps both current without a person and
without a run: it reads the saga log on each tick and records a runless materialization and check evaluation
when the list changed (and at least every `heartbeat_seconds`, so "last materialized" stays recent). The
recovery sweep is left untouched: it stays about recovering sagas, this sensor only reports.

Everything shown passes through the CLI's `Redactor` (secret env values and URL credentials blanked): saga
records hold error texts from venues and HTTP clients.
"""

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    DefaultSensorStatus,
    MaterializeResult,
    MetadataValue,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    asset_check,
    sensor,
)

from arb_orchestration.saga.attention import (
    DEFAULT_SCAN_RUNS,
    Redactor,
    SagaReader,
    _one_line,
    _utc,
    needing_attention,
)

GROUP_NAME = "ops_control"
SAGAS_NEEDING_ATTENTION_KEY = AssetKey("sagas_needing_attention")
NO_SAGA_WAITS_CHECK = "no_saga_waits_for_a_person"
SENSOR_NAME = "sagas_needing_attention_sensor"
SENSOR_INTERVAL_SECONDS = 300  # like `sagas list`: ~6 s per 100 failed sagas read (docs/sagas-cli.md)
HEARTBEAT_SECONDS = 3600.0
WHY_WIDTH = 160  # characters of "why" in the UI table (`sagas show` has it whole)

WHAT_TO_DO = (
    "For each saga listed: `arb-orchestration sagas show <saga id>` (its records, oldest first), fix what it "
    "says by hand (on the venue / in Wise), then `arb-orchestration sagas resolve <saga id> --reason \"what was "
    "done\"` (recorded; recovery then leaves the saga alone). A log too new for this code needs an upgrade of "
    "the code location instead. Run with DAGSTER_HOME set to this deployment's instance; see docs/sagas-cli.md."
)


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


@dataclass(frozen=True)
class AttentionReport:
    """What the asset records and what its check decides, from one read of the saga log."""

    count: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False
    scan_runs: int = DEFAULT_SCAN_RUNS

    @property
    def passed(self) -> bool:
        return self.count == 0

    @property
    def digest(self) -> str:
        """Changes whenever the list shown changes (a saga added, resolved, re-failed, its reason)."""
        raw = json.dumps({"rows": self.rows, "truncated": self.truncated}, sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def description(self) -> str:
        if not self.count:
            return "no saga needs a person"
        states: dict[str, int] = {}
        for row in self.rows:
            states[row["state"]] = states.get(row["state"], 0) + 1
        parts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        return (f"{self.count} saga(s) need a person ({parts}): `arb-orchestration sagas show` / "
                "`sagas resolve` them")

    def markdown(self) -> str:
        if not self.rows:
            return "No saga needs a person."
        lines = ["| saga | name | state | since (UTC) | run | why |", "|---|---|---|---|---|---|"]
        for row in self.rows:
            run = f"[{row['run_id']}](/runs/{row['run_id']})" if row["run_id"] else "-"
            lines.append("| " + " | ".join([f"`{row['saga_id']}`", _md_cell(row["saga_name"]), row["state"],
                                             row["since"], run, _md_cell(row["why"])]) + " |")
        lines += ["", "**What to do:** " + WHAT_TO_DO]
        return "\n".join(lines)

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "count": MetadataValue.int(self.count),
            "sagas": MetadataValue.md(self.markdown()),
            "saga_ids": MetadataValue.json([row["saga_id"] for row in self.rows]),
            "what_to_do": MetadataValue.text(WHAT_TO_DO),
            "scan_truncated": MetadataValue.bool(self.truncated),
        }
        if self.truncated:
            meta["note"] = MetadataValue.text(
                f"only the newest {self.scan_runs} failed/canceled saga runs were read: older sagas that need a "
                "person may be missing (`arb-orchestration sagas list --scan-runs N`)")
        return meta

    def check_metadata(self) -> dict[str, Any]:
        return {"count": MetadataValue.int(self.count),
                "saga_ids": MetadataValue.json([row["saga_id"] for row in self.rows]),
                "scan_truncated": MetadataValue.bool(self.truncated)}


def attention_report(instance: DagsterInstance, *, scan_runs: int = DEFAULT_SCAN_RUNS,
                     redactor: Redactor | None = None) -> AttentionReport:
    """Read the saga log (as `sagas list` does) into what the UI shows; secrets blanked."""
    redactor = redactor or Redactor()
    attention = needing_attention(SagaReader(instance), scan_runs=scan_runs)
    rows = [
        {
            "saga_id": s.saga_id,
            "saga_name": redactor.redact(s.saga_name),
            "state": s.state,
            "since": _utc(s.since),
            "run_id": s.run_id,
            "why": _one_line(redactor.redact(s.why), WHY_WIDTH),
        }
        for s in attention.sagas
    ]
    return AttentionReport(len(rows), rows, attention.truncated, attention.scan_runs)


def check_result(report: AttentionReport) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=SAGAS_NEEDING_ATTENTION_KEY,
        check_name=NO_SAGA_WAITS_CHECK,
        passed=report.passed,
        severity=AssetCheckSeverity.ERROR,
        description=report.description(),
        metadata=report.check_metadata(),
    )


@asset(
    key=SAGAS_NEEDING_ATTENTION_KEY,
    group_name=GROUP_NAME,
    description="Sagas that wait for a person (escalated, compensation failed, or a log too new for this code; "
    "not resolved), read from the durable saga log like `arb-orchestration sagas list`. Kept current by "
    f"{SENSOR_NAME}.",
    kinds={"python"},
)
def sagas_needing_attention(context: AssetExecutionContext) -> MaterializeResult:
    report = attention_report(context.instance)
    context.log.info(report.description())
    return MaterializeResult(metadata=report.metadata())


@asset_check(
    asset=SAGAS_NEEDING_ATTENTION_KEY,
    name=NO_SAGA_WAITS_CHECK,
    description="FAILS (ERROR) while any saga is escalated, has a failed compensation or a log too new for this "
    "code, and is not resolved (`arb-orchestration sagas resolve`).",
)
def no_saga_waits_for_a_person(context: AssetCheckExecutionContext) -> AssetCheckResult:
    # Reads the log itself (not the asset's value): the check can be executed alone from the UI.
    return check_result(attention_report(context.instance))


def _parse_cursor(raw: str | None) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw else {}
        return data if isinstance(data, dict) else {}
    except ValueError:  # the cursor only saves records: a bad one costs one extra record
        return {}


def evaluate_attention_sensor(instance: DagsterInstance, cursor: str | None, *, now: float | None = None,
                              heartbeat_seconds: float = HEARTBEAT_SECONDS) -> SensorResult | SkipReason:
    """One tick: a runless materialization + check evaluation when the list changed or the heartbeat is due."""
    now = time.time() if now is None else now
    state = _parse_cursor(cursor)
    report = attention_report(instance)
    last = float(state.get("recorded_at") or 0.0)
    if state.get("digest") == report.digest and now - last < heartbeat_seconds:
        return SkipReason(f"unchanged: {report.description()}")
    return SensorResult(
        asset_events=[
            AssetMaterialization(SAGAS_NEEDING_ATTENTION_KEY, description=report.description(),
                                 metadata=report.metadata()),
            AssetCheckEvaluation(asset_key=SAGAS_NEEDING_ATTENTION_KEY, check_name=NO_SAGA_WAITS_CHECK,
                                 passed=report.passed, severity=AssetCheckSeverity.ERROR,
                                 description=report.description(), metadata=report.check_metadata()),
        ],
        cursor=json.dumps({"digest": report.digest, "recorded_at": now}),
    )


@sensor(
    name=SENSOR_NAME,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    asset_selection=[SAGAS_NEEDING_ATTENTION_KEY],
    description="Re-reads the saga log and records sagas_needing_attention and its check (no run) when the list "
    f"of sagas that need a person changed, and at least every {HEARTBEAT_SECONDS / 3600:g} h.",
)
def sagas_needing_attention_sensor(context: SensorEvaluationContext):
    return evaluate_attention_sensor(context.instance, context.cursor)
