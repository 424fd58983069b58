"""The harness's sticky load balancer: an asyncio TCP proxy in its own OS process.

Run as ``python -m wsconsole.harness.balancer`` or ``wsconsole balancer``::

    --host 127.0.0.1 --port P (0: a free port) --backend ID=HOST:PORT (repeatable)
    --sticky ip|cookie|sid [--control HOST:PORT] [--health-interval 0.5] [--health-timeout T]
    [--head-timeout 5] [--tls-cert FILE --tls-key FILE] [--backend-ca FILE] [--observe]

Once listening it prints ONE JSON line on stdout, ``{"event": "listening", "port", "pid"}``;
logs go to stderr. SIGTERM or SIGINT stops it; so does losing its control channel (a balancer
never outlives its supervisor).

Per connection: read the client's HTTP request head (at most ``MAX_HEAD`` bytes within
``HEAD_TIMEOUT`` seconds; garbage or oversize -> 400, too slow -> 408, then close), pick a
backend, forward the head (plus ``X-Forwarded-For``) and pipe bytes both ways. No healthy
backend -> 503. A backend that refuses the TCP connection is marked unhealthy at once and the
next one is tried (-> 502 when none accepts). With `--tls-cert/--tls-key` clients get wss://
(TLS ends here, so the head can be read and routed); with `--backend-ca` the balancer talks
TLS to the backends too, health checks included (the harness's `--tls`: every hop encrypted).

This module accepts, routes and connects; each other job has its own module:
``httphead`` (reading and parsing the request head), ``routing`` (sticky affinity, pure),
``pump`` (the two-way byte pump, where chunk observers attach; ``--observe`` counts the
WebSocket messages of nodes that report nothing themselves, ``wsframes``), ``shaper`` and
``netfaults`` (network faults), ``health`` (``GET /healthz`` checks), ``balancerctl`` (the
supervisor's commands and the stats pushes).

Measured on the shared 2-core box (64 KiB bulk, one stream): direct ~850 MB/s, through the
balancer ~780-870 MB/s, the fault path with a 0 ms latency fault ~560-870 MB/s (noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from wsconsole.core.localca import ServerFiles
from wsconsole.core.signals import stop_on_signals
from wsconsole.core.tasks import Tasks
from wsconsole.harness.balancerctl import BalancerControl
from wsconsole.harness.control import CONTROL_KEY_ENV
from wsconsole.harness.faultroutes import FaultRoutes
from wsconsole.harness.health import HealthChecks, default_timeout
from wsconsole.harness.httphead import (
    HEAD_TIMEOUT,
    MAX_HEAD,
    HeadError,
    http_response,
    parse_request_head,
    read_head,
    with_header,
)
from wsconsole.harness.netfaults import ALL, FaultBoard
from wsconsole.harness.pump import CHUNK, Backend, Connection
from wsconsole.harness.routing import STICKY_MODES, choose, cookie_to_set
from wsconsole.harness.tlsfiles import add_tls_arguments, tls_context, tls_files

log = logging.getLogger("wsconsole.balancer")

CONNECT_TIMEOUT = 2.0
LISTEN_BACKLOG = 4096  # a reconnect storm arrives at once (asyncio's default is 100)


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
    tls: ServerFiles | None = None  # serve wss:// to clients with these
    backend_ca: str | None = None  # talk TLS to the backends, trusting this CA file
    observe: bool = False  # count messages on the wire, tag responses with the node


class Balancer:
    """The proxy: accepts clients, routes them to a healthy backend, pipes the bytes."""

    def __init__(self, config: BalancerConfig) -> None:
        if config.sticky not in STICKY_MODES:
            raise ValueError(f"sticky mode must be one of {', '.join(STICKY_MODES)}")
        self.config = config
        self.sticky = config.sticky
        self.routes = FaultRoutes()  # the backends and the network faults on them
        self.rejected: dict[int, int] = {}
        self.port = 0
        self.stopped = asyncio.Event()
        self.push_now = asyncio.Event()  # stats worth pushing before the next interval
        timeout = config.health_timeout
        if timeout is None:
            timeout = default_timeout(config.health_interval)
        self.server_tls = tls_context(config.tls)
        # the backends' certificates name the loopback address the balancer dials
        self.backend_tls = (ssl.create_default_context(cafile=config.backend_ca)
                            if config.backend_ca else None)
        self.health = HealthChecks(config.health_interval, timeout, self._health_changed,
                                   self.backend_tls)
        self.control: BalancerControl | None = None
        self._server: asyncio.Server | None = None
        self._tasks = Tasks(prefix="balancer")
        self._serving: set[asyncio.Task[Any]] = set()  # one per accepted client
        for backend_id, host, port in config.backends:
            if backend_id in self.backends:
                raise ValueError(f"duplicate backend id {backend_id!r}")
            self.routes.add(Backend(backend_id, host, port))

    @property
    def backends(self) -> dict[str, Backend]:
        """The backends by id."""
        return self.routes.backends

    @property
    def board(self) -> FaultBoard:
        """The network faults set, by target."""
        return self.routes.board

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> int:
        """Check every backend once, listen, start health loops and control; returns the port."""
        await asyncio.gather(*(self.health.check(b) for b in self.backends.values()))
        self._server = await asyncio.start_server(
            self._accept, self.config.host, self.config.port, limit=CHUNK,
            backlog=LISTEN_BACKLOG, ssl=self.server_tls,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        for backend in self.backends.values():
            self.health.start(backend)
        if self.config.control is not None:
            self.control = BalancerControl(self, os.environ.get(CONTROL_KEY_ENV, ""))
            await self.control.client.connect(*self.config.control)
            self._tasks.spawn(self.control.push_stats(), "stats")
        return self.port

    async def stop(self) -> None:
        """Stop listening, end every connection and background task."""
        self.stopped.set()
        if self._server is not None:
            self._server.close()
        for backend in self.backends.values():
            for conn in list(backend.open):
                conn.abort()
        for task in self._serving:
            task.cancel()
        await asyncio.gather(*self._serving, return_exceptions=True)
        await self.health.stop_all()
        await self._tasks.cancel_all()
        if self.control is not None:
            await self.control.client.close()

    def _health_changed(self, backend: Backend) -> None:
        self.push_now.set()

    async def changed(self) -> None:
        """Wait until the faults change (stalled pipes wake up and re-check)."""
        await self.routes.changed()

    # -- connections -------------------------------------------------------------------------

    async def _reject(self, writer: asyncio.StreamWriter, status: int, body: str) -> None:
        self.rejected[status] = self.rejected.get(status, 0) + 1
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(http_response(status, body))
            async with asyncio.timeout(1.0):
                await writer.drain()
        writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._serving.add(task)
        try:
            await self._serve(reader, writer)
        except Exception:  # one bad connection must never take the balancer down
            log.exception("connection failed")
            writer.transport.abort()
        finally:
            if task is not None:
                self._serving.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        client_ip = str(peer[0])
        try:
            head, rest = await read_head(reader, self.config.max_head, self.config.head_timeout)
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
            healthy = [b for b in self.backends.values() if b.healthy and b.id not in tried]
            backend = choose(self.sticky, request, client_ip, healthy)
            if backend is None:
                status = 502 if tried else 503
                await self._reject(writer, status, "no healthy backend")
                return
            tried.add(backend.id)
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    server = await asyncio.open_connection(
                        backend.host, backend.port, limit=CHUNK, ssl=self.backend_tls
                    )
                break
            except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
                log.info("backend %s refused a connection (%r)", backend.id, exc)
                self.health.mark(backend, False)
        forwarded = with_header(head, "X-Forwarded-For", client_ip) + rest
        cookie_for = cookie_to_set(self.sticky, request, backend.id)
        conn = Connection(backend, (reader, writer), server, forwarded, cookie_for, self.changed,
                          observe=self.config.observe)
        await conn.carry()

    # -- faults and backends -----------------------------------------------------------------

    def apply_fault(self, target: str, kind: object, params: dict[str, Any]) -> None:
        """Activate a fault on a backend id or "all" (raises FaultError / KeyError)."""
        self.routes.apply_fault(target, kind, params)

    def clear_fault(self, target: str, kind: str | None = None) -> int:
        """Clear one kind (None: all kinds) on a target; returns how many were removed."""
        return self.routes.clear_fault(target, kind)

    async def add_backend(self, backend_id: str, host: str, port: int,
                          health_path: str = "/healthz", health_any: bool = False) -> Backend:
        """Add a backend, check it once, and start its health loop. Health: `GET health_path`
        answers 2xx (or anything at all, with `health_any`)."""
        if not backend_id or backend_id == ALL or backend_id in self.backends:
            raise ValueError(f"backend id {backend_id!r} is empty, reserved or taken")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"bad port {port!r}")
        if not isinstance(health_path, str) or not health_path.startswith("/") or \
                any(c in health_path for c in " \r\n"):
            raise ValueError(f"bad health path {health_path!r}")
        backend = Backend(backend_id, str(host), port, health_path=health_path,
                          health_any=bool(health_any))
        self.routes.add(backend)
        await self.health.check(backend)
        self.health.start(backend)
        return backend

    async def remove_backend(self, backend_id: str) -> None:
        """Stop routing to a backend; its open connections end by themselves."""
        self.routes.remove(backend_id)
        self.health.stop(backend_id)

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


# -- command line -----------------------------------------------------------------------------


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
    add_tls_arguments(parser)
    parser.add_argument("--backend-ca", metavar="FILE",
                        help="connect to the backends over TLS, trusting this CA (PEM)")
    parser.add_argument(
        "--observe", action="store_true",
        help="count WebSocket messages per node on the wire; tag responses with the node",
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
    tls = tls_files(args)
    tls_context(tls)  # unreadable files are bad usage, said before listening
    if args.backend_ca is not None:
        try:
            ssl.create_default_context(cafile=args.backend_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"--backend-ca {args.backend_ca}: {exc}") from None
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
        tls=tls,
        backend_ca=args.backend_ca,
        observe=args.observe,
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
    with stop_on_signals(balancer.stopped.set):
        sys.stdout.write(json.dumps({"event": "listening", "port": port, "pid": os.getpid()})
                         + "\n")
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
