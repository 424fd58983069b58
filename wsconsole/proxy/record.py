"""The proxy's record: every connection's handshake, frames and actions, and what it feeds.

`Recorder` is an observer of a ProxyHub. It keeps, per connection, the `ConnectionInfo`,
the delivered frames (at most `max_frames` per connection, oldest dropped first; None: no
limit) and the `ProxyEvent`s. From it: a HAR (`write_har`, the DevTools format the rest of
wsconsole reads, with the handshake headers), and `har_connection()` for a replay or a
scenario export. `replay()` sends a recorded connection's client messages again - through
the proxy, so the new connection is recorded and ruled like any other - keeping the client's
handshake headers (Origin, cookies, Authorization, subprotocols), with the original timing
or as fast as possible, and returns what came back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from wsconsole.core.events import FrameRecord, Opcode
from wsconsole.core.tasks import spawn
from wsconsole.har import (
    FrameLike,
    HarConnection,
    HarHandshake,
    dump_har,
    recorded,
    replay,
)
from wsconsole.proxy.hub import ConnectionInfo, ProxyEvent, ProxyHub

# Handshake headers a replay must not copy: the WebSocket library writes its own.
_NOT_REPLAYED = frozenset({
    "host", "connection", "upgrade", "sec-websocket-key", "sec-websocket-version",
    "sec-websocket-extensions", "sec-websocket-protocol", "content-length",
})


@dataclass
class Recorded:
    """One connection as recorded."""

    info: ConnectionInfo
    frames: deque[FrameRecord]
    events: list[ProxyEvent] = field(default_factory=list)


class Recorder:
    """Observes a hub and keeps what each connection said and what was done to it."""

    def __init__(self, hub: ProxyHub, max_frames: int | None = 100_000) -> None:
        self.hub = hub
        self.max_frames = max_frames
        self.connections: dict[str, Recorded] = {}
        hub.subscribe(self.observe)

    def observe(self, event: object) -> None:
        """Hub observer."""
        if isinstance(event, FrameRecord):
            self._entry(event.conn).frames.append(event)
        elif isinstance(event, ProxyEvent):
            self._entry(event.conn).events.append(event)

    def _entry(self, conn: str) -> Recorded:
        entry = self.connections.get(conn)
        if entry is None:
            live = self.hub.connections.get(conn)
            info = live.info if live is not None else ConnectionInfo(conn, "", "", "")
            entry = self.connections[conn] = Recorded(info, deque(maxlen=self.max_frames))
        return entry

    def frames(self, conn: str | None = None) -> list[FrameRecord]:
        """Recorded frames, of one connection or all, in the order they were delivered."""
        chosen = [self.connections[conn]] if conn is not None else self.connections.values()
        merged = [frame for entry in chosen for frame in entry.frames]
        return sorted(merged, key=lambda frame: frame.at)

    def write_har(self, path: str | Path) -> int:
        """Write every recorded connection as a HAR; returns the number of messages."""
        urls = {conn: entry.info.url for conn, entry in self.connections.items()}
        shakes = {conn: HarHandshake(entry.info.request_headers, entry.info.status or 101,
                                     entry.info.response_headers)
                  for conn, entry in self.connections.items()}
        return dump_har(self.frames(), path, urls=urls, handshakes=shakes)

    def har_connection(self, conn: str) -> HarConnection:
        """A recorded connection in the HAR model (what replay and scenario export take)."""
        entry = self.connections.get(conn)
        if entry is None:
            raise KeyError(f"nothing recorded for {conn!r}")
        return as_har_connection(entry.info, entry.frames)


def as_har_connection(info: ConnectionInfo, frames: Iterable[FrameLike]) -> HarConnection:
    """A proxied connection's handshake and data frames in the HAR model."""
    return recorded(frames, info.url, info.request_headers, info.started, info.status)


@dataclass
class ReplayResult:
    """What a replay sent and got back (times in seconds from the start)."""

    opened: bool = False
    sent_at: list[float] = field(default_factory=list)
    received: list[tuple[float, Opcode, bytes]] = field(default_factory=list)  # (t, op, data)
    close_code: int | None = None
    error: str | None = None
    reply_timeouts: int = 0  # sends that went out before the replies they waited for

    @property
    def sent(self) -> int:
        """How many messages were sent."""
        return len(self.sent_at)


def replay_headers(conn: HarConnection) -> tuple[list[tuple[str, str]], list[str]]:
    """The recorded client's handshake headers to send again, and its subprotocols."""
    headers, protocols = [], []
    for name, value in conn.request_headers:
        lowered = name.lower()
        if lowered == "sec-websocket-protocol":
            protocols.extend(p.strip() for p in value.split(",") if p.strip())
        elif lowered not in _NOT_REPLAYED:
            headers.append((name, value))
    return headers, protocols


async def replay_through(conn: HarConnection, url: str, *, timing: str = "fast",
                         speed: float = 1.0, wait: float = 1.0, proxy: str | None = None,
                         tls: ssl.SSLContext | None = None, until: int | None = None,
                         after: list[int] | None = None,
                         reply_timeout: float = 5.0) -> ReplayResult:
    """Open `url` with the recorded handshake, re-send the client's messages, collect replies.

    `proxy` is an http:// proxy to go through (forward mode); `wait` is how long to keep
    listening after the last send, cut short once `until` messages came back. `after[i]`:
    message i goes out only once that many replies came back (or `reply_timeout` seconds
    passed, counted in `reply_timeouts`), as it did in the recording. Refusals and drops
    end up in `error`, never raised.
    """
    headers, protocols = replay_headers(conn)
    result = ReplayResult()
    start = time.monotonic()
    options: dict[str, object] = {"proxy": proxy} if proxy else {}
    if url.startswith("wss:"):
        options["ssl"] = tls or ssl.create_default_context()
    try:
        async with connect(url, additional_headers=headers, subprotocols=protocols or None,
                           user_agent_header=None, max_size=None, open_timeout=10,
                           **options) as ws:  # type: ignore[arg-type]

            result.opened = True
            arrived = asyncio.Event()

            async def collect() -> None:
                with contextlib.suppress(ConnectionClosed):
                    async for message in ws:
                        opcode = Opcode.TEXT if isinstance(message, str) else Opcode.BINARY
                        data = message.encode() if isinstance(message, str) else message
                        result.received.append((time.monotonic() - start, opcode, data))
                        arrived.set()
                        if until is not None and len(result.received) >= until:
                            return

            async def replies(count: int) -> None:
                while len(result.received) < count and not reader.done():
                    arrived.clear()
                    await arrived.wait()

            async def send(data: str | bytes) -> None:
                wanted = after[len(result.sent_at)] if after else 0
                if len(result.received) < wanted:
                    try:
                        await asyncio.wait_for(replies(wanted), reply_timeout)
                    except TimeoutError:
                        result.reply_timeouts += 1
                result.sent_at.append(time.monotonic() - start)
                await ws.send(data)

            reader = spawn(collect(), "replay-reader")
            await replay(conn, send, timing=timing, speed=speed)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), wait)
            reader.cancel()
            await ws.close()
            result.close_code = ws.close_code
    except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result

