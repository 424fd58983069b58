"""The stack file: the user's own server under the harness, read strictly (docs/stacks.md).

A stack file is TOML. It says how to start ONE node of the user's app (command, folder,
environment, with `{port}`, `{id}`, `{index}`, `{redis_url}`, `{host}` placeholders), how many,
how readiness is known (a port that accepts, an HTTP path answering 2xx, or a log line), the
stop signal and drain deadline; which broker the nodes share (the harness's own, an external
URL, or none); the protocol they speak and its path; optionally a Prometheus path to scrape;
and a client recipe the swarm follows (how to authenticate, join, publish, and recognise a
delivered message). Every mistake is refused before anything starts, as `FILE:LINE: reason`
(`StackError`); `wsconsole stack check FILE` runs only this.

`node_cmd_stack` makes the same object from a single command line (`--node-cmd`).
"""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

from wsconsole.core.templates import Path, Template, TemplateError
from wsconsole.tomlcheck import TomlFileError, TomlReader, parse_toml, read_text

BROKER_KINDS = frozenset({"harness", "external", "none"})
PROTOCOLS = frozenset({"websocket", "socketio", "sse"})
READY_KINDS = ("port", "http", "log")
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
REDIS_URL = re.compile(r"^(redis|rediss|valkey|valkeys|unix)://")

NODE_NAMES = frozenset({"port", "id", "index", "host", "redis_url"})
AUTH_TOKEN_NAMES = frozenset({"user", "client", "index"})
AUTH_NAMES = AUTH_TOKEN_NAMES | {"token"}
JOIN_NAMES = AUTH_NAMES | {"room"}
PUBLISH_NAMES = JOIN_NAMES | {"id", "ts", "counter"}
# Every node gets these unless the file sets them itself (the Heroku-style PORT convention).
DEFAULT_ENV = {"PORT": "{port}", "NODE_ID": "{id}"}
BROKER_ENV = {"REDIS_URL": "{redis_url}"}

_TOP = frozenset({"name", "description", "node", "broker", "protocol", "metrics", "client"})
_NODE = frozenset({"command", "cwd", "env", "count", "stop_signal", "drain_deadline", "ready"})
_READY = frozenset({*READY_KINDS, "timeout"})


class StackError(TomlFileError):
    """An invalid stack file: `line` (1-based, when known) and `reason` in plain words."""

    default_name = "stack"


@dataclass(frozen=True)
class Readiness:
    """How the harness knows a node is ready: its port accepts, an HTTP path answers 2xx,
    or a line of its output matches a pattern."""

    kind: str = "port"
    http_path: str | None = None
    log_pattern: re.Pattern[str] | None = None
    timeout: float = 30.0

    def describe(self) -> str:
        """`port`, `http /healthz` or `log /listening/`."""
        if self.kind == "http":
            return f"http {self.http_path}"
        if self.kind == "log":
            assert self.log_pattern is not None
            return f"log /{self.log_pattern.pattern}/"
        return "port"


@dataclass(frozen=True)
class NodeSpec:
    """How to start one node of the user's app."""

    command: Template  # a string (run by /bin/sh -c) or an array (run directly)
    cwd: FilePath
    env: dict[str, Template]
    count: int = 2
    stop_signal: signal.Signals = signal.SIGTERM
    drain_deadline: float = 10.0
    ready: Readiness = field(default_factory=Readiness)

    @property
    def shell(self) -> bool:
        """True when the command is one string run by /bin/sh."""
        return self.command.is_text

    def argv(self, values: Mapping[str, Any]) -> list[str]:
        """The node's command line with its placeholders filled in."""
        if self.shell:
            return ["/bin/sh", "-c", self.command.shell(values)]
        return [str(part) for part in self.command.render(values)]

    def environment(self, values: Mapping[str, Any]) -> dict[str, str]:
        """The variables this node adds to the environment."""
        return {name: str(template.render(values)) for name, template in self.env.items()}


@dataclass(frozen=True)
class BrokerSpec:
    """The Redis-protocol broker the nodes share: ours, an external URL, or none."""

    kind: str = "harness"
    url: str | None = None


@dataclass(frozen=True)
class ProtocolSpec:
    """What the nodes speak and where: a WebSocket path, Socket.IO's path and namespace, or
    an SSE stream path."""

    kind: str = "websocket"
    path: str = "/"
    namespace: str = "/"


@dataclass(frozen=True)
class MetricsSpec:
    """A Prometheus endpoint on every node and the series (names or globs) to plot."""

    path: str
    series: tuple[str, ...]
    interval: float = 1.0


