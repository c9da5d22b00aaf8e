"""Saga ids, idempotency keys and the run tags the engine reads and writes.

A saga id names one business transaction across every run that works on it:
the first run, op retries inside it, a re-execution from the UI, and the
forward-recovery runs the recovery sensor launches. Every idempotency key is
derived from it, so all of those runs send the *same* keys to the venues and
nothing moves twice.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Mapping, Protocol

# Set by a trigger (sensor, CLI, recovery) to name the saga explicitly; otherwise
# the saga id is the run's root run id (a re-execution keeps its parent's saga).
SAGA_ID_TAG = "arb/saga_id"
# Marks a run as a saga run; the value is the saga's name unless the job overrides it.
SAGA_TAG = "arb/saga"
# Set on runs the recovery sensor launches: which failed run they continue.
RECOVERY_OF_TAG = "arb/saga_recovery_of"
FORWARD_ATTEMPT_TAG = "arb/saga_forward_attempt"

KEY_LENGTH = 32


class RunLike(Protocol):
    run_id: str
    tags: Mapping[str, str]

    @property
    def root_run_id(self) -> str | None: ...


def _digest(*parts: str) -> str:
    # 32 hex chars = 128 bits: fits every venue's client-order-id limit
    # (OKX 32 alphanumerics, Binance/Bybit 36) and maps 1:1 onto a UUID or a
    # 0x-prefixed 128-bit cloid where a venue wants those.
    joined = "\x1f".join(parts)
    return hashlib.sha256(joined.encode()).hexdigest()[:KEY_LENGTH]


def idempotency_key(saga_name: str, saga_id: str, step: str) -> str:
    """The step's idempotency key: stable across op retries, re-executions and recovery runs."""
    return _digest("saga", saga_name, saga_id, step)


def derive_key(base_key: str, *parts: object) -> str:
    """A sub-key of a step key, e.g. one per venue/symbol/attempt inside a step."""
    return _digest("sub", base_key, *(str(p) for p in parts))


def saga_id_for_run(run: RunLike, get_run: Callable[[str], RunLike | None] | None = None) -> str:
    """The saga a run works on.

    An explicit `arb/saga_id` tag wins; otherwise a re-execution belongs to its
    root run's saga (the root's tag if it had one, else the root run id); a
    fresh run starts a saga named by its own run id. `get_run` is only called
    for re-executions whose own tags do not carry the saga id.
    """
    explicit = run.tags.get(SAGA_ID_TAG)
    if explicit:
        return explicit
    root_id = run.root_run_id
    if root_id and root_id != run.run_id:
        root = get_run(root_id) if get_run is not None else None
        if root is not None and root.tags.get(SAGA_ID_TAG):
            return root.tags[SAGA_ID_TAG]
        return root_id
    return run.run_id


def may_have_history(run: RunLike) -> bool:
    """False only for a fresh run with no saga tag: no earlier run can have logged this saga."""
    return bool(run.tags.get(SAGA_ID_TAG) or run.root_run_id)
