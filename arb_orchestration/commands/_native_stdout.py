"""Keep native libraries' stray prints off a command's standard output.

HiGHS (the route planner's MILP solver) prints a debug line,
``HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();``, straight to
the C-level stdout when it re-solves a restarted model to accept a new incumbent, whatever
its ``output_flag``. A command whose stdout is a JSON document (``plan-route``) would
emit invalid JSON. While the block runs, file descriptor 1 points at stderr; the C streams
are flushed before it is restored, so nothing buffered leaks out afterwards.

Process-wide (file descriptors are): for single-threaded command-line tools, not for code
running inside a Dagster run, where such a line only lands in the compute log.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


def _flush_c_streams() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library to flush (not on Linux/macOS): nothing buffered there
        pass


@contextmanager
def native_stdout_to_stderr() -> Iterator[None]:
    """Inside the block, anything written to file descriptor 1 goes to stderr instead."""
    sys.stdout.flush()
    _flush_c_streams()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        _flush_c_streams()
        os.dup2(saved, 1)
        os.close(saved)
