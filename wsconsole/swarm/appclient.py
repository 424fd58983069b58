"""One simulated client of the user's app, following the stack's client recipe.

It is the console's own client underneath (`ReconnectingClient` in raw mode for a WebSocket
app, `SocketIOClient` for a Socket.IO one: the same backoff, heartbeat and lifecycle as every
other client here) and adds only what the recipe says (harness/stackfile.py):

- authenticate: a header and/or a query parameter on every connect, a first message after
  every open (WebSocket), or the Socket.IO handshake's auth payload;
- join its room after every open (a message template, or a Socket.IO event), waiting for
  the app's confirmation when the recipe says it gives one (a Socket.IO ack, a message);
- publish on demand from the swarm: the template filled with a unique id, the send time in
  milliseconds (`{ts}`) and its counter, only while connected (a client that is away
  publishes nothing: what it would have sent is counted as unsent, never owed);
- recognise a delivery: a text message matching the recipe (its `match` fields, or the
  Socket.IO event), whose id is read at the recipe's path.

Socket.IO connection state recovery: when the server hands out a session id (`pid`), the
client sends it back with the offset of the last event it received on every reconnect, as
socket.io-client does, and counts the sessions the server resumed.

Which node served each connection is read from the balancer's `X-Wsconsole-Node` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import orjson

from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.client import ClientOptions, ReconnectingClient
from wsconsole.core.errors import ClientError
from wsconsole.core.events import Direction, ErrorEvent, Event, FrameRecord, Opcode
from wsconsole.core.lifecycle import State, Transition
from wsconsole.core.targets.socketio import SocketIOClient, SocketIOOptions
from wsconsole.core.tasks import Tasks
from wsconsole.core.templates import MISSING, Template
from wsconsole.harness.pump import NODE_HEADER
from wsconsole.harness.stackfile import ClientRecipe, Stack
from wsconsole.swarm.appaccounting import AppAccounting

log = logging.getLogger(__name__)

NODE_KEY = NODE_HEADER.lower()
JOIN_TIMEOUT = 10.0  # seconds an app may take to confirm a join


def seconds(timestamp: float) -> float:
    """A timestamp in seconds since the epoch (milliseconds, as `{ts}` is, are told apart by
    size)."""
    return timestamp / 1000.0 if timestamp > 1e11 else timestamp


def _with_query(url: str, name: str, value: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query.append((name, value))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


class AppClient:
    """A simulated user of the app; see the module docstring."""

    def __init__(self, stack: Stack, url: str, name: str, index: int, user: str, room: str,
                 accounting: AppAccounting, run: str, tasks: Tasks,
                 backoff: BackoffPolicy, ping_interval: float | None,
                 ping_timeout: float, connect_timeout: float = 10.0,
                 local_addr: tuple[str, int] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        assert stack.client is not None, "a stack with a [client] recipe"
        self.recipe: ClientRecipe = stack.client
        self.socketio = stack.protocol.kind == "socketio"
        self.name = name
        self.room = room
        self.accounting = accounting
        self.run = run
        self.tasks = tasks
        self.clock = clock
        self.counter = 0
        self.ready = False  # open, authenticated and joined: it may publish
        self.node: str | None = None
        self.values: dict[str, Any] = {"user": user, "client": name, "index": index,
                                       "room": room}
        auth = self.recipe.auth
        if auth.token is not None:
            self.values["token"] = str(auth.token.render(self.values))
        headers = [(auth.header[0], str(auth.header[1].render(self.values)))] \
            if auth.header else []
        if auth.query is not None:
            url = _with_query(url, auth.query[0], str(auth.query[1].render(self.values)))
        self._pid: str | None = None  # Socket.IO connection state recovery
        self._offset: str | None = None
        self._confirmed = asyncio.Event()  # the app answered the current connection's join
        self.driver: ReconnectingClient | SocketIOClient
        if self.socketio:
            payload = auth.socketio.render(self.values) if auth.socketio is not None else None
            self._auth: dict[str, Any] = dict(payload or {})
            self.driver = SocketIOClient(SocketIOOptions(
                url=url, path=stack.protocol.path.strip("/"),
                namespaces=[stack.protocol.namespace], auth=dict(self._auth) or None,
                headers=headers, transports=["websocket"], backoff=backoff,
                connect_timeout=connect_timeout, local_addr=local_addr,
            ), name=name)  # fmt: skip
            self.driver.on_event(self._event)
        else:
            self.driver = ReconnectingClient(ClientOptions(
                url=url, headers=headers, harness=False, backoff=backoff,
                ping_interval=ping_interval, ping_timeout=ping_timeout, close_timeout=1.0,
                connect_timeout=connect_timeout, queue_limit=None, local_addr=local_addr,
                compression=False,
            ), name=name)  # fmt: skip
        self.driver.subscribe(self._observe)

    @property
    def state(self) -> State:
        """The connection's state."""
        return self.driver.state

    async def start(self) -> None:
        """Begin connecting (returns at once)."""
        await self.driver.start()

    async def stop(self) -> None:
        """Close and stop reconnecting."""
        await self.driver.stop()

    # ---- observing -------------------------------------------------------------------------

    def _observe(self, event: Event) -> None:
        if isinstance(event, Transition):
            self.accounting.transition(self.name, event.state.value, event.at)
            if event.state is State.OPEN:
                self.tasks.spawn(self._greet(), f"greet-{self.name}")
            else:
                self.ready = False
                if event.state is State.CONNECTING and self.socketio and self._pid:
                    self._resume_with_session()
        elif isinstance(event, FrameRecord):
            if event.direction is Direction.IN and event.opcode is Opcode.TEXT:
                if self.socketio:
                    self._socketio_packet(event.payload)
                else:
                    self._message(event.payload, event.wall)
        elif isinstance(event, ErrorEvent):
            self.accounting.error(event.kind)

    async def _greet(self) -> None:
        """After every open: note the node, authenticate, join; then it may publish."""
        driver = self.driver
        headers = driver.response_headers if isinstance(driver, SocketIOClient) \
            else driver.handshake_headers
        self.node = headers.get(NODE_KEY)
        now = self.clock()
        if self.node is not None:
            self.accounting.served_by(self.name, self.node, now)
        try:
            auth = self.recipe.auth.message
            if auth is not None and isinstance(driver, ReconnectingClient):
                await driver.send(auth.text(self.values))
            join = self.recipe.join
            if join is not None:
                self._confirmed.clear()
                if join.ack and isinstance(driver, SocketIOClient):
                    assert join.event is not None and join.args is not None
                    await driver.emit(join.event, *join.args.render(self.values), ack=True,
                                      timeout=JOIN_TIMEOUT)
                else:
                    await self._send(join.message, join.event, join.args, self.values)
                    if join.confirm is not None:
                        async with asyncio.timeout(JOIN_TIMEOUT):
                            await self._confirmed.wait()
        except (ClientError, TimeoutError) as exc:
            self.accounting.error("join_unconfirmed" if isinstance(exc, TimeoutError)
                                  else type(exc).__name__.lower())
            return
        if driver.state is State.OPEN:
            confirmed = self.recipe.join is not None and self.recipe.join.confirmed
            self.accounting.joined(self.name, self.room, self.clock(), confirmed)
            self.ready = True

    async def _send(self, message: Template | None, event: str | None, args: Template | None,
                    values: dict[str, Any]) -> None:
        if isinstance(self.driver, SocketIOClient):
            assert event is not None and args is not None
            await self.driver.emit(event, *args.render(values))
        else:
            assert message is not None
            await self.driver.send(message.text(values))

    def _message(self, payload: bytes, wall: float) -> None:
        """A WebSocket text message: a delivery if it matches the recipe."""
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(message, dict):
            return
        join = self.recipe.join
        if join is not None and join.confirm is not None and \
                all(message.get(key) == value for key, value in join.confirm.items()):
            self._confirmed.set()
            return
        if any(message.get(key) != value for key, value in self.recipe.receive.match.items()):
            return
        self._delivery(message, wall)

    def _event(self, namespace: str, event: str, args: tuple[Any, ...]) -> None:
        """A Socket.IO event: a delivery if it is the recipe's (its first argument)."""
        if event == self.recipe.receive.event and args:
            self._delivery(args[0], time.time())

    def _socketio_packet(self, payload: bytes) -> None:
        """Keep what connection state recovery needs: the session id of a CONNECT, the
        offset a recovering server appends to every EVENT."""
        text = payload.decode("utf-8", "replace")
        if text.startswith("0"):
            with contextlib.suppress(orjson.JSONDecodeError, ValueError):
                body = orjson.loads(text[text.index("{"):])
                pid = body.get("pid") if isinstance(body, dict) else None
                if isinstance(pid, str):
                    if pid == self._pid:
                        self.accounting.recovered()
                    self._pid = pid
        elif text.startswith("2") and self._pid is not None:
            with contextlib.suppress(orjson.JSONDecodeError, ValueError):
                packet = orjson.loads(text[text.index("["):])
                if isinstance(packet, list) and len(packet) > 2 and \
                        isinstance(packet[-1], str):
                    self._offset = packet[-1]

    def _resume_with_session(self) -> None:
        """The next connect asks the server to resume the session (socket.io-client's way)."""
        assert isinstance(self.driver, SocketIOClient)
        self.driver.options.auth = {**self._auth, "pid": self._pid,
                                    **({"offset": self._offset} if self._offset else {})}

    def _delivery(self, message: Any, wall: float) -> None:
        receive = self.recipe.receive
        ident = receive.id.get(message)
        if ident is MISSING:
            self.accounting.error("delivery_without_id")
            return
        latency = None
        if receive.timestamp is not None:
            stamp = receive.timestamp.get(message)
            if isinstance(stamp, int | float) and not isinstance(stamp, bool):
                latency = wall - seconds(float(stamp))
        else:
            sent = self.accounting.messages.get(str(ident))
            if sent is not None:
                latency = self.clock() - self.accounting.started_at - sent.sent
        self.accounting.delivered(self.name, self.room, str(ident), latency, self.node)

    # ---- publishing ------------------------------------------------------------------------

    async def publish(self) -> bool:
        """Send one message if connected (True), else count it as unsent (False)."""
        if not self.ready or self.driver.state is not State.OPEN:
            self.accounting.skipped()
            return False
        self.counter += 1
        ident = f"{self.name}-{self.counter}-{self.run}"
        values = {**self.values, "id": ident, "counter": self.counter,
                  "ts": round(time.time() * 1000.0, 3)}
        publish = self.recipe.publish
        self.accounting.published(self.name, self.room, ident, self.counter, self.clock())
        try:
            await self._send(publish.message, publish.event, publish.args, values)
        except ClientError as exc:
            self.accounting.error(type(exc).__name__.lower())
            self.accounting.unpublished(ident)
            return False
        return True