@dataclass(frozen=True)
class AuthRecipe:
    """How a simulated client authenticates: any of a header, a query parameter, a first
    message after every open, the Socket.IO handshake's auth payload; `{token}` in them is
    the rendered `token`."""

    token: Template | None = None
    header: tuple[str, Template] | None = None
    query: tuple[str, Template] | None = None
    message: Template | None = None
    socketio: Template | None = None


@dataclass(frozen=True)
class SendRecipe:
    """One kind of message a client sends: a message template (WebSocket) or a Socket.IO
    event with its argument templates. A join may be confirmed by the app: a Socket.IO ack
    (`ack`), or a WebSocket message with these fields (`confirm`); the client's duty to
    receive then starts at the confirmation rather than a grace time after the join."""

    message: Template | None = None
    event: str | None = None
    args: Template | None = None
    ack: bool = False
    confirm: dict[str, Any] | None = None

    @property
    def confirmed(self) -> bool:
        """True when the app confirms this (a join)."""
        return self.ack or self.confirm is not None


@dataclass(frozen=True)
class ReceiveRecipe:
    """How a delivered message is recognised and read: which Socket.IO event carries it (or
    which fields a WebSocket message must have), where its id and timestamp are."""

    id: Path
    timestamp: Path | None = None
    event: str | None = None
    match: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClientRecipe:
    """What the swarm does on the user's app, with no sequence numbers of ours."""

    publish: SendRecipe
    receive: ReceiveRecipe
    join: SendRecipe | None = None
    auth: AuthRecipe = field(default_factory=AuthRecipe)
    receive_own: bool = True  # a publisher gets its own messages back


@dataclass(frozen=True)
class Stack:
    """A validated stack file."""

    name: str
    node: NodeSpec
    broker: BrokerSpec = field(default_factory=BrokerSpec)
    protocol: ProtocolSpec = field(default_factory=ProtocolSpec)
    metrics: MetricsSpec | None = None
    client: ClientRecipe | None = None
    description: str = ""
    path: str | None = None

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description of what the harness will run."""
        return {
            "name": self.name,
            "path": self.path,
            "command": self.node.command.value,
            "shell": self.node.shell,
            "cwd": str(self.node.cwd),
            "nodes": self.node.count,
            "ready": self.node.ready.describe(),
            "stop_signal": self.node.stop_signal.name,
            "drain_deadline": self.node.drain_deadline,
            "broker": self.broker.kind if self.broker.url is None else self.broker.url,
            "protocol": self.protocol.kind,
            "path_on_node": self.protocol.path,
            "metrics": None if self.metrics is None else self.metrics.path,
            "client_recipe": self.client is not None,
        }


# ------------------------------------------------------------------------------ loading


def load_stack(path: str | FilePath) -> Stack:
    """Read and validate a stack file; StackError (with a line) if it is invalid."""
    return parse_stack(read_text(path, StackError), str(path))


def parse_stack(text: str, path: str | None = None) -> Stack:
    """Validate stack TOML text; relative folders are relative to the file's folder."""
    data = parse_toml(text, path, StackError)
    r = TomlReader(text, path, StackError)
    r.check_keys(data, _TOP)
    base = FilePath(path).resolve().parent if path else FilePath.cwd()
    if "node" not in data:
        raise r.fail("a [node] table is required (at least its command)")
    broker = _broker(r, r.table(data, "broker"))
    protocol = _protocol(r, r.table(data, "protocol"))
    node = _node(r, r.table(data, "node"), base, broker)
    metrics = _metrics(r, data["metrics"]) if "metrics" in data else None
    client = _client(r, r.table(data, "client"), protocol) if "client" in data else None
    description = r.string(data, "description", "")
    return Stack(
        name=r.string(data, "name", FilePath(path).stem if path else "stack"),
        node=node,
        broker=broker,
        protocol=protocol,
        metrics=metrics,
        client=client,
        description=description,
        path=path,
    )


def _template(r: TomlReader, value: Any, allowed: frozenset[str], *where: Any) -> Template:
    try:
        return Template.parse(value, allowed)
    except TemplateError as exc:
        raise r.fail(str(exc), *where) from None


