"""The supervisor of the local harness: broker, N nodes and the balancer as OS processes.

`Cluster` is the one object the GUI, the scenarios, the self-test and `wsconsole harness`
drive. It is a facade over pieces with one job each:

- clusterconfig.py: the settings, defaults, node states and `ClusterError`;
- members.py: launching a node or balancer process and waiting for its hello;
- brokerkeeper.py: the Redis-protocol broker (start, kill, restart, watch, stop), and with
  `broker_cluster` shardkeeper.py: our own Valkey Cluster (each server, failover, slot moves,
  partitions);
- nodes.py: the node registry and every node operation (kill, pause, drain, restart, add...),
  for the harness's own nodes or a stack of the user's (stacknodes.py, with their output
  in nodelog.py and their /metrics in scrape.py);
- balancerkeeper.py: the balancer process, its backends, sticky mode and network faults;
- router.py: the control channel (commands out; stats and events in);
- events.py: the subscribers every piece reports to; stats.py: the merged samples.

Asyncio all the way down (the GUI drives it from a qasync loop, so nothing here blocks the
loop: children start through harness/procs.py, the broker's blocking calls run in a worker
thread, every wait is awaited).

Start order: the broker, then the nodes (in parallel) and the balancer in front of them. A child
is ready when it has printed its `listening` line and said hello on the control channel; the
cluster is ready when the balancer also reports every backend healthy, so a client that
connects to `url` right after `start()` returns is served. Every child is started by
harness/procs.py: in its own process group, so a Ctrl-C at the terminal reaches only the
supervisor, which then stops its children in order; dying with the supervisor (PDEATHSIG on
Linux, an `atexit` net everywhere).

Events (dicts handed to `subscribe` callbacks, the same shapes the CLI prints with --json):
- {"event": "node", "id", "state", "pid", "port", ...} on every node state change; an exit
  adds "exit_code" and "expected" (false when nobody asked the node to go: state "failed");
- {"event": "broker", "state": "up"|"down", "url", "pid", ...};
- {"event": "shards", "shards": [...]} when a cluster broker's topology changes, and
  {"event": "shard", "action", ...} for each operation on it;
- {"event": "balancer", "state", "port", "pid", ...};
- {"event": "node_event", "id", "kind", ...}: what a node pushes (broker_down, draining, ...);
- {"event": "cluster", "state": "ready"|"stopped", ...};
- {"event": "stats", "sample": ClusterSample}: a merged sample (harness/stats.py), made when
  a node or the balancer pushes at least `stats_interval` after the previous one. A user's
  node pushes nothing: its figures are the balancer's count of its traffic (connections,
  messages and bytes both ways, parsed from the frames on the wire) plus its scraped
  /metrics series, merged with each balancer push.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wsconsole.core.tasks import Tasks
from wsconsole.harness import auth
from wsconsole.harness.balancerkeeper import BalancerInfo, BalancerKeeper
from wsconsole.harness.brokerkeeper import BrokerInfo, BrokerKeeper
from wsconsole.harness.clusterconfig import (
    BALANCER,
    DEMO_BACKOFF_CAP,
    DEMO_BACKOFF_INITIAL,
    DEMO_PING_INTERVAL,
    DEMO_PING_TIMEOUT,
    FLAVOURS,
    LOOPBACK,
    PING_INTERVAL,
    PING_TIMEOUT,
    REDIS_SCHEMES,
    STICKY_MODES,
    ClusterConfig,
    ClusterError,
    Limits,
    NodeState,
)
from wsconsole.harness.events import Event, EventHub, Subscriber
from wsconsole.harness.members import Launcher
from wsconsole.harness.nodelog import LogLine
from wsconsole.harness.nodes import NodeInfo, NodeKeeper, NodeRunner
from wsconsole.harness.router import ControlRouter
from wsconsole.harness.scrape import MetricsScraper
from wsconsole.harness.shardkeeper import ShardKeeper
from wsconsole.harness.stacknodes import StackRunner
from wsconsole.harness.stats import (
    BalancerFigures,
    ClusterSample,
    NodeSnapshot,
    ShardSnapshot,
    StatsMerger,
)

log = logging.getLogger(__name__)


class Cluster:
    """Starts, breaks and stops the local harness; see the module docstring."""

    def __init__(self, config: ClusterConfig | None = None) -> None:
        self.config = config or ClusterConfig()
        self.config.validate()
        self.ready_seconds: float | None = None
        self._merger = StatsMerger(self.config.stats_interval)
        self._hub = EventHub()
        self._tasks = Tasks("cluster")
        self._router = ControlRouter(self._hub, self._on_stats)
        self._launcher = Launcher(self.config, self._router.key, self._tasks)
        self._shards = (
            ShardKeeper(self.config, self._hub, self._launcher, self._router, self._shard_pushed)
            if self.config.broker_cluster else None
        )
        self._broker = BrokerKeeper(self.config, self._hub, self._shards)
        self._balancer = BalancerKeeper(
            self.config, self._hub, self._launcher, self._router, self._balancer_figures
        )
        stack = self.config.stack
        self._stack_runner: StackRunner | None = None
        self._scraper: MetricsScraper | None = None
        runner: NodeRunner | None = None
        if stack is not None:
            runner = self._stack_runner = StackRunner(
                stack, self._launcher, lambda: self._broker.info.url
            )
            if stack.metrics is not None:
                self._scraper = MetricsScraper(stack.metrics)
        self._nodes = NodeKeeper(
            self.config, self._hub, self._launcher, self._router, self._broker.info,
            self._balancer, self._node_gone, runner,
        )  # fmt: skip
        self._started = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self._loops: list[asyncio.Task[Any]] = []

    # ---------------------------------------------------------------- what the views show

    @property
    def nodes(self) -> dict[str, NodeInfo]:
        """Every node by id, in the order they were added."""
        return self._nodes.nodes

    @property
    def broker(self) -> BrokerInfo:
        """The broker's URL, PID and state."""
        return self._broker.info

    @property
    def balancer(self) -> BalancerInfo:
        """The balancer's port, PID, state and sticky mode."""
        return self._balancer.info

    @property
    def url(self) -> str:
        """ws://127.0.0.1:PORT of the balancer (wss:// with TLS): the one address clients use."""
        if self.balancer.port is None:
            raise ClusterError("the cluster is not started")
        return f"{'wss' if self.config.tls else 'ws'}://{LOOPBACK}:{self.balancer.port}"

    @property
    def ca_file(self) -> Path | None:
        """With TLS: the local CA's certificate, the one to trust (browsers, other tools)."""
        ca = self._launcher.ca
        return ca.cert_path if ca is not None else None

    @property
    def app_url(self) -> str:
        """Where a client of the nodes connects through the balancer: `url` for ours; for a
        stack, its WebSocket path (ws://), or http:// for Socket.IO and SSE."""
        stack = self.config.stack
        if stack is None:
            return self.url
        if stack.protocol.kind == "websocket":
            return self.url + stack.protocol.path
        base = "http" + self.url.removeprefix("ws")  # ws:// -> http://, wss:// -> https://
        return base + (stack.protocol.path if stack.protocol.kind == "sse" else "")

    def node_log(self, node_id: str, count: int | None = None) -> list[LogLine]:
        """The last `count` lines node `node_id` printed (all kept with None), time-stamped:
        a stack node's stdout and stderr; a harness node's log file."""
        self._nodes.node(node_id)
        if self._stack_runner is not None:
            return self._stack_runner.log(node_id).tail(count)
        if self.log_dir is None:
            return []
        path = self.log_dir / f"{node_id}.log"
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        stamp = path.stat().st_mtime
        lines = text if count is None else text[-count:]
        first = len(text) - len(lines)
        return [LogLine(stamp, "err", line, first + i) for i, line in enumerate(lines)]

    @property
    def secret(self) -> str:
        """The per-cluster JWT secret the nodes verify tokens with."""
        return self.config.secret

    @property
    def log_dir(self) -> Path | None:
        """Where the children's stderr logs are written."""
        return self._launcher.log_dir

    @property
    def latest(self) -> ClusterSample:
        """The latest merged sample (an empty one before the first)."""
        return self._merger.latest

    @property
    def shards(self) -> list[dict[str, Any]]:
        """A cluster broker's shards (primary, replicas, slots, state); [] otherwise."""
        return self._shards.as_dicts() if self._shards is not None else []

    def pids(self) -> list[int]:
        """Every live child PID: broker (when we own it, every server of a cluster of ours),
        nodes, balancer (and a cluster's relay)."""
        found = [member.pid for member in self._launcher.alive()]
        if self._broker.owned_pid is not None:
            found.append(self._broker.owned_pid)
        if self._shards is not None:
            found += self._shards.pids()
        return found

    def token(
        self, user: str, rooms: tuple[str, ...] | list[str] = ("*",), ttl: float = 3600.0
    ) -> str:
        """A JWT the nodes accept for `user`, allowed into `rooms` (fnmatch patterns)."""
        if not user:
            raise ClusterError("a token needs a user name")
        return auth.issue_token(self.config.secret, user, tuple(rooms), ttl)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(event)` for every event; returns the function that unsubscribes."""
        return self._hub.subscribe(callback)

    def status(self) -> dict[str, Any]:
        """A JSON-ready picture of the whole cluster."""
        status = {
            "url": self.url if self.balancer.port else None,
            "nodes": [info.as_dict() for info in self.nodes.values()],
            "broker": self.broker.as_dict(),
            "shards": self.shards,
            "balancer": self.balancer.as_dict(),
        }
        if self.config.stack is not None:
            status["stack"] = self.config.stack.summary()
            status["app_url"] = self.app_url if self.balancer.port else None
        return status

    # ---------------------------------------------------------------- start / stop

    async def __aenter__(self) -> Cluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start broker, nodes and balancer; returns when a client can connect to `url`."""
        if self._started:
            raise ClusterError("the cluster was already started")
        self._started = True
        began = time.monotonic()
        self._launcher.open_log_dir()
        try:
            self._launcher.open_tls()
            await self._router.start()
            await self._broker.start()
            ids = [self._nodes.register() for _ in range(self.config.nodes)]
            # The nodes and the balancer boot in parallel (Python start-up dominates); the
            # balancer starts empty and learns each node's port through backend_add.
            results = await asyncio.gather(
                self._balancer.start({}),
                *(self._nodes.start(node_id) for node_id in ids),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            await self._balancer.add_backends({i: self._nodes.members[i].port for i in ids},
                                              **self._nodes.runner.health())
        except BaseException:
            await self.stop()
            raise
        self.ready_seconds = time.monotonic() - began
        self._loops.append(self._tasks.spawn(self._broker.watch(), "broker-watch"))
        if self._scraper is not None:
            self._loops.append(self._tasks.spawn(self._scraper.run(self._nodes.ports), "scrape"))
        self._emit({"event": "cluster", "state": "ready", "ready_s": round(self.ready_seconds, 3)})

    async def stop(self) -> None:
        """Drain the nodes, then stop the balancer and the broker; idempotent."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self._launcher.stopping = True
        try:
            for task in self._loops:
                task.cancel()
            nodes = [m for m in self._launcher.alive() if m.name != BALANCER]
            await asyncio.gather(*(self._nodes.stop_member(member) for member in nodes))
            await self._balancer.stop()
            await self._broker.stop()
            await self._router.close()
            await self._tasks.cancel_all()
            self._launcher.close()
            if self._stack_runner is not None:
                self._stack_runner.close()
            self._emit({"event": "cluster", "state": "stopped"})
        finally:
            self._stopped.set()

    def _check_running(self) -> None:
        if not self._started or self._stopping:
            raise ClusterError("the cluster is not running")

    # ---------------------------------------------------------------- node operations

    async def kill(self, node_id: str) -> None:
        """SIGKILL a node: no goodbye to its clients, exactly like a crash."""
        self._check_running()
        await self._nodes.kill(node_id)

    async def pause(self, node_id: str) -> None:
        """SIGSTOP a node: its sockets stay open but nothing answers (a hung process)."""
        self._check_running()
        await self._nodes.pause(node_id)

    async def resume(self, node_id: str) -> None:
        """SIGCONT a paused node."""
        self._check_running()
        await self._nodes.resume(node_id)

    async def drain(self, node_id: str, wait: bool = True) -> None:
        """Ask a node to drain (close its clients with 1001 and exit); wait for the exit."""
        self._check_running()
        await self._nodes.drain(node_id, wait)

    async def restart(self, node_id: str) -> None:
        """Replace a node's process under the same id (a live one is SIGKILLed first)."""
        self._check_running()
        await self._nodes.restart(node_id)

    async def add(self) -> str:
        """Start one more node, put it behind the balancer, return its id."""
        self._check_running()
        return await self._nodes.add()

    async def connections(self, node_id: str) -> list[dict[str, Any]]:
        """The node's open connections (conn id, user, rooms), asked over control."""
        return await self._nodes.connections(node_id)

    async def request(self, peer: str, cmd: str, **fields: Any) -> dict[str, Any]:
        """Send any control command to a node or the balancer (the seam for `inject` etc.)."""
        if peer != BALANCER:
            self._nodes.live(peer)
        return await self._router.request(peer, cmd, **fields)

    async def inject(
        self, node_id: str, case_id: str, target: str = "*", **options: Any
    ) -> dict[str, Any]:
        """Have a node write a catalogue case raw to a connection, a room's members or all ("*").

        `options`: count (at most that many connections), repeat, wait (seconds to watch the
        clients react), max_size. The reply says what was written to how many connections and
        each client's reaction with a verdict (faults/inject.py); bad input is a ClusterError.
        """
        return await self._nodes.inject(node_id, case_id, target, **options)

    # ---------------------------------------------------------------- broker and balancer

    async def broker_kill(self) -> None:
        """SIGKILL the broker; nodes see it down, publishes fail with broker_unavailable."""
        self._check_running()
        await self._broker.kill()

    async def broker_restart(self, fresh: bool = False) -> None:
        """Start the broker again on the same port; the nodes reconnect by themselves.

        `fresh`: without its state, as a failover to an empty replica would; every room then
        starts again under a new epoch, which the nodes report as a reset.
        """
        self._check_running()
        await self._broker.restart(fresh)

    def _shard_keeper(self) -> ShardKeeper:
        self._check_running()
        if self._shards is None:
            raise ClusterError("the broker is not a cluster of ours (start with --broker-cluster)")
        return self._shards

    async def shard(self, action: str, target: str, slot: int | None = None) -> None:
        """An operation on a cluster broker: kill / restart / pause / resume a server (s1a),
        failover / partition / heal a shard (s1), move `slot` to shard `target`."""
        keeper = self._shard_keeper()
        node_ops = {"kill": keeper.kill, "restart": keeper.restart, "pause": keeper.pause,
                    "resume": keeper.resume}
        shard_ops = {"failover": keeper.failover, "partition": keeper.partition,
                     "heal": keeper.heal}
        if action in node_ops:
            await node_ops[action](target)
        elif action in shard_ops:
            await shard_ops[action](target)
        elif action == "move" and slot is not None:
            await keeper.move_slot(slot, target)
        else:
            raise ClusterError(f"unknown shard operation {action!r}")

    async def net_fault(self, target: str, kind: str, **params: Any) -> dict[str, Any]:
        """Apply a network fault in the balancer to one backend (node id) or "all"."""
        self._check_target(target)
        return await self._balancer.net_fault(target, kind, **params)

    async def net_clear(self, target: str, kind: str | None = None) -> dict[str, Any]:
        """Remove a network fault (or every fault when `kind` is None) from a target."""
        self._check_target(target)
        return await self._balancer.net_clear(target, kind)

    def _check_target(self, target: str) -> None:
        self._check_running()
        if target != "all":
            self._nodes.node(target)

    async def set_sticky(self, mode: str) -> None:
        """Switch the balancer's affinity mode (ip, cookie, sid)."""
        await self._balancer.set_sticky(mode)

    # ---------------------------------------------------------------- stats and events

    def _on_stats(self, peer: str, message: dict[str, Any]) -> None:
        """A member pushed its stats: typed here, merged, and a due sample goes out."""
        try:
            if peer == BALANCER:
                self._balancer.pushed(BalancerFigures.from_message(message))
            elif peer in self.nodes:
                snapshot = NodeSnapshot.from_message({**message, "node": peer})
                self._publish(self._merger.node_pushed(snapshot, time.time(), time.monotonic()))
        except ValueError as exc:
            log.warning("stats from %s dropped: %s", peer, exc)

    def _shard_pushed(self, snapshot: ShardSnapshot) -> None:
        self._publish(self._merger.shard_pushed(snapshot, time.time(), time.monotonic()))

    def _balancer_figures(self, figures: BalancerFigures) -> None:
        now, mono = time.time(), time.monotonic()
        if self._stack_runner is not None:  # the user's nodes: what the balancer saw
            running = self._nodes.ports()
            for node_id, backend in figures.backends.items():
                if node_id in running:
                    extra = self._scraper.values(node_id) if self._scraper is not None else {}
                    self._merger.record(backend.snapshot(node_id, figures.t or now, extra), mono)
        self._publish(self._merger.balancer_pushed(figures, now, mono))

    def _node_gone(self, node_id: str) -> None:
        self._merger.node_gone(node_id)
        if self._scraper is not None:
            self._scraper.forget(node_id)

    def _publish(self, sample: ClusterSample | None) -> None:
        """Emit a sample between "ready" and the stop (the merger keeps `latest` regardless)."""
        if sample is not None and self.ready_seconds is not None and not self._stopping:
            self._emit({"event": "stats", "sample": sample})

    def _emit(self, event: Event) -> None:
        self._hub.emit(event)

    def __repr__(self) -> str:
        port = self.balancer.port
        return f"<Cluster nodes={len(self.nodes)} port={port} broker={self.broker.state}>"


__all__ = [
    "DEMO_BACKOFF_CAP",
    "DEMO_BACKOFF_INITIAL",
    "DEMO_PING_INTERVAL",
    "DEMO_PING_TIMEOUT",
    "FLAVOURS",
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "REDIS_SCHEMES",
    "STICKY_MODES",
    "BalancerInfo",
    "BrokerInfo",
    "Cluster",
    "ClusterConfig",
    "ClusterError",
    "Limits",
    "NodeInfo",
    "NodeState",
]
