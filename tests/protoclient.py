"""An independent client and ledger for the harness wire protocol, from docs/protocol.md only.

The chaos test proves the harness's delivery promise with these, so they import nothing from
`wsconsole`: the product's own client, swarm and codec could share a misreading of the
protocol with the nodes, and then a test built on them would agree with a lie.

`Ledger` is pure bookkeeping, fed what the clients saw; `Ledger.judge()` gives the verdict:
for every acknowledged publish, every subscriber either received it exactly once and in
order, or was told it will not come (a `joined` with `reset: true` for everything left in
its old sequence space, an `error recovery_window_exceeded` for everything up to the `seq`
it names). Anything else is a silent loss, a duplicate, an out-of-order delivery or a splice
(a sequence space changed under a subscriber without a reset).

`Peer` is one client on plain `websockets`: it joins its rooms with `since`/`epoch` after
every reconnect, keeps publishes until they are acknowledged and re-sends them with the same
id, and records every `joined`, `message`, `ack` and notice into the ledger. It speaks either
dialect of the harness: `WsDialect`, the JSON envelopes of docs/protocol.md, or `SioDialect`,
the same conversation as Socket.IO events (docs/targets.md), framed here by hand from the
Engine.IO v4 / Socket.IO v5 protocol on the websocket transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

Epoch = object  # an epoch id as the node sends it (a string); the ledger only compares them


# ---------------------------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class Joined:
    """`joined {room, epoch, seq, reset?}`."""

    epoch: Epoch
    seq: int
    reset: bool


@dataclass(frozen=True, slots=True)
class Delivered:
    """`message {room, epoch, seq, id, ...}`."""

    ident: str
    epoch: Epoch
    seq: int


@dataclass(frozen=True, slots=True)
class Window:
    """`error recovery_window_exceeded {room, epoch, first, seq}`: nothing up to `seq` comes."""

    epoch: Epoch
    seq: int


Event = Joined | Delivered | Window


# ---------------------------------------------------------------------------------- ledger
@dataclass
class Verdict:
    """What `Ledger.judge()` found; `ok` when nothing was lost, doubled, reordered or spliced."""

    acknowledged: int = 0
    subscriptions: int = 0
    checked: int = 0  # owed (subscriber, acknowledged message) pairs, each received once
    delivered: int = 0
    lost: list[tuple[str, str, str]] = field(default_factory=list)  # (subscriber, room, id)
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)
    out_of_order: list[tuple[str, str, str]] = field(default_factory=list)
    splices: list[tuple[str, str, str]] = field(default_factory=list)
    mismatches: list[tuple[str, str, str]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    resets: int = 0  # reset notices received
    windows: int = 0  # recovery_window_exceeded notices received
    covered: int = 0  # acknowledged messages a subscriber was told it would not get
    redelivered: int = 0  # ids delivered again in a new epoch (re-sent after a reset)

    @property
    def ok(self) -> bool:
        """True if the promise held for every subscriber and every acknowledged publish."""
        return not (
            self.lost or self.duplicates or self.out_of_order or self.splices
            or self.mismatches or self.conflicts
        )  # fmt: skip

    def problems(self, limit: int = 5) -> str:
        """A short description of what went wrong (examples of each kind)."""
        parts = []
        for name in ("lost", "duplicates", "out_of_order", "splices", "mismatches", "conflicts"):
            found = getattr(self, name)
            if found:
                parts.append(f"{name}={len(found)} e.g. {found[:limit]}")
        return "; ".join(parts) or "none"


@dataclass(slots=True)
class _Walk:
    """One subscriber's path through one room's sequence spaces."""

    intervals: list[list[Any]] = field(default_factory=list)  # [epoch, lo, hi|None]: owed (lo, hi]
    covered: list[tuple[Epoch, int, int]] = field(default_factory=list)  # told: (lo, hi] won't come
    tails: list[tuple[Epoch, int]] = field(default_factory=list)  # left with a reset after seq
    skipped: set[Epoch] = field(default_factory=set)  # whole epochs passed over with a reset
    owed_whole: set[Epoch] = field(default_factory=set)  # whole epochs passed over silently
    epoch: Epoch = None
    seq: int | None = None
    window: tuple[Epoch, int] | None = None
    seen: Counter[tuple[str, Epoch]] = field(default_factory=Counter)
    got: dict[str, list[tuple[Epoch, int]]] = field(default_factory=dict)


class Ledger:
    """Acknowledgements and what every subscriber saw, judged against the protocol's promise."""

    def __init__(self) -> None:
        self.acks: dict[str, tuple[str, Epoch, int]] = {}  # id -> (room, epoch, seq)
        self._at: dict[tuple[str, Epoch, int], str] = {}  # (room, epoch, seq) -> id
        self._rank: dict[tuple[str, Epoch], int] = {}  # (room, epoch) -> order first seen
        self.streams: dict[tuple[str, str], list[Event]] = {}
        self.conflicts: list[str] = []
        self.unexpected_errors: Counter[str] = Counter()

    def epochs(self, room: str) -> int:
        """How many sequence spaces of `room` were seen (a new one per lost broker state)."""
        return sum(1 for r, _ in self._rank if r == room)

    def _saw(self, room: str, epoch: Epoch) -> None:
        self._rank.setdefault((room, epoch), len(self._rank))

    def acked(self, room: str, ident: str, epoch: Epoch, seq: int) -> None:
        """A publish was acknowledged as (epoch, seq) of `room`."""
        self._saw(room, epoch)
        before = self.acks.get(ident)
        if before is not None and before != (room, epoch, seq):
            if before[:2] == (room, epoch):
                self.conflicts.append(f"{ident} acked as seq {before[2]} and {seq} in one epoch")
            # else: re-sent after a reset lost the first one: the new position counts
        holder = self._at.get((room, epoch, seq))
        if holder is not None and holder != ident:
            self.conflicts.append(f"{room} seq {seq} acked for both {holder} and {ident}")
        self._at[(room, epoch, seq)] = ident
        self.acks[ident] = (room, epoch, seq)

    def record(self, subscriber: str, room: str, event: Event) -> None:
        """Something a subscriber received for `room`, in arrival order."""
        self._saw(room, event.epoch)
        self.streams.setdefault((subscriber, room), []).append(event)

    def received(self, prefix: str = "") -> tuple[int, int, int]:
        """What the subscribers got of the messages whose ids start with `prefix`, counted
        without acknowledgements (for messages another program published): (distinct ids,
        duplicates, deliveries with a lower seq than the one before in their room)."""
        ids: Counter[str] = Counter()
        out_of_order = 0
        for events in self.streams.values():
            last = 0
            for event in events:
                if isinstance(event, Delivered) and event.ident.startswith(prefix):
                    ids[event.ident] += 1
                    out_of_order += event.seq < last
                    last = max(last, event.seq)
        return len(ids), sum(n - 1 for n in ids.values()), out_of_order

    def explain(self, subscriber: str, room: str, ident: str, around: int = 4) -> str:
        """What `subscriber` saw in `room` near the acknowledged position of `ident`."""
        ack = self.acks.get(ident)
        if ack is None:
            return f"{ident} was never acknowledged"
        _, epoch, seq = ack
        lines = [f"{ident} acked as epoch {epoch} seq {seq}; {subscriber} saw:"]
        for index, event in enumerate(self.streams.get((subscriber, room), [])):
            near = event.epoch == epoch and abs(event.seq - seq) <= around
            if near or not isinstance(event, Delivered):
                lines.append(f"  #{index} {event}")
        return "\n".join(lines)

    # -- judging ----------------------------------------------------------------------------
    def judge(self) -> Verdict:
        """Walk every subscription; see the module docstring for the rules."""
        verdict = Verdict(acknowledged=len(self.acks), subscriptions=len(self.streams))
        verdict.conflicts = list(self.conflicts)
        by_room: dict[str, dict[Epoch, dict[int, str]]] = {}
        for (room, epoch, seq), ident in self._at.items():
            if self.acks.get(ident) == (room, epoch, seq):
                by_room.setdefault(room, {}).setdefault(epoch, {})[seq] = ident
        for (subscriber, room), events in self.streams.items():
            walk = self._walk(subscriber, room, events, verdict)
            self._settle(subscriber, room, walk, by_room.get(room, {}), verdict)
        return verdict

    def _walk(self, who: str, room: str, events: list[Event], verdict: Verdict) -> _Walk:
        walk = _Walk()
        for event in events:
            if isinstance(event, Joined):
                self._joined(who, room, walk, event, verdict)
            elif isinstance(event, Window):
                verdict.windows += 1
                low = walk.seq if walk.seq is not None and walk.epoch == event.epoch else 0
                walk.covered.append((event.epoch, low, event.seq))
                if walk.epoch == event.epoch:
                    walk.seq = max(walk.seq or 0, event.seq)
                walk.window = (event.epoch, event.seq)
            else:
                self._delivered(who, room, walk, event, verdict)
        return walk

    def _move(self, room: str, walk: _Walk, epoch: Epoch, start: int, told: bool) -> None:
        """Leave the current epoch for `epoch` at `start`; `told`: with a reset notice."""
        if walk.epoch is not None and told:
            for interval in walk.intervals:
                if interval[0] == walk.epoch and interval[2] is None:
                    interval[2] = walk.seq or 0  # the rest of the old epoch is covered
            walk.tails.append((walk.epoch, walk.seq or 0))
        old = self._rank.get((room, walk.epoch), -1)
        new = self._rank[(room, epoch)]
        between = {e for (r, e), rank in self._rank.items() if r == room and old < rank < new}
        (walk.skipped if told else walk.owed_whole).update(between)
        walk.intervals.append([epoch, start, None])
        walk.epoch, walk.seq = epoch, start

    def _joined(self, who: str, room: str, walk: _Walk, event: Joined, verdict: Verdict) -> None:
        window = walk.window if walk.window and walk.window[0] == event.epoch else None
        walk.window = None
        if walk.epoch is None and walk.seq is None:
            walk.intervals.append([event.epoch, event.seq, None])
            walk.epoch, walk.seq = event.epoch, event.seq
        elif event.reset:
            verdict.resets += 1
            self._move(room, walk, event.epoch, window[1] if window else 0, told=True)
        elif event.epoch != walk.epoch:
            verdict.splices.append((who, room, f"joined epoch {event.epoch} without a reset"))
            self._move(room, walk, event.epoch, window[1] if window else 0, told=False)
        elif window is not None:
            walk.seq = max(walk.seq or 0, window[1])

    def _delivered(
        self, who: str, room: str, walk: _Walk, event: Delivered, verdict: Verdict
    ) -> None:
        verdict.delivered += 1
        walk.seen[(event.ident, event.epoch)] += 1
        if walk.seen[(event.ident, event.epoch)] > 1:
            verdict.duplicates.append((who, room, event.ident))
            return
        walk.got.setdefault(event.ident, []).append((event.epoch, event.seq))
        if walk.seq is None:
            verdict.out_of_order.append((who, room, f"{event.ident} before any joined"))
            walk.intervals.append([event.epoch, event.seq, None])
        elif event.epoch != walk.epoch:
            verdict.splices.append((who, room, f"{event.ident} from epoch {event.epoch}"))
            self._move(room, walk, event.epoch, 0, told=False)
        elif event.seq <= walk.seq:
            verdict.out_of_order.append((who, room, f"{event.ident} seq {event.seq}"))
            return
        walk.epoch, walk.seq = event.epoch, event.seq

    def _settle(
        self,
        who: str,
        room: str,
        walk: _Walk,
        acked: dict[Epoch, dict[int, str]],
        verdict: Verdict,
    ) -> None:
        """Compare what the walk owed with what it got."""
        last = self._rank.get((room, walk.epoch), -1)
        later = {e for (r, e), rank in self._rank.items() if r == room and rank > last}
        owed: dict[str, tuple[Epoch, int]] = {}
        for epoch, lo, hi in walk.intervals:
            for seq, ident in acked.get(epoch, {}).items():
                if seq > lo and (hi is None or seq <= hi):
                    owed[ident] = (epoch, seq)
        for epoch in walk.owed_whole | later:
            for seq, ident in acked.get(epoch, {}).items():
                owed[ident] = (epoch, seq)
        told: set[str] = set()
        for epoch, after in walk.tails:
            told.update(i for seq, i in acked.get(epoch, {}).items() if seq > after)
        for epoch in walk.skipped:
            told.update(acked.get(epoch, {}).values())
        for epoch, lo, hi in walk.covered:
            told.update(i for seq, i in acked.get(epoch, {}).items() if lo < seq <= hi)
        for ident, (epoch, seq) in owed.items():
            if ident in told:
                continue
            verdict.checked += 1
            positions = walk.got.get(ident)
            if not positions:
                verdict.lost.append((who, room, ident))
            elif (epoch, seq) not in positions:
                verdict.mismatches.append((who, room, f"{ident} at {positions}, acked {seq}"))
        verdict.covered += len(told - walk.got.keys())
        for ident, positions in walk.got.items():
            ack = self.acks.get(ident)
            if ack is not None and any(epoch != ack[1] for epoch, _ in positions):
                verdict.redelivered += 1


