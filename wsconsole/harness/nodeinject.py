"""The node's "inject" control command: a malformed frame written raw to live connections.

The supervisor (and `wsconsole inject`) names a catalogue case (`faults/catalogue.py`) and
a target: every connection of the node, one connection id, or a room's local members.
The case's bytes go straight to each transport, bypassing `websockets`' framing (at a frame
boundary: `websockets` writes whole frames), and the reply reports how each client reacted
within `wait` seconds, judged against the case's expected reaction.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wsconsole.faults.inject import (
    ALL,
    InjectError,
    InjectRequest,
    parse_request,
    reaction_record,
    split_target,
)

if TYPE_CHECKING:
    from wsconsole.harness.node import Node
    from wsconsole.harness.session import Session

_ENVELOPE = ("type", "rid", "cmd")  # control-message fields that are not the command's own
MAX_LISTED = 100  # connections and reactions listed in one reply


def inject_targets(node: Node, request: InjectRequest) -> tuple[str, list[Session]]:
    """The connections a target names: ('all'|'conn'|'room', conns); InjectError if none."""
    if request.target == ALL:
        kind, found = "all", list(node.conns.values())
        if not found:
            raise InjectError(f"node {node.config.id} has no connection to inject into")
    else:
        explicit, name = split_target(request.target)
        conn = node.conns.get(name) if explicit != "room" else None
        members = node.rooms.members(name) if explicit != "conn" else []
        if conn is not None:
            kind, found = "conn", [conn]
        elif members:
            kind, found = "room", sorted(members, key=lambda c: c.id)
        else:
            rooms = ", ".join(node.rooms.names()[:10]) or "none"
            what = {"conn": "connection", "room": "room"}.get(explicit or "", "conn or room")
            raise InjectError(
                f"no {what} {name!r} on node {node.config.id} ({len(node.conns)} "
                f"connections; rooms: {rooms}; ids: the 'connections' command)"
            )
    if request.count is not None:
        found = found[: request.count]
    return kind, found


async def inject(node: Node, message: dict[str, Any], event: Callable[..., None]) -> dict[str, Any]:
    """Write a catalogue case raw to connections, then report each client's reaction.

    `event` tells the supervisor what was written, before the wait. A client that fails
    the connection is forgotten like any other that leaves; its close is not counted as a
    node error.
    """
    request = parse_request({k: v for k, v in message.items() if k not in _ENVELOPE})
    kind, targets = inject_targets(node, request)
    data = request.data()
    case = request.case
    written: list[Session] = []
    skipped = 0
    for conn in targets:
        transport = conn.ws.transport
        if conn.ws.state.name != "OPEN" or transport is None or transport.is_closing():
            skipped += 1
            continue
        conn.injected = case.id
        transport.write(data)
        written.append(conn)
    node.stats.injected += len(written)
    node.stats.bytes_out += len(data) * len(written)
    event("injected", case=case.id, target=request.target, sent=len(written))
    started = time.monotonic()
    if written and request.wait > 0:
        waiters = [asyncio.ensure_future(conn.ws.wait_closed()) for conn in written]
        _, pending = await asyncio.wait(waiters, timeout=request.wait)
        for waiter in pending:
            waiter.cancel()
    waited = time.monotonic() - started
    reactions = []
    verdicts: Counter[str] = Counter()
    for conn in written:
        closed = conn.ws.state.name == "CLOSED"
        code, reason = conn.ws.close_code, conn.ws.close_reason or ""
        record = reaction_record(conn.id, case.expected, closed, code, reason, waited)
        verdicts[record["verdict"]] += 1
        if len(reactions) < MAX_LISTED:
            reactions.append(record)
    return {
        "case": case.id,
        "rfc": case.section,
        "title": case.title,
        "expected": case.expected.describe(),
        "target": request.target,
        "kind": kind,
        "sent": len(written),
        "skipped": skipped,
        "bytes": len(data),
        "connections": [conn.id for conn in written[:MAX_LISTED]],
        "reactions": reactions,
        "verdicts": dict(verdicts),
        "waited": round(waited, 3),
    }
