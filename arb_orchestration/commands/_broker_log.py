"""librdkafka's log lines for a command-line tool: collected, not sprayed over stderr.

Without a `logger`, librdkafka writes every failed connection attempt to stderr as
``%3|1795788772.897|FAIL|...`` (a dozen lines before a 3 s publish timeout gives up), ahead of
the command's own one-line error. Given this logger instead, the lines are kept and the command
adds the last error to its message, where an operator reads it once.
"""

from __future__ import annotations

import logging


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.last = record.getMessage()
        except Exception:  # a log line we cannot format is not worth failing the command for
            pass


class BrokerLog:
    """Pass `logger` to a confluent-kafka client (`kafka.producer(logger=log.logger)`); read `last_error`."""

    def __init__(self) -> None:
        # An unregistered Logger: nothing else in the process sees it, no handler of the root applies.
        self.logger = logging.Logger("arb-orchestration.librdkafka", level=logging.DEBUG)
        self._keep = _Keep()
        self.logger.addHandler(self._keep)

    @property
    def last_error(self) -> str | None:
        """The last warning or error, without librdkafka's facility/thread prefix."""
        line = self._keep.last
        if line is None:
            return None
        return line.rsplit("]: ", 1)[-1].strip()

    def suffix(self) -> str:
        return f" (last broker error: {self.last_error})" if self.last_error else ""


def unreachable_broker(kafka, timeout: float = 5.0) -> str | None:
    """None when the cluster answers a metadata request within `timeout`; else a one-line reason.

    Commands whose Kafka calls build their own clients (topic creation, DLQ reads) ask this
    first, quietly, so an unreachable broker is one clear line rather than librdkafka's
    stderr noise and a raw `KafkaError{code=_TRANSPORT,...}` after up to 30 s.
    """
    log = BrokerLog()
    admin = kafka.admin(logger=log.logger)
    try:
        admin.list_topics(timeout=timeout)
    except Exception as exc:  # KafkaException: transport failure, timeout, authentication
        admin.poll(0)  # serve the queued log lines to `log`
        error = exc.args[0] if exc.args else exc
        reason = error.str() if hasattr(error, "str") else str(error)
        return (f"cannot reach the Kafka broker at {kafka.bootstrap_servers} within {timeout:g}s: "
                f"{reason}{log.suffix()}")
    return None
