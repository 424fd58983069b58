"""Every connection option, declared, validated and defaulted once (no Qt).

`ConnectionOptions` is the one list of what a user can set about a connection: the URL and
kind of target, headers, subprotocols, token and token mode, Origin, TLS, backoff,
heartbeat, limits, Socket.IO and SSE settings. Each field carries its `Option` (label, CLI
flag, help, and a `Codec` that parses and checks a value), so the command line
(`add_arguments` / `from_args`), the window's connection profiles (app/profiles.py) and the
conversion into the core's option objects (app/targets.py: `make_client`) all read the same
declaration, as mitmproxy's optmanager does for its CLI, settings and UI.

A `ConnectionOptions` is valid once built: the constructor takes typed values or their text
forms (what was typed on the command line or in a form field), parses and checks every
field, then the rules that tie fields together, and raises `OptionsError` with one message
per offending field. The CLI shows them on one line (exit 2); the window next to the field.
"""

from __future__ import annotations

import argparse
import math
import os
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar
from urllib.parse import urlsplit

import orjson

from wsconsole.core import envelope
from wsconsole.core.errors import ClientOptionsError
from wsconsole.core.heartbeat import PongPolicy
from wsconsole.core.options import check_header, is_token, parse_header
from wsconsole.core.urls import url_problem
from wsconsole.errors import WsconsoleError

KINDS = {"ws": "WebSocket", "socketio": "Socket.IO", "sse": "Server-Sent Events"}
TOKEN_MODES = ("query", "header", "message")
SIO_TRANSPORTS = {"upgrade": ["polling", "websocket"], "websocket": ["websocket"],
                  "polling": ["polling"]}


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


def _url_for_kind(url: str, kind: str) -> str | None:
    """The URL rule of each kind of target."""
    if kind == "ws":
        return url_problem(url)
    if kind == "sse":
        return url_problem(url, ("http", "https"), "http(s):// (an event stream)")
    return url_problem(url, ("http", "https", "ws", "wss"),
                       "http(s):// (or ws(s):// for Socket.IO)")


def infer_kind(url: str) -> str:
    """The kind a URL names when it is unambiguous: ws(s):// is WebSocket, an http(s) URL
    whose path has /socket.io is Socket.IO; another http(s) URL raises ValueError."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "ws"  # the URL check names the problem
    if parts.scheme.lower() in ("http", "https"):
        if "/socket.io" in parts.path:
            return "socketio"
        raise ValueError(f"{url} is not a ws:// or wss:// URL: for an http(s) target say "
                         "--socketio or --sse (the URL alone does not tell which)")
    return "ws"


# ---------------------------------------------------------------- the declaration


@dataclass(frozen=True)
class Option:
    """One option's declaration: its field name, how to show and read it, its default."""

    name: str
    label: str
    codec: Codec
    help: str
    flag: str | None = None
    short: str | None = None
    metavar: str | None = None
    group: str | None = None
    switches: tuple[tuple[str, str, str], ...] = ()  # (flag, value, help) setting this option
    default: Any = None

    def cli_name(self) -> str:
        """How the command line names it in a message."""
        return self.flag or (self.switches[0][0] if self.switches else self.name)


def _option(default: Any, codec: Codec, label: str, help: str, **spec: Any) -> Any:
    """A dataclass field carrying its Option (completed with name and default later)."""
    meta = {"option": {"codec": codec, "label": label, "help": help, **spec}}
    if isinstance(default, list):
        return field(default_factory=list, metadata=meta)
    return field(default=default, metadata=meta)


SIO = "Socket.IO (--socketio)"
SSE = "Server-Sent Events (--sse)"
SECONDS = Number()
TIMEOUT = Number(above=True)


