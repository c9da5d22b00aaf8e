"""`arb-orchestration world`: start only the local world (no Dagster) and tell other shells where it is.

Starts the exchange and Wise simulators, the SMTP sink and, unless
KAFKA_BOOTSTRAP_SERVERS is set, the embedded Kafka-protocol broker; creates the
event topics and their .dlq twins; writes the environment that points the
platform at this world (including this start's generated simulator keys and
event-signing key) to --env-file, owner-only, as `arb-orchestration dev` does.
In another shell:

  set -a; . .dagster_home/world.env; set +a
  arb-orchestration publish market-events '{...}'
  DAGSTER_HOME=... dagster job execute -m arb_orchestration.definitions -j ...

The world lives in this process: Ctrl-C (or SIGTERM) stops it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from arb_orchestration.commands import _flags
from arb_orchestration.sim.world import DEFAULT_PORTS, LocalWorld

DEFAULT_ENV_FILE = Path(".dagster_home/world.env")


def add_world_arguments(parser: argparse.ArgumentParser) -> None:
    for name, what in (("exchange", "exchange simulator HTTP"), ("wise", "Wise simulator HTTP"),
                       ("smtp", "SMTP sink"), ("mailbox", "mailbox web page")):
        parser.add_argument(f"--{name}-port", type=_flags.port, default=DEFAULT_PORTS[name],
                            help=f"{what} port (default {DEFAULT_PORTS[name]}; 0: any free port)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the price/funding random walk (default 42)")
    parser.add_argument("--maildir", type=_flags.directory, default=None, help="where received mail is stored as .eml (default: mail/ in the Dagster home)")


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
    # Both answer 401 without their key; name the variable (from the environment file), never the value.
    print(f"  exchange simulator  {world.exchange_url}/venues  (header X-API-Key: $EXCHANGE_SIM_API_KEY)")
    print(f"  Wise simulator      {world.wise_url}  (header Authorization: Bearer $WISE_API_TOKEN)")
    print(f"  SMTP sink           {world.smtp_host}:{world.smtp_port}  (mailbox: {world.mailbox_url})")
    kind = "embedded mock cluster (demo only)" if world.mock_kafka else "external"
    print(f"  Kafka               {world.kafka_bootstrap}  [{kind}]")


def cli_command() -> str:
    """How to type this CLI in another shell: `.venv/bin/arb-orchestration` unless it is on PATH.

    `make dev` runs it from .venv without activating it, so a bare `arb-orchestration` in a second
    shell was "command not found".
    """
    import shutil

    script = Path(sys.executable).parent / "arb-orchestration"
    if not script.exists() or shutil.which("arb-orchestration") == str(script):
        return "arb-orchestration"
    try:
        relative = os.path.relpath(script)
    except ValueError:
        return str(script)
    return relative if not relative.startswith("..") else str(script)


def environment_line(env_file: Path) -> str:
    return f"Environment:         set -a; . {env_file}; set +a   (then e.g. {cli_command()} publish ...)"


def wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def main(argv: list[str]) -> int:
    parser = _flags.CommandParser(
        prog="arb-orchestration world", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_world_arguments(parser)
    parser.add_argument("--env-file", type=_flags.output_file, default=DEFAULT_ENV_FILE,
                        help=f"where to write the world's environment (default {DEFAULT_ENV_FILE}; owner-only)")
    parser.add_argument("--print-env", action="store_true",
                        help="also print the environment as export lines (secrets included)")
    args = parser.parse_args(argv)
    from arb_orchestration.commands.dev import write_env_file
    from arb_orchestration.commands.topics import create_all_topics

    with world_from_args(args, Path(".dagster_home/mail")) as world:
        args.env_file.parent.mkdir(parents=True, exist_ok=True)
        env_file = write_env_file(args.env_file, world.env())
        create_all_topics(world.kafka_bootstrap, partitions=4, replication=1)
        print("local world running:")
        print_world(world)
        print(environment_line(env_file))
        if args.print_env:
            for key, value in world.env().items():
                print(f"export {key}={value}")
        print("Ctrl-C to stop.", flush=True)
        wait_for_signal()
    return 0
