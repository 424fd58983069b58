"""Message templates with `{placeholders}` and paths into received messages: pure, no I/O.

A stack file (docs/stacks.md) tells how a simulated client talks to the user's app: what it
sends to authenticate, join and publish, and where in a delivered message the id and the
send timestamp are. Those are written as TOML values, so the same template describes a JSON
message, a Socket.IO event's arguments or a command line:

- a string: `{name}` is replaced by the value's text (`"Bearer {token}"`);
- a table or an array: rendered item by item and sent as JSON; a string that is exactly one
  placeholder takes the value's own type, so `ts = "{ts}"` becomes a JSON number;
- anything else (numbers, booleans) is sent as it is.

Only names the context allows are placeholders: `{prot}` where `{port}` was meant is refused
when the file is loaded, with the names that would work; braces around anything that is not
a plain name (`{"a": 1}` in a JSON string) are left alone, so no escaping is needed.

`Path` reads a value out of a received message: dot-separated keys, integer parts index
arrays (`data.items.0.id`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from wsconsole.errors import WsconsoleError

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class TemplateError(WsconsoleError, ValueError):
    """A template that cannot be used: an unknown placeholder, a value of the wrong kind."""


def _walk(value: Any) -> Iterator[str]:
    """Every string inside a TOML value (keys of tables included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key)
            yield from _walk(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _walk(item)


@dataclass(frozen=True)
class Template:
    """A TOML value with placeholders, checked against the names its context allows."""

    value: Any

    @classmethod
    def parse(cls, value: Any, allowed: frozenset[str]) -> Template:
        """A template of `value`; TemplateError naming an unknown placeholder."""
        if isinstance(value, float) and value != value:
            raise TemplateError("a template cannot be NaN")
        for text in _walk(value):
            for name in PLACEHOLDER.findall(text):
                if name not in allowed:
                    known = ", ".join(f"{{{n}}}" for n in sorted(allowed)) or "none"
                    raise TemplateError(f"unknown placeholder {{{name}}} (known here: {known})")
        return cls(value)

    @property
    def names(self) -> frozenset[str]:
        """The placeholders it uses."""
        return frozenset(name for text in _walk(self.value) for name in PLACEHOLDER.findall(text))

    @property
    def is_text(self) -> bool:
        """True when the template is a string (sent as it is, not as JSON)."""
        return isinstance(self.value, str)

    def render(self, values: Mapping[str, Any]) -> Any:
        """The value with every placeholder replaced (KeyError for a missing value)."""
        return _render(self.value, values, str)

    def text(self, values: Mapping[str, Any]) -> str:
        """The message to send: the rendered string, or the rendered value as JSON."""
        rendered = self.render(values)
        if isinstance(rendered, str):
            return rendered
        return orjson.dumps(rendered).decode()

    def shell(self, values: Mapping[str, Any]) -> str:
        """A shell command line with every substituted value quoted for /bin/sh."""
        if not isinstance(self.value, str):
            raise TemplateError("a shell command template must be a string")
        return _render(self.value, values, lambda v: shlex.quote(str(v)))


def _render(value: Any, values: Mapping[str, Any], quote: Callable[[Any], str]) -> Any:
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value)
        if whole is not None and quote is str:
            return values[whole[1]]
        return PLACEHOLDER.sub(lambda m: quote(values[m[1]]), value)
    if isinstance(value, Mapping):
        return {
            _render(key, values, str): _render(item, values, quote) for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_render(item, values, quote) for item in value]
    return value


MISSING = object()


@dataclass(frozen=True)
class Path:
    """Where a value sits inside a decoded message: `data.id`, `items.0.ts`."""

    parts: tuple[str | int, ...]
    text: str

    @classmethod
    def parse(cls, text: str) -> Path:
        """A path from its dotted text; TemplateError for an empty part."""
        if not isinstance(text, str) or not text.strip():
            raise TemplateError("a path must be a non-empty string such as data.id")
        parts: list[str | int] = []
        for part in text.strip().split("."):
            if not part:
                raise TemplateError(f"path {text!r} has an empty part")
            parts.append(int(part) if part.isdigit() else part)
        return cls(tuple(parts), text.strip())

    def get(self, message: Any) -> Any:
        """The value at this path, or `MISSING`."""
        value = message
        for part in self.parts:
            if isinstance(part, int) and isinstance(value, list):
                if part >= len(value):
                    return MISSING
                value = value[part]
            elif isinstance(value, Mapping) and str(part) in value:
                value = value[str(part)]
            else:
                return MISSING
        return value

    def __str__(self) -> str:
        return self.text


__all__ = ["MISSING", "PLACEHOLDER", "Path", "Template", "TemplateError"]
