"""Chaos: a seeded random schedule of overlapping faults against a real cluster, judged by an
independent client (tests/protoclient.py, written from docs/protocol.md).

Node kills, pauses, drains and restarts, broker kills and restarts and network faults on the
balancer overlap at random (and a node kill is deliberately thrown into most broker outages,
the mix that used to lose messages silently) while publishers and subscribers keep going.
Then the cluster is healed, every publish must be acknowledged, and the ledger checks that
every subscriber received every acknowledged message exactly once and in order, or was told
explicitly that it will not come.

On a broker cluster (`--broker-cluster 3`, issue 19) the broker faults are the cluster's own:
a shard's primary killed (its replica promoted) and restarted, a replica killed, a failover,
a room's slot moved to another shard, a shard cut off from the nodes and healed. A publish is
acknowledged only once a replica has it, so no acknowledged message may be lost and no room
may even be reset.

The seed is random and printed with the figures; replay a run with WSCONSOLE_CHAOS_SEED.
WSCONSOLE_CHAOS_FAULTS sets the length (50 per node flavour here; `make soak` runs 600 and
prints the table).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from tests.protoclient import Ledger, Peer, SioDialect, Verdict, WsDialect
from tests.support import pid_alive, until
from wsconsole.harness.cluster import Cluster, ClusterConfig, ClusterError, Limits

FAULTS = int(os.environ.get("WSCONSOLE_CHAOS_FAULTS", "50"))
SEED = int(os.environ.get("WSCONSOLE_CHAOS_SEED") or random.SystemRandom().randrange(1 << 31))
NODES = ("n1", "n2", "n3")
ROOMS = ("chaos-a", "chaos-b")
SUBSCRIBERS = 44
PUBLISHERS = 4  # each also subscribes; one publishing room each, round robin
RATE = 8.0  # publishes per second per publisher
FAULT_RATE = 1.3  # new faults per second, on average


@dataclass(frozen=True)
class Fault:
    """One planned fault: what, on which target, when (s after start) and for how long."""

    at: float
    kind: str
    target: str
    hold: float
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def lock(self) -> str:
        """Faults with the same lock key never run at the same time."""
        if self.kind.startswith("net_"):
            return f"{self.kind}:{self.target}"
        if self.kind in SHARD:
            return "shards"  # one operation on the cluster's servers at a time
        return self.target


PROCESS = {"node_kill": 4, "node_pause": 2, "node_drain": 1, "node_restart": 1}
# broker_kill: SIGKILL, then a restart from its append-only file (state kept);
# broker_fresh: SIGKILL, then a restart without its state (an empty replica): a new epoch;
# broker_flush: FLUSHALL on the running broker (an external Redis wiped under the nodes).
BROKER = {"broker_kill": 3, "broker_fresh": 2, "broker_restart": 1, "broker_flush": 1}
OUTAGES = ("broker_kill", "broker_fresh")
# On a broker cluster, each aimed at the shard serving one of the rooms (target "room:NAME").
SHARD = {"shard_kill": 3, "shard_replica": 1, "shard_failover": 1, "shard_move": 1,
         "shard_partition": 2}
SHARD_HELD = ("shard_kill", "shard_replica", "shard_partition")
NETWORK = {
    "net_latency": 2, "net_reset": 2, "net_blackhole": 1, "net_half_open": 1,
    "net_slice": 1, "net_bandwidth": 1,
}  # fmt: skip


def plan(seed: int, count: int, kinds: dict[str, int] | None = None) -> list[Fault]:
    """The fault schedule for a seed: the same seed always gives the same list."""
    rng = random.Random(seed)
    kinds = kinds or {**PROCESS, **BROKER, **NETWORK}
    names, weights = list(kinds), list(kinds.values())
    busy: dict[str, float] = {}  # target -> time its current fault ends
    faults: list[Fault] = []
    t = 1.0
    while len(faults) < count:
        t += rng.expovariate(FAULT_RATE)
        kind = rng.choices(names, weights)[0]
        if kind in SHARD:
            room = rng.choice(ROOMS)
            hold = rng.uniform(0.5, 3.0) if kind in SHARD_HELD else 0.0
            if busy.get(room, 0) > t:
                continue
            busy[room] = t + hold + 3.0  # a failover takes about 2 s
            other = rng.randrange(1 << 16)  # picks the shard a slot moves to
            faults.append(Fault(round(t, 3), kind, f"room:{room}", round(hold, 3),
                                (("pick", other),)))
        elif kind in BROKER:
            hold = rng.uniform(0.5, 3.0) if kind in OUTAGES else 0.0
            if busy.get("broker", 0) > t:
                continue
            busy["broker"] = t + hold + 1.0
            faults.append(Fault(round(t, 3), kind, "broker", round(hold, 3)))
            free = [n for n in NODES if busy.get(n, 0) < t]
            if hold and free and rng.random() < 0.7:  # the overlap the issue is about
                node, at = rng.choice(free), t + rng.uniform(0.0, hold)
                kill_hold = rng.uniform(0.3, 2.0)
                busy[node] = at + kill_hold + 2.0
                faults.append(Fault(round(at, 3), "node_kill", node, round(kill_hold, 3)))
        elif kind in PROCESS:
            free = [n for n in NODES if busy.get(n, 0) < t]
            if len(free) < 2:  # keep one node out of process faults
                continue
            node = rng.choice(free)
            hold = 0.0 if kind == "node_restart" else rng.uniform(0.5, 3.0)
            busy[node] = t + hold + (5.0 if kind == "node_drain" else 2.0)
            faults.append(Fault(round(t, 3), kind, node, round(hold, 3)))
        else:
            target = rng.choice([*NODES, "all"])
            params: dict[str, Any] = {}
            if kind == "net_latency":
                params = {"ms": rng.choice([20, 80, 200]), "jitter_ms": rng.choice([0, 30])}
            elif kind == "net_half_open":
                params = {"direction": rng.choice(["up", "down"])}
            elif kind == "net_slice":
                params = {"size": rng.choice([1, 7, 64]), "delay_ms": rng.choice([0, 2])}
            elif kind == "net_bandwidth":
                params = {"bytes_per_s": rng.choice([2_000, 20_000])}
            hold = 0.0 if kind == "net_reset" else rng.uniform(0.5, 3.0)
            faults.append(Fault(round(t, 3), kind, target, round(hold, 3), tuple(params.items())))
    faults.sort(key=lambda f: f.at)
    return faults[:count]


@dataclass
class Run:
    """What happened while the schedule ran."""

    done: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    spans: list[tuple[str, str, float, float]] = field(default_factory=list)

    def overlaps(self) -> tuple[int, int]:
        """(faults that overlapped another fault, node kills inside a broker outage)."""
        overlapping = 0
        for i, (_, _, start, end) in enumerate(self.spans):
            if any(s < end and start < e for j, (_, _, s, e) in enumerate(self.spans) if j != i):
                overlapping += 1
        outages = [(s, e) for kind, _, s, e in self.spans if kind in OUTAGES]
        inside = sum(
            1
            for kind, _, s, e in self.spans
            if kind == "node_kill" and any(bs < e and s < be for bs, be in outages)
        )
        return overlapping, inside


class Chaos:
    """Runs a schedule against a cluster: each fault applied, held, then undone."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.run = Run()
        self._locks: dict[str, asyncio.Lock] = {}

    async def play(self, faults: list[Fault]) -> None:
        """Start each fault at its time; return when every fault is undone."""
        began = time.monotonic()
        tasks = []
        for fault in faults:
            delay = began + fault.at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self._one(fault), name=f"chaos-{fault.kind}"))
        await asyncio.gather(*tasks)

    async def _one(self, fault: Fault) -> None:
        async with self._lock(fault.lock):
            apply, undo = self._actions(fault)
            start = time.monotonic()
            try:
                await self._on_target(fault, apply)
                await asyncio.sleep(fault.hold)
                if undo is not None:
                    await self._on_target(fault, undo)
            except ClusterError as exc:
                self.run.failed[f"{fault.kind}: {exc}"] += 1
                return
            self.run.done[fault.kind] += 1
            self.run.spans.append((fault.kind, fault.target, start, time.monotonic()))

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _on_target(self, fault: Fault, action: Callable[[], Awaitable[Any]]) -> None:
        """Run an action; a network fault on a node waits while that node is being replaced
        (the balancer forgets a backend's faults while it is out)."""
        if fault.kind.startswith("net_") and fault.target in NODES:
            async with self._lock(fault.target):
                await action()
        else:
            await action()

    def _actions(
        self, fault: Fault
    ) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]] | None]:
        c, node, params = self.cluster, fault.target, dict(fault.params)
        if fault.kind == "node_kill":
            return (lambda: c.kill(node)), (lambda: c.restart(node))
        if fault.kind == "node_pause":
            return (lambda: c.pause(node)), (lambda: c.resume(node))
        if fault.kind == "node_drain":
            return (lambda: c.drain(node)), (lambda: c.restart(node))
        if fault.kind == "node_restart":
            return (lambda: c.restart(node)), None
        if fault.kind == "broker_kill":
            return c.broker_kill, c.broker_restart
        if fault.kind == "broker_fresh":
            return c.broker_kill, (lambda: c.broker_restart(fresh=True))
        if fault.kind == "broker_restart":
            return c.broker_restart, None
        if fault.kind == "broker_flush":
            return (lambda: asyncio.to_thread(flush, c)), None
        if fault.kind in SHARD:
            return self._shard_actions(fault)
        kind = fault.kind.removeprefix("net_")
        if kind == "reset":
            return (lambda: c.net_fault(node, kind)), None
        return (lambda: c.net_fault(node, kind, **params)), (lambda: c.net_clear(node, kind))

    def _shard_actions(
        self, fault: Fault
    ) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]] | None]:
        """A cluster fault on the shard serving the fault's room, found when it starts."""
        c, room, pick = self.cluster, fault.target.removeprefix("room:"), dict(fault.params)["pick"]
        chosen: dict[str, str] = {}

        slot = key_slot(f"ws:{{{room}}}:seq".encode())

        def shard() -> dict[str, Any]:
            return next(s for s in c.shards if any(lo <= slot <= hi for lo, hi in s["slots"]))

        async def kill_primary() -> None:
            chosen["server"] = shard()["primary"] or shard()["failed"][0]
            await c.shard("kill", chosen["server"])

        async def kill_replica() -> None:
            replicas = shard()["replicas"]
            if not replicas:
                raise ClusterError(f"{shard()['name']} has no replica to kill")
            chosen["server"] = replicas[pick % len(replicas)]
            await c.shard("kill", chosen["server"])

        async def move() -> None:
            others = [s["name"] for s in c.shards if s["name"] != shard()["name"]]
            await c.shard("move", others[pick % len(others)], slot)

        async def partition() -> None:
            chosen["shard"] = shard()["name"]
            await c.shard("partition", chosen["shard"])

        restart = lambda: c.shard("restart", chosen["server"])  # noqa: E731
        if fault.kind == "shard_kill":
            return kill_primary, restart
        if fault.kind == "shard_replica":
            return kill_replica, restart
        if fault.kind == "shard_failover":
            return (lambda: c.shard("failover", shard()["name"])), None
        if fault.kind == "shard_move":
            return move, None
        return partition, (lambda: c.shard("heal", chosen["shard"]))

    async def heal(self) -> None:
        """Every node running and unpaused, the broker up, no network fault left."""
        c = self.cluster
        for shard in c.shards:
            if shard["partitioned"]:
                await c.shard("heal", shard["name"])
            for server, pid in shard["pids"].items():
                if pid is None:
                    await c.shard("restart", server)
        for node in NODES:
            await c.net_clear(node)
        await c.net_clear("all")
        if c.broker.state != "up":
            await c.broker_restart()
        for node in NODES:
            state = c.nodes[node].state.value
            if state == "paused":
                await c.resume(node)
            elif state != "running":
                await c.restart(node)


