"""`arb-orchestration replay-dlq TOPIC.dlq`: re-publish parked messages to their source topic.

Each message on a `.dlq` topic is an envelope (see docs/kafka.md) holding the
original value, key and headers byte for byte, the reason it was parked and where
it came from. Replay produces the original back onto the partition of the source
topic it was read from (so it stays in order with its instrument's other events,
whichever partitioner its producer used), with its headers and one more,
`x-arb-replayed-from: <dlq>:<partition>:<offset>`, so the sensors see it again
and judge it again (a replay bypasses no check: a still-invalid message is parked
again; a critical event past its timestamp window is refused again).

  --all                  every message currently on the DLQ (up to its end now)
  --offset N [N ...]     only these offsets (of --partition, default 0); offsets are
                         per partition: the sensor's log and `--all --dry-run` show
                         each parked message as <dlq>:<partition>:<offset>
  --dry-run              show what would be replayed, send nothing

Exit codes: 0 every selected message replayed (or nothing parked); 1 some were
skipped (not an envelope, from another topic, no original value) or the broker
failed; 2 bad input (not a .dlq topic, unknown topic, no such partition, an
offset the partition does not hold: the message says which partitions hold what).
"""

from __future__ import annotations

import argparse
import sys
import time

from arb_orchestration import settings
from arb_orchestration.commands import _flags
from arb_orchestration.commands._broker_log import unreachable_broker
from arb_orchestration.domain.events import (
    EventRejected,
    base_topic,
    parse_dlq_envelope,
    parse_event,
    source_topic_of,
)
from arb_orchestration.resources.kafka import KafkaConfigError, KafkaResource

REPLAY_HEADER = "x-arb-replayed-from"


