"""Many simulated clients in one asyncio process, publishing with ids and timestamps.

Each simulated client is the console's own `ReconnectingClient` in harness mode (same
backoff, heartbeat/liveness, re-join with `since`, replay of unacknowledged publishes), with
its own user and, on Linux, its own 127.x.y.z source address so ip-hash stickiness spreads
them over the nodes. The swarm only observes: every inbound text frame is read once more for
the accounting (accounting.py), which does all the counting.

Phases: ramp (clients start spread over `ramp` seconds), load (`rate` publishes per second in
total, round-robin over the started clients, until `duration` or stop()), settle (no more
publishes; wait up to `settle` seconds for every ack and every owed delivery), stop (close all
clients). `run()` returns the final summary; `on_stats` gets a snapshot every `stats_interval`.
What a run is (target, load, the clients' settings) is a `SwarmConfig` (config.py).

For the window (fleet.py): `on_fleet` gets a batch of the clients' state changes and
heartbeat marks every `fleet_interval`, the clients' last frames are kept for `control`
requests, and a share of the clients can run the heartbeat lab's pong policy (`pongs_share`,
`pongs`; changed live with `set_pongs`), whose drops by the server are in the stats.
The phases are the same on the user's own app (appswarm.py): there the clients follow a
stack's recipe and the accounting has no sequence numbers to go by; `AppSwarm` replaces the
hooks `_prepare`, `_publish_one`, `_settled` and `_snapshot`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from wsconsole.core.client import RESEND_CODES, ClientError, ReconnectingClient
from wsconsole.core.events import Direction, ErrorEvent, Event, FrameRecord, Opcode
from wsconsole.core.heartbeat import PongPolicy, pong_share
from wsconsole.core.lifecycle import Transition
from wsconsole.core.tasks import Tasks, spawn
from wsconsole.swarm.accounting import Accounting
from wsconsole.swarm.config import SwarmConfig, SwarmConfigError
from wsconsole.swarm.fleet import FleetWatch

log = logging.getLogger(__name__)

Stats = dict[str, Any]



def _epoch(envelope: dict[str, Any]) -> str | None:
    """The epoch (the room's sequence space) a harness envelope names, as text."""
    epoch = envelope.get("epoch")
    return None if epoch is None or isinstance(epoch, bool) else str(epoch)
class SwarmClient(Protocol):
    """What the phases need of a simulated client, whatever it speaks."""

    name: str

    async def start(self) -> None:
        """Begin connecting."""
        ...

    async def stop(self) -> None:
        """Close and stop reconnecting."""
        ...


class Swarm:
    """N simulated clients with accounting; `await run()` returns the final summary.

    `part` runs only the clients of those indices (a worker's slice of a swarm split over
    processes): the same users, rooms, tokens and publish ids as the whole swarm gives
    them, and the part's share of the publish rate."""

    def __init__(
        self,
        config: SwarmConfig,
        on_stats: Callable[[Stats], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_fleet: Callable[[Stats], None] | None = None,
        part: range | None = None,
    ) -> None:
        config.validate()
        self.part = range(config.clients) if part is None else part
        if not self.part or self.part.step != 1 or not (
                0 <= self.part.start and self.part.stop <= config.clients):
            raise SwarmConfigError(f"a part is a non-empty slice of clients 0..{config.clients}"
                                   f", not {self.part}")
        self.config = config
        self.on_stats = on_stats
        self.on_fleet = on_fleet
        self.fleet = FleetWatch()
        self.clock = clock
        self.accounting = self._new_accounting(clock())
        self.clients: list[Any] = []  # SwarmClients: ReconnectingClient here
        self.phase = "idle"
        self.summary: Stats | None = None
        self._stop = asyncio.Event()
        self._abort = asyncio.Event()
        self._tasks = Tasks("swarm")  # ramp, publisher, retries: cancelled at the stop
        self._started: list[int] = []
        self._counters: list[int] = []
        self._pending: set[str] = set()  # publish ids not acknowledged yet

    # ---- control --------------------------------------------------------------------------

    def stop(self) -> None:
        """End the load now; a second call also skips the settle phase."""
        if self._stop.is_set():
            self._abort.set()
        self._stop.set()

    # ---- the run ---------------------------------------------------------------------------

    async def run(self) -> Stats:
        """Ramp, load, settle, stop; returns the summary (also kept in `summary`)."""
        cfg = self.config
        if self.clients:
            raise RuntimeError("a Swarm runs once; make a new one for another run")
        started = self.clock()
        self._prepare(started)
        stats_task = spawn(self._stats_loop(), "swarm-stats")  # reports until the very end
        fleet_task = spawn(self._fleet_loop(), "swarm-fleet")
        try:
            self.phase = "ramp" if cfg.ramp > 0 else "load"
            self._tasks.spawn(self._ramp(), "ramp")
            if cfg.wait_joined is not None:
                self.phase = "joining"
                await self._wait_all_joined(cfg.wait_joined)
                started = self.clock()
                self.phase = "load"
            publisher = self._tasks.spawn(self._publish_loop(), "publish")
            await self._wait_load_end(started)
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
            self.phase = "settle"
            await self._settle()
        finally:
            self.phase = "stopping"
            self.accounting.begin_stop()
            await self._tasks.cancel_all()
            await self._stop_clients()
            for task in (stats_task, fleet_task):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._emit_fleet()
            self.phase = "done"
        self.summary = self.accounting.summary(self.clock())
        self.summary.update(self.fleet.figures(self.clients, time.monotonic()))
        return self.summary

    def _new_accounting(self, started: float) -> Accounting:
        """The accounting this run feeds (a worker's records what it is fed)."""
        return Accounting(started_at=started)

    def _prepare(self, started: float) -> None:
        """Make the accounting and the clients (none connects yet)."""
        self.accounting = self._new_accounting(started)
        for index in self.part:
            name = self.config.client_name(index)
            client = ReconnectingClient(self.config.client_options(index), name=name)
            client.subscribe(self._observer(name))
            client.subscribe(self.fleet.observer(name))
            self.fleet.set_silent(name, not client.pongs.answers)
            self.clients.append(client)
            self._counters.append(0)
            self.accounting.client_added(name)

    async def _wait_all_joined(self, limit: float) -> None:
        deadline = self.clock() + limit
        want = len(self.part)
        while len(self.accounting.subs) < want and self.clock() < deadline:
            if self._stop.is_set():
                return
            await asyncio.sleep(0.05)

    async def _wait_load_end(self, started: float) -> None:
        cfg = self.config
        if cfg.duration is None:
            await self._stop.wait()
            return
        remaining = started + cfg.duration - self.clock()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, remaining)):
                await self._stop.wait()

    async def _ramp(self) -> None:
        cfg = self.config
        began = self.clock()
        count = len(self.clients)
        for index, client in enumerate(self.clients):
            if cfg.ramp > 0 and count > 1:
                due = began + cfg.ramp * index / (count - 1)
                delay = due - self.clock()
                if delay > 0:
                    await asyncio.sleep(delay)
            await client.start()
            self._started.append(index)
            if index % 50 == 49:
                await asyncio.sleep(0)  # let the first handshakes start
        if self.phase == "ramp":
            self.phase = "load"

    async def _publish_loop(self) -> None:
        cfg = self.config
        rate = cfg.rate * len(self.part) / cfg.clients  # this part's share
        if rate <= 0:
            return
        tick = min(0.05, 1.0 / rate)
        budget = 0.0
        last = self.clock()
        cursor = 0
        pad = "x" * cfg.payload
        while True:
            await asyncio.sleep(tick)
            now = self.clock()
            budget = min(budget + rate * (now - last), rate)  # no burst after a stall
            last = now
            while budget >= 1.0 and self._started:
                budget -= 1.0
                index = self._started[cursor % len(self._started)]
                cursor += 1
                await self._publish_one(index, pad)

    async def _publish_one(self, index: int, pad: str) -> None:
        client = self.clients[index]
        self._counters[index] += 1
        n = self._counters[index]
        ident = f"{client.name}-{n}"
        room = self.config.room(self.part[index])
        data: dict[str, Any] = {"c": client.name, "n": n, "t": time.time()}
        if pad:
            data["pad"] = pad
        self.accounting.published(client.name, room, ident)
        self._pending.add(ident)
        try:
            await client.publish(room, data, id=ident)
        except ClientError as exc:
            self.accounting.error(type(exc).__name__.lower())
            log.debug("%s: publish failed: %s", client.name, exc)

    async def _settle(self) -> None:
        cfg = self.config
        if self._abort.is_set() or cfg.settle <= 0:
            return
        deadline = self.clock() + cfg.settle
        while self.clock() < deadline and not self._abort.is_set():
            if self._settled():
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await self._abort.wait()

    def _settled(self) -> bool:
        """Nothing more to wait for: every publish acknowledged, every delivery made."""
        return self.accounting.unacknowledged == 0 and self.accounting.lost() == 0

    async def _stop_clients(self) -> None:
        async def stop_one(client: SwarmClient) -> None:
            try:
                async with asyncio.timeout(5):
                    await client.stop()
            except Exception as exc:  # a client that will not close must not block the rest
                log.debug("%s: stop failed: %r", client.name, exc)

        for start in range(0, len(self.clients), 200):
            batch = self.clients[start : start + 200]
            await asyncio.gather(*(stop_one(c) for c in batch))

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.stats_interval)
            self._emit_stats()

    async def _fleet_loop(self) -> None:
        if self.on_fleet is None:
            return
        while True:
            await asyncio.sleep(self.config.fleet_interval)
            self._emit_fleet()

    def _emit_fleet(self) -> None:
        if self.on_fleet is None:
            return
        batch = self.fleet.batch()
        if batch is not None:
            try:
                self.on_fleet(batch)
            except Exception:
                log.exception("swarm fleet callback failed")

    # ---- the window's controls -------------------------------------------------------------

    def set_pongs(self, share: float, policy: PongPolicy) -> int:
        """From now on `share` (0..1) of the clients answer the server's pings per `policy`,
        the others at once; returns how many run `policy`."""
        if not (math.isfinite(share) and 0 <= share <= 1):
            raise SwarmConfigError(f"the share must be 0 to 1, not {share}")
        self.config.pongs_share, self.config.pongs = share, policy
        chosen = 0
        for index, client in zip(self.part, self.clients, strict=True):
            wanted = self.config.pongs_for(index)
            chosen += pong_share(index, share)
            client.set_pongs(wanted)
            self.fleet.set_silent(client.name, not wanted.answers)
        return chosen

    def _share(self, share: float) -> list[ReconnectingClient]:
        """The clients among `share` (0..1), spread evenly as the pong policy's share is."""
        if not (math.isfinite(share) and 0 <= share <= 1):
            raise SwarmConfigError(f"the share must be 0 to 1, not {share}")
        return [client for index, client in zip(self.part, self.clients, strict=True)
                if pong_share(index, share)]

    async def ping(self, share: float, count: int = 1,
                   payload: bytes | None = None) -> tuple[int, int, list[float | None]]:
        """`share` of the clients each send a burst of `count` pings (with `payload`, else
        random) at once; (clients that pinged, clients offline, every round trip with None
        for a ping whose pong did not come within the clients' ping timeout)."""
        chosen = self._share(share)
        results = await asyncio.gather(*(c.send_ping(payload, count) for c in chosen),
                                       return_exceptions=True)
        rtts: list[float | None] = []
        offline = 0
        for result in results:
            if isinstance(result, ClientError):
                offline += 1  # offline, or reconnecting: no ping to send
            elif isinstance(result, BaseException):
                raise result
            else:
                rtts += result
        return len(chosen) - offline, offline, rtts

    async def pong(self, share: float, payload: bytes = b"") -> tuple[int, int]:
        """`share` of the clients each send one unsolicited pong; (sent, clients offline)."""
        chosen = self._share(share)
        results = await asyncio.gather(*(c.send_pong(payload) for c in chosen),
                                       return_exceptions=True)
        offline = sum(isinstance(r, ClientError) for r in results)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, ClientError):
                raise result
        return len(chosen) - offline, offline

    def control(self, command: dict[str, Any]) -> dict[str, Any]:
        """Run one command from the window: {"cmd": "pongs", "share": S, "pongs": MODE} or
        {"cmd": "frames", "clients": [...], "since": WALL, "until": WALL, "after": N};
        returns the reply (SwarmConfigError for a command that cannot be done)."""
        kind = command.get("cmd")
        if kind == "pongs":
            try:
                share = float(command.get("share", 0.0))
                policy = PongPolicy.parse(str(command.get("pongs", "off")))
            except (TypeError, ValueError) as exc:
                raise SwarmConfigError(f"pongs: {exc}") from None
            chosen = self.set_pongs(share, policy)
            return {"share": share, "pongs": policy.text(), "clients": chosen}
        if kind == "frames":
            clients = command.get("clients")
            if not isinstance(clients, list) or not all(isinstance(c, str) for c in clients):
                raise SwarmConfigError("frames: clients must be a list of client names")
            try:
                since = float(command.get("since", 0.0))
                until = float(command.get("until", math.inf))
                after = int(command.get("after", -1))
            except (TypeError, ValueError) as exc:
                raise SwarmConfigError(f"frames: {exc}") from None
            return self.fleet.frames(clients, since, until, after)
        raise SwarmConfigError(f"unknown command {kind!r} (pongs, frames)")

    def _snapshot(self) -> Stats:
        """The live figures of the interval since the previous snapshot."""
        self.accounting.compact(self.clock())
        return self.accounting.snapshot(self.clock())

    def _emit_stats(self) -> None:
        snapshot = self._snapshot()
        snapshot.update(self.fleet.figures(self.clients, time.monotonic()))
        snapshot["phase"] = self.phase
        if self.on_stats is not None:
            try:
                self.on_stats(snapshot)
            except Exception:
                log.exception("swarm stats callback failed")

    # ---- observing the clients ------------------------------------------------------------

    def _observer(self, name: str) -> Callable[[Event], None]:
        def observe(event: Event) -> None:
            if isinstance(event, FrameRecord):
                if event.direction is Direction.IN and event.opcode is Opcode.TEXT:
                    self._inbound(name, event.payload, event.wall)
            elif isinstance(event, Transition):
                self.accounting.transition(name, event.state.value, event.at)
            elif isinstance(event, ErrorEvent):
                if event.kind != "server":  # server error replies are counted by their code
                    self.accounting.error(event.kind)

        return observe

    def _inbound(self, name: str, payload: bytes, wall: float) -> None:
        try:
            env = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.accounting.error("bad_json_from_server")
            return
        if not isinstance(env, dict):
            return
        kind = env.get("type")
        acc = self.accounting
        if kind == "message":
            room, seq = env.get("room"), env.get("seq")
            if not isinstance(room, str) or not isinstance(seq, int):
                return
            data = env.get("data")
            latency = None
            if isinstance(data, dict) and isinstance(data.get("t"), int | float):
                latency = wall - float(data["t"])
            ident = env.get("id")
            acc.delivered_message(
                name, room, seq, ident if isinstance(ident, str) else None, latency,
                _epoch(env),
            )  # fmt: skip
            self.fleet.node(name, env.get("node"))
        elif kind == "ack":
            ident, seq = env.get("id"), env.get("seq")
            if isinstance(ident, str) and isinstance(seq, int):
                acc.acked(ident, seq, self.clock(), _epoch(env))
                self._pending.discard(ident)
        elif kind == "joined":
            room, seq = env.get("room"), env.get("seq")
            if isinstance(room, str) and isinstance(seq, int):
                acc.joined(name, room, seq, _epoch(env), env.get("reset") is True)
        elif kind == "error":
            code = env.get("code")
            room, seq = env.get("room"), env.get("seq")
            if code == "recovery_window_exceeded" and isinstance(room, str):
                acc.window_exceeded(name, room, seq if isinstance(seq, int) else None, _epoch(env))
            elif isinstance(code, str):
                acc.error(code)
            if code in RESEND_CODES and env.get("id") in self._pending:
                self.accounting.retried_publish()  # the client sends it again, same id
