"""`arb-orchestration topics create`: the three event topics and their `.dlq` topics.

Idempotent: a topic that already exists is reported as such and left alone
(its partition count is not changed). Honours ARB_EVENT_TOPIC_PREFIX and the
KAFKA_* settings (SASL/TLS included).

Exit codes: 0 every topic exists now; 1 the broker failed (unreachable,
not authorised); 2 bad options or a bad KAFKA_* setting.
"""

from __future__ import annotations

import argparse
import sys

from arb_orchestration import settings
from arb_orchestration.commands import _flags
from arb_orchestration.commands._broker_log import unreachable_broker
from arb_orchestration.domain.events import TOPICS, dlq_topic, topic_name
from arb_orchestration.resources.kafka import KafkaConfigError, KafkaResource


def all_topic_names(prefix: str = "") -> list[str]:
    """Every topic the platform reads or parks into, in creation order."""
    names = []
    for base in TOPICS:
        names += [topic_name(base, prefix), dlq_topic(topic_name(base, prefix))]
    return names


def create_all_topics(
    kafka: KafkaResource | str,
    partitions: int = 3,
    replication: int = 1,
    verbose: bool = False,
    prefix: str | None = None,
) -> dict[str, str]:
    """Create the event and `.dlq` topics; returns {name: 'created' | 'exists'}.

    `kafka` is a `KafkaResource` or a bootstrap address (the other KAFKA_* settings
    then come from the environment).
    """
    if isinstance(kafka, str):
        kafka = KafkaResource.from_env(bootstrap_servers=kafka)
    if prefix is None:
        prefix = settings.get("ARB_EVENT_TOPIC_PREFIX")
    outcome = kafka.create_topics(all_topic_names(prefix), partitions=partitions, replication=replication)
    if verbose:
        for name, state in outcome.items():
            print(f"  {state:8} {name}")
    return outcome


def main(argv: list[str]) -> int:
    parser = _flags.CommandParser(
        prog="arb-orchestration topics", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create the event topics and their .dlq topics (idempotent)")
    create.add_argument("--partitions", type=_flags.positive_int, default=3, help="partitions per topic (default 3)")
    create.add_argument("--replication", type=_flags.positive_int, default=1, help="replication factor (default 1; 3 in prod)")
    create.add_argument("--bootstrap", default=None, help="override KAFKA_BOOTSTRAP_SERVERS")
    args = parser.parse_args(argv)

    try:
        kafka = KafkaResource.from_env(**({"bootstrap_servers": args.bootstrap} if args.bootstrap else {}))
        kafka.client_config()
        if (unreachable := unreachable_broker(kafka)) is not None:
            print(f"arb-orchestration topics: {unreachable}", file=sys.stderr)
            return 1
        print(f"Kafka {kafka.bootstrap_servers}: ensuring {len(TOPICS) * 2} topics exist "
              f"(new ones get {args.partitions} partition(s), replication {args.replication})")
        outcome = create_all_topics(kafka, args.partitions, args.replication, verbose=True)
    except (KafkaConfigError, settings.SettingError) as exc:
        print(f"arb-orchestration topics: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # broker unreachable, authorisation, ...
        print(f"arb-orchestration topics: {exc}", file=sys.stderr)
        return 1
    created = sum(1 for state in outcome.values() if state == "created")
    print(f"{created} created, {len(outcome) - created} already existed")
    return 0
