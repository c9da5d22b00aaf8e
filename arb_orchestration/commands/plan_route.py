"""`arb-orchestration plan-route INSTANCE.json`: dry-run the rebalancing route planner.

INSTANCE.json holds {"balances": {venue: {asset: amount}}, "targets": {venue:
{asset: minimum}}, "rails": [{id, from, to, asset, fixed_fee, fee_rate,
min_amount, max_amount, eta_seconds}, ...]}. Prints the plan as JSON.

Exit codes: 0 feasible plan printed; 3 infeasible (the infeasible JSON is
printed, with the reason); 2 bad input (message naming the field on stderr);
1 the solver could not prove an answer in time.
"""

from __future__ import annotations

import argparse
import json
import sys

from arb_orchestration.commands import _flags
from arb_orchestration.commands._native_stdout import native_stdout_to_stderr
from arb_orchestration.domain.routing import RoutingError, RoutingInputError, naive_plan, parse_problem, plan_routes

EXIT_OK, EXIT_UNPROVEN, EXIT_BAD_INPUT, EXIT_INFEASIBLE = 0, 1, 2, 3


def _load(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise RoutingInputError(path, f"cannot be read: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RoutingInputError(path, f"is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RoutingInputError("instance", "must be a JSON object with balances, targets and rails")
    for key in ("balances", "rails"):
        if key not in data:
            raise RoutingInputError(key, "is missing")
    unknown = sorted(set(data) - {"balances", "targets", "rails"})
    if unknown:
        raise RoutingInputError(unknown[0], "is not an instance field (expected balances, targets, rails)")
    return data


def main(argv: list[str]) -> int:
    parser = _flags.CommandParser(
        prog="arb-orchestration plan-route", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("instance", help="path to the instance JSON")
    parser.add_argument("--naive", action="store_true", help="print the naive direct-transfer baseline instead")
    parser.add_argument("--time-limit", type=_flags.positive_number, default=60.0, help="solver seconds per asset (default 60)")
    args = parser.parse_args(argv)
    try:
        data = _load(args.instance)
        problem = parse_problem(data["balances"], data.get("targets"), data["rails"])
        # stdout carries only the JSON document: HiGHS's stray debug prints go to stderr.
        with native_stdout_to_stderr():
            plan = naive_plan(problem, None, None) if args.naive else plan_routes(problem, None, None, time_limit=args.time_limit)
    except RoutingInputError as exc:
        print(f"plan-route: bad input: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RoutingError as exc:
        print(f"plan-route: {exc}", file=sys.stderr)
        return EXIT_UNPROVEN
    print(json.dumps(plan.to_dict(), indent=2))
    return EXIT_OK if plan.feasible else EXIT_INFEASIBLE
