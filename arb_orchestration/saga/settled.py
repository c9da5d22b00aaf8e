"""Which failed saga runs are settled: an index the recovery sweep keeps so it need not re-read them every tick.

The sweep looks at every failed or canceled saga run of the last three days, every tick. For each it
takes the saga's claim and reads its log (on the local SQLite instance that opens the run's own event
log database, ~50 ms the first time in a process). Nearly all of those sagas are settled: rolled back,
completed, escalated to a person, resolved by hand. Re-reading them is all the sweep does for them,
and with a few hundred such runs one tick took 14-24 s (measured: 300 rolled-back hedge sagas), close
to Dagster's 60 s sensor timeout; a tick that times out saves nothing, so the sweep would stop.

A saga is recorded here once recovery found it settled (a *terminal* verdict: completed, not started,
compensated, escalated, resolved) for its newest failed/canceled run. Terminal verdicts never change
back: a closed saga refuses to run again (`SagaClosedError`), a resolution is final, and an escalated
saga changes only by a new run (a re-execution, which fails as a new run or succeeds) or by a
resolution (settled too). So an entry stays true for as long as the saga's newest failed run is the
one it names, with the same status; anything else (a newer failed run, a run in progress) is read
again. The entry is a hint for skipping work, never a reason to act.

Stored in the instance's key-value table (one key per saga name; JSON), so it is shared by the sweep's
ticks, survives restarts of the code server, and is read by `needing_attention` (the `sagas list`
command and the `sagas_needing_attention` asset) to skip the sagas that need nobody.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

KEY_PREFIX = "arb/saga_settled/"
# Verdicts (recovery.Verdict values) after which recovery has nothing left to do for the run.
SETTLED_VERDICTS = frozenset({"completed", "not_started", "compensated", "escalated", "resolved"})
# Of those, the ones `needing_attention` may skip without reading the saga: `escalated` waits for a person, and
# `completed` ("every step is done" in recovery.decide, which looks before "escalated") is what the operator's view
# calls escalated when the saga was escalated and a re-execution did the rest but its run still failed.
QUIET_VERDICTS = SETTLED_VERDICTS - {"escalated", "completed"}

_log = logging.getLogger("arb_orchestration.saga.settled")


def index_key(saga_name: str) -> str:
    return f"{KEY_PREFIX}{saga_name}"


@dataclass
class SettledIndex:
    """saga id -> {"run": newest failed/canceled run id, "status": its status, "verdict": ...}."""

    saga_name: str
    entries: dict[str, dict[str, str]] = field(default_factory=dict)
    _loaded: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, saga_name: str, raw: str | None) -> "SettledIndex":
        entries: dict[str, dict[str, str]] = {}
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        if isinstance(data, dict):
            for saga_id, entry in data.items():
                if (isinstance(entry, dict) and isinstance(entry.get("run"), str)
                        and isinstance(entry.get("status"), str) and entry.get("verdict") in SETTLED_VERDICTS):
                    entries[str(saga_id)] = {"run": entry["run"], "status": entry["status"],
                                             "verdict": entry["verdict"]}
        return cls(saga_name, entries, {k: dict(v) for k, v in entries.items()})

    @classmethod
    def load(cls, instance: Any, saga_name: str) -> "SettledIndex":
        """The stored index; an unreadable one is empty (it only saves work)."""
        key = index_key(saga_name)
        try:
            raw = instance.run_storage.get_cursor_values({key}).get(key)
        except Exception as exc:  # noqa: BLE001 - without the index every saga is simply read again
            _log.warning(f"could not read the settled-saga index {key}: {type(exc).__name__}: {exc}")
            raw = None
        return cls.parse(saga_name, raw)

    def verdict(self, saga_id: str, run_id: str, status: str) -> str | None:
        """The settled verdict recorded for this saga, if its newest failed run is still `run_id` in `status`."""
        entry = self.entries.get(saga_id)
        if entry is None or entry["run"] != run_id or entry["status"] != status:
            return None
        return entry["verdict"]

    def settle(self, saga_id: str, run_id: str, status: str, verdict: str) -> None:
        if verdict not in SETTLED_VERDICTS:
            raise ValueError(f"{verdict!r} is not a settled verdict")
        self.entries[saga_id] = {"run": run_id, "status": status, "verdict": verdict}

    def forget(self, saga_id: str) -> None:
        self.entries.pop(saga_id, None)

    def keep_only(self, saga_ids: Iterable[str]) -> None:
        """Drop the sagas no longer listed (their runs left the sweep's lookback)."""
        keep = set(saga_ids)
        for saga_id in [s for s in self.entries if s not in keep]:
            del self.entries[saga_id]

    @property
    def changed(self) -> bool:
        return self.entries != self._loaded

    def save(self, instance: Any) -> bool:
        """Store the index if it changed; True if written."""
        if not self.changed:
            return False
        instance.run_storage.set_cursor_values(
            {index_key(self.saga_name): json.dumps(self.entries, sort_keys=True, separators=(",", ":"))})
        self._loaded = {k: dict(v) for k, v in self.entries.items()}
        return True


def load_indexes(instance: Any, saga_names: Iterable[str]) -> dict[str, SettledIndex]:
    """One read for several sagas' indexes (what `needing_attention` consults)."""
    names = sorted(set(saga_names))
    if not names:
        return {}
    keys = {index_key(name): name for name in names}
    try:
        values: Mapping[str, str] = instance.run_storage.get_cursor_values(set(keys))
    except Exception as exc:  # noqa: BLE001
        _log.warning(f"could not read the settled-saga indexes: {type(exc).__name__}: {exc}")
        values = {}
    return {name: SettledIndex.parse(name, values.get(key)) for key, name in keys.items()}
