"""Every `arb-orchestration` command's flags, reviewed from the operator's side.

A bad flag value (negative count, zero or NaN timeout, port out of range, unknown topic, missing file,
unknown log level) exits 2 with ONE line on stderr that names the flag, before anything starts or connects;
never a traceback. The help of every option with a value states its unit and default. Each command's
`main(argv)` is called directly; whatever would start a world, a generator or reach a broker is replaced
by a tripwire, so an unchecked value fails the test instead of starting something."""

from __future__ import annotations

import re

import pytest

from arb_orchestration.commands import (
    dev,
    generate_events,
    plan_route,
    publish,
    replay_dlq,
    settings,
    topics,
    wise_webhooks,
    world,
)

_REAL_SERVE = wise_webhooks._serve
EVENT = '{"venue":"binance","symbol":"BTC/USDT:USDT","price_change_pct":-1.0,"window_seconds":60,"severity":"info"}'


def _tripwire(what):
    def trip(*args, **kwargs):
        raise AssertionError(f"{what} started although a flag was bad")

    return trip


@pytest.fixture(autouse=True)
def tripwires(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dev, "install_stop_signals", _tripwire("dev"))
    monkeypatch.setattr(dev, "world_from_args", _tripwire("dev's world"))
    monkeypatch.setattr(world, "world_from_args", _tripwire("the world"))
    monkeypatch.setattr(generate_events, "EventGenerator", _tripwire("the event generator"))
    monkeypatch.setattr(replay_dlq, "unreachable_broker", _tripwire("replay-dlq's broker check"))
    monkeypatch.setattr(topics, "unreachable_broker", _tripwire("topics' broker check"))
    monkeypatch.setattr(wise_webhooks, "_serve", _tripwire("the webhook receiver"))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")


def _call(module, argv, capsys):
    try:
        code = module.main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _refused(module, argv, capsys, flag: str) -> str:
    code, _, err = _call(module, argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (argv, code, err)
    assert "Traceback" not in err
    assert len(lines) == 1, f"{argv}: expected one line on stderr, got:\n{err}"
    assert flag in lines[0], f"{argv}: {lines[0]!r} does not name {flag}"
    return lines[0]


PORT_CASES = [
    (dev, ["--exchange-port", "70000"], "--exchange-port"),
    (dev, ["--port", "-1"], "--port"),
    (dev, ["--port", "0"], "--port"),  # the UI port must be a real one: nobody learns a random one
    (dev, ["--smtp-port", "65536"], "--smtp-port"),
    (world, ["--wise-port", "-5"], "--wise-port"),
    (world, ["--mailbox-port", "99999"], "--mailbox-port"),
    (wise_webhooks, ["serve", "--port", "70000"], "--port"),
    (wise_webhooks, ["serve", "--port", "-1"], "--port"),
]

NUMBER_CASES = [
    (dev, ["--events-per-second", "nan"], "--events-per-second"),
    (dev, ["--events-per-second", "0"], "--events-per-second"),
    (dev, ["--events-per-second", "-2"], "--events-per-second"),
    (publish, ["--dry-run", "--timeout", "0", "market-events", EVENT], "--timeout"),
    (publish, ["--dry-run", "--timeout", "-1", "market-events", EVENT], "--timeout"),
    (publish, ["--dry-run", "--timeout", "nan", "market-events", EVENT], "--timeout"),
    (publish, ["--dry-run", "--timeout", "inf", "market-events", EVENT], "--timeout"),
    (topics, ["create", "--partitions", "0"], "--partitions"),
    (topics, ["create", "--partitions", "-3"], "--partitions"),
    (topics, ["create", "--replication", "0"], "--replication"),
    (replay_dlq, ["market-events.dlq", "--offset", "3", "--partition", "-1"], "--partition"),
    (replay_dlq, ["market-events.dlq", "--offset", "-1"], "--offset"),
    (generate_events, ["--rate", "nan"], "--rate"),
    (generate_events, ["--rate", "inf"], "--rate"),
    (generate_events, ["--rate", "0"], "--rate"),
    (generate_events, ["--duration", "nan"], "--duration"),
    (generate_events, ["--duration", "0"], "--duration"),
    (generate_events, ["--count", "0"], "--count"),
    (generate_events, ["--count", "-5"], "--count"),
    (generate_events, ["--warning-probability", "nan"], "--warning-probability"),
    (generate_events, ["--critical-probability", "1.5"], "--critical-probability"),
    (plan_route, ["--time-limit", "0", "instance.json"], "--time-limit"),
    (plan_route, ["--time-limit", "-1", "instance.json"], "--time-limit"),
    (plan_route, ["--time-limit", "nan", "instance.json"], "--time-limit"),
    (wise_webhooks, ["serve", "--log-level", "LOUD"], "--log-level"),
]


@pytest.mark.parametrize("module, argv, flag", PORT_CASES + NUMBER_CASES,
                         ids=[f"{m.__name__.rsplit('.', 1)[1]}:{' '.join(a[:3])}" for m, a, _ in PORT_CASES + NUMBER_CASES])
def test_a_bad_flag_value_exits_2_with_one_line_naming_the_flag(module, argv, flag, capsys):
    _refused(module, argv, capsys, flag)


def test_a_non_number_is_refused_in_one_line_too(capsys):
    line = _refused(publish, ["--timeout", "soon", "market-events", EVENT], capsys, "--timeout")
    assert "soon" in line
    _refused(topics, ["create", "--partitions", "three"], capsys, "--partitions")


def test_an_unknown_flag_or_subcommand_is_one_line(capsys):
    _refused(settings, ["--verbose"], capsys, "--verbose")
    _refused(topics, ["delete"], capsys, "delete")
    _refused(wise_webhooks, ["listen"], capsys, "listen")


def test_an_unknown_topic_names_it(capsys):
    line = _refused(publish, ["--dry-run", "trade-events", EVENT], capsys, "trade-events")
    assert "market-events" in line  # and says what is accepted


def test_a_missing_file_names_the_flag_or_argument(capsys):
    line = _refused(plan_route, ["missing.json"], capsys, "missing.json")
    assert "cannot be read" in line
    _refused(publish, ["--dry-run", "market-events", "@missing.json"], capsys, "missing.json")


def test_a_missing_public_key_file_names_the_flag(capsys, monkeypatch):
    monkeypatch.setattr(wise_webhooks, "_serve", _REAL_SERVE)  # it fails reading the key, before serving
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    line = _refused(wise_webhooks, ["serve", "--public-key", "missing.pem"], capsys, "--public-key")
    assert "missing.pem" in line


def _option_help(help_text: str, flag: str) -> str:
    """The help of one option: its line and the continuation lines, whitespace collapsed."""
    lines = help_text.splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"^\s+(-\w+, )?{re.escape(flag)}\b", line):
            block = [line]
            for more in lines[i + 1:]:
                if not more.strip() or re.match(r"^\s{1,4}-", more):
                    break
                block.append(more)
            return " ".join(" ".join(block).split())
    raise AssertionError(f"{flag} not in help:\n{help_text}")