def _node(r: TomlReader, table: dict[str, Any], base: FilePath, broker: BrokerSpec) -> NodeSpec:
    where = ("node",)
    r.check_keys(table, _NODE, *where)
    names = NODE_NAMES if broker.kind != "none" else NODE_NAMES - {"redis_url"}
    if "command" not in table:
        raise r.fail('[node] needs a command: "npm start" or ["python", "server.py"]', *where)
    raw = table["command"]
    if isinstance(raw, list):
        if not raw or not all(isinstance(part, str) and part for part in raw):
            raise r.fail("command must be a non-empty array of non-empty strings", *where,
                         "command")
    elif not isinstance(raw, str) or not raw.strip():
        raise r.fail("command must be a string (run by /bin/sh) or an array of strings",
                     *where, "command")
    why = "" if broker.kind != "none" else " ({redis_url} needs a broker: [broker] kind is none)"
    try:
        command = Template.parse(raw, names)
    except TemplateError as exc:
        raise r.fail(f"{exc}{why}", *where, "command") from None
    cwd_text = r.string(table, "cwd", ".", *where)
    try:
        cwd_template = Template.parse(cwd_text, names - {"port"})
    except TemplateError as exc:
        raise r.fail(str(exc), *where, "cwd") from None
    cwd = FilePath(cwd_template.value)
    cwd = cwd if cwd.is_absolute() else base / cwd
    if not cwd_template.names and not cwd.is_dir():
        raise r.fail(f"cwd {cwd_text!r} is not a folder ({cwd})", *where, "cwd")
    env_table = r.table(table, "env", *where)
    defaults = {**DEFAULT_ENV, **(BROKER_ENV if broker.kind != "none" else {})}
    env = {name: Template(value) for name, value in defaults.items()}
    for name, value in env_table.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise r.fail(f"env name {name!r} is not a variable name", *where, "env", name)
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise r.fail(f"env {name} must be a string or a number", *where, "env", name)
        try:
            env[name] = Template.parse(str(value), names)
        except TemplateError as exc:
            raise r.fail(f"env {name}: {exc}{why}", *where, "env", name) from None
    stop_name = r.string(table, "stop_signal", "SIGTERM", *where)
    stop_name = stop_name.upper() if stop_name.upper().startswith("SIG") else \
        "SIG" + stop_name.upper()
    if stop_name not in STOP_SIGNALS:
        raise r.fail(f"stop_signal must be one of {', '.join(STOP_SIGNALS)} (kill and pause "
                     f"are operations of their own), not {table['stop_signal']!r}", *where,
                     "stop_signal")
    return NodeSpec(
        command=command,
        cwd=cwd,
        env=env,
        count=r.number(table, "count", 2, *where, minimum=1, maximum=32, integer=True),
        stop_signal=signal.Signals[stop_name],
        drain_deadline=r.number(table, "drain_deadline", 10.0, *where, positive=True),
        ready=_ready(r, r.table(table, "ready", *where)),
    )


def _ready(r: TomlReader, table: dict[str, Any]) -> Readiness:
    where = ("node", "ready")
    r.check_keys(table, _READY, *where)
    given = [kind for kind in READY_KINDS if kind in table]
    if len(given) > 1:
        raise r.fail(f"[node.ready] takes one of port, http, log (not {' and '.join(given)})",
                     *where, given[1])
    timeout = r.number(table, "timeout", 30.0, *where, positive=True)
    kind = given[0] if given else "port"
    if kind == "port":
        if table.get("port", True) is not True:
            raise r.fail("port = true is the only value (the node's {port} accepts)", *where,
                         "port")
        return Readiness("port", timeout=timeout)
    if kind == "http":
        http_path = r.string(table, "http", None, *where)
        if not http_path.startswith("/"):
            raise r.fail(f"http must be a path starting with /, not {http_path!r}", *where,
                         "http")
        return Readiness("http", http_path=http_path, timeout=timeout)
    pattern = r.string(table, "log", None, *where)
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise r.fail(f"log is not a valid regular expression: {exc}", *where, "log") from None
    return Readiness("log", log_pattern=compiled, timeout=timeout)


def _broker(r: TomlReader, table: dict[str, Any]) -> BrokerSpec:
    where = ("broker",)
    r.check_keys(table, frozenset({"kind", "url"}), *where)
    kind = r.string(table, "kind", "harness", *where, choices=BROKER_KINDS)
    url = r.string(table, "url", None, *where)
    if kind == "external":
        if url is None:
            raise r.fail('an external broker needs url = "redis://host:port"', *where)
        if not REDIS_URL.match(url):
            raise r.fail(f"url must be a redis://, rediss:// or unix:// URL, not {url!r}",
                         *where, "url")
    elif url is not None:
        raise r.fail(f'url is only for kind = "external" (kind is {kind!r})', *where, "url")
    return BrokerSpec(kind, url)


