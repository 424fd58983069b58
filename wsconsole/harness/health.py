"""The balancer's health checks: `GET /healthz` on each backend, every `interval` seconds.

2xx within `timeout` = routable; anything else (draining: 503, refused, paused: accepts but
never answers) = not. A user's node (a stack) is checked on its own path: its readiness path
for a 2xx, or its protocol's path, where any HTTP answer shows the process is alive.
A SIGKILLed or SIGSTOPped node is noticed within interval + timeout
(default 0.5 + 1.0 s). A verdict that changes is reported at once (`on_change`), so the
supervisor hears of it without waiting for the next stats push. Open connections are never
cut by a health verdict: to a killed node they end by themselves.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from wsconsole.harness.pump import Backend

log = logging.getLogger("wsconsole.balancer")


def default_timeout(interval: float) -> float:
    """The check timeout for an interval when none is given: 2 intervals, within 0.2-1 s."""
    return min(1.0, max(0.2, 2 * interval))


class HealthChecks:
    """One checking loop per backend; verdicts land in `Backend.healthy`."""

    def __init__(
        self,
        interval: float,
        timeout: float,
        on_change: Callable[[Backend], None],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.tls = tls  # the backends serve TLS: check over it (https://.../healthz)
        self.interval = interval
        self.timeout = timeout
        self.on_change = on_change
        self._loops: dict[str, asyncio.Task[None]] = {}

    def start(self, backend: Backend) -> None:
        """Check `backend` every interval from now on."""
        self._loops[backend.id] = asyncio.create_task(
            self._loop(backend), name=f"health-{backend.id}"
        )

    def stop(self, backend_id: str) -> None:
        """Stop checking a backend (it was removed)."""
        task = self._loops.pop(backend_id, None)
        if task is not None:
            task.cancel()

    async def stop_all(self) -> None:
        """Stop every loop and wait for them to end."""
        tasks = list(self._loops.values())
        self._loops.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self, backend: Backend) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self.check(backend)
            await asyncio.sleep(max(0.0, self.interval - (loop.time() - started)))

    async def check(self, backend: Backend) -> None:
        """Check once now and record the verdict."""
        self.mark(backend, await self.probe(backend))

    def mark(self, backend: Backend, healthy: bool) -> None:
        """Record a verdict (also from outside: a refused connection marks it down at once)."""
        if healthy != backend.healthy:
            log.info("backend %s is now %s", backend.id, "healthy" if healthy else "unhealthy")
            backend.healthy = healthy
            self.on_change(backend)

    async def probe(self, backend: Backend) -> bool:
        """GET the backend's health path; True for a 2xx (any answer with `health_any`)
        within the timeout."""
        writer = None
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(
                    backend.host, backend.port, ssl=self.tls
                )
                writer.write(
                    f"GET {backend.health_path} HTTP/1.1\r\n"
                    f"Host: {backend.host}:{backend.port}\r\nConnection: close\r\n\r\n".encode()
                )
                await writer.drain()
                status_line = await reader.readline()
            parts = status_line.split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                return False
            return backend.health_any or parts[1].startswith(b"2")
        except (TimeoutError, OSError, ValueError):
            return False
        finally:
            if writer is not None:
                writer.transport.abort()