def flush(cluster: Cluster) -> None:
    """The running broker loses every key (FLUSHALL), as an external one wiped would."""
    client = redis.Redis.from_url(cluster.broker.url or "", socket_timeout=5)
    try:
        client.flushall()
    except (redis.RedisError, OSError) as exc:  # down at that moment: nothing to wipe
        raise ClusterError(f"broker: {exc}") from None
    finally:
        client.close()


def table(flavour: str, faults: list[Fault], run: Run, verdict: Verdict, peers: list[Peer],
          seconds: float) -> str:  # fmt: skip
    """The figures of one run, one line each."""
    overlapping, inside = run.overlaps()
    publishes = sum(p.stats.published for p in peers)
    lines = [
        f"chaos seed={SEED} flavour={flavour} time={seconds:.1f}s",
        f"  faults planned={len(faults)} done={sum(run.done.values())} "
        f"failed={sum(run.failed.values())} overlapping={overlapping} "
        f"node-kills-in-broker-outage={inside}",
        "  by kind: " + ", ".join(f"{k}={v}" for k, v in sorted(run.done.items())),
        f"  publishes={publishes} acknowledged={verdict.acknowledged} "
        f"subscriptions={verdict.subscriptions} deliveries-checked={verdict.checked} "
        f"delivered={verdict.delivered}",
        f"  lost={len(verdict.lost)} duplicates={len(verdict.duplicates)} "
        f"out-of-order={len(verdict.out_of_order)} splices={len(verdict.splices)} "
        f"mismatches={len(verdict.mismatches)} conflicts={len(verdict.conflicts)}",
        f"  notices: resets={verdict.resets} windows={verdict.windows} "
        f"covered={verdict.covered} redelivered-after-reset={verdict.redelivered}",
        f"  reconnects={sum(p.stats.connects for p in peers) - len(peers)} "
        f"re-sends={sum(p.stats.resent for p in peers)}",
    ]
    if run.failed:
        lines.append("  fault errors: " + "; ".join(f"{k} x{v}" for k, v in run.failed.items()))
    return "\n".join(lines)


