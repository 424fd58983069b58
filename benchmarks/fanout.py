"""Fan-out through the broker: one room, 500 subscribers spread over 3 nodes.

Contenders, each started here in turn: the wsconsole harness (3 nodes via `Cluster`, auth
on: one token per distinct user, default limits), python-socketio with AsyncRedisManager,
Node.js socket.io with @socket.io/redis-adapter (3 nodes each, on the same valkey from
`Broker`), and one plain asyncio `websockets.broadcast` process (no broker at all).
Every contender is driven by the same independent load generator (`loadgen.js`: Node.js
`ws` clients; 2 subscriber processes, 1 publisher), which connects straight to the nodes'
ports, round-robin. Repeats are interleaved: repeat 1 of every contender, then repeat 2...,
so a change in the machine's load falls on all of them alike.

Per repeat, a ramp of publish rates; each step publishes for `step_seconds`, every message
carrying its step and send time, and counts what arrived by the step's end plus `grace`.
The headline is the **latency-bounded rate**: the highest step with >= 99.9 % of its
deliveries in time and p99 < 50 ms. The ramp goes on until a step is saturated (< 90 %
delivered in time, or a median over 1 s), so the saturation figure is there too, with the
latency it came with. Server CPU (nodes and broker, psutil) per delivery is taken at every
step; contenders are compared at equal load (the 50,000 deliveries/s step).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.common import (
    NODE_DIR,
    ROOT,
    BenchError,
    Child,
    CpuMeter,
    LoadGen,
    child_env,
    ensure_node_modules,
    histogram,
    python,
    summarize,
)
from wsconsole.harness.broker import Broker
from wsconsole.harness.cluster import Cluster, ClusterConfig
from wsconsole.harness.clusterconfig import Limits

CONTENDERS = ("wsconsole", "node-socketio", "python-socketio", "websockets-broadcast")
SIO_PATH = "/socket.io/?EIO=4&transport=websocket"


@dataclass
class FanoutSize:
    """How big and how long; `quick()` is the tiny size the test suite uses."""

    subscribers: int = 500
    nodes: int = 3
    sub_procs: int = 2
    # publishes/s; x 500 subscribers = 25k ... 1.6M deliveries/s
    rates: tuple[float, ...] = (50, 100, 200, 300, 400, 600, 800, 1200, 1600, 2400, 3200)
    step_seconds: float = 4.0
    grace: float = 0.5  # seconds after a step's last publish that still count as in time
    per_pub_conn: float = 80.0  # publishes/s per publisher connection (node limit: 100)
    bound_p99_ms: float = 50.0
    bound_ratio: float = 0.999
    equal_load: float = 100.0  # the step contenders are compared at (50k deliveries/s)
    contenders: tuple[str, ...] = CONTENDERS

    @classmethod
    def quick(cls) -> FanoutSize:
        """A few subscribers for a second or two: proves the machinery, measures nothing."""
        return cls(subscribers=12, nodes=2, sub_procs=1, rates=(20.0, 40.0), step_seconds=1.0,
                   grace=0.3, equal_load=20.0)  # fmt: skip

    @property
    def publishers(self) -> int:
        """Publisher connections: enough to stay under the harness's 100 msg/s each."""
        return max(1, math.ceil(max(self.rates) / self.per_pub_conn))


@dataclass
class Setup:
    """A running contender: protocol kind, subscriber and publisher targets, server PIDs."""

    kind: str
    subs: list[dict[str, Any]]
    pubs: list[dict[str, Any]]
    node_pids: list[int] = field(default_factory=list)
    broker_pid: int | None = None

    @property
    def pids(self) -> list[int]:
        """The processes whose CPU counts: the nodes and the broker (not a balancer: the
        subscribers connect straight to the nodes)."""
        return [*self.node_pids, *([self.broker_pid] if self.broker_pid else [])]

    @property
    def nodes(self) -> int:
        """How many server processes serve the subscribers."""
        return len(self.node_pids)


def _spread(ports: list[int], count: int, path: Callable[[int], str]) -> list[dict[str, Any]]:
    return [
        {"host": "127.0.0.1", "port": ports[i % len(ports)], "path": path(i)} for i in range(count)
    ]


