"""What the application model needs of the things it drives, as `typing.Protocol`s (no Qt).

The console holds clients of three kinds (WebSocket, Socket.IO, SSE), a harness supervisor
and a swarm. It talks to each through the small surface below instead of `Any` or the
concrete classes, so the model type-checks without importing python-socketio, httpx or the
harness, and a test (or another supervisor) can stand in with any object of that shape.
The concrete classes satisfy these structurally: `core.driver.ConnectionDriver` and its
subclasses are `SessionClient`s, `core.client.ReconnectingClient` is a `HarnessClient`,
`harness.cluster.Cluster` is a `ClusterPort`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from wsconsole.core.driver import ClientStats
from wsconsole.core.lifecycle import Lifecycle, State

if TYPE_CHECKING:
    from wsconsole.harness.nodelog import LogLine
    from wsconsole.harness.stats import ClusterSample


class ClientOptionsView(Protocol):
    """The one option the views ask of any client's options: does it speak the harness
    protocol (rooms, publish, rpc)? Only the WebSocket client can."""

    @property
    def harness(self) -> bool:
        """True when the client speaks the harness wire protocol."""
        ...


class SessionClient(Protocol):
    """A client of any kind (WebSocket, Socket.IO, SSE) as a session runs and shows it."""

    @property
    def name(self) -> str:
        """Name."""
        ...

    @property
    def lifecycle(self) -> Lifecycle:
        """Lifecycle."""
        ...

    @property
    def stats(self) -> ClientStats:
        """Stats."""
        ...

    @property
    def latency(self) -> float | None:
        """Last heartbeat round trip, seconds."""
        ...

    @property
    def next_attempt(self) -> tuple[float, float] | None:
        """(monotonic due, delay) while reconnecting."""
        ...

    @property
    def final_error(self) -> str | None:
        """Final error."""
        ...


    @property
    def state(self) -> State:
        """The current connection state."""
        ...

    @property
    def options(self) -> ClientOptionsView:
        """The options it was built with (validated)."""
        ...

    async def start(self) -> None:
        """Begin connecting (returns at once; the driver runs in its own task)."""
        ...

    async def stop(self, code: int = 1000, reason: str = "") -> None:
        """Close with `code` and end the driver."""
        ...

    async def send(self, data: str | bytes) -> None:
        """Send a message now, or queue it while offline (an SSE stream refuses)."""
        ...


class HarnessClient(SessionClient, Protocol):
    """The WebSocket client in harness mode: rooms, publish and rpc as well."""

    async def join(self, room: str) -> None:
        """Join a room (and re-join it after every reconnect)."""
        ...

    async def leave(self, room: str) -> None:
        """Leave a room."""
        ...

    async def publish(self, room: str, data: Any) -> str:
        """Publish to a room; returns the message id the ack will carry."""
        ...

    async def rpc(self, method: str, params: Any = None) -> Any:
        """Call a server method and return its result."""
        ...


class NodeView(Protocol):
    """One harness node as the views list it."""

    @property
    def id(self) -> str:
        """Id."""
        ...

    @property
    def port(self) -> int | None:
        """Port."""
        ...

    @property
    def pid(self) -> int | None:
        """Pid."""
        ...


    @property
    def state(self) -> Any:
        """Its state (an enum whose value is "running", "killed", ...)."""
        ...

    @property
    def command(self) -> str | None:
        """A stack node's command line (None: one of the harness's own nodes)."""
        ...


class BrokerView(Protocol):
    """The harness broker as the Cluster panel shows it."""

    @property
    def url(self) -> str | None:
        """Url."""
        ...

    @property
    def pid(self) -> int | None:
        """Pid."""
        ...

    @property
    def state(self) -> str:
        """State."""
        ...

    @property
    def external(self) -> bool:
        """External."""
        ...



class BalancerView(Protocol):
    """The harness balancer as the Cluster panel shows it."""

    @property
    def port(self) -> int | None:
        """Port."""
        ...

    @property
    def pid(self) -> int | None:
        """Pid."""
        ...

    @property
    def state(self) -> str:
        """State."""
        ...

    @property
    def sticky(self) -> str:
        """Sticky."""
        ...



class ClusterConfigView(Protocol):
    """The cluster settings the console copies into its own client (demo heartbeats)."""

    @property
    def ping_interval(self) -> float:
        """Ping interval."""
        ...

    @property
    def ping_timeout(self) -> float:
        """Ping timeout."""
        ...

    @property
    def tls(self) -> bool:
        """Whether it serves wss://."""
        ...



