"""A harness node's settings and the command-line options that set them.

Both node flavours (`node.py`, the WebSocket node; `sionode.py`, the Socket.IO node) take
the same options, so the supervisor starts either with one command line. The JWT secret
and the control key come from the environment (`WSCONSOLE_JWT_SECRET`,
`WSCONSOLE_CONTROL_KEY`), never the command line, so `ps` does not show them.
"""

from __future__ import annotations

import argparse
import os
import re
import ssl
from dataclasses import dataclass

from wsconsole.core.localca import ServerFiles
from wsconsole.errors import WsconsoleError
from wsconsole.harness.adapter import AdapterConfig
from wsconsole.harness.auth import SECRET_ENV
from wsconsole.harness.brokerlink import BrokerLink
from wsconsole.harness.control import CONTROL_KEY_ENV
from wsconsole.harness.tlsfiles import TlsFilesError, add_tls_arguments, tls_context, tls_files


class UsageError(WsconsoleError, ValueError):
    """A bad command-line value (exit code 2)."""


@dataclass(slots=True)
class NodeConfig:
    """Every setting of a node; `None` (or 0 on the command line) means "no limit"."""

    id: str = "n1"
    host: str = "127.0.0.1"
    port: int = 0
    redis: str = "redis://127.0.0.1:6379/0"
    control: tuple[str, int] | None = None
    control_key: str | None = None
    secret: str | None = None
    auth: bool = True
    auth_timeout: float = 5.0
    origins: tuple[str, ...] = ()
    ping_interval: float | None = 25.0
    ping_timeout: float | None = 10.0
    close_timeout: float = 3.0
    max_size: int | None = 1 << 20
    rate: float | None = 100.0
    abuse: int | None = None  # default: the burst (= rate)
    per_user: int | None = 5
    soft_limit: int | None = 10_000
    max_buffered: int | None = 1 << 20  # send buffer per connection (then lagging, 1013)
    max_delay: float | None = 0.5  # deliveries this late for 50 ms: publishes get broker_busy
    history: int = 10_000
    drain_deadline: float = 10.0
    compression: bool = False
    stats_interval: float = 0.25
    broker_check: float = 0.5
    presence_ttl: float = 15.0
    wait_replicas: int = 1  # on a cluster: replicas that must have a publish before its ack
    wait_timeout: float = 0.5  # seconds WAIT may take before the publish is refused
    tls: ServerFiles | None = None  # serve wss:// (and https:// for /metrics) with these

    def adapter_config(self) -> AdapterConfig:
        """The broker adapter's settings for this node (both flavours share them)."""
        return AdapterConfig(
            history=self.history,
            check_interval=self.broker_check,
            presence_ttl=self.presence_ttl,
            presence_refresh=max(0.05, self.presence_ttl / 3),
            wait_replicas=self.wait_replicas,
            wait_timeout=self.wait_timeout,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS server context for `tls` (None: plain ws://); TlsFilesError if unusable."""
        return tls_context(self.tls)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The node's options (shared by `python -m wsconsole.harness.node` and `wsconsole node`)."""
    d = NodeConfig()
    add = parser.add_argument
    add("--id", default=d.id, help="node id, shown on every message (default %(default)s)")
    add("--host", default=d.host, help="listen address (default %(default)s)")
    add("--port", type=int, default=d.port, help="listen port, 0 = a free one (default 0)")
    add("--redis", required=True, metavar="URL", help="the broker, e.g. redis://127.0.0.1:6379/0")
    add(
        "--control",
        metavar="HOST:PORT",
        help=f"supervisor control channel (key: ${CONTROL_KEY_ENV})",
    )
    add("--ping-interval", type=float, default=d.ping_interval, help="seconds, 0 = no pings")
    add("--ping-timeout", type=float, default=d.ping_timeout, help="seconds to wait for a pong")
    add("--max-size", type=int, default=d.max_size, help="max message bytes (larger: close 1009)")
    add("--rate", type=float, default=d.rate, help="messages/s per connection, 0 = no limit")
    add("--per-user", type=int, default=d.per_user, help="connections per user, 0 = no limit")
    add("--soft-limit", type=int, default=d.soft_limit, help="connections per node (then 1013)")
    add("--max-buffered", type=int, default=d.max_buffered,
        help="bytes queued per connection before it is lagging (1013), 0 = no limit")  # fmt: skip
    add("--max-delay", type=float, default=d.max_delay, metavar="S",
        help="refuse publishes with broker_busy while this node's deliveries run more than S "
             "seconds behind their publish (overload), 0 = never (default %(default)s)")
    add("--history", type=int, default=d.history, help="messages kept per room for recovery")
    add("--auth-timeout", type=float, default=d.auth_timeout, help="seconds for a first auth msg")
    add("--drain-deadline", type=float, default=d.drain_deadline, help="seconds a drain may take")
    add("--presence-ttl", type=float, default=d.presence_ttl, help=argparse.SUPPRESS)
    add("--broker-check", type=float, default=d.broker_check, help=argparse.SUPPRESS)
    add("--wait-replicas", type=int, default=d.wait_replicas, metavar="N",
        help="on a Redis/Valkey Cluster: acknowledge a publish once N replicas of its shard "
             "have it (WAIT), else refuse it with broker_unavailable; 0 = once its primary "
             "has it (default %(default)s)")
    add("--wait-timeout", type=float, default=d.wait_timeout, metavar="S",
        help="seconds WAIT may take (default %(default)s)")
    add(
        "--no-auth",
        action="store_true",
        help=f"accept clients without a token (else ${SECRET_ENV})",
    )
    add("--origin", action="append", default=[], metavar="ORIGIN",
        help="also allow this Origin (repeatable; '*' = any)")  # fmt: skip
    add("--compression", action="store_true", help="enable permessage-deflate (off by default)")
    add_tls_arguments(parser)
    add("--verbose", "-v", action="store_true", help="log at INFO level on stderr")
    add("--json", action="store_true", help="accepted for symmetry: stdout is always JSON lines")


def config_from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> NodeConfig:
    """Validate the parsed arguments and environment into a NodeConfig (UsageError if bad)."""
    env = dict(os.environ) if env is None else env
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", args.id):
        raise UsageError(f"--id {args.id!r}: use 1-64 letters, digits, '.', '_' or '-'")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: not a TCP port")
    try:
        BrokerLink.check_url(args.redis)
    except ValueError as exc:
        raise UsageError(f"--redis {args.redis!r}: {exc}") from None
    numeric = (
        "ping_interval", "ping_timeout", "max_size", "rate", "per_user", "soft_limit",
        "max_buffered", "max_delay", "history", "auth_timeout", "drain_deadline", "presence_ttl",
        "broker_check", "wait_replicas", "wait_timeout",
    )  # fmt: skip
    for name in numeric:
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0")
    if args.history < 1:
        raise UsageError("--history must be at least 1")
    control = None
    control_key = None
    if args.control:
        host, sep, port = args.control.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--control {args.control!r}: expected HOST:PORT")
        control = (host, int(port))
        control_key = env.get(CONTROL_KEY_ENV)
        if not control_key:
            raise UsageError(f"--control needs the key in ${CONTROL_KEY_ENV}")
    try:
        tls = tls_files(args)
        tls_context(tls)  # unreadable files are bad usage, said before the node starts
    except TlsFilesError as exc:
        raise UsageError(str(exc)) from None
    secret = env.get(SECRET_ENV)
    if not args.no_auth and not secret:
        raise UsageError(f"set ${SECRET_ENV} to the cluster's JWT secret, or pass --no-auth")
    return NodeConfig(
        id=args.id,
        host=args.host,
        port=args.port,
        redis=args.redis,
        control=control,
        control_key=control_key,
        secret=secret,
        auth=not args.no_auth,
        auth_timeout=args.auth_timeout or 5.0,
        origins=tuple(args.origin),
        ping_interval=args.ping_interval or None,
        ping_timeout=args.ping_timeout or None,
        max_size=args.max_size or None,
        rate=args.rate or None,
        per_user=args.per_user or None,
        soft_limit=args.soft_limit or None,
        max_buffered=args.max_buffered or None,
        max_delay=args.max_delay or None,
        history=args.history,
        drain_deadline=args.drain_deadline,
        compression=args.compression,
        presence_ttl=args.presence_ttl or 15.0,
        broker_check=args.broker_check or 0.5,
        wait_replicas=args.wait_replicas,
        wait_timeout=args.wait_timeout or 0.5,
        tls=tls,
    )
