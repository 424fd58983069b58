"""Every connection option, declared, validated and defaulted once (no Qt).

`ConnectionOptions` is the one list of what a user can set about a connection: the URL and
kind of target, headers, subprotocols, token and token mode, Origin, TLS, backoff,
heartbeat, limits, Socket.IO and SSE settings. Each field carries its `Option` (label, CLI
flag, help, and a `Codec` from app/optioncodecs.py that parses and checks a value), so the
command line (`add_arguments` / `from_args`), the window's connection profiles
(app/profiles.py) and the conversion into the core's option objects (app/targets.py:
`make_client`) all read the same declaration, as mitmproxy's optmanager does for its CLI,
settings and UI.

A `ConnectionOptions` is valid once built: the constructor takes typed values or their text
forms (what was typed on the command line or in a form field), parses and checks every
field, then the rules that tie fields together, and raises `OptionsError` with one message
per offending field. The CLI shows them on one line (exit 2); the window next to the field.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from wsconsole.app.optioncodecs import (
    Choice,
    Codec,
    Invalid,
    Items,
    JsonObject,
    Number,
    Pongs,
    Secret,
    Switch,
    Text,
    ca_file_problem,
    header_item,
    origin_problem,
    room_item,
    subprotocol_item,
    token_url_problem,
)
from wsconsole.core.heartbeat import PongPolicy
from wsconsole.core.urls import url_problem
from wsconsole.errors import WsconsoleError

KINDS = {"ws": "WebSocket", "socketio": "Socket.IO", "sse": "Server-Sent Events"}
TOKEN_MODES = ("query", "header", "message")
SIO_TRANSPORTS = {"upgrade": ["polling", "websocket"], "websocket": ["websocket"],
                  "polling": ["polling"]}


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
