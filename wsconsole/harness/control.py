"""The authenticated control channel between the supervisor and its children.

JSON lines over a loopback TCP socket. A child (node, balancer) connects, sends
`{"type": "hello", "peer": ID, "key": KEY}`, then pushes stats snapshots and events; the
supervisor sends commands `{"type": "cmd", "rid": N, "cmd": ..., ...}` that the child answers
with `{"type": "reply", "rid": N, "ok": bool, ...}`. The key reaches children through the
environment (`CONTROL_KEY_ENV`), never the command line, so `ps` does not show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from wsconsole.errors import WsconsoleError

log = logging.getLogger(__name__)

CONTROL_KEY_ENV = "WSCONSOLE_CONTROL_KEY"
MAX_LINE = 1 << 20
HELLO_TIMEOUT = 5.0

Message = dict[str, Any]


class ControlError(WsconsoleError, RuntimeError):
    """A command could not be delivered or answered (peer gone, timeout, refusal)."""


def _line(message: Message) -> bytes:
    return orjson.dumps(message) + b"\n"


class ControlServer:
    """Supervisor side: accepts children that prove the key; routes their lines to callbacks."""

    def __init__(
        self,
        key: str,
        on_message: Callable[[str, Message], None],
        on_disconnect: Callable[[str], None] | None = None,
    ) -> None:
        self.key = key
        self.on_message = on_message
        self.on_disconnect = on_disconnect
        self.port = 0
        self._server: asyncio.Server | None = None
        self._peers: dict[str, asyncio.StreamWriter] = {}
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._rids = itertools.count(1)
        self._connected: dict[str, asyncio.Event] = {}

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on a loopback port (0: any free one) and return it."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_LINE)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def connected(self, peer: str) -> bool:
        """Whether `peer` currently holds a control connection."""
        return peer in self._peers

    async def wait_connected(self, peer: str, timeout: float) -> None:
        """Wait until `peer` has said hello; raise TimeoutError after `timeout` seconds."""
        if peer in self._peers:
            return
        event = self._connected.setdefault(peer, asyncio.Event())
        await asyncio.wait_for(event.wait(), timeout)

    async def request(self, peer: str, cmd: str, timeout: float = 5.0, **fields: Any) -> Message:
        """Send a command to `peer` and await its reply (raises ControlError)."""
        writer = self._peers.get(peer)
        if writer is None:
            raise ControlError(f"{peer} is not connected")
        rid = next(self._rids)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            writer.write(_line({"type": "cmd", "rid": rid, "cmd": cmd, **fields}))
            await writer.drain()
            reply = await asyncio.wait_for(future, timeout)
        except (ConnectionError, TimeoutError) as exc:
            raise ControlError(f"{peer}: {cmd} got no reply ({exc!r})") from None
        finally:
            self._pending.pop(rid, None)
        if not reply.get("ok", False):
            raise ControlError(f"{peer}: {cmd} refused: {reply.get('error', 'unknown error')}")
        return reply

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = None
        try:
            hello = orjson.loads(await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT))
            if (
                not isinstance(hello, dict)
                or hello.get("type") != "hello"
                or not isinstance(hello.get("peer"), str)
                or not hmac.compare_digest(str(hello.get("key", "")), self.key)
            ):
                log.warning("control: refused a peer without a valid hello")
                return
            peer = hello["peer"]
            old = self._peers.get(peer)
            if old is not None:
                old.close()
            self._peers[peer] = writer
            self._connected.setdefault(peer, asyncio.Event()).set()
            self.on_message(peer, hello)
            while line := await reader.readline():
                message = orjson.loads(line)
                if message.get("type") == "reply":
                    future = self._pending.get(message.get("rid"))
                    if future is not None and not future.done():
                        future.set_result(message)
                else:
                    self.on_message(peer, message)
        except (TimeoutError, ConnectionError, orjson.JSONDecodeError, ValueError) as exc:
            log.debug("control: peer %s dropped: %r", peer, exc)
        finally:
            if peer is not None and self._peers.get(peer) is writer:
                del self._peers[peer]
                self._connected.pop(peer, None)
                if self.on_disconnect is not None:
                    self.on_disconnect(peer)
            writer.close()

    async def close(self) -> None:
        """Stop listening and drop every peer."""
        for writer in list(self._peers.values()):
            writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)


CommandHandler = Callable[[Message], Awaitable[Message | None]]


class ControlClient:
    """Child side: says hello, pushes messages, and answers the supervisor's commands."""

    def __init__(self, peer: str, key: str, handler: CommandHandler) -> None:
        self.peer = peer
        self.key = key
        self.handler = handler
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def connect(self, host: str, port: int) -> None:
        """Open the channel and say hello."""
        reader, writer = await asyncio.open_connection(host, port, limit=MAX_LINE)
        self._writer = writer
        writer.write(_line({"type": "hello", "peer": self.peer, "key": self.key}))
        await writer.drain()
        self._reader_task = asyncio.create_task(self._read(reader), name=f"control-{self.peer}")

    @property
    def connected(self) -> bool:
        """True while the channel is open."""
        return self._writer is not None and not self._writer.is_closing()

    async def send(self, message: Message) -> None:
        """Push one message (a stats snapshot, an event); silently skipped if disconnected."""
        if not self.connected:
            return
        assert self._writer is not None
        try:
            self._writer.write(_line(message))
            await self._writer.drain()
        except ConnectionError:
            self._writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                message = orjson.loads(line)
                if message.get("type") != "cmd":
                    continue
                rid = message.get("rid")
                try:
                    reply = await self.handler(message) or {}
                    await self.send({"type": "reply", "rid": rid, "ok": True, **reply})
                except Exception as exc:  # a bad command must not kill the child
                    await self.send({"type": "reply", "rid": rid, "ok": False, "error": str(exc)})
        except (ConnectionError, orjson.JSONDecodeError, ValueError) as exc:
            log.debug("control: channel lost: %r", exc)
        finally:
            if self._writer is not None:
                self._writer.close()

    async def close(self) -> None:
        """Close the channel."""
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
        if self._writer is not None:
            self._writer.close()