# ---------------------------------------------------------------------------------- client
@dataclass
class PeerStats:
    """What one peer did, for the run's table."""

    connects: int = 0
    published: int = 0
    resent: int = 0
    lagging: int = 0  # `lagging` notices: the node stopped sending, a rejoin recovers
    errors: Counter[str] = field(default_factory=Counter)


class Refused(Exception):
    """The server refused or ended the session (Socket.IO CONNECT_ERROR or DISCONNECT)."""


class WsDialect:
    """docs/protocol.md: JSON envelopes, the token in the query."""

    def url(self, base: str, token: str) -> str:
        """The WebSocket URL for the balancer's `base` URL."""
        return f"{base}/?token={token}"

    async def opened(self, ws: ClientConnection, token: str) -> None:
        """Nothing to say first: the handshake carried the token."""

    def join(self, room: str, position: tuple[Epoch, int] | None) -> str:
        """A `join`, from `position` (epoch, since) when the client has one."""
        envelope: dict[str, Any] = {"type": "join", "room": room}
        if position is not None:
            envelope["since"] = position[1]
            if position[0] is not None:
                envelope["epoch"] = position[0]
        return json.dumps(envelope)

    def publish(self, ident: str, room: str, data: Any) -> str:
        """A `publish`."""
        return json.dumps({"type": "publish", "room": room, "id": ident, "data": data})

    def decode(self, raw: str | bytes) -> tuple[list[dict[str, Any]], list[str]]:
        """Envelopes in a frame, and replies the protocol needs sent back (none here)."""
        return [json.loads(raw)], []


