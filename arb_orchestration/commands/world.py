"""`arb-orchestration world`: start only the local world and print the environment that points at it.

Useful to run Dagster yourself (`eval "$(arb-orchestration world --print-env)"` in
another shell is not possible since the world lives in this process, so this
prints the variables; copy them) or to drive the simulators with curl.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from arb_orchestration.sim.world import DEFAULT_PORTS, LocalWorld


def add_world_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--exchange-port", type=int, default=DEFAULT_PORTS["exchange"])
    parser.add_argument("--wise-port", type=int, default=DEFAULT_PORTS["wise"])
    parser.add_argument("--smtp-port", type=int, default=DEFAULT_PORTS["smtp"])
    parser.add_argument("--mailbox-port", type=int, default=DEFAULT_PORTS["mailbox"])
    parser.add_argument("--seed", type=int, default=42, help="seed of the price/funding random walk")
    parser.add_argument("--maildir", type=Path, default=None, help="where received mail is stored as .eml")


def world_from_args(args: argparse.Namespace, maildir: Path) -> LocalWorld:
    return LocalWorld(
        ports={
            "exchange": args.exchange_port,
            "wise": args.wise_port,
            "smtp": args.smtp_port,
            "mailbox": args.mailbox_port,
        },
        maildir=args.maildir or maildir,
        kafka_bootstrap=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        seed=args.seed,
    )


def print_world(world: LocalWorld) -> None:
    print(f"  exchange simulator  {world.exchange_url}/venues")
    print(f"  Wise simulator      {world.wise_url}")
    print(f"  SMTP sink           {world.smtp_host}:{world.smtp_port}  (mailbox: {world.mailbox_url})")
    kind = "embedded mock cluster (demo only)" if world.mock_kafka else "external"
    print(f"  Kafka               {world.kafka_bootstrap}  [{kind}]")


def wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="arb-orchestration world", description=__doc__)
    add_world_arguments(parser)
    parser.add_argument("--print-env", action="store_true", help="print export lines for the platform")
    args = parser.parse_args(argv)
    with world_from_args(args, Path(".dagster_home/mail")) as world:
        print("local world running:")
        print_world(world)
        if args.print_env:
            for key, value in world.env().items():
                print(f"export {key}={value}")
        print("Ctrl-C to stop.", flush=True)
        wait_for_signal()
    return 0
