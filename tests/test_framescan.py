"""FrameScanner: reading plain data frames itself gives what `websockets`' own parser gives.

Each example is a stream a server could send (the handshake response, then frames of every
kind: text, invalid UTF-8, binary, pings, pongs, fragments, oversized, masked, reserved
bits, a close, more frames after it), cut into reads at random places. The same stream
goes through a real sans-I/O `ClientProtocol` alone and through the scanner in front of
another; both must report the same messages and control frames in the same order, send
the same bytes back (pongs, close frames) and end in the same state.
"""

from __future__ import annotations

import struct
from itertools import pairwise
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri
from websockets.utils import accept_key

from wsconsole.core.events import Opcode as EventOpcode
from wsconsole.core.events import read_text
from wsconsole.core.framescan import FrameScanner

MAX_SIZE = 70_000  # over 65,535: 64-bit lengths are in reach, and one frame is too big


def _frame(head: int, payload: bytes, masked: bool = False) -> bytes:
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        header = struct.pack("!BB", head, n | mask_bit)
    elif n < 65536:
        header = struct.pack("!BBH", head, 126 | mask_bit, n)
    else:
        header = struct.pack("!BBQ", head, 127 | mask_bit, n)
    return header + (b"\x00" * 4 if masked else b"") + payload


FRAMES = st.one_of(
    st.text(max_size=40).map(lambda t: _frame(0x81, t.encode())),
    st.integers(0, 999).map(lambda i: _frame(0x81, b'{"type":"message","seq":%d}' % i)),
    st.binary(max_size=40).map(lambda b: _frame(0x82, b)),
    st.sampled_from([
        _frame(0x81, b"\xff\xfe not utf-8"),
        _frame(0x81, b"x" * 300), _frame(0x82, b"y" * 70_000), _frame(0x82, b"z" * 70_001),
        _frame(0x89, b"ping"), _frame(0x8A, b"pong"),
        _frame(0x01, b"frag ") + _frame(0x89, b"mid") + _frame(0x80, b"ment"),
        _frame(0x02, b"\x00") + _frame(0x00, b"\x01") + _frame(0x80, b"\x02"),
        _frame(0x80, b"stray continuation"), _frame(0x81, b"{}", masked=True),
        _frame(0xC1, b"rsv1"), _frame(0x83, b"reserved opcode"),
        _frame(0x88, struct.pack("!H", 1000) + b"bye"),
    ]),
)  # fmt: skip


def _client() -> tuple[ClientProtocol, bytes]:
    """A client protocol that sent its handshake request, and the server's 101 for it."""
    protocol = ClientProtocol(parse_uri("ws://127.0.0.1/"), max_size=MAX_SIZE)
    request = protocol.connect()
    protocol.send_request(request)
    protocol.data_to_send()
    accept = accept_key(request.headers["Sec-WebSocket-Key"])
    response = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode()
    return protocol, response


class Side:
    """One client protocol and everything it reported, in order; text frames are read as
    the console's connection reads them (`read_text`: UTF-8 or 1007)."""

    def __init__(self, scanned: bool) -> None:
        self.protocol, self.response = _client()
        self.seen: list[tuple[Any, ...]] = []
        self.sent: list[tuple[int, bytes]] = []  # frames sent back (masked at random)
        original = self.protocol.recv_frame
        send_original = self.protocol.send_frame

        def send_frame(frame: Frame) -> None:
            self.sent.append((int(frame.opcode), bytes(frame.data)))
            send_original(frame)

        def recv_frame(frame: Frame) -> None:
            if frame.opcode is Opcode.TEXT and frame.fin and self.protocol.current_size is None:
                read_text(bytes(frame.data))
            original(frame)
            self.seen.append((int(frame.opcode), frame.fin, bytes(frame.data)))

        self.protocol.recv_frame = recv_frame  # type: ignore[method-assign]
        self.protocol.send_frame = send_frame  # type: ignore[method-assign]
        self.scanner = FrameScanner(self.protocol, self._take, self._parse) if scanned else None

    def _take(self, payload: bytes, opcode: EventOpcode) -> None:
        if opcode is EventOpcode.TEXT:
            read_text(payload)  # UnicodeDecodeError: the scanner hands the frame over
        self.seen.append((int(opcode), True, payload))

    def _parse(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        self.protocol.events_received()
        self.protocol.data_to_send()

    def read(self, data: bytes) -> None:
        if self.scanner is not None:
            self.scanner.feed(data)
        else:
            self._parse(data)

    def end(self) -> tuple[Any, ...]:
        if self.scanner is not None:
            self.scanner.eof()
        self.protocol.receive_eof()
        close = self.protocol.close_sent
        exc = self.protocol.parser_exc
        return (self.seen, self.sent, self.protocol.state,
                None if close is None else (close.code, close.reason),
                None if exc is None else type(exc))  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(frames=st.lists(FRAMES, max_size=12), cuts=st.lists(st.integers(0, 80_000), max_size=8),
       whole=st.booleans())  # fmt: skip
def test_the_scanner_reads_a_stream_as_the_library_does(
    frames: list[bytes], cuts: list[int], whole: bool
) -> None:
    """Same messages, control frames, replies, close and final state, however the stream
    is cut into reads (the response and first frames in one read, or each frame alone);
    the scanner stays in step with the protocol for as long as the connection is open."""
    plain, scanned = Side(scanned=False), Side(scanned=True)
    stream = scanned.response + b"".join(frames)
    reads = [stream] if whole else [scanned.response, *frames]
    if cuts:
        points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
        reads = [stream[a:b] for a, b in pairwise(points)]
    for data in reads:
        scanned.read(data)
    plain.read(plain.response + b"".join(frames))
    assert scanned.scanner is not None  # still reading itself while the connection is open
    assert scanned.scanner.scanning == (scanned.protocol.state is State.OPEN)
    assert scanned.end() == plain.end()


def test_plain_frames_skip_the_library_parser_until_a_close() -> None:
    """Data frames after the handshake go to `take`, never through the protocol's parser;
    the close frame goes to the protocol, and everything after it too."""
    side = Side(scanned=True)
    parsed: list[bytes] = []
    original = side.protocol.recv_frame

    def spy(frame: Frame) -> None:
        parsed.append(bytes(frame.data))
        original(frame)

    side.protocol.recv_frame = spy  # type: ignore[method-assign]
    side.read(side.response + _frame(0x81, b'{"a":1}') + _frame(0x82, b"\x00"))
    side.read(_frame(0x81, b"split across")[:5])
    assert side.scanner is not None and side.scanner.scanning
    side.read(_frame(0x81, b"split across")[5:] + _frame(0x88, b"\x03\xe8") + _frame(0x81, b"x"))
    assert parsed == [b"\x03\xe8"]
    assert [payload for _, _, payload in side.seen] == [b'{"a":1}', b"\x00", b"split across",
                                                       b"\x03\xe8"]  # fmt: skip
    assert side.protocol.state is State.CLOSING and side.scanner.stopped
