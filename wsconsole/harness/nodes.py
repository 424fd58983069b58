"""The supervisor's nodes: the registry (id -> `NodeInfo`) and every operation on a node.

kill = SIGKILL (exactly like a crash), pause = SIGSTOP (a hung process: sockets open, nothing
answers), resume = SIGCONT, drain = ask the node to close its clients and exit (then SIGKILL
after its deadline), restart = a new process under the same id (the balancer learns its new
port), add = one more node. Signals go to the node's process group (harness/procs.py).

Two kinds of node run under the same keeper, each with its runner: the harness's own
(`HarnessRunner`: `wsconsole node`/`sionode`, ready when it said hello on the control
channel, drained by the "drain" command or SIGTERM) and the user's (`StackRunner` in
stacknodes.py: the stack file's command, ready by its own rule, drained by its stop signal).

Every state change is an event `{"event": "node", "id", "state", "pid", "port", ...}`; an
exit adds "exit_code" and "expected" (false when nobody asked the node to go: state
"failed", with the tail of its log).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from wsconsole.harness.balancerkeeper import BalancerKeeper
from wsconsole.harness.brokerkeeper import BrokerInfo
from wsconsole.harness.clusterconfig import (
    LOOPBACK,
    ClusterConfig,
    ClusterError,
    NodeState,
    num_arg,
)
from wsconsole.harness.events import EventHub
from wsconsole.harness.members import Launcher, Member
from wsconsole.harness.procs import child_argv
from wsconsole.harness.router import ControlRouter

log = logging.getLogger(__name__)


@dataclass
class NodeInfo:
    """One node as the GUI and the CLI show it."""

    id: str
    port: int | None = None
    pid: int | None = None
    state: NodeState = NodeState.STARTING
    exit_code: int | None = None
    tls: bool = False  # it serves wss:// and https://
    command: str | None = None  # a stack node's command line (None: a harness node)
    metrics_path: str | None = "/metrics"

    @property
    def metrics_url(self) -> str | None:
        """The node's Prometheus endpoint (same port as its WebSocket)."""
        if not self.port or self.metrics_path is None:
            return None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}{self.metrics_path}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        fields = {
            "id": self.id,
            "port": self.port,
            "pid": self.pid,
            "state": self.state.value,
            "metrics_url": self.metrics_url,
        }
        if self.command is not None:
            fields["command_line"] = self.command
        return fields


class NodeRunner(Protocol):
    """What differs between kinds of node: how one starts, is judged ready, and drains."""

    control: bool  # it has a control channel (connections, inject, the drain command)
    metrics_path: str | None  # its Prometheus endpoint, if it has one

    @property
    def stop_signal(self) -> int:
        """What a drain or a stop sends first (SIGKILL follows after `drain_timeout`)."""
        ...

    @property
    def drain_timeout(self) -> float:
        """How long a draining node may take."""
        ...

    def health(self) -> dict[str, Any]:
        """How the balancer checks this kind of node (`backend_add` fields)."""
        ...

    async def launch(self, node_id: str, on_exit: Callable[[Member], None]) -> Member:
        """Start node `node_id`; return its member once it is ready (ClusterError if not)."""
        ...

    async def ask_drain(self, node_id: str, member: Member) -> None:
        """Ask a running node to drain (it exits by itself)."""
        ...

    def command(self, node_id: str) -> str | None:
        """The command line node `node_id` was started with, for the views (None: ours)."""
        ...

    def output_tail(self, node_id: str, member: Member) -> tuple[str | None, str]:
        """Where a node's output is logged, and its last lines (for an unexpected exit)."""
        ...


