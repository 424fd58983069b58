"""Profiles of the hot paths (py-spy, sampling, from outside the process): where the time goes.

`python -m benchmarks --only profiles` runs each hot path for a few seconds under
`py-spy record` and keeps a summary in benchmarks.json and the doc: the functions with the
largest share of the process's busy samples (idle samples, a loop waiting for I/O, are not
recorded), by inclusive and by self time. The load is the benchmarks' own:

- fanout: the harness (3 nodes, 500 subscribers from the load generator) at 200,000
  deliveries/s; one node is profiled.
- handshakes: one node while the load generator opens 3,000 connections (token, presence
  claim, room join).
- window: the real window (offscreen) ingesting a flood of 20,000 frames/s.

py-spy needs ptrace rights over the process (root, or `kernel.yama.ptrace_scope` 0); without
them a profile is recorded as "not run" with py-spy's reason.
"""

from __future__ import annotations

import asyncio
import collections
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, BenchError, Child, LoadGen, child_env, python
from wsconsole.harness.auth import SECRET_ENV, issue_token
from wsconsole.harness.broker import Broker

TOP = 12  # functions kept per summary


@dataclass
class ProfileSize:
    """Seconds of load per profile, connections for the handshake profile."""

    seconds: float = 8.0
    connections: int = 3000
    rate: float = 400.0  # publishes/s to 500 subscribers: 200,000 deliveries/s
    window_rate: int = 20_000

    @classmethod
    def quick(cls) -> ProfileSize:
        """Tiny: proves the machinery."""
        return cls(seconds=1.0, connections=50, rate=20.0, window_rate=2_000)


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter or on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def summarize(collapsed: str, top: int = TOP) -> dict[str, Any]:
    """Busy samples, and the top functions by inclusive and by self share (percent), from
    py-spy's collapsed-stack output ("frame;frame;... count" per line)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        names = [_function(frame) for frame in stack.split(";")]
        own[names[-1]] += samples
        for name in set(names):
            inclusive[name] += samples
    if not total:
        return {"samples": 0, "inclusive": [], "self": []}

    def share(counter: collections.Counter[str], skip_roots: bool) -> list[list[Any]]:
        ranked = [(name, n) for name, n in counter.most_common()
                  if not (skip_roots and n >= 0.97 * total)]  # fmt: skip
        return [[round(100 * n / total, 1), name] for name, n in ranked[:top]]

    return {"samples": total, "inclusive": share(inclusive, True), "self": share(own, False)}


def _function(frame: str) -> str:
    """`name (path/to/module.py:line)` -> `name (module.py)`."""
    name, _, where = frame.partition(" (")
    module = where.split(":")[0].rsplit("/", 1)[-1]
    return f"{name} ({module})" if module else name


def _take(path: str) -> str:
    """The text py-spy wrote, and the file gone."""
    file = Path(path)
    text = file.read_text() if file.exists() else ""
    file.unlink(missing_ok=True)
    return text


def _output() -> str:
    with tempfile.NamedTemporaryFile(prefix="wsconsole-prof-", suffix=".txt", delete=False) as f:
        return f.name


class Recording:
    """`py-spy record` attached to a running process for `seconds`."""

    def __init__(self, pid: int, seconds: float, spy: str) -> None:
        self.output = _output()
        self.proc = subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
             "--rate", "250", "--gil", "--format", "raw", "-o", self.output],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    async def summary(self) -> dict[str, Any]:
        """Wait for py-spy to finish; the summary of what it sampled."""
        await asyncio.to_thread(self.proc.wait, 120)
        text = await asyncio.to_thread(_take, self.output)
        if not text:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise BenchError(f"py-spy failed: {err.strip()[-300:]}")
        return summarize(text)


async def fanout(size: ProfileSize, spy: str) -> dict[str, Any]:
    """A node of the harness under the fan-out benchmark's load."""
    from benchmarks import fanout as fan
    from benchmarks.common import CpuMeter

    fsize = fan.FanoutSize(rates=(size.rate,))
    async with fan.wsconsole(fsize) as setup:
        gens = fan.Generators(setup, fsize)
        try:
            await gens.start("wsconsole")
            servers = CpuMeter(setup.pids)
            meters = CpuMeter([g.pid for g in gens.all if g.pid])
            await gens.step(servers, meters, 10.0, 0.5, 0.5, 0)
            node_pid = setup.node_pids[0]
            recording = Recording(node_pid, size.seconds, spy)
            step = await gens.step(servers, meters, size.rate, size.seconds, 0.5, 1)
            summary = await recording.summary()
        finally:
            await gens.stop()
    return {**summary, "load": f"{step['offered_per_s']:,} deliveries/s offered, "
                               f"p99 {step['p99_ms']} ms"}  # fmt: skip


