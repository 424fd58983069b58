"""The harness's line commands: `wsconsole harness` stdin, reusable by a console view or scenario.

One command per line; words separated by blanks; `#` starts a comment:

    kill ID | pause ID | resume ID | drain ID | restart ID     one node
    add                                                        one more node
    broker kill | broker restart [fresh]                       the Redis-protocol broker
                                                               (fresh: without its state)
    status                                                     nodes, broker, balancer
    conns ID                                                   node ID's connections (id, user,
                                                               rooms, remote): inject targets
    log ID [N]                                                 the last N lines (20) node ID
                                                               printed, time-stamped
    token USER [ROOMS...]                                      a JWT for USER (rooms default *)
    sticky ip|cookie|sid                                       the balancer's affinity mode
    net ID|all KIND [ARGS | key=value...]                      a network fault in the balancer:
        latency 200ms [50ms] | bandwidth 100kB/s | reset [persist] | blackhole
        | slice 16 [5ms] | half_open up|down      (see harness/netfaults.py)
    net ID|all clear [KIND]                                    remove one fault kind, or all
    inject ID CASE CONN|ROOM|all [count=N repeat=N wait=S]     node ID writes a catalogue case
        raw to one connection (an id from `conns ID`), a room's members on that node,
        or all its connections; the reply has each client's reaction (faults/inject.py)
    help                                                       this list
    quit | exit                                                drain and stop everything

`parse` checks the shape of a line (pure, raises CommandError); `execute` runs it against a
Cluster and returns the event to print. Unknown ids and failed operations raise CommandError
with a plain message: the caller prints an error line and carries on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wsconsole.errors import WsconsoleError
from wsconsole.faults.inject import InjectError, parse_request
from wsconsole.harness.cluster import STICKY_MODES, Cluster, ClusterError
from wsconsole.harness.netfaults import FaultError, fault_from_words, parse_fault

NODE_COMMANDS = ("kill", "pause", "resume", "drain", "restart")
COMMANDS = (
    *NODE_COMMANDS,
    "add",
    "broker",
    "shard",
    "status",
    "conns",
    "log",
    "token",
    "sticky",
    "net",
    "inject",
    "help",
    "quit",
)

USAGE = {
    "kill": "kill ID",
    "pause": "pause ID",
    "resume": "resume ID",
    "drain": "drain ID",
    "restart": "restart ID",
    "add": "add",
    "broker": "broker kill|restart [fresh]",
    "shard": "shard kill|restart|pause|resume SERVER  or  shard failover|partition|heal SHARD"
             "  or  shard move SLOT SHARD",
    "status": "status",
    "conns": "conns ID",
    "log": "log ID [N]",
    "token": "token USER [ROOMS...]",
    "sticky": "sticky ip|cookie|sid",
    "net": "net ID|all KIND [ARGS|key=value...]  or  net ID|all clear [KIND]",
    "inject": "inject ID CASE CONN|ROOM|all [count=N repeat=N wait=S]",
    "help": "help",
    "quit": "quit",
}


INJECT_OPTIONS = ("count", "repeat", "wait", "max_size")


class CommandError(WsconsoleError, ValueError):
    """A line that is not a valid command, or a command the cluster could not carry out."""


class Quit(WsconsoleError):
    """The user asked to stop (`quit`, `exit`)."""


@dataclass(frozen=True)
class Command:
    """A parsed line: the command word, positional words, and key=value parameters."""

    name: str
    args: tuple[str, ...] = ()
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def options(self) -> dict[str, Any]:
        """The key=value parameters as a dict."""
        return dict(self.params)


def _value(text: str) -> Any:
    """A parameter value: int, then float, then true/false, else the text itself."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _split_params(words: list[str], usage: str) -> tuple[tuple[str, Any], ...]:
    params = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key or not value:
            raise CommandError(f"expected key=value, got {word!r} (usage: {usage})")
        params.append((key, _value(value)))
    return tuple(params)


