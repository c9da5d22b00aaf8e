"""`arb-orchestration settings`: the configuration table (the README's is generated from it)."""

from __future__ import annotations

import argparse

from arb_orchestration.settings import markdown_table


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="arb-orchestration settings", description=__doc__)
    parser.parse_args(argv)
    print(markdown_table())
    return 0
