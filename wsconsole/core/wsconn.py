"""Hooks into `websockets` (v17) that let the client see every frame, in wire order.

`TappedConnection` is a `ClientConnection` handed to `connect(create_connection=...)`;
every frame in and out (control frames and fragments included) goes to a `FrameTap`,
which turns it into `FrameRecord` / `HeartbeatEvent` events for the driver, counts bytes,
keeps the last pong's round trip as the driver's `latency` and the time of the last
inbound frame for the liveness watchdog.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.frames import Close, Frame
from websockets.frames import Opcode as WsOpcode

from wsconsole.core.driver import ConnectionDriver
from wsconsole.core.events import Direction, FrameRecord, HeartbeatEvent, Opcode

log = logging.getLogger(__name__)


class FrameTap:
    """Receives the frames of one connection and reports them through `driver`."""

    def __init__(self, driver: ConnectionDriver) -> None:
        self.driver = driver
        self.last_inbound = time.monotonic()  # monotonic time of the last frame received

    def frame(self, direction: Direction, frame: Frame, pending_pings: dict[Any, Any]) -> None:
        """Report one frame (and the heartbeat it is, for pings and pongs)."""
        driver = self.driver
        now = time.monotonic()
        payload = bytes(frame.data)
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
        driver._emit(FrameRecord(conn=driver.name, direction=direction,
                                 opcode=Opcode(int(frame.opcode.value)), payload=payload,
                                 fin=frame.fin, close_code=code, close_reason=reason, at=now))
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


class TappedConnection(ClientConnection):
    """ClientConnection reporting every frame in and out, in wire order.

    Outgoing frames all pass through the sans-I/O protocol's `send_frame`; incoming frames
    are tapped at the protocol's `recv_frame` (called for each parsed frame, control frames
    and fragments included) rather than `process_event`, because the protocol answers a
    ping or a close inside `recv_frame`: tapping there logs the frame before the reply.
    """

    def __init__(self, protocol: Any, *, tap: FrameTap, **kwargs: Any) -> None:
        super().__init__(protocol, **kwargs)
        self.tap = tap
        send_original = protocol.send_frame
        recv_original = protocol.recv_frame

        def send_frame(frame: Frame) -> None:
            send_original(frame)
            try:
                self.tap.frame(Direction.OUT, frame, self.pending_pings)
            except Exception:  # an observer must never break the connection
                log.exception("frame tap failed")

        def recv_frame(frame: Frame) -> None:
            try:
                self.tap.frame(Direction.IN, frame, self.pending_pings)
            except Exception:
                log.exception("frame tap failed")
            recv_original(frame)

        protocol.send_frame = send_frame
        protocol.recv_frame = recv_frame