def _protocol(r: TomlReader, table: dict[str, Any]) -> ProtocolSpec:
    where = ("protocol",)
    r.check_keys(table, frozenset({"kind", "path", "namespace"}), *where)
    kind = r.string(table, "kind", "websocket", *where, choices=PROTOCOLS)
    default = "/socket.io/" if kind == "socketio" else "/"
    path = r.string(table, "path", default, *where)
    if not path.startswith("/"):
        raise r.fail(f"path must start with /, not {path!r}", *where, "path")
    namespace = r.string(table, "namespace", "/", *where)
    if kind != "socketio" and "namespace" in table:
        raise r.fail("namespace is for kind = \"socketio\"", *where, "namespace")
    if not namespace.startswith("/"):
        raise r.fail(f"namespace must start with /, not {namespace!r}", *where, "namespace")
    return ProtocolSpec(kind, path, namespace)


def _metrics(r: TomlReader, value: Any) -> MetricsSpec:
    where = ("metrics",)
    if not isinstance(value, dict):
        raise r.fail("metrics must be a table", *where)
    r.check_keys(value, frozenset({"path", "series", "interval"}), *where)
    path = r.string(value, "path", "/metrics", *where)
    if not path.startswith("/"):
        raise r.fail(f"path must start with /, not {path!r}", *where, "path")
    series = value.get("series")
    if not isinstance(series, list) or not series or \
            not all(isinstance(s, str) and re.fullmatch(r"[A-Za-z_:*?\[\]][A-Za-z0-9_:*?\[\]]*", s)
                    for s in series):
        raise r.fail("series must list metric names or globs to plot, e.g. "
                     '["process_resident_memory_bytes", "socketio_*"]', *where, "series")
    return MetricsSpec(path, tuple(series),
                       r.number(value, "interval", 1.0, *where, minimum=0.1))


# ------------------------------------------------------------------------------ the client


def _client(r: TomlReader, table: dict[str, Any], protocol: ProtocolSpec) -> ClientRecipe:
    where = ("client",)
    r.check_keys(table, frozenset({"auth", "join", "publish", "receive", "receive_own"}), *where)
    if protocol.kind == "sse":
        raise r.fail("the swarm drives websocket and socketio stacks; an SSE stack runs under "
                     "the harness (faults, plots, logs) without a [client] recipe", *where)
    for required in ("publish", "receive"):
        if required not in table:
            raise r.fail(f"[client] needs a [client.{required}] table", *where)
    socketio = protocol.kind == "socketio"
    join = _send(r, r.table(table, "join", *where), JOIN_NAMES, socketio, "join") \
        if "join" in table else None
    return ClientRecipe(
        publish=_send(r, r.table(table, "publish", *where), PUBLISH_NAMES, socketio, "publish"),
        receive=_receive(r, r.table(table, "receive", *where), socketio),
        join=join,
        auth=_auth(r, r.table(table, "auth", *where), socketio),
        receive_own=r.boolean(table, "receive_own", True, *where),
    )


def _send(r: TomlReader, table: dict[str, Any], names: frozenset[str], socketio: bool,
          key: str) -> SendRecipe:
    where = ("client", key)
    if socketio:
        r.check_keys(table, frozenset({"event", "args", "ack"} if key == "join"
                                      else {"event", "args"}), *where)
        event = r.string(table, "event", None, *where)
        if event is None:
            raise r.fail(f'a Socket.IO [client.{key}] needs event = "name"', *where)
        if key == "publish" and "args" not in table:
            raise r.fail("a Socket.IO publish needs args = [...] (the event's arguments, "
                         "carrying {id})", *where)
        args = table.get("args", ["{room}"])
        if not isinstance(args, list):
            raise r.fail("args must be an array (the event's arguments)", *where, "args")
        template = _template(r, args, names, *where, "args")
        if key == "publish" and "id" not in template.names:
            raise r.fail("the publish arguments must carry {id}: the swarm recognises "
                         "deliveries by it", *where, "args")
        return SendRecipe(event=event, args=template,
                          ack=r.boolean(table, "ack", False, *where))
    r.check_keys(table, frozenset({"message", "confirm"} if key == "join" else {"message"}),
                 *where)
    if "message" not in table:
        raise r.fail(f"[client.{key}] needs message = a table (sent as JSON) or a string",
                     *where)
    message = table["message"]
    if not isinstance(message, str | dict) or message in ("", {}):
        raise r.fail("message must be a non-empty table or string", *where, "message")
    template = _template(r, message, names, *where, "message")
    if key == "publish" and "id" not in template.names:
        raise r.fail("the publish message must carry {id}: the swarm recognises deliveries "
                     "by it", *where, "message")
    confirm = r.table(table, "confirm", *where) if "confirm" in table else None
    if confirm == {}:
        raise r.fail("confirm must name the fields of the app's answer, e.g. "
                     '{ type = "joined" }', *where, "confirm")
    return SendRecipe(message=template, confirm=confirm)


