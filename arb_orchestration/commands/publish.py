"""`arb-orchestration publish TOPIC JSON`: validate, sign and produce one event.

TOPIC is market-events, capital-events or funding-rate-events (ARB_EVENT_TOPIC_PREFIX
is added). JSON is the event object, `-` for stdin or `@file`. Missing
`schema_version`, `event_id` and `ts` are filled in (1, a UUID, now). The event is
validated against its schema before anything is sent (exit 2 naming the field),
signed with HMAC-SHA256 when EVENT_SIGNING_KEY is set (critical events are
refused by the sensors unless signed), and the command prints where it landed.
A venue outside EXCHANGE_VENUES, or a critical event without a signing key, is
published with a warning on stderr.

Exit codes: 0 published (or validated, with --dry-run); 1 the broker did not
acknowledge it (unreachable, timeout, refused); 2 bad input (unknown topic, not
JSON, a file that cannot be read, a field that fails validation: the message
names the field) or a bad KAFKA_* setting.

Example:
  arb-orchestration publish market-events \\
    '{"venue":"binance","symbol":"BTC/USDT:USDT","price_change_pct":-14.2,"window_seconds":60,"severity":"critical"}'
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from arb_orchestration import settings
from arb_orchestration.commands import _flags
from arb_orchestration.commands._broker_log import BrokerLog
from arb_orchestration.domain.events import (
    SCHEMA_VERSION,
    EventRejected,
    base_topic,
    encode_event,
    new_event_id,
    partition_key,
    sign_event,
    topic_name,
    validate_payload,
)
from arb_orchestration.resources.kafka import KafkaConfigError, KafkaResource


def _read_json(text: str) -> str:
    """The event's text; an unreadable @file raises OSError (reported as such, not as bad JSON)."""
    if text == "-":
        return sys.stdin.read()
    if text.startswith("@"):
        return Path(text[1:]).read_text()
    return text


def _unknown_venue_warning(payload: dict) -> str | None:
    """A warning when the event names a venue the platform is not configured for (likely a typo)."""
    venue = payload.get("venue")
    try:
        known = settings.get_list("EXCHANGE_VENUES")
    except settings.SettingError:
        return None
    if not isinstance(venue, str) or not known or venue in known:
        return None
    return (f"warning: venue {venue!r} is not one of EXCHANGE_VENUES ({', '.join(known)}); "
            "published anyway (the sensors do not check venue names)")


def main(argv: list[str]) -> int:
    parser = _flags.CommandParser(
        prog="arb-orchestration publish", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("topic", help="market-events | capital-events | funding-rate-events")
    parser.add_argument("json", help="the event as a JSON object, '-' (stdin) or '@path'")
    parser.add_argument("--bootstrap", default=None, help="override KAFKA_BOOTSTRAP_SERVERS")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the event, send nothing")
    parser.add_argument("--timeout", type=_flags.positive_number, default=30.0,
                        help="seconds to wait for the broker's ack (default 30)")
    args = parser.parse_args(argv)

    try:
        prefix = settings.get("ARB_EVENT_TOPIC_PREFIX")
        base = base_topic(args.topic, prefix)
    except (ValueError, settings.SettingError) as exc:
        print(f"arb-orchestration publish: {exc}", file=sys.stderr)
        return 2
    try:
        text = _read_json(args.json)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(f"arb-orchestration publish: cannot read {args.json[1:]}: {reason}", file=sys.stderr)
        return 2
    try:
        payload = json.loads(text)
    except ValueError as exc:
        print(f"arb-orchestration publish: the event is not valid JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(payload, dict):
        print("arb-orchestration publish: the event must be a JSON object", file=sys.stderr)
        return 2

    filled = []
    for field, make in (("schema_version", lambda: SCHEMA_VERSION), ("event_id", new_event_id),
                        ("ts", lambda: round(time.time(), 3))):
        if field not in payload:
            payload[field] = make()
            filled.append(f"{field}={payload[field]}")

    signing_key = os.environ.get("EVENT_SIGNING_KEY") or None
    try:
        if signing_key:
            # Signing serialises the payload first: a number beyond float range (1e400) or a lone
            # surrogate cannot be, and is reported like any other invalid JSON.
            try:
                payload = sign_event(payload, signing_key)
            except ValueError as exc:
                raise EventRejected(f"not JSON: {exc}") from None
        event = validate_payload(base, payload)
    except EventRejected as exc:
        where = f" (field '{exc.field}')" if exc.field and f"'{exc.field}'" not in exc.reason else ""
        print(f"arb-orchestration publish: invalid {base} event: {exc.reason}{where}", file=sys.stderr)
        return 2
    if filled:  # only for an event that is going out: noise before a validation error
        print(f"filled in: {', '.join(filled)}")
    if (venue_warning := _unknown_venue_warning(payload)) is not None:
        print(venue_warning, file=sys.stderr)
    if event.is_critical and not signing_key:
        print("warning: critical event sent UNSIGNED (EVENT_SIGNING_KEY is not set): "
              "the sensors will park it on the DLQ instead of acting", file=sys.stderr)

    topic = topic_name(base, prefix)
    if args.dry_run:
        print(f"dry run: would publish to {topic}: {json.dumps(payload)}")
        return 0
    broker_log = BrokerLog()
    try:
        kafka = KafkaResource.from_env(**({"bootstrap_servers": args.bootstrap} if args.bootstrap else {}))
        producer = kafka.producer(logger=broker_log.logger)
        try:
            delivered = kafka.publish(topic, encode_event(payload), key=partition_key(payload),
                                      timeout=args.timeout, producer=producer)
        finally:
            producer.flush(0)
            del producer  # its "terminating with 1 message still in queue" goes to broker_log too
    except (KafkaConfigError, settings.SettingError) as exc:
        print(f"arb-orchestration publish: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"arb-orchestration publish: could not publish to {topic}: {exc}{broker_log.suffix()}",
              file=sys.stderr)
        return 1
    signed = "signed" if signing_key else "unsigned"
    print(f"published {event.event_id} ({signed}) to {delivered.topic} partition {delivered.partition} "
          f"offset {delivered.offset}")
    return 0
