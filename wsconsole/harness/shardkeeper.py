"""The supervisor's own Valkey Cluster: its servers, the relay in front of them, each shard's state.

`wsconsole harness --broker-cluster N` runs N shards of a primary and one replica
(valkeycluster.py) behind one relay process (relay.py, started like the balancer, a member
of the control channel), so the nodes reach every server through a port that can be cut.
Blocking work (forming the cluster, CLUSTER commands) runs in a worker thread, so the
window's loop never waits on it.

Every `WATCH_INTERVAL` the keeper reads the topology (who is primary, replicas, slots, state)
and each primary's counters; it emits `{"event": "shards", "shards": [...]}` whenever the
picture changes (a failover, a slot moved, a node down, a partition) and hands one
`ShardSnapshot` per shard to the stats pipeline (its publishes/s and commands/s are plotted).

Chaos on the cluster, each reported as an event `{"event": "shard", "action", ...}`:
kill / restart / pause / resume one server by name (s1a...), failover a shard (its replica
takes over), move a slot to another shard (live migration), partition a shard (the relay
holds every byte between the nodes and the shard's servers, both ways, until `heal`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from wsconsole.harness.clusterconfig import ClusterConfig, ClusterError
from wsconsole.harness.events import EventHub
from wsconsole.harness.members import Launcher, Member
from wsconsole.harness.procs import child_argv
from wsconsole.harness.router import ControlRouter
from wsconsole.harness.stats import ShardSnapshot
from wsconsole.harness.valkeycluster import LocalValkeyCluster, ShardState, ValkeyClusterError

log = logging.getLogger(__name__)

RELAY = "relay"
WATCH_INTERVAL = 1.0


class ShardKeeper:
    """Owns the local cluster and its relay; see the module docstring."""

    def __init__(
        self,
        config: ClusterConfig,
        hub: EventHub,
        launcher: Launcher,
        router: ControlRouter,
        on_snapshot: Callable[[ShardSnapshot], None],
    ) -> None:
        self.config = config
        self.hub = hub
        self.launcher = launcher
        self.router = router
        self.on_snapshot = on_snapshot
        self.shards: list[ShardState] = []
        self.partitioned: set[str] = set()
        self._cluster: LocalValkeyCluster | None = None
        self._relay: Member | None = None
        self._busy = asyncio.Lock()  # one operation on the servers at a time

    # ------------------------------------------------------------------ views

    def as_dicts(self) -> list[dict[str, Any]]:
        """Every shard, JSON-ready, with its servers' PIDs and whether it is cut off."""
        cluster = self._cluster
        out = []
        for shard in self.shards:
            fields = shard.as_dict()
            fields["partitioned"] = shard.name in self.partitioned
            if cluster is not None:
                fields["pids"] = {
                    name: node.pid for name, node in cluster.nodes.items()
                    if node.shard == shard.name
                }
            out.append(fields)
        return out

    def pids(self) -> list[int]:
        """Every server process running (the relay is a member: the launcher knows it)."""
        return self._cluster.pids() if self._cluster is not None else []

    def _cluster_or_fail(self) -> LocalValkeyCluster:
        if self._cluster is None:
            raise ClusterError("the broker is not a cluster of ours (--broker-cluster N)")
        return self._cluster

    # ------------------------------------------------------------------ start / stop

    async def start(self) -> str:
        """Start the servers, the relay in front of them, form the cluster; returns the URL
        the nodes use (the relay's ports as seeds)."""
        cfg = self.config
        try:
            cluster = LocalValkeyCluster(
                cfg.broker_cluster, 1, host=cfg.broker_host,
                persist=not cfg.broker_ephemeral,
            )  # fmt: skip
        except ValkeyClusterError as exc:
            raise ClusterError(f"broker: {exc}") from None
        self._cluster = cluster
        routes = [arg for name, node in cluster.nodes.items()
                  for arg in ("--route", f"{name}={cfg.broker_host}:{node.port}")]
        argv = child_argv("relay", "--host", cfg.broker_host, "--control", self.router.address,
                          *routes)
        self._relay, hello = await self.launcher.launch(RELAY, argv, self._relay_exited)
        await self.router.wait_connected(RELAY, cfg.ready_timeout)
        cluster.announce_through({str(k): int(v) for k, v in hello["ports"].items()})
        try:
            url = await asyncio.to_thread(cluster.start)
        except ValkeyClusterError as exc:
            raise ClusterError(f"broker: {exc}") from None
        self.shards = await asyncio.to_thread(cluster.topology)
        self._emit_shards()
        return url

    def _relay_exited(self, member: Member) -> None:
        if not member.expected_exit:
            log.warning("the broker relay exited (code %s)", member.proc.returncode)
            self.hub.emit({"event": "shard", "action": "relay_exited",
                           "exit_code": member.proc.returncode})

    async def stop(self) -> None:
        """Stop the relay and every server."""
        if self._relay is not None and self._relay.alive:
            self._relay.expected_exit = True
            await self._relay.proc.stop()
        if self._cluster is not None:
            await asyncio.to_thread(self._cluster.stop)

    # ------------------------------------------------------------------ watching

    async def watch(self) -> None:
        """Forever: the topology and each shard's counters, every WATCH_INTERVAL."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            await self.poll()

    async def poll(self) -> None:
        """Read the topology and counters once; emit what changed."""
        cluster = self._cluster
        if cluster is None:
            return
        try:
            shards, counters = await asyncio.to_thread(self._read, cluster)
        except ValkeyClusterError as exc:
            log.debug("cluster topology unreadable: %s", exc)
            return
        if shards != self.shards:
            self.shards = shards
            self._emit_shards()
        now = time.time()
        for shard in shards:
            commands, publishes = counters.get(shard.name, (0, 0))
            self.on_snapshot(ShardSnapshot(
                shard=shard.name, t=now, commands=commands, publishes=publishes,
                primary=shard.primary or "", state=self._state(shard),
            ))  # fmt: skip

    def _state(self, shard: ShardState) -> str:
        return "partitioned" if shard.name in self.partitioned else shard.state

    @staticmethod
    def _read(cluster: LocalValkeyCluster) -> tuple[list[ShardState], dict[str, tuple[int, int]]]:
        shards = cluster.topology()
        counters: dict[str, tuple[int, int]] = {}
        for shard in shards:
            if shard.primary is not None:
                with contextlib.suppress(ValkeyClusterError):
                    counters[shard.name] = cluster.counters(shard.primary)
        return shards, counters

    def _emit_shards(self) -> None:
        self.hub.emit({"event": "shards", "shards": self.as_dicts()})

    def _report(self, action: str, **fields: Any) -> None:
        self.hub.emit({"event": "shard", "action": action, **fields})

    # ------------------------------------------------------------------ chaos

    async def _run(self, action: str, call: Callable[[], Any], **fields: Any) -> Any:
        cluster = self._cluster_or_fail()
        async with self._busy:
            try:
                result = await asyncio.to_thread(call)
            except ValkeyClusterError as exc:
                raise ClusterError(str(exc)) from None
        self._report(action, **fields)
        with contextlib.suppress(ValkeyClusterError):
            self.shards = await asyncio.to_thread(cluster.topology)
        self._emit_shards()
        return result

    async def kill(self, name: str) -> None:
        """SIGKILL one server (a primary's replica takes over after the node timeout)."""
        cluster = self._cluster_or_fail()
        await self._run("kill", lambda: cluster.kill(name), node=name)

    async def restart(self, name: str) -> None:
        """Start a server again; a former primary comes back as its successor's replica.
        A slot move it was part of and could not finish is finished now."""
        cluster = self._cluster_or_fail()

        def restart_and_settle() -> None:
            cluster.restart(name)
            cluster.settle_moves()

        await self._run("restart", restart_and_settle, node=name)

    async def pause(self, name: str) -> None:
        """SIGSTOP one server (hung: its replica takes over if it is a primary)."""
        cluster = self._cluster_or_fail()
        await self._run("pause", lambda: cluster.pause(name), node=name)

    async def resume(self, name: str) -> None:
        """SIGCONT a paused server."""
        cluster = self._cluster_or_fail()
        await self._run("resume", lambda: cluster.resume(name), node=name)

    async def failover(self, shard: str) -> str:
        """A replica of `shard` takes over; returns the new primary."""
        cluster = self._cluster_or_fail()
        return str(await self._run("failover", lambda: cluster.failover(shard), shard=shard))

    async def move_slot(self, slot: int, shard: str) -> str:
        """Migrate one hash slot to `shard`; returns the shard it came from."""
        cluster = self._cluster_or_fail()
        source = await self._run("move_slot", lambda: cluster.move_slot(slot, shard),
                                 slot=slot, shard=shard)
        return str(source)

    async def partition(self, shard: str) -> None:
        """Cut the network between the nodes and `shard`'s servers (bytes held both ways)."""
        await self._relay_fault(shard, True)

    async def heal(self, shard: str) -> None:
        """End a partition: the held bytes flow again, in order."""
        await self._relay_fault(shard, False)

    async def _relay_fault(self, shard: str, cut: bool) -> None:
        cluster = self._cluster_or_fail()
        names = [name for name, node in cluster.nodes.items() if node.shard == shard]
        if not names:
            raise ClusterError(f"unknown shard {shard!r} (known: "
                               f"{', '.join(sorted({n.shard for n in cluster.nodes.values()}))})")
        for name in names:
            if cut:
                await self.router.request(RELAY, "fault", target=name, kind="blackhole")
            else:
                await self.router.request(RELAY, "fault_clear", target=name, kind="blackhole")
        if cut:
            self.partitioned.add(shard)
        else:
            self.partitioned.discard(shard)
        self._report("partition" if cut else "heal", shard=shard)
        self._emit_shards()
