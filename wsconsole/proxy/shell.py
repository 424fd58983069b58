"""The proxy's line commands: `wsconsole proxy` reads them on stdin; any front end may reuse them.

One command per line, words separated by blanks (the payload of `forward` and `inject` and
the reason of `close` are the rest of the line, as typed); a line starting with `#` is a
comment:

    conns                                     open connections (ids for the commands below)
    held [CONN]                               frames waiting for a decision
    forward ID [TEXT...]                      forward held frame ID, as it was or as TEXT
    drop ID                                   drop held frame ID
    release [CONN] | release-drop [CONN]      forward (or drop) every held frame
    inject CONN client|server KIND PAYLOAD    send text, json, binary (hex), ping or pong
    close CONN client|server CODE [REASON]    close one side (the other side gets 1001)
    pongs CONN client|server pass|drop|delay [MS]   pongs on their way to that side
    net CONN|all KIND [ARGS]                  a network fault (latency 200ms [50ms],
                                              bandwidth 100kB/s, reset [persist], blackhole,
                                              slice 16 [5ms], half_open up|down)
    net CONN|all clear [KIND]                 remove one fault kind, or all
    rules FILE                                load a rules file instead of the current rules
    stats                                     the counters
    help                                      this list
    quit                                      stop the proxy

`execute` runs a line against a hub and returns what to print as (event, human text,
fields); a malformed line or a control that cannot be done raises CommandError with a
plain message, and the caller prints it and carries on.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Any

import orjson

from wsconsole.core.events import Opcode
from wsconsole.errors import WsconsoleError
from wsconsole.harness.netfaults import FaultError, fault_from_words, parse_fault
from wsconsole.proxy.hub import ProxyError, ProxyHub
from wsconsole.proxy.rulesfile import RulesFileError, load_rules

USAGE = (__doc__ or "").split("\n\n")[1]
PREVIEW = 80

Reply = tuple[str, str, dict[str, Any]]


class CommandError(WsconsoleError, ValueError):
    """A line that is not a command, or a command that cannot be carried out now."""


class Quit(WsconsoleError):
    """The user asked to stop."""


def _preview(payload: bytes) -> str:
    text = payload.decode("utf-8", "replace")
    return text if len(text) <= PREVIEW else text[:PREVIEW] + "..."


def _number(word: str, what: str) -> int:
    try:
        return int(word)
    except ValueError:
        raise CommandError(f"{what} must be a number, not {word!r}") from None


def _need(words: list[str], count: int, usage: str) -> None:
    if len(words) < count:
        raise CommandError(f"usage: {usage}")


# How many words each command takes before the rest of the line (kept as typed).
_FIXED_WORDS = {"forward": 1, "inject": 3, "close": 3}


def execute(hub: ProxyHub, line: str) -> Reply | None:
    """Run one line; returns (event, human text, fields) to print, or None for a blank line."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    name, _, rest = text.partition(" ")
    name = name.lower()
    fixed = _FIXED_WORDS.get(name)
    args = rest.split(maxsplit=fixed) if fixed is not None else rest.split()
    handler = _COMMANDS.get(name)
    if handler is None:
        raise CommandError(f"unknown command {name!r} (help lists them)")
    try:
        return handler(hub, args)
    except (ProxyError, FaultError, RulesFileError) as exc:
        raise CommandError(str(exc)) from None


def _conns(hub: ProxyHub, args: list[str]) -> Reply:
    rows = [{"conn": c.id, "state": c.lifecycle.state.value, "client": c.info.client,
             "url": c.info.url, "held": len(hub.pending(c.id)),
             "frames_out": c.counters["frames_out"], "frames_in": c.counters["frames_in"]}
            for c in hub.connections.values()]
    human = "\n".join(f"{r['conn']} {r['state']} {r['client']} -> {r['url']} "
                      f"out {r['frames_out']} in {r['frames_in']} held {r['held']}"
                      for r in rows) or "no open connections"
    return "conns", human, {"connections": rows}


def _held(hub: ProxyHub, args: list[str]) -> Reply:
    rows = [{"id": h.id, "conn": h.conn, "direction": h.direction.value,
             "opcode": h.opcode.name.lower(), "rule": h.rule, "data": _preview(h.payload)}
            for h in hub.pending(args[0] if args else None)]
    human = "\n".join(f"#{r['id']} {r['conn']} {r['direction']} {r['opcode']} "
                      f"[{r['rule']}] {r['data']}" for r in rows) or "nothing held"
    return "held", human, {"frames": rows}


def _forward(hub: ProxyHub, args: list[str]) -> Reply:
    _need(args, 1, "forward ID [TEXT...]")
    held_id = _number(args[0].lstrip("#"), "ID")
    payload = args[1].encode() if len(args) > 1 else None
    held = hub.resolve(held_id, True, payload)
    how = "edited" if payload is not None else "as it was"
    return "forwarded", f"#{held.id} forwarded {how}", {"id": held.id, "edited": bool(payload)}


