"""`python -m arb_orchestration.launcher`: run the warm worker of the emergency fast path.

Locally (`arb-orchestration dev` starts it): listens on <DAGSTER_HOME>/warm-worker.sock,
the address `WarmWorkerRunLauncher` derives by default. In Kubernetes:
`--address tcp:0.0.0.0:4000 --advertise tcp:$(POD_IP):4000` (k8s/warm-worker-deployment.yaml).
Restart it on every deploy; locally it restarts itself when the code changes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from arb_orchestration.launcher.protocol import WorkerAddress, default_socket_path

DEFAULT_MODULE = "arb_orchestration.definitions"


def default_address() -> str | None:
    home = os.environ.get("DAGSTER_HOME")
    return f"unix:{default_socket_path(home)}" if home else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m arb_orchestration.launcher", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default=os.environ.get("ARB_WARM_WORKER_ADDRESS") or default_address(),
                        help="unix:/path or host:port to listen on "
                             "(default: $ARB_WARM_WORKER_ADDRESS, else <DAGSTER_HOME>/warm-worker.sock)")
    parser.add_argument("--advertise", default=os.environ.get("ARB_WARM_WORKER_ADVERTISE"),
                        help="address the launcher should use to reach this process later (pod IP in k8s; "
                             "default: $ARB_WARM_WORKER_ADVERTISE)")
    parser.add_argument("-m", "--module", dest="modules", action="append",
                        help=f"code location module to import and serve (default {DEFAULT_MODULE})")
    parser.add_argument("--job", dest="jobs", action="append", default=[], metavar="NAME",
                        help="a job this worker may run (repeatable; default: the jobs of the modules whose "
                             "tags carry arb/fast_path=true, i.e. emergency_stop_loss_saga)")
    parser.add_argument("--token-env", default="ARB_WARM_WORKER_TOKEN",
                        help="environment variable holding the shared token (default ARB_WARM_WORKER_TOKEN; unset: no token)")
    parser.add_argument("--image", default=os.environ.get("DAGSTER_CURRENT_IMAGE"),
                        help="this worker's image; runs of another image are refused (default: $DAGSTER_CURRENT_IMAGE)")
    parser.add_argument("--drain-seconds", type=float, default=0.0,
                        help="on SIGTERM, wait this long for running runs before exiting (default 0)")
    parser.add_argument("--no-restart-when-stale", action="store_true",
                        help="refuse runs after a code change instead of re-executing")
    parser.add_argument("--no-warm", action="store_true", help="skip the throwaway run and HTTP client warm-up")
    parser.add_argument("--warm-import", action="append", default=[], metavar="MODULE",
                        help="also import MODULE at start (libraries runs import lazily, e.g. ccxt)")
    parser.add_argument("--watch", action="append", type=Path, default=[], metavar="PATH",
                        help="restart when files under PATH change (default: the packages of the modules)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s warm-worker %(process)d %(levelname)s %(message)s"))
    ours = logging.getLogger("arb_orchestration.launcher")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    if not args.address:
        parser.error("--address is required when DAGSTER_HOME is not set")

    from arb_orchestration.launcher.worker import WarmWorker, WorkerOptions

    address = WorkerAddress.parse(args.address)
    if address.kind == "tcp" and not os.environ.get(args.token_env):
        parser.error(f"listening on TCP needs a shared token: ${args.token_env} is not set")  # before the warm-up
    worker = WarmWorker(WorkerOptions(
        address=address,
        modules=args.modules or [DEFAULT_MODULE],
        advertise=args.advertise,
        token=os.environ.get(args.token_env) or None,
        image=args.image or None,
        warm=not args.no_warm,
        drain_seconds=args.drain_seconds,
        restart_when_stale=not args.no_restart_when_stale,
        warm_imports=args.warm_import,
        watch_paths=args.watch,
        jobs=args.jobs,
    ))
    worker.check_address_free()  # a second worker fails now, not after its warm-up
    worker.warm_up()
    worker.bind()  # only once warm: until then launches fail to connect and take the stock path at once
    return worker.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
