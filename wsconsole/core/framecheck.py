"""Where `websockets` is lenient with incoming frames, a tap that makes it strict.

`websockets` (v17) checks a text message's UTF-8 once the whole message has arrived, when
the application reads it, so invalid UTF-8 in the first fragment of a long message is
only refused after the last one (Autobahn 6.4.x: "non-strict"); and it answers a close
frame that comes between two fragments with 1002 "incomplete fragmented message", where
RFC 6455 5.4 allows a control frame in the middle of a fragmented message and the peer
expects the closing handshake (Autobahn 7.1.5). Both are fixed without forking the
library, at the one place every incoming frame passes: the sans-I/O protocol's
`recv_frame`, called for each frame as it is parsed (control frames and fragments
included).

`strict_frames(protocol)` wraps it:
- a fragmented text message is decoded fragment by fragment (`TextFragments`), so the
  first byte that can never be UTF-8 raises `UnicodeDecodeError`, which the protocol's
  parser turns into "fail the connection" with 1007 at once, exactly as it does for a
  close reason that is not UTF-8; an unfragmented message is left to the library, which
  checks it when it is read (no double work on the common path);
- a close frame inside a fragmented message ends the message (it is dropped, never
  delivered) and is answered like any close frame.

Used by the harness node (its `ServerConnection`) and the console's client (its
`TappedConnection`).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol

_DATA = frozenset({Opcode.TEXT, Opcode.BINARY, Opcode.CONT})
_SURROGATE_LEAD = 0xED  # ED A0..BF starts an encoded UTF-16 surrogate, never valid UTF-8


class TextFragments:
    """The UTF-8 state of the fragmented text message being received, if any.

    `feed` takes every data frame (opcode, fin, payload) and raises `UnicodeDecodeError`
    as soon as the bytes received so far cannot start valid UTF-8.
    """

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        self._decoder: codecs.IncrementalDecoder | None = None

    @property
    def in_text(self) -> bool:
        """True while a fragmented text message is incomplete."""
        return self._decoder is not None

    def feed(self, opcode: Opcode, fin: bool, data: bytes | bytearray | memoryview) -> None:
        """Check one data frame; UnicodeDecodeError when the text can no longer be valid."""
        if opcode is Opcode.TEXT:
            self._decoder = None
            if fin:
                return  # a whole message: the library checks it when it is read
            self._decoder = codecs.getincrementaldecoder("utf-8")()
        elif opcode is Opcode.BINARY:
            self._decoder = None
            return
        elif opcode is not Opcode.CONT or self._decoder is None:
            return
        decoder = self._decoder
        if fin:
            self._decoder = None
        decoder.decode(data, fin)
        if not fin:
            _check_pending(decoder)

    def reset(self) -> None:
        """Forget the message in progress (a close frame ended it)."""
        self._decoder = None


def _check_pending(decoder: codecs.IncrementalDecoder) -> None:
    """CPython's decoder keeps an incomplete `ED A0..BF` pending until its third byte
    arrives; it can only become a surrogate, so refuse it now."""
    pending = decoder.getstate()[0]
    if len(pending) >= 2 and pending[0] == _SURROGATE_LEAD and pending[1] >= 0xA0:
        raise UnicodeDecodeError("utf-8", bytes(pending), 0, 2, "invalid continuation byte")


class _StrictRecvFrame:
    """`recv_frame` with the checks above, in front of the protocol's own (an object with
    slots rather than a closure: every connection has one, and this is the smaller)."""

    __slots__ = ("fragments", "original", "protocol")

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self.original: Callable[[Frame], None] = protocol.recv_frame
        self.fragments = TextFragments()

    def __call__(self, frame: Frame) -> None:
        protocol = self.protocol
        opcode = frame.opcode
        in_message = protocol.current_size is not None
        if opcode is Opcode.CLOSE:
            if in_message:
                protocol.current_size = None  # the close ends the fragmented message
                self.fragments.reset()
        elif opcode in _DATA and (opcode is Opcode.CONT) == in_message:
            self.fragments.feed(opcode, frame.fin, frame.data)
        self.original(frame)


def strict_frames(protocol: Protocol) -> TextFragments:
    """Wrap `protocol.recv_frame` with the checks above; returns the fragment state it keeps.

    `protocol.current_size` (websockets 16 and later) is not None while a fragmented
    message is incomplete: a data frame the library is about to refuse for its place in
    the sequence (a new message inside one, a continuation of nothing) is left to it.
    """
    wrapper = _StrictRecvFrame(protocol)
    protocol.recv_frame = wrapper  # type: ignore[method-assign]
    return wrapper.fragments