@contextlib.asynccontextmanager
async def wsconsole(size: FanoutSize, limits: Limits | None = None) -> AsyncIterator[Setup]:
    """The harness: Cluster with auth and default limits (or `limits`); one user per
    connection."""
    cluster = Cluster(ClusterConfig(nodes=size.nodes, limits=limits or Limits()))
    await cluster.start()
    try:
        ports = [info.port for info in cluster.nodes.values() if info.port]
        balancer = cluster.balancer.pid
        subs = _spread(ports, size.subscribers,
                       lambda i: f"/?token={cluster.token(f'sub{i}', ('bench',))}")  # fmt: skip
        pubs = _spread(ports, size.publishers,
                       lambda i: f"/?token={cluster.token(f'pub{i}', ('bench',))}")  # fmt: skip
        node_pids = [info.pid for info in cluster.nodes.values() if info.pid]
        broker = [pid for pid in cluster.pids() if pid not in node_pids and pid != balancer]
        yield Setup("harness", subs, pubs, node_pids, broker[0] if broker else None)
    finally:
        await cluster.stop()


@contextlib.asynccontextmanager
async def _redis_nodes(size: FanoutSize, argv: Callable[[str], list[str]],
                       env: dict[str, str]) -> AsyncIterator[Setup]:  # fmt: skip
    broker = Broker()
    broker.start()
    children: list[Child] = []
    try:
        for _ in range(size.nodes):
            children.append(Child(argv(broker.url), env=env))
        ports = list(await asyncio.gather(*(c.start() for c in children)))
        yield Setup(
            "sio",
            _spread(ports, size.subscribers, lambda i: SIO_PATH),
            _spread(ports, size.publishers, lambda i: SIO_PATH),
            [c.pid for c in children],
            broker.pid,
        )
    finally:
        for child in children:
            child.stop()
        broker.stop()


def python_socketio(size: FanoutSize) -> contextlib.AbstractAsyncContextManager[Setup]:
    """python-socketio AsyncServer + AsyncRedisManager on aiohttp, one process per node."""
    return _redis_nodes(
        size,
        lambda url: [python(), "-m", "benchmarks.servers.sio_server", "--port", "0",
                     "--redis", url],
        child_env(),
    )


def node_socketio(size: FanoutSize) -> contextlib.AbstractAsyncContextManager[Setup]:
    """Node.js socket.io + @socket.io/redis-adapter, one process per node."""
    script = str(ROOT / "benchmarks" / "servers" / "sio_server.js")
    env = child_env(NODE_PATH=str(NODE_DIR / "node_modules"))
    return _redis_nodes(size, lambda url: ["node", script, "--port", "0", "--redis", url], env)


@contextlib.asynccontextmanager
async def websockets_broadcast(size: FanoutSize) -> AsyncIterator[Setup]:
    """One plain asyncio process, `websockets.broadcast` to every subscriber, no broker."""
    child = Child([python(), "-m", "benchmarks.servers.broadcast_server", "--port", "0"])
    port = await child.start()
    try:
        yield Setup(
            "plain",
            _spread([port], size.subscribers, lambda i: "/"),
            _spread([port], size.publishers, lambda i: "/pub"),
            [child.pid],
        )
    finally:
        child.stop()


FACTORIES = {
    "wsconsole": wsconsole,
    "python-socketio": python_socketio,
    "node-socketio": node_socketio,
    "websockets-broadcast": websockets_broadcast,
}


