"""The supervisor of the local harness: broker, N nodes and the balancer as OS processes.

`Cluster` is asyncio all the way down (the GUI drives it from a qasync loop, so nothing here
blocks the loop: children start through `asyncio.create_subprocess_exec`, the broker's
synchronous calls run in a worker thread, every wait is awaited). The same object serves the
GUI, the scenarios and `wsconsole harness`.

Start order: the broker, then the nodes (in parallel) and the balancer in front of them. A child
is ready when it has printed its `listening` line and said hello on the control channel; the
cluster is ready when the balancer also reports every backend healthy, so a client that
connects to `url` right after `start()` returns is served.

Control: kill = SIGKILL, pause = SIGSTOP, resume = SIGCONT, drain = the node's "drain" control
command (it closes its clients with 1001 and exits), restart = a new process under the same id
(the balancer learns its new port through backend_remove/backend_add), add = one more node.
Every child is started by harness/procs.py: in its own process group, so a Ctrl-C at the
terminal reaches only the supervisor, which then stops its children in order; dying with the
supervisor (PDEATHSIG on Linux, an `atexit` net everywhere).

Events (dicts handed to `subscribe` callbacks, the same shapes the CLI prints with --json):
- {"event": "node", "id", "state", "pid", "port", ...} on every node state change; an exit
  adds "exit_code" and "expected" (false when nobody asked the node to go: state "failed");
- {"event": "broker", "state": "up"|"down", "url", "pid", ...};
- {"event": "balancer", "state", "port", "pid", ...};
- {"event": "node_event", "id", "kind", ...}: what a node pushes (broker_down, draining, ...);
- {"event": "stats", ...}: a merged sample (see harness/stats.py) every `stats_interval`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import os
import secrets
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from wsconsole.core.tasks import Tasks
from wsconsole.harness import auth, procs
from wsconsole.harness.broker import Broker, BrokerError
from wsconsole.harness.control import CONTROL_KEY_ENV, ControlError, ControlServer
from wsconsole.harness.procs import child_argv
from wsconsole.harness.stats import StatsMerger

log = logging.getLogger(__name__)

JWT_SECRET_ENV = "WSCONSOLE_JWT_SECRET"
LOOPBACK = "127.0.0.1"
BALANCER = "balancer"
STICKY_MODES = ("ip", "cookie", "sid")
FLAVOURS = ("ws", "socketio")  # node kinds: `wsconsole node` or `wsconsole sionode`
REDIS_SCHEMES = ("redis://", "rediss://", "valkey://", "valkeys://", "unix://")

# DESIGN.md defaults table: the server heartbeat, and the demo timings preset.
PING_INTERVAL = 25.0
PING_TIMEOUT = 10.0
DEMO_PING_INTERVAL = 2.0
DEMO_PING_TIMEOUT = 1.0
# The clients' side of the demo preset (the GUI and the swarm build their BackoffPolicy from it).
DEMO_BACKOFF_INITIAL = 0.5
DEMO_BACKOFF_CAP = 5.0

Event = dict[str, Any]
Subscriber = Callable[[Event], None]


class ClusterError(RuntimeError):
    """An operation on the cluster could not be done (unknown node, a child failed to start...)."""


class NodeState(enum.StrEnum):
    """Where a node process is, as the supervisor sees it."""

    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    DRAINING = "draining"
    KILLED = "killed"  # SIGKILLed on request
    STOPPED = "stopped"  # exited after a drain or a stop
    FAILED = "failed"  # exited without being asked to


@dataclass(frozen=True)
class Limits:
    """The node's security checklist and limits (DESIGN.md defaults); 0 = no limit."""

    max_size: int = 1 << 20
    rate: float = 100.0
    per_user: int = 5
    soft_limit: int = 10_000
    history: int = 10_000
    auth_timeout: float = 5.0
    drain_deadline: float = 10.0
    origins: tuple[str, ...] = ()  # extra allowed origins; () = the node's default allow-list
    auth: bool = True
    compression: bool = False

    def argv(self) -> list[str]:
        """The node flags that carry these limits."""
        args = [
            "--max-size", str(self.max_size),
            "--rate", _num(self.rate),
            "--per-user", str(self.per_user),
            "--soft-limit", str(self.soft_limit),
            "--history", str(self.history),
            "--auth-timeout", _num(self.auth_timeout),
            "--drain-deadline", _num(self.drain_deadline),
        ]  # fmt: skip
        for origin in self.origins:
            args += ["--origin", origin]
        if not self.auth:
            args.append("--no-auth")
        if self.compression:
            args.append("--compression")
        return args


