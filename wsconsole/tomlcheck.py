"""Strict reading of the TOML files users write (scenarios, proxy rules), with line numbers.

`parse_toml` turns syntax errors into the caller's error class with tomllib's line;
`TomlReader` gives typed getters that refuse unknown keys and bad values, pointing at the line
of the offending key (found by scanning the text, since tomllib does not keep positions).
Every message reads `FILE:LINE: reason`, so a user can jump straight to the mistake.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wsconsole.errors import WsconsoleError


class TomlFileError(WsconsoleError, ValueError):
    """An invalid file: `line` (1-based, when known) and `reason` in plain words."""

    default_name = "file"  # how the message names the file when no path is known

    def __init__(self, reason: str, line: int | None = None, path: str | None = None) -> None:
        self.reason = reason
        self.line = line
        self.path = path
        where = path or self.default_name
        super().__init__(f"{where}:{line}: {reason}" if line else f"{where}: {reason}")


class KeyLines:
    """Maps TOML key paths to the line they are written on (a best-effort text scan)."""

    _ARRAY = re.compile(r"^\[\[\s*([^\]]+?)\s*\]\]")
    _TABLE = re.compile(r"^\[\s*([^\]]+?)\s*\]")
    _PART = r"(?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*')"
    _KEY = re.compile(rf"^({_PART}(?:\s*\.\s*{_PART})*)\s*=")

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[Any, ...], int] = {}
        table: tuple[Any, ...] = ()
        arrays: dict[str, int] = {}
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if match := self._ARRAY.match(line):
                name = self._dotted(match[1])
                index = arrays.get(".".join(name), -1) + 1
                arrays[".".join(name)] = index
                table = (*name, index)
            elif match := self._TABLE.match(line):
                table = self._dotted(match[1])
            elif match := self._KEY.match(line):
                self.lines.setdefault((*table, *self._dotted(match[1])), number)
                continue
            else:
                continue
            self.lines.setdefault(table, number)

    @staticmethod
    def _dotted(key: str) -> tuple[str, ...]:
        return tuple(part.strip().strip("\"'") for part in key.split("."))

    def find(self, *path: Any) -> int | None:
        """Line of the longest known prefix of `path` (the key, else its table), or None."""
        for size in range(len(path), 0, -1):
            line = self.lines.get(tuple(path[:size]))
            if line is not None:
                return line
        return None


def _toml_line(exc: tomllib.TOMLDecodeError) -> int | None:
    lineno = getattr(exc, "lineno", None)
    if isinstance(lineno, int):
        return lineno
    match = re.search(r"at line (\d+)", str(exc))
    return int(match[1]) if match else None


def read_text(path: str | Path, error: type[TomlFileError] = TomlFileError) -> str:
    """A user's file as text (UTF-8); an unreadable one raises `error` naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read the file: {exc}", None, str(path)) from None


def parse_toml(
    text: str, path: str | None = None, error: type[TomlFileError] = TomlFileError
) -> dict[str, Any]:
    """The TOML document in `text`; a syntax error raises `error` with its line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise error(f"not valid TOML: {reason}", _toml_line(exc), path) from None


class TomlReader:
    """Typed getters that raise the reader's error class pointing at the offending key's line."""

    def __init__(
        self, text: str, path: str | None, error: type[TomlFileError] = TomlFileError
    ) -> None:
        self.keys = KeyLines(text)
        self.path = path
        self.error = error

    def fail(self, reason: str, *where: Any) -> TomlFileError:
        """The error for `reason` at the line of the key path `where` (raise it)."""
        return self.error(reason, self.keys.find(*where), self.path)

    def table(self, data: Mapping[str, Any], key: str, *where: Any) -> dict[str, Any]:
        """`data[key]` as a table ({} when absent)."""
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(f"{key} must be a table", *where, key)
        return value

    def check_keys(self, data: Mapping[str, Any], allowed: frozenset[str], *where: Any) -> None:
        """Refuse any key of `data` not in `allowed`, naming the allowed ones."""
        for key in data:
            if key not in allowed:
                known = ", ".join(sorted(allowed)) or "none"
                raise self.fail(f"unknown key {key!r} (allowed: {known})", *where, key)

    def number(
        self,
        data: Mapping[str, Any],
        key: str,
        default: Any,
        *where: Any,
        minimum: float | None = None,
        maximum: float | None = None,
        positive: bool = False,
        integer: bool = False,
    ) -> Any:
        """`data[key]` as a finite number within the bounds (`default` when absent)."""
        if key not in data:
            return default
        value = data[key]
        kind = "an integer" if integer else "a number"
        ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type or not math.isfinite(value):
            raise self.fail(f"{key} must be {kind}, not {value!r}", *where, key)
        if positive and value <= 0:
            raise self.fail(f"{key} must be greater than 0, not {value}", *where, key)
        if minimum is not None and value < minimum:
            raise self.fail(f"{key} must be at least {minimum}, not {value}", *where, key)
        if maximum is not None and value > maximum:
            raise self.fail(f"{key} must be at most {maximum}, not {value}", *where, key)
        return value

    def string(
        self,
        data: Mapping[str, Any],
        key: str,
        default: Any,
        *where: Any,
        choices: frozenset[str] | None = None,
    ) -> Any:
        """`data[key]` as a non-empty string, one of `choices` when given."""
        if key not in data:
            return default
        value = data[key]
        if not isinstance(value, str) or not value:
            raise self.fail(f"{key} must be a non-empty string, not {value!r}", *where, key)
        if choices is not None and value not in choices:
            allowed = ", ".join(sorted(choices))
            raise self.fail(f"{key} must be one of {allowed}, not {value!r}", *where, key)
        return value

    def boolean(self, data: Mapping[str, Any], key: str, default: bool, *where: Any) -> bool:
        """`data[key]` as true or false."""
        if key not in data:
            return default
        value = data[key]
        if not isinstance(value, bool):
            raise self.fail(f"{key} must be true or false, not {value!r}", *where, key)
        return value