@dataclass
class ConnectionOptions:
    """Everything a user can set about one connection; valid once constructed.

    The constructor also takes each value's text form (see the module docstring); every
    field's `Option` is in `OPTIONS`.
    """

    url: str = _option("ws://127.0.0.1:8765/", Text(required=True), "URL",
                       "ws(s):// URL, or http(s):// for Socket.IO and SSE")
    kind: str = _option("ws", Choice(tuple(KINDS)), "kind", "the kind of target",
                        switches=(("--socketio", "socketio",
                                   "the target is a Socket.IO server (protocol v5)"),
                                  ("--sse", "sse", "the target is a Server-Sent Events stream")))
    headers: list[tuple[str, str]] = _option(
        [], Items(header_item, lines=True, format=lambda h: f"{h[0]}: {h[1]}"), "header",
        "extra handshake header (repeatable)", flag="--header", short="-H", metavar="'K: V'")
    subprotocols: list[str] = _option(
        [], Items(subprotocol_item), "subprotocol", "subprotocol to offer (repeatable)",
        flag="--subprotocol", short="-s", metavar="NAME")
    token: str | None = _option(None, Secret(), "token",
                                "auth token, sent again on every reconnect", flag="--token")
    token_command: str | None = _option(
        None, Text(), "token command",
        "run CMD before every connect; the line it prints is the token (a refused token "
        "gets one retry with a fresh one)", flag="--token-command", metavar="CMD")
    token_url: str | None = _option(
        None, Text(check=token_url_problem), "token URL",
        "GET URL before every connect; the token is the JSON body's token (or access_token), "
        "else the text", flag="--token-url", metavar="URL")
    token_mode: str = _option(
        "query", Choice(TOKEN_MODES), "token mode",
        "token as ?token=, Authorization: Bearer, or a first auth message", flag="--token-mode")
    origin: str | None = _option(None, Text(check=origin_problem), "Origin",
                                 "Origin header, e.g. http://localhost", flag="--origin")
    ca_file: str | None = _option(None, Text(check=ca_file_problem), "CA file",
                                  "trust this CA bundle (PEM) for wss://", flag="--ca-file",
                                  metavar="PEM")
    insecure: bool = _option(False, Switch(), "insecure",
                             "do not verify the server certificate (wss://)", flag="--insecure")
    harness: bool = _option(False, Switch(), "harness protocol",
                            "speak the harness protocol (rooms, publish, rpc, recovery)",
                            flag="--harness")
    rooms: list[str] = _option([], Items(room_item), "rooms",
                               "room to join and re-join (repeatable; implies --harness)",
                               flag="--room", metavar="ROOM")
    backoff_initial: float = _option(1.0, SECONDS, "backoff initial",
                                     "first reconnect delay, seconds", flag="--backoff-initial",
                                     metavar="S")
    backoff_factor: float = _option(2.0, Number(minimum=1.0), "backoff factor",
                                    "each delay is the previous one times this",
                                    flag="--backoff-factor", metavar="X")
    backoff_cap: float = _option(30.0, SECONDS, "backoff cap", "longest reconnect delay, seconds",
                                 flag="--backoff-cap", metavar="S")
    backoff_jitter: float = _option(1.0, SECONDS, "backoff jitter",
                                    "random 0..S seconds added to each delay",
                                    flag="--backoff-jitter", metavar="S")
    max_attempts: int | None = _option(
        None, Number(integer=True, optional=True), "max attempts",
        "give up (exit 1) after N failed retries; default unlimited", flag="--max-attempts",
        metavar="N")
    stable_after: float = _option(5.0, SECONDS, "stable after",
                                  "a connection open this long starts the backoff over "
                                  "(0: every open does)", flag="--stable-after", metavar="S")
    ping_interval: float | None = _option(25.0, Number(zero_off=True), "ping interval",
                                          "client ping interval; 0 turns pings and liveness off",
                                          flag="--ping-interval", metavar="S")
    ping_timeout: float = _option(10.0, TIMEOUT, "ping timeout",
                                  "no pong (or data) within S seconds after a ping: reconnect",
                                  flag="--ping-timeout", metavar="S")
    connect_timeout: float = _option(10.0, TIMEOUT, "connect timeout",
                                     "bound on connecting and the handshake",
                                     flag="--connect-timeout", metavar="S")
    close_timeout: float = _option(2.0, TIMEOUT, "close timeout",
                                   "how long a closing handshake may take",
                                   flag="--close-timeout", metavar="S")
    max_size: int | None = _option(2**20, Number(minimum=1, integer=True, zero_off=True),
                                   "max size", "largest incoming message; 0 means no limit",
                                   flag="--max-size", metavar="BYTES")
    queue_limit: int | None = _option(10_000, Number(integer=True), "queue limit",
                                      "messages kept while offline", flag="--queue-limit",
                                      metavar="N")
    compression: bool = _option(True, Switch(), "compression",
                                "do not offer permessage-deflate", flag="--no-compression")
    pongs: PongPolicy = _option(
        PongPolicy(), Pongs(), "pongs",
        "how the server's pings are answered (the heartbeat lab): auto, off (play dead), "
        "delay:MS, or wrong[:TEXT] (a pong with another payload)", flag="--pongs",
        metavar="MODE")
    sio_path: str | None = _option(None, Text(), "Socket.IO path",
                                   "Engine.IO path (default socket.io, or the URL's)",
                                   flag="--path", metavar="PATH", group=SIO)
    sio_namespaces: list[str] = _option(
        [], Items(lambda ns: str(ns).strip()), "namespaces",
        "namespace to connect (repeatable; default the URL path or /)", flag="--namespace",
        metavar="NS", group=SIO)
    sio_auth: dict[str, Any] | None = _option(None, JsonObject(), "auth payload",
                                              "auth payload, a JSON object", flag="--auth",
                                              metavar="JSON", group=SIO)
    sio_transport: str = _option(
        "upgrade", Choice(tuple(SIO_TRANSPORTS)), "transport",
        "polling then upgrade (default), websocket only, or polling only", flag="--transport",
        group=SIO)
    sio_ack_timeout: float = _option(10.0, TIMEOUT, "ack timeout", "how long a /call waits",
                                     flag="--ack-timeout", metavar="S", group=SIO)
    sio_join_event: str = _option("join", Text(required=True), "join event",
                                  "event the server joins rooms on (used by --room and /join)",
                                  flag="--join-event", metavar="EVENT", group=SIO)
    sio_leave_event: str = _option("leave", Text(required=True), "leave event",
                                   "event the server leaves rooms on", flag="--leave-event",
                                   metavar="EVENT", group=SIO)
    sse_last_event_id: str | None = _option(None, Text(), "last event id",
                                            "resume after this event id",
                                            flag="--last-event-id", metavar="ID", group=SSE)
    sse_read_timeout: float | None = _option(
        None, Number(above=True, optional=True), "read timeout",
        "reconnect when nothing arrives for S seconds (default: wait)", flag="--read-timeout",
        metavar="S", group=SSE)

    def __post_init__(self) -> None:
        problems: dict[str, str] = {}
        involved: set[str] = set()  # fields a rule tying several together refused
        for name, option in OPTIONS.items():
            try:
                setattr(self, name, option.codec.parse(getattr(self, name)))
            except Invalid as exc:
                problems[name] = f"{{}} {exc}"
            except ValueError as exc:
                problems[name] = str(exc)
        if "url" not in problems and "kind" not in problems:
            wrong = _url_for_kind(self.url, self.kind)
            if wrong:
                problems["url"] = wrong
                involved.add("kind")
        sources = [name for name in ("token", "token_command", "token_url")
                   if getattr(self, name) is not None and name not in problems]
        if len(sources) > 1:
            problems[sources[-1]] = "{} cannot be combined with another source of the token"
            involved.update(sources)
        if self.kind != "ws" and "pongs" not in problems and self.pongs.mode != "auto":
            problems["pongs"] = f"{{}} {self.pongs.text()}: only a WebSocket target answers pings"
            involved.add("kind")
        if self.kind == "sse" and self.token_mode == "message" and "token_mode" not in problems:
            problems["token_mode"] = "{} message: an event stream cannot send one (query, header)"
            involved.add("kind")
        if not {"backoff_cap", "backoff_initial"} & problems.keys() and \
                self.backoff_cap < self.backoff_initial:
            problems["backoff_cap"] = (f"{{}} must not be below the initial delay "
                                       f"({self.backoff_initial:g} s), got {self.backoff_cap:g}")
            involved.add("backoff_initial")
        self._more_problems(problems)
        if problems:
            raise OptionsError(problems, involved)

    def _more_problems(self, problems: dict[str, str]) -> None:
        """Subclasses add the rules of their own fields here."""

    def text(self, name: str) -> str:
        """One option's value as the text a user would type (a form field's content)."""
        return OPTIONS[name].codec.text(getattr(self, name))

    def values(self) -> dict[str, Any]:
        """Every option's typed value by name."""
        return {name: getattr(self, name) for name in OPTIONS}


