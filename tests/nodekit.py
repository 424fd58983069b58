"""Helpers for the node tests: a real broker, node subprocesses, a raw RFC 6455 client.

Imported by tests/test_node*.py; it holds no tests of its own.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support import MS, ProcessRegistry
from wsconsole.harness.broker import Broker
from wsconsole.harness.procs import child_argv

TIMEOUT = 15_000 * MS  # generous: two cores shared by several engineers running tests


@dataclass
class NodeProc:
    """A running node subprocess and where it listens."""

    id: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """ws:// URL of the node."""
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def http(self) -> str:
        """http:// base URL of the node (for /metrics and /healthz)."""
        return f"http://127.0.0.1:{self.port}"


def start_node(
    procs: ProcessRegistry,
    broker_url: str,
    node_id: str,
    *extra: str,
    secret: str | None = None,
    env: dict[str, str] | None = None,
) -> NodeProc:
    """Start `wsconsole node` through child_argv and wait for its listening line."""
    child_env = {**os.environ, **(env or {})}
    if secret is not None:
        child_env["WSCONSOLE_JWT_SECRET"] = secret
    argv = child_argv("node", "--id", node_id, "--redis", broker_url, *extra)
    proc = procs.start(argv, stdout=subprocess.PIPE, env=child_env)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
    if not ready:
        raise AssertionError(f"node {node_id} printed nothing in {TIMEOUT} s")
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"node {node_id} exited with {proc.wait(5)} before listening")
    event = json.loads(line)
    assert event["event"] == "listening" and event["id"] == node_id, event
    assert event["pid"] == proc.pid
    return NodeProc(node_id, int(event["port"]), proc)


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    """A real Redis-protocol server (bundled valkey or redis-server) for the module."""
    server = Broker()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def module_procs() -> Iterator[ProcessRegistry]:
    """Like `procs`, for module-scoped node fixtures."""
    registry = ProcessRegistry()
    try:
        yield registry
    finally:
        registry.kill_all()


async def recv_json(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next frame as a dict (fails the test after `timeout`)."""
    async with asyncio_timeout(timeout):
        return json.loads(await ws.recv())


async def recv_until(
    ws: ClientConnection, predicate: Any, timeout: float = TIMEOUT
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read frames until one matches; returns it and the frames read before it."""
    before: list[dict[str, Any]] = []
    async with asyncio_timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if predicate(frame):
                return frame, before
            before.append(frame)


def asyncio_timeout(seconds: float) -> Any:
    """asyncio.timeout, imported lazily so this module stays cheap to import."""
    import asyncio

    return asyncio.timeout(seconds)


async def send_json(ws: ClientConnection, **fields: Any) -> None:
    """Send one envelope."""
    await ws.send(json.dumps(fields))


def client(url: str, token: str | None = None, **kwargs: Any) -> Any:
    """websockets connect() with the token as query parameter, if given."""
    if token is not None:
        url = f"{url}?token={token}"
    kwargs.setdefault("open_timeout", TIMEOUT)
    kwargs.setdefault("close_timeout", 2)
    return connect(url, **kwargs)


async def join(
    ws: ClientConnection, room: str, since: int | None = None, epoch: str | None = None
) -> dict[str, Any]:
    """Join a room (from `since` of `epoch`, when given) and return the `joined` reply."""
    fields: dict[str, Any] = {"type": "join", "room": room}
    if since is not None:
        fields["since"] = since
    if epoch is not None:
        fields["epoch"] = epoch
    await ws.send(json.dumps(fields))
    frame, _ = await recv_until(ws, lambda f: f["type"] in ("joined", "error"))
    assert frame["type"] == "joined", frame
    return frame


def http_get(port: int, path: str, timeout: float = TIMEOUT) -> tuple[int, str]:
    """Plain HTTP GET on a node's port; (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body.decode()


class RawClient:
    """A hand-made RFC 6455 client for what `websockets` will not send (bad UTF-8, no pongs)."""

    def __init__(self, port: int, path: str = "/", headers: dict[str, str] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1]) if head else 0

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        """Send one masked frame."""
        mask = os.urandom(4)
        first = (0x80 if fin else 0) | opcode
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", first, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", first, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the node")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def recv_frame(self) -> tuple[int, bytes]:
        """Read one (unmasked) frame from the node: (opcode, payload)."""
        first, second = self._read(2)
        n = second & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._read(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._read(8))
        return first & 0x0F, self._read(n)

    def recv_close(self, timeout: float = TIMEOUT) -> int | None:
        """Read frames (ignoring pings and data) until a close frame; return its code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                opcode, payload = self.recv_frame()
            except (ConnectionError, TimeoutError, OSError):
                return None
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        raise AssertionError("no close frame in time")

    def close(self) -> None:
        """Drop the TCP connection."""
        with contextlib.suppress(OSError):
            self.sock.close()
