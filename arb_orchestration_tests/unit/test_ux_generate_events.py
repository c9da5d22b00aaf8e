"""`arb-orchestration generate-events` options as an operator types them: nonsense limits are refused
up front (exit 2 naming the option) instead of 'publishing ... until -1 events' and exit 0 having sent
nothing; `--events-per-second` (the name `dev` uses) is accepted; exit codes are documented."""

from __future__ import annotations

import pytest

from arb_orchestration.commands import generate_events


@pytest.fixture(autouse=True)
def unreachable_broker(monkeypatch):
    monkeypatch.delenv("KAFKA_SECURITY_PROTOCOL", raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # refused options never get this far


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--count", "-1"], "--count must be >= 1"),
        (["--count", "0"], "--count must be >= 1"),
        (["--duration", "0"], "--duration must be > 0"),
        (["--duration", "-5"], "--duration must be > 0"),
        (["--critical-probability", "2"], "--critical-probability must be within [0, 1], got 2"),
        (["--warning-probability", "-0.1"], "--warning-probability must be within [0, 1], got -0.1"),
        (["--events-per-second", "0"], "--rate must be > 0"),
    ],
)
def test_nonsense_options_exit_2_naming_the_option(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        generate_events.main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert "publishing" not in captured.out


def test_events_per_second_is_the_same_option_as_rate(monkeypatch, capsys):
    seen = {}

    class RecordingGenerator:
        def __init__(self, **kwargs):
            seen.update(kwargs)
            self.failed, self.last_error = 0, None

        def run(self, duration=None, max_events=None):
            return {"market-events": max_events}

    monkeypatch.setattr(generate_events, "EventGenerator", RecordingGenerator)
    assert generate_events.main(["--events-per-second", "7.5", "--count", "3"]) == 0
    assert seen["events_per_second"] == 7.5
    assert "publishing ~7.5 events/s" in capsys.readouterr().out


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        generate_events.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit codes: 0 every event delivered; 1 some deliveries failed" in text
    assert "--rate RATE, --events-per-second RATE" in text