class OptionsError(WsconsoleError, ValueError):
    """Options that cannot work: `problems` maps each offending option to its message.

    A message holding "{}" is a predicate: `messages()` puts the option's flag (command
    line) or label (window) in its place; other messages are whole sentences. `fields` is
    every field concerned, including the partners in a rule tying fields together."""

    def __init__(self, problems: Mapping[str, str], partners: Iterable[str] = ()) -> None:
        self.problems = dict(problems)
        self.fields = set(self.problems) | set(partners)
        super().__init__("; ".join(self.messages(cli=False).values()))

    def messages(self, cli: bool) -> dict[str, str]:
        """Field -> readable message naming the option by its flag (cli) or label."""
        found: dict[str, str] = {}
        for name, text in self.problems.items():
            option = OPTIONS.get(name)
            subject = (option.cli_name() if cli else option.label) if option else name
            found[name] = text.replace("{}", subject, 1) if "{}" in text else text
        return found

    def cli_line(self) -> str:
        """All problems on one line, naming flags: the CLI's usage error."""
        return "; ".join(self.messages(cli=True).values())


def _declared() -> dict[str, Option]:
    found: dict[str, Option] = {}
    for spec in fields(ConnectionOptions):
        meta = spec.metadata.get("option")
        if meta is None:
            continue
        default = ([] if spec.default_factory is not MISSING  # type: ignore[misc]
                   else spec.default)
        found[spec.name] = Option(name=spec.name, default=default, **meta)
    return found


