"""The commands' argument parser and flag value types: a bad value exits 2 with one line naming the flag.

argparse prints the usage block before its error; an operator then has to find the line that matters.
`CommandParser` prints only that line (and points at --help). The `type=` callables below refuse a value
the command cannot use (NaN, infinity, zero timeouts, negative counts, ports outside 0-65535) at parse
time, before anything starts or connects; argparse prefixes their message with the flag's name.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from pathlib import Path
from typing import Callable, NoReturn


class CommandParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose errors are one line on stderr, exit code 2."""

    def error(self, message: str) -> NoReturn:
        # argparse says "argument --count: must be >= 1, got 0"; the flag then reads as the sentence's subject.
        named = re.match(r"argument (\S+): (.*)", message, re.S)
        if named:
            message = f"{named.group(1)} {named.group(2)}"
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"is not a whole number: {text!r}") from None


def positive_number(text: str) -> float:
    """A finite number > 0 (seconds, events per second)."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def probability(text: str) -> float:
    """A finite number within [0, 1]."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {text}")
    return value


def positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def required_text(hint: str = "") -> Callable[[str], str]:
    """An argparse type: the text stripped, refused when empty (`hint` finishes the message: what to write)."""
    message = f"must not be empty: {hint}" if hint else "must not be empty"

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(message)
        return text.strip()

    return parse


def non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def port(text: str) -> int:
    """A TCP port to bind, 0 meaning any free port."""
    value = _integer(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port within 0-65535 (0: any free port), got {text}")
    return value


def fixed_port(text: str) -> int:
    """A TCP port people are told to open: 1-65535."""
    value = _integer(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port within 1-65535, got {text}")
    return value


def directory(text: str) -> Path:
    """A directory to use or create: refused when a file is in the way (mkdir would fail after start-up)."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"must be a directory, {text} is a file")
    return path


def output_file(text: str) -> Path:
    """A file to (re)write: refused when it names a directory."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"must be a file path, {text} is a directory")
    if path.parent.exists() and not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot be written: {path.parent} is a file")
    return path


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(text: str) -> str:
    level = text.upper()
    if level not in LOG_LEVELS or not isinstance(logging.getLevelName(level), int):
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(LOG_LEVELS)}, got {text}")
    return level
