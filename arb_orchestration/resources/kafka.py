"""Kafka: one resource that owns the confluent-kafka client configuration.

`KafkaResource` builds validated librdkafka configs (PLAINTEXT, SSL, SASL_PLAINTEXT,
SASL_SSL with PLAIN/SCRAM) and hands out producers, consumers and admin clients.
Consumers are for manual partition assignment: offsets live in the Dagster sensor
cursor, so auto-commit is off and the group id only satisfies librdkafka (no
subscribe, no commits). Nothing connects until a client is asked for.

Secrets (`sasl_password`, `signing_key`) arrive as `dagster.EnvVar` and never
appear in errors, logs or `describe()`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from dagster import ConfigurableResource

from arb_orchestration.resources.rebind import CheapRebind

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_SECRET_KEYS = {"sasl.password", "ssl.key.password"}


class KafkaConfigError(ValueError):
    """The Kafka configuration is unusable; the message names the field."""


@dataclass(frozen=True)
class Delivered:
    """Where a produced message landed."""

    topic: str
    partition: int
    offset: int


def redact(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a librdkafka config that is safe to print."""
    return {k: ("***" if k in _SECRET_KEYS and v else v) for k, v in config.items()}


class KafkaResource(CheapRebind, ConfigurableResource):
    """Kafka producer/consumer/admin configuration, including SASL/TLS, and the event-signing key."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca_location: str | None = None
    client_id: str = "arb-orchestration"
    signing_key: str | None = None
    # librdkafka waits this long for data in a fetch; low, because sensors read in
    # short ticks (and the demo mock broker always waits the full time).
    fetch_wait_max_ms: int = 10
    request_timeout_ms: int = 10_000

    # ------------------------------------------------------------------ config

    def client_config(self) -> dict[str, Any]:
        """The validated settings every client shares (connection and security)."""
        servers = [s.strip() for s in (self.bootstrap_servers or "").split(",") if s.strip()]
        if not servers:
            raise KafkaConfigError("KafkaResource.bootstrap_servers: empty (expected host:port[,host:port])")
        for server in servers:
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise KafkaConfigError(
                    f"KafkaResource.bootstrap_servers: {server!r} is not host:port (expected host:port[,host:port])"
                )
        protocol = (self.security_protocol or "").strip().upper()
        if protocol not in SECURITY_PROTOCOLS:
            raise KafkaConfigError(
                f"KafkaResource.security_protocol: {self.security_protocol!r} is not one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        config: dict[str, Any] = {
            "bootstrap.servers": ",".join(servers),
            "client.id": self.client_id,
            "security.protocol": protocol,
            "socket.timeout.ms": self.request_timeout_ms,
        }
        uses_sasl = protocol.startswith("SASL_")
        uses_tls = protocol.endswith("SSL")
        if uses_sasl:
            mechanism = (self.sasl_mechanism or "").strip().upper()
            if not mechanism:
                raise KafkaConfigError(
                    f"KafkaResource.sasl_mechanism: required with security_protocol {protocol} "
                    f"(one of {', '.join(SASL_MECHANISMS)})"
                )
            if mechanism not in SASL_MECHANISMS:
                raise KafkaConfigError(
                    f"KafkaResource.sasl_mechanism: {self.sasl_mechanism!r} is not one of {', '.join(SASL_MECHANISMS)}"
                )
            if not self.sasl_username:
                raise KafkaConfigError(f"KafkaResource.sasl_username: required with security_protocol {protocol}")
            if not self.sasl_password:
                raise KafkaConfigError(
                    f"KafkaResource.sasl_password: required with security_protocol {protocol} "
                    "(set KAFKA_SASL_PASSWORD; it is passed as EnvVar)"
                )
            config.update(
                {
                    "sasl.mechanism": mechanism,
                    "sasl.username": self.sasl_username,
                    "sasl.password": self.sasl_password,
                }
            )
        else:
            for name in ("sasl_mechanism", "sasl_username", "sasl_password"):
                if getattr(self, name):
                    raise KafkaConfigError(
                        f"KafkaResource.{name}: set, but security_protocol {protocol} does not use SASL "
                        "(use SASL_PLAINTEXT or SASL_SSL, or unset it)"
                    )
        if self.ssl_ca_location:
            if not uses_tls:
                raise KafkaConfigError(
                    f"KafkaResource.ssl_ca_location: set, but security_protocol {protocol} does not use TLS "
                    "(use SSL or SASL_SSL, or unset it)"
                )
            if not os.path.isfile(self.ssl_ca_location):
                raise KafkaConfigError(f"KafkaResource.ssl_ca_location: no such file {self.ssl_ca_location!r}")
            config["ssl.ca.location"] = self.ssl_ca_location
        return config

    def producer_config(self, **overrides: Any) -> dict[str, Any]:
        config = {
            **self.client_config(),
            # A produced event is acknowledged only once the in-sync replicas have it,
            # and retries never duplicate or reorder it.
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 30_000,
        }
        config.update(_dotted(overrides))
        return config

    def consumer_config(self, **overrides: Any) -> dict[str, Any]:
        config = {
            **self.client_config(),
            # Required by librdkafka even without subscribe(); with assign() no group is joined.
            "group.id": f"{self.client_id}-manual",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # librdkafka's default, stated: never hand a sensor a record of an aborted transaction.
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": self.fetch_wait_max_ms,
        }
        config.update(_dotted(overrides))
        return config

    def admin_config(self, **overrides: Any) -> dict[str, Any]:
        config = self.client_config()
        config.update(_dotted(overrides))
        return config

    def __repr_args__(self):
        # repr() shows up in tracebacks and debug logs: mask the secrets there too.
        for name, value in super().__repr_args__():
            yield name, ("***" if name in ("sasl_password", "signing_key") and value else value)

    def describe(self) -> dict[str, Any]:
        """The client configuration with secrets masked (for logs and error messages)."""
        return redact(self.client_config())

    # ------------------------------------------------------------------ clients

    def producer(self, **overrides: Any):
        from confluent_kafka import Producer

        return Producer(self.producer_config(**overrides))

    def consumer(self, **overrides: Any):
        """A consumer for manual `assign()`; keyword overrides use `_` for `.` (fetch_wait_max_ms=50)."""
        from confluent_kafka import Consumer

        return Consumer(self.consumer_config(**overrides))

    def admin(self, **overrides: Any):
        from confluent_kafka.admin import AdminClient

        return AdminClient(self.admin_config(**overrides))

    # ------------------------------------------------------------------ operations

    def partitions_for(self, topic: str, timeout: float = 10.0) -> list[int]:
        """Partition ids of an existing topic; raises LookupError when it does not exist."""
        metadata = self.admin().list_topics(topic=topic, timeout=timeout)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            raise LookupError(f"topic {topic!r} does not exist ({info.error if info else 'no metadata'})")
        return sorted(info.partitions)

    def create_topics(
        self, names: Iterable[str], partitions: int = 1, replication: int = 1, timeout: float = 30.0
    ) -> dict[str, str]:
        """Create topics; idempotent. Returns {name: 'created' | 'exists'}; raises on any other outcome.

        A cluster without a reachable controller (librdkafka's mock broker, used by
        `arb-orchestration dev`) cannot serve CreateTopics; there a metadata request
        auto-creates the topics with the broker's default partition count.
        """
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic

        names = list(dict.fromkeys(names))
        if partitions < 1 or replication < 1:
            raise ValueError("partitions and replication must be >= 1")
        admin = self.admin()
        metadata = admin.list_topics(timeout=timeout)
        existing = {name for name, info in metadata.topics.items() if info.error is None}
        outcome = {name: "exists" for name in names if name in existing}
        missing = [name for name in names if name not in existing]
        if not missing:
            return outcome
        if metadata.controller_id not in metadata.brokers:
            return {**outcome, **self._auto_create(missing, timeout)}
        futures = admin.create_topics(
            [
                NewTopic(name, num_partitions=partitions, replication_factor=replication, config=topic_config(replication))
                for name in missing
            ],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        failures = []
        for name, future in futures.items():
            try:
                future.result(timeout=timeout + 5)
                outcome[name] = "created"
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    outcome[name] = "exists"
                else:
                    failures.append(f"{name}: {error}")
        if failures:
            raise RuntimeError(f"could not create Kafka topics: {'; '.join(failures)}")
        self._wait_for_leaders(admin, [n for n in missing if outcome[n] == "created"], timeout)
        return outcome

    def _wait_for_leaders(self, admin, names: list[str], timeout: float) -> None:
        """A created topic is usable once every partition has a leader that answers for it.

        The metadata names the leader a moment before that broker serves the
        partition (NOT_LEADER_FOR_PARTITION meanwhile), so this also asks each
        partition for its offsets.
        """
        import time

        if not names:
            return
        deadline = time.monotonic() + timeout
        pending = list(names)
        ready: dict[str, list[int]] = {}
        while pending:
            metadata = admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))
            for name in list(pending):
                info = metadata.topics.get(name)
                if (
                    info is not None
                    and info.error is None
                    and info.partitions
                    and all(p.leader >= 0 and p.error is None for p in info.partitions.values())
                ):
                    ready[name] = sorted(info.partitions)
                    pending.remove(name)
            if not pending:
                break
            if time.monotonic() >= deadline:
                raise TimeoutError(f"topics created but without a leader after {timeout:g}s: {', '.join(pending)}")
            time.sleep(0.05)
        consumer = self.consumer()
        try:
            for name, partitions in ready.items():
                for partition in partitions:
                    self.watermarks(name, partition, timeout=max(1.0, deadline - time.monotonic()), consumer=consumer)
        finally:
            consumer.close()

    def watermarks(self, topic: str, partition: int, timeout: float = 10.0, consumer=None) -> tuple[int, int]:
        """(low, high) offsets of one partition, retrying while leadership settles; raises after `timeout`."""
        import time

        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        own = consumer is None
        consumer = consumer or self.consumer()
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    return consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=max(0.5, deadline - time.monotonic())
                    )
                except KafkaException as exc:
                    error = exc.args[0] if exc.args else None
                    # librdkafka does not flag these retriable here; they are while leadership settles.
                    retriable = isinstance(error, KafkaError) and (
                        error.retriable()
                        or error.code()
                        in (
                            KafkaError.NOT_LEADER_FOR_PARTITION,
                            KafkaError.LEADER_NOT_AVAILABLE,
                            KafkaError.UNKNOWN_TOPIC_OR_PART,
                            KafkaError._TIMED_OUT,
                        )
                    )
                    if not retriable or time.monotonic() >= deadline:
                        raise
                    time.sleep(0.05)
        finally:
            if own:
                consumer.close()

    def _auto_create(self, names: list[str], timeout: float) -> dict[str, str]:
        producer = self.producer(allow_auto_create_topics=True)
        try:
            outcome = {}
            for name in names:
                info = producer.list_topics(topic=name, timeout=timeout).topics.get(name)
                if info is None or info.error is not None or not info.partitions:
                    raise RuntimeError(
                        f"could not create Kafka topic {name}: the cluster has no controller and did not "
                        f"auto-create it ({info.error if info else 'no metadata'})"
                    )
                outcome[name] = "created"
            return outcome
        finally:
            producer.flush(1)

    def publish(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timeout: float = 30.0,
        producer=None,
        partition: int | None = None,
    ) -> Delivered:
        """Produce one message and wait for the broker's acknowledgement; raises on failure.

        `partition`: this partition; None lets the producer's partitioner pick one from the key.
        """
        own = producer is None
        producer = producer or self.producer()
        result: dict[str, Any] = {}

        def on_delivery(err, msg):
            result["err"], result["msg"] = err, msg

        try:
            where = {} if partition is None else {"partition": partition}
            producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery, **where)
            remaining = producer.flush(timeout)
        finally:
            if own:
                producer.flush(0)
        if "err" not in result:
            # The caller is told "not delivered": drop the message so a reused producer cannot
            # deliver it after that answer (one still in flight may yet land; see docs/kafka.md).
            producer.purge()
            producer.poll(0)
            raise TimeoutError(
                f"no delivery report for {topic} within {timeout:g}s ({remaining} message(s) still queued); "
                f"is the broker at {self.bootstrap_servers} reachable?"
            )
        if result["err"] is not None:
            raise RuntimeError(f"delivery to {topic} failed: {result['err']}")
        msg = result["msg"]
        return Delivered(msg.topic(), msg.partition(), msg.offset())

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_env(cls, **overrides: Any) -> "KafkaResource":
        """Built from the environment at run time (the CLI commands): settings plus the secrets' values."""
        from arb_orchestration import settings

        values: dict[str, Any] = {
            "bootstrap_servers": settings.get("KAFKA_BOOTSTRAP_SERVERS"),
            "security_protocol": settings.get("KAFKA_SECURITY_PROTOCOL"),
            "sasl_mechanism": settings.get("KAFKA_SASL_MECHANISM") or None,
            "sasl_username": settings.get("KAFKA_SASL_USERNAME") or None,
            "sasl_password": os.environ.get("KAFKA_SASL_PASSWORD") or None,
            "ssl_ca_location": settings.get("KAFKA_SSL_CA_LOCATION") or None,
            "signing_key": os.environ.get("EVENT_SIGNING_KEY") or None,
        }
        values.update(overrides)
        return cls(**values)


def topic_config(replication: int) -> dict[str, str]:
    """Topic configs `create_topics` sets for a replication factor.

    With acks=all, the broker acknowledges once the *in-sync* replicas have a record;
    with min.insync.replicas=1 (Kafka's default) that can be the leader alone, and an
    acknowledged record is lost when that leader dies. Three or more replicas: require
    two. Fewer: left to the broker (2 of 2 would stop every write while one broker is down).
    """
    return {"min.insync.replicas": "2"} if replication >= 3 else {}


def _dotted(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`fetch_wait_max_ms=50` -> `{"fetch.wait.max.ms": 50}`; keys with dots pass through."""
    return {key.replace("_", "."): value for key, value in overrides.items()}
