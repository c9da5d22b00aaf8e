"""`arb-orchestration publish TOPIC JSON`: validate, sign and produce one event.

TOPIC is market-events, capital-events or funding-rate-events (ARB_EVENT_TOPIC_PREFIX
is added). JSON is the event object, `-` for stdin or `@file`. Missing
`schema_version`, `event_id` and `ts` are filled in (1, a UUID, now). The event is
validated against its schema before anything is sent (exit 2 naming the field),
signed with HMAC-SHA256 when EVENT_SIGNING_KEY is set (critical events are
refused by the sensors unless signed), and the command prints where it landed.

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
    if text == "-":
        return sys.stdin.read()
    if text.startswith("@"):
        return Path(text[1:]).read_text()
    return text


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="arb-orchestration publish", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("topic", help="market-events | capital-events | funding-rate-events")
    parser.add_argument("json", help="the event as a JSON object, '-' (stdin) or '@path'")
    parser.add_argument("--bootstrap", default=None, help="override KAFKA_BOOTSTRAP_SERVERS")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the event, send nothing")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the broker's ack")
    args = parser.parse_args(argv)

    try:
        prefix = settings.get("ARB_EVENT_TOPIC_PREFIX")
        base = base_topic(args.topic, prefix)
    except (ValueError, settings.SettingError) as exc:
        print(f"arb-orchestration publish: {exc}", file=sys.stderr)
        return 2
    try:
        payload = json.loads(_read_json(args.json))
    except (OSError, ValueError) as exc:
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
    if filled:
        print(f"filled in: {', '.join(filled)}")

    signing_key = os.environ.get("EVENT_SIGNING_KEY") or None
    if signing_key:
        payload = sign_event(payload, signing_key)
    try:
        event = validate_payload(base, payload)
    except EventRejected as exc:
        where = f" (field '{exc.field}')" if exc.field and f"'{exc.field}'" not in exc.reason else ""
        print(f"arb-orchestration publish: invalid {base} event: {exc.reason}{where}", file=sys.stderr)
        return 2
    if event.is_critical and not signing_key:
        print("warning: critical event sent UNSIGNED (EVENT_SIGNING_KEY is not set): "
              "the sensors will park it on the DLQ instead of acting", file=sys.stderr)

    topic = topic_name(base, prefix)
    if args.dry_run:
        print(f"dry run: would publish to {topic}: {json.dumps(payload)}")
        return 0
    try:
        kafka = KafkaResource.from_env(**({"bootstrap_servers": args.bootstrap} if args.bootstrap else {}))
        delivered = kafka.publish(topic, encode_event(payload), key=partition_key(payload), timeout=args.timeout)
    except (KafkaConfigError, settings.SettingError) as exc:
        print(f"arb-orchestration publish: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"arb-orchestration publish: could not publish to {topic}: {exc}", file=sys.stderr)
        return 1
    signed = "signed" if signing_key else "unsigned"
    print(f"published {event.event_id} ({signed}) to {delivered.topic} partition {delivered.partition} "
          f"offset {delivered.offset}")
    return 0
