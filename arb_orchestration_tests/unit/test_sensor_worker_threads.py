"""The daemon evaluates every sensor in its own thread: no sensor tick waits for another.

With `num_workers: 4` and 11 sensors, the daemon's thread pool queued ticks behind the
slow ones (market observation ~2-4 s, sweeps ~1-2 s under load) in a random order each
loop, and the emergency sensors' ticks started up to 2.5 s late ("tick 2.48s late" in their
summaries, `arb-orchestration dev` on a loaded 2-core machine), shortening their long poll or
making them miss a whole 5 s loop. Threads are cheap; a critical event waiting is not.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from arb_orchestration.definitions import defs

ROOT = Path(__file__).resolve().parents[2]


def _sensors() -> list[str]:
    return [sensor.name for sensor in defs.get_repository_def().sensor_defs]


def test_the_local_instance_has_a_sensor_thread_for_every_sensor():
    local = yaml.safe_load((ROOT / "arb_orchestration" / "sim" / "dagster_local.yaml").read_text())
    assert local["sensors"]["use_threads"] is True
    assert local["sensors"]["num_workers"] >= len(_sensors()), _sensors()


def test_the_helm_daemon_has_a_sensor_thread_for_every_sensor():
    values = yaml.safe_load((ROOT / "helm-values" / "values-control-plane.yaml").read_text())
    sensors = values["dagsterDaemon"]["sensors"]
    assert sensors["useThreads"] is True
    assert sensors["numWorkers"] >= len(_sensors()), _sensors()
