"""Helpers for the balancer tests (no tests here): real backends, the balancer as a subprocess.

Backends are small real `websockets` servers: `/healthz` answers 200 "ok" (503 while `healthy`
is False, like a draining node); a connection first gets `{"backend": ID}`, then every text
message is recorded and echoed, except `ticks:N:MS` which starts N "tick" messages MS apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.support import MS, ProcessRegistry, until
from wsconsole.harness.control import CONTROL_KEY_ENV, ControlServer
from wsconsole.harness.procs import child_argv

WAIT = 10.0  # generous bound (seconds, before SCALE) for anything that should happen "soon"
TIMEOUT = WAIT * 1000 * MS  # the same, scaled, for asyncio.wait_for


async def _backend_handler(backend_id: str, received: list[str], ws: ServerConnection) -> None:
    """Say who we are, then record-and-echo, or tick on request."""
    tickers: list[asyncio.Task[None]] = []

    async def tick(count: int, every: float) -> None:
        for n in range(count):
            await ws.send(f"tick {n}")
            await asyncio.sleep(every)

    try:
        await ws.send(json.dumps({"backend": backend_id}))
        async for message in ws:
            text = message if isinstance(message, str) else message.decode("latin-1")
            if text.startswith("ticks:"):
                _, count, every_ms = text.split(":")
                tickers.append(asyncio.create_task(tick(int(count), int(every_ms) / 1000)))
                continue
            received.append(text)
            await ws.send(message)
    except ConnectionClosed:
        pass  # resets and abrupt ends are what these tests provoke
    finally:
        for task in tickers:
            task.cancel()


@dataclass
class LocalBackend:
    """A websockets server in the test's own loop (fast to start; inspectable)."""

    id: str
    server: Server | None = None
    port: int = 0
    healthy: bool = True
    received: list[str] = field(default_factory=list)

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":
            if self.healthy:
                return conn.respond(HTTPStatus.OK, "ok\n")
            return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "draining\n")
        return None

    async def start(self) -> LocalBackend:
        """Listen on a free loopback port."""

        async def handler(ws: ServerConnection) -> None:
            await _backend_handler(self.id, self.received, ws)

        self.server = await serve(
            handler,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            max_size=None,
            close_timeout=500 * MS,  # stop() must not wait 10 s for a peer behind a blackhole
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Close the listening socket and every connection."""
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)
            self.server = None


BACKEND_SCRIPT = """
import asyncio, json, sys
from http import HTTPStatus
from websockets.asyncio.server import serve

async def main(backend_id):
    async def handler(ws):
        await ws.send(json.dumps({"backend": backend_id}))
        async for message in ws:
            await ws.send(message)

    def process_request(conn, request):
        if request.path == "/healthz":
            return conn.respond(HTTPStatus.OK, "ok\\n")
        return None

    async with serve(handler, "127.0.0.1", 0, process_request=process_request) as server:
        port = server.sockets[0].getsockname()[1]
        print(json.dumps({"port": port}), flush=True)
        await asyncio.Future()

asyncio.run(main(sys.argv[1]))
"""


async def readline(proc: subprocess.Popen[bytes], timeout: float = TIMEOUT) -> dict[str, Any]:
    """Next stdout line of a child, parsed as JSON (bounded in time)."""
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout)
    assert line, f"child {proc.pid} closed stdout (exit code {proc.poll()})"
    return json.loads(line)


async def start_process_backend(procs: ProcessRegistry, backend_id: str) -> tuple[int, int]:
    """A backend in its own OS process (so it can be SIGKILLed / SIGSTOPped): (port, pid)."""
    proc = procs.python("-c", BACKEND_SCRIPT, backend_id, stdout=subprocess.PIPE)
    return (await readline(proc))["port"], proc.pid


@dataclass
class BalancerProc:
    """A running balancer subprocess and the control server it reports to."""

    proc: subprocess.Popen[bytes]
    port: int
    control: ControlServer
    stats: list[dict[str, Any]]
    log_path: Path

    @property
    def url(self) -> str:
        """ws:// URL of the balancer."""
        return f"ws://127.0.0.1:{self.port}/"

    async def request(self, cmd: str, **fields: Any) -> dict[str, Any]:
        """Send a control command and return the reply (raises ControlError)."""
        return await self.control.request("balancer", cmd, timeout=TIMEOUT, **fields)

    async def fault(self, target: str, kind: str, **params: Any) -> dict[str, Any]:
        """Switch a network fault on."""
        return await self.request("fault", target=target, kind=kind, **params)

    async def clear(self, target: str, kind: str | None = None) -> dict[str, Any]:
        """Switch faults off (kind None: every kind on target)."""
        return await self.request("fault_clear", target=target, kind=kind)

    async def wait_health(self, backend_id: str, healthy: bool) -> float:
        """Seconds until the pushed stats show `backend_id` with this health."""
        started = time.monotonic()

        def shows() -> bool:
            entry = self.stats[-1]["backends"].get(backend_id) if self.stats else None
            return entry is not None and entry["healthy"] is healthy

        await until(shows, f"{backend_id} healthy={healthy} in the pushed stats", WAIT)
        return time.monotonic() - started

    async def stats_until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first pushed backend stats satisfying `predicate`."""
        await until(
            lambda: bool(self.stats) and predicate(self.stats[-1]["backends"]),
            "pushed stats matching",
            WAIT,
            detail=lambda: self.stats[-1:],
        )
        return self.stats[-1]["backends"]

    def log(self) -> str:
        """What the balancer wrote on stderr so far."""
        return self.log_path.read_text(errors="replace")


StartBalancer = Callable[..., Any]


@pytest.fixture
async def start_balancer(
    procs: ProcessRegistry, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    """Factory: a balancer started via child_argv, as the supervisor does, plus a control server."""
    started: list[BalancerProc] = []

    async def start(
        backends: dict[str, int],
        sticky: str = "ip",
        health_interval: float = 0.2,
        extra: tuple[str, ...] = (),
        argv_prefix: list[str] | None = None,
    ) -> BalancerProc:
        key = secrets.token_hex(16)
        stats: list[dict[str, Any]] = []

        def on_message(peer: str, message: dict[str, Any]) -> None:
            if message.get("type") == "stats":
                stats.append(message)

        control = ControlServer(key, on_message)
        control_port = await control.start()
        args = ["--port", "0", "--sticky", sticky, "--control", f"127.0.0.1:{control_port}"]
        args += ["--health-interval", str(health_interval), *extra]
        for backend_id, port in backends.items():
            args += ["--backend", f"{backend_id}=127.0.0.1:{port}"]
        argv = [*(argv_prefix or child_argv("balancer")), *args]
        log_path = tmp_path / f"balancer{len(started)}.log"
        env = {**os.environ, CONTROL_KEY_ENV: key}
        with log_path.open("wb") as log_file:
            proc = procs.start(argv, stdout=subprocess.PIPE, stderr=log_file, env=env)
        listening = await readline(proc)
        assert listening["event"] == "listening" and listening["pid"] == proc.pid
        await control.wait_connected("balancer", TIMEOUT)
        handle = BalancerProc(proc, listening["port"], control, stats, log_path)
        started.append(handle)
        return handle

    try:
        yield start
    finally:
        for handle in started:
            if handle.proc.poll() is None:
                handle.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(handle.proc.wait, 5)
            await handle.control.close()


@pytest.fixture
async def local_backends() -> AsyncIterator[Callable[..., Any]]:
    """Factory: start N in-process backends named n1..nN; all stopped at teardown."""
    made: list[LocalBackend] = []

    async def make(count: int, prefix: str = "n") -> dict[str, LocalBackend]:
        result = {}
        for n in range(len(made) + 1, len(made) + count + 1):
            backend = await LocalBackend(f"{prefix}{n}").start()
            made.append(backend)
            result[backend.id] = backend
        return result

    try:
        yield make
    finally:
        for backend in made:
            await backend.stop()


async def open_client(
    url: str,
    source: str = "127.0.0.1",
    **kwargs: Any,
) -> tuple[ClientConnection, str]:
    """Connect through the balancer from `source`; returns the connection and its backend id."""
    kwargs.setdefault("open_timeout", TIMEOUT)
    kwargs.setdefault("compression", None)  # byte counts and bandwidth tests see real sizes
    ws = await connect(url, local_addr=(source, 0), proxy=None, **kwargs)
    hello = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    return ws, hello["backend"]


async def served_by(url: str, source: str = "127.0.0.1", **kwargs: Any) -> str:
    """Which backend serves a fresh connection from `source` (the connection is closed)."""
    ws, backend_id = await open_client(url, source, **kwargs)
    await ws.close()
    return backend_id


def raw_exchange(port: int, payload: bytes, timeout: float = TIMEOUT) -> bytes:
    """Send raw bytes to the balancer and read until it closes (a blocking helper)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
        return b"".join(chunks)


__all__ = ["local_backends", "start_balancer", "sys"]