async def where_are(cluster: Cluster, peers: list[Peer], names: set[str]) -> str:
    """For a failure report: where subscribers that lost messages stand, as the nodes see it."""
    if not names:
        return ""
    lines = []
    views: dict[str, list[dict[str, Any]]] = {}
    for node in NODES:
        with contextlib.suppress(ClusterError):
            views[node] = await cluster.connections(node)
    now = time.monotonic()
    for peer in sorted((p for p in peers if p.name in names), key=lambda p: p.name)[:8]:
        seen = [(n, c["rooms"]) for n, cs in views.items() for c in cs if c["user"] == peer.name]
        last = peer.last_frame
        ago = f"{now - last[0]:.1f}s ago from {last[1]}" if last else "never"
        lines.append(f"  {peer.name}: connected={peer.connected} last message {ago}; "
                     f"nodes see it: {seen}")  # fmt: skip
    return "\n".join(lines)


DIALECTS = {"ws": WsDialect, "socketio": SioDialect}


def peers_for(cluster: Cluster, ledger: Ledger) -> list[Peer]:
    """Publishers (which also subscribe) and subscribers, each from its own 127.x address."""
    peers = []
    for i in range(PUBLISHERS + SUBSCRIBERS):
        name = f"p{i}" if i < PUBLISHERS else f"s{i}"
        peers.append(
            Peer(
                name,
                cluster.url,
                cluster.token(name),
                list(ROOMS),
                ledger,
                dialect=DIALECTS[cluster.config.flavour],
                local_addr=f"127.0.{1 + i // 200}.{2 + i % 200}",
                publish_to=ROOMS[i % len(ROOMS)] if i < PUBLISHERS else None,
                rate=RATE if i < PUBLISHERS else 0.0,
                seed=SEED,
            )
        )
    return peers


