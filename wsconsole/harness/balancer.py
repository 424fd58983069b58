"""The harness's sticky load balancer: an asyncio TCP proxy in its own OS process.

Run as ``python -m wsconsole.harness.balancer`` or ``wsconsole balancer``::

    --host 127.0.0.1 --port P (0: a free port) --backend ID=HOST:PORT (repeatable)
    --sticky ip|cookie|sid [--control HOST:PORT] [--health-interval 0.5] [--health-timeout T]
    [--head-timeout 5]

Once listening it prints ONE JSON line on stdout, ``{"event": "listening", "port", "pid"}``;
logs go to stderr. SIGTERM or SIGINT stops it; so does losing its control channel (a balancer
never outlives its supervisor).

Per connection: read the client's HTTP request head (at most ``MAX_HEAD`` bytes within
``HEAD_TIMEOUT`` seconds; garbage or oversize -> 400, too slow -> 408, then close), pick a
backend, forward the head (plus ``X-Forwarded-For``) and pipe bytes both ways.

Affinity (``--sticky``), always over HEALTHY backends only, by rendezvous (highest random weight)
hashing, so a dead backend's clients spread over the others while everyone else keeps their node:

- ``ip``: the client's source address (clients may come from distinct 127.x.y.z addresses);
- ``sid``: the ``sid`` query parameter of the request target (no ``sid``: as ``ip``);
- ``cookie``: a ``wsc_node=ID`` cookie naming a healthy backend wins; otherwise the backend with
  the fewest open connections is chosen and ``Set-Cookie: wsc_node=ID`` is injected into its
  response head (the 101), so the client's later requests come back to it.

No healthy backend -> 503. A backend that refuses the TCP connection is marked unhealthy at once
and the next one is tried (-> 502 when none accepts).

Health: every ``--health-interval`` seconds ``GET /healthz`` on each backend with a short timeout;
200 = routable, anything else (draining, refused, paused: accepts but never answers) = not. A
SIGKILLed or SIGSTOPped node is noticed within interval + timeout (default 0.5 + 1.0 s). Open
connections are never cut by a health verdict: to a killed node they end by themselves.

Control (``--control``, key in env ``WSCONSOLE_CONTROL_KEY``): a ``ControlClient(peer="balancer")``
pushes every 0.25 s ``{"type": "stats", "t", "sticky", "backends": {id: {"healthy", "connections",
"total", "bytes_up", "bytes_down", "address"}}, "faults": [...], "rejected": {status: n}}`` and
answers the commands ``stats``; ``backend_add {id, host, port}``; ``backend_remove {id}`` (its open
connections are left to end by themselves); ``fault {target, kind, ...params}``;
``fault_clear {target, kind?}``; ``sticky {mode}``. Faults are documented in
``wsconsole.harness.netfaults``.

Connection ends: a clean end of stream in one direction is passed on as a half-close and the
other direction gets up to ``HALF_CLOSE_TIMEOUT`` s to finish; a socket error ends both sides. A
connection whose peers both ended their sending side while a fault stalls it is closed (its
held bytes could never be read). Stats are also pushed at once when a backend's health flips.

The pipe's fast path (no fault on the backend, nothing queued) is: read up to 64 KiB, count,
one attribute check, write, drain. Only a faulted backend's chunks go through the delay queue.
Measured on the shared 2-core box (64 KiB bulk, one stream): direct ~850 MB/s, through the
balancer ~780-870 MB/s, the fault path with a 0 ms latency fault ~560-870 MB/s (noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from wsconsole.harness.control import CONTROL_KEY_ENV, ControlClient
from wsconsole.harness.netfaults import (
    ALL,
    DOWN,
    UP,
    ActiveFaults,
    FaultBoard,
    Reset,
    parse_fault,
)
from wsconsole.harness.shaper import ShapedWriter

log = logging.getLogger("wsconsole.balancer")

STICKY_MODES = ("ip", "cookie", "sid")
COOKIE_NAME = "wsc_node"
MAX_HEAD = 16 * 1024
HEAD_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
HALF_CLOSE_TIMEOUT = 30.0
CHUNK = 64 * 1024
STATS_INTERVAL = 0.25
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


# ---------------------------------------------------------------------------------------------
# Pure logic: request heads, hashing, backend choice
# ---------------------------------------------------------------------------------------------


class HeadError(ValueError):
    """The client's request head is not valid HTTP/1.x (answered with 400)."""


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A parsed HTTP/1.x request head."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """First value of header `name` (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def cookie(self, name: str) -> str | None:
        """Value of cookie `name` across every Cookie header, or None."""
        for key, value in self.headers:
            if key.lower() != "cookie":
                continue
            for part in value.split(";"):
                cookie_name, sep, cookie_value = part.strip().partition("=")
                if sep and cookie_name == name:
                    return cookie_value.strip().strip('"')
        return None

    def query(self, name: str) -> str | None:
        """First value of query parameter `name` in the target, or None."""
        values = parse_qs(urlsplit(self.target).query).get(name)
        return values[0] if values else None


def find_head_end(buffer: bytes | bytearray) -> int:
    """Index just past the blank line ending an HTTP head, or -1 if not there yet."""
    index = buffer.find(b"\r\n\r\n")
    return -1 if index < 0 else index + 4


def parse_request_head(head: bytes) -> RequestHead:
    """Parse a request head ending with CRLF CRLF; raises HeadError on anything malformed."""
    if not head.endswith(b"\r\n\r\n"):
        raise HeadError("request head is not terminated by an empty line")
    lines = head[:-4].decode("latin-1").split("\r\n")
    if any(_CONTROL.search(line) for line in lines):
        raise HeadError("control characters in request head")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HeadError("malformed request line")
    method, target, version = parts
    if not method or not set(method) <= _TOKEN:
        raise HeadError("malformed method")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HeadError(f"unsupported HTTP version {version[:16]!r}")
    if not (target.startswith("/") or target.startswith(("http://", "https://"))):
        raise HeadError("malformed request target")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or not set(name) <= _TOKEN:
            raise HeadError("malformed header line")
        headers.append((name, value.strip(" \t")))
    return RequestHead(method, target, version, tuple(headers))


def with_header(head: bytes, name: str, value: str) -> bytes:
    """`head` (ending CRLF CRLF) with one more header line before the blank line."""
    return head[:-2] + f"{name}: {value}\r\n\r\n".encode("latin-1")


def inject_cookie(response_head: bytes, backend_id: str) -> bytes:
    """A backend's response head with `Set-Cookie: wsc_node=ID` added after the status line."""
    if not response_head.startswith(b"HTTP/1."):
        return response_head
    line_end = response_head.find(b"\r\n")
    cookie = f"Set-Cookie: {COOKIE_NAME}={backend_id}; Path=/; HttpOnly; SameSite=Lax\r\n"
    return response_head[: line_end + 2] + cookie.encode("latin-1") + response_head[line_end + 2 :]


def rendezvous_score(key: str, backend_id: str) -> int:
    """Highest-random-weight score of (key, backend): a stable 64-bit hash."""
    digest = hashlib.blake2b(f"{key}\x00{backend_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous(key: str, backend_ids: Sequence[str]) -> str | None:
    """The backend with the highest score for `key`; removing one moves only its own keys."""
    if not backend_ids:
        return None
    return max(backend_ids, key=lambda backend_id: rendezvous_score(key, backend_id))


def http_response(status: int, body: str) -> bytes:
    """A complete, closing plain-text HTTP/1.1 response."""
    payload = (body.rstrip("\n") + "\n").encode()
    return (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + payload


def parse_backend(text: str) -> tuple[str, str, int]:
    """Parse `ID=HOST:PORT` (raises ValueError with a clear message)."""
    backend_id, sep, address = text.partition("=")
    host, colon, port_text = address.rpartition(":")
    if not sep or not backend_id or not colon or not host:
        raise ValueError(f"backend must look like ID=HOST:PORT, got {text!r}")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"backend port must be 1..65535, got {port_text!r}")
    return backend_id, host, int(port_text)


def parse_hostport(text: str) -> tuple[str, int]:
    """Parse `HOST:PORT` (raises ValueError with a clear message)."""
    host, colon, port_text = text.rpartition(":")
    if not colon or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port_text)


# ---------------------------------------------------------------------------------------------
# Backends and the byte pipe
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Backend:
    """One node behind the balancer, with its health, counters and effective faults."""

    id: str
    host: str
    port: int
    healthy: bool = False
    connections: int = 0
    total: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    faults: ActiveFaults | None = None
    open: set[Connection] = field(default_factory=set)

    def stats(self) -> dict[str, Any]:
        """This backend's stats entry."""
        return {
            "healthy": self.healthy,
            "connections": self.connections,
            "total": self.total,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "address": f"{self.host}:{self.port}",
        }


class Pipe:
    """One direction of a proxied connection: read, count, hand to the shaped writer."""

    def __init__(
        self,
        conn: Connection,
        direction: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        initial: bytes = b"",
        cookie_for: str | None = None,
    ) -> None:
        self.conn = conn
        self.direction = direction
        self.reader = reader
        self.initial = initial
        self.cookie_for = cookie_for  # inject the affinity cookie into the first response head
        self.reader_done = False
        self.out = ShapedWriter(
            writer, direction, faults=lambda: conn.backend.faults, changed=conn.balancer.changed,
            stuck=conn.sources_ended, abort=conn.abort, name=conn.name)

    async def run(self) -> bool:
        """Pump until the source ends and all it sent was delivered, then half-close the sink.

        Returns True for that clean end, False when a socket failed.
        """
        backend = self.conn.backend
        out = self.out
        up = self.direction == UP
        try:
            if self.initial:
                out.write(self.initial)
            if self.cookie_for is not None:
                await self._read_response_head()
            read = self.reader.read
            while data := await read(CHUNK):
                if up:
                    backend.bytes_up += len(data)
                else:
                    backend.bytes_down += len(data)
                out.write(data)
                await out.drain()
            self.reader_done = True
            self.conn.reader_finished()
            out.write_eof()
            await out.flushed()
            return True
        except (ConnectionError, OSError) as exc:
            log.debug("%s %s: %r", self.conn.name, self.direction, exc)
            return False

    async def _read_response_head(self) -> None:
        """Read the backend's response head (bounded) and inject the cookie into it."""
        backend_id, self.cookie_for = self.cookie_for, None
        buffer = b""
        while (end := find_head_end(buffer)) < 0 and len(buffer) < MAX_HEAD:
            data = await self.reader.read(CHUNK)
            if not data:
                break
            self.conn.backend.bytes_down += len(data)
            buffer += data
        if end >= 0 and backend_id is not None:
            buffer = inject_cookie(buffer[:end], backend_id) + buffer[end:]
        if buffer:
            self.out.write(buffer)


def _clean(task: asyncio.Task[bool]) -> bool:
    """Whether a finished pipe task ended cleanly (delivered its end of stream)."""
    return not task.cancelled() and task.exception() is None and task.result()


class Connection:
    """A client socket paired with a backend socket, and its two pipes."""

    _ids = itertools.count(1)

    def __init__(
        self,
        balancer: Balancer,
        backend: Backend,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        head: bytes,
        cookie_for: str | None,
    ) -> None:
        self.name = f"c{next(self._ids)}"
        self.balancer = balancer
        self.backend = backend
        self.client_writer = client[1]
        self.server_writer = server[1]
        self.up = Pipe(self, UP, client[0], server[1], initial=head)
        self.down = Pipe(self, DOWN, server[0], client[1], cookie_for=cookie_for)
        self._done = asyncio.Event()

    def reader_finished(self) -> None:
        """End the connection if both peers left while held bytes can never flow (a stall)."""
        faults = self.backend.faults
        if (
            self.sources_ended()
            and faults is not None
            and (faults.stalls(UP) or faults.stalls(DOWN))
        ):
            self._done.set()

    def sources_ended(self) -> bool:
        """Whether both peers have ended their sending side."""
        return self.up.reader_done and self.down.reader_done

    def abort(self) -> None:
        """End now, without flushing."""
        self._done.set()
        for writer in (self.client_writer, self.server_writer):
            writer.transport.abort()

    def reset(self) -> None:
        """Reset both sides: SO_LINGER 0 then close, so each peer sees an RST."""
        for writer in (self.client_writer, self.server_writer):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.abort()

    async def run(self) -> None:
        """Pipe both ways until both directions ended, a socket failed, or abort.

        A clean end of one direction is passed on as a half-close; the other direction then gets
        at most HALF_CLOSE_TIMEOUT seconds to end too (a paused peer cannot pin a connection).
        """
        up = asyncio.create_task(self.up.run(), name=f"{self.name}-up")
        down = asyncio.create_task(self.down.run(), name=f"{self.name}-down")
        done = asyncio.create_task(self._done.wait(), name=f"{self.name}-done")
        tasks = [up, down, done]
        try:
            finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            ended = [task for task in (up, down) if task in finished]
            if done not in finished and len(ended) == 1 and _clean(ended[0]):
                rest = [task for task in tasks if task not in finished]
                await asyncio.wait(
                    rest, timeout=HALF_CLOSE_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            for task in tasks:
                task.cancel()
            for writer in (self.client_writer, self.server_writer):
                writer.close()
            await asyncio.gather(*tasks, return_exceptions=True)
            for pipe in (self.up, self.down):
                pipe.out.cancel()


# ---------------------------------------------------------------------------------------------
# The balancer
# ---------------------------------------------------------------------------------------------


@dataclass
class BalancerConfig:
    """Everything the balancer needs; every limit explicit."""

    host: str = "127.0.0.1"
    port: int = 0
    backends: list[tuple[str, str, int]] = field(default_factory=list)
    sticky: str = "ip"
    control: tuple[str, int] | None = None
    health_interval: float = 0.5
    health_timeout: float | None = None  # None: min(1.0, max(0.2, 2 * health_interval))
    head_timeout: float = HEAD_TIMEOUT
    max_head: int = MAX_HEAD


class Balancer:
    """The proxy: accepts clients, routes them, checks health, applies faults, reports stats."""

    def __init__(self, config: BalancerConfig) -> None:
        if config.sticky not in STICKY_MODES:
            raise ValueError(f"sticky mode must be one of {', '.join(STICKY_MODES)}")
        self.config = config
        self.sticky = config.sticky
        self.backends: dict[str, Backend] = {}
        self.board = FaultBoard()
        self.rejected: dict[int, int] = {}
        self.port = 0
        self._server: asyncio.Server | None = None
        self._health_tasks: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()
        self._push_now = asyncio.Event()
        self._control: ControlClient | None = None
        self.stopped = asyncio.Event()
        for backend_id, host, port in config.backends:
            if backend_id in self.backends:
                raise ValueError(f"duplicate backend id {backend_id!r}")
            self.backends[backend_id] = Backend(backend_id, host, port)

    @property
    def health_timeout(self) -> float:
        """How long a health check may take before the backend counts as down."""
        if self.config.health_timeout is not None:
            return self.config.health_timeout
        return min(1.0, max(0.2, 2 * self.config.health_interval))

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> int:
        """Check every backend once, listen, start health loops and control; returns the port."""
        await asyncio.gather(*(self._check_once(b) for b in self.backends.values()))
        # a deep accept queue: a reconnect storm arrives at once (asyncio's default is 100,
        # beyond which the kernel drops or resets connections)
        self._server = await asyncio.start_server(
            self._accept, self.config.host, self.config.port, limit=CHUNK, backlog=4096
        )
        self.port = self._server.sockets[0].getsockname()[1]
        for backend in self.backends.values():
            self._start_health(backend)
        if self.config.control is not None:
            key = os.environ.get(CONTROL_KEY_ENV, "")
            self._control = ControlClient("balancer", key, self._command)
            await self._control.connect(*self.config.control)
            self._spawn(self._push_stats(), "balancer-stats")
        return self.port

    async def stop(self) -> None:
        """Stop listening, end every connection and background task."""
        self.stopped.set()
        if self._server is not None:
            self._server.close()
        for backend in self.backends.values():
            for conn in list(backend.open):
                conn.abort()
        for task in [*self._health_tasks.values(), *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._health_tasks.values(), *self._tasks, return_exceptions=True)
        if self._control is not None:
            await self._control.close()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def changed(self) -> None:
        """Wait until the faults change (stalled pipes wake up and re-check)."""
        await self._changed.wait()

    def _faults_changed(self) -> None:
        for backend in self.backends.values():
            backend.faults = self.board.effective(backend.id)
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    # -- health ------------------------------------------------------------------------------

    def _start_health(self, backend: Backend) -> None:
        self._health_tasks[backend.id] = asyncio.create_task(
            self._health_loop(backend), name=f"health-{backend.id}"
        )

    async def _health_loop(self, backend: Backend) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self._check_once(backend)
            await asyncio.sleep(max(0.0, self.config.health_interval - (loop.time() - started)))

    async def _check_once(self, backend: Backend) -> None:
        self._set_health(backend, await self._probe(backend))

    def _set_health(self, backend: Backend, healthy: bool) -> None:
        """Record a health verdict; a change is pushed to the supervisor at once."""
        if healthy != backend.healthy:
            log.info("backend %s is now %s", backend.id, "healthy" if healthy else "unhealthy")
            self._push_now.set()
        backend.healthy = healthy

    async def _probe(self, backend: Backend) -> bool:
        """GET /healthz; True only for a 200 within the health timeout."""
        writer = None
        try:
            async with asyncio.timeout(self.health_timeout):
                reader, writer = await asyncio.open_connection(backend.host, backend.port)
                writer.write(
                    f"GET /healthz HTTP/1.1\r\nHost: {backend.host}:{backend.port}\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                await writer.drain()
                status_line = await reader.readline()
            parts = status_line.split(b" ", 2)
            return len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1] == b"200"
        except (TimeoutError, OSError, ValueError):
            return False
        finally:
            if writer is not None:
                writer.transport.abort()

    # -- routing -----------------------------------------------------------------------------

    def choose(self, request: RequestHead, client_ip: str, exclude: set[str]) -> Backend | None:
        """The backend for this request under the current sticky mode, among healthy ones."""
        healthy = [b for b in self.backends.values() if b.healthy and b.id not in exclude]
        if not healthy:
            return None
        by_id = {b.id: b for b in healthy}
        if self.sticky == "cookie":
            wanted = request.cookie(COOKIE_NAME)
            if wanted in by_id:
                return by_id[wanted]
            return min(healthy, key=lambda b: (b.connections, -rendezvous_score(client_ip, b.id)))
        key = client_ip
        if self.sticky == "sid":
            sid = request.query("sid")
            if sid:
                key = "sid:" + sid
        chosen = rendezvous(key, list(by_id))
        return by_id[chosen] if chosen is not None else None

    async def _reject(self, writer: asyncio.StreamWriter, status: int, body: str) -> None:
        self.rejected[status] = self.rejected.get(status, 0) + 1
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(http_response(status, body))
            async with asyncio.timeout(1.0):
                await writer.drain()
        writer.close()

    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        """The request head and any bytes after it; raises HeadError or TimeoutError."""
        buffer = b""
        async with asyncio.timeout(self.config.head_timeout):
            while (end := find_head_end(buffer)) < 0:
                if len(buffer) > self.config.max_head:
                    raise HeadError("request head too large")
                data = await reader.read(4096)
                if not data:
                    raise HeadError("connection closed before the request head ended")
                buffer += data
        if end > self.config.max_head:
            raise HeadError("request head too large")
        return buffer[:end], buffer[end:]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except Exception:  # one bad connection must never take the balancer down
            log.exception("connection failed")
            writer.transport.abort()
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        client_ip = str(peer[0])
        try:
            head, rest = await self._read_head(reader)
            request = parse_request_head(head)
        except HeadError as exc:
            log.info("400 from %s: %s", client_ip, exc)
            await self._reject(writer, 400, f"bad request: {exc}")
            return
        except TimeoutError:
            await self._reject(writer, 408, "request head not received in time")
            return
        except (ConnectionError, OSError):
            writer.transport.abort()
            return
        tried: set[str] = set()
        while True:
            backend = self.choose(request, client_ip, tried)
            if backend is None:
                status = 502 if tried else 503
                await self._reject(writer, status, "no healthy backend")
                return
            tried.add(backend.id)
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    server = await asyncio.open_connection(backend.host, backend.port, limit=CHUNK)
                break
            except (OSError, TimeoutError) as exc:
                log.info("backend %s refused a connection (%r)", backend.id, exc)
                self._set_health(backend, False)
        cookie_for = None
        if self.sticky == "cookie" and request.cookie(COOKIE_NAME) != backend.id:
            cookie_for = backend.id
        forwarded = with_header(head, "X-Forwarded-For", client_ip) + rest
        conn = Connection(self, backend, (reader, writer), server, forwarded, cookie_for)
        backend.connections += 1
        backend.total += 1
        backend.open.add(conn)
        try:
            if backend.faults is not None and backend.faults.reset:
                conn.reset()
                return
            await conn.run()
        finally:
            backend.open.discard(conn)
            backend.connections -= 1

    # -- faults and commands -----------------------------------------------------------------

    def apply_fault(self, target: str, kind: object, params: dict[str, Any]) -> None:
        """Activate a fault on a backend id or "all" (raises FaultError / KeyError)."""
        if target != ALL and target not in self.backends:
            raise KeyError(f"unknown backend {target!r}")
        fault = parse_fault(kind, params)
        if isinstance(fault, Reset):
            victims = self.backends.values() if target == ALL else [self.backends[target]]
            for backend in victims:
                for conn in list(backend.open):
                    conn.reset()
        self.board.set(target, fault)
        self._faults_changed()
        log.info("fault %s on %s: %s", fault.kind, target, fault.to_dict())

    def clear_fault(self, target: str, kind: str | None = None) -> int:
        """Clear one kind (None: all kinds) on a target; returns how many were removed."""
        if target != ALL and target not in self.backends:
            raise KeyError(f"unknown backend {target!r}")
        removed = self.board.clear(target, kind)
        self._faults_changed()
        log.info("fault %s cleared on %s (%d removed)", kind or "*", target, removed)
        return removed

    async def add_backend(self, backend_id: str, host: str, port: int) -> Backend:
        """Add a backend, check it once, and start its health loop."""
        if not backend_id or backend_id == ALL or backend_id in self.backends:
            raise ValueError(f"backend id {backend_id!r} is empty, reserved or taken")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"bad port {port!r}")
        backend = Backend(backend_id, str(host), port)
        self.backends[backend_id] = backend
        backend.faults = self.board.effective(backend_id)
        await self._check_once(backend)
        self._start_health(backend)
        return backend

    async def remove_backend(self, backend_id: str) -> None:
        """Stop routing to a backend; its open connections end by themselves."""
        backend = self.backends.pop(backend_id, None)
        if backend is None:
            raise KeyError(f"unknown backend {backend_id!r}")
        task = self._health_tasks.pop(backend_id, None)
        if task is not None:
            task.cancel()
        self.board.forget(backend_id)

    def stats(self) -> dict[str, Any]:
        """The stats snapshot pushed over the control channel."""
        return {
            "type": "stats",
            "t": time.time(),
            "sticky": self.sticky,
            "backends": {b.id: b.stats() for b in self.backends.values()},
            "faults": self.board.listing(),
            "rejected": {str(k): v for k, v in self.rejected.items()},
        }

    async def _command(self, message: dict[str, Any]) -> dict[str, Any]:
        """Answer one control command (an exception becomes an ok=false reply)."""
        cmd = message.get("cmd")
        if cmd == "stats":
            snapshot = self.stats()
            del snapshot["type"]  # the reply's own "type" must stay "reply"
            return snapshot
        if cmd == "backend_add":
            backend = await self.add_backend(
                str(message.get("id", "")),
                str(message.get("host", "127.0.0.1")),
                message.get("port"),  # type: ignore[arg-type]
            )
            return {"backend": backend.id, "healthy": backend.healthy}
        if cmd == "backend_remove":
            await self.remove_backend(str(message.get("id", "")))
            return {}
        if cmd == "fault":
            params = {
                k: v
                for k, v in message.items()
                if k not in ("type", "rid", "cmd", "target", "kind")
            }
            self.apply_fault(str(message.get("target", ALL)), message.get("kind"), params)
            return {"faults": self.board.listing()}
        if cmd == "fault_clear":
            kind = message.get("kind")
            removed = self.clear_fault(str(message.get("target", ALL)), kind)
            return {"removed": removed, "faults": self.board.listing()}
        if cmd == "sticky":
            mode = message.get("mode")
            if mode not in STICKY_MODES:
                raise ValueError(f"sticky mode must be one of {', '.join(STICKY_MODES)}")
            self.sticky = str(mode)
            return {"sticky": self.sticky}
        raise ValueError(f"unknown command {cmd!r}")

    async def _push_stats(self) -> None:
        assert self._control is not None
        while self._control.connected:
            self._push_now.clear()
            await self._control.send(self.stats())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._push_now.wait(), STATS_INTERVAL)
        log.warning("control channel lost: stopping")
        self.stopped.set()


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The balancer's options (shared by `python -m` and `wsconsole balancer`)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    parser.add_argument(
        "--backend", action="append", default=[], metavar="ID=HOST:PORT", help="a node (repeat)"
    )
    parser.add_argument("--sticky", default="ip", help="affinity: ip, cookie or sid")
    parser.add_argument("--control", metavar="HOST:PORT", help="supervisor control channel")
    parser.add_argument("--health-interval", type=float, default=0.5, help="seconds between checks")
    parser.add_argument("--health-timeout", type=float, default=None, help="seconds per check")
    parser.add_argument(
        "--head-timeout", type=float, default=HEAD_TIMEOUT, help="seconds to read a request head"
    )
    parser.add_argument("--json", action="store_true", help="accepted for uniformity (always JSON)")


