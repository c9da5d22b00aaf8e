"""`arb-orchestration wise-webhooks serve`: receive Wise `transfers#state-change` webhooks into the instance.

Verifies every delivery against Wise's public key (`--public-key`, else
`WISE_WEBHOOK_PUBLIC_KEY`: a PEM file path or the PEM itself; sandbox and live
have different keys), refuses unsigned or forged ones (400), and records each
verified transfer state on the webhook board in the Dagster instance of
`DAGSTER_HOME` (its key-value store: the database runs live in), where the
rebalance saga's waits in any run worker see it. `GET /health` answers 200
while that database is reachable (503 otherwise). Stops on SIGTERM/SIGINT.

Subscribe the URL it serves (`https://<ingress>/wise/webhooks`) to
`transfers#state-change` in Wise. Prints `listening on URL` once ready.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from arb_orchestration.commands import _flags
from arb_orchestration.resources.wise_webhooks import (
    DEFAULT_PATH,
    HEALTH_PATH,
    InstanceWebhookBoard,
    WiseWebhookReceiver,
    load_public_key,
)
from arb_orchestration.settings import SettingError, raw

DEFAULT_PORT = 8704
PUBLIC_KEY_SETTING = "WISE_WEBHOOK_PUBLIC_KEY"


def read_public_key(value: str, source: str = PUBLIC_KEY_SETTING) -> bytes:
    """The PEM in `value`, or in the file it names; `SettingError` when it is neither an RSA key nor a readable file."""
    value = value.strip()  # an env var often loses the PEM's last newline, or gains spaces
    if not value:
        raise SettingError(f"{source} is empty: set it (or --public-key) to Wise's webhook public key, "
                           "a PEM file path or the PEM itself")
    if value.startswith("-----BEGIN"):
        pem = (value + "\n").encode()
    else:
        try:
            pem = Path(value).expanduser().read_bytes()
        except OSError as exc:
            raise SettingError(f"{source}: cannot read {value!r} ({exc.strerror})") from None
    try:
        load_public_key(pem)
    except ValueError as exc:
        raise SettingError(f"{source}: not an RSA public key in PEM ({exc})") from None
    return pem


def _serve(args: argparse.Namespace) -> int:
    try:
        pem = (read_public_key(args.public_key, "--public-key") if args.public_key is not None
               else read_public_key(raw(PUBLIC_KEY_SETTING)))
    except SettingError as exc:
        print(f"arb-orchestration wise-webhooks: {exc}", file=sys.stderr)
        return 2
    if not os.environ.get("DAGSTER_HOME"):
        print("arb-orchestration wise-webhooks: DAGSTER_HOME is not set: the board lives in that Dagster instance "
              "(the one the run workers use)", file=sys.stderr)
        return 2

    from dagster import DagsterInstance

    instance = DagsterInstance.get()
    board = InstanceWebhookBoard(instance)
    board.ping()  # an unreachable database fails the start, not the first delivery
    receiver = WiseWebhookReceiver(pem, board, host=args.host, port=args.port, path=args.path)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    receiver.start()
    print(f"listening on {receiver.url} (health: {receiver.base_url}{HEALTH_PATH})", flush=True)
    try:
        stop.wait()
    finally:
        receiver.stop()
        instance.dispose()
    print(f"stopped; {receiver.stats}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    parser = _flags.CommandParser(prog="arb-orchestration wise-webhooks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    serve = sub.add_parser("serve", help="run the webhook receiver")
    serve.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    serve.add_argument("--port", type=_flags.port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    serve.add_argument("--path", default=DEFAULT_PATH, help=f"the webhook path Wise posts to (default {DEFAULT_PATH})")
    serve.add_argument("--public-key", default=None,
                       help=f"Wise's webhook public key: PEM file path or PEM (default: ${PUBLIC_KEY_SETTING})")
    serve.add_argument("--log-level", type=_flags.log_level, default="INFO",
                       help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default INFO: every accepted state change)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return _serve(args)
