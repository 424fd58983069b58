"""`wsconsole selftest` (also `wsconsole --self-test`): prove an installation works end to end.

Runs the real thing, in order, each step bounded by `--timeout`: find the broker (the Valkey
binary shipped in the package, `redis-server` on PATH, or `--redis URL`), start the harness
(broker, two nodes, the balancer: every one an OS process started through `child_argv`, so a
packaged bundle proves it can run its own sub-commands), connect two clients pinned to
different nodes, publish on one and receive on the other (the message crosses the broker),
SIGKILL the receiver's node and see its client reconnect and receive again, stop everything
and check no child is left, and load Qt in a child process (a broken Qt plugin aborts a
process, so it must not be this one). Exit 0 when every step passed, 1 naming the first step
that failed, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from wsconsole import __version__
from wsconsole.commands.argtypes import positive
from wsconsole.commands.output import Output, fail_usage
from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.client import ClientOptions, ReconnectingClient
from wsconsole.core.events import Direction, FrameRecord
from wsconsole.core.lifecycle import State, Transition
from wsconsole.errors import WsconsoleError
from wsconsole.harness import procs
from wsconsole.harness.broker import BrokerError, find_server_binary, url_ping
from wsconsole.harness.cluster import (
    DEMO_BACKOFF_CAP,
    DEMO_BACKOFF_INITIAL,
    REDIS_SCHEMES,
    Cluster,
    ClusterConfig,
)
from wsconsole.harness.procs import child_argv
from wsconsole.harness.routing import rendezvous

HELP = "Check this installation end to end: broker, nodes, balancer, client, failover, Qt."

ROOM = "selftest"
STEPS = ("broker", "cluster", "connect", "relay", "failover", "stop", "qt")


class StepFailed(WsconsoleError):
    """A self-test step did not do what it should; the message says what was seen."""


@dataclass
class Inbox:
    """Observer keeping a client's received `message` ids and its state changes."""

    ids: list[str] = field(default_factory=list)
    arrived: dict[str, float] = field(default_factory=dict)  # id -> monotonic arrival time
    route: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (pub_node, node)
    states: list[State] = field(default_factory=list)
    joined: int = 0  # `joined` replies seen (one per (re)join of the room)

    def __call__(self, event: object) -> None:
        """Record harness messages and transitions; ignore the rest."""
        if isinstance(event, FrameRecord) and event.direction == Direction.IN and event.payload:
            try:
                frame = orjson.loads(event.payload)
            except orjson.JSONDecodeError:
                return
            if isinstance(frame, dict) and frame.get("type") == "message":
                self.ids.append(str(frame.get("id")))
                self.arrived[str(frame.get("id"))] = time.monotonic()
                self.route[str(frame.get("id"))] = (str(frame.get("pub_node")),
                                                    str(frame.get("node")))
            elif isinstance(frame, dict) and frame.get("type") == "joined":
                self.joined += 1
        elif isinstance(event, Transition):
            self.states.append(event.state)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of `wsconsole selftest`."""
    parser.add_argument("--redis", metavar="URL",
                        help="use this Redis-protocol broker instead of starting one")
    parser.add_argument("--timeout", type=positive, default=60.0, metavar="SECONDS",
                        help="limit for each step (default 60)")
    parser.add_argument("--no-qt", action="store_true",
                        help="skip the Qt step (a machine without Qt's system libraries)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--qt-check", action="store_true", help=argparse.SUPPRESS)


async def _until(predicate: Callable[[], bool], what: str, timeout: float) -> None:
    """Poll `predicate` until true, else StepFailed naming `what`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise StepFailed(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)


def _sid_for(node_id: str, node_ids: list[str]) -> str:
    """A `sid` query value the balancer (sticky sid) sends to `node_id`."""
    for n in range(10_000):
        sid = f"selftest-{n}"
        if rendezvous("sid:" + sid, node_ids) == node_id:
            return sid
    raise StepFailed(f"no connection id maps onto node {node_id}")


