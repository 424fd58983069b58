"""What one swarm run is: `SwarmConfig`, its checks and what it derives per client.

The target (a harness URL, or the user's app with a stack's recipe), the load (clients,
rooms, rate, ramp, duration, settle), the clients' connection settings (backoff, heartbeat,
pong policy and the share that plays dead, token) and the per-client values derived from
them (name, user, room, token, 127.x.y.z source address, `ClientOptions`). `validate()`
raises SwarmConfigError with a message a user can act on; the swarm (swarm.py), its split
over workers (launchers.py, parts.py) and the scenarios build runs from it.
"""

from __future__ import annotations

import ipaddress
import math
import sys
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.client import ClientError, ClientOptions
from wsconsole.core.heartbeat import PongPolicy, pong_share
from wsconsole.errors import WsconsoleError
from wsconsole.harness.clusterconfig import (
    DEMO_BACKOFF_CAP,
    DEMO_BACKOFF_INITIAL,
    DEMO_BACKOFF_JITTER,
    DEMO_PING_INTERVAL,
    DEMO_PING_TIMEOUT,
)
from wsconsole.harness.stackfile import Stack


class SwarmConfigError(WsconsoleError, ValueError):
    """A swarm setting that cannot work (the CLI turns it into exit code 2)."""


def demo_backoff() -> BackoffPolicy:
    """The demo timings preset for clients (DESIGN.md): 0.5 s doubling, cap 5 s, jitter 0.5 s."""
    return BackoffPolicy(initial=DEMO_BACKOFF_INITIAL, cap=DEMO_BACKOFF_CAP,
                         jitter=DEMO_BACKOFF_JITTER)


