"""Hooks into `websockets` (v17) that let the client see every frame, in wire order.

`TappedConnection` is a `ClientConnection` handed to `connect(create_connection=...)`;
every frame in and out (control frames and fragments included) goes to a `FrameTap`,
which turns it into `FrameRecord` / `HeartbeatEvent` events for the driver, counts bytes,
keeps the last pong's round trip as the driver's `latency` and the time of the last
inbound frame for the liveness watchdog.

Data frames can be read at the frame level (`consume`): the connection hands the messages
the protocol accepted straight to the client instead of assembling them in `websockets`'
queue for a reader task. The unfragmented data frames of one transport read (a flood
brings thousands per read) are gathered into one `FrameBatch` as they are parsed (the
plain ones by `FrameScanner`, framescan.py, without the library's frame parser), each
text frame's JSON parsed once (`read_text`, which is also its UTF-8 check); when the read
is done, the batch goes to the observers (one call each) and then to the client, so a
frame costs no record, no queue, no task switch, no call per observer and no second
decode. Any other frame (control frames, fragments, frames sent) first delivers the batch
gathered so far, then is reported on its own, so every observer still sees wire order.
Fragmented messages are joined here (`Fragments`); their UTF-8 is checked fragment by
fragment by framecheck.py.

The tap is also where the heartbeat lab shapes the automatic pong `websockets` sends for
each server ping (heartbeat.py): withheld, late, or with another payload, as the driver's
`pongs` policy says at that moment, and where the server's pings are counted into the
driver's `server_heartbeat`. Pongs sent on purpose (`send_pong`) are never shaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame
from websockets.frames import Opcode as WsOpcode

from wsconsole.core.events import (
    Direction,
    FrameBatch,
    FrameRecord,
    HeartbeatEvent,
    Opcode,
    read_text,
)
from wsconsole.core.framecheck import strict_frames
from wsconsole.core.framescan import FrameScanner
from wsconsole.core.heartbeat import ServerHeartbeat
from wsconsole.core.tasks import spawn

if TYPE_CHECKING:
    from wsconsole.core.client import ReconnectingClient

log = logging.getLogger(__name__)

DATA_OPCODES = frozenset({WsOpcode.TEXT, WsOpcode.BINARY, WsOpcode.CONT})
_OPCODES = {op: Opcode(int(op.value)) for op in WsOpcode}  # no Enum lookup per frame

MessageConsumer = Callable[[list[bytes], list["dict[str, Any] | None"]], None]
"""Takes complete messages received, in order: payloads and, alongside, each one's JSON
object where it was parsed (an unfragmented text frame: `read_text`), else None."""


class Fragments:
    """The fragments of the message being received, joined when its last one arrives."""

    __slots__ = ("parts", "text")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.text = False

    def add(self, frame: Frame) -> tuple[bool, bytes] | None:
        """Take a data frame of a fragmented message; (is text, payload) once complete."""
        if frame.opcode is not WsOpcode.CONT:
            self.parts = []
            self.text = frame.opcode is WsOpcode.TEXT
        self.parts.append(bytes(frame.data))
        if not frame.fin:
            return None
        parts, self.parts = self.parts, []
        return self.text, b"".join(parts)


class FrameTap:
    """Receives the frames of one connection and reports them through `driver`."""

    def __init__(self, driver: ReconnectingClient) -> None:
        self.driver = driver
        self.last_inbound = time.monotonic()  # monotonic time of the last frame received

    def frames(self, batch: FrameBatch) -> None:
        """Report a batch of received data frames (counted, and heard from the server)."""
        driver = self.driver
        self.last_inbound = batch.at
        driver.stats.bytes_in += sum(map(len, batch.payloads))
        driver._emit_frames(batch)

    def frame(self, direction: Direction, frame: Frame,
              pending_pings: dict[Any, Any]) -> FrameRecord:  # fmt: skip
        """Report one frame (and the heartbeat it is, for pings and pongs); its record."""
        driver = self.driver
        now = time.monotonic()
        payload = bytes(frame.data)
        opcode = frame.opcode
        if opcode in DATA_OPCODES:
            if direction is Direction.IN:
                self.last_inbound = now
                driver.stats.bytes_in += len(payload)
            else:
                driver.stats.bytes_out += len(payload)
            record = FrameRecord(driver.name, direction, _OPCODES[opcode], payload, frame.fin,
                                 at=now)  # fmt: skip
            driver._emit(record)
            return record
        code = reason = None
        if frame.opcode is WsOpcode.CLOSE:
            try:
                close = Close.parse(payload)  # an empty payload parses as 1005
                code, reason = int(close.code), close.reason
            except Exception:  # a malformed close frame is still shown
                code = None
        if direction is Direction.IN:
            self.last_inbound = now
            driver.stats.bytes_in += len(payload)
        else:
            driver.stats.bytes_out += len(payload)
        record = FrameRecord(conn=driver.name, direction=direction, opcode=_OPCODES[opcode],
                             payload=payload, fin=frame.fin, close_code=code,
                             close_reason=reason, at=now)  # fmt: skip
        driver._emit(record)
        if frame.opcode is WsOpcode.PING:
            kind = "ping_received" if direction is Direction.IN else "ping_sent"
            driver._emit(HeartbeatEvent(conn=driver.name, kind=kind, at=now))
        elif frame.opcode is WsOpcode.PONG and direction is Direction.IN:
            waiting = pending_pings.get(payload)
            rtt = None
            if waiting is not None:
                rtt = asyncio.get_running_loop().time() - waiting[1]
                driver.latency = rtt
            driver._emit(HeartbeatEvent(conn=driver.name, kind="pong_received", rtt=rtt, at=now))
        return record

    def answer(self, pong: Frame, conn: TappedConnection) -> Frame | None:
        """The automatic pong to a server ping, as the driver's pong policy has it: the
        frame to send now, or None (withheld, or sent later by a task)."""
        driver = self.driver
        policy = driver.pongs
        now = time.monotonic()
        driver.server_heartbeat.ping(now, answered=policy.answers)
        if policy.mode == "auto":
            return pong
        if policy.mode == "wrong":
            driver._emit(HeartbeatEvent(driver.name, "pong_altered", at=now))
            return Frame(WsOpcode.PONG, policy.payload)
        if policy.mode == "delay":
            driver._emit(HeartbeatEvent(driver.name, "pong_delayed", delay=policy.delay, at=now))
            spawn(_late_pong(conn, bytes(pong.data), policy.delay, driver.server_heartbeat),
                  f"wsconsole-client-{driver.name}-late-pong")
            return None
        driver._emit(HeartbeatEvent(driver.name, "pong_withheld", at=now))
        return None


async def _late_pong(conn: ClientConnection, data: bytes, delay: float,
                     heartbeat: ServerHeartbeat) -> None:
    """Send a held-back pong after `delay` seconds (nothing if the connection ended)."""
    await asyncio.sleep(delay)
    with contextlib.suppress(ConnectionClosed):
        await conn.pong(data)
        heartbeat.answered(time.monotonic())


class TappedConnection(ClientConnection):
    """ClientConnection reporting every frame in and out, in wire order.

    Outgoing frames all pass through the sans-I/O protocol's `send_frame`; incoming frames
    are tapped at the protocol's `recv_frame` (called for each parsed frame, control frames
    and fragments included) rather than `process_event`, because the protocol answers a
    ping or a close inside `recv_frame`: tapping there logs the frame before the reply.
    Incoming frames then pass the strict checks of framecheck.py (invalid UTF-8 in a
    fragment fails at once with 1007, a close between fragments is answered normally).
    With `consume`, every message goes to it (see the module docstring) and none to the
    message queue: `recv()` and iteration then get nothing. A final text or binary frame
    outside a fragmented message is then batched without passing through the protocol's
    `recv_frame`, which would only queue it (it has nothing to check or answer there).
    """

    def __init__(self, protocol: Any, *, tap: FrameTap, consume: MessageConsumer | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(protocol, **kwargs)
        self.tap = tap
        self.consume = consume
        self._batch = FrameBatch(tap.driver.name)
        fragments = Fragments()
        strict_frames(protocol)  # checked after the tap has logged the frame
        send_original = protocol.send_frame
        recv_original = protocol.recv_frame
        answering = False  # inside recv_frame of a ping: the next pong is the automatic one

        def send_frame(frame: Frame) -> None:
            self._deliver()
            if answering and frame.opcode is WsOpcode.PONG:
                shaped = self.tap.answer(frame, self)
                if shaped is None:
                    return
                frame = shaped
            send_original(frame)
            self._tap(Direction.OUT, frame)

        def recv_frame(frame: Frame) -> None:
            nonlocal answering
            opcode = frame.opcode
            if (consume is not None and frame.fin and protocol.current_size is None
                    and (opcode is WsOpcode.TEXT or opcode is WsOpcode.BINARY)):
                try:
                    self._gather(bytes(frame.data), _OPCODES[opcode])
                except UnicodeDecodeError:  # fails the connection (1007), logged first
                    self._deliver()
                    self._tap(Direction.IN, frame)
                    raise
                return
            self._deliver()
            self._tap(Direction.IN, frame)
            answering = opcode is WsOpcode.PING
            try:
                recv_original(frame)
            finally:
                answering = False
            if consume is not None and opcode in DATA_OPCODES:
                complete = fragments.add(frame)  # UTF-8 checked per fragment (framecheck)
                if complete is not None:
                    consume([complete[1]], [None])

        protocol.send_frame = send_frame
        protocol.recv_frame = recv_frame
        self._scanner = None if consume is None else FrameScanner(
            protocol, self._gather, super().data_received)

    def _gather(self, payload: bytes, opcode: Opcode) -> None:
        """Add a final text or binary frame to the batch; UnicodeDecodeError for text that
        is not UTF-8 (nothing is added)."""
        value = read_text(payload) if opcode is Opcode.TEXT else None
        batch = self._batch
        batch.payloads.append(payload)
        batch.opcodes.append(opcode)
        batch.values.append(value)

    def _tap(self, direction: Direction, frame: Frame) -> None:
        try:
            self.tap.frame(direction, frame, self.pending_pings)
        except Exception:  # an observer must never break the connection
            log.exception("frame tap failed")

    def _deliver(self) -> None:
        """Hand the frames batched so far to the observers, then their messages to the
        consumer; the next batch starts (its arrival time is now)."""
        batch = self._batch
        if not batch.payloads:
            return
        self._batch = FrameBatch(batch.conn)
        try:
            self.tap.frames(batch)
        except Exception:
            log.exception("frame tap failed")
        assert self.consume is not None  # only a consuming connection batches
        self.consume(batch.payloads, batch.values)

    def data_received(self, data: bytes) -> None:
        """Parse one read (frames are batched as they are parsed; the plain ones by the
        scanner, framescan.py, when consuming), then deliver the batch."""
        self._batch = FrameBatch(self._batch.conn)  # arrived now
        if self._scanner is not None:
            self._scanner.feed(data)
        else:
            super().data_received(data)
        self._deliver()

    def eof_received(self) -> None:
        """The end of the stream: first what the scanner kept back (an incomplete frame)."""
        if self._scanner is not None:
            self._scanner.eof()
        super().eof_received()

    def process_event(self, event: Any) -> None:
        """Queue data frames for `recv()` unless they are consumed at the frame level (the
        handshake's response passes through here too)."""
        if self.consume is not None and isinstance(event, Frame) and event.opcode in DATA_OPCODES:
            return
        super().process_event(event)
