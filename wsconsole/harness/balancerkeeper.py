"""The supervisor's balancer: its process, its backends, its affinity mode and network faults.

The balancer starts with the backends already running and learns every later one (an added
node, a restarted one on its new port) through the `backend_add` / `backend_remove` control
commands. A backend counts as served once the balancer's own pushed stats call it healthy:
that is what `start()` and `add()` wait for, so a client connecting right after is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wsconsole.harness.clusterconfig import (
    BALANCER,
    LOOPBACK,
    STICKY_MODES,
    ClusterConfig,
    ClusterError,
    num_arg,
)
from wsconsole.harness.events import EventHub
from wsconsole.harness.members import Launcher, Member
from wsconsole.harness.procs import child_argv
from wsconsole.harness.router import ControlRouter
from wsconsole.harness.stats import BalancerFigures

HEALTH_POLL = 0.5  # the longest wait for the next stats push while waiting for healthy backends


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


class BalancerKeeper:
    """Starts and stops the balancer, and drives it over the control channel."""

    def __init__(
        self,
        config: ClusterConfig,
        hub: EventHub,
        launcher: Launcher,
        router: ControlRouter,
        on_figures: Callable[[BalancerFigures], None],
    ) -> None:
        self.config = config
        self.hub = hub
        self.launcher = launcher
        self.router = router
        self.on_figures = on_figures  # every push (and empty figures once it is gone)
        self.info = BalancerInfo(sticky=config.sticky)
        self.latest = BalancerFigures()  # the last stats it pushed (empty while it is gone)
        self._seen = asyncio.Event()

    def _emit(self, **extra: Any) -> None:
        self.hub.emit({"event": "balancer", **self.info.as_dict(), **extra})

    def _argv(self, backends: dict[str, int]) -> list[str]:
        args = [
            "--host", LOOPBACK,
            "--port", str(self.config.port),
            "--sticky", self.config.sticky,
            "--control", self.router.address,
            "--health-interval", num_arg(self.config.health_interval),
        ]  # fmt: skip
        for node_id, port in backends.items():
            args += ["--backend", f"{node_id}={LOOPBACK}:{port}"]
        # our nodes serve TLS as well; a stack's own nodes stay plain behind the balancer
        args += self.launcher.tls_args(backends=self.config.stack is None)
        if self.config.stack is not None:
            args.append("--observe")  # the user's nodes report nothing: count on the wire
        return child_argv("balancer", *args)

    async def start(self, backends: dict[str, int]) -> None:
        """Start the balancer in front of `backends` (node id -> port), wait for its hello."""
        member, _ = await self.launcher.launch(BALANCER, self._argv(backends), self._exited)
        self.info.port = member.port
        self.info.pid = member.pid
        try:
            await self.router.wait_connected(BALANCER, self.config.ready_timeout)
        except TimeoutError:
            member.proc.kill()
            raise ClusterError("the balancer never connected to the control channel") from None
        self.info.state = "running"
        self._emit()

    def pushed(self, figures: BalancerFigures) -> None:
        """The balancer pushed its stats (backends with health and counts, faults)."""
        self.latest = figures
        self._seen.set()
        self.on_figures(figures)

    def _exited(self, member: Member) -> None:
        self.latest = BalancerFigures()
        self.on_figures(self.latest)
        if not member.expected_exit:
            self.info.state = "failed"
            self._emit(exit_code=member.proc.returncode, expected=False)

    async def stop(self) -> None:
        """SIGTERM every balancer process still alive (SIGKILL after the stop timeout)."""
        for member in [m for m in self.launcher.alive() if m.name == BALANCER]:
            member.expected_exit = True
            await member.proc.stop(signal.SIGTERM, self.config.stop_timeout)
            self.info.state = "stopped"
            self._emit()

    async def add_backends(self, backends: dict[str, int], **health: Any) -> None:
        """Put nodes (id -> port) behind the balancer and wait until it sees them healthy;
        `health`: how it checks them (`health_path`, `health_any`; default GET /healthz)."""
        for node_id, port in backends.items():
            await self.router.request(BALANCER, "backend_add", id=node_id, host=LOOPBACK,
                                      port=port, **health)
        await self._wait_healthy(list(backends))

    async def remove_backend(self, node_id: str) -> None:
        """Take a node out of the balancer (nothing to do if it was not there)."""
        with contextlib.suppress(ClusterError):
            await self.router.request(BALANCER, "backend_remove", id=node_id)

    async def _wait_healthy(self, ids: list[str]) -> None:
        """Wait until the balancer's pushed stats call every backend in `ids` healthy."""
        deadline = time.monotonic() + self.config.ready_timeout
        while True:
            backends = self.latest.backends
            if all(i in backends and backends[i].healthy for i in ids):
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"the balancer does not see {', '.join(ids)} as healthy")
            self._seen.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._seen.wait(), HEALTH_POLL)

    async def set_sticky(self, mode: str) -> None:
        """Switch the affinity mode (ip, cookie, sid)."""
        if mode not in STICKY_MODES:
            raise ClusterError(f"sticky must be one of {', '.join(STICKY_MODES)}")
        await self.router.request(BALANCER, "sticky", mode=mode)
        self.info.sticky = mode
        self._emit()

    async def net_fault(self, target: str, kind: str, **params: Any) -> dict[str, Any]:
        """Apply a network fault to one backend (node id) or "all"."""
        return await self.router.request(BALANCER, "fault", target=target, kind=kind, **params)

    async def net_clear(self, target: str, kind: str | None = None) -> dict[str, Any]:
        """Remove a network fault (every fault when `kind` is None) from a target."""
        return await self.router.request(BALANCER, "fault_clear", target=target, kind=kind)