@dataclass
class SwarmConfig:
    """What to simulate; every time is in seconds, None meaning "no limit" where allowed."""

    url: str
    clients: int = 10
    rooms: int = 1
    rate: float = 10.0  # publishes per second, all clients together
    duration: float | None = 10.0  # the load phase; None = until stop()
    ramp: float = 0.0
    settle: float = 5.0
    token_user: str = "swarm"  # users PREFIX-0001, PREFIX-0002, ...
    token: str | None = None  # one token for every client
    secret: str | None = None  # a JWT secret: a token per user, issued here
    token_factory: Callable[[str], str] | None = None  # user -> token (e.g. Cluster.token)
    room_prefix: str = "swarm"
    payload: int = 0  # padding bytes added to each message
    distinct_addresses: bool = True  # own 127.x.y.z per client (Linux loopback only)
    backoff: BackoffPolicy = field(default_factory=demo_backoff)
    ping_interval: float | None = DEMO_PING_INTERVAL
    ping_timeout: float = DEMO_PING_TIMEOUT
    connect_timeout: float = 10.0
    queue_limit: int | None = 10_000
    stats_interval: float = 1.0
    # Hold the load until every client has joined its room (at most this many seconds), so
    # every publish is owed to every subscriber; the duration then counts from that moment.
    wait_joined: float | None = None
    pongs_share: float = 0.0  # this share of the clients answers the server's pings per `pongs`
    pongs: PongPolicy = field(default_factory=lambda: PongPolicy("off"))
    fleet_interval: float = 0.25  # seconds between two fleet batches (with on_fleet)
    stack: Stack | None = None  # the user's app: its client recipe instead of our protocol
    join_grace: float = 0.5  # a join on an app that does not confirm it counts after this

    def validate(self) -> None:
        """Raise SwarmConfigError naming the first setting that cannot work."""
        if self.stack is not None:
            self._validate_app()
        if not isinstance(self.clients, int) or self.clients < 1:
            raise SwarmConfigError(f"clients must be at least 1, not {self.clients}")
        if not isinstance(self.rooms, int) or not 1 <= self.rooms <= self.clients:
            raise SwarmConfigError(f"rooms must be between 1 and clients ({self.clients})")
        if not math.isfinite(self.rate) or self.rate < 0:
            raise SwarmConfigError(f"rate must be a number >= 0, not {self.rate}")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise SwarmConfigError(f"duration must be > 0, not {self.duration}")
        for name in ("ramp", "settle"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise SwarmConfigError(f"{name} must be >= 0, not {value}")
        if self.stats_interval <= 0:
            raise SwarmConfigError("stats interval must be > 0")
        if self.wait_joined is not None and self.wait_joined < 0:
            raise SwarmConfigError("wait_joined must be >= 0 seconds")
        if not self.token_user or len(self.token_user) > 100:
            raise SwarmConfigError("token user prefix must be 1 to 100 characters")
        if self.payload < 0:
            raise SwarmConfigError("payload must be >= 0 bytes")
        if not (math.isfinite(self.pongs_share) and 0 <= self.pongs_share <= 1):
            raise SwarmConfigError(f"the share of clients with shaped pongs must be 0 to 1, "
                                   f"not {self.pongs_share}")
        if not self.fleet_interval > 0:
            raise SwarmConfigError("fleet interval must be > 0")
        if self.stack is not None:
            return
        # ClientOptions checks the URL, the heartbeat and the queue limit the same way as
        # `wsconsole connect` does.
        try:
            self.client_options(0)
        except ClientError as exc:
            raise SwarmConfigError(str(exc)) from None

    def _validate_app(self) -> None:
        stack = self.stack
        assert stack is not None
        if stack.client is None:
            raise SwarmConfigError(f"the stack {stack.name!r} has no [client] recipe: add "
                                   "[client.publish] and [client.receive] (docs/stacks.md)")
        schemes = ("http://", "https://", "ws://", "wss://") \
            if stack.protocol.kind == "socketio" else ("ws://", "wss://")
        if not self.url.startswith(schemes):
            raise SwarmConfigError(f"a {stack.protocol.kind} stack's URL starts with "
                                   f"{' or '.join(schemes)}, not {self.url!r}")
        if self.payload:
            raise SwarmConfigError("payload padding is for the harness protocol; a stack's "
                                   "publish template says what is sent")
        if self.join_grace < 0:
            raise SwarmConfigError("join grace must be >= 0 seconds")

    def client_name(self, index: int) -> str:
        """The name of client `index` (0-based): c0001 ...; its publish ids are NAME-N."""
        return f"c{index + 1:04d}"

    def user(self, index: int) -> str:
        """The user name of client `index` (0-based): PREFIX-0001 ..."""
        return f"{self.token_user}-{index + 1:04d}"

    def room(self, index: int) -> str:
        """The room client `index` joins and publishes to."""
        return f"{self.room_prefix}-{index % self.rooms}"

    def _token_for(self, index: int) -> Any:
        user = self.user(index)
        if self.token_factory is not None:
            factory = self.token_factory
            return lambda: factory(user)
        if self.secret is not None:
            from wsconsole.harness.auth import issue_token

            secret = self.secret
            return lambda: issue_token(secret, user)
        return self.token

    def local_addr(self, index: int) -> tuple[str, int] | None:
        """A distinct loopback source address for client `index`, where the OS allows it."""
        if not self.distinct_addresses or not sys.platform.startswith("linux"):
            return None
        host = urllib.parse.urlsplit(self.url).hostname or ""
        try:
            if not ipaddress.ip_address(host).is_loopback or ":" in host:
                return None
        except ValueError:
            if host != "localhost":
                return None
        return (f"127.{100 + index // 62_500}.{index // 250 % 250 + 1}.{index % 250 + 2}", 0)

    def client_options(self, index: int) -> ClientOptions:
        """The options of simulated client `index` (harness mode, its room, its token)."""
        return ClientOptions(
            url=self.url,
            token=self._token_for(index),
            token_mode="query",
            harness=True,
            rooms=[self.room(index)],
            backoff=self.backoff.copy(),
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            close_timeout=1.0,
            connect_timeout=self.connect_timeout,
            queue_limit=self.queue_limit,
            local_addr=self.local_addr(index),
            compression=False,
            pongs=self.pongs_for(index),
        )

    def pongs_for(self, index: int) -> PongPolicy:
        """The pong policy of client `index`: `pongs` for the chosen share, else auto."""
        return self.pongs if pong_share(index, self.pongs_share) else PongPolicy()
