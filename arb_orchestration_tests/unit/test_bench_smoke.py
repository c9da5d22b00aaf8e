"""Smoke tests of the benchmarks in bench/: each core function runs on a tiny input and returns sane structure.

No timing is asserted (performance claims live in the benchmarks' own output).
The stop-loss benchmark runs for real on a tiny world (2 venues x 3 perps, the
exchange simulator on a free loopback port); the sensor benchmark's broker-free
parts are checked here (it needs a real Kafka broker to run at all).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    """Import bench/<name>.py (bench/ is a folder of scripts, not a package)."""
    module_name = f"_bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, BENCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_stop_loss_parallel_flattens_a_tiny_world_both_ways_and_summarises():
    bench = _load("stop_loss_parallel")
    result = bench.measure(venues=2, positions=3, trials=1, latencies=(0.0,), job_trials=0, warmup=False)
    trials = result["trials"]
    assert sorted(t.variant for t in trials) == ["parallel", "sequential"]
    assert all(t.flat and t.orders == 6 and t.confirmed_s > 0 and t.last_close_s <= t.confirmed_s for t in trials)
    rows = {row["variant"]: row for row in result["summary"]}
    assert set(rows) == {"parallel", "sequential", "ratio"}
    assert rows["parallel"]["n"] == 1 and rows["parallel"]["confirmed_median"] > 0
    assert rows["ratio"]["confirmed_ratio"] == pytest.approx(
        rows["sequential"]["confirmed_median"] / rows["parallel"]["confirmed_median"]
    )


def test_stop_loss_parallel_venues_list_distinct_perps_for_every_position():
    bench = _load("stop_loss_parallel")
    specs = bench.venue_specs(5, 20)
    assert [s.name for s in specs] == ["binance", "okx", "bybit", "kraken", "hyperliquid"]
    assert all(len({p.symbol for p in s.perps}) == 20 and not s.positions for s in specs)
    with pytest.raises(ValueError):
        bench.venue_specs(5, len(bench.PERP_BASES) + 1)


def test_sensor_throughput_builds_the_funding_sensor_on_the_prefixed_topic():
    bench = _load("sensor_throughput")
    sensor, settings = bench.build_funding_sensor("bench-smoke-", max_messages=7)
    assert sensor.name == "funding_deviation_sensor"
    assert [job.name for job in sensor.jobs] == ["funding_rate_hedge"]
    assert "bench-smoke-funding-rate-events" in sensor.description
    assert settings.max_messages == 7


def test_sensor_throughput_cursor_position_and_summary():
    bench = _load("sensor_throughput")
    cursor = json.dumps({"v": 1, "offsets": {"t/0": 5, "t/1": 7, "other/0": 100}})
    assert bench.cursor_position(cursor, "t") == 12
    assert bench.cursor_position(None, "t") == 0
    passes = [
        bench.Pass("raw", 100, 1.0), bench.Pass("raw+json", 100, 2.0),
        bench.Pass("sensor", 100, 4.0, ticks=3, run_requests=2, extra={"cursor_bytes": 10}),
    ]
    summary = bench.summarize(passes)
    assert summary["rate"] == {"raw": 100.0, "raw+json": 50.0, "sensor": 25.0}
    assert summary["ratio_vs_raw"] == pytest.approx(0.25)
    assert summary["sensors"]["sensor"]["ratio_vs_raw_json"] == pytest.approx(0.5)


def test_run_all_finds_every_benchmark_and_gives_the_known_ones_small_arguments():
    run_all = _load("run_all")
    names = run_all.discover()
    assert {"stop_loss_parallel", "sensor_throughput"} <= set(names)
    assert "run_all" not in names and not any(n.startswith("_") for n in names)
    assert set(run_all.SMALL_ARGS) >= {"stop_loss_parallel", "sensor_throughput"}


def test_sensor_throughput_judges_against_the_fastest_plain_reader_never_the_ceiling():
    bench = _load("sensor_throughput")
    passes = [
        bench.Pass("raw", 100, 1.0), bench.Pass("raw-batch@1000", 100, 0.5),
        bench.Pass("raw-batch@1000+sensor-client", 100, 0.25), bench.Pass("raw+json", 100, 2.0),
        bench.Pass("validate-only@1000", 100, 0.2),  # a ceiling for the sensor, not a baseline
        bench.Pass("sensor", 100, 2.0, ticks=2, run_requests=1, extra={"cursor_bytes": 10}),
    ]
    summary = bench.summarize(passes)
    assert summary["best_raw"] == "raw-batch@1000+sensor-client"
    assert summary["ratio_vs_raw"] == pytest.approx(0.125)
    assert summary["sensors"]["sensor"]["ratio_vs_poll"] == pytest.approx(0.5)


def test_sensor_throughput_python_path_sensor_is_the_sensor_with_its_scanner_off(capsys):
    from arb_orchestration.domain.events import encode_event

    bench = _load("sensor_throughput")

    def scanner_of(sensor):
        [evaluator] = [c.cell_contents for c in sensor._raw_fn.__closure__ if hasattr(c.cell_contents, "scan")]
        return evaluator.scan

    chunk = [encode_event({"schema_version": 1, "event_id": f"e{i}", "ts": 1772366400 + i, "venue": "okx",
                           "symbol": "BTC/USDT:USDT", "rate": 1e-5, "interval_hours": 8}) for i in range(3)]
    shipped, _settings = bench.build_funding_sensor("bench-smoke-")
    assert scanner_of(shipped)(chunk, fresher_than=0.0) is not None
    assert scanner_of(bench.python_path_sensor("bench-smoke-"))(chunk, fresher_than=0.0) is None
    # Neither the scan-only ceiling nor the python-path sensor is a plain baseline; the table names both.
    passes = [
        bench.Pass("raw", 100, 1.0), bench.Pass("raw-batch@500", 100, 0.5), bench.Pass("raw+json", 100, 2.0),
        bench.Pass("validate-only@500", 100, 0.8), bench.Pass("scan-only@500", 100, 0.1),
        bench.Pass("sensor", 100, 0.8, ticks=1, run_requests=1, extra={"cursor_bytes": 10}),
        bench.Pass("sensor-python-path", 100, 1.6, ticks=1, run_requests=1, extra={"cursor_bytes": 10}),
    ]
    summary = bench.summarize(passes)
    assert summary["best_raw"] == "raw-batch@500" and summary["ratio_vs_raw"] == pytest.approx(0.625)
    assert summary["sensors"]["sensor-python-path"]["ratio_vs_raw"] == pytest.approx(0.3125)
    memory = {"events": 100, "ticks": 1, "maxrss_before_kb": 1, "maxrss_after_kb": 1, "rss_before_kb": 1,
              "rss_after_kb": 1, "tracemalloc_peak": 1, "traced_events": 100, "traced_ticks": 1}
    bench.print_summary({"events": 100, "partitions": 1, "max_messages": 50, "summary": summary, "memory": memory})
    out = capsys.readouterr().out
    assert "scan-only@500 = 5.000 of the best raw" in out
    assert "sensor / sensor-python-path = 2.00x" in out


def test_route_planner_bench_compares_against_its_baselines_in_the_same_run(monkeypatch, capsys):
    from arb_orchestration.domain import routing_bnb, routing_solver

    bench = _load("route_planner")
    monkeypatch.setattr(routing_bnb, "solve", routing_bnb.solve)  # the bench wraps it to count proofs: undone after
    code = bench.main(["--sizes", "5", "--seeds", "2", "--no-generic", "--compare-highs", "--compare-sequential",
                       "--compare-overlap"])
    out = capsys.readouterr().out
    assert code == 0
    rows = [re.match(r"\s+5\s+(\d) (.+?)\s+[0-9.]+s, planner\s+[0-9.]+s: +[0-9.]+x, same fee per asset$", line)
            for line in out.splitlines() if line.endswith("same fee per asset")]
    assert sorted(row.groups() for row in rows) == [
        (seed, name) for seed in ("0", "1")
        for name in ("HiGHS alone", "core sub-search at the root", "one asset after another")]
    for name in ("HiGHS alone", "one asset after another", "core sub-search at the root"):
        assert f"5 venues: speed-up vs {name} per seed:" in out
    assert routing_solver.PRESTART_ASSETS == 3 and routing_solver.COMPILED_FIRST  # the baselines restore them
    assert routing_bnb.ROOT_CUTS & routing_bnb.CORE_OVERLAP
    # the compiled column counts the planner's own proofs per run (the interleaved baselines' calls are not counted)
    compiled = [line.split()[-1] for line in out.splitlines() if re.match(r"\s+5\s+\d\s+\d+\s", line)]
    assert len(compiled) == 2 and all(c.split("/")[0] == c.split("/")[1] != "0" for c in compiled), compiled
