"""Process identity that survives a worker restart: (pid, start time in clock ticks since boot).

A pid alone can be reused; the pair cannot (within one boot). The launcher
stores the pair in the run's tags, so whoever checks the run later — the same
worker, a restarted worker, or the daemon on the same host when the worker is
down — can tell whether *that* process is still alive. Linux only (`/proc`);
elsewhere only the pid is checked.
"""

from __future__ import annotations

import os
import socket


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat, or None when the process does not exist (or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    rest = raw[raw.rfind(b")") + 2:]
    return rest[:1].decode(errors="replace") or None


def is_alive(pid: int, ticks: int | None) -> bool:
    """Is the process (pid, ticks) still running? A zombie counts as gone."""
    if pid <= 0:
        return False
    if os.path.isdir("/proc/self"):
        current = start_ticks(pid)
        if current is None or (ticks is not None and current != ticks):
            return False
        return _state(pid) not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def host_identity() -> str:
    """This host (or pod): hostname plus boot id, so a rebooted host is a different one."""
    boot = ""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        pass
    return f"{socket.gethostname()}/{boot}" if boot else socket.gethostname()
