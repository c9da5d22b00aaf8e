"""`arb-orchestration publish` as an operator meets it: documented exit codes, an unreadable @file
reported as such (not as bad JSON), no 'filled in' line before a validation error, and a warning
for a venue the platform is not configured for."""

from __future__ import annotations

import json

import pytest

from arb_orchestration.commands import publish

EVENT = {"venue": "binance", "symbol": "BTC/USDT:USDT", "price_change_pct": -3.0, "window_seconds": 60,
         "severity": "warning"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("EVENT_SIGNING_KEY", "ARB_EVENT_TOPIC_PREFIX", "KAFKA_SECURITY_PROTOCOL", "EXCHANGE_VENUES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # dry runs and rejections never connect


def test_help_documents_every_exit_code(capsys):
    with pytest.raises(SystemExit) as exit_info:
        publish.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit codes: 0 published" in text
    assert "1 the broker did not acknowledge it" in text
    assert "2 bad input" in text


def test_an_unreadable_file_is_reported_as_unreadable_not_as_bad_json(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    assert publish.main(["market-events", f"@{missing}", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"cannot read {missing}: No such file or directory" in err
    assert "not valid JSON" not in err
    assert publish.main(["market-events", f"@{tmp_path}", "--dry-run"]) == 2  # a directory
    assert "cannot read" in capsys.readouterr().err


def test_bad_json_in_a_file_is_still_bad_json(tmp_path, capsys):
    path = tmp_path / "event.json"
    path.write_text('{"venue": "binance",')
    assert publish.main(["market-events", f"@{path}", "--dry-run"]) == 2
    assert "the event is not valid JSON" in capsys.readouterr().err


def test_no_filled_in_line_before_a_validation_error(capsys):
    body = {k: v for k, v in EVENT.items() if k != "price_change_pct"}
    assert publish.main(["market-events", json.dumps(body), "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert "filled in" not in captured.out
    assert "missing field 'price_change_pct'" in captured.err


def test_filled_in_is_still_shown_for_an_event_that_goes_out(capsys):
    assert publish.main(["market-events", json.dumps(EVENT), "--dry-run"]) == 0
    assert "filled in: schema_version=1, event_id=" in capsys.readouterr().out


def test_a_venue_outside_exchange_venues_is_published_with_a_warning(monkeypatch, capsys):
    monkeypatch.setenv("EXCHANGE_VENUES", "binance,okx")
    assert publish.main(["market-events", json.dumps({**EVENT, "venue": "binanse"}), "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "venue 'binanse' is not one of EXCHANGE_VENUES (binance, okx)" in captured.err
    assert "would publish to market-events" in captured.out
    assert publish.main(["market-events", json.dumps(EVENT), "--dry-run"]) == 0
    assert "EXCHANGE_VENUES" not in capsys.readouterr().err