OPTIONS: dict[str, Option] = _declared()

# Option sets of the commands (the URL is each command's positional argument).
CREDENTIALS = ("headers", "subprotocols", "token", "token_command", "token_url", "token_mode",
               "origin", "ca_file", "insecure")
CONNECT = tuple(name for name in OPTIONS if name != "url")


# ---------------------------------------------------------------- the command line


def add_arguments(parser: argparse._ActionsContainer, names: Iterable[str],
                  help: Mapping[str, str] | None = None,
                  defaults: Mapping[str, Any] | None = None) -> None:
    """Declare the flags of the options `names` on `parser` (or an argument group of it;
    values are checked later, by `from_args`, so every problem is reported the same way);
    `help` overrides texts, `defaults` the defaults of a command with a preset of its own
    (the swarm's demo timings), shown in --help and checked like a given value."""
    help = help or {}
    defaults = defaults or {}
    fixed = [n for n in defaults if OPTIONS[n].switches or isinstance(OPTIONS[n].codec,
                                                                      Switch | Items)]
    if fixed:
        raise ValueError(f"a switch or a list has no command default: {', '.join(fixed)}")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name in names:
        option = OPTIONS[name]
        target: Any = parser
        if option.group:
            target = groups.get(option.group) or parser.add_argument_group(option.group)
            groups[option.group] = target
        text = help.get(name, option.help)
        if option.switches:
            exclusive = target.add_mutually_exclusive_group()
            for flag, value, switch_help in option.switches:
                exclusive.add_argument(flag, dest=name, action="store_const", const=value,
                                       default=None, help=switch_help)
            continue
        if option.flag is None:
            continue
        flags = [f for f in (option.short, option.flag) if f]
        if isinstance(option.codec, Switch):
            action = "store_false" if option.default else "store_true"
            target.add_argument(*flags, dest=name, action=action, default=None, help=text)
        elif isinstance(option.codec, Items):
            target.add_argument(*flags, dest=name, action="append", default=None,
                                metavar=option.metavar, help=text)
        else:
            choices = option.codec.choices if isinstance(option.codec, Choice) else None
            default = defaults.get(name, option.default)
            shown = f" (default {option.codec.text(default)})" if default not in (
                None, "") and not choices else ""
            target.add_argument(*flags, dest=name, default=defaults.get(name),
                                choices=choices, metavar=option.metavar, help=text + shown)


def from_args(args: argparse.Namespace, names: Sequence[str], **fixed: Any) -> ConnectionOptions:
    """The options the command line gave (flags not given keep their defaults), with
    `fixed` values on top (e.g. the URL, the kind); OptionsError if any cannot work."""
    given = {name: getattr(args, name) for name in names
             if getattr(args, name, None) is not None}
    return ConnectionOptions(**{**given, **fixed})


__all__ = ["CONNECT", "CREDENTIALS", "KINDS", "OPTIONS", "SIO_TRANSPORTS", "TOKEN_MODES",
           "ConnectionOptions", "Invalid", "Option", "OptionsError", "add_arguments",
           "from_args", "infer_kind"]