def held_offsets(kafka: KafkaResource, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
    """{partition: (first offset, last offset)} of every partition that holds messages."""
    held = {}
    for partition in partitions:
        low, high = kafka.watermarks(topic, partition, timeout=10)
        if high > low:
            held[partition] = (low, high - 1)
    return held


def partition_hint(topic: str, asked: int, held: dict[int, tuple[int, int]]) -> str:
    """Where the parked messages are, when the operator looked in the wrong partition ('' if nothing to add)."""
    others = {p: span for p, span in held.items() if p != asked}
    if not held:
        return f"; no partition of {topic} holds a message"
    if not others:
        return ""
    spans = ", ".join(f"{p} (offsets {low}..{high})" for p, (low, high) in sorted(others.items()))
    if len(others) == 1:
        return f"; parked messages are on partition {spans}: add --partition {next(iter(others))}"
    return f"; parked messages are on partitions {spans}: add --partition P"


def read_messages(kafka: KafkaResource, topic: str, wanted: dict[int, set[int] | None], timeout: float = 30.0):
    """Yield messages of `topic`: per partition, the offsets in the set, or all up to the end (None)."""
    from confluent_kafka import KafkaError, TopicPartition

    consumer = kafka.consumer(enable_partition_eof=True)
    try:
        todo: dict[int, tuple[int, int, set[int] | None]] = {}
        for partition, offsets in wanted.items():
            low, high = kafka.watermarks(topic, partition, timeout=10, consumer=consumer)
            if offsets is None:
                if high > low:
                    todo[partition] = (low, high, None)
                continue
            outside = sorted(o for o in offsets if not low <= o < high)
            if outside:
                raise LookupError(
                    f"offset(s) {outside} not on {topic} partition {partition} (it holds offsets {low}..{high - 1})"
                    if high > low else f"{topic} partition {partition} is empty"
                )
            if offsets:
                todo[partition] = (min(offsets), max(offsets) + 1, set(offsets))
        if not todo:
            return
        consumer.assign([TopicPartition(topic, p, start) for p, (start, _, _) in todo.items()])
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not finish within {timeout:g}s")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    todo.pop(msg.partition(), None)
                    continue
                raise RuntimeError(f"reading {topic}: {msg.error()}")
            partition, offset = msg.partition(), msg.offset()
            if partition not in todo:
                continue
            _, end, offsets = todo[partition]
            if offsets is None or offset in offsets:
                yield msg
            if offset + 1 >= end:
                todo.pop(partition)
    finally:
        consumer.close()


def main(argv: list[str]) -> int:
    parser = _flags.CommandParser(
        prog="arb-orchestration replay-dlq", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("topic", help="the dead-letter topic, e.g. market-events.dlq")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="replay every message on the DLQ")
    which.add_argument("--offset", type=_flags.non_negative_int, nargs="+", help="replay only these offsets")
    parser.add_argument("--partition", type=_flags.non_negative_int, default=0, help="partition of --offset (default 0)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be replayed, send nothing")
    parser.add_argument("--bootstrap", default=None, help="override KAFKA_BOOTSTRAP_SERVERS")
    args = parser.parse_args(argv)

    try:
        prefix = settings.get("ARB_EVENT_TOPIC_PREFIX")
        source = source_topic_of(args.topic)
        base = base_topic(source, prefix)
        kafka = KafkaResource.from_env(**({"bootstrap_servers": args.bootstrap} if args.bootstrap else {}))
        kafka.client_config()
    except (ValueError, settings.SettingError) as exc:  # KafkaConfigError is a ValueError
        print(f"arb-orchestration replay-dlq: {exc}", file=sys.stderr)
        return 2

    if (unreachable := unreachable_broker(kafka)) is not None:
        print(f"arb-orchestration replay-dlq: {unreachable}", file=sys.stderr)
        return 1
    try:
        partitions = kafka.partitions_for(args.topic)
        source_partitions = set(kafka.partitions_for(source)) if not args.dry_run else None
        if args.all:
            wanted: dict[int, set[int] | None] = {p: None for p in partitions}
        else:
            if args.partition not in partitions:
                print(f"arb-orchestration replay-dlq: {args.topic} has no partition {args.partition} "
                      f"(partitions: {partitions})", file=sys.stderr)
                return 2
            wanted = {args.partition: set(args.offset)}
        producer = None if args.dry_run else kafka.producer()
        replayed = skipped = 0
        for msg in read_messages(kafka, args.topic, wanted):
            where = f"{args.topic}:{msg.partition()}:{msg.offset()}"
            try:
                envelope = parse_dlq_envelope(msg.value() or b"")
            except EventRejected as exc:
                print(f"  skip   {where}: {exc.reason}")
                skipped += 1
                continue
            if envelope.source.topic != source:
                print(f"  skip   {where}: parked from {envelope.source.topic}, not {source}")
                skipped += 1
                continue
            value, key = envelope.original_value(), envelope.original_key()
            if value is None:
                # A tombstone, or an original too large to copy: nothing to put back.
                print(f"  skip   {where}: the envelope holds no original value ({envelope.reason})")
                skipped += 1
                continue
            origin = f"{source}:{envelope.source.partition}:{envelope.source.offset}"
            try:
                parse_event(base, value)
                verdict = ""
            except EventRejected as exc:
                verdict = f"  [still invalid: {exc.reason}; it will be parked again]"
            if args.dry_run:
                print(f"  would  {where} -> {source} (from {origin}, parked for: {envelope.reason}){verdict}")
                replayed += 1
                continue
            # Back where it was read from; a partition the topic no longer has (recreated smaller):
            # the partitioner picks one from the key, and the line says so.
            partition = envelope.source.partition if envelope.source.partition in source_partitions else None
            moved = "" if partition is not None else f" [partition {envelope.source.partition} is gone: keyed]"
            delivered = kafka.publish(
                source, value, key=key, headers=[*envelope.original_headers(), (REPLAY_HEADER, where.encode())],
                producer=producer, partition=partition,
            )
            print(f"  replay {where} -> {delivered.topic}:{delivered.partition}:{delivered.offset} "
                  f"(from {origin}, parked for: {envelope.reason}){moved}{verdict}")
            replayed += 1
    except KafkaConfigError as exc:
        print(f"arb-orchestration replay-dlq: {exc}", file=sys.stderr)
        return 2
    except LookupError as exc:
        hint = ""
        if not args.all and "partitions" in locals():
            try:
                hint = partition_hint(args.topic, args.partition, held_offsets(kafka, args.topic, partitions))
            except Exception:  # the hint is a courtesy: the error itself is what matters
                hint = ""
        print(f"arb-orchestration replay-dlq: {exc}{hint}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise  # the reader went away (`| head`), not the broker: cli.main exits 141 quietly
    except Exception as exc:
        print(f"arb-orchestration replay-dlq: {exc}", file=sys.stderr)
        return 1
    if args.all and not replayed and not skipped:
        print(f"{args.topic} holds no messages: nothing to replay")
        return 0
    verb = "would replay" if args.dry_run else "replayed"
    print(f"{verb} {replayed} message(s), skipped {skipped}")
    return 1 if skipped else 0