async def handshakes(size: ProfileSize, spy: str) -> dict[str, Any]:
    """One node while the load generator opens connections (auth, presence, join)."""
    from benchmarks.capacity import local_address
    from benchmarks.common import raise_nofile

    raise_nofile()
    secret = "bench-profile-secret-0123456789abcdef"
    broker = Broker()
    broker.start()
    node = Child([python(), "-m", "wsconsole.harness.node", "--id", "prof1", "--port", "0",
                  "--redis", broker.url], env=child_env(**{SECRET_ENV: secret}))  # fmt: skip
    gen = None
    try:
        port = await node.start()
        targets = [{"host": "127.0.0.1", "port": port, "local": local_address(i),
                    "path": f"/?token={issue_token(secret, f'prof{i}', ('bench',))}"}
                   for i in range(size.connections)]  # fmt: skip
        gen = LoadGen({"role": "conn", "kind": "harness", "targets": targets})
        recording = Recording(node.pid, size.seconds, spy)
        ready = await gen.start(timeout=300)
        summary = await recording.summary()
    finally:
        if gen is not None:
            await gen.stop()
        node.stop()
        broker.stop()
    rate = ready.get("open_per_s") or 0
    return {**summary, "load": f"{size.connections:,} connections at {rate:,.0f}/s"}


async def window(size: ProfileSize, spy: str) -> dict[str, Any]:
    """The window process ingesting a flood (its whole run, started under py-spy)."""
    arg = json.dumps({"rates": [size.window_rate], "seconds": size.seconds, "million": 0})
    output = _output()
    proc = await asyncio.create_subprocess_exec(
        spy, "record", "--rate", "250", "--gil", "--format", "raw", "-o", output, "--",
        python(), "-m", "benchmarks.window_child", arg,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=child_env(QT_QPA_PLATFORM="offscreen"), cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 600)
    text = await asyncio.to_thread(_take, output)
    if not text:
        raise BenchError(f"py-spy failed: {stderr.decode(errors='replace').strip()[-300:]}")
    lines = [line for line in stdout.decode().splitlines() if line.startswith("{")]
    step = json.loads(lines[-1])["ingest"][0] if lines else {}
    return {**summarize(text), "load": f"{size.window_rate:,} frames/s offered, "
                                       f"{step.get('frames_per_s')} received"}  # fmt: skip


PATHS: dict[str, Callable[[ProfileSize, str], Any]] = {
    "fanout": fanout,
    "handshakes": handshakes,
    "window": window,
}


async def run(size: ProfileSize, repeat: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Each hot path once (profiles are not repeated: they say where, not how fast)."""
    spy = py_spy()
    out: dict[str, Any] = {}
    for name, path in PATHS.items():
        if spy is None:
            out[name] = {"not_run": "py-spy is not installed (pip install py-spy)"}
            continue
        log(f"profile: {name}")
        try:
            out[name] = await path(size, spy)
        except BenchError as exc:
            out[name] = {"not_run": str(exc)}
        log(f"profile {name}: {json.dumps(out[name])[:300]}")
    return out