class SioDialect:
    """The Socket.IO harness flavour: the envelopes as events, the outcome of a join or a
    publish in its ack. Engine.IO packets: 0 open, 2 ping (answer 3), 4 message; Socket.IO
    packets inside a message: 0 connect (with the auth payload), 1 disconnect, 2 event,
    3 ack, 4 connect error. An event with an ack id carries it after the packet type."""

    def __init__(self) -> None:
        self._acks: dict[int, tuple[str, str]] = {}  # ack id -> ("join", room) | ("publish", id)
        self._next = 0

    def url(self, base: str, token: str) -> str:
        """The websocket transport's URL for the balancer's `base` (http://) URL."""
        return base.replace("http://", "ws://", 1) + "/socket.io/?EIO=4&transport=websocket"

    async def opened(self, ws: ClientConnection, token: str) -> None:
        """Engine.IO's open packet, then the namespace connect with the token."""
        first = await ws.recv()
        if not isinstance(first, str) or not first.startswith("0"):
            raise Refused(f"not an Engine.IO open packet: {first!r:.80}")
        await ws.send("40" + json.dumps({"token": token}))
        while True:
            reply = await ws.recv()
            if reply == "2":
                await ws.send("3")
            elif isinstance(reply, str) and reply.startswith("40"):
                return
            elif isinstance(reply, str) and reply.startswith("44"):
                raise Refused(f"connection refused: {reply[2:]:.200}")

    def _with_ack(self, kind: str, context: str, args: list[Any]) -> str:
        self._next += 1
        self._acks[self._next] = (kind, context)
        return f"42{self._next}" + json.dumps(args)

    def join(self, room: str, position: tuple[Epoch, int] | None) -> str:
        """The "join" event, from `position` (epoch, since) when the client has one."""
        if position is None:
            return self._with_ack("join", room, ["join", room])
        since: dict[str, Any] = {"since": position[1]}
        if position[0] is not None:
            since["epoch"] = position[0]
        return self._with_ack("join", room, ["join", room, since])

    def publish(self, ident: str, room: str, data: Any) -> str:
        """The "publish" event, its id last."""
        return self._with_ack("publish", ident, ["publish", room, data, ident])

    def decode(self, raw: str | bytes) -> tuple[list[dict[str, Any]], list[str]]:
        """The envelopes an Engine.IO packet stands for, and the pong a ping needs."""
        if not isinstance(raw, str) or raw in ("3", "6"):
            return [], []
        if raw == "2":
            return [], ["3"]
        if raw == "1" or raw.startswith("41"):
            raise Refused("the server ended the session")
        if raw.startswith("42"):
            event, *args = json.loads(raw[2:])
            return [{"type": event, **(args[0] if args else {})}], []
        if raw.startswith("43"):
            digits = len(raw) - len(raw[2:].lstrip("0123456789"))
            pending = self._acks.pop(int(raw[2:digits]), None)
            if pending is None:
                return [], []
            kind, context = pending
            status, *rest = json.loads(raw[digits:])
            body = rest[0] if rest and isinstance(rest[0], dict) else {}
            if status == "ok" and kind == "publish":
                return [{"type": "ack", **body}], []
            if status == "error":
                key = "room" if kind == "join" else "id"
                return [{"type": "error", **body, key: context}], []
        return [], []


