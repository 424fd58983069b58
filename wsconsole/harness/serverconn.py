"""The node's `websockets` server connection: strict incoming frames, lean while idle.

- Incoming frames get the checks of `core/framecheck.py`: invalid UTF-8 in any fragment
  of a text message fails at once with 1007.
- Two queues of the library that are empty nearly all the time are lists instead of
  deques: a deque allocates a 64-slot block as soon as it exists (about 700 bytes), so
  the two took some 1.5 KiB of every idle connection (tracemalloc, 1,000 idle
  connections; docs/benchmarks.md "Handshakes and idle connections"). They are the
  writers waiting for the send buffer to drain (appended, removed, iterated) and the
  frames received but not yet read (`max_queue` bounds them: a few at most).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, TypeVar

from websockets.asyncio.server import ServerConnection
from websockets.server import ServerProtocol

from wsconsole.core.framecheck import strict_frames

T = TypeVar("T")


class ShortQueue(list[T]):
    """The part of `collections.deque` the library's frame queue uses, on a list: an
    empty list costs 56 bytes where a deque costs about 700. Taking from the front
    moves the rest, which is nothing for a queue `max_queue` keeps to a few frames."""

    __slots__ = ()

    def popleft(self) -> T:
        """Remove and return the first item (IndexError when empty, as a deque)."""
        return self.pop(0)

    def extendleft(self, items: Iterable[T]) -> None:
        """Add each item at the front in turn (so they end up in reverse, as a deque)."""
        for item in items:
            self.insert(0, item)


class StrictConnection(ServerConnection):
    """The node's server connection; see the module docstring."""

    def __init__(self, protocol: ServerProtocol, *args: Any, **kwargs: Any) -> None:
        super().__init__(protocol, *args, **kwargs)
        strict_frames(protocol)
        self.drain_waiters = []  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Set up as the library does, then give its frame queue (made here, still empty:
        nothing was received yet) a `ShortQueue`."""
        super().connection_made(transport)
        self.recv_messages.frames.queue = ShortQueue()  # type: ignore[assignment]
