"""One client's session on a harness node: the harness protocol it speaks, message by message.

The node admits a connection (`admission.py`), then hands it a `Session`: authentication
by first message when the handshake carried no token, the per-connection rate limit,
then each envelope (docs/protocol.md): `join` (subscribe, snapshot since `since` in its
`epoch`, then the frames buffered meanwhile, see `rooms.py`; a `since` of another epoch
than the room's gets a reset and the new epoch from its start), `leave`, `publish`
(acknowledged with its epoch and seq once the broker took it), `rpc`, and `auth` again to
refresh the token. Every answer goes out
through the node's writer (`fanout.py`) so it keeps its place after queued fan-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
from websockets.asyncio.server import ServerConnection

from wsconsole.core.envelope import EnvelopeError, encode, parse_client
from wsconsole.harness.adapter import PublishResult, RecoveryWindowExceeded
from wsconsole.harness.auth import AuthError, Claims, room_allowed
from wsconsole.harness.brokerlink import BrokerBusy, BrokerUnavailable
from wsconsole.harness.fanout import payload_size
from wsconsole.harness.joins import join_room
from wsconsole.harness.limits import MessageRate, Verdict

if TYPE_CHECKING:
    from wsconsole.harness.node import Node

ECHO_PATH = "/echo"  # the node's echo endpoint: messages come back as they came


class Session:
    """One client connection: who it is, its rate limit, and its side of the protocol."""

    __slots__ = ("claims", "id", "injected", "node", "rate", "user", "ws")

    def __init__(self, node: Node, ws: ServerConnection, rate: MessageRate | None) -> None:
        self.node = node
        self.ws = ws
        self.id = uuid.uuid4().hex[:12]
        self.claims: Claims | None = None
        self.user = "anonymous"
        self.rate = rate
        self.injected: str | None = None  # the case id last injected into this connection

    # -- writing ----------------------------------------------------------------------
    def send(self, frame: str | bytes) -> None:
        """Queue one text frame for this client without waiting."""
        self.node.fanout.send(self, frame)

    def error(self, code: str, detail: str, id: str | None = None, **extra: Any) -> None:
        """Send an `error` envelope (counted under its code)."""
        self.node.stats.errors[code] += 1
        self.send(encode("error", code=code, detail=detail, id=id, **extra))

    # -- authentication ---------------------------------------------------------------
    async def authenticate(self) -> Claims | None:
        """Wait for a first `auth` message; close 1008 (and return None) if it is not good."""
        node = self.node
        reason = "authentication required"
        try:
            async with asyncio.timeout(node.config.auth_timeout):
                raw = await self.ws.recv()
        except TimeoutError:
            raw = None
            reason = "authentication timeout"
        if raw is not None:
            node.stats.msgs_in += 1
            node.stats.bytes_in += payload_size(raw)
            try:
                envelope = parse_client(raw)
            except EnvelopeError as exc:
                reason = f"authentication required ({exc.code})"
            else:
                if envelope["type"] == "auth":
                    try:
                        return node.admission.verify(envelope["token"])
                    except AuthError as exc:
                        reason = f"unauthorized: {exc.reason}"
                else:
                    self.error("auth_required", "send an auth message first", envelope.get("id"))
        node.stats.auth_failures += 1
        node.stats.errors["auth"] += 1
        await self.ws.close(1008, reason[:120])
        return None

    def _reauth(self, token: str) -> None:
        """A later `auth` refreshes the token (same user only); a bad one is an error reply."""
        node = self.node
        if not node.config.auth:
            return
        try:
            claims = node.admission.verify(token)
        except AuthError as exc:
            node.stats.auth_failures += 1
            self.error("unauthorized", exc.reason)
            return
        if claims.user != self.user:
            self.error("unauthorized", "a connection cannot change its user")
            return
        self.claims = claims

    def _allowed(self, room: str) -> bool:
        return self.claims is None or room_allowed(self.claims, room)

    # -- the message loop -------------------------------------------------------------
    async def serve(self) -> None:
        """Handle the client's messages until the connection ends (ConnectionClosed).

        `recv` in a loop rather than `async for`: the library's iterator is an async
        generator per connection, and while an idle client waits for its next message
        nothing of the last one (its text, its envelope) stays referenced."""
        recv = self.ws.recv
        while True:
            await self._handle(await recv())

    async def _handle(self, raw: str | bytes) -> None:
        """One message from the client: admitted, parsed, dispatched."""
        if not await self._admit(raw):
            return  # refused; after a close the next recv raises ConnectionClosed
        if not isinstance(raw, str):
            self.error("bad_envelope", "binary frames are not part of the protocol")
            return
        try:
            envelope = parse_client(raw)
        except EnvelopeError as exc:
            self.error(exc.code, exc.detail, exc.id)
            return
        await self._dispatch(envelope)

    async def echo(self) -> None:
        """The echo endpoint (`ECHO_PATH`): every message back as it came, text or binary,
        under the same limits as the protocol (so standard suites such as Autobahn can run
        against a node); until the connection ends (ConnectionClosed)."""
        ws, stats = self.ws, self.node.stats
        while True:
            raw = await ws.recv()
            if not await self._admit(raw):
                continue
            await ws.send(raw)
            stats.msgs_out += 1
            stats.bytes_out += payload_size(raw)

    async def _admit(self, raw: str | bytes) -> bool:
        """Count a message and apply the rate limit and the token's expiry: False when it
        is not to be processed (refused, or the connection was closed)."""
        stats = self.node.stats
        stats.msgs_in += 1
        stats.bytes_in += payload_size(raw)
        if self.rate is not None:
            verdict = self.rate.check(time.monotonic())
            if verdict is not Verdict.OK:
                await self._rate_limited(raw, verdict, self.rate)
                return False
        if self.claims is not None and self.claims.expired():
            stats.auth_failures += 1
            await self.ws.close(1008, "token expired")
            return False
        return True

    async def _rate_limited(self, raw: str | bytes, verdict: Verdict, rate: MessageRate) -> None:
        """Refuse a message over the rate (`error rate_limited`); close 1008 for abuse."""
        stats = self.node.stats
        stats.rate_limited += 1
        if verdict is Verdict.ABUSE:
            stats.errors["rate_abuse"] += 1
            await self.ws.close(1008, "rate limit exceeded")
            return
        ident = None
        with contextlib.suppress(EnvelopeError):
            ident = parse_client(raw).get("id") if isinstance(raw, str) else None
        self.error("rate_limited", f"over {self.node.config.rate:g} messages/s", ident,
                   retry_after=rate.retry_after)  # fmt: skip

    async def _dispatch(self, envelope: dict[str, Any]) -> None:
        kind = envelope["type"]
        if kind == "publish":
            self._publish(envelope)
        elif kind == "join":
            epoch = envelope.get("epoch")  # opaque: compared as text with the room's
            since = envelope["since"]
            await self.join(envelope["room"], since, None if epoch is None else str(epoch))
        elif kind == "leave":
            await self.leave(envelope["room"])
            self.send(encode("left", room=envelope["room"]))
        elif kind == "rpc":
            self._rpc(envelope)
        elif kind == "auth":
            self._reauth(envelope["token"])

    def _rpc(self, envelope: dict[str, Any]) -> None:
        method = self.node.rpc_methods.get(envelope["method"])
        if method is None:
            self.error("unknown_method", f"no rpc method {envelope['method']!r}", envelope["id"])
            return
        self.send(encode("result", id=envelope["id"], **method(self, envelope["params"])))

    # -- publish ----------------------------------------------------------------------
    def _publish(self, envelope: dict[str, Any]) -> None:
        room, ident = envelope["room"], envelope["id"]
        if not self._allowed(room):
            self.error("unauthorized", f"not allowed to publish to {room!r}", ident)
            return
        node = self.node
        if node.delay.busy():
            self.error("broker_busy", f"node {node.config.id} is behind on its deliveries by "
                       f"{node.delay.delay * 1000:.0f} ms; not acknowledged: re-send with "
                       "the same id after retry_after seconds", ident,
                       retry_after=node.delay.retry_after)  # fmt: skip
            return
        prefix = b'{"type":"message","room":' + orjson.dumps(room) + b',"epoch":"'
        suffix = b"".join(
            (
                b',"id":', orjson.dumps(ident),
                b',"pub_node":', node.id_json,
                b',"ts":', orjson.dumps(time.time()),
                b',"data":', orjson.dumps(envelope["data"]),
            )
        )  # fmt: skip
        future = node.adapter.publish_nowait(room, ident, prefix, b'","seq":', suffix)
        future.add_done_callback(partial(self._published, ident))

    def _published(self, ident: str, future: asyncio.Future[PublishResult]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            code = "broker_busy" if isinstance(exc, BrokerBusy) else "broker_unavailable"
            self.error(code, f"{exc}; not acknowledged: re-send with the same id", ident)
            return
        result = future.result()
        self.send(encode("ack", id=ident, seq=result.seq, epoch=result.epoch))

    # -- rooms ------------------------------------------------------------------------
    async def join(self, room: str, since: int | None, epoch: str | None) -> None:
        """Join `room` from (epoch, since): `joined`, then the frames missed and those that
        came meanwhile; a reset when `epoch` is not the room's; a window error when the
        frames are no longer kept. Also the node's way to bring a stray back in step."""
        if not self._allowed(room):
            self.error("unauthorized", f"not allowed to join {room!r}", room=room)
            return
        node = self.node
        try:
            read = await join_room(node.adapter, node.rooms, self, room, since, epoch)
        except BrokerUnavailable as exc:
            await self.leave(room)
            self.error("broker_unavailable", str(exc), room=room)
            return
        if read is None:
            return  # left meanwhile
        snap, gap = read.snapshot, read.gap
        if gap is not None:  # up to the position the `joined` gives: publishes may have
            self.window_exceeded(gap, snap.seq)  # landed between the two snapshots
        reset = snap.reset or (gap is not None and gap.reset)
        self.send(
            encode("joined", room=room, epoch=snap.epoch, seq=snap.seq, reset=reset or None)
        )
        for frame in snap.frames:
            self.send(frame + node.tail)
        for frame in read.buffered:
            self.send(frame)
        if not read.in_step or node.rooms.epoch(room) != snap.epoch:
            node.recheck(room)

    def window_exceeded(self, gap: RecoveryWindowExceeded, seq: int | None = None) -> None:
        """Tell the client that frames of a room up to `seq` (the gap's by default) will not
        come: they are beyond the kept history."""
        self.error(
            "recovery_window_exceeded", str(gap), room=gap.room, epoch=gap.epoch,
            first=gap.first, seq=gap.seq if seq is None else seq,
        )  # fmt: skip

    async def leave(self, room: str) -> None:
        """Leave a room (the node unsubscribes when no local member is left)."""
        if self.node.rooms.leave(self, room):
            await self.node.adapter.unsubscribe(room)
