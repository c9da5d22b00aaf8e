"""The demo broker: librdkafka's mock cluster, reachable over TCP by other processes.

A confluent-kafka client created with `test.mock.num.brokers` hosts an in-process
Kafka-protocol broker on a loopback port; other processes (the Dagster code server,
`arb-orchestration publish`) connect to the address it reports, for as long as the
hosting client lives. Only `arb-orchestration dev` uses it: the tests run real
Apache Kafka (`scripts/kafka-broker.sh`).

Known differences from a real broker (measured, see DAGSTER_FACTS): topics are
auto-created with 4 partitions on first use and CreateTopics times out (no
controller), which `KafkaResource.create_topics` handles; fetches wait the full
`fetch.wait.max.ms`; group membership is slow to notice departures, so consumers
should assign partitions manually (ours do).
"""

from __future__ import annotations

import threading


class MockKafkaCluster:
    """Starts and stops one librdkafka mock cluster; `start()` returns its bootstrap address."""

    def __init__(self, num_brokers: int = 1, start_timeout: float = 10.0):
        if num_brokers < 1:
            raise ValueError("num_brokers must be >= 1")
        self.num_brokers = num_brokers
        self.start_timeout = start_timeout
        self.bootstrap: str | None = None
        self._host = None
        self._lock = threading.Lock()

    def start(self) -> str:
        from confluent_kafka import Producer

        with self._lock:
            if self._host is not None:
                return self.bootstrap  # type: ignore[return-value]
            host = Producer(
                {
                    "test.mock.num.brokers": self.num_brokers,
                    "client.id": "arb-orchestration-mock-host",
                    # librdkafka announces the mock cluster at NOTICE level; keep the demo output clean.
                    "log_level": 4,
                }
            )
            metadata = host.list_topics(timeout=self.start_timeout)
            brokers = sorted(metadata.brokers.values(), key=lambda b: b.id)
            if not brokers:
                raise RuntimeError("librdkafka mock cluster reported no brokers")
            self._host = host
            self.bootstrap = ",".join(f"{b.host}:{b.port}" for b in brokers)
            return self.bootstrap

    @property
    def running(self) -> bool:
        return self._host is not None

    def stop(self) -> None:
        """Tear the cluster down: its brokers close when the hosting client is destroyed."""
        with self._lock:
            host, self._host = self._host, None
            self.bootstrap = None
        if host is not None:
            host.close()

    def __enter__(self) -> "MockKafkaCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