HELP_CASES = [
    (dev, [], {"--exchange-port": ["port", "default 8701"], "--port": ["port", "default 3000"],
               "--host": ["default 127.0.0.1"], "--seed": ["default 42"], "--maildir": ["default"],
               "--dagster-home": ["default .dagster_home"],
               "--events-per-second": ["events per second", "default 2"]}),
    (world, [], {"--smtp-port": ["default 8025"], "--seed": ["default 42"], "--maildir": ["default"],
                 "--env-file": ["default .dagster_home/world.env"]}),
    (publish, [], {"--timeout": ["seconds", "default 30"]}),
    (topics, ["create"], {"--partitions": ["default 3"], "--replication": ["default 1"]}),
    (replay_dlq, [], {"--partition": ["default 0"]}),
    (generate_events, [], {"--rate": ["events per second", "default 2"],
                           "--duration": ["seconds", "default"], "--count": ["events", "default"],
                           "--seed": ["default"], "--warning-probability": ["default 0.03"],
                           "--critical-probability": ["default 0"]}),
    (plan_route, [], {"--time-limit": ["seconds", "default 60"]}),
    (wise_webhooks, ["serve"], {"--port": ["default 8704"], "--log-level": ["default INFO"]}),
]


@pytest.mark.parametrize("module, prefix, expected", HELP_CASES,
                         ids=[m.__name__.rsplit(".", 1)[1] for m, _, _ in HELP_CASES])
def test_the_help_states_units_and_defaults(module, prefix, expected, capsys):
    code, out, _ = _call(module, [*prefix, "--help"], capsys)
    assert code == 0
    for flag, words in expected.items():
        text = _option_help(out, flag)
        for word in words:
            assert word in text, f"{module.__name__} {flag}: {word!r} missing from {text!r}"


def test_a_path_that_cannot_be_used_is_refused_before_anything_starts(capsys, tmp_path):
    (tmp_path / "a-file").write_text("x")
    _refused(dev, ["--dagster-home", "a-file"], capsys, "--dagster-home")
    _refused(dev, ["--maildir", "a-file"], capsys, "--maildir")
    _refused(world, ["--env-file", str(tmp_path)], capsys, "--env-file")
    _refused(world, ["--env-file", "a-file/world.env"], capsys, "--env-file")
