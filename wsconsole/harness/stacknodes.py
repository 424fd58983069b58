"""The user's own nodes as members of the cluster: start, readiness, stop, output.

A stack node is one more kind of node for `NodeKeeper` (nodes.py), next to the harness's own
(`HarnessRunner`): the same registry, states, events and operations, with what differs here:

- start: a free port is chosen, the stack's command gets its placeholders (`{port}`, `{id}`,
  `{index}`, `{host}`, `{redis_url}`) and runs under a keeper (harness/keeper.py) in the
  stack's folder with its environment, so the whole process tree is one group for every
  signal and nothing of it outlives the supervisor, even SIGKILLed;
- ready: its port accepts, or an HTTP path answers 2xx, or a line of its output matches;
  an exit before that fails the start with the last lines it printed;
- drain: the stack's stop signal to the group; SIGKILL after the drain deadline;
- output: stdout and stderr line by line with time stamps (nodelog.py), in memory for the
  window and in `<log dir>/<id>.log`;
- no control channel: stats come from the balancer's view of the node's traffic and from
  its Prometheus endpoint when the stack names one (scrape.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wsconsole.core.templates import Template
from wsconsole.harness.clusterconfig import LOOPBACK, ClusterError
from wsconsole.harness.members import Launcher, Member
from wsconsole.harness.nodelog import NodeLog
from wsconsole.harness.stackfile import Stack

READY_POLL = 0.1  # seconds between readiness probes
PROBE_TIMEOUT = 1.0  # seconds one probe may take


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on `host` that was free a moment ago (the node binds it itself)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def http_get(host: str, port: int, path: str, timeout: float = PROBE_TIMEOUT,
                   body_limit: int = 0) -> tuple[int, bytes]:
    """`GET path` on host:port: the status code and up to `body_limit` bytes of the body
    (OSError, TimeoutError or ValueError when nothing answers like HTTP)."""
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                         "Connection: close\r\n\r\n".encode())
            await writer.drain()
            line = await reader.readline()
            parts = line.split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                raise ValueError(f"not an HTTP answer: {line[:60]!r}")
            body = b""
            if body_limit:
                head = await reader.readuntil(b"\r\n\r\n")
                chunked = b"transfer-encoding: chunked" in head.lower()
                body = await reader.read(body_limit)
                while len(body) < body_limit and (more := await reader.read(body_limit)):
                    body += more
                if chunked:
                    body = _unchunk(body)
    finally:
        if writer is not None:
            writer.transport.abort()
    return int(parts[1]), body[:body_limit]


def _unchunk(data: bytes) -> bytes:
    """The payload of a chunked transfer-encoded body (as much of it as is there)."""
    out, pos = [], 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            break
        size = int(data[pos:end].split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        out.append(data[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2
    return b"".join(out)


async def port_accepts(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when something accepts a TCP connection on host:port."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.transport.abort()
    return True


def _path_with_our_python() -> str:
    """PATH with the folder of the Python running wsconsole first: `python` in a stack's
    command is this one (a virtual environment's, with what wsconsole installed)."""
    folder = os.path.dirname(sys.executable)
    rest = os.environ.get("PATH", os.defpath)
    return folder if not rest else folder + os.pathsep + rest


@dataclass(frozen=True)
class NodeLaunch:
    """How to start one node of a stack: its command line, environment and folder, and the
    command as the user reads it."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    command: str


def node_launch(stack: Stack, node_id: str, port: int, redis_url: str | None,
                host: str = LOOPBACK) -> NodeLaunch:
    """Fill a stack's node command in for node `node_id` (`n1`, `n2`, ...) on `port`: the
    placeholders, the environment (our Python first on PATH), the folder. The harness's
    supervisor and an agent on another host both start stack nodes through this."""
    node = stack.node
    values: dict[str, Any] = {"port": port, "id": node_id, "host": host,
                              "index": int(node_id.lstrip("n") or 0)}
    if redis_url is not None:
        values["redis_url"] = redis_url
    argv = node.argv(values)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PATH": _path_with_our_python(),
           **node.environment(values)}
    cwd = str(Template(str(node.cwd)).render(values))
    return NodeLaunch(argv, env, cwd, " ".join(argv[2:] if node.shell else argv))


class StackRunner:
    """Starts and stops the nodes of one stack for `NodeKeeper`."""

    control = False  # no control channel: no `connections`, `inject` or `drain` command

    def __init__(self, stack: Stack, launcher: Launcher, redis_url: Callable[[], str | None],
                 ready_timeout: float | None = None) -> None:
        self.stack = stack
        self.launcher = launcher
        self.redis_url = redis_url
        self.ready_timeout = ready_timeout or stack.node.ready.timeout
        self.metrics_path = stack.metrics.path if stack.metrics is not None else None
        self.logs: dict[str, NodeLog] = {}
        self.commands: dict[str, str] = {}  # node id -> the command line it was started with

    @property
    def stop_signal(self) -> int:
        """What a drain or a stop sends first."""
        return int(self.stack.node.stop_signal)

    @property
    def drain_timeout(self) -> float:
        """How long a draining node may take before SIGKILL."""
        return self.stack.node.drain_deadline

    def health(self) -> dict[str, Any]:
        """How the balancer checks the node: its readiness path for 2xx, else any HTTP answer
        on the protocol's path (a paused process accepts TCP but never answers)."""
        ready = self.stack.node.ready
        if ready.kind == "http":
            return {"health_path": ready.http_path, "health_any": False}
        return {"health_path": self.stack.protocol.path, "health_any": True}

    def log(self, node_id: str) -> NodeLog:
        """The output of node `node_id` (created on first use)."""
        log = self.logs.get(node_id)
        if log is None:
            assert self.launcher.log_dir is not None
            log = self.logs[node_id] = NodeLog(self.launcher.log_dir / f"{node_id}.log")
        return log

    async def launch(self, node_id: str, on_exit: Callable[[Member], None]) -> Member:
        """Start node `node_id` and return once it is ready (ClusterError if it is not)."""
        port = free_port()
        launch = node_launch(self.stack, node_id, port, self.redis_url())
        log = self.log(node_id)
        self.commands[node_id] = launch.command
        try:
            member = await self.launcher.spawn_member(
                node_id, launch.argv, on_exit, env=launch.env, cwd=launch.cwd, keeper=True,
                stderr_pipe=True,
            )  # fmt: skip
        except OSError as exc:
            log.add("harness", f"could not start: {exc}")
            raise ClusterError(f"node {node_id}: {exc}") from None
        member.port = port
        since = log.add("harness", f"started pid {member.pid} on port {port}: "
                                   f"{self.commands[node_id]}").index + 1
        self.launcher.tasks.spawn(self._follow(member, log), f"output-{node_id}")
        try:
            await self._ready(member, port, log, since)
        except BaseException:
            member.expected_exit = True
            await member.proc.stop(None)
            raise
        return member

    async def _read(self, member: Member, log: NodeLog, stream: str) -> None:
        proc = member.proc
        reader = proc.stdout if stream == "out" else proc.stderr
        async for line in proc.lines(reader):
            log.add(stream, line.decode("utf-8", "replace"))

    async def _follow(self, member: Member, log: NodeLog) -> None:
        """Its stdout and stderr into its log until both close, then how it ended (the
        keeper exits the way the node did), so the output says what became of it."""
        await asyncio.gather(self._read(member, log, "out"), self._read(member, log, "err"))
        await member.proc.exited.wait()
        code = member.proc.returncode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                log.add("harness", f"pid {member.pid} ended by {signal.Signals(-code).name}")
                return
        log.add("harness", f"pid {member.pid} exited with code {code}")

    async def _ready(self, member: Member, port: int, log: NodeLog, since: int) -> None:
        ready = self.stack.node.ready
        began = time.monotonic()
        check = asyncio.ensure_future(self._check(ready.kind, port, log, since))
        exited = asyncio.ensure_future(member.proc.exited.wait())
        try:
            done, _ = await asyncio.wait({check, exited}, timeout=self.ready_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (check, exited):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        name = member.name
        if check in done and not check.cancelled() and check.exception() is None:
            log.add("harness", f"ready ({ready.describe()}) after "
                               f"{time.monotonic() - began:.2f} s")
            return
        if exited in done:
            await asyncio.sleep(0.05)  # let the readers take its last words
            raise ClusterError(f"node {name} exited (code {member.proc.returncode}) before it "
                               f"was ready ({ready.describe()}); it said: {log.text_tail()}")
        raise ClusterError(f"node {name} was not ready ({ready.describe()}) within "
                           f"{self.ready_timeout:g} s; it said: {log.text_tail()}")

    async def _check(self, kind: str, port: int, log: NodeLog, since: int) -> None:
        ready = self.stack.node.ready
        if kind == "log":
            assert ready.log_pattern is not None
            await log.wait_for(ready.log_pattern, since)
            return
        while True:
            if kind == "port" and await port_accepts(LOOPBACK, port):
                return
            if kind == "http":
                assert ready.http_path is not None
                with contextlib.suppress(OSError, TimeoutError, ValueError):
                    status, _ = await http_get(LOOPBACK, port, ready.http_path)
                    if 200 <= status < 300:
                        return
            await asyncio.sleep(READY_POLL)

    async def ask_drain(self, node_id: str, member: Member) -> None:
        """Begin a drain: the stack's stop signal to the node's whole group."""
        member.proc.send_signal(self.stop_signal)

    def command(self, node_id: str) -> str | None:
        """The command line node `node_id` was last started with."""
        return self.commands.get(node_id)

    def output_tail(self, node_id: str, member: Member) -> tuple[str | None, str]:
        """Its log file (time-stamped stdout and stderr) and its last lines."""
        log = self.log(node_id)
        return str(log.path), log.text_tail()

    def close(self) -> None:
        """Close every log file."""
        for log in self.logs.values():
            log.close()