def _num(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


@dataclass
class ClusterConfig:
    """Everything `Cluster` needs; the defaults are DESIGN.md's, `demo()` the demo preset."""

    nodes: int = 3
    port: int = 0  # the balancer's public port; 0 = any free one
    redis_url: str | None = None  # an external broker; None = start our own
    sticky: str = "ip"
    ping_interval: float = PING_INTERVAL
    ping_timeout: float = PING_TIMEOUT
    limits: Limits = field(default_factory=Limits)
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    health_interval: float = 0.5  # the balancer's health checks
    stats_interval: float = 0.5  # one merged sample (and "stats" event) per interval
    series_capacity: int = 7200  # samples kept per series (an hour at 0.5 s)
    ready_timeout: float = 30.0  # generous: the machines running tests are busy
    stop_timeout: float = 5.0  # beyond a node's drain deadline, before SIGKILL
    log_dir: str | None = None  # children's stderr; None = a fresh temporary directory
    flavour: str = "ws"  # "socketio": python-socketio nodes (harness/sionode.py), same controls

    @classmethod
    def demo(cls, **overrides: Any) -> ClusterConfig:
        """The demo timings preset: ping 2 s / timeout 1 s, so transitions show in seconds."""
        values = {"ping_interval": DEMO_PING_INTERVAL, "ping_timeout": DEMO_PING_TIMEOUT}
        values.update(overrides)
        return cls(**values)

    def validate(self) -> None:
        """Raise ValueError with a plain message for a setting that cannot work."""
        if not 1 <= self.nodes <= 64:
            raise ValueError(f"nodes must be between 1 and 64, not {self.nodes}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {self.port}")
        if self.sticky not in STICKY_MODES:
            raise ValueError(
                f"sticky must be one of {', '.join(STICKY_MODES)}, not {self.sticky!r}"
            )
        if self.flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {', '.join(FLAVOURS)}, not {self.flavour!r}")
        if self.redis_url is not None and not self.redis_url.startswith(REDIS_SCHEMES):
            raise ValueError(
                f"not a Redis URL (redis://, rediss://, valkey:// or unix://): {self.redis_url!r}"
            )
        for name in ("ping_interval", "ping_timeout", "health_interval", "stats_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        limits = self.limits
        for name in ("max_size", "rate", "per_user", "soft_limit"):
            if getattr(limits, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = no limit)")
        if limits.history < 1:
            raise ValueError("history must be at least 1")
        for name in ("auth_timeout", "drain_deadline"):
            if getattr(limits, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not self.secret:
            raise ValueError("the cluster secret must not be empty")


@dataclass
class NodeInfo:
    """One node as the GUI and the CLI show it."""

    id: str
    port: int | None = None
    pid: int | None = None
    state: NodeState = NodeState.STARTING
    exit_code: int | None = None

    @property
    def metrics_url(self) -> str | None:
        """The node's Prometheus endpoint (same port as its WebSocket)."""
        return f"http://{LOOPBACK}:{self.port}/metrics" if self.port else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "id": self.id,
            "port": self.port,
            "pid": self.pid,
            "state": self.state.value,
            "metrics_url": self.metrics_url,
        }


@dataclass
class BrokerInfo:
    """The Redis-protocol broker: its URL, PID (None when external) and state up/down."""

    url: str | None = None
    pid: int | None = None
    state: str = "down"
    external: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"url": self.url, "pid": self.pid, "state": self.state, "external": self.external}


@dataclass
class BalancerInfo:
    """The sticky balancer in front of the nodes."""

    port: int | None = None
    pid: int | None = None
    state: str = "starting"
    sticky: str = "ip"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"port": self.port, "pid": self.pid, "state": self.state, "sticky": self.sticky}


