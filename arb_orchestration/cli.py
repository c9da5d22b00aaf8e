"""`arb-orchestration`: the project's own commands.

Each command lives in `arb_orchestration/commands/<name>.py` and exposes
`main(argv) -> int`; it is imported only when called, so `--help` is instant.
"""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "dev": ("arb_orchestration.commands.dev", "start the local world and the Dagster UI (embedded defaults)"),
    "world": ("arb_orchestration.commands.world", "start only the local world (simulators, broker, SMTP sink)"),
    "publish": ("arb_orchestration.commands.publish", "produce one event: publish TOPIC JSON (signs critical events)"),
    "topics": ("arb_orchestration.commands.topics", "topics create: create the event topics and their .dlq topics"),
    "replay-dlq": ("arb_orchestration.commands.replay_dlq", "re-publish parked messages from a .dlq topic"),
    "generate-events": ("arb_orchestration.commands.generate_events", "publish realistic demo traffic"),
    "plan-route": ("arb_orchestration.commands.plan_route", "plan-route INSTANCE.json: dry-run the rebalancing route planner"),
    "settings": ("arb_orchestration.commands.settings", "print every environment variable the platform reads"),
    "refunds": ("arb_orchestration.commands.refunds", "refunds list | close ID --reason TEXT: the Wise refund watches"),
    "sagas": ("arb_orchestration.commands.sagas", "sagas list | show ID | resolve ID --reason TEXT: sagas that need a person"),
    "wise-webhooks": ("arb_orchestration.commands.wise_webhooks", "wise-webhooks serve: receive Wise transfer webhooks into the instance"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: arb-orchestration COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'arb-orchestration COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"} or argv == ["help"]:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name == "help" and rest:  # `help publish` = `publish --help`
        name, rest = rest[0], ["--help"]
    if name not in COMMANDS:
        print(f"arb-orchestration: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except BrokenPipeError:
        # The reader went away (`arb-orchestration settings | head`): not an error worth a traceback.
        # Point stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe


if __name__ == "__main__":
    sys.exit(main())
