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
import os
import sys

from arb_orchestration import settings
from arb_orchestration.resources.kafka import KafkaConfigError, KafkaResource
from arb_orchestration.sim.event_generator import EventGenerator


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="arb-orchestration generate-events", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # --events-per-second: the name `arb-orchestration dev` uses for the same thing.
    parser.add_argument("--rate", "--events-per-second", dest="rate", type=float, default=2.0,
                        help="events per second (default 2)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--count", type=int, default=None, help="stop after this many events")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible traffic")
    parser.add_argument("--warning-probability", type=float, default=0.03, help="share of warning shocks (0.03)")
    parser.add_argument("--critical-probability", type=float, default=0.0,
                        help="share of critical events (default 0: never)")
    parser.add_argument("--bootstrap", default=None, help="override KAFKA_BOOTSTRAP_SERVERS")
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be > 0")
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be > 0 (seconds)")
    if args.count is not None and args.count < 1:
        parser.error("--count must be >= 1")
    for option in ("warning_probability", "critical_probability"):
        if not 0.0 <= getattr(args, option) <= 1.0:
            parser.error(f"--{option.replace('_', '-')} must be within [0, 1], got {getattr(args, option):g}")

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
