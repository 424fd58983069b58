"""Fan-out through the broker: one room, N subscribers spread over the nodes.

Contenders, each started here in turn: the wsconsole harness (3 nodes via `Cluster`, auth
on: one token per distinct user, default limits), python-socketio with AsyncRedisManager,
Node.js socket.io with @socket.io/redis-adapter (3 nodes each, on the same valkey from
`Broker`), and one `websockets.broadcast` process (the upper bound: no broker at all).
Subscribers connect straight to the nodes' ports, spread round-robin by the load
generator itself (the same for every contender: 2 subscriber processes, 1 publisher).

Per repeat: a latency step at a fixed moderate rate (publish-to-deliver p50/p99 from the
send time carried in each message), then a ramp of publish rates until the delivered
rate falls below 70 % of the offered one (or the median latency passes 1 s: a growing
backlog); "delivered_per_s" is the best step.
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
    percentile,
    python,
    summarize,
)
from wsconsole.harness.broker import Broker
from wsconsole.harness.cluster import Cluster, ClusterConfig

CONTENDERS = ("wsconsole", "python-socketio", "node-socketio", "websockets-broadcast")
SIO_PATH = "/socket.io/?EIO=4&transport=websocket"


@dataclass
class FanoutSize:
    """How big and how long; `quick()` is the tiny size the test suite uses."""

    subscribers: int = 500
    nodes: int = 3
    sub_procs: int = 2
    latency_rate: float = 100.0  # publishes/s: x 500 subscribers = 50k deliveries/s
    latency_seconds: float = 6.0
    rates: tuple[float, ...] = (100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0)
    step_seconds: float = 3.0
    per_pub_conn: float = 80.0  # publishes/s per publisher connection (node limit: 100)
    contenders: tuple[str, ...] = CONTENDERS

    @classmethod
    def quick(cls) -> FanoutSize:
        """A few subscribers for a second or two: proves the machinery, measures nothing."""
        return cls(
            subscribers=12,
            nodes=2,
            sub_procs=1,
            latency_rate=20.0,
            latency_seconds=1.0,
            rates=(40.0, 80.0),
            step_seconds=1.0,
        )


@dataclass
class Setup:
    """A running contender: protocol kind, subscriber and publisher targets, server PIDs."""

    kind: str
    subs: list[dict[str, Any]]
    pubs: list[dict[str, Any]]
    pids: list[int] = field(default_factory=list)


def _spread(ports: list[int], count: int, path: Callable[[int], str]) -> list[dict[str, Any]]:
    return [
        {"host": "127.0.0.1", "port": ports[i % len(ports)], "path": path(i)} for i in range(count)
    ]


@contextlib.asynccontextmanager
async def wsconsole(size: FanoutSize, publishers: int) -> AsyncIterator[Setup]:
    """The harness: Cluster with auth and default limits; one user per connection."""
    cluster = Cluster(ClusterConfig(nodes=size.nodes))
    await cluster.start()
    try:
        ports = [info.port for info in cluster.nodes.values() if info.port]
        subs = _spread(ports, size.subscribers,
                       lambda i: f"/?token={cluster.token(f'sub{i}', ('bench',))}")  # fmt: skip
        pubs = _spread(ports, publishers,
                       lambda i: f"/?token={cluster.token(f'pub{i}', ('bench',))}")  # fmt: skip
        yield Setup("harness", subs, pubs, cluster.pids())
    finally:
        await cluster.stop()


@contextlib.asynccontextmanager
async def _redis_nodes(size: FanoutSize, argv: Callable[[str], list[str]], env: dict[str, str],
                       publishers: int) -> AsyncIterator[Setup]:  # fmt: skip
    broker = Broker()
    broker.start()
    children: list[Child] = []
    try:
        for _ in range(size.nodes):
            children.append(Child(argv(broker.url), env=env))
        ports = list(await asyncio.gather(*(c.start() for c in children)))
        pids = [c.pid for c in children] + ([broker.pid] if broker.pid else [])
        yield Setup(
            "sio",
            _spread(ports, size.subscribers, lambda i: SIO_PATH),
            _spread(ports, publishers, lambda i: SIO_PATH),
            pids,
        )
    finally:
        for child in children:
            child.stop()
        broker.stop()


def python_socketio(size: FanoutSize, publishers: int) -> contextlib.AbstractAsyncContextManager[Setup]:  # noqa: E501
    """python-socketio AsyncServer + AsyncRedisManager on aiohttp, one process per node."""
    return _redis_nodes(
        size,
        lambda url: [python(), "-m", "benchmarks.servers.sio_server", "--port", "0",
                     "--redis", url],
        child_env(),
        publishers,
    )


def node_socketio(size: FanoutSize, publishers: int) -> contextlib.AbstractAsyncContextManager[Setup]:  # noqa: E501
    """Node.js socket.io + @socket.io/redis-adapter, one process per node."""
    script = str(ROOT / "benchmarks" / "servers" / "sio_server.js")
    env = child_env(NODE_PATH=str(NODE_DIR / "node_modules"))
    return _redis_nodes(
        size, lambda url: ["node", script, "--port", "0", "--redis", url], env, publishers
    )


@contextlib.asynccontextmanager
async def websockets_broadcast(size: FanoutSize, publishers: int) -> AsyncIterator[Setup]:
    """One process, `websockets.broadcast` to every subscriber: the upper bound."""
    child = Child([python(), "-m", "benchmarks.servers.broadcast_server", "--port", "0"])
    port = await child.start()
    try:
        yield Setup(
            "plain",
            _spread([port], size.subscribers, lambda i: "/"),
            _spread([port], publishers, lambda i: "/pub"),
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


async def _quiet(subs: list[LoadGen], timeout: float = 15.0) -> None:
    """Wait until the subscribers stop receiving (the previous step's backlog is gone)."""
    last = -1
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        counts = await asyncio.gather(*(s.call(cmd="count") for s in subs))
        total = sum(c["received"] for c in counts)
        if total == last:
            return
        last = total
        await asyncio.sleep(0.4)


async def _step(
    subs: list[LoadGen], pub: LoadGen, servers: CpuMeter, gens: CpuMeter,
    n_subs: int, rate: float, seconds: float, sample_every: int, tail: float,
) -> dict[str, Any]:  # fmt: skip
    """Publish at `rate` for `seconds`; what the subscribers got (plus `tail` s for stragglers)."""
    await _quiet(subs)
    await asyncio.gather(*(s.call(cmd="start", sample_every=sample_every) for s in subs))
    servers.start()
    gens.start()
    sent = await pub.call(cmd="publish", rate=rate, seconds=seconds, timeout=seconds + 60)
    if tail:
        await asyncio.sleep(tail)
    server_cpu = servers.read()
    gen_cpu = gens.read()
    results = await asyncio.gather(*(s.call(cmd="stop") for s in subs))
    received = sum(r["received"] for r in results)
    elapsed = max(r["seconds"] for r in results)
    latencies = [x for r in results for x in r["latencies"]]
    expected = sent["sent"] * n_subs
    return {
        "rate": rate,
        "sent": sent["sent"],
        "offered_per_s": round(expected / max(1e-6, sent["seconds"])),
        "delivered_per_s": round(received / max(1e-6, elapsed)),
        "delivered_ratio": round(received / expected, 4) if expected else None,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "latency_samples": len(latencies),
        "server_cpu": server_cpu,
        "loadgen_cpu": gen_cpu,
        "open": sum(r["open"] for r in results),
    }


async def run_contender(name: str, size: FanoutSize, repeat: int) -> dict[str, Any]:
    """Start one contender, measure `repeat` times, stop it; medians and every run."""
    publishers = max(1, math.ceil(max((*size.rates, size.latency_rate)) / size.per_pub_conn))
    if name == "node-socketio":
        reason = await asyncio.to_thread(ensure_node_modules)
        if reason is not None:
            return {"not_run": reason}
    factory = FACTORIES[name]
    runs: list[dict[str, Any]] = []
    async with factory(size, publishers) as setup:
        chunks = [setup.subs[i :: size.sub_procs] for i in range(size.sub_procs)]
        subs = [LoadGen({"role": "sub", "kind": setup.kind, "targets": c}) for c in chunks]
        pub = LoadGen({"role": "pub", "kind": setup.kind, "targets": setup.pubs})
        try:
            readies = await asyncio.gather(*(g.start() for g in [*subs, pub]))
            for ready in readies:
                if ready["failed"]:
                    raise BenchError(
                        f"{name}: {ready['failed']} connections failed, e.g. {ready['error']}"
                    )
            servers = CpuMeter(setup.pids)
            gens = CpuMeter([g.pid for g in [*subs, pub] if g.pid])
            n = size.subscribers
            await _step(subs, pub, servers, gens, n, 10.0, 0.5, 1, 0.5)  # warm-up
            for _ in range(repeat):
                latency = await _step(subs, pub, servers, gens, n, size.latency_rate,
                                      size.latency_seconds, 1, 1.0)  # fmt: skip
                ramp = []
                for rate in size.rates:
                    every = max(1, int(rate * n / 5000))
                    step = await _step(subs, pub, servers, gens, n, rate, size.step_seconds,
                                       every, 0.0)  # fmt: skip
                    ramp.append(step)
                    if step["delivered_per_s"] < 0.7 * step["offered_per_s"]:
                        break  # saturated: most of the offered load no longer arrives
                    if (step["p50_ms"] or 0) > 1000:
                        break  # saturated: a backlog of more than a second builds up
                best = max(ramp, key=lambda s: s["delivered_per_s"])
                runs.append({"latency_step": latency, "ramp": ramp, "best": best})
        finally:
            await asyncio.gather(*(g.stop() for g in [*subs, pub]))
    return {
        "delivered_per_s": summarize([r["best"]["delivered_per_s"] for r in runs])["median"],
        "p50_ms": summarize([r["latency_step"]["p50_ms"] for r in runs])["median"],
        "p99_ms": summarize([r["latency_step"]["p99_ms"] for r in runs])["median"],
        "delivered_per_s_spread": summarize([r["best"]["delivered_per_s"] for r in runs]),
        "p99_ms_spread": summarize([r["latency_step"]["p99_ms"] for r in runs]),
        "latency_delivered_ratio": summarize(
            [r["latency_step"]["delivered_ratio"] for r in runs]
        )["median"],
        "loadgen_cpu_max_pct_at_best": max(r["best"]["loadgen_cpu"]["max_pct"] for r in runs),
        "server_cpu_total_pct_at_best": summarize(
            [r["best"]["server_cpu"]["total_pct"] for r in runs]
        )["median"],
        "delivered_per_server_cpu_s": summarize(
            [
                round(r["best"]["delivered_per_s"] / (r["best"]["server_cpu"]["total_pct"] / 100))
                if r["best"]["server_cpu"]["total_pct"]
                else None
                for r in runs
            ]
        )["median"],
        "nodes": 1 if name == "websockets-broadcast" else size.nodes,
        "subscribers": size.subscribers,
        "runs": runs,
    }


async def run(size: FanoutSize, repeat: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Every contender in turn; a contender that cannot run is recorded with the reason."""
    out: dict[str, Any] = {}
    for name in size.contenders:
        log(f"fanout: {name}")
        try:
            out[name] = await run_contender(name, size, repeat)
        except BenchError as exc:
            out[name] = {"not_run": str(exc)}
        log(f"fanout: {name}: {_brief(out[name])}")
    return out


def _brief(result: dict[str, Any]) -> str:
    if "not_run" in result:
        return f"not run: {result['not_run']}"
    return (
        f"{result['delivered_per_s']} delivered/s, p50 {result['p50_ms']} ms, "
        f"p99 {result['p99_ms']} ms, loadgen max {result['loadgen_cpu_max_pct_at_best']}% CPU"
    )