def _drop(hub: ProxyHub, args: list[str]) -> Reply:
    _need(args, 1, "drop ID")
    held = hub.resolve(_number(args[0].lstrip("#"), "ID"), False)
    return "dropped", f"#{held.id} dropped", {"id": held.id}


def _release(forward: bool) -> Callable[[ProxyHub, list[str]], Reply]:
    def run(hub: ProxyHub, args: list[str]) -> Reply:
        count = hub.release_all(args[0] if args else None, forward)
        verb = "forwarded" if forward else "dropped"
        return "released", f"{count} held frame(s) {verb}", {"count": count, "forward": forward}

    return run


_KINDS = {"text": Opcode.TEXT, "json": Opcode.TEXT, "binary": Opcode.BINARY,
          "ping": Opcode.PING, "pong": Opcode.PONG}


def _inject(hub: ProxyHub, args: list[str]) -> Reply:
    usage = "inject CONN client|server text|json|binary|ping|pong PAYLOAD"
    _need(args, 3, usage)
    conn, side, kind = args[0], args[1], args[2].lower()
    if kind not in _KINDS:
        raise CommandError(f"usage: {usage}")
    data = args[3] if len(args) > 3 else ""
    if kind == "binary":
        try:
            payload = binascii.unhexlify(data.replace(" ", ""))
        except (binascii.Error, ValueError):
            raise CommandError("binary payloads are given in hex, e.g. 00ff10") from None
    elif kind == "json":
        try:
            payload = orjson.dumps(orjson.loads(data))
        except orjson.JSONDecodeError as exc:
            raise CommandError(f"not JSON: {exc}") from None
    else:
        payload = data.encode()
    hub.connection(conn).inject(_side(side), _KINDS[kind], payload)
    return "injected", f"{conn}: {kind} to the {side}", {"conn": conn, "side": side,
                                                          "kind": kind, "size": len(payload)}


def _side(word: str) -> str:
    if word not in ("client", "server"):
        raise CommandError(f"the side is client or server, not {word!r}")
    return word


def _close(hub: ProxyHub, args: list[str]) -> Reply:
    _need(args, 3, "close CONN client|server CODE [REASON]")
    conn, side, code = args[0], _side(args[1]), _number(args[2], "CODE")
    reason = args[3] if len(args) > 3 else ""
    hub.connection(conn).close(side, code, reason)
    return "closed", f"{conn}: {side} closed with {code}", {"conn": conn, "side": side,
                                                            "code": code, "reason": reason}


def _pongs(hub: ProxyHub, args: list[str]) -> Reply:
    _need(args, 3, "pongs CONN client|server pass|drop|delay [MS]")
    conn, side, mode = args[0], _side(args[1]), args[2]
    delay = float(_number(args[3], "MS")) if len(args) > 3 else 0.0
    if mode == "delay" and delay <= 0:
        raise CommandError("pongs ... delay needs the delay in ms")
    hub.connection(conn).shape_pongs(side, mode, delay)
    return "pongs", f"{conn}: pongs to the {side}: {mode}", {"conn": conn, "side": side,
                                                             "mode": mode, "delay_ms": delay}


def _net(hub: ProxyHub, args: list[str]) -> Reply:
    _need(args, 2, "net CONN|all KIND [ARGS]  or  net CONN|all clear [KIND]")
    target = args[0]
    if args[1] == "clear":
        removed = hub.clear_fault(target, args[2] if len(args) > 2 else None)
        return "net", f"{target}: {removed} fault(s) cleared", {"target": target,
                                                               "cleared": removed}
    kind, params = fault_from_words(args[1:])
    hub.set_fault(target, parse_fault(kind, params))
    return "net", f"{target}: {kind} {params or ''}".rstrip(), {"target": target, "kind": kind,
                                                                 **params}


def _rules(hub: ProxyHub, args: list[str]) -> Reply:
    _need(args, 1, "rules FILE")
    loaded = load_rules(args[0])
    hub.rules.replace(loaded.rules)
    return "rules", f"{len(loaded.rules)} rule(s) from {args[0]}", {"rules": len(loaded.rules)}


def _stats(hub: ProxyHub, args: list[str]) -> Reply:
    counters = dict(sorted(hub.counters.items()))
    human = ", ".join(f"{k} {v}" for k, v in counters.items()) or "nothing yet"
    return "stats", human, {"counters": counters}


def _help(hub: ProxyHub, args: list[str]) -> Reply:
    return "help", USAGE, {}


def _quit(hub: ProxyHub, args: list[str]) -> Reply:
    raise Quit


_COMMANDS = {
    "conns": _conns, "held": _held, "forward": _forward, "drop": _drop,
    "release": _release(True), "release-drop": _release(False), "inject": _inject,
    "close": _close, "pongs": _pongs, "net": _net, "rules": _rules, "stats": _stats,
    "help": _help, "quit": _quit, "exit": _quit,
}
