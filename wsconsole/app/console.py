"""The console's headless core: named client sessions, the demo cluster, the swarm, sampling.

The window is a thin Qt shell over one `Console` (napari style: the model knows nothing of Qt;
panels are given it and pull from it on timers). Everything long-lived is owned here, in
named tasks with strong references, and `shutdown()` stops it all (clients, cluster, swarm)
with timeouts, so closing the window never leaves a process running.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from wsconsole.app.errors import ErrorHub
from wsconsole.app.framestore import FrameStore
from wsconsole.app.intercept import ConsoleProxy
from wsconsole.app.ports import ChildOwner, ClusterPort
from wsconsole.app.profiles import Profile
from wsconsole.app.session import Session
from wsconsole.app.swarmlink import SwarmLink
from wsconsole.app.timelinemodel import SWARM_PREFIX, TimelineModel
from wsconsole.core.heartbeat import PongPolicy
from wsconsole.core.lifecycle import State
from wsconsole.core.metrics import LatencyHistogram, TimeSeries
from wsconsole.core.tasks import Tasks
from wsconsole.harness import procs
from wsconsole.harness.pump import NODE_HEADER
from wsconsole.harness.stats import ClusterSample

if TYPE_CHECKING:
    from wsconsole.core.client import ReconnectingClient
    from wsconsole.harness.cluster import ClusterConfig

log = logging.getLogger(__name__)

DEMO_ROOM = "demo"
CONSOLE_CONN = "console"
SWARM_ROOMS = 2  # the swarm's rooms are swarm-0, swarm-1; the console joins swarm-0 too
SWARM_RATE = 40  # publishes/s over the whole swarm: lively plots, light on a laptop
SWARM_LINE_LIMIT = 1 << 22  # a frames reply or a fleet batch of thousands fits in one line


class Console:
    """Owns sessions, the cluster, the swarm, the stores and every task; see the module doc."""

    def __init__(
        self,
        frame_capacity: int = 1_000_000,
        sample_interval: float = 0.5,
        errors: ErrorHub | None = None,
        token_ttl: float = 3600.0,
    ) -> None:
        self.frames = FrameStore(capacity=frame_capacity)
        self.timeline = TimelineModel()
        self.series = TimeSeries()  # the one ring the Live plots read
        self.errors = errors or ErrorHub()
        self.sessions: dict[str, Session] = {}
        self.cluster: ClusterPort | None = None  # the harness supervisor once started
        self.cluster_state = "none"  # none, starting, ready, failed, stopping, stopped
        self.stack_path: str | None = None  # the stack file the cluster runs, if any
        self.demo_swarm = 0  # simulated clients of the demo (kept for a restart)
        self.demo_shards = 0  # the demo's broker as a Valkey Cluster of N shards (0: a server)
        self.swarm: SwarmLink | None = None
        self.proxy = ConsoleProxy(self.frames, self.timeline)  # listens once started
        self.sample_interval = sample_interval
        self.token_ttl = token_ttl  # seconds each token the demo signs for the console lives
        self.on_change: list[Callable[[], None]] = []  # sessions added/removed, cluster state
        self.tasks = Tasks("wsconsole-gui", on_error=self._task_failed)
        self._closing = False
        self._last_sample: tuple[float, int, int, int] | None = None
        self._last_proxied: tuple[float, int, int] | None = None
        self._started_pids: set[int] = set()
        self._cluster_events: deque[dict[str, Any]] = deque(maxlen=500)
        self._resets_marked: set[tuple[object, object]] = set()  # (room, epoch) on the timeline
        self._owners: list[ChildOwner] = []  # other owners of children, see adopt()

    # -- tasks -------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run `coro` as a named task kept alive here; its failure is reported, not lost."""
        return self.tasks.spawn(coro, name)

    def _task_failed(self, name: str, exc: BaseException) -> None:
        label = name.removeprefix(f"{self.tasks.prefix}-")
        self.errors.report(f"{label} failed: {type(exc).__name__}: {exc}", exc)

    @property
    def closing(self) -> bool:
        """True once shutdown() began (failures of what it stops are expected then)."""
        return self._closing

    def _changed(self) -> None:
        for callback in list(self.on_change):
            try:
                callback()
            except Exception as exc:  # a view failing must not break the model
                self.errors.report(f"view update failed: {exc}", exc)

    # -- sessions ----------------------------------------------------------------------------

    def add_session(self, profile: Profile) -> Session:
        """Register a named connection (not started); ValueError if the name is taken."""
        if profile.name in self.sessions:
            raise ValueError(f"a connection named {profile.name!r} already exists")
        session = Session(profile, self)
        self.sessions[profile.name] = session
        self.timeline.lane(profile.name)
        self._changed()
        return session

    async def connect(self, name: str, profile: Profile | None = None) -> Session:
        """(Re)start the client of session `name` with `profile` (validated: ValueError)."""
        from wsconsole.app.targets import make_client
        from wsconsole.core.client import ClientOptionsError

        session = self.sessions[name]
        if profile is not None:
            if profile.name != name:
                raise ValueError("renaming a connection is done by adding a new one")
            session.profile = profile
        try:  # a WebSocket, Socket.IO or SSE client by the profile's kind, same events
            client = make_client(session.profile, name,
                                 [session, self.frames, self.timeline],
                                 token=session.token_source)
        except ClientOptionsError as exc:
            raise ValueError(str(exc)) from None
        await self.disconnect(name)
        session.client = client
        session.last_error = None
        await client.start()
        self._changed()
        return session

    async def disconnect(self, name: str, timeout: float = 5.0) -> None:
        """Stop session `name`'s client (close 1000) if it runs."""
        session = self.sessions.get(name)
        if session is None or session.client is None:
            return
        client = session.client
        try:
            async with asyncio.timeout(timeout):
                await client.stop()
        except TimeoutError:
            self.errors.report(f"{name}: the client did not stop within {timeout} s")
        self._changed()

    # -- the heartbeat lab --------------------------------------------------------------------

    def lab_client(self, name: str) -> ReconnectingClient:
        """The WebSocket client of session `name` (ValueError for another kind of target,
        or before it was started: only a WebSocket answers pings)."""
        from wsconsole.core.client import ReconnectingClient

        session = self.sessions.get(name)
        if session is None:
            raise ValueError(f"no connection named {name!r}")
        client = session.client
        if not isinstance(client, ReconnectingClient):
            what = "is not started" if client is None else "is not a WebSocket connection"
            raise ValueError(f"{name} {what}: the heartbeat lab needs a WebSocket client")
        return client

    def set_pongs(self, name: str, policy: PongPolicy) -> None:
        """Session `name` answers the server's pings per `policy` now and after reconnects
        (its profile keeps it too)."""
        self.lab_client(name).set_pongs(policy)
        self.sessions[name].profile.pongs = policy
        self.errors.info(f"{name}: {policy.describe()}")

    async def remove_session(self, name: str) -> None:
        """Disconnect and forget a connection."""
        await self.disconnect(name)
        self.sessions.pop(name, None)
        self.timeline.remove_lane(name)
        self._changed()

    # -- the demo cluster --------------------------------------------------------------------

    async def start_cluster(self, config: ClusterConfig | None = None) -> ClusterPort:
        """Start the local harness (demo timings unless a config is given)."""
        from wsconsole.harness.cluster import Cluster, ClusterConfig

        if self.cluster is not None:
            raise RuntimeError("a cluster is already running")
        cluster: ClusterPort = Cluster(config or ClusterConfig.demo())
        self.cluster = cluster
        self.cluster_state = "starting"
        cluster.subscribe(self._on_cluster_event)
        self._changed()
        try:
            await cluster.start()
        except BaseException:
            self.cluster_state = "failed"
            self._changed()
            raise
        self._started_pids.update(cluster.pids())
        self.cluster_state = "ready"
        self._changed()
        return cluster

    async def stop_cluster(self) -> None:
        """Stop the console's own connection to the cluster, the swarm and the cluster (the
        other connections stay)."""
        if self.cluster_state == "starting":
            raise RuntimeError("the cluster is still starting")
        await self.disconnect(CONSOLE_CONN)
        await self.stop_swarm()
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            self.cluster_state = "stopping"
            self._changed()
            await cluster.stop()
        self.cluster_state = "stopped" if cluster is not None else "none"
        self.stack_path = None
        self._changed()

    async def start_stack(self, path: str, swarm_clients: int = 20) -> ClusterPort:
        """Run the user's stack (a stack file) in place of any cluster: its nodes behind the
        balancer, the console's own connection to them, the swarm on its recipe."""
        from wsconsole.app.stacks import console_connection
        from wsconsole.harness.cluster import ClusterConfig
        from wsconsole.harness.stackfile import load_stack

        stack = load_stack(path)  # StackError (a ValueError) with FILE:LINE: reason
        await self.stop_cluster()
        self.stack_path = path
        cluster = await self.start_cluster(ClusterConfig.for_stack(stack))
        profile, greeting = console_connection(stack, cluster.app_url, CONSOLE_CONN)
        if CONSOLE_CONN in self.sessions:
            self.sessions[CONSOLE_CONN].profile = profile
        else:
            self.add_session(profile)
        self.sessions[CONSOLE_CONN].greeting = greeting
        await self.connect(CONSOLE_CONN)
        if swarm_clients > 0 and stack.client is not None:
            await self.start_swarm(cluster.app_url, swarm_clients, stack_path=path)
        return cluster

    def _on_cluster_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "stats":  # pushed by the supervisor as it merges the nodes' snapshots
            sample: ClusterSample = event["sample"]
            self.series.record(sample.t, sample.points())
            return
        self._cluster_events.append(event)
        pid = event.get("pid")
        if isinstance(pid, int):
            self._started_pids.add(pid)
        if kind == "node" and event.get("state") in ("killed", "paused", "draining", "failed"):
            self.timeline.fault(f"node {event.get('id')} {event.get('state')}")
        elif kind == "broker" and event.get("state") == "down":
            self.timeline.fault("broker down")
        elif kind == "net_fault" or kind == "fault":
            self.timeline.fault(str(event.get("kind") or event.get("fault") or "fault"))
        elif kind == "node_event" and event.get("kind") == "broker_reset":
            # every node with members in the room reports it: one mark per room and epoch
            reset = (event.get("room"), event.get("epoch"))
            if reset not in self._resets_marked:
                self._resets_marked.add(reset)
                self.timeline.fault(f"room {reset[0]} reset (broker lost its state)")

    async def cluster_action(self, action: str, node_id: str | None = None) -> str | None:
        """Run a supervisor command: kill/pause/resume/drain/restart(node), add, broker_*;
        returns the new node's id for "add", else None."""
        cluster = self._ready_cluster()
        if action in ("kill", "pause", "resume", "drain", "restart"):
            if not node_id:
                raise ValueError(f"{action} needs a node")
            method = getattr(cluster, action)
            if action == "drain":
                result = await method(node_id, wait=False)
            else:
                result = await method(node_id)
        elif action in ("add", "broker_kill", "broker_restart"):
            result = await getattr(cluster, action)()
        else:
            raise ValueError(f"unknown cluster action {action!r}")
        self._started_pids.update(cluster.pids())
        self.errors.info(f"cluster: {action} {node_id or ''}".strip())
        self._changed()
        return result

    async def net_fault(self, target: str, text: str) -> dict[str, Any]:
        """Apply a balancer network fault typed as text ("latency 200ms 50ms", "blackhole")
        to one node or "all"; ValueError with the parser's message for bad text."""
        from wsconsole.harness.netfaults import FaultError, fault_from_words

        try:
            kind, params = fault_from_words(text.split())
        except FaultError as exc:
            raise ValueError(str(exc)) from None
        cluster = self._ready_cluster()
        result = await cluster.net_fault(target, kind, **params)
        self.timeline.fault(f"net {text.strip()} on {target}")
        self.errors.info(f"network fault on {target}: {text.strip()}")
        return result

    async def net_clear(self, target: str, kind: str | None = None) -> dict[str, Any]:
        """Remove every network fault (or only `kind`) from `target` (a node id or "all")."""
        result = await self._ready_cluster().net_clear(target, kind)
        self.timeline.fault(f"net {kind + ' ' if kind else ''}cleared on {target}")
        return result

    async def shard_action(self, action: str, target: str) -> None:
        """An operation on the cluster broker: kill / restart a server (s1a), failover /
        partition / heal a shard (s1); marked on the Timeline like any fault."""
        cluster = self._ready_cluster()
        await cluster.shard(action, target)
        self._started_pids.update(cluster.pids())
        self.timeline.fault(f"shard {action} {target}")
        self.errors.info(f"broker cluster: {action} {target}")
        self._changed()

    async def set_sticky(self, mode: str) -> None:
        """Switch the balancer's affinity mode (ip, cookie, sid)."""
        await self._ready_cluster().set_sticky(mode)
        self.errors.info(f"balancer sticky mode: {mode}")

    def _ready_cluster(self) -> ClusterPort:
        if self.cluster is None or self.cluster_state != "ready":
            raise RuntimeError("no cluster is running")
        return self.cluster

    async def serving_node(self, conn: str = CONSOLE_CONN) -> str | None:
        """The node that holds the connection of session `conn`: asked over control, or for
        a stack's node (no control channel) as the balancer named it in its answer."""
        cluster = self.cluster
        if cluster is None:
            return None
        if self.stack_path is not None:
            session = self.sessions.get(conn)
            client = session.client if session is not None else None
            headers = getattr(client, "handshake_headers", None) or \
                getattr(client, "response_headers", None) or {}
            return headers.get(NODE_HEADER.lower())
        user = conn
        for node_id, info in list(cluster.nodes.items()):
            if str(getattr(info.state, "value", info.state)) != "running":
                continue
            try:
                conns = await cluster.connections(node_id)
            except Exception:  # a node that cannot answer does not hold it
                continue
            if any(c.get("user") == user for c in conns):
                return node_id
        return None

    async def start_demo(self, swarm_clients: int = 20, tls: bool = False,
                         broker_cluster: int | None = None) -> None:
        """The default start-up: demo cluster (wss:// with `tls`; its broker a Valkey Cluster
        of `broker_cluster` shards, or one server), the console's own client in a room, the
        swarm."""
        from wsconsole.harness.cluster import (
            DEMO_BACKOFF_CAP,
            DEMO_BACKOFF_INITIAL,
            ClusterConfig,
        )

        self.demo_swarm = swarm_clients
        if broker_cluster is not None:
            self.demo_shards = broker_cluster
        cluster = await self.start_cluster(
            ClusterConfig.demo(tls=tls, broker_cluster=self.demo_shards))
        profile = Profile(
            name=CONSOLE_CONN,
            url=cluster.url,
            token_mode="query",
            harness=True,
            rooms=[DEMO_ROOM, "swarm-0"] if swarm_clients > 0 else [DEMO_ROOM],
            backoff_initial=DEMO_BACKOFF_INITIAL,
            backoff_cap=DEMO_BACKOFF_CAP,
            backoff_jitter=0.25,
            ping_interval=cluster.config.ping_interval,
            ping_timeout=cluster.config.ping_timeout,
        )
        if CONSOLE_CONN in self.sessions:
            session = self.sessions[CONSOLE_CONN]
            session.profile = profile
        else:
            session = self.add_session(profile)
        # a fresh token signed for every connect (see Session.token_source)
        session.token_source = functools.partial(cluster.token, CONSOLE_CONN, ("*",),
                                                 self.token_ttl)
        await self.connect(CONSOLE_CONN)
        if swarm_clients > 0:
            await self.start_swarm(cluster.url, swarm_clients)

    async def restart_demo(self, tls: bool) -> None:
        """Stop the demo (the console's client, the swarm, the cluster) and start it again,
        serving wss:// or ws://: how the window switches TLS on and off."""
        await self.stop_cluster()
        self.errors.info(f"restarting the demo cluster with {'wss' if tls else 'ws'}://")
        await self.start_demo(self.demo_swarm, tls=tls)

    # -- the swarm ---------------------------------------------------------------------------

    async def start_swarm(self, url: str, clients: int, stack_path: str | None = None) -> None:
        """Start `wsconsole swarm URL --clients N --json --fleet --control` as a child
        (harness/procs.py), read and driven by a SwarmLink (app/swarmlink.py).

        It runs until stopped (a day-long load phase), one token per simulated user signed
        with the cluster's secret, the demo timings for its heartbeats and backoff (the
        swarm's defaults); on a stack (`stack_path`) its clients follow the stack's recipe
        instead.
        """
        from wsconsole.harness.auth import SECRET_ENV

        env = dict(os.environ)
        args = [url, "--clients", str(clients), "--rooms", str(min(SWARM_ROOMS, clients)),
                "--rate", str(SWARM_RATE), "--duration", "86400", "--ramp", "2",
                "--json", "--fleet", "--control"]
        if stack_path is not None:
            args += ["--stack", stack_path]
        elif self.cluster is not None:
            env[SECRET_ENV] = self.cluster.secret
            args += ["--secret-env", SECRET_ENV]
        child = await procs.spawn(procs.child_argv("swarm", *args), "swarm", env=env,
                                  stdin=True, tasks=self.tasks, limit=SWARM_LINE_LIMIT)
        self._started_pids.add(child.pid)
        self.swarm = SwarmLink(child, self.timeline, self.frames, self.tasks,
                               on_exit=self._swarm_exited)

    def _swarm_exited(self, code: int | None) -> None:
        if not self._closing:
            self.errors.report(f"the swarm exited with code {code}")

    async def fetch_swarm_frames(self, lanes: list[str], since: float, until: float) -> int:
        """Bring the kept frames of the swarm clients among `lanes` (wall-clock range) into
        the Frames view; how many were added (0 without a swarm or swarm lanes)."""
        if self.swarm is None or not any(lane.startswith(SWARM_PREFIX) for lane in lanes):
            return 0
        return await self.swarm.fetch_frames(lanes, since, until)

    async def stop_swarm(self, timeout: float = 5.0) -> None:
        """SIGTERM the swarm, SIGKILL it if it lingers."""
        swarm, self.swarm = self.swarm, None
        if swarm is not None:
            await swarm.child.stop(signal.SIGTERM, timeout)

    # -- sampling ----------------------------------------------------------------------------

    def sample_clients(self, now: float | None = None) -> bool:
        """Pull the console's own figures into the series: its sessions' frame rates,
        reconnects, heartbeat RTT and delivery latency, and the swarm's latest line.

        The plots call this from their timer (the one timer on this path); a call sooner
        than `sample_interval` after the last sample does nothing (False), so rates keep
        their span whatever the caller's pace. The cluster's figures arrive on their own,
        with every `stats` event.
        """
        now = time.time() if now is None else now
        previous = self._last_sample
        if previous is not None and now - previous[0] < self.sample_interval:
            return False
        add = self.series.add
        frames_in = sum(s.frames_in for s in self.sessions.values())
        frames_out = sum(s.frames_out for s in self.sessions.values())
        reconnects = sum(s.reconnects for s in self.sessions.values())
        swarm = self.swarm.latest if self.swarm is not None else {}
        if isinstance(swarm.get("reconnects"), int):
            reconnects += swarm["reconnects"]
        if isinstance(swarm.get("connected"), int):
            add("conns.swarm", now, swarm["connected"])
        self._last_sample = (now, frames_in, frames_out, reconnects)
        if previous is not None and now > previous[0]:
            dt = now - previous[0]
            add("client.in", now, (frames_in - previous[1]) / dt)
            add("client.out", now, (frames_out - previous[2]) / dt)
            add("reconnects", now, max(0, reconnects - previous[3]) / dt)
        self._sample_proxy(now)
        merged = LatencyHistogram()
        for session in self.sessions.values():
            merged.merge(session.take_latencies())
            session.latencies.reset()
            if session.rtt is not None and session.state is State.OPEN:
                add(f"rtt.{session.name}", now, session.rtt * 1000.0)
        percentiles = merged.percentiles((50, 95, 99))
        for key in ("p50", "p95", "p99"):
            # the swarm measures publish-to-delivery end to end; the console node-to-client
            other = swarm.get(f"{key}_latency_ms")
            own = percentiles.get(key)
            if isinstance(other, int | float):
                add(f"lat.{key}", now, float(other))
            elif own is not None:
                add(f"lat.{key}", now, own * 1000.0)
        self.series.tick()
        return True

    def _sample_proxy(self, now: float) -> None:
        """The proxied connections: how many are open, their frame rates, their round trips."""
        proxy, add = self.proxy, self.series.add
        if not proxy.running and not proxy.hub.connections:
            self._last_proxied = None
            return
        add("conns.proxied", now, proxy.open)
        frames_in, frames_out = proxy.counts()
        previous, self._last_proxied = self._last_proxied, (now, frames_in, frames_out)
        if previous is not None and now > previous[0]:
            dt = now - previous[0]
            add("client.proxied in", now, (frames_in - previous[1]) / dt)
            add("client.proxied out", now, (frames_out - previous[2]) / dt)
        for conn, rtt in proxy.rtts().items():
            add(f"rtt.{conn}", now, rtt * 1000.0)

    # -- shutdown ----------------------------------------------------------------------------

    def swarm_summary(self) -> str | None:
        """One line about the simulated clients (None when no swarm runs)."""
        return None if self.swarm is None else self.swarm.summary()

    def adopt(self, owner: ChildOwner) -> None:
        """Stop `owner` with the console and count its PIDs as started here; an owner of child
        processes (e.g. the Scenarios panel's run) has `pids() -> set[int]` and `async stop()`."""
        self._owners.append(owner)

    def started_pids(self) -> set[int]:
        """Every child PID the console started (cluster children and the swarm)."""
        pids = set(self._started_pids)
        for owner in self._owners:
            pids.update(owner.pids())
        if self.cluster is not None:
            pids.update(self.cluster.pids())
        if self.swarm is not None:
            pids.add(self.swarm.child.pid)
        return pids

    async def shutdown(self, timeout: float = 20.0) -> None:
        """Stop every client, the swarm and the cluster, then cancel what is left."""
        if self._closing:
            return
        self._closing = True
        steps: list[Coroutine[Any, Any, Any]] = [self.disconnect(n) for n in list(self.sessions)]
        steps.append(self.stop_swarm())
        steps.append(self.proxy.stop())
        steps.extend(owner.stop() for owner in self._owners)
        results = await asyncio.gather(*steps, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                self.errors.report(f"shutdown: {result}", result)
        if self.cluster is not None:
            try:
                async with asyncio.timeout(timeout):
                    await self.cluster.stop()
            except Exception as exc:
                self.errors.report(f"stopping the cluster failed: {exc}", exc)
            self.cluster_state = "stopped"
        await self.tasks.cancel_all()
        self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        """Last resort, by PID: anything we started that is still alive gets SIGKILL."""
        for pid in self._started_pids:
            if procs.alive(pid):
                log.warning("child %s outlived shutdown; killing it", pid)
                procs.kill_group(pid)


__all__ = ["CONSOLE_CONN", "DEMO_ROOM", "Console", "Session"]