class Generators:
    """The load generator's processes for one contender: subscribers and a publisher."""

    def __init__(self, setup: Setup, size: FanoutSize) -> None:
        chunks = [setup.subs[i :: size.sub_procs] for i in range(size.sub_procs)]
        self.subs = [LoadGen({"role": "sub", "kind": setup.kind, "targets": chunk})
                     for chunk in chunks]  # fmt: skip
        self.pub = LoadGen({"role": "pub", "kind": setup.kind, "targets": setup.pubs})
        self.size = size
        self.subscribers = len(setup.subs)

    @property
    def all(self) -> list[LoadGen]:
        """Every process."""
        return [*self.subs, self.pub]

    async def start(self, name: str) -> None:
        """Open every connection; BenchError when any failed."""
        readies = await asyncio.gather(*(g.start() for g in self.all))
        for ready in readies:
            if ready["failed"]:
                raise BenchError(
                    f"{name}: {ready['failed']} connections failed, e.g. {ready['error']}"
                )

    async def stop(self) -> None:
        """Quit every process."""
        await asyncio.gather(*(g.stop() for g in self.all))

    async def quiet(self, timeout: float = 20.0) -> None:
        """Wait until the subscribers stop receiving (a previous step's backlog is gone)."""
        last = -1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            counts = await asyncio.gather(*(s.call(cmd="count") for s in self.subs))
            total = sum(c["received"] for c in counts)
            if total == last:
                return
            last = total
            await asyncio.sleep(0.3)

    async def step(self, servers: CpuMeter, gens: CpuMeter, rate: float, seconds: float,
                   grace: float, step: int) -> dict[str, Any]:  # fmt: skip
        """Publish at `rate` for `seconds` as step `step`; what arrived in time."""
        await self.quiet()
        servers.start()
        gens.start()
        sent = await self.pub.call(cmd="publish", rate=rate, seconds=seconds, step=step,
                                   timeout=seconds + 60)  # fmt: skip
        await asyncio.sleep(grace)
        server_cpu = servers.read()
        gen_cpu = gens.read()
        reports = await asyncio.gather(*(s.call(cmd="report", step=step) for s in self.subs))
        return measure(rate, sent, reports, self.subscribers, server_cpu, gen_cpu)