class SelfTest:
    """The steps, sharing the cluster and the clients; `run()` returns the exit code."""

    def __init__(self, args: argparse.Namespace, out: Output) -> None:
        self.args = args
        self.out = out
        self.timeout: float = args.timeout
        self.cluster: Cluster | None = None
        self.clients: dict[str, ReconnectingClient] = {}
        self.inboxes: dict[str, Inbox] = {}
        self.homes: dict[str, str] = {}
        self.pids: set[int] = set()
        self.log_dir = tempfile.TemporaryDirectory(prefix="wsconsole-selftest-")

    async def step(self, name: str, action: Callable[[], Awaitable[str]]) -> None:
        """Run one step within the timeout and print its outcome; StepFailed when it fails."""
        began = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                detail = await action()
        except StepFailed as exc:
            detail = str(exc)
        except TimeoutError:
            detail = f"did not finish within {self.timeout:g} s"
        except (OSError, RuntimeError, ValueError, BrokerError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
        else:
            seconds = round(time.monotonic() - began, 3)
            self.out.event("step", f"ok    {name:9} {detail} ({seconds:.1f} s)",
                           step=name, ok=True, detail=detail, seconds=seconds)
            return
        seconds = round(time.monotonic() - began, 3)
        self.out.event("step", f"FAIL  {name:9} {detail}",
                       step=name, ok=False, detail=detail, seconds=seconds)
        raise StepFailed(name)

    # -- the steps

    async def broker(self) -> str:
        """The broker exists: a reachable --redis URL, or a server binary to start."""
        url = self.args.redis
        if url:
            if not url.startswith(REDIS_SCHEMES):
                raise StepFailed(f"not a Redis URL: {url!r}")
            if not await asyncio.to_thread(url_ping, url, min(self.timeout, 3.0)):
                raise StepFailed(f"no Redis-protocol server answers PING at {url}")
            return f"{url} answers PING"
        binary = await asyncio.to_thread(find_server_binary)
        if not binary.is_file() or not os.access(binary, os.X_OK):
            raise StepFailed(f"broker binary {binary} is missing or not executable")
        return f"server binary {binary}"

    async def start_cluster(self) -> str:
        """Broker, two nodes and the balancer (sticky by connection id), demo timings."""
        config = ClusterConfig.demo(nodes=2, redis_url=self.args.redis, sticky="sid",
                                    health_interval=0.25, ready_timeout=self.timeout,
                                    log_dir=self.log_dir.name)
        self.cluster = Cluster(config)
        await self.cluster.start()
        self.pids |= set(self.cluster.pids())
        nodes = ", ".join(f"{i} pid {n.pid}" for i, n in self.cluster.nodes.items())
        return (f"broker {self.cluster.broker.url}, nodes {nodes}, balancer "
                f"{self.cluster.url} pid {self.cluster.balancer.pid}")

    async def connect(self) -> str:
        """Two harness clients through the balancer, each pinned to its own node."""
        cluster = self._cluster()
        node_ids = list(cluster.nodes)
        for name, node_id in zip(("sender", "receiver"), node_ids, strict=True):
            inbox = Inbox()
            sid = _sid_for(node_id, node_ids)
            options = ClientOptions(
                url=f"{cluster.url}/?sid={sid}",
                token=lambda name=name: cluster.token(name),
                harness=True,
                rooms=[ROOM],
                backoff=BackoffPolicy(initial=DEMO_BACKOFF_INITIAL, cap=DEMO_BACKOFF_CAP,
                                      jitter=0.2),
                ping_interval=cluster.config.ping_interval,
                ping_timeout=cluster.config.ping_timeout,
            )
            client = ReconnectingClient(options, name=name, observers=[inbox])
            self.clients[name], self.inboxes[name], self.homes[name] = client, inbox, node_id
            await client.start()
        for name, client in self.clients.items():
            if await client.wait_state(State.OPEN, self.timeout) is None:
                raise StepFailed(f"{name} did not open")
            inbox = self.inboxes[name]
            await _until(lambda inbox=inbox: inbox.joined > 0, f"{name} to join {ROOM}",
                         self.timeout)
        return ", ".join(f"{n} on node {self.homes[n]}" for n in self.clients)

    async def _relay_once(self, what: str, cross: bool) -> str:
        """Publish from the sender until the receiver gets that message id; with `cross`,
        it must have been delivered by another node than the one it was published on."""
        sender, receiver = self.clients["sender"], self.inboxes["receiver"]
        deadline = time.monotonic() + self.timeout
        while True:
            ident = f"{what}-{uuid.uuid4().hex[:8]}"
            began = time.monotonic()
            await sender.publish(ROOM, {"selftest": what}, id=ident)
            try:
                await _until(lambda ident=ident: ident in receiver.ids, "delivery", 2.0)
            except StepFailed:
                # the receiver's join may still be on its way; a fresh message proves it
                if time.monotonic() > deadline:
                    raise StepFailed(f"the receiver never got a message published by the "
                                     f"sender ({what})") from None
                continue
            published_on, delivered_by = receiver.route[ident]
            if cross and published_on == delivered_by:
                raise StepFailed(f"message {ident} was published and delivered by the same node "
                                 f"{delivered_by}: it did not cross the broker")
            return (f"{(receiver.arrived[ident] - began) * 1000:.1f} ms "
                    f"({published_on} -> broker -> {delivered_by})")

    async def relay(self) -> str:
        """Publish on one node, receive on the other: the message crossed the broker."""
        took = await self._relay_once("relay", cross=True)
        return f"published by the sender, received by the receiver in {took}"

    async def failover(self) -> str:
        """SIGKILL the receiver's node; its client reconnects elsewhere and receives again."""
        cluster, receiver = self._cluster(), self.clients["receiver"]
        victim = self.homes["receiver"]
        inbox = self.inboxes["receiver"]
        before = len(inbox.states)
        joins = inbox.joined
        await cluster.kill(victim)
        await _until(lambda: State.RECONNECTING in inbox.states[before:],
                     "the receiver to notice the killed node", self.timeout)
        if await receiver.wait_state(State.OPEN, self.timeout) is None:
            raise StepFailed("the receiver did not reconnect")
        await _until(lambda: inbox.joined > joins, "the receiver to rejoin", self.timeout)
        took = await self._relay_once("failover", cross=False)
        seen = " > ".join(s.value for s in inbox.states[before:])
        return f"node {victim} killed; receiver {seen}; received again in {took}"

    async def stop(self) -> str:
        """Stop clients and cluster; no child process may be left."""
        await self._close()
        await asyncio.sleep(0)
        left = [pid for pid in self.pids if procs.alive(pid)]
        if left:
            raise StepFailed(f"processes still alive after stop: {left}")
        return f"{len(self.pids)} processes stopped"

    async def qt(self) -> str:
        """Qt loads and draws in a child process (its platform plugin may abort it)."""
        child = await procs.spawn(child_argv("selftest", "--qt-check"), "qt-check",
                                  stderr_lines=20)
        try:
            stdout = await child.output(self.timeout)
        except TimeoutError:
            raise StepFailed(f"the Qt check did not finish within {self.timeout:g} s") from None
        if child.returncode != 0:
            tail = list(child.stderr_tail) or stdout.decode("utf-8", "replace").splitlines()
            raise StepFailed(f"Qt check exited with {child.returncode}: {' | '.join(tail[-3:])}")
        return stdout.decode().strip()

    # -- driving

    def _cluster(self) -> Cluster:
        if self.cluster is None:
            raise StepFailed("the cluster is not running")
        return self.cluster

    async def _close(self) -> None:
        for client in self.clients.values():
            await client.stop()
        self.clients.clear()
        if self.cluster is not None:
            self.pids |= set(self.cluster.pids())
            await self.cluster.stop()
            self.cluster = None

    async def run(self) -> int:
        """Every step in order; stop at the first failure (cleaning up) and name it."""
        self.out.event("selftest", f"wsconsole {__version__} self-test ({sys.platform}, "
                       f"{'bundle' if getattr(sys, 'frozen', False) else 'python'})",
                       version=__version__, frozen=bool(getattr(sys, "frozen", False)))
        plan: list[tuple[str, Callable[[], Awaitable[str]]]] = [
            ("broker", self.broker), ("cluster", self.start_cluster),
            ("connect", self.connect), ("relay", self.relay),
            ("failover", self.failover), ("stop", self.stop),
        ]
        if not self.args.no_qt:
            plan.append(("qt", self.qt))
        try:
            for name, action in plan:
                await self.step(name, action)
        except StepFailed as exc:
            self.out.event("result", f"self-test FAILED at step {exc}", ok=False,
                           failed_step=str(exc))
            return 1
        finally:
            await self._close()
            self.log_dir.cleanup()
        self.out.event("result", "self-test passed", ok=True, failed_step=None)
        return 0


def qt_check() -> int:
    """Create the QApplication, the app icon and a pyqtgraph plot; print what loaded."""
    from PySide6 import __version__ as pyside_version
    from PySide6.QtCore import qVersion
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    import pyqtgraph

    from wsconsole.gui.icon import app_icon

    icon = app_icon()
    plot = pyqtgraph.PlotWidget()
    plot.plot([0, 1, 2], [0, 1, 0])
    plot.resize(200, 120)
    image = plot.grab().toImage()
    if icon.isNull() or image.isNull():
        print("Qt could not draw", file=sys.stderr)
        return 1
    platform = QApplication.platformName() if isinstance(app, QApplication) else "?"
    print(f"Qt {qVersion()}, PySide6 {pyside_version}, platform {platform}, drew a plot")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the self-test (or, in the Qt child, only the Qt check)."""
    if args.qt_check:
        return qt_check()
    if args.redis is not None and not args.redis.startswith(REDIS_SCHEMES):
        return fail_usage(f"not a Redis URL (redis://, rediss://, valkey:// or unix://): "
                          f"{args.redis!r}")
    out = Output(args.json)
    return asyncio.run(SelfTest(args, out).run())
