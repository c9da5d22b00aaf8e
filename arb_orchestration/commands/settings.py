"""`arb-orchestration settings`: the configuration table (the README's is generated from it)."""

from __future__ import annotations

from arb_orchestration.commands import _flags
from arb_orchestration.settings import markdown_table


def main(argv: list[str]) -> int:
    parser = _flags.CommandParser(prog="arb-orchestration settings", description=__doc__)
    parser.parse_args(argv)
    print(markdown_table())
    return 0
