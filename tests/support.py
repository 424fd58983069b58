"""Helpers for tests: one scaled time unit, free loopback ports, a child process registry."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

# One time unit for timing-sensitive tests; WSCONSOLE_TEST_TIMESCALE=3 on a slow machine.
SCALE = float(os.environ.get("WSCONSOLE_TEST_TIMESCALE", "1"))
MS = 0.001 * SCALE


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ProcessRegistry:
    """Starts children and remembers their PIDs so tests can always clean up."""

    _all: set[int] = set()

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Popen with the PID recorded; kwargs go to Popen."""
        proc = subprocess.Popen(list(argv), **kwargs)  # type: ignore[call-overload]
        self.children.append(proc)
        ProcessRegistry._all.add(proc.pid)
        return proc

    def python(self, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
        """Run `python <args>` with this interpreter."""
        return self.start([sys.executable, *args], **kwargs)

    def kill_all(self) -> None:
        """SIGKILL every child still alive (after SIGCONT, in case it was paused)."""
        for proc in self.children:
            if proc.poll() is None:
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        os.kill(proc.pid, sig)
                    except ProcessLookupError:
                        break
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            ProcessRegistry._all.discard(proc.pid)

    @classmethod
    def every_pid(cls) -> set[int]:
        """PIDs started by any registry in this test session and not yet reaped."""
        return set(cls._all)


def pid_alive(pid: int) -> bool:
    """True if a process with this PID exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.02) -> bool:
    """Poll `predicate` (blocking) until true or `timeout` x SCALE seconds pass; the last result."""
    deadline = time.monotonic() + timeout * SCALE
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


async def until(
    predicate: Callable[[], object],
    what: str = "condition",
    timeout: float = 10.0,
    detail: Callable[[], object] | None = None,
    interval: float = 0.02,
) -> None:
    """Await until `predicate()` is true; after `timeout` x SCALE s fail naming `what`.

    The one condition wait for async tests (instead of fixed sleeps): other tasks, and Qt
    under qasync, keep running while it polls. `predicate` may be a coroutine function (a
    control-channel query, say): its result is awaited. `detail()` is added to the failure
    message.
    """
    deadline = time.monotonic() + timeout * SCALE
    while not await _holds(predicate):
        if time.monotonic() > deadline:
            extra = f": {detail()}" if detail is not None else ""
            waited = timeout * SCALE
            raise AssertionError(f"timed out after {waited:.1f} s waiting for {what}{extra}")
        await asyncio.sleep(interval)


async def _holds(predicate: Callable[[], object]) -> object:
    """`predicate()`, awaited when it returns an awaitable."""
    result = predicate()
    return await result if inspect.isawaitable(result) else result
