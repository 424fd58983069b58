"""How one connection option's value is read and checked: the codecs and single-value rules.

A `Codec` turns what a user gave (a typed value, or its text from the command line, a saved
profile or a form field) into the option's typed value and back into text; `Invalid` words
a problem as a predicate so the caller can put the option's flag or label in front. The
item parsers and `*_problem` checks are the rules for one value (a header, a subprotocol, a
room name, a token URL, an Origin, a CA file). app/options.py declares which option uses
which; the rules that tie several options together stay there.
"""

from __future__ import annotations

import math
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

import orjson

from wsconsole.core import envelope
from wsconsole.core.errors import ClientOptionsError
from wsconsole.core.heartbeat import PongPolicy
from wsconsole.core.options import check_header, is_token, parse_header
from wsconsole.errors import WsconsoleError


class Invalid(WsconsoleError, ValueError):
    """A value's problem worded as a predicate ("must be > 0, got -1"); the message shown
    puts the option's flag or label in front. Other ValueErrors are whole sentences."""


# ---------------------------------------------------------------- codecs: parse and check


class Codec:
    """How one option's value is read (from text or a typed value) and written as text;
    `saved_as_text`: a saved profile keeps the text form (the value is no plain JSON)."""

    saved_as_text: ClassVar[bool] = False

    def parse(self, raw: object) -> Any:
        """The typed value for `raw`; Invalid or ValueError says what is wrong."""
        raise NotImplementedError

    def text(self, value: Any) -> str:
        """The value as the text a user would type for it."""
        return "" if value is None else str(value)


@dataclass(frozen=True)
class Number(Codec):
    """A finite number >= `minimum` (> when `above`). `optional`: nothing given is None;
    `zero_off`: 0 is stored as None too ("0 turns pings off", "0 means no limit")."""

    minimum: float = 0.0
    above: bool = False
    integer: bool = False
    optional: bool = False
    zero_off: bool = False

    def parse(self, raw: object) -> float | int | None:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if self.optional or self.zero_off:
                return None
            raise Invalid("needs a value")
        kind = "an integer" if self.integer else "a number"
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise Invalid(f"must be {kind}, got {raw!r}")
        try:
            value = float(raw)
        except ValueError:
            raise Invalid(f"must be {kind}, got {raw!r}") from None
        if not math.isfinite(value) or (self.integer and value != int(value)):
            raise Invalid(f"must be {kind}, got {raw!r}")
        if self.zero_off and value == 0:
            return None
        low = self.minimum
        if value < low or (self.above and value == low):
            raise Invalid(f"must be {'>' if self.above else '>='} {low:g}, got {raw}")
        return int(value) if self.integer else value

    def text(self, value: Any) -> str:
        if value is None:
            return "0" if self.zero_off else ""
        return f"{value:g}"


@dataclass(frozen=True)
class Text(Codec):
    """A one-line string, stripped; empty means None unless `required`; `check` returns a
    problem (a whole sentence) or None."""

    required: bool = False
    check: Callable[[str], str | None] | None = None

    def parse(self, raw: object) -> str | None:
        if raw is None:
            raw = ""
        if not isinstance(raw, str):
            raise Invalid(f"must be text, got {raw!r}")
        value = raw.strip()
        if not value:
            if self.required:
                raise Invalid("is empty")
            return None
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ValueError(problem)
        return value


@dataclass(frozen=True)
class Secret(Codec):
    """A token or password: kept as given (not stripped), empty means None."""

    def parse(self, raw: object) -> str | None:
        if raw is None or raw == "":
            return None
        if not isinstance(raw, str):
            raise Invalid(f"must be text, got {type(raw).__name__}")
        if any(c in raw for c in "\r\n\0"):
            raise Invalid("must be one line")
        return raw


@dataclass(frozen=True)
class Choice(Codec):
    """One of a fixed set of words."""

    choices: tuple[str, ...]

    def parse(self, raw: object) -> str:
        if raw not in self.choices:
            raise Invalid(f"must be one of {', '.join(self.choices)}, got {raw!r}")
        return str(raw)


@dataclass(frozen=True)
class Switch(Codec):
    """On or off."""

    def parse(self, raw: object) -> bool:
        if not isinstance(raw, bool):
            raise Invalid(f"must be true or false, got {raw!r}")
        return raw

    def text(self, value: Any) -> str:
        return "on" if value else "off"