def parse(line: str) -> Command | None:
    """Parse one line; None for a blank line or a comment; CommandError for a bad one."""
    words = line.split("#", 1)[0].split()
    if not words:
        return None
    name, rest = words[0].lower(), words[1:]
    if name == "exit":
        name = "quit"
    if name not in COMMANDS:
        raise CommandError(f"unknown command {words[0]!r} (try: help)")
    usage = USAGE[name]

    def expect(count: int) -> None:
        if len(rest) != count:
            raise CommandError(f"usage: {usage}")

    if name in (*NODE_COMMANDS, "conns"):
        expect(1)
        return Command(name, (rest[0],))
    if name == "log":
        if len(rest) not in (1, 2) or (len(rest) == 2 and not rest[1].isdigit()):
            raise CommandError(f"usage: {usage}")
        return Command(name, tuple(rest))
    if name in ("add", "status", "help", "quit"):
        expect(0)
        return Command(name)
    if name == "broker":
        words = tuple(word.lower() for word in rest)
        if words not in (("kill",), ("restart",), ("restart", "fresh")):
            raise CommandError(f"usage: {usage}")
        return Command(name, words)
    if name == "shard":
        return _parse_shard(rest, usage)
    if name == "token":
        if not rest:
            raise CommandError(f"usage: {usage}")
        return Command(name, tuple(rest))
    if name == "sticky":
        expect(1)
        if rest[0] not in STICKY_MODES:
            raise CommandError(f"usage: {usage}")
        return Command(name, (rest[0],))
    if name == "net":
        if len(rest) < 2:
            raise CommandError(f"usage: {usage}")
        target, kind = rest[0], rest[1]
        if kind == "clear":
            if len(rest) > 3:
                raise CommandError(f"usage: {usage}")
            return Command(name, (target, "clear", *rest[2:3]))
        words = rest[2:]
        try:
            if words and all("=" in word for word in words):
                params = _split_params(words, usage)
                parse_fault(kind, dict(params))
            else:  # the short form: latency 200ms 50ms, bandwidth 100kB/s, half_open up...
                kind, found = fault_from_words([kind, *words])
                params = tuple(found.items())
        except FaultError as exc:
            raise CommandError(f"{exc} (usage: {usage})") from None
        return Command(name, (target, kind), params)
    # inject ID CASE TARGET [key=value...]
    if len(rest) < 3 or "=" in rest[2]:
        raise CommandError(f"usage: {usage}")
    params = _split_params(rest[3:], usage)
    unknown = [key for key, _ in params if key not in INJECT_OPTIONS]
    if unknown:
        raise CommandError(f"unknown option {unknown[0]!r} (usage: {usage})")
    try:
        parse_request({"case": rest[1], "target": rest[2], **dict(params)})
    except InjectError as exc:
        raise CommandError(str(exc)) from None
    return Command(name, (rest[0], rest[1], rest[2]), params)


SHARD_ACTIONS = ("kill", "restart", "pause", "resume", "failover", "partition", "heal")


def _parse_shard(rest: list[str], usage: str) -> Command:
    action = rest[0].lower() if rest else ""
    if action in SHARD_ACTIONS and len(rest) == 2:
        return Command("shard", (action, rest[1]))
    if action == "move" and len(rest) == 3 and rest[1].isdigit():
        return Command("shard", ("move", rest[2], rest[1]))
    raise CommandError(f"usage: {usage}")


def help_event() -> dict[str, Any]:
    """The list of commands as an event."""
    return {"event": "help", "commands": [USAGE[name] for name in COMMANDS]}


async def execute(cluster: Cluster, command: Command) -> dict[str, Any]:
    """Run a parsed command; returns the event to print, raises CommandError or Quit."""
    try:
        return await _execute(cluster, command)
    except ClusterError as exc:
        raise CommandError(str(exc)) from None


async def _execute(cluster: Cluster, command: Command) -> dict[str, Any]:
    name, args = command.name, command.args
    done = {"event": "done", "command": " ".join((name, *args))}
    if name == "quit":
        raise Quit
    if name == "help":
        return help_event()
    if name == "status":
        return {"event": "status", **cluster.status()}
    if name == "log":
        lines = cluster.node_log(args[0], int(args[1]) if len(args) > 1 else 20)
        return {"event": "log", "id": args[0], "lines": [line.as_dict() for line in lines]}
    if name == "conns":
        conns = await cluster.connections(args[0])
        return {"event": "connections", "id": args[0], "total": len(conns), "connections": conns}
    if name == "token":
        user, rooms = args[0], args[1:] or ("*",)
        return {
            "event": "token",
            "user": user,
            "rooms": list(rooms),
            "token": cluster.token(user, rooms),
        }
    if name in NODE_COMMANDS:
        await getattr(cluster, name)(args[0])
        info = cluster.nodes[args[0]]
        return {
            **done,
            "id": info.id,
            "state": info.state.value,
            "pid": info.pid,
            "port": info.port,
        }
    if name == "add":
        node_id = await cluster.add()
        return {**done, **cluster.nodes[node_id].as_dict()}
    if name == "broker":
        if args[0] == "kill":
            await cluster.broker_kill()
        else:
            await cluster.broker_restart(fresh=args[1:] == ("fresh",))
        return {**done, "broker": cluster.broker.as_dict()}
    if name == "shard":
        await cluster.shard(args[0], args[1], int(args[2]) if len(args) > 2 else None)
        return {**done, "shards": cluster.shards}
    if name == "sticky":
        await cluster.set_sticky(args[0])
        return {**done, "sticky": args[0]}
    if name == "net":
        target, kind = args[0], args[1]
        if kind == "clear":
            reply = await cluster.net_clear(target, args[2] if len(args) > 2 else None)
        else:
            reply = await cluster.net_fault(target, kind, **command.options)
        return {**done, "reply": _public(reply)}
    # inject: the node writes the case and reports each client's reaction
    reply = await cluster.inject(args[0], args[1], args[2], **command.options)
    return {**done, "reply": _public(reply)}


def _public(reply: dict[str, Any]) -> dict[str, Any]:
    """A control reply without its envelope fields."""
    return {k: v for k, v in reply.items() if k not in ("type", "rid", "ok")}