Dialect = WsDialect | SioDialect

RETRY_FIRST = 0.25  # seconds before re-sending what was refused; doubles up to RETRY_CAP
RETRY_CAP = 2.0

class Peer:
    """One reconnecting client on plain `websockets` that subscribes and may publish."""

    def __init__(
        self,
        name: str,
        base_url: str,
        token: str,
        rooms: list[str],
        ledger: Ledger,
        *,
        dialect: Callable[[], Dialect] = WsDialect,
        local_addr: str,
        publish_to: str | None = None,
        rate: float = 0.0,
        seed: int = 0,
        keepalive: float = 1.0,
        padding: int = 0,
    ) -> None:
        self.name = name
        self.base_url = base_url
        self.token = token
        self.dialect = dialect
        self._speaking: Dialect = dialect()
        self.rooms = rooms
        self.ledger = ledger
        self.local_addr = local_addr
        self.publish_to = publish_to
        self.rate = rate
        self.keepalive = keepalive
        self.padding = "x" * padding  # added to every published message's data
        self.stats = PeerStats()
        self.last_frame: tuple[float, str | None] | None = None  # when, and from which node
        self.outbox: OrderedDict[str, Any] = OrderedDict()  # id -> data, until acknowledged
        self.position: dict[str, tuple[Epoch, int]] = {}  # room -> (epoch, last seq)
        self._after_window: set[str] = set()
        self._refused_rooms: set[str] = set()  # joins refused on this connection
        self._refused: set[str] = set()  # publish ids refused on this connection
        self._retry: asyncio.Task[None] | None = None
        self._retry_delay = RETRY_FIRST
        self._rng = random.Random(f"{seed}-{name}")
        self._ws: ClientConnection | None = None
        self._running = True
        self._publishing = rate > 0
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Connect (and keep reconnecting) and, for a publisher, start publishing."""
        self._spawn(self._connection_loop(), f"peer-{self.name}")
        if self._publishing:
            self._spawn(self._publish_loop(), f"pub-{self.name}")

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def stop_publishing(self) -> None:
        """No new publishes; queued ones are still re-sent until acknowledged."""
        self._publishing = False

    async def close(self) -> None:
        """Stop every task and close the connection."""
        self._running = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2)

    def stall(self) -> None:
        """Stop reading the socket (a stuck reader) until `resume`; the connection stays."""
        if self._ws is not None:
            self._ws.transport.pause_reading()

    def resume(self) -> None:
        """Read the socket again after `stall`."""
        if self._ws is not None:
            self._ws.transport.resume_reading()

    @property
    def connected(self) -> bool:
        """True while a connection is open."""
        return self._ws is not None

    # -- connection ----------------------------------------------------------------------------
    async def _connection_loop(self) -> None:
        delay = 0.1
        while self._running:
            opened = None
            speaking = self.dialect()
            try:
                async with connect(
                    speaking.url(self.base_url, self.token),
                    open_timeout=3,
                    ping_interval=self.keepalive,
                    ping_timeout=self.keepalive,
                    close_timeout=0.5,
                    max_queue=None,
                    local_addr=(self.local_addr, 0),
                ) as ws:
                    await speaking.opened(ws, self.token)
                    opened = time.monotonic()
                    self.stats.connects += 1
                    self._ws, self._speaking = ws, speaking
                    self._refused.clear()
                    self._refused_rooms.clear()
                    for room in self.rooms:
                        await self._join(ws, room)
                    for ident in list(self.outbox):
                        self.stats.resent += 1
                        await self._send_publish(ws, ident)
                    async for raw in ws:
                        envelopes, replies = speaking.decode(raw)
                        for reply in replies:
                            await ws.send(reply)
                        for envelope in envelopes:
                            self._on_frame(envelope)
            except (
                OSError, ConnectionClosed, InvalidHandshake, InvalidURI, TimeoutError, Refused
            ) as exc:  # fmt: skip
                self.stats.errors[type(exc).__name__] += 1
            except Exception as exc:  # a bug here, or a frame the protocol does not allow
                self.ledger.unexpected_errors[f"{self.name}: {exc!r}"] += 1
            finally:
                self._ws = None
            if opened is not None and time.monotonic() - opened > 2.0:
                delay = 0.1  # a connection that held resets the backoff
            await asyncio.sleep(delay * (0.5 + self._rng.random()))
            delay = min(delay * 2, 2.0)

    async def _join(self, ws: ClientConnection, room: str) -> None:
        await ws.send(self._speaking.join(room, self.position.get(room)))

    async def _send_publish(self, ws: ClientConnection, ident: str) -> None:
        data = self.outbox.get(ident)
        if data is not None:
            await ws.send(self._speaking.publish(ident, self.publish_to or "", data))

    def _retry_soon(self) -> None:
        """Re-send what was refused after a pause that doubles while refusals go on (one
        timer at a time), so an outage costs a few re-sends, never a flood."""
        if self._retry is None or self._retry.done():
            self._retry = self._spawn(self._retry_refused(), f"retry-{self.name}")

    async def _retry_refused(self) -> None:
        await asyncio.sleep(self._retry_delay * (0.75 + 0.5 * self._rng.random()))
        self._retry_delay = min(self._retry_delay * 2, RETRY_CAP)
        ws = self._ws
        if ws is None:
            return  # the next connection joins and re-sends everything anyway
        rooms, self._refused_rooms = self._refused_rooms, set()
        refused, self._refused = self._refused, set()
        with contextlib.suppress(ConnectionClosed):
            for room in sorted(rooms):
                await self._join(ws, room)
            for ident in list(self.outbox):
                if ident in refused:
                    self.stats.resent += 1
                    await self._send_publish(ws, ident)

    # -- frames --------------------------------------------------------------------------------
    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "message":
            self._on_message(frame)
        elif kind == "ack":
            ident = frame["id"]
            if ident in self.outbox:
                room = self.publish_to or ""
                self.ledger.acked(room, ident, frame.get("epoch"), frame["seq"])
                del self.outbox[ident]
                self._retry_delay = RETRY_FIRST
        elif kind == "joined":
            self._retry_delay = RETRY_FIRST
            self._on_joined(frame)
        elif kind == "error":
            self._on_error(frame)
        elif kind == "lagging":  # the node closes (1013); the rejoin's `since` recovers
            self.stats.lagging += 1

    def _on_message(self, frame: dict[str, Any]) -> None:
        room = frame["room"]
        epoch, seq = frame.get("epoch"), frame["seq"]
        self.ledger.record(self.name, room, Delivered(frame["id"], epoch, seq))
        self.last_frame = (time.monotonic(), frame.get("node"))
        known = self.position.get(room)
        if known is None or known[0] != epoch or seq > known[1]:
            self.position[room] = (epoch, seq)

    def _on_joined(self, frame: dict[str, Any]) -> None:
        room = frame["room"]
        epoch, seq, reset = frame.get("epoch"), frame["seq"], bool(frame.get("reset"))
        self.ledger.record(self.name, room, Joined(epoch, seq, reset))
        after_window = room in self._after_window
        self._after_window.discard(room)
        known = self.position.get(room)
        if known is None or after_window:
            self.position[room] = (epoch, seq)  # no replay follows: this is the baseline
        elif reset:
            self.position[room] = (epoch, 0)  # the new epoch's history follows from its start

    def _on_error(self, frame: dict[str, Any]) -> None:
        code = frame.get("code", "?")
        self.stats.errors[code] += 1
        room, ident = frame.get("room"), frame.get("id")
        if code == "recovery_window_exceeded":
            epoch = frame.get("epoch")
            self.ledger.record(self.name, room, Window(epoch, frame["seq"]))
            self._after_window.add(room)
        elif code in ("broker_unavailable", "broker_busy", "rate_limited") and ident is not None:
            if ident in self.outbox:  # else: a re-send of one acknowledged meanwhile
                self._refused.add(ident)
                self._retry_soon()
        elif code == "broker_unavailable" and room in self.rooms:
            self._refused_rooms.add(room)
            self._retry_soon()
        else:  # rate_limited without an id would be a join: this client paces itself below
            self.ledger.unexpected_errors[code] += 1

    # -- publishing ---------------------------------------------------------------------------
    async def _publish_loop(self) -> None:
        assert self.publish_to is not None
        count = 0
        interval = 1.0 / self.rate
        while self._publishing:
            count += 1
            ident = f"{self.name}-{count}"
            self.outbox[ident] = {"n": count, "pad": self.padding} if self.padding else {"n": count}
            self.stats.published += 1
            ws = self._ws
            if ws is not None:
                with contextlib.suppress(ConnectionClosed):
                    await self._send_publish(ws, ident)
            await asyncio.sleep(interval * (0.5 + self._rng.random()))