class ClusterPort(Protocol):
    """The harness supervisor as the console, the injector and the panels drive it."""

    @property
    def nodes(self) -> Mapping[str, NodeView]:
        """Nodes."""
        ...

    @property
    def broker(self) -> BrokerView:
        """Broker."""
        ...

    @property
    def balancer(self) -> BalancerView:
        """Balancer."""
        ...

    @property
    def shards(self) -> list[dict[str, Any]]:
        """A cluster broker's shards (name, state, primary, replicas, slots, pids); [] for a
        single server."""
        ...

    async def shard(self, action: str, target: str, slot: int | None = None) -> None:
        """An operation on a cluster broker's server or shard."""
        ...


    @property
    def config(self) -> ClusterConfigView:
        """The settings it was started with."""
        ...

    @property
    def url(self) -> str:
        """The one address clients use (the balancer)."""
        ...

    @property
    def ca_file(self) -> Path | None:
        """With TLS, the local CA's certificate (the one a browser must trust)."""
        ...

    @property
    def app_url(self) -> str:
        """Where a client of the nodes connects through the balancer (a stack's path)."""
        ...

    def node_log(self, node_id: str, count: int | None = None) -> list[LogLine]:
        """The last lines a node printed, time-stamped."""
        ...

    @property
    def secret(self) -> str:
        """The JWT secret the nodes verify tokens with (handed to the swarm child)."""
        ...

    @property
    def latest(self) -> ClusterSample:
        """The latest merged stats sample (harness/stats.py)."""
        ...

    def pids(self) -> list[int]:
        """Every live child PID it started."""
        ...

    def token(self, user: str, rooms: tuple[str, ...] | list[str] = ("*",),
              ttl: float = 3600.0) -> str:
        """A token the nodes accept for `user` in `rooms`."""
        ...

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Receive every supervisor event; returns the unsubscribe function."""
        ...

    async def start(self) -> None:
        """Start the broker, the nodes and the balancer."""
        ...

    async def stop(self) -> None:
        """Stop every child."""
        ...

    async def kill(self, node_id: str) -> None:
        """SIGKILL a node."""
        ...

    async def pause(self, node_id: str) -> None:
        """SIGSTOP a node."""
        ...

    async def resume(self, node_id: str) -> None:
        """SIGCONT a node."""
        ...

    async def drain(self, node_id: str, wait: bool = True) -> None:
        """Stop a node gracefully (close 1001)."""
        ...

    async def restart(self, node_id: str) -> None:
        """Start a stopped node again."""
        ...

    async def add(self) -> str:
        """Start one more node; returns its id."""
        ...

    async def broker_kill(self) -> None:
        """SIGKILL the broker."""
        ...

    async def broker_restart(self) -> None:
        """Start the broker again."""
        ...

    async def connections(self, node_id: str) -> list[dict[str, Any]]:
        """A node's open connections (conn id, user, rooms)."""
        ...

    async def inject(self, node_id: str, case_id: str, target: str = "*",
                     **options: Any) -> dict[str, Any]:
        """Have a node write a catalogue case raw to its connections."""
        ...

    async def net_fault(self, target: str, kind: str, **params: Any) -> dict[str, Any]:
        """Apply a balancer network fault to a node or "all"."""
        ...

    async def net_clear(self, target: str, kind: str | None = None) -> dict[str, Any]:
        """Remove network faults from a node or "all"."""
        ...

    async def set_sticky(self, mode: str) -> None:
        """Switch the balancer's affinity mode."""
        ...


class ChildOwner(Protocol):
    """Something that starts child processes the console must stop with itself
    (a scenario run): its PIDs and a way to stop them."""

    def pids(self) -> set[int]:
        """Every child PID it started and that may still run."""
        ...

    async def stop(self) -> None:
        """Stop its children."""
        ...
