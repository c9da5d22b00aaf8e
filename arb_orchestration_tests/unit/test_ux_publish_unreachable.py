"""`arb-orchestration publish` against a broker that is not there: one error line naming the broker and
librdkafka's reason, not a dozen raw ``%3|...|FAIL|`` lines on stderr ahead of it. Nothing listens on
127.0.0.1:1, so the connection is refused at once; the publish gives up after its 1 s timeout."""

from __future__ import annotations

import json

from arb_orchestration.commands import publish
from arb_orchestration.commands._broker_log import BrokerLog

EVENT = {"venue": "binance", "symbol": "BTC/USDT:USDT", "price_change_pct": -1.0, "window_seconds": 60,
         "severity": "info"}


def test_unreachable_broker_is_one_clear_line_with_exit_1(monkeypatch, capfd):
    for name in ("EVENT_SIGNING_KEY", "ARB_EVENT_TOPIC_PREFIX", "KAFKA_SECURITY_PROTOCOL", "EXCHANGE_VENUES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    assert publish.main(["market-events", json.dumps(EVENT), "--timeout", "1"]) == 1
    err = capfd.readouterr().err  # capfd: librdkafka writes to file descriptor 2 from C
    assert "|FAIL|" not in err and "%3|" not in err and "TERMINATE" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "could not publish to market-events" in lines[0]
    assert "is the broker at 127.0.0.1:1 reachable?" in lines[0]
    assert "last broker error: " in lines[0] and "Connection refused" in lines[0]


def test_broker_log_keeps_the_last_warning_without_librdkafkas_prefix():
    log = BrokerLog()
    assert log.last_error is None and log.suffix() == ""
    log.logger.log(7, "%s [%s] %s", "CONNECT", "p#1", "[thrd:main]: debug noise")  # below WARNING: ignored
    assert log.last_error is None
    log.logger.log(40, "%s [%s] %s", "FAIL", "arb#producer-1", "[thrd:h:1/bootstrap]: h:1/bootstrap: Connect failed")
    assert log.last_error == "h:1/bootstrap: Connect failed"
    assert log.suffix() == " (last broker error: h:1/bootstrap: Connect failed)"
