"""One proxied connection: every frame both ways, through the rules, in order.

Two `Endpoint`s (the app's client and the upstream server, each a sans-I/O protocol over its
socket) and two `Lane`s (client -> server is direction OUT, server -> client is IN). A reader
per endpoint feeds its frames to the lane toward the other endpoint. A lane assembles
fragmented messages for the rules (an untouched message is passed on in its original
fragments), asks the rules, and delivers; a frame the rules hold or delay is queued and
everything behind it in that lane waits in order, while the other lane flows. With nothing
queued and no hold or delay, a frame is delivered from the reader's own call (the fast path).

Close frames are relayed like any frame (and go through the rules); each endpoint's protocol
answers its peer's close itself, so an echo coming back is recorded but not relayed again. A
peer that vanishes without a close frame (or breaks the protocol) has the other peer's TCP
connection cut once everything queued before it was delivered, so that peer sees an abnormal
closure too. The user can inject frames to either side, close either side with a chosen
code (the other side then gets 1001), shape pongs per direction and set network faults,
which apply to the bytes written to each socket as the balancer's do (harness.shaper).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from websockets.exceptions import InvalidState, ProtocolError
from websockets.frames import Close, Frame
from websockets.frames import Opcode as WsOpcode
from websockets.protocol import Protocol
from websockets.protocol import State as WsState

from wsconsole.core.events import Direction, FrameRecord, HeartbeatEvent, Opcode
from wsconsole.core.lifecycle import Lifecycle, State
from wsconsole.harness.netfaults import DOWN, UP, ActiveFaults
from wsconsole.harness.shaper import ShapedWriter
from wsconsole.proxy.hub import ConnectionInfo, ProxyError, ProxyHub
from wsconsole.proxy.rules import Action, Decision, Message, Rule, RuleSet

CHUNK = 64 * 1024
MAX_PINGS = 64  # outstanding client pings remembered for round-trip times


class Side(StrEnum):
    """An end of a proxied connection."""

    CLIENT = "client"
    SERVER = "server"


TOWARD: dict[Side, Direction] = {Side.SERVER: Direction.OUT, Side.CLIENT: Direction.IN}


@dataclass(eq=False)
class Pending:
    """A complete message, control frame or end of stream on its way through a lane."""

    opcode: Opcode | None  # None: the source ended without a close frame
    payload: bytes
    arrived: float
    decision: Decision | None = None
    fragments: list[Frame] | None = None  # the original frames of a fragmented message
    close: Close | None = None


@dataclass(eq=False)
class Endpoint:
    """One side of a proxied connection: its protocol, its socket and its shaped writer."""

    side: Side
    protocol: Protocol
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    out: ShapedWriter
    reader_done: bool = False
    closed_by_proxy: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def open(self) -> bool:
        """Whether data frames can still be sent to this side."""
        return self.protocol.state is WsState.OPEN

    def flush(self) -> None:
        """Write what the protocol produced (b"" is its end of stream)."""
        for data in self.protocol.data_to_send():
            if data:
                self.out.write(data)
            else:
                self.out.write_eof()


class ProxiedConnection:
    """Both endpoints and both lanes of one connection, and its controls (see module doc)."""

    def __init__(self, hub: ProxyHub, info: ConnectionInfo) -> None:
        self.hub = hub
        self.info = info
        self.id = info.id
        self.rules = RuleSet()  # this connection's own rules (pong shaping), before the hub's
        self.counters: Counter[str] = Counter()
        self.lifecycle = Lifecycle(info.id)
        self.faults: ActiveFaults | None = hub.faults.effective(info.id)
        self.client: Endpoint | None = None
        self.server: Endpoint | None = None
        self.lanes: dict[Direction, Lane] = {}
        self._pings: dict[bytes, float] = {}
        self._stop = asyncio.Event()

    # -- setup and run ----------------------------------------------------------------------

    def attach(self, side: Side, protocol: Protocol, reader: asyncio.StreamReader,
               writer: asyncio.StreamWriter) -> Endpoint:
        """Give the connection one of its sockets (the handshake on it is done)."""
        out = ShapedWriter(writer, UP if side is Side.SERVER else DOWN, faults=lambda: self.faults,
                           changed=self.hub.faults_changed, stuck=self.sources_ended,
                           abort=self.abort, name=f"{self.id}-{side}", tasks=self.hub.tasks)
        endpoint = Endpoint(side, protocol, reader, writer, out)
        if side is Side.CLIENT:
            self.client = endpoint
        else:
            self.server = endpoint
        return endpoint

    def move(self, state: State, *, code: int | None = None, reason: str | None = None,
             error: str | None = None) -> None:
        """Record a lifecycle transition and tell the observers."""
        self.hub.emit(self.lifecycle.move(state, code=code, reason=reason, error=error))

    async def run(self, early_client: Sequence[Frame] = (),
                  early_server: Sequence[Frame] = ()) -> None:
        """Relay until both peers are gone, then tidy up (held frames are dropped)."""
        client, server = self.client, self.server
        assert client is not None and server is not None
        self.lanes = {Direction.OUT: Lane(self, Direction.OUT, server),
                      Direction.IN: Lane(self, Direction.IN, client)}
        self.info.opened = time.time()
        self.move(State.OPEN)
        self.hub.event(self.id, "opened", detail=f"{self.info.status} {self.info.url}")
        if self.faults is not None and self.faults.reset:
            self.reset()
        readers = [
            self.hub.tasks.spawn(self._read(client, self.lanes[Direction.OUT], early_client),
                                 f"{self.id}-client"),
            self.hub.tasks.spawn(self._read(server, self.lanes[Direction.IN], early_server),
                                 f"{self.id}-server"),
        ]
        try:
            await asyncio.gather(*readers, return_exceptions=True)
        finally:
            for task in readers:
                task.cancel()
            self._finish()

    def _finish(self) -> None:
        for lane in self.lanes.values():
            lane.discard("the connection ended")
        self.hub.forget(self.id)
        for endpoint in (self.client, self.server):
            if endpoint is not None:
                endpoint.out.cancel()
                endpoint.writer.close()
        self.info.ended = time.time()
        if self.lifecycle.state is not State.CLOSED:
            code, reason = self.info.client_close or (1006, "")
            self.move(State.CLOSED, code=code, reason=reason or None)
        self.hub.event(self.id, "ended", detail=self._codes())
        self.hub.connections.pop(self.id, None)

    def _codes(self) -> str:
        def word(close: tuple[int, str] | None) -> str:
            return "none" if close is None else f"{close[0]}{' ' + close[1] if close[1] else ''}"

        return f"client sent {word(self.info.client_close)}, " \
               f"server sent {word(self.info.server_close)}"

    async def _read(self, source: Endpoint, lane: Lane, early: Sequence[Frame]) -> None:
        """Feed `source`'s frames to `lane` until its peer is gone."""
        protocol = source.protocol
        try:
            for frame in early:
                lane.feed(frame)
            while protocol.state is not WsState.CLOSED:
                data = await source.reader.read(CHUNK)
                answered = protocol.close_sent
                if data:
                    protocol.receive_data(data)
                else:
                    protocol.receive_eof()
                for frame in protocol.events_received():
                    lane.feed(frame)
                if protocol.close_sent is not None and answered is None:
                    self._record_echo(source)
                source.flush()
                if not data:
                    break
                await lane.wait_room()
                await lane.sink.out.drain()
        except (ConnectionError, OSError) as exc:
            self.hub.event(self.id, "error", detail=f"{source.side} socket: {exc!r}")
        finally:
            source.reader_done = True
            error = protocol.parser_exc
            if error is not None and not isinstance(error, EOFError):
                self.hub.event(self.id, "error", direction=lane.direction,
                               detail=f"the {source.side} broke the protocol: {error}")
            if protocol.close_rcvd is None or error is not None:
                lane.push(Pending(None, b"", time.monotonic()))  # cut the other side, in order
            source.done.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(source.out.flushed(), self.hub.limits.close_timeout)
            source.writer.close()

    def _record_echo(self, source: Endpoint) -> None:
        """The source's protocol answered its peer's close frame: that is a delivered frame."""
        close = source.protocol.close_sent
        if close is None:
            return
        self.record(TOWARD[source.side], Opcode.CLOSE, close.serialize(), close=close)
        if self.lifecycle.state is State.OPEN:
            self.move(State.CLOSING, code=close.code, reason=close.reason or None)

    # -- records ----------------------------------------------------------------------------

    def record(self, direction: Direction, opcode: Opcode, payload: bytes, *, fin: bool = True,
               close: Close | None = None, injected: bool = False) -> None:
        """Count and emit a frame delivered in `direction`."""
        self.counters[f"frames_{direction}"] += 1
        self.counters[f"bytes_{direction}"] += len(payload)
        hub = self.hub
        hub.counters[f"frames_{direction}"] += 1
        hub.counters[f"bytes_{direction}"] += len(payload)
        if not hub.wants_frames:
            return
        hub.emit_frame(FrameRecord(
            conn=self.id, direction=direction, opcode=opcode, payload=payload, fin=fin,
            close_code=close.code if close is not None else None,
            close_reason=close.reason if close is not None else None, injected=injected))

    def ping_relayed(self, direction: Direction, payload: bytes) -> None:
        """Remember a client's ping, to time the server's pong."""
        if direction is Direction.OUT:
            if len(self._pings) >= MAX_PINGS:
                self._pings.pop(next(iter(self._pings)))
            self._pings[payload] = time.monotonic()

    def pong_seen(self, direction: Direction, payload: bytes) -> None:
        """A server's pong: report the round trip of the ping it answers."""
        sent = self._pings.pop(payload, None) if direction is Direction.IN else None
        if sent is not None:
            rtt = time.monotonic() - sent
            self.hub.emit_frame(HeartbeatEvent(self.id, "pong_received", rtt=rtt))

    def decide(self, direction: Direction, opcode: Opcode, payload: bytes) -> Decision | None:
        """This connection's rules, then the hub's; None: pass the frame on untouched."""
        if not self.rules.rules and not self.hub.rules.rules:
            return None
        message = Message(direction, opcode, payload, self.info.url)
        return self.rules.decide(message) or self.hub.rules.decide(message)

    # -- controls ---------------------------------------------------------------------------

    def endpoint(self, side: Side | str) -> Endpoint:
        """The endpoint of `side` ("client" or "server")."""
        endpoint = self.client if Side(side) is Side.CLIENT else self.server
        if endpoint is None:
            raise ProxyError(f"{self.id} has no {side} yet")
        return endpoint

    def inject(self, toward: Side | str, opcode: Opcode, payload: bytes) -> None:
        """Send a frame of the user's own to one side, now (ahead of any held frame)."""
        endpoint = self.endpoint(toward)
        protocol = endpoint.protocol
        try:
            if opcode is Opcode.TEXT:
                payload.decode()
                protocol.send_text(payload)
            elif opcode is Opcode.BINARY:
                protocol.send_binary(payload)
            elif opcode is Opcode.PING:
                protocol.send_ping(payload)
            elif opcode is Opcode.PONG:
                protocol.send_pong(payload)
            else:
                raise ProxyError("inject sends text, binary, ping or pong (use close to close)")
        except UnicodeDecodeError:
            raise ProxyError("a text frame must be UTF-8") from None
        except (InvalidState, ProtocolError):
            raise ProxyError(f"{self.id}: the {endpoint.side} side is closing or closed") from None
        endpoint.flush()
        direction = TOWARD[endpoint.side]
        self.record(direction, opcode, payload, injected=True)
        self.hub.event(self.id, "injected", direction=direction, opcode=opcode, payload=payload,
                       detail=f"{opcode.name.lower()} to the {endpoint.side}")

    def close(self, side: Side | str, code: int, reason: str = "", other_code: int = 1001) -> None:
        """Close `side` with `code`; the other side gets `other_code` (default 1001)."""
        endpoint = self.endpoint(side)
        if not endpoint.open:
            raise ProxyError(f"{self.id}: the {endpoint.side} side is already closing")
        try:
            Close(code, reason).check()
        except ProtocolError as exc:
            raise ProxyError(f"close code {code} cannot be sent: {exc}") from None
        self.send_close(endpoint, code, reason, injected=True)
        self.hub.event(self.id, "closed", direction=TOWARD[endpoint.side],
                       detail=f"{endpoint.side} {code}{' ' + reason if reason else ''}")
        other = self.server if endpoint is self.client else self.client
        if other is not None and other.open:
            self.send_close(other, other_code, f"the proxy closed the {endpoint.side}",
                             injected=True)

    def send_close(self, endpoint: Endpoint, code: int | None, reason: str,
                   injected: bool = False) -> None:
        """Send a close frame to `endpoint` (None or 1005: one without a code), record it and
        give the peer close_timeout seconds to finish the closing handshake."""
        endpoint.closed_by_proxy = endpoint.closed_by_proxy or injected
        if code is None or code == 1005:
            endpoint.protocol.send_close()
        else:
            endpoint.protocol.send_close(code, reason)
        endpoint.flush()
        close = endpoint.protocol.close_sent
        assert close is not None
        self.record(TOWARD[endpoint.side], Opcode.CLOSE, close.serialize() if code else b"",
                    close=close, injected=injected)
        if self.lifecycle.state is State.OPEN:
            self.move(State.CLOSING, code=close.code, reason=close.reason or None)
        self.hub.tasks.spawn(self.close_deadline(endpoint), f"{self.id}-close-{endpoint.side}")

    async def close_deadline(self, endpoint: Endpoint) -> None:
        """A peer that does not finish closing within close_timeout is cut off."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(endpoint.done.wait(), self.hub.limits.close_timeout)
            return
        endpoint.writer.transport.abort()

    def shape_pongs(self, toward: Side | str, mode: str, delay_ms: float = 0.0) -> None:
        """Pongs on their way to `toward`: "pass", "drop" (suppress) or "delay" by delay_ms."""
        side = Side(toward)
        name = f"pongs to the {side}"
        rules = [rule for rule in self.rules if rule.name != name]
        if mode != "pass":
            direction = "out" if side is Side.SERVER else "in"
            action = {"drop": Action.DROP, "delay": Action.DELAY}.get(mode)
            if action is None:
                raise ProxyError(f"pong mode must be pass, drop or delay, not {mode!r}")
            rules.append(Rule(name=name, action=action, direction=direction, opcode="pong",
                              delay_ms=delay_ms))
        self.rules.replace(rules)

    def sources_ended(self) -> bool:
        """Whether both peers have stopped sending (held bytes could never be read)."""
        return all(e is not None and e.reader_done for e in (self.client, self.server))

    def abort(self) -> None:
        """End now: both sockets closed without flushing."""
        for endpoint in (self.client, self.server):
            if endpoint is not None:
                endpoint.writer.transport.abort()

    def reset(self) -> None:
        """Reset both sockets (SO_LINGER 0 then close): each peer sees an RST."""
        for endpoint in (self.client, self.server):
            if endpoint is None:
                continue
            sock = endpoint.writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.abort()


class Lane:
    """Frames from one peer to the other, in order, through the rules (see module doc)."""

    def __init__(self, conn: ProxiedConnection, direction: Direction, sink: Endpoint) -> None:
        self.conn = conn
        self.direction = direction
        self.sink = sink
        self.queue: deque[Pending] = deque()
        self._fragments: list[Frame] = []
        self._pump: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._room.set()

    # -- input ------------------------------------------------------------------------------

    def feed(self, frame: Frame) -> None:
        """One frame from the source's protocol."""
        opcode = frame.opcode
        now = time.monotonic()
        if opcode is WsOpcode.TEXT or opcode is WsOpcode.BINARY:
            if frame.fin:
                self._message(Opcode(opcode.value), frame.data, None, now)
            else:
                self._fragments = [frame]
        elif opcode is WsOpcode.CONT:
            self._fragments.append(frame)
            if frame.fin:
                fragments, self._fragments = self._fragments, []
                payload = b"".join(bytes(f.data) for f in fragments)
                self._message(Opcode(fragments[0].opcode.value), payload, fragments, now)
        elif opcode is WsOpcode.CLOSE:
            self._close_frame(frame, now)
        else:
            kind = Opcode(opcode.value)
            payload = bytes(frame.data)
            if kind is Opcode.PONG:
                self.conn.pong_seen(self.direction, payload)
            self.push(Pending(kind, payload, now,
                              self.conn.decide(self.direction, kind, payload)))

    def _message(self, opcode: Opcode, data: bytes | bytearray, fragments: list[Frame] | None,
                 now: float) -> None:
        payload = bytes(data)
        self.push(Pending(opcode, payload, now, self.conn.decide(self.direction, opcode, payload),
                          fragments))

    def _close_frame(self, frame: Frame, now: float) -> None:
        source = self.conn.client if self.sink is self.conn.server else self.conn.server
        assert source is not None
        close = source.protocol.close_rcvd
        if close is not None:
            pair = (close.code, close.reason)
            if source.side is Side.CLIENT:
                self.conn.info.client_close = pair
            else:
                self.conn.info.server_close = pair
        if source.protocol.close_rcvd_then_sent is False:
            return  # the peer's answer to a close the proxy sent it: nothing to relay
        payload = bytes(frame.data)
        self.push(Pending(Opcode.CLOSE, payload, now,
                          self.conn.decide(self.direction, Opcode.CLOSE, payload), close=close))

    def push(self, item: Pending) -> None:
        """Deliver now (nothing waiting, no hold or delay) or queue behind what waits."""
        action = item.decision.action if item.decision is not None else None
        if self._pump is None and action is not Action.HOLD and action is not Action.DELAY:
            self._deliver(item)
            return
        self.queue.append(item)
        limit = self.conn.hub.limits.max_pending
        if limit is not None and len(self.queue) >= limit:
            self._room.clear()
        if self._pump is None:
            self._pump = self.conn.hub.tasks.spawn(self._run(), f"{self.conn.id}-{self.direction}")

    async def wait_room(self) -> None:
        """Back-pressure: wait while too many frames wait behind a held or delayed one."""
        await self._room.wait()

    # -- the slow path ----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while self.queue:
                item = self.queue[0]
                action = item.decision.action if item.decision is not None else None
                deliver = True
                if action is Action.DELAY:
                    assert item.decision is not None
                    wait = item.arrived + item.decision.rule.delay_ms / 1000 - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                elif action is Action.HOLD:
                    deliver = await self._hold(item)
                self.queue.popleft()
                if len(self.queue) < (self.conn.hub.limits.max_pending or 1) // 2 + 1:
                    self._room.set()
                if deliver:
                    self._deliver(item)
                    await self.sink.out.drain()
        finally:
            self._pump = None
            self._room.set()

    async def _hold(self, item: Pending) -> bool:
        """Wait for the user's verdict (or the rule's timeout); whether to deliver `item`."""
        assert item.decision is not None and item.opcode is not None
        hub = self.conn.hub
        rule = item.decision.rule
        held = hub.hold(self.conn.id, self.direction, item.opcode, item.payload, rule)
        try:
            verdict = await asyncio.wait_for(asyncio.shield(held.verdict), rule.timeout)
        except TimeoutError:
            hub.held.pop(held.id, None)
            forward = rule.on_timeout == "forward"
            payload, detail = None, f"no decision in {rule.timeout:g} s"
        else:
            forward, payload, detail = verdict.forward, verdict.payload, "by the user"
        item.decision = None
        if not forward:
            self._drop(item, f"held, then dropped {detail}", rule.name)
            return False
        common = {"direction": self.direction, "rule": rule.name, "opcode": item.opcode}
        if payload is not None and payload != item.payload:
            hub.event(self.conn.id, "edited", payload=item.payload, detail=detail, **common)
            item.payload, item.fragments = payload, None
        else:
            hub.event(self.conn.id, "released", detail=detail, **common)
        return True

    def _drop(self, item: Pending, detail: str, rule: str | None) -> None:
        """Do not deliver `item` (a dropped close frame cuts the sink's TCP connection)."""
        self.conn.hub.event(self.conn.id, "dropped", direction=self.direction, rule=rule,
                            opcode=item.opcode, payload=item.payload, detail=detail)
        if item.opcode is Opcode.CLOSE:
            self.sink.writer.transport.abort()  # no close frame: the peer sees 1006

    # -- delivery ---------------------------------------------------------------------------

    def _deliver(self, item: Pending) -> None:
        conn, hub, direction = self.conn, self.conn.hub, self.direction
        decision = item.decision
        copies = 1
        if decision is not None:
            rule = decision.rule
            common = {"direction": direction, "rule": rule.name, "opcode": item.opcode}
            action = decision.action
            if action is Action.DROP:
                self._drop(item, "by rule", rule.name)
                return
            if action is Action.REWRITE and decision.payload != item.payload:
                hub.event(conn.id, "rewritten", payload=item.payload, **common)
                item.payload, item.fragments = decision.payload, None
            elif action is Action.DUPLICATE:
                copies += rule.copies
                hub.event(conn.id, "duplicated", detail=f"{rule.copies} more", **common)
            elif action is Action.DELAY:
                hub.event(conn.id, "delayed", detail=f"{rule.delay_ms:g} ms", **common)
        for _ in range(copies):
            if not self._send(item):
                return

    def _send(self, item: Pending) -> bool:
        """Write `item` to the sink; False (and a "dropped" event) when the sink cannot take it."""
        sink, opcode = self.sink, item.opcode
        protocol = sink.protocol
        if opcode is None:  # the source left without a close frame: so does the sink's peer
            sink.out.write_eof()
            self.conn.hub.tasks.spawn(self.conn.close_deadline(sink),
                                      f"{self.conn.id}-end-{sink.side}")
            return True
        try:
            if opcode is Opcode.CLOSE:
                if not sink.open:
                    return True  # both peers closed at once: each already has its answer
                close = item.close
                self.conn.send_close(sink, close.code if close else None,
                                      close.reason if close else "")
                return True
            if opcode is Opcode.PING or opcode is Opcode.PONG:
                (protocol.send_ping if opcode is Opcode.PING else protocol.send_pong)(item.payload)
                if opcode is Opcode.PING:
                    self.conn.ping_relayed(self.direction, item.payload)
            elif item.fragments is not None:
                self._send_fragments(item.fragments)
            elif opcode is Opcode.TEXT:
                protocol.send_text(item.payload)
            else:
                protocol.send_binary(item.payload)
        except (InvalidState, ProtocolError):
            self._drop(item, f"the {sink.side} is closing", None)
            return False
        sink.flush()
        if item.fragments is None:
            self.conn.record(self.direction, opcode, item.payload)
        return True

    def _send_fragments(self, fragments: list[Frame]) -> None:
        protocol = self.sink.protocol
        first = fragments[0]
        if first.opcode is WsOpcode.TEXT:
            protocol.send_text(first.data, fin=False)
        else:
            protocol.send_binary(first.data, fin=False)
        self.conn.record(self.direction, Opcode(first.opcode.value), bytes(first.data), fin=False)
        for frame in fragments[1:]:
            protocol.send_continuation(frame.data, fin=frame.fin)
            self.conn.record(self.direction, Opcode.CONTINUATION, bytes(frame.data),
                             fin=frame.fin)

    def discard(self, why: str) -> None:
        """The connection is over: frames still queued are dropped (and said so)."""
        if self._pump is not None:
            self._pump.cancel()
        while self.queue:
            item = self.queue.popleft()
            if item.opcode is not None and item.opcode is not Opcode.CLOSE:
                self.conn.hub.event(self.conn.id, "dropped", direction=self.direction,
                                    opcode=item.opcode, payload=item.payload, detail=why)
