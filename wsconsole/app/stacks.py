"""The console's own connection to a user's stack, and the stacks it remembers (no Qt).

When the window runs a stack (File > Open stack...), its own connection goes through the
balancer to the user's nodes like the swarm's clients do, following the stack's recipe: a
WebSocket app gets the recipe's auth header or query, and its auth and join messages sent
again after every open (`greeting`); a Socket.IO app its auth payload and the join event.
It joins the swarm's first room, so the Frames view shows the traffic the swarm makes.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from wsconsole.app.profiles import Profile
from wsconsole.harness.stackfile import Stack

CONSOLE_ROOM = "swarm-0"  # the swarm's first room
RECENT_LIMIT = 8


def _values(name: str, stack: Stack) -> dict[str, Any]:
    values: dict[str, Any] = {"user": name, "client": name, "index": 0, "room": CONSOLE_ROOM}
    recipe = stack.client
    if recipe is not None and recipe.auth.token is not None:
        values["token"] = str(recipe.auth.token.render(values))
    return values


def console_connection(stack: Stack, url: str, name: str) -> tuple[Profile, list[str]]:
    """The profile of the console's connection to the stack at `url` (the balancer's app
    URL) and the messages to send after every open."""
    recipe = stack.client
    kind = {"websocket": "ws", "socketio": "socketio", "sse": "sse"}[stack.protocol.kind]
    fields: dict[str, Any] = {"name": name, "url": url, "kind": kind}
    greeting: list[str] = []
    if recipe is not None:
        values = _values(name, stack)
        auth = recipe.auth
        if auth.header is not None:
            fields["headers"] = [(auth.header[0], str(auth.header[1].render(values)))]
        if auth.query is not None:
            parts = urllib.parse.urlsplit(url)
            query = urllib.parse.parse_qsl(parts.query)
            query.append((auth.query[0], str(auth.query[1].render(values))))
            fields["url"] = urllib.parse.urlunsplit(
                parts._replace(query=urllib.parse.urlencode(query)))
        if kind == "socketio":
            fields.update(sio_path=stack.protocol.path.strip("/"),
                          sio_namespaces=[stack.protocol.namespace], sio_transport="websocket")
            if auth.socketio is not None:
                fields["sio_auth"] = auth.socketio.render(values)
            join = recipe.join
            if join is not None and join.args is not None and join.event is not None \
                    and join.args.value == ["{room}"]:
                fields.update(rooms=[CONSOLE_ROOM], sio_join_event=join.event)
        elif kind == "ws":
            if auth.message is not None:
                greeting.append(auth.message.text(values))
            if recipe.join is not None and recipe.join.message is not None:
                greeting.append(recipe.join.message.text(values))
    return Profile(**fields), greeting


def remember(recent: list[str], path: str) -> list[str]:
    """The recent stacks with `path` first (no duplicates, at most RECENT_LIMIT)."""
    return [path, *(p for p in recent if p != path)][:RECENT_LIMIT]