@pytest.mark.slow
@pytest.mark.timeout(180 + FAULTS * 2)
@pytest.mark.parametrize(("flavour", "shards"), [("ws", 0), ("socketio", 0), ("ws", 3)],
                         ids=["ws", "socketio", "ws-cluster"])
async def test_no_silent_loss_under_overlapping_faults(flavour: str, shards: int,
                                                       tmp_path: Any) -> None:
    faults = plan(SEED, FAULTS, {**PROCESS, **SHARD, **NETWORK} if shards else None)
    config = ClusterConfig.demo(
        nodes=len(NODES), health_interval=0.25, log_dir=str(tmp_path), flavour=flavour,
        limits=Limits(drain_deadline=3.0), broker_cluster=shards,
    )  # fmt: skip
    ledger = Ledger()
    began = time.monotonic()
    async with Cluster(config) as cluster:
        pids = set(cluster.pids())
        chaos = Chaos(cluster)
        peers = peers_for(cluster, ledger)
        try:
            for peer in peers:
                peer.start()
            await until(lambda: all(p.connected for p in peers), "every peer connected", 30)
            await chaos.play(faults)
            await chaos.heal()
            for peer in peers:
                peer.stop_publishing()
            await until(
                lambda: not any(p.outbox for p in peers), "every publish acknowledged", 60,
                detail=lambda: (
                    [(p.name, len(p.outbox), p.connected, dict(p.stats.errors)) for p in peers
                     if p.outbox], dict(ledger.unexpected_errors), cluster.status(),
                ),
            )  # fmt: skip
            with contextlib.suppress(AssertionError):
                await until(lambda: not ledger.judge().lost, "deliveries to settle", 30, interval=1)
            verdict = ledger.judge()
            stuck = await where_are(cluster, peers, {who for who, _, _ in verdict.lost})
        finally:
            for peer in peers:
                await peer.close()
            pids |= set(cluster.pids())
    label = f"{flavour}+cluster{shards}" if shards else flavour
    report = table(label, faults, chaos.run, verdict, peers, time.monotonic() - began)
    print("\n" + report)
    assert not [pid for pid in pids if pid_alive(pid)], report
    assert verdict.acknowledged > 0 and verdict.checked > 0, report
    if verdict.lost:
        report += "\n" + ledger.explain(*verdict.lost[0]) + "\n" + stuck
    assert verdict.ok, f"seed {SEED}: {verdict.problems()}\n{report}"
    wipes = chaos.run.done["broker_fresh"] + chaos.run.done["broker_flush"]
    for room in ROOMS:  # a reset only where the broker really lost the room's state
        assert ledger.epochs(room) <= 1 + wipes, f"seed {SEED}: {room} reset without cause"
    assert not ledger.unexpected_errors, f"{ledger.unexpected_errors}\n{report}"