def config_from_args(args: argparse.Namespace) -> BalancerConfig:
    """Validate parsed options into a BalancerConfig (raises ValueError with a clear message)."""
    if args.sticky not in STICKY_MODES:
        raise ValueError(f"--sticky must be one of {', '.join(STICKY_MODES)}, got {args.sticky!r}")
    if not 0 <= args.port < 65536:
        raise ValueError(f"--port must be 0..65535, got {args.port}")
    if not args.health_interval > 0:
        raise ValueError("--health-interval must be > 0")
    if args.health_timeout is not None and not args.health_timeout > 0:
        raise ValueError("--health-timeout must be > 0")
    if not args.head_timeout > 0:
        raise ValueError("--head-timeout must be > 0")
    backends = [parse_backend(text) for text in args.backend]
    ids = [b[0] for b in backends]
    if len(set(ids)) != len(ids) or ALL in ids:
        raise ValueError("backend ids must be unique and not 'all'")
    return BalancerConfig(
        host=args.host,
        port=args.port,
        backends=backends,
        sticky=args.sticky,
        control=parse_hostport(args.control) if args.control else None,
        health_interval=args.health_interval,
        health_timeout=args.health_timeout,
        head_timeout=args.head_timeout,
    )


async def serve(config: BalancerConfig) -> int:
    """Run a balancer until SIGTERM/SIGINT or the control channel goes; returns an exit code."""
    balancer = Balancer(config)
    try:
        port = await balancer.start()
    except OSError as exc:
        await balancer.stop()
        sys.stderr.write(f"wsconsole balancer: error: cannot start: {exc}\n")
        return 2
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, balancer.stopped.set)
    sys.stdout.write(json.dumps({"event": "listening", "port": port, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    log.info("listening on %s:%d, sticky=%s", config.host, port, config.sticky)
    await balancer.stopped.wait()
    await balancer.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    """Validate options and run the balancer in this process (exit 2 on bad usage)."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        sys.stderr.write(f"wsconsole balancer: error: {exc}\n")
        return 2
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="balancer %(levelname)s %(message)s"
    )
    return asyncio.run(serve(config))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m wsconsole.harness.balancer`."""
    parser = argparse.ArgumentParser(prog="python -m wsconsole.harness.balancer")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