class HarnessRunner:
    """The harness's own nodes: `wsconsole node` (or `sionode`) with the cluster's limits."""

    control = True
    metrics_path: str | None = "/metrics"
    stop_signal = int(signal.SIGTERM)  # a harness node drains on SIGTERM

    def __init__(self, config: ClusterConfig, launcher: Launcher, router: ControlRouter,
                 broker: BrokerInfo) -> None:
        self.config = config
        self.launcher = launcher
        self.router = router
        self.broker = broker

    @property
    def drain_timeout(self) -> float:
        """The node's own drain deadline, plus the stop timeout."""
        return self.config.limits.drain_deadline + self.config.stop_timeout

    def health(self) -> dict[str, Any]:
        """GET /healthz for a 2xx (the node answers 503 while draining)."""
        return {}

    def _argv(self, node_id: str) -> list[str]:
        cfg = self.config
        assert self.broker.url is not None
        return child_argv(
            "sionode" if cfg.flavour == "socketio" else "node",
            "--id", node_id,
            "--host", LOOPBACK,
            "--port", "0",
            "--redis", self.broker.url,
            "--control", self.router.address,
            "--ping-interval", num_arg(cfg.ping_interval),
            "--ping-timeout", num_arg(cfg.ping_timeout),
            *cfg.limits.argv(),
            *self.launcher.tls_args(),
        )  # fmt: skip

    async def launch(self, node_id: str, on_exit: Callable[[Member], None]) -> Member:
        """Start the node; ready once it said hello on the control channel."""
        member, _ = await self.launcher.launch(node_id, self._argv(node_id), on_exit)
        try:
            await self.router.wait_connected(node_id, self.config.ready_timeout)
        except TimeoutError:
            member.expected_exit = True
            member.proc.kill()
            raise ClusterError(f"node {node_id} never connected to the control channel") from None
        return member

    async def ask_drain(self, node_id: str, member: Member) -> None:
        """The "drain" control command; SIGTERM (which drains too) when it cannot be sent."""
        try:
            await self.router.request(node_id, "drain")
        except ClusterError as exc:
            log.info("drain over control failed (%s); sending SIGTERM instead", exc)
            member.proc.send_signal(signal.SIGTERM)

    def command(self, node_id: str) -> str | None:
        """None: a harness node shows no command."""
        return None

    def output_tail(self, node_id: str, member: Member) -> tuple[str | None, str]:
        """Its stderr log file and its last lines."""
        return str(member.proc.log_path), member.proc.log_tail(3)


