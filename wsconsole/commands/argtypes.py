"""Argument types and the one-line error hook shared by the sub-commands.

argparse shows a type's `__name__` in its message ("invalid positive number value: 'x'"),
so each type carries a readable name; `one_line_errors` makes a parser print one line on
stderr and exit 2 instead of dumping its usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from wsconsole.commands.output import fail_usage


def one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make `parser` report bad usage as one line on stderr with exit code 2."""

    def error(message: str) -> NoReturn:
        sys.exit(fail_usage(message))

    parser.error = error  # type: ignore[method-assign]


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def positive(text: str) -> float:
    """A number > 0 (seconds, rates)."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative(text: str) -> float:
    """A number >= 0 (0 often means "off")."""
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def int_between(low: int, high: int | None = None, name: str = "integer") -> Callable[[str], int]:
    """An integer type accepting low <= value (<= high when given)."""

    def parse(text: str) -> int:
        value = _integer(text)
        if value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    parse.__name__ = name
    return parse


positive.__name__ = "positive number"
non_negative.__name__ = "number >= 0"
