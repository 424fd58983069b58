"""`wsconsole relay`: a raw TCP relay with live network faults, one listening port per route.

The harness puts it between its nodes and the shards of its own Valkey Cluster (each server
announces the relay's port for itself, valkeycluster.py), so a network fault between the
nodes and one shard is a real one: `blackhole` holds the bytes both ways (a partition: the
servers stay up and talk among themselves, the nodes' commands and subscriptions stall, and
flow again in order once healed), `reset persist` refuses every connection, `latency` delays.
The pipes are the balancer's (`pump.Connection`) with the same faults (netfaults.py), kept by
`FaultRoutes`; without a fault a chunk costs one read and one write.

Routes are `NAME=HOST:PORT` (the target); each gets its own listening port on `--host`, chosen
by the system, printed in the hello line `{"event": "listening", "port": FIRST, "ports":
{NAME: PORT}, "pid"}`. Over `--control` (key in `WSCONSOLE_CONTROL_KEY`) it pushes its
counters every half second and answers `fault {target, kind, ...params}`, `fault_clear
{target, kind?}` and `stats`; losing the channel stops it, as it does the balancer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from typing import Any

import orjson

from wsconsole.core.signals import stop_on_signals
from wsconsole.core.tasks import Tasks
from wsconsole.harness.balancer import parse_backend, parse_hostport
from wsconsole.harness.control import CONTROL_KEY_ENV, ControlClient
from wsconsole.harness.faultroutes import FaultRoutes
from wsconsole.harness.netfaults import ALL
from wsconsole.harness.pump import CHUNK, Backend, Connection

log = logging.getLogger("wsconsole.relay")

HELP = "Relay raw TCP to fixed targets, with live network faults (the harness's shard cuts)."
CONNECT_TIMEOUT = 2.0
STATS_INTERVAL = 0.5  # how often the relay pushes its counters (and sees its supervisor)


class Relay:
    """Listening ports in front of fixed targets; see the module docstring."""

    def __init__(self, host: str, routes: list[tuple[str, str, int]]) -> None:
        self.host = host
        self.routes = FaultRoutes()
        for name, target_host, target_port in routes:
            self.routes.add(Backend(name, target_host, target_port))
        self.ports: dict[str, int] = {}
        self.stopped = asyncio.Event()
        self._servers: list[asyncio.Server] = []
        self._serving: set[asyncio.Task[Any]] = set()

    async def start(self) -> dict[str, int]:
        """Listen for every route; returns name -> listening port."""
        for backend in self.routes.backends.values():
            server = await asyncio.start_server(
                lambda r, w, b=backend: self._accept(b, r, w), self.host, 0, limit=CHUNK
            )
            self._servers.append(server)
            self.ports[backend.id] = server.sockets[0].getsockname()[1]
        return self.ports

    async def stop(self) -> None:
        """Stop listening and end every connection."""
        self.stopped.set()
        for server in self._servers:
            server.close()
        for backend in self.routes.backends.values():
            for conn in list(backend.open):
                conn.abort()
        for task in self._serving:
            task.cancel()
        await asyncio.gather(*self._serving, return_exceptions=True)

    async def _accept(
        self, backend: Backend, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._serving.add(task)
        try:
            await self._serve(backend, reader, writer)
        except Exception:  # one bad connection must never take the relay down
            log.exception("%s: connection failed", backend.id)
            writer.transport.abort()
        finally:
            if task is not None:
                self._serving.discard(task)

    async def _serve(
        self, backend: Backend, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                server = await asyncio.open_connection(backend.host, backend.port, limit=CHUNK)
        except (OSError, TimeoutError) as exc:
            log.info("%s: target refused a connection (%r)", backend.id, exc)
            writer.transport.abort()
            return
        conn = Connection(backend, (reader, writer), server, b"", None, self.routes.changed)
        await conn.carry()

    def stats(self) -> dict[str, Any]:
        """Routes with their counters, and the active faults."""
        return {
            "t": time.time(),
            "routes": {b.id: b.stats() for b in self.routes.backends.values()},
            "faults": self.routes.board.listing(),
        }

    async def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        """Answer one control command (fault, fault_clear, stats)."""
        cmd = message.get("cmd")
        target = str(message.get("target", ALL))
        if cmd == "fault":
            params = {k: v for k, v in message.items()
                      if k not in ("type", "rid", "cmd", "target", "kind")}
            self.routes.apply_fault(target, message.get("kind"), params)
            return {"faults": self.routes.board.listing()}
        if cmd == "fault_clear":
            removed = self.routes.clear_fault(target, message.get("kind"))
            return {"removed": removed, "faults": self.routes.board.listing()}
        if cmd == "stats":
            return self.stats()
        raise ValueError(f"unknown command {cmd!r} (fault, fault_clear, stats)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The relay's options."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--route", action="append", default=[], metavar="NAME=HOST:PORT",
                        help="a target, relayed from a port of its own (repeat)")
    parser.add_argument("--control", metavar="HOST:PORT", help="supervisor control channel")


async def _push_stats(client: ControlClient, relay: Relay) -> None:
    """Push the routes' counters every STATS_INTERVAL until the channel is lost, then stop."""
    while client.connected:
        await client.send({"type": "stats", **relay.stats()})
        await asyncio.sleep(STATS_INTERVAL)
    log.warning("control channel lost: stopping")
    relay.stopped.set()


async def serve(host: str, routes: list[tuple[str, str, int]],
                control: tuple[str, int] | None) -> int:
    """Run a relay until SIGTERM/SIGINT or the control channel goes; returns an exit code."""
    relay = Relay(host, routes)
    tasks = Tasks(prefix="relay")
    client = ControlClient("relay", os.environ.get(CONTROL_KEY_ENV, ""), relay.handle)
    try:
        ports = await relay.start()
        if control is not None:
            await client.connect(*control)
            tasks.spawn(_push_stats(client, relay), "stats")
    except OSError as exc:
        await relay.stop()
        sys.stderr.write(f"wsconsole relay: error: cannot start: {exc}\n")
        return 2
    with stop_on_signals(relay.stopped.set):
        first = next(iter(ports.values()), 0)
        hello = {"event": "listening", "port": first, "ports": ports, "pid": os.getpid()}
        sys.stdout.write(orjson.dumps(hello).decode() + "\n")
        sys.stdout.flush()
        await relay.stopped.wait()
    await tasks.cancel_all()
    with contextlib.suppress(Exception):
        await client.close()
    await relay.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    """Validate the options and relay in this process (exit 2 on bad usage)."""
    try:
        routes = [parse_backend(text) for text in args.route]
        names = [route[0] for route in routes]
        if not routes or len(set(names)) != len(names) or ALL in names:
            raise ValueError("give at least one --route; names must be unique and not 'all'")
        control = parse_hostport(args.control) if args.control else None
    except ValueError as exc:
        sys.stderr.write(f"wsconsole relay: error: {exc}\n")
        return 2
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="relay %(levelname)s %(message)s")
    return asyncio.run(serve(args.host, routes, control))