class NodeKeeper:
    """The nodes by id, their current processes, and the operations on them."""

    def __init__(
        self,
        config: ClusterConfig,
        hub: EventHub,
        launcher: Launcher,
        router: ControlRouter,
        broker: BrokerInfo,
        balancer: BalancerKeeper,
        on_gone: Callable[[str], None],
        runner: NodeRunner | None = None,
    ) -> None:
        self.config = config
        self.hub = hub
        self.launcher = launcher
        self.router = router
        self.broker = broker
        self.balancer = balancer
        self.on_gone = on_gone  # a node's process ended (its stats count as zero)
        self.runner: NodeRunner = runner or HarnessRunner(config, launcher, router, broker)
        self.nodes: dict[str, NodeInfo] = {}
        self.members: dict[str, Member] = {}  # node id -> its current process
        self._ids = itertools.count(1)
        self._ops = asyncio.Lock()  # restart and add, one at a time

    # ---------------------------------------------------------------- registry

    def register(self) -> str:
        """A new node id in state STARTING (announced), not started yet."""
        while (node_id := f"n{next(self._ids)}") in self.nodes:
            pass
        info = self.nodes[node_id] = NodeInfo(node_id, tls=self.config.tls and self.runner.control,
                                              metrics_path=self.runner.metrics_path)
        self._set_state(info, NodeState.STARTING)
        return node_id

    def node(self, node_id: str) -> NodeInfo:
        """The node `node_id`; ClusterError naming the known ones if there is none."""
        info = self.nodes.get(node_id)
        if info is None:
            known = ", ".join(self.nodes) or "none"
            raise ClusterError(f"unknown node {node_id!r} (known: {known})")
        return info

    def live(self, node_id: str) -> Member:
        """The running process of `node_id`; ClusterError if it has none."""
        info = self.node(node_id)
        member = self.members.get(node_id)
        if member is None or not member.alive:
            raise ClusterError(f"node {node_id} is not running (state {info.state.value})")
        return member

    def ports(self) -> dict[str, int]:
        """id -> port of every node whose process runs."""
        return {
            node_id: info.port
            for node_id, info in self.nodes.items()
            if info.port and (m := self.members.get(node_id)) is not None and m.alive
        }

    def _set_state(self, info: NodeInfo, state: NodeState, **extra: Any) -> None:
        if "pid" in extra:
            info.pid = extra.pop("pid")
        if "port" in extra:
            info.port = extra.pop("port")
        info.state = state
        self.hub.emit({"event": "node", **info.as_dict(), **extra})

    # ---------------------------------------------------------------- processes

    async def start(self, node_id: str) -> None:
        """Start the process of a registered node; RUNNING once it is ready."""
        info = self.nodes[node_id]
        old = self.members.get(node_id)
        if old is not None and old.alive:
            raise ClusterError(f"node {node_id} is already running")
        member = await self.runner.launch(node_id, self._exited)
        self.members[node_id] = member
        info.exit_code = None
        info.command = self.runner.command(node_id)
        self._set_state(info, NodeState.RUNNING, pid=member.pid, port=member.port)

    def _exited(self, member: Member) -> None:
        """A node's process ended: report it; an exit nobody asked for is a failure."""
        self.on_gone(member.name)
        info = self.nodes.get(member.name)
        if info is None or self.members.get(member.name) is not member:
            return
        code = member.proc.returncode
        state = member.exit_state if member.expected_exit else NodeState.FAILED
        info.exit_code = code
        extra: dict[str, Any] = {"exit_code": code, "expected": member.expected_exit}
        if not member.expected_exit:
            extra["log"], extra["log_tail"] = self.runner.output_tail(member.name, member)
        self._set_state(info, state, **extra)

    async def stop_member(self, member: Member) -> None:
        """SIGCONT (a paused node cannot drain), then the stop signal (drain), then SIGKILL
        if it is still there after the drain timeout."""
        info = self.nodes.get(member.name)
        member.expected_exit = True
        member.exit_state = NodeState.STOPPED
        current = self.members.get(member.name) is member
        if info is not None and current and info.state != NodeState.DRAINING:
            self._set_state(info, NodeState.DRAINING)
        await member.proc.stop(self.runner.stop_signal, self.runner.drain_timeout)

    # ---------------------------------------------------------------- operations

    async def kill(self, node_id: str) -> None:
        """SIGKILL a node: no goodbye to its clients, exactly like a crash."""
        member = self.live(node_id)
        member.expected_exit = True
        member.exit_state = NodeState.KILLED
        await member.proc.stop(None)

    async def pause(self, node_id: str) -> None:
        """SIGSTOP a node: its sockets stay open but nothing answers (a hung process)."""
        member = self.live(node_id)
        info = self.nodes[node_id]
        if info.state == NodeState.PAUSED:
            return
        member.proc.pause()
        self._set_state(info, NodeState.PAUSED)

    async def resume(self, node_id: str) -> None:
        """SIGCONT a paused node."""
        member = self.live(node_id)
        info = self.nodes[node_id]
        if info.state != NodeState.PAUSED:
            raise ClusterError(f"node {node_id} is not paused (state {info.state.value})")
        member.proc.resume()
        self._set_state(info, NodeState.RUNNING)

    async def drain(self, node_id: str, wait: bool = True) -> None:
        """Ask a node to drain (close its clients with 1001 and exit); wait for the exit."""
        member = self.live(node_id)
        info = self.nodes[node_id]
        if info.state == NodeState.PAUSED:
            member.proc.resume()
        member.expected_exit = True
        member.exit_state = NodeState.STOPPED
        self._set_state(info, NodeState.DRAINING)
        await self.runner.ask_drain(node_id, member)
        if wait:
            await self._drain_deadline(node_id, member)
        else:
            self.launcher.tasks.spawn(self._drain_deadline(node_id, member), f"drain-{node_id}")

    async def _drain_deadline(self, node_id: str, member: Member) -> None:
        """SIGKILL a draining node still running after its drain timeout."""
        timeout = self.runner.drain_timeout
        if not await member.proc.wait(timeout):
            log.warning("%s still running %.1f s after drain; killing it", node_id, timeout)
            await member.proc.stop(None)

    async def restart(self, node_id: str) -> None:
        """Replace a node's process under the same id (a live one is SIGKILLed first)."""
        info = self.node(node_id)
        async with self._ops:
            member = self.members.get(node_id)
            if member is not None and member.alive:
                member.expected_exit = True
                member.exit_state = NodeState.KILLED
                await member.proc.stop(None)
            await self.balancer.remove_backend(node_id)
            self._set_state(info, NodeState.STARTING, pid=None, port=None)
            await self.start(node_id)
            await self.balancer.add_backends({node_id: self.members[node_id].port},
                                             **self.runner.health())

    async def add(self) -> str:
        """Start one more node, put it behind the balancer, return its id."""
        async with self._ops:
            node_id = self.register()
            await self.start(node_id)
            await self.balancer.add_backends({node_id: self.members[node_id].port},
                                             **self.runner.health())
            return node_id

    def _need_control(self, what: str) -> None:
        if not self.runner.control:
            raise ClusterError(f"{what} needs a harness node: the stack's nodes have no "
                               "control channel (kill, pause, drain and network faults work)")

    async def connections(self, node_id: str) -> list[dict[str, Any]]:
        """The node's open connections (conn id, user, rooms), asked over control."""
        self._need_control("listing connections")
        self.live(node_id)
        reply = await self.router.request(node_id, "connections")
        return list(reply.get("connections", []))

    async def inject(
        self, node_id: str, case_id: str, target: str = "*", **options: Any
    ) -> dict[str, Any]:
        """Have a node write a catalogue case raw to a connection, a room's members or all
        ("*"); see `Cluster.inject`."""
        from wsconsole.faults.inject import InjectError, parse_request

        self._need_control("inject")
        try:
            request = parse_request({"case": case_id, "target": target, **options})
        except InjectError as exc:
            raise ClusterError(str(exc)) from None
        self.live(node_id)
        fields = {"case": case_id, "target": request.target, **options}
        return await self.router.request(node_id, "inject", timeout=request.wait + 5.0, **fields)
