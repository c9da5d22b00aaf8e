"""`arb-orchestration generate-events`: publish realistic demo traffic to the three topics.

Small market moves with the odd `warning` shock, funding rates per venue at their
real intervals (8 h on most venues, 4 h on kraken, 1 h on hyperliquid), and now and
then a capital warning. Never `critical` unless --critical-probability is given
(a critical event triggers the emergency stop-loss). Events are signed when
EVENT_SIGNING_KEY is set. Runs until --duration, --count or Ctrl-C.

Exit codes: 0 every event delivered; 1 some deliveries failed (the last error is
printed) or the broker failed; 2 bad options or a bad KAFKA_* setting.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from arb_orchestration import settings
from arb_orchestration.commands import _flags
from arb_orchestration.resources.kafka import KafkaConfigError, KafkaResource
from arb_orchestration.sim.event_generator import EventGenerator


def main(argv: list[str]) -> int:
    parser = _flags.CommandParser(
        prog="arb-orchestration generate-events", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # --events-per-second: the name `arb-orchestration dev` uses for the same thing.
    parser.add_argument("--rate", "--events-per-second", dest="rate", type=float, default=2.0,
                        help="events per second (default 2)")
    parser.add_argument("--duration", type=_flags.positive_number, default=None,
                        help="stop after this many seconds (default: no limit)")
    parser.add_argument("--count", type=_flags.positive_int, default=None,
                        help="stop after this many events (default: no limit)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed for reproducible traffic (default: a new one each run)")
    parser.add_argument("--warning-probability", type=_flags.probability, default=0.03,
                        help="share of warning shocks, 0-1 (default 0.03)")
    parser.add_argument("--critical-probability", type=_flags.probability, default=0.0,
                        help="share of critical events, 0-1 (default 0: never)")
    parser.add_argument("--bootstrap", default=None, help="override KAFKA_BOOTSTRAP_SERVERS")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.rate) and args.rate > 0):  # checked here: the message names --rate, not both names
        parser.error(f"--rate must be > 0 and finite (events per second), got {args.rate:g}")

    signing_key = os.environ.get("EVENT_SIGNING_KEY") or None
    try:
        kafka = KafkaResource.from_env(**({"bootstrap_servers": args.bootstrap} if args.bootstrap else {}))
        kafka.client_config()
        generator = EventGenerator(
            kafka=kafka,
            signing_key=signing_key,
            events_per_second=args.rate,
            seed=args.seed,
            warning_probability=args.warning_probability,
            critical_probability=args.critical_probability,
        )
    except (ValueError, settings.SettingError) as exc:
        print(f"arb-orchestration generate-events: {exc}", file=sys.stderr)
        return 2
    until = []
    if args.duration is not None:
        until.append(f"{args.duration:g}s")
    if args.count is not None:
        until.append(f"{args.count} events")
    print(f"publishing ~{args.rate:g} events/s to {kafka.bootstrap_servers} "
          f"({'signed' if signing_key else 'unsigned'}) until {' or '.join(until) or 'Ctrl-C'}", flush=True)
    try:
        sent = generator.run(duration=args.duration, max_events=args.count)
    except KeyboardInterrupt:
        generator.stop()
        sent = generator.sent
    except Exception as exc:
        print(f"arb-orchestration generate-events: {exc}", file=sys.stderr)
        return 1
    for topic, n in sorted(sent.items()):
        print(f"  {n:6d}  {topic}")
    print(f"{sum(sent.values())} delivered, {generator.failed} failed"
          + (f" (last error: {generator.last_error})" if generator.last_error else ""))
    return 1 if generator.failed else 0
