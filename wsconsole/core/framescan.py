"""Reading the plain data frames of an open connection without `websockets`' frame parser.

A flood is almost only final, unmasked, uncompressed text or binary frames, and for those
`websockets` (v17) runs a generator per frame (`Frame.parse`, two or three `read_exact`
generators, an `Opcode` enum call, a dataclass and its checks): about half of what the
window spends on a frame. `FrameScanner` reads such frames straight from the bytes of each
read (a header test and a slice per frame) and hands every other frame, byte for byte, to
the protocol, so `websockets` still parses, checks and answers everything else: control
frames, fragments, compressed or masked frames, reserved bits or opcodes, frames over the
size limit, text that is not UTF-8 (which the protocol then fails with 1007).

The scanner reads only while the protocol's parser stands between two frames, which it
knows by construction: it starts right after the handshake response (it hands the protocol
the response line by line, and nothing after the line that opened the connection), keeps
an incomplete frame at the end of a read for the next read, and hands the protocol whole
frames, or the start of one and then exactly the bytes still missing. When the protocol
leaves the OPEN state, or anything else is off, it stops and the protocol gets every byte
from then on. Connections with extensions (compression) or protocol debug logging are
never scanned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from websockets.protocol import State

from wsconsole.core.events import Opcode

_FAST = {0x81: Opcode.TEXT, 0x82: Opcode.BINARY}  # first byte: FIN, no RSV bits, opcode


class FrameScanner:
    """Splits each read of one client connection between `take` (a final text or binary
    frame's payload and opcode, in wire order; may raise UnicodeDecodeError, and the frame
    then goes to the protocol instead) and `hand_over` (bytes the protocol must parse)."""

    def __init__(self, protocol: Any, take: Callable[[bytes, Opcode], None],
                 hand_over: Callable[[bytes], None]) -> None:  # fmt: skip
        self.protocol = protocol
        self.take = take
        self.hand_over = hand_over
        self.scanning = False  # the protocol's parser is between frames: bytes come here
        self.stopped = False  # for good: every byte goes to the protocol
        self._pending = b""  # the start of a frame not complete yet
        self._owed = 0  # bytes of the frame being handed over the protocol has not had yet
        limits = [size for size in (protocol.max_message_size, protocol.max_fragment_size)
                  if size is not None]  # fmt: skip
        self._limit = min(limits) if limits else None

    def feed(self, data: bytes) -> None:
        """One read of the transport."""
        if not self.scanning:
            if self.stopped:
                self.hand_over(data)
                return
            data = self._handshake(data)
            if not self.scanning:
                if data:
                    self.hand_over(data)
                return
        self._scan(data)

    def eof(self) -> None:
        """The stream ended: the protocol gets an incomplete frame kept back (it reports the
        unexpected end as it would have)."""
        pending, self._pending = self._pending, b""
        self.scanning, self.stopped = False, True
        if pending:
            self.hand_over(pending)

    def _handshake(self, data: bytes) -> bytes:
        """While connecting: hand the protocol the response line by line until it is open,
        then scan what follows if nothing is left in the protocol's buffer; returns the
        bytes not handed over."""
        protocol = self.protocol
        while data and protocol.state is State.CONNECTING and protocol.handshake_exc is None:
            line = data.find(b"\n") + 1 or len(data)
            self.hand_over(data[:line])
            data = data[line:]
        if protocol.state is State.CONNECTING and protocol.handshake_exc is None:
            return data  # (nothing left) the response goes on in the next read
        if (protocol.state is State.OPEN and not protocol.extensions and not protocol.debug
                and not protocol.reader.buffer and protocol.current_size is None):
            self.scanning = True
        else:
            self.stopped = True
        return data

    def _stop(self, rest: bytes) -> None:
        self.scanning, self.stopped = False, True
        if rest:
            self.hand_over(rest)

    def _scan(self, data: bytes) -> None:
        """Take the frames of `data` (after what was kept back or is owed), hand over the
        others, keep an incomplete frame at the end."""
        if self._owed:
            part = data[: self._owed]
            self._owed -= len(part)
            self.hand_over(part)
            data = data[len(part):]
            if not self._in_step():
                self._stop(data)
                return
            if self._owed:
                return
        buf = self._pending + data if self._pending else data
        self._pending = b""
        size, pos, limit, take = len(buf), 0, self._limit, self.take
        while size - pos >= 2:
            head, length = buf[pos], buf[pos + 1]
            start = pos + 2
            if length >= 126:
                if length == 126:
                    start += 2
                elif length == 127:
                    start += 8
                else:  # a masked frame: the protocol refuses it
                    self._stop(buf[pos:])
                    return
                if start > size:
                    break
                length = int.from_bytes(buf[pos + 2:start], "big")
            end = start + length
            opcode = _FAST.get(head)
            if opcode is not None and (limit is None or length <= limit):
                if end > size:
                    break
                try:
                    take(buf[start:end], opcode)
                    pos = end
                    continue
                except UnicodeDecodeError:
                    pass  # the protocol fails the connection for it
            part = buf[pos:end]
            self._owed = end - pos - len(part)
            pos += len(part)
            self.hand_over(part)
            if not self._in_step():
                self._stop(buf[pos:])
                return
        self._pending = buf[pos:]

    def _in_step(self) -> bool:
        """After a hand-over: still open, and nothing the protocol kept but the frame it is
        owed the rest of."""
        protocol = self.protocol
        return protocol.state is State.OPEN and (self._owed > 0 or not protocol.reader.buffer)