@dataclass(eq=False)
class _Child:
    """A node or balancer process the supervisor started, and why it may exit."""

    proc: procs.Child
    port: int = 0
    expected_exit: bool = False
    exit_state: NodeState = NodeState.STOPPED

    @property
    def name(self) -> str:
        """The node id, or "balancer"."""
        return self.proc.name

    @property
    def pid(self) -> int:
        """The OS process id (and its process group's)."""
        return self.proc.pid

    @property
    def alive(self) -> bool:
        """True until the process has been reaped."""
        return self.proc.alive


class Cluster:
    """Starts, breaks and stops the local harness; see the module docstring."""

    def __init__(self, config: ClusterConfig | None = None) -> None:
        self.config = config or ClusterConfig()
        self.config.validate()
        self.nodes: dict[str, NodeInfo] = {}
        self.broker = BrokerInfo()
        self.balancer = BalancerInfo(sticky=self.config.sticky)
        self.ready_seconds: float | None = None
        self.merger = StatsMerger(self.config.series_capacity, stale_after=1.5)
        self._control_key = secrets.token_urlsafe(32)
        self._control = ControlServer(self._control_key, self._on_control, self._on_disconnect)
        self._broker: Broker | None = None
        self._broker_busy = False
        self._children: dict[str, _Child] = {}
        self._subscribers: list[Subscriber] = []
        self._tasks = Tasks("cluster")
        self._ids = itertools.count(1)
        self._ops = asyncio.Lock()
        self._started = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self._log_dir: Path | None = None
        self._own_log_dir: tempfile.TemporaryDirectory[str] | None = None
        self._balancer_seen = asyncio.Event()
        self._balancer_stats: dict[str, Any] | None = None
        self._spawned: list[_Child] = []
        self._loops: list[asyncio.Task[Any]] = []

    # ---------------------------------------------------------------- public properties

    @property
    def url(self) -> str:
        """ws://127.0.0.1:PORT of the balancer: the one address clients use."""
        if self.balancer.port is None:
            raise ClusterError("the cluster is not started")
        return f"ws://{LOOPBACK}:{self.balancer.port}"

    @property
    def secret(self) -> str:
        """The per-cluster JWT secret the nodes verify tokens with."""
        return self.config.secret

    @property
    def log_dir(self) -> Path | None:
        """Where the children's stderr logs are written."""
        return self._log_dir

    @property
    def stats(self) -> dict[str, Any]:
        """The latest merged sample (empty before the first one)."""
        return self.merger.latest

    def series(self, metric: str, key: str = "total") -> tuple[np.ndarray, np.ndarray]:
        """A time series (wall times, values) of the merged stats; see harness/stats.py."""
        return self.merger.series(metric, key)

    def pids(self) -> list[int]:
        """Every live child PID: broker (when we own it), nodes, balancer."""
        found = [child.pid for child in self._children.values() if child.alive]
        if self._broker is not None and self.broker.pid is not None and self.broker.state == "up":
            found.append(self.broker.pid)
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
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def status(self) -> dict[str, Any]:
        """A JSON-ready picture of the whole cluster."""
        return {
            "url": self.url if self.balancer.port else None,
            "nodes": [info.as_dict() for info in self.nodes.values()],
            "broker": self.broker.as_dict(),
            "balancer": self.balancer.as_dict(),
        }

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
        if self.config.log_dir is None:
            self._own_log_dir = tempfile.TemporaryDirectory(prefix="wsconsole-harness-")
            self._log_dir = Path(self._own_log_dir.name)
        else:
            self._log_dir = Path(self.config.log_dir)
            self._log_dir.mkdir(parents=True, exist_ok=True)
        try:
            await self._control.start(LOOPBACK, 0)
            await self._start_broker()
            ids = [self._next_id() for _ in range(self.config.nodes)]
            for node_id in ids:
                self.nodes[node_id] = NodeInfo(node_id)
                self._set_node_state(self.nodes[node_id], NodeState.STARTING)
            # The nodes and the balancer boot in parallel (Python start-up dominates); the
            # balancer starts empty and learns each node's port through backend_add.
            results = await asyncio.gather(
                self._start_balancer(),
                *(self._start_node(node_id) for node_id in ids),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            for node_id in ids:
                info = self.nodes[node_id]
                await self.request(
                    BALANCER, "backend_add", id=node_id, host=LOOPBACK, port=info.port
                )
            await self._wait_backends_healthy(ids)
        except BaseException:
            await self.stop()
            raise
        self.ready_seconds = time.monotonic() - began
        self._loops.append(self._tasks.spawn(self._sample_loop(), "stats"))
        self._loops.append(self._tasks.spawn(self._broker_watch(), "broker-watch"))
        self._emit({"event": "cluster", "state": "ready", "ready_s": round(self.ready_seconds, 3)})

    async def stop(self) -> None:
        """Drain the nodes, then stop the balancer and the broker; idempotent."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        try:
            for task in self._loops:
                task.cancel()
            nodes = [c for c in self._spawned if c.name != BALANCER and c.alive]
            await asyncio.gather(*(self._stop_node(child) for child in nodes))
            for balancer in [c for c in self._spawned if c.name == BALANCER and c.alive]:
                balancer.expected_exit = True
                await balancer.proc.stop(signal.SIGTERM, self.config.stop_timeout)
                self.balancer.state = "stopped"
                self._emit({"event": "balancer", **self.balancer.as_dict()})
            if self._broker is not None and not self.broker.external:
                await asyncio.to_thread(self._broker.stop)
                if self.broker.state != "down":
                    self.broker.state = "down"
                    self._emit({"event": "broker", **self.broker.as_dict(), "reason": "stop"})
            await self._control.close()
            await self._tasks.cancel_all()
            self._emit({"event": "cluster", "state": "stopped"})
        finally:
            self._stopped.set()

    async def _stop_node(self, child: _Child) -> None:
        """SIGCONT (a paused node cannot drain), then SIGTERM = drain, then SIGKILL if stuck."""
        info = self.nodes.get(child.name)
        child.expected_exit = True
        child.exit_state = NodeState.STOPPED
        current = self._children.get(child.name) is child
        if info is not None and current and info.state != NodeState.DRAINING:
            self._set_node_state(info, NodeState.DRAINING)
        deadline = self.config.limits.drain_deadline + self.config.stop_timeout
        await child.proc.stop(signal.SIGTERM, deadline)

    # ---------------------------------------------------------------- node operations

    def _node(self, node_id: str) -> NodeInfo:
        info = self.nodes.get(node_id)
        if info is None:
            known = ", ".join(self.nodes) or "none"
            raise ClusterError(f"unknown node {node_id!r} (known: {known})")
        return info

    def _live_child(self, node_id: str) -> _Child:
        info = self._node(node_id)
        child = self._children.get(node_id)
        if child is None or not child.alive:
            raise ClusterError(f"node {node_id} is not running (state {info.state.value})")
        return child

    async def kill(self, node_id: str) -> None:
        """SIGKILL a node: no goodbye to its clients, exactly like a crash."""
        self._check_running()
        child = self._live_child(node_id)
        child.expected_exit = True
        child.exit_state = NodeState.KILLED
        await child.proc.stop(None)

    async def pause(self, node_id: str) -> None:
        """SIGSTOP a node: its sockets stay open but nothing answers (a hung process)."""
        self._check_running()
        child = self._live_child(node_id)
        info = self.nodes[node_id]
        if info.state == NodeState.PAUSED:
            return
        child.proc.pause()
        self._set_node_state(info, NodeState.PAUSED)

    async def resume(self, node_id: str) -> None:
        """SIGCONT a paused node."""
        self._check_running()
        child = self._live_child(node_id)
        info = self.nodes[node_id]
        if info.state != NodeState.PAUSED:
            raise ClusterError(f"node {node_id} is not paused (state {info.state.value})")
        child.proc.resume()
        self._set_node_state(info, NodeState.RUNNING)

    async def drain(self, node_id: str, wait: bool = True) -> None:
        """Ask a node to drain (close its clients with 1001 and exit); wait for the exit."""
        self._check_running()
        child = self._live_child(node_id)
        info = self.nodes[node_id]
        if info.state == NodeState.PAUSED:
            child.proc.resume()
        child.expected_exit = True
        child.exit_state = NodeState.STOPPED
        self._set_node_state(info, NodeState.DRAINING)
        try:
            await self._control.request(node_id, "drain")
        except ControlError as exc:
            log.info("drain over control failed (%s); sending SIGTERM instead", exc)
            child.proc.send_signal(signal.SIGTERM)
        if wait:
            timeout = self.config.limits.drain_deadline + self.config.stop_timeout
            if not await child.proc.wait(timeout):
                log.warning("%s still running %.1f s after drain; killing it", child.name, timeout)
                await child.proc.stop(None)

    async def restart(self, node_id: str) -> None:
        """Replace a node's process under the same id (a live one is SIGKILLed first)."""
        self._check_running()
        info = self._node(node_id)
        async with self._ops:
            child = self._children.get(node_id)
            if child is not None and child.alive:
                child.expected_exit = True
                child.exit_state = NodeState.KILLED
                await child.proc.stop(None)
            with contextlib.suppress(ControlError):
                await self._control.request(BALANCER, "backend_remove", id=node_id)
            self._set_node_state(info, NodeState.STARTING, pid=None, port=None)
            await self._start_node(node_id)
            await self._backend_add(node_id)

    async def add(self) -> str:
        """Start one more node, put it behind the balancer, return its id."""
        self._check_running()
        async with self._ops:
            node_id = self._next_id()
            self.nodes[node_id] = NodeInfo(node_id)
            self._set_node_state(self.nodes[node_id], NodeState.STARTING)
            await self._start_node(node_id)
            await self._backend_add(node_id)
            return node_id

    async def connections(self, node_id: str) -> list[dict[str, Any]]:
        """The node's open connections (conn id, user, rooms), asked over control."""
        self._live_child(node_id)
        reply = await self._control.request(node_id, "connections")
        return list(reply.get("connections", []))

    async def request(self, peer: str, cmd: str, **fields: Any) -> dict[str, Any]:
        """Send any control command to a node or the balancer (the seam for `inject` etc.)."""
        if peer != BALANCER:
            self._live_child(peer)
        try:
            return await self._control.request(peer, cmd, **fields)
        except ControlError as exc:
            raise ClusterError(str(exc)) from None

    async def inject(
        self, node_id: str, case_id: str, target: str = "*", **options: Any
    ) -> dict[str, Any]:
        """Have a node write a catalogue case raw to a connection, a room's members or all ("*").

        `options`: count (at most that many connections), repeat, wait (seconds to watch the
        clients react), max_size. The reply says what was written to how many connections and
        each client's reaction with a verdict (faults/inject.py); bad input is a ClusterError.
        """
        from wsconsole.faults.inject import InjectError, parse_request

        try:
            request = parse_request({"case": case_id, "target": target, **options})
        except InjectError as exc:
            raise ClusterError(str(exc)) from None
        self._live_child(node_id)
        fields = {"case": case_id, "target": request.target, **options}
        try:
            return await self._control.request(
                node_id, "inject", timeout=request.wait + 5.0, **fields
            )
        except ControlError as exc:
            raise ClusterError(str(exc)) from None

    # ---------------------------------------------------------------- broker operations

    async def broker_kill(self) -> None:
        """SIGKILL the broker; nodes see it down, publishes fail with broker_unavailable."""
        broker = self._owned_broker()
        self._broker_busy = True
        try:
            try:
                await asyncio.to_thread(broker.kill)
            except BrokerError as exc:
                raise ClusterError(f"broker: {exc}") from None
            self.broker.state = "down"
            self._emit({"event": "broker", **self.broker.as_dict(), "reason": "killed"})
        finally:
            self._broker_busy = False

    async def broker_restart(self) -> None:
        """Start the broker again on the same port; the nodes reconnect by themselves."""
        broker = self._owned_broker()
        self._broker_busy = True
        try:
            try:
                await asyncio.to_thread(broker.restart)
            except BrokerError as exc:
                self.broker.state = "down"
                raise ClusterError(f"broker: {exc}") from None
            self._broker_up(broker)
        finally:
            self._broker_busy = False

    def _owned_broker(self) -> Broker:
        self._check_running()
        if self._broker is None or self.broker.external:
            raise ClusterError("the broker is external (--redis): the harness does not own it")
        return self._broker

    async def _start_broker(self) -> None:
        try:
            broker = Broker(self.config.redis_url)
            self._broker = broker
            self.broker.external = self.config.redis_url is not None
            await asyncio.to_thread(broker.start)
        except BrokerError as exc:
            raise ClusterError(f"broker: {exc}") from None
        self._broker_up(broker)

    def _broker_up(self, broker: Broker) -> None:
        self.broker.url = broker.url
        self.broker.pid = None if self.broker.external else broker.pid
        self.broker.state = "up"
        self._emit({"event": "broker", **self.broker.as_dict()})

    async def _broker_watch(self) -> None:
        """Notice a broker that died without being asked to."""
        if self._broker is None or self.broker.external:
            return
        while True:
            await asyncio.sleep(0.25)
            broker = self._broker
            if self._broker_busy or self.broker.state != "up" or broker.alive:
                continue
            self.broker.state = "down"
            self._emit(
                {"event": "broker", **self.broker.as_dict(), "reason": "exited", "expected": False}
            )

    # ---------------------------------------------------------------- network faults

    async def net_fault(self, target: str, kind: str, **params: Any) -> dict[str, Any]:
        """Apply a network fault in the balancer to one backend (node id) or "all"."""
        self._check_running()
        if target != "all":
            self._node(target)
        return await self.request(BALANCER, "fault", target=target, kind=kind, **params)

    async def net_clear(self, target: str, kind: str | None = None) -> dict[str, Any]:
        """Remove a network fault (or every fault when `kind` is None) from a target."""
        self._check_running()
        if target != "all":
            self._node(target)
        return await self.request(BALANCER, "fault_clear", target=target, kind=kind)

    async def set_sticky(self, mode: str) -> None:
        """Switch the balancer's affinity mode (ip, cookie, sid)."""
        if mode not in STICKY_MODES:
            raise ClusterError(f"sticky must be one of {', '.join(STICKY_MODES)}")
        await self.request(BALANCER, "sticky", mode=mode)
        self.balancer.sticky = mode
        self._emit({"event": "balancer", **self.balancer.as_dict()})

    # ---------------------------------------------------------------- children

    def _next_id(self) -> str:
        while True:
            node_id = f"n{next(self._ids)}"
            if node_id not in self.nodes:
                return node_id

    def _check_running(self) -> None:
        if not self._started or self._stopping:
            raise ClusterError("the cluster is not running")

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[JWT_SECRET_ENV] = self.config.secret
        env[CONTROL_KEY_ENV] = self._control_key
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _node_argv(self, node_id: str) -> list[str]:
        cfg = self.config
        assert self.broker.url is not None
        return child_argv(
            "sionode" if cfg.flavour == "socketio" else "node",
            "--id", node_id,
            "--host", LOOPBACK,
            "--port", "0",
            "--redis", self.broker.url,
            "--control", f"{LOOPBACK}:{self._control.port}",
            "--ping-interval", _num(cfg.ping_interval),
            "--ping-timeout", _num(cfg.ping_timeout),
            *cfg.limits.argv(),
        )  # fmt: skip

    def _balancer_argv(self) -> list[str]:
        args = [
            "--host", LOOPBACK,
            "--port", str(self.config.port),
            "--sticky", self.config.sticky,
            "--control", f"{LOOPBACK}:{self._control.port}",
            "--health-interval", _num(self.config.health_interval),
        ]  # fmt: skip
        for node_id, info in self.nodes.items():
            child = self._children.get(node_id)
            if child is not None and child.alive and info.port:
                args += ["--backend", f"{node_id}={LOOPBACK}:{info.port}"]
        return child_argv("balancer", *args)

    async def _spawn(self, name: str, argv: list[str]) -> tuple[_Child, dict[str, Any]]:
        """Start a child, wait for its `listening` line; the child is watched until it exits."""
        assert self._log_dir is not None
        proc = await procs.spawn(
            argv, name, stderr_log=self._log_dir / f"{name}.log", env=self._env(),
            tasks=self._tasks,
        )  # fmt: skip
        child = _Child(proc)
        self._spawned = [c for c in self._spawned if c.alive]
        self._spawned.append(child)
        self._tasks.spawn(self._watch(child), f"watch-{name}")
        if self._stopping:  # stop() began while this child was being created
            child.expected_exit = True
            await proc.stop(None)
            raise ClusterError(f"{name}: the cluster is stopping")
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), self.config.ready_timeout)
        except TimeoutError:
            proc.kill()
            raise ClusterError(
                f"{name} printed nothing within {self.config.ready_timeout:.0f} s; "
                f"log {proc.log_path}: {proc.log_tail()}"
            ) from None
        try:
            hello = orjson.loads(line) if line else None
        except orjson.JSONDecodeError:
            hello = None
        if not isinstance(hello, dict) or hello.get("event") != "listening":
            await proc.stop(None)
            raise ClusterError(
                f"{name} failed to start (exit code {proc.returncode}); "
                f"log {proc.log_path}: {proc.log_tail()}"
            )
        child.port = int(hello["port"])
        self._tasks.spawn(self._drain_stdout(child), f"stdout-{name}")
        return child, hello

    async def _drain_stdout(self, child: _Child) -> None:
        """Keep reading a child's stdout so it never blocks on a full pipe."""
        async for line in child.proc.lines():
            log.debug("%s: %s", child.name, line.decode(errors="replace").rstrip())

    async def _start_node(self, node_id: str) -> None:
        info = self.nodes[node_id]
        child, _ = await self._spawn(node_id, self._node_argv(node_id))
        old = self._children.get(node_id)
        if old is not None and old.alive:
            raise ClusterError(f"node {node_id} is already running")
        self._children[node_id] = child
        info.exit_code = None
        try:
            await self._control.wait_connected(node_id, self.config.ready_timeout)
        except TimeoutError:
            child.proc.kill()
            raise ClusterError(f"node {node_id} never connected to the control channel") from None
        self._set_node_state(info, NodeState.RUNNING, pid=child.pid, port=child.port)

    async def _start_balancer(self) -> None:
        child, _ = await self._spawn(BALANCER, self._balancer_argv())
        self._children[BALANCER] = child
        self.balancer.port = child.port
        self.balancer.pid = child.pid
        try:
            await self._control.wait_connected(BALANCER, self.config.ready_timeout)
        except TimeoutError:
            child.proc.kill()
            raise ClusterError("the balancer never connected to the control channel") from None
        self.balancer.state = "running"
        self._emit({"event": "balancer", **self.balancer.as_dict()})

    async def _backend_add(self, node_id: str) -> None:
        info = self.nodes[node_id]
        await self.request(BALANCER, "backend_add", id=node_id, host=LOOPBACK, port=info.port)
        await self._wait_backends_healthy([node_id])

    async def _wait_backends_healthy(self, ids: list[str]) -> None:
        """Wait until the balancer's pushed stats call every backend in `ids` healthy."""
        deadline = time.monotonic() + self.config.ready_timeout
        while True:
            latest = self._balancer_stats.get("backends", {}) if self._balancer_stats else {}
            if all(isinstance(latest.get(i), dict) and latest[i].get("healthy") for i in ids):
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"the balancer does not see {', '.join(ids)} as healthy")
            self._balancer_seen.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._balancer_seen.wait(), 0.5)

    async def _watch(self, child: _Child) -> None:
        """Await the child's exit and report it; an exit nobody asked for is a failure."""
        await child.proc.wait()
        code = child.proc.returncode
        if child.name == BALANCER:
            self.merger.balancer_snapshot({})
            if not child.expected_exit:
                self.balancer.state = "failed"
                self._emit(
                    {
                        "event": "balancer",
                        **self.balancer.as_dict(),
                        "exit_code": code,
                        "expected": False,
                    }
                )
            return
        info = self.nodes.get(child.name)
        self.merger.node_gone(child.name)
        if info is None or self._children.get(child.name) is not child:
            return
        state = child.exit_state if child.expected_exit else NodeState.FAILED
        info.exit_code = code
        extra: dict[str, Any] = {"exit_code": code, "expected": child.expected_exit}
        if not child.expected_exit:
            extra["log"] = str(child.proc.log_path)
            extra["log_tail"] = child.proc.log_tail(3)
        self._set_node_state(info, state, **extra)

    # ---------------------------------------------------------------- control channel

    def _on_control(self, peer: str, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "stats":
            if peer == BALANCER:
                self._balancer_stats = message
                self.merger.balancer_snapshot(message)
                self._balancer_seen.set()
            elif peer in self.nodes:
                self.merger.node_snapshot(peer, message)
        elif kind == "event":
            fields = {k: v for k, v in message.items() if k not in ("type", "event")}
            self._emit(
                {
                    "event": "node_event" if peer != BALANCER else "balancer_event",
                    "id": peer,
                    **fields,
                }
            )

    def _on_disconnect(self, peer: str) -> None:
        log.debug("control: %s disconnected", peer)

    # ---------------------------------------------------------------- events and stats

    def _set_node_state(self, info: NodeInfo, state: NodeState, **extra: Any) -> None:
        if "pid" in extra:
            info.pid = extra.pop("pid")
        if "port" in extra:
            info.port = extra.pop("port")
        info.state = state
        self._emit({"event": "node", **info.as_dict(), **extra})

    def _emit(self, event: Event) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("a cluster event subscriber failed")

    async def _sample_loop(self) -> None:
        interval = self.config.stats_interval
        while True:
            await asyncio.sleep(interval)
            sample = self.merger.sample()
            self._emit({"event": "stats", **sample})

    def __repr__(self) -> str:
        port = self.balancer.port
        return f"<Cluster nodes={len(self.nodes)} port={port} broker={self.broker.state}>"


__all__ = [
    "DEMO_BACKOFF_CAP",
    "DEMO_BACKOFF_INITIAL",
    "DEMO_PING_INTERVAL",
    "DEMO_PING_TIMEOUT",
    "BalancerInfo",
    "BrokerInfo",
    "Cluster",
    "ClusterConfig",
    "ClusterError",
    "Limits",
    "NodeInfo",
    "NodeState",
]
