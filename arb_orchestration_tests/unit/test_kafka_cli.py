"""The Kafka commands' validation and output before anything reaches a broker."""

from __future__ import annotations

import io
import json

import pytest

from arb_orchestration.commands import generate_events, publish, replay_dlq, topics
from arb_orchestration.domain.events import parse_event, verify_signature

EVENT = {"venue": "binance", "symbol": "BTC/USDT:USDT", "price_change_pct": -12.5, "window_seconds": 60,
         "severity": "critical"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("EVENT_SIGNING_KEY", "ARB_EVENT_TOPIC_PREFIX", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM",
                 "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SSL_CA_LOCATION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens: dry runs must not need it


def dry_run_payload(out: str) -> dict:
    return json.loads(out.split("would publish to market-events: ", 1)[1])


def test_publish_dry_run_fills_in_and_signs(monkeypatch, capsys):
    monkeypatch.setenv("EVENT_SIGNING_KEY", "k1")
    assert publish.main(["market-events", json.dumps(EVENT), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "filled in: schema_version=1, event_id=" in out
    payload = dry_run_payload(out)
    verify_signature(parse_event("market-events", json.dumps(payload)), "k1")


def test_publish_reads_stdin_and_files_and_warns_on_unsigned_critical(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(EVENT)))
    assert publish.main(["market-events", "-", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "UNSIGNED" in captured.err and "signature" not in dry_run_payload(captured.out)
    path = tmp_path / "event.json"
    path.write_text(json.dumps({**EVENT, "severity": "info", "event_id": "from-file"}))
    assert publish.main(["market-events", f"@{path}", "--dry-run"]) == 0
    assert dry_run_payload(capsys.readouterr().out)["event_id"] == "from-file"


@pytest.mark.parametrize(
    "topic, body, message",
    [
        ("market-events", {**EVENT, "window_seconds": "60"}, "field 'window_seconds'"),
        ("market-events", {k: v for k, v in EVENT.items() if k != "symbol"}, "missing field 'symbol'"),
        ("capital-events", EVENT, "missing field 'asset'"),
        ("orders", EVENT, "unknown topic 'orders'"),
        ("market-events", [1, 2], "must be a JSON object"),
    ],
)
def test_publish_rejects_bad_input_with_exit_2(capsys, topic, body, message):
    assert publish.main([topic, json.dumps(body), "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_publish_accepts_the_prefixed_topic_name(monkeypatch, capsys):
    monkeypatch.setenv("ARB_EVENT_TOPIC_PREFIX", "bench-")
    assert publish.main(["bench-market-events", json.dumps(EVENT), "--dry-run"]) == 0
    assert "would publish to bench-market-events" in capsys.readouterr().out


def test_bad_kafka_config_is_reported_naming_the_field(monkeypatch, capsys):
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    assert topics.main(["create"]) == 2
    assert "KafkaResource.sasl_mechanism" in capsys.readouterr().err
    assert generate_events.main(["--count", "1"]) == 2
    assert "KafkaResource.sasl_mechanism" in capsys.readouterr().err


def test_replay_dlq_needs_a_dlq_topic_and_a_selection(capsys):
    assert replay_dlq.main(["market-events", "--all"]) == 2
    assert "not a dead-letter topic" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        replay_dlq.main(["market-events.dlq"])  # neither --all nor --offset


def test_all_topic_names_include_the_dlqs():
    assert topics.all_topic_names("p-") == [
        "p-market-events", "p-market-events.dlq", "p-capital-events", "p-capital-events.dlq",
        "p-funding-rate-events", "p-funding-rate-events.dlq",
    ]
