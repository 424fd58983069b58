"""The node's server heartbeat: one sweep over every connection instead of a task each.

`websockets` runs a keepalive task per connection (a sleeping coroutine, its future and
timer: about 2 KiB of an idle connection's memory, measured with tracemalloc at 1,000
idle connections). `Heartbeat` keeps the same behaviour with one timer for the node: a
heap of due times, one entry per connection, and a sweep when the earliest comes due.

The same semantics as `websockets`' keepalive (`asyncio/connection.py`, `keepalive`):
- the first ping `interval` seconds after the connection opens;
- a ping is a random 4-byte payload registered in the connection's `pending_pings`, so
  the library acknowledges the pong, completes its future and updates `latency`;
- no pong within `timeout`: the connection fails with 1011 "keepalive ping timeout"
  (through `send_context`, as the library does: close frame, then the TCP connection
  is closed, at the latest after `close_timeout`);
- after a pong, the next ping `interval` after the previous one was sent (at once when
  the pong took longer than `interval`); `timeout` None: never closed for a missing pong.

An entry is dropped when its connection is no longer open; `forget` lets go of a closed
connection at once (its entry is emptied, so the heap never keeps a connection alive).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from functools import partial

from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode
from websockets.protocol import State

from wsconsole.core.tasks import Tasks
from wsconsole.harness.overload import ping_now

log = logging.getLogger("wsconsole.node.heartbeat")

SLACK = 0.01  # seconds a sweep may wait for the entries coming due just after the first
_PING, _TIMEOUT = 0, 1
# an entry: [due (loop time), tie-breaker, kind, the connection or None once superseded]
Entry = list


class Heartbeat:
    """Pings every open connection every `interval` seconds; closes with 1011 one that
    does not answer within `timeout` (None: never). See the module docstring."""

    def __init__(self, interval: float, timeout: float | None, tasks: Tasks) -> None:
        self.interval = interval
        self.timeout = timeout
        self._tasks = tasks
        self._heap: list[Entry] = []
        self._entries: dict[ServerConnection, Entry] = {}  # each connection's live entry
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._wake = 0.0  # when the timer fires
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        """How many connections are watched."""
        return len(self._entries)

    def watch(self, ws: ServerConnection) -> None:
        """Start pinging an open connection: the first ping `interval` from now."""
        if self._closed:
            return
        loop = self._loop = asyncio.get_running_loop()
        self._schedule(ws, loop.time() + self.interval, _PING)

    def forget(self, ws: ServerConnection) -> None:
        """Stop watching a connection (it closed): its entry lets go of it now."""
        entry = self._entries.pop(ws, None)
        if entry is not None:
            entry[3] = None

    def close(self) -> None:
        """Stop the sweep for good (the node is shutting down): nothing is watched or
        pinged any more, even when a pong still comes."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for entry in self._entries.values():
            entry[3] = None
        self._entries.clear()
        self._heap.clear()
        self._closed = True

    # -- schedule -------------------------------------------------------------------------
    def _schedule(self, ws: ServerConnection, due: float, kind: int) -> None:
        """Make `ws`'s next event (a ping or a pong deadline) due at `due`; the entry it
        had is emptied (it stays in the heap until its time, holding nothing)."""
        entry: Entry = [due, next(self._order), kind, ws]
        old = self._entries.get(ws)
        if old is not None:
            old[3] = None
        self._entries[ws] = entry
        heapq.heappush(self._heap, entry)
        if self._timer is None or due + SLACK < self._wake:
            self._arm(due + SLACK)

    def _arm(self, when: float) -> None:
        """(Re)start the one timer for `when` (loop time)."""
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._wake = when
        self._timer = self._loop.call_at(when, self._sweep)

    def _sweep(self) -> None:
        """Handle every entry that is due, then wait for the next."""
        self._timer = None
        assert self._loop is not None
        now = self._loop.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, kind, ws = heapq.heappop(heap)
            if ws is None:
                continue  # forgotten or rescheduled
            if ws.protocol.state is not State.OPEN:
                self.forget(ws)
            elif kind == _PING:
                self._ping(ws, now)
            else:
                self._pong_missing(ws)
        if heap:
            self._arm(heap[0][0] + SLACK)

    # -- events ---------------------------------------------------------------------------
    def _ping(self, ws: ServerConnection, now: float) -> None:
        """Send a ping as `ServerConnection.ping` does, without its task."""
        pong = ping_now(ws)
        pong.add_done_callback(partial(self._ponged, ws, now))
        if self.timeout is not None:
            self._schedule(ws, now + self.timeout, _TIMEOUT)

    def _ponged(self, ws: ServerConnection, sent: float, pong: asyncio.Future[float]) -> None:
        """The pong came (or the connection closed: the future failed): the next ping."""
        if pong.cancelled() or pong.exception() is not None or ws not in self._entries:
            # the connection ended, or it is no longer watched (forgotten, or closed)
            return
        assert self._loop is not None
        self._schedule(ws, max(sent + self.interval, self._loop.time()), _PING)

    def _pong_missing(self, ws: ServerConnection) -> None:
        """No pong within `timeout`: fail the connection with 1011, as the library does."""
        self.forget(ws)
        self._tasks.spawn(_fail(ws), "keepalive-timeout")


async def _fail(ws: ServerConnection) -> None:
    """Fail a connection whose pong is late, exactly as `websockets`' keepalive does."""
    try:
        async with ws.send_context():
            ws.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
    except Exception:  # ConnectionClosed once closed: what the library's keepalive logs
        log.debug("keepalive timeout close of %s ended", ws.id, exc_info=True)