def _receive(r: TomlReader, table: dict[str, Any], socketio: bool) -> ReceiveRecipe:
    where = ("client", "receive")
    r.check_keys(table, frozenset({"id", "timestamp", "event", "match"}), *where)
    if "id" not in table:
        raise r.fail("[client.receive] needs id = the path to the message id (e.g. \"id\")",
                     *where)
    event = r.string(table, "event", None, *where)
    if socketio and event is None:
        raise r.fail('a Socket.IO stack needs event = "the event deliveries arrive as"', *where)
    if not socketio and event is not None:
        raise r.fail("event is for Socket.IO stacks; a WebSocket stack uses match = {...}",
                     *where, "event")
    match = r.table(table, "match", *where)
    paths = {}
    for name in ("id", "timestamp"):
        if name in table:
            try:
                paths[name] = Path.parse(r.string(table, name, None, *where))
            except TemplateError as exc:
                raise r.fail(str(exc), *where, name) from None
    return ReceiveRecipe(paths["id"], paths.get("timestamp"), event, dict(match))


def _auth(r: TomlReader, table: dict[str, Any], socketio: bool) -> AuthRecipe:
    where = ("client", "auth")
    r.check_keys(table, frozenset({"token", "header", "query", "message", "socketio"}), *where)
    if table and not set(table) - {"token"}:
        raise r.fail("[client.auth] says where the token goes: header, query, message or "
                     "socketio", *where)
    if "message" in table and socketio:
        raise r.fail("a Socket.IO client authenticates with socketio = {...} (the handshake "
                     "payload), not a first message", *where, "message")
    if "socketio" in table and not socketio:
        raise r.fail("socketio = {...} is for Socket.IO stacks", *where, "socketio")
    names = AUTH_NAMES if "token" in table else AUTH_NAMES - {"token"}
    token = _template(r, r.string(table, "token", None, *where), AUTH_TOKEN_NAMES, *where,
                      "token") if "token" in table else None
    header = query = None
    for key in ("header", "query"):
        if key not in table:
            continue
        text = r.string(table, key, None, *where)
        sep = ":" if key == "header" else "="
        name, found, value = text.partition(sep)
        if not found or not name.strip():
            example = "Authorization: Bearer {token}" if key == "header" else "token={token}"
            raise r.fail(f"{key} must look like {example!r}", *where, key)
        pair = (name.strip(), _template(r, value.strip(), names, *where, key))
        header, query = (pair, query) if key == "header" else (header, pair)
    message = _template(r, table["message"], names, *where, "message") \
        if "message" in table else None
    payload = None
    if "socketio" in table:
        if not isinstance(table["socketio"], dict):
            raise r.fail("socketio must be a table (the auth payload)", *where, "socketio")
        payload = _template(r, table["socketio"], names, *where, "socketio")
    return AuthRecipe(token, header, query, message, payload)


# ------------------------------------------------------------------------------ one line


def node_cmd_stack(command: str, count: int = 2, broker: str | None = None,
                   cwd: str | None = None) -> Stack:
    """A stack from `--node-cmd 'CMD'`: run by /bin/sh, ready when its {port} accepts, the
    harness's broker (or `broker`, an external URL), WebSocket on /; StackError if unusable."""
    spec = BrokerSpec("external", broker) if broker else BrokerSpec()
    try:
        template = Template.parse(command, NODE_NAMES)
    except TemplateError as exc:
        raise StackError(f"--node-cmd: {exc}") from None
    if not command.strip():
        raise StackError("--node-cmd: the command is empty")
    env = {name: Template(value) for name, value in {**DEFAULT_ENV, **BROKER_ENV}.items()}
    node = NodeSpec(template, FilePath(cwd or FilePath.cwd()), env, count=count)
    return Stack(name="node-cmd", node=node, broker=spec)


__all__ = [
    "AuthRecipe",
    "BrokerSpec",
    "ClientRecipe",
    "MetricsSpec",
    "NodeSpec",
    "ProtocolSpec",
    "Readiness",
    "ReceiveRecipe",
    "SendRecipe",
    "Stack",
    "StackError",
    "load_stack",
    "node_cmd_stack",
    "parse_stack",
]
