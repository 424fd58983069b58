"""Connection profiles as the Connection panel edits them: named `ConnectionOptions` (no Qt).

A profile is a name plus the options every connection has (app/options.py), so it is
validated by the same rules as the command line: building one with a value that cannot work
raises `OptionsError`, whose messages the panel shows next to the offending fields. Saved
to QSettings as JSON (`as_dict` / `from_dict`) in the text forms a user would type.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from wsconsole.app.options import OPTIONS, ConnectionOptions, OptionsError

log = logging.getLogger(__name__)


@dataclass
class Profile(ConnectionOptions):
    """One named connection: its name and its options."""

    name: str = "conn"

    def _more_problems(self, problems: dict[str, str]) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            problems["name"] = "a connection needs a name"
        else:
            self.name = self.name.strip()

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON data for QSettings: lists and objects as the text typed for them."""
        data: dict[str, Any] = {"name": self.name}
        for name, option in OPTIONS.items():
            value = getattr(self, name)
            data[name] = option.codec.text(value) if option.codec.saved_as_text else value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        """Rebuild from saved data; unknown keys are ignored and a saved value that no longer
        works (a CA file since deleted) falls back to its default, with a log line."""
        values = {k: v for k, v in data.items() if k == "name" or k in OPTIONS}
        if values.get("max_attempts") == 0:
            values["max_attempts"] = None  # the window saved "unlimited" as 0 before
        while True:  # each pass drops at least one saved value, so this ends
            try:
                return cls(**values)
            except OptionsError as exc:
                dropped = exc.fields & values.keys()
                log.warning("saved connection %r: %s; using the default of %s instead",
                            values.get("name"), exc, ", ".join(sorted(dropped)))
                if not dropped:
                    raise
                for key in dropped:
                    del values[key]


__all__ = ["Profile"]