def measure(rate: float, sent: dict[str, Any], reports: list[dict[str, Any]],
            subscribers: int, server_cpu: dict[str, float],
            gen_cpu: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    """One step's figures from the publisher's and the subscribers' reports."""
    received = sum(r["received"] for r in reports)
    hist = histogram([r["hist"] for r in reports])
    expected = sent["sent"] * subscribers
    seconds = max(1e-6, sent["seconds"])

    def ms(p: float) -> float | None:
        value = hist.percentile(p)
        return None if value is None else round(value * 1000, 2)

    return {
        "rate": rate,
        "sent": sent["sent"],
        "received": received,
        "offered_per_s": round(expected / seconds),
        "delivered_per_s": round(received / seconds),
        "delivered_ratio": round(received / expected, 5) if expected else None,
        "p50_ms": ms(50),
        "p99_ms": ms(99),
        "p999_ms": ms(99.9),
        "max_ms": None if hist.count == 0 else round(hist.max * 1000, 2),
        "server_cpu": server_cpu,
        "cpu_us_per_delivery": round(server_cpu["cpu_s"] / received * 1e6, 2) if received else None,
        "loadgen_cpu": gen_cpu,
        "acked": sent.get("acked"),
        "refused": sent.get("refused") or {},
        "lagging": sum(sum(r["lagging"]) for r in reports),
        "lagged_clients": sum(1 for r in reports for n in r["lagging"] if n),
        "open": sum(r["open"] for r in reports),
        "per_client": [n for r in reports for n in r["per_client"]],
        "worst_s": [w for r in reports for w in r["worst_s"]],
    }


def in_bound(step: dict[str, Any], size: FanoutSize) -> bool:
    """The latency bound: >= 99.9 % delivered in time and p99 < 50 ms."""
    return ((step["delivered_ratio"] or 0) >= size.bound_ratio
            and step["p99_ms"] is not None and step["p99_ms"] < size.bound_p99_ms)  # fmt: skip


def saturated(step: dict[str, Any]) -> bool:
    """Most of the load no longer arrives in time, or a backlog of over a second builds."""
    return (step["delivered_ratio"] or 0) < 0.9 or (step["p50_ms"] or 0) > 1000


def _lean(step: dict[str, Any]) -> dict[str, Any]:
    """A step without its per-client lists (kept only where they are read)."""
    return {k: v for k, v in step.items() if k not in ("per_client", "worst_s")}


async def ramp(name: str, size: FanoutSize, log: Callable[[str], None]) -> dict[str, Any]:
    """Start one contender, run the ramp once, stop it."""
    async with FACTORIES[name](size) as setup:
        gens = Generators(setup, size)
        try:
            await gens.start(name)
            servers = CpuMeter(setup.pids)
            meters = CpuMeter([g.pid for g in gens.all if g.pid])
            await gens.step(servers, meters, 10.0, 0.5, 0.5, 0)  # warm-up
            steps = []
            for index, rate in enumerate(size.rates, start=1):
                step = _lean(await gens.step(servers, meters, rate, size.step_seconds,
                                             size.grace, index))  # fmt: skip
                step["in_bound"] = in_bound(step, size)
                steps.append(step)
                log(f"fanout {name}: {rate:g}/s -> {step['delivered_per_s']:,}/s "
                    f"({step['delivered_ratio']}), p50 {step['p50_ms']} p99 {step['p99_ms']} ms, "
                    f"{step['cpu_us_per_delivery']} us/delivery")  # fmt: skip
                if saturated(step):
                    break
        finally:
            await gens.stop()
    return summarize_ramp(steps, setup, size)


def summarize_ramp(steps: list[dict[str, Any]], setup: Setup, size: FanoutSize) -> dict[str, Any]:
    """The ramp's headline figures: latency-bounded rate, equal-load CPU, saturation."""
    bounded = [s for s in steps if s["in_bound"]]
    best_bounded = max(bounded, key=lambda s: s["rate"]) if bounded else None
    saturation = max(steps, key=lambda s: s["delivered_per_s"])
    equal = next((s for s in steps if s["rate"] == size.equal_load), None)
    return {
        "nodes": setup.nodes,
        "bounded_per_s": best_bounded["offered_per_s"] if best_bounded else 0,
        "bounded_rate": best_bounded["rate"] if best_bounded else None,
        "bounded_cpu_us": best_bounded["cpu_us_per_delivery"] if best_bounded else None,
        "equal_cpu_us": equal["cpu_us_per_delivery"] if equal else None,
        "equal_p50_ms": equal["p50_ms"] if equal else None,
        "equal_p99_ms": equal["p99_ms"] if equal else None,
        "saturation_per_s": saturation["delivered_per_s"],
        "saturation_ratio": saturation["delivered_ratio"],
        "saturation_p50_ms": saturation["p50_ms"],
        "saturation_p99_ms": saturation["p99_ms"],
        "loadgen_cpu_max_pct": max(s["loadgen_cpu"]["max_pct"] for s in steps),
        "steps": steps,
    }


KEYS = ("bounded_per_s", "bounded_cpu_us", "equal_cpu_us", "equal_p50_ms", "equal_p99_ms",
        "saturation_per_s", "saturation_p50_ms", "saturation_p99_ms", "loadgen_cpu_max_pct")


async def run(size: FanoutSize, repeat: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Interleaved repeats of every contender's ramp; medians, spreads and every step."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in size.contenders}
    reasons: dict[str, str] = {}
    for index in range(repeat):
        for name in size.contenders:
            if name in reasons:
                continue
            if name == "node-socketio":
                reason = await asyncio.to_thread(ensure_node_modules)
                if reason is not None:
                    reasons[name] = reason
                    continue
            log(f"fanout: {name}, repeat {index + 1}")
            try:
                runs[name].append(await ramp(name, size, log))
            except BenchError as exc:
                reasons[name] = str(exc)
                log(f"fanout: {name}: not run: {exc}")
    out: dict[str, Any] = {}
    for name in size.contenders:
        if not runs[name]:
            out[name] = {"not_run": reasons.get(name, "no run")}
            continue
        done = runs[name]
        summary = {key: summarize([r[key] for r in done]) for key in KEYS}
        out[name] = {
            **{key: block["median"] for key, block in summary.items()},
            "spread": summary,
            "nodes": done[0]["nodes"],
            "subscribers": size.subscribers,
            "runs": done,
        }
    return out
