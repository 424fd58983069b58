"""The harness's vocabulary: settings (`ClusterConfig`, `Limits`), defaults, states, error.

Every piece of the supervisor (cluster.py and the keepers it is made of) and every caller
(the CLI, the window, scenarios, the self-test) shares these names; they hold no state.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from typing import Any

from wsconsole.errors import WsconsoleError
from wsconsole.harness.routing import STICKY_MODES
from wsconsole.harness.stackfile import Stack

LOOPBACK = "127.0.0.1"
TLS_HOSTS = (LOOPBACK, "localhost", "::1")  # the names a --tls harness's certificate covers
BALANCER = "balancer"
FLAVOURS = ("ws", "socketio")  # node kinds: `wsconsole node` or `wsconsole sionode`
REDIS_SCHEMES = ("redis://", "rediss://", "valkey://", "valkeys://", "unix://")

# DESIGN.md defaults table: the server heartbeat, and the demo timings preset.
PING_INTERVAL = 25.0
PING_TIMEOUT = 10.0
DEMO_PING_INTERVAL = 2.0
DEMO_PING_TIMEOUT = 1.0
# The clients' side of the demo preset (the GUI, the swarm and the scenarios' [swarm] build
# their BackoffPolicy from it; the factor is every policy's 2).
DEMO_BACKOFF_INITIAL = 0.5
DEMO_BACKOFF_CAP = 5.0
DEMO_BACKOFF_JITTER = 0.5


class ClusterError(WsconsoleError, RuntimeError):
    """An operation on the cluster could not be done (unknown node, a child failed to start...)."""


class NodeState(enum.StrEnum):
    """Where a node process is, as the supervisor sees it."""

    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    DRAINING = "draining"
    KILLED = "killed"  # SIGKILLed on request
    STOPPED = "stopped"  # exited after a drain or a stop
    FAILED = "failed"  # exited without being asked to


@dataclass(frozen=True)
class Limits:
    """The node's security checklist and limits (DESIGN.md defaults); 0 = no limit."""

    max_size: int = 1 << 20
    rate: float = 100.0
    per_user: int = 5
    soft_limit: int = 10_000
    history: int = 10_000
    max_buffered: int = 1 << 20  # send buffer per connection, then `lagging` and 1013
    max_delay: float = 0.5  # deliveries this far behind: publishes get broker_busy
    auth_timeout: float = 5.0
    drain_deadline: float = 10.0
    origins: tuple[str, ...] = ()  # extra allowed origins; () = the node's default allow-list
    auth: bool = True
    compression: bool = False

    def argv(self) -> list[str]:
        """The node flags that carry these limits."""
        args = [
            "--max-size", str(self.max_size),
            "--rate", num_arg(self.rate),
            "--per-user", str(self.per_user),
            "--soft-limit", str(self.soft_limit),
            "--history", str(self.history),
            "--max-buffered", str(self.max_buffered),
            "--max-delay", num_arg(self.max_delay),
            "--auth-timeout", num_arg(self.auth_timeout),
            "--drain-deadline", num_arg(self.drain_deadline),
        ]  # fmt: skip
        for origin in self.origins:
            args += ["--origin", origin]
        if not self.auth:
            args.append("--no-auth")
        if self.compression:
            args.append("--compression")
        return args


def num_arg(value: float) -> str:
    """A number as a command-line argument: `2` for 2.0, `0.25` otherwise."""
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


@dataclass
class ClusterConfig:
    """Everything `Cluster` needs; the defaults are DESIGN.md's, `demo()` the demo preset."""

    nodes: int = 3
    port: int = 0  # the balancer's public port; 0 = any free one
    redis_url: str | None = None  # an external broker; None = start our own
    data_dir: str | None = None  # our broker's AOF; None = a temporary folder for this run
    broker_ephemeral: bool = False  # our broker in memory only: a broker restart is a reset
    broker_cluster: int = 0  # shards of our own Valkey Cluster (a primary + a replica each)
    broker_host: str = LOOPBACK  # the address our broker (or cluster) listens on
    sticky: str = "ip"
    ping_interval: float = PING_INTERVAL
    ping_timeout: float = PING_TIMEOUT
    limits: Limits = field(default_factory=Limits)
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    health_interval: float = 0.5  # the balancer's health checks
    stats_interval: float = 0.5  # at most one merged sample (a "stats" event) per interval
    ready_timeout: float = 30.0  # generous: the machines running tests are busy
    stop_timeout: float = 5.0  # beyond a node's drain deadline, before SIGKILL
    log_dir: str | None = None  # children's stderr; None = a fresh temporary directory
    flavour: str = "ws"  # "socketio": python-socketio nodes (harness/sionode.py), same controls
    tls: bool = False  # wss://: the balancer and the nodes serve certificates of the local CA
    stack: Stack | None = None  # the user's own nodes (stackfile.py) instead of ours

    @classmethod
    def demo(cls, **overrides: Any) -> ClusterConfig:
        """The demo timings preset: ping 2 s / timeout 1 s, so transitions show in seconds."""
        values = {"ping_interval": DEMO_PING_INTERVAL, "ping_timeout": DEMO_PING_TIMEOUT}
        values.update(overrides)
        return cls(**values)

    @classmethod
    def for_stack(cls, stack: Stack, **overrides: Any) -> ClusterConfig:
        """A cluster of the stack's nodes: its node count and its broker (ours, external or
        none); the balancer counts their messages on the wire."""
        values: dict[str, Any] = {"nodes": stack.node.count, "stack": stack,
                                  "redis_url": stack.broker.url}
        values.update(overrides)
        return cls(**values)

    @property
    def broker_wanted(self) -> bool:
        """False for a stack whose nodes share no broker."""
        return self.stack is None or self.stack.broker.kind != "none"

    def validate(self) -> None:
        """Raise ValueError with a plain message for a setting that cannot work."""
        if not 1 <= self.nodes <= 64:
            raise ValueError(f"nodes must be between 1 and 64, not {self.nodes}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {self.port}")
        if self.sticky not in STICKY_MODES:
            raise ValueError(
                f"sticky must be one of {', '.join(STICKY_MODES)}, not {self.sticky!r}"
            )
        if self.flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {', '.join(FLAVOURS)}, not {self.flavour!r}")
        if self.redis_url is not None and not self.redis_url.startswith(REDIS_SCHEMES):
            raise ValueError(
                f"not a Redis URL (redis://, rediss://, valkey:// or unix://): {self.redis_url!r}"
            )
        if self.redis_url is not None and (self.data_dir or self.broker_ephemeral
                                           or self.broker_cluster):
            raise ValueError(
                "a data folder, an ephemeral broker or a broker cluster apply to our own "
                "broker, not to --redis"
            )
        if not 0 <= self.broker_cluster <= 16:
            raise ValueError(f"a broker cluster has 1 to 16 shards, not {self.broker_cluster}")
        if self.broker_cluster and self.data_dir:
            raise ValueError("a broker cluster forms anew each run: it takes no data folder")
        for name in ("ping_interval", "ping_timeout", "health_interval", "stats_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        limits = self.limits
        for name in ("max_size", "rate", "per_user", "soft_limit", "max_buffered", "max_delay"):
            if getattr(limits, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = no limit)")
        if limits.history < 1:
            raise ValueError("history must be at least 1")
        for name in ("auth_timeout", "drain_deadline"):
            if getattr(limits, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not self.secret:
            raise ValueError("the cluster secret must not be empty")
