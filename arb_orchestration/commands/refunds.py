"""`arb-orchestration refunds`: list and close the Wise refund watches of `wise_refund_followup_sensor`.

  list [--all]                      the open watches (--all: closed ones too)
  close TRANSFER_ID --reason TEXT   close a watch by hand (a leg never refunded, or settled with Wise by
                                    other means): its entry records who, when and why, and it leaves the
                                    open list, so the sensor never checks or mails it again
                                    [--by NAME, default: the login name]

The watches live in the key-value table of the Dagster instance at `DAGSTER_HOME` (the one the sensor's
daemon uses); see docs/refund-followup.md.

Exit codes: 0 done; 1 the instance could not be read or written; 2 bad input (DAGSTER_HOME not set, a
missing --reason, an unknown or already closed TRANSFER_ID: nothing is changed).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import datetime, timezone

from arb_orchestration.commands import _flags

PROG = "arb-orchestration refunds"


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mails(watch) -> str:
    sent = [name for name, at in (("notice", watch.notice_mailed_at), ("refunded", watch.refunded_mailed_at),
                                  ("escalation", watch.escalated_at)) if at is not None]
    return ",".join(sent) or "none"


def _state(watch, closure, is_open: bool) -> str:
    if closure is not None:
        return f"closed by {closure.get('by')} at {_when(closure.get('at'))}: {closure.get('reason')}"
    return "open" if is_open else "closed"


def _list(store, show_all: bool) -> int:
    open_ids = set(store.open_ids())
    ids = store.all_ids() if show_all else sorted(open_ids)
    entries = store.entries(ids)
    if not entries:
        print("no refund watches" if show_all else "no open refund watches")
        return 0
    header = ("transfer", "amount", "currency", "saga", "last status", "since", "mails", "state")
    rows = [(str(i), f"{w.amount:g}", w.currency, w.saga_id, w.last_status, _when(w.recorded_at), _mails(w),
             _state(w, closure, i in open_ids)) for i, (w, closure) in sorted(entries.items())]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header) - 1)]
    for row in [header, *rows]:
        print("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]).rstrip())
    return 0


def _transfer_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"is not a Wise transfer id (a whole number): {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive Wise transfer id, got {text}")
    return value


def main(argv: list[str]) -> int:
    parser = _flags.CommandParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True, metavar="{list,close}",
                                parser_class=_flags.CommandParser)
    listing = sub.add_parser("list", help="the open watches")
    listing.add_argument("--all", action="store_true", help="include closed watches (default: only open ones)")
    closing = sub.add_parser("close", help="close a watch by hand")
    closing.add_argument("transfer_id", type=_transfer_id, metavar="TRANSFER_ID", help="the Wise transfer id")
    closing.add_argument("--reason", type=_flags.required_text("say why the watch is closed by hand"), required=True, help="why it is closed by hand (recorded)")
    closing.add_argument("--by", default=None, help="who closes it (recorded; default: the login name)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad flag (2, one line on stderr already)
        return int(exc.code or 0)

    if not os.environ.get("DAGSTER_HOME"):
        print(f"{PROG}: DAGSTER_HOME is not set: the watches live in that Dagster instance "
              "(the one the sensor's daemon uses)", file=sys.stderr)
        return 2

    from dagster import DagsterInstance

    from arb_orchestration.defs.rebalance.refunds import RefundWatchStore

    try:
        instance = DagsterInstance.get()
    except Exception as exc:  # noqa: BLE001 - an unreadable instance is the outside world failing
        print(f"{PROG}: could not open the Dagster instance at DAGSTER_HOME: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    with instance:
        store = RefundWatchStore(instance)
        try:
            if args.action == "list":
                return _list(store, args.all)
            by = args.by or getpass.getuser()
            try:
                watch = store.close_by_hand(args.transfer_id, by=by, reason=args.reason)
            except LookupError as exc:
                print(f"{PROG} close: TRANSFER_ID {args.transfer_id}: {exc.args[0]}; nothing changed", file=sys.stderr)
                return 2
        except BrokenPipeError:
            raise  # the reader went away (`| head`), not the instance: cli.main exits 141 quietly
        except Exception as exc:  # noqa: BLE001 - the instance's database failed
            print(f"{PROG}: the Dagster instance failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    print(f"closed the refund watch of Wise transfer {watch.transfer_id} ({watch.amount:g} {watch.currency}, "
          f"saga {watch.saga_id}) by hand: by {by}, reason: {args.reason}")
    return 0
