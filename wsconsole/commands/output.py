"""Human or JSON-lines output shared by every sub-command (DESIGN.md: machine-readable output)."""

from __future__ import annotations

import sys
from typing import Any, TextIO

import orjson


def _default(value: object) -> object:
    """Encode what orjson does not know natively: bytes as text, enums by value, else str()."""
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "replace")
    if hasattr(value, "value"):
        return value.value
    return str(value)


class Output:
    """Prints events: one JSON object per line with `--json`, a readable line otherwise."""

    def __init__(self, json_mode: bool, stream: TextIO | None = None) -> None:
        self.json_mode = json_mode
        self.stream = stream or sys.stdout

    def event(self, event: str, human: str | None = None, **fields: Any) -> None:
        """Emit one event; `human` is the text shown without --json (default: key=value)."""
        if self.json_mode:
            record = {"event": event, **fields}
            line = orjson.dumps(record, default=_default, option=orjson.OPT_NON_STR_KEYS)
            self.stream.write(line.decode() + "\n")
        else:
            if human is None:
                details = " ".join(f"{k}={v}" for k, v in fields.items())
                human = f"{event} {details}".rstrip()
            self.stream.write(human + "\n")
        self.stream.flush()


def fail_usage(message: str) -> int:
    """Print a one-line usage error on stderr and return exit code 2."""
    sys.stderr.write(f"wsconsole: error: {message}\n")
    sys.stderr.flush()
    return 2