@dataclass(frozen=True)
class Items(Codec):
    """A list: given as a list (repeated flags) or as text split by `lines` (one item per
    non-blank line) or by commas and whitespace; each item goes through `item`."""

    item: Callable[[Any], Any]
    lines: bool = False
    format: Callable[[Any], str] = str
    saved_as_text: ClassVar[bool] = True

    def parse(self, raw: object) -> list[Any]:
        if raw is None:
            return []
        if isinstance(raw, str):
            parts = [p for p in (raw.splitlines() if self.lines else
                                 raw.replace(",", " ").split()) if p.strip()]
        elif isinstance(raw, list | tuple):
            parts = list(raw)
        else:
            raise Invalid(f"must be a list, got {raw!r}")
        return [self.item(part) for part in parts]

    def text(self, value: Any) -> str:
        return ("\n" if self.lines else " ").join(self.format(v) for v in value or [])


@dataclass(frozen=True)
class JsonObject(Codec):
    """A JSON object, given as text or as a dict; empty means None."""

    saved_as_text: ClassVar[bool] = True

    def parse(self, raw: object) -> dict[str, Any] | None:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        if isinstance(raw, str):
            try:
                raw = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise Invalid(f"is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise Invalid(f"must be a JSON object, got {orjson.dumps(raw).decode()[:60]}")
        return raw

    def text(self, value: Any) -> str:
        return "" if value is None else orjson.dumps(value).decode()


@dataclass(frozen=True)
class Pongs(Codec):
    """How the server's pings are answered (core/heartbeat.py): a PongPolicy or its text,
    "auto", "off", "delay:MS" or "wrong[:TEXT]"; empty means "auto"."""

    saved_as_text: ClassVar[bool] = True

    def parse(self, raw: object) -> PongPolicy:
        if isinstance(raw, PongPolicy):
            return raw
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return PongPolicy()
        if not isinstance(raw, str):
            raise Invalid(f"must be auto, off, delay:MS or wrong[:TEXT], got {raw!r}")
        try:
            return PongPolicy.parse(raw)
        except ClientOptionsError as exc:  # a sentence of the core's: named by the option
            raise ValueError(f"{{}}: {exc}") from None

    def text(self, value: Any) -> str:
        return PongPolicy().text() if value is None else value.text()


# ---------------------------------------------------------------- single-value checks


def header_item(raw: object) -> tuple[str, str]:
    """One header from "Name: value" or a (name, value) pair, by the core's one rule."""
    if isinstance(raw, str):
        return parse_header(raw)
    if isinstance(raw, list | tuple) and len(raw) == 2:
        return check_header(str(raw[0]).strip(), str(raw[1]).strip())
    raise Invalid(f"must be 'Name: value', got {raw!r}")


def subprotocol_item(raw: object) -> str:
    """A subprotocol name: an HTTP token."""
    value = str(raw).strip()
    if not is_token(value):
        raise ValueError(f"invalid subprotocol {value!r}")
    return value


def room_item(raw: object) -> str:
    """A harness room name (1 to envelope.MAX_NAME characters)."""
    value = str(raw).strip()
    if not value or len(value) > envelope.MAX_NAME:
        raise ValueError(f"invalid room name {value!r} (1 to {envelope.MAX_NAME} characters)")
    return value


def token_url_problem(value: str) -> str | None:
    """None when `value` is an http(s) URL a token can be fetched from."""
    if urlsplit(value).scheme.lower() not in ("http", "https") or not urlsplit(value).netloc:
        return f"the token URL must be http(s)://host/..., got {value!r}"
    return None


def origin_problem(value: str) -> str | None:
    """None when `value` is an http(s) origin, as a browser would send it."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"Origin {value!r} must look like http(s)://host[:port]"
    return None


def ca_file_problem(value: str) -> str | None:
    """None when `value` names a readable PEM certificate bundle."""
    path = os.path.expanduser(value)
    if not os.path.isfile(path):
        return f"CA file {path} does not exist"
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 20)
    except OSError as exc:
        return f"CA file {path} cannot be read: {exc.strerror}"
    if b"-----BEGIN CERTIFICATE-----" not in head:
        return f"CA file {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        return f"CA file {path} is not a valid certificate bundle: {exc}"
    return None
