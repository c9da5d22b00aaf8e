"""The trading kill switch: one durable flag that pauses every money-moving job.

The emergency stop-loss engages it; `resume_trading_job` releases it. It lives
in the Dagster instance's key-value table (`run_storage.get_cursor_values` /
`set_cursor_values`: the same database as runs, SQLite or PostgreSQL), so the
run workers, the sensors and the webserver all read the same value.

Money-moving sagas (`build_saga(..., refuse_while_trading_paused=True)`, the
default) refuse to *start* while it is engaged; sensors that trigger them
should call `trading_paused(instance)` and skip. The stop-loss ignores it.
An unreadable value counts as paused: when in doubt, do not move money.
"""

from __future__ import annotations

import abc
import json
import threading
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dagster import DagsterInstance

TRADING_PAUSE_KEY = "arb/trading_pause"


@dataclass(frozen=True)
class TradingPause:
    """The kill switch's state and who set it, when and why."""

    paused: bool
    reason: str = ""
    changed_at: float | None = None
    changed_by: str = ""
    run_id: str | None = None


NEVER_PAUSED = TradingPause(paused=False, reason="never paused")


class TradingSwitch(abc.ABC):
    """Where the flag is stored; `InstanceTradingSwitch` in Dagster, `InMemoryTradingSwitch` in tests."""

    @abc.abstractmethod
    def get(self) -> TradingPause: ...

    @abc.abstractmethod
    def _put(self, state: TradingPause) -> None: ...

    def pause(self, reason: str, *, by: str, run_id: str | None = None) -> TradingPause:
        state = TradingPause(True, reason, time.time(), by, run_id)
        self._put(state)
        return state

    def resume(self, reason: str, *, by: str, run_id: str | None = None) -> TradingPause:
        state = TradingPause(False, reason, time.time(), by, run_id)
        self._put(state)
        return state


class InMemoryTradingSwitch(TradingSwitch):
    def __init__(self, state: TradingPause = NEVER_PAUSED):
        self._state = state
        self._lock = threading.Lock()

    def get(self) -> TradingPause:
        with self._lock:
            return self._state

    def _put(self, state: TradingPause) -> None:
        with self._lock:
            self._state = state


class InstanceTradingSwitch(TradingSwitch):
    def __init__(self, instance: "DagsterInstance"):
        self.instance = instance

    def get(self) -> TradingPause:
        raw = self.instance.run_storage.get_cursor_values({TRADING_PAUSE_KEY}).get(TRADING_PAUSE_KEY)
        return parse_state(raw)

    def _put(self, state: TradingPause) -> None:
        self.instance.run_storage.set_cursor_values({TRADING_PAUSE_KEY: json.dumps(asdict(state))})


def parse_state(raw: str | None) -> TradingPause:
    if raw is None:
        return NEVER_PAUSED
    try:
        data = json.loads(raw)
        return TradingPause(
            paused=bool(data["paused"]),
            reason=str(data.get("reason", "")),
            changed_at=data.get("changed_at"),
            changed_by=str(data.get("changed_by", "")),
            run_id=data.get("run_id"),
        )
    except (ValueError, KeyError, TypeError):
        return TradingPause(True, f"kill-switch state unreadable ({raw[:80]!r}); treated as paused")


def trading_paused(instance: "DagsterInstance") -> tuple[bool, str]:
    """(paused, reason) — call it before starting anything that moves money."""
    state = InstanceTradingSwitch(instance).get()
    return state.paused, state.reason


def pause_trading(instance: "DagsterInstance", reason: str, *, by: str, run_id: str | None = None) -> TradingPause:
    return InstanceTradingSwitch(instance).pause(reason, by=by, run_id=run_id)


def resume_trading(instance: "DagsterInstance", reason: str, *, by: str, run_id: str | None = None) -> TradingPause:
    return InstanceTradingSwitch(instance).resume(reason, by=by, run_id=run_id)
