"""The node's `websockets` server connection: strict incoming frames, lean while idle.

- Incoming frames get the checks of `core/framecheck.py`: invalid UTF-8 in any fragment
  of a text message fails at once with 1007.
- What only the opening handshake needed is let go of once it is over
  (`release_handshake`): the request (its headers and the token in its path) and the
  response, which the connection keeps for its whole life, and the parser that read the
  request (a suspended generator that keeps the request too); about 3 KiB.
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
from websockets.datastructures import Headers
from websockets.http11 import Request
from websockets.protocol import Protocol
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from wsconsole.core.framecheck import strict_frames

T = TypeVar("T")

# what stands for a request once the handshake is over: websockets only checks that a
# request came (`request is not None`); nothing writes to it
HANDSHAKE_DONE = Request(path="", headers=Headers())


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


def release_handshake(ws: ServerConnection) -> None:
    """Let go of what only the opening handshake needed (see the module docstring): call
    once the handshake is over, after reading what is needed of the request."""
    request = ws.request
    ws.request, ws.response = HANDSHAKE_DONE, None
    ws.request_rcvd = None  # type: ignore[assignment]  # only the handshake waits on it
    protocol = ws.protocol
    if _between_frames(protocol.parser):
        # the frame parser the request's parser went on to, afresh: nothing is lost, as
        # it waits for the first byte of a frame
        protocol.parser = Protocol.parse(protocol)
        next(protocol.parser)
    elif request is not None:  # in the middle of a frame: keep the parser, empty the request
        request.path, request.headers = "", HANDSHAKE_DONE.headers


def _between_frames(parser: object) -> bool:
    """Whether `parser` is the server's request parser gone on to the frame parser, and
    that one waits between two frames (in `StreamReader.at_eof`, its buffer empty).
    Anything else (another library version) answers False: the parser is left alone."""
    frames = getattr(parser, "gi_yieldfrom", None)
    waiting = getattr(frames, "gi_yieldfrom", None)
    return (
        getattr(parser, "gi_code", None) is ServerProtocol.parse.__code__
        and getattr(frames, "gi_code", None) is Protocol.parse.__code__
        and getattr(waiting, "gi_code", None) is StreamReader.at_eof.__code__
    )
