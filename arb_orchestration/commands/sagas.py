"""`arb-orchestration sagas`: the sagas that need a person, their logs, and recording a fix made by hand.

  list [--all] [--json]             the sagas that need a person: escalated, compensation failed, or a log
                                    too new for this code (--all: also the recent others, at most --limit)
  show SAGA_ID [--json]             the saga's records, oldest first (a run id of the saga also works)
  resolve SAGA_ID --reason TEXT     record that an operator settled an escalated or compensation-failed saga
                                    by hand: the recovery sensors and the failure hook leave it alone from
                                    then on (no compensation, no relaunch, no mail) [--by NAME, default: the
                                    login name] [--force: also a saga in another state, see below]

`--force` records the resolution of a saga that is not escalated/compensation-failed (completed, rolled
back, failed and awaiting recovery, or with a run still in progress). It stops recovery only: it does not
stop a run in progress (cancel that run first, in the UI) and undoes nothing.

The saga log lives in the event logs of the saga's runs in the Dagster instance at `DAGSTER_HOME` (SQLite
locally, PostgreSQL in production); see docs/sagas-cli.md.

Exit codes: 0 done (also: resolving a saga already resolved, nothing written); 1 the instance could not be
opened, read or written; 2 bad input (DAGSTER_HOME not set, an unknown SAGA_ID, --reason missing or empty,
a saga that may not be resolved without --force, a log too new for this code: nothing changed); 3 another
actor (a recovery sensor, the failure hook, a step) holds the saga's claim right now: nothing changed, try
again in a minute.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from dataclasses import asdict
from typing import Any, Mapping

from arb_orchestration.commands import _flags
from arb_orchestration.saga.attention import (  # the reading part, shared with the UI's asset
    COMPENSATION_FAILED,
    DEFAULT_SCAN_RUNS,
    ESCALATED,
    NEEDS_PERSON,
    TOO_NEW,
    WHY_WIDTH,
    Redactor,
    SagaReader,
    SagaSummary,
    _one_line,
    _utc,
    _utc_precise,
    needing_attention,
    summarize,
)

PROG = "arb-orchestration sagas"

# States `resolve` accepts without --force.
RESOLVABLE = (ESCALATED, COMPENSATION_FAILED)

DEFAULT_LIMIT = 50  # sagas `list --all` shows besides those that need a person
CLAIM_TTL_SECONDS = 60.0  # `resolve` holds the saga's claim for a few statements only
CLAIM_WAIT_SECONDS = 5.0


# ---- the subcommands -------------------------------------------------------------------------------------------


def _as_json(summary: SagaSummary, redactor: Redactor) -> dict[str, Any]:
    raw = asdict(summary)
    raw["why"] = redactor.redact(summary.why)
    raw["since"] = None if summary.since is None else _utc_precise(summary.since)
    raw["since_epoch"] = summary.since
    raw["needs_person"] = summary.needs_person
    for run in raw["runs"]:
        run["created"] = _utc_precise(run["created"])
    return raw


def _list(reader: SagaReader, *, show_all: bool, as_json: bool, limit: int, scan_runs: int,
          redactor: Redactor) -> int:
    attention = needing_attention(reader, scan_runs=scan_runs)
    failed_truncated = attention.truncated
    summaries: dict[str, SagaSummary] = {s.saga_id: s for s in attention.sagas}
    recent_truncated = False
    if show_all:
        recent, recent_truncated = reader.recent_saga_ids(failed_only=False, scan_runs=scan_runs)
        others = [(saga_id, tag) for saga_id, tag in recent if saga_id not in summaries]
        if len(others) > limit:
            others, recent_truncated = others[:limit], True
        for summary in reader.summaries(others):
            summaries[summary.saga_id] = summary
    ordered = sorted(summaries.values(), key=lambda s: (not s.needs_person, -(s.since or 0.0)))
    notes = []
    if failed_truncated:
        notes.append(f"only the newest {scan_runs} failed/canceled saga runs were read (--scan-runs): older "
                     "sagas that need a person may be missing")
    if show_all and recent_truncated:
        notes.append(f"--all shows at most {limit} sagas besides those that need a person (--limit)")
    if as_json:
        print(json.dumps({"sagas": [_as_json(s, redactor) for s in ordered], "notes": notes}, indent=2))
        return 0
    if not ordered:
        print("no sagas" if show_all else "no saga needs a person")
    else:
        header = ("saga", "name", "state", "since", "run", "why")
        rows = [(s.saga_id, s.saga_name, s.state, _utc(s.since), s.run_id or "-",
                 _one_line(redactor.redact(s.why))) for s in ordered]
        widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header) - 1)]
        for row in [header, *rows]:
            print("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]).rstrip())
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _details(data: Mapping[str, Any]) -> str:
    parts = []
    for key, value in data.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=repr)
        parts.append(f"{key}={text}")
    return ", ".join(parts)


def _show(reader: SagaReader, saga_or_run_id: str, *, as_json: bool, redactor: Redactor) -> int:
    saga_id = reader.resolve_id(saga_or_run_id)
    records = reader.records(saga_id)
    runs = reader.runs(saga_id)
    if not records and not runs:
        print(f"{PROG} show: no saga {saga_or_run_id!r} in this instance (neither a saga id nor a run id of a "
              "saga); `sagas list --all` shows the recent ones", file=sys.stderr)
        return 2
    summary = summarize(saga_id, records, runs)
    if as_json:
        out = _as_json(summary, redactor)
        out["records"] = [json.loads(redactor.redact(json.dumps(r.to_json()))) for r in records]
        print(json.dumps(out, indent=2))
        return 0
    print(f"saga {summary.saga_name} [{saga_id}]")
    print(f"state: {summary.state} since {_utc(summary.since)}: {redactor.redact(summary.why)}")
    print("runs (oldest first):")
    for run in runs:
        print(f"  {run['run_id']}  {run['status']}  created {_utc(run['created'])}")
    print(f"records (oldest first, {len(records)}):")
    for r in records:
        step = f"step {r.step}" if r.step else "-"
        flag = "" if r.known else (" [unknown kind, ignorable]" if r.ignorable else " [unknown kind]")
        print(f"  {_utc_precise(r.timestamp)}  {r.kind_name:<22} {step:<24} run {r.run_id or '-'}{flag}")
        if r.data:
            print(f"      {redactor.redact(_details(r.data))}")
    return 0


def _resolve(reader: SagaReader, saga_or_run_id: str, *, reason: str, by: str, force: bool,
             redactor: Redactor) -> int:
    from arb_orchestration.saga.claim import InstanceSagaClaims
    from arb_orchestration.saga.log import InstanceSagaLog

    saga_id = reader.resolve_id(saga_or_run_id)
    runs = reader.runs(saga_id)
    records = reader.records(saga_id)
    if not records and not runs:
        print(f"{PROG} resolve: no saga {saga_or_run_id!r} in this instance; nothing changed", file=sys.stderr)
        return 2
    summary = summarize(saga_id, records, runs)
    if summary.state == "resolved":
        print(f"saga {summary.saga_name} [{saga_id}] is already resolved ({redactor.redact(summary.why)}, at "
              f"{_utc(summary.since)}); nothing written")
        return 0
    if summary.state == TOO_NEW:
        print(f"{PROG} resolve: saga [{saga_id}]: {redactor.redact(summary.why)}; this version cannot tell what "
              "those records mean, so it does not resolve it (not even with --force); nothing changed",
              file=sys.stderr)
        return 2
    if not force and (summary.state not in RESOLVABLE or summary.running):
        what = (f"it has a run in progress ({', '.join(r['run_id'] for r in runs if r['in_progress'])}): resolving "
                "it now would race that run and the recovery after it" if summary.running
                else f"it is {summary.state}, not escalated or compensation-failed: recovery is not waiting for a "
                     "person")
        print(f"{PROG} resolve: saga {summary.saga_name} [{saga_id}] not resolved: {what}. --force records the "
              "resolution anyway (recovery then leaves the saga alone for good; a run in progress is NOT stopped: "
              "cancel it first); nothing changed", file=sys.stderr)
        return 2

    claims = InstanceSagaClaims(reader.instance)
    result = claims.acquire(saga_id, f"operator {by} (arb-orchestration sagas resolve)",
                            ttl_seconds=CLAIM_TTL_SECONDS, wait_seconds=CLAIM_WAIT_SECONDS)
    if not result.acquired:
        holder = result.holder.describe() if result.holder is not None else "another actor"
        print(f"{PROG} resolve: saga [{saga_id}] is being worked on right now by {holder}; nothing changed: try "
              "again in a minute (then `sagas show` what it did)", file=sys.stderr)
        return 3
    assert result.lease is not None
    try:
        # Under the claim: what the state was may have changed (another operator, a compensation that ended).
        records = reader.records(saga_id)
        fresh = summarize(saga_id, records, reader.runs(saga_id))
        if fresh.state == "resolved":
            print(f"saga {fresh.saga_name} [{saga_id}] is already resolved ({redactor.redact(fresh.why)}); "
                  "nothing written")
            return 0
        if fresh.state != summary.state and not force:
            print(f"{PROG} resolve: saga [{saga_id}] changed while resolving ({summary.state} -> {fresh.state}); "
                  "nothing changed: look at it again (`sagas show`)", file=sys.stderr)
            return 2
        target_id = fresh.run_id or (runs[-1]["run_id"] if runs else None)
        target = reader.instance.get_run_by_id(target_id) if target_id else None
        if target is None:
            print(f"{PROG} resolve: saga [{saga_id}] has no run left to record the resolution in (deleted by run "
                  "retention?); nothing changed", file=sys.stderr)
            return 2
        InstanceSagaLog(reader.instance, target).record_operator_resolved(
            saga_id, fresh.saga_name, by=by, reason=reason, forced=force, state_before=fresh.state)
    finally:
        claims.release(result.lease)
    forced = f" (forced; it was {fresh.state})" if force and fresh.state not in RESOLVABLE else ""
    print(f"resolved saga {fresh.saga_name} [{saga_id}] by hand{forced}: by {by}, reason: {redactor.redact(reason)}. "
          f"Recorded in run {target.run_id}; the recovery sensors and the failure hook leave this saga alone from "
          "now on.")
    if fresh.running:
        print(f"warning: run(s) still in progress were not stopped: "
              f"{', '.join(r['run_id'] for r in fresh.runs if r['in_progress'])}", file=sys.stderr)
    return 0


_SAGA_ID = _flags.required_text()


def main(argv: list[str]) -> int:
    parser = _flags.CommandParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True, metavar="{list,show,resolve}",
                                parser_class=_flags.CommandParser)
    listing = sub.add_parser("list", help="the sagas that need a person")
    listing.add_argument("--all", action="store_true", help="also the recent sagas that need nobody")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table (whole texts)")
    listing.add_argument("--limit", type=_flags.positive_int, default=DEFAULT_LIMIT,
                         help=f"--all: at most this many other sagas (default {DEFAULT_LIMIT})")
    listing.add_argument("--scan-runs", type=_flags.positive_int, default=DEFAULT_SCAN_RUNS,
                         help=f"read at most this many of the newest saga runs (default {DEFAULT_SCAN_RUNS})")
    showing = sub.add_parser("show", help="the saga's records, oldest first")
    showing.add_argument("saga_id", type=_SAGA_ID, metavar="SAGA_ID", help="the saga id (or a run id of the saga)")
    showing.add_argument("--json", action="store_true", help="JSON instead of text")
    resolving = sub.add_parser("resolve", help="record that an operator settled the saga by hand")
    resolving.add_argument("saga_id", type=_SAGA_ID, metavar="SAGA_ID", help="the saga id (or a run id of the saga)")
    resolving.add_argument("--reason", type=_flags.required_text("say what was done by hand (recorded)"), required=True, help="what was done by hand (recorded)")
    resolving.add_argument("--by", default=None, help="who resolves it (recorded; default: the login name)")
    resolving.add_argument("--force", action="store_true",
                           help="also resolve a saga that is not escalated/compensation-failed or has a run in "
                                "progress (stops recovery only; a running run is not stopped)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad flag (2, one line on stderr already)
        return int(exc.code or 0)

    if not os.environ.get("DAGSTER_HOME"):
        print(f"{PROG}: DAGSTER_HOME is not set: the saga log lives in that Dagster instance (the one the "
              "recovery sensors' daemon uses)", file=sys.stderr)
        return 2

    from dagster import DagsterInstance

    redactor = Redactor()
    try:
        instance = DagsterInstance.get()
    except Exception as exc:  # noqa: BLE001 - an unreadable instance is the outside world failing
        print(redactor.redact(f"{PROG}: could not open the Dagster instance at DAGSTER_HOME: "
                              f"{type(exc).__name__}: {exc}"), file=sys.stderr)
        return 1
    with instance:
        reader = SagaReader(instance)
        try:
            if args.action == "list":
                return _list(reader, show_all=args.all, as_json=args.json, limit=args.limit,
                             scan_runs=args.scan_runs, redactor=redactor)
            if args.action == "show":
                return _show(reader, args.saga_id, as_json=args.json, redactor=redactor)
            return _resolve(reader, args.saga_id, reason=args.reason, by=args.by or getpass.getuser(),
                            force=args.force, redactor=redactor)
        except BrokenPipeError:
            raise  # the reader went away (`| head`), not the instance: cli.main exits 141 quietly
        except Exception as exc:  # noqa: BLE001 - the instance's database failed
            print(redactor.redact(f"{PROG}: the Dagster instance failed: {type(exc).__name__}: {exc}"),
                  file=sys.stderr)
            return 1
