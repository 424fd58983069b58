"""Who was connected when, and how long each reconnect took: the part of a swarm's accounting
that is the same whatever the clients speak (the harness protocol or a user's app).

Plain object fed transitions and times, no I/O. A client that leaves OPEN starts a reconnect
clock (unless the swarm is stopping); its next OPEN stops it. Each open can name the node
that serves it (the balancer's `X-Wsconsole-Node` header), so a figure measured at a moment
can be put down to the node the client was on then (`node_at`).
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

from wsconsole.core.metrics import percentile

OPEN = "OPEN"


def ms(value: float | None) -> float | None:
    """Seconds as milliseconds rounded to the microsecond (None stays None)."""
    return None if value is None else round(value * 1000.0, 3)


@dataclass(slots=True)
class ClientBook:
    """Connection bookkeeping of one simulated client."""

    state: str = "CLOSED"
    ever_open: bool = False
    down_since: float | None = None
    first_open_at: float | None = None
    opens: int = 0
    reconnects: int = 0
    # (open time, node) for each open whose node is known, in time order
    nodes: list[tuple[float, str]] = field(default_factory=list)


class ConnectionBook:
    """Every client's state, reconnect times and the nodes that served it."""

    def __init__(self, started_at: float = 0.0) -> None:
        self.started_at = started_at
        self.clients: dict[str, ClientBook] = {}
        self.stopping = False
        self._stopping_clients: set[str] = set()
        self.reconnects = 0
        self._reconnect_times = array("d")
        self._reconnect_moments = array("d")

    def client_added(self, name: str) -> None:
        """Register a simulated client (before it connects)."""
        self.clients.setdefault(name, ClientBook())

    def transition(self, name: str, state: str, at: float) -> None:
        """A client's connection changed state; leaving OPEN starts a reconnect clock."""
        client = self.clients.setdefault(name, ClientBook())
        previous = client.state
        client.state = state
        if state == OPEN:
            client.opens += 1
            if not client.ever_open:
                client.ever_open = True
                client.first_open_at = at
            elif client.down_since is not None:
                self.reconnects += 1
                client.reconnects += 1
                self._reconnect_times.append(at - client.down_since)
                self._reconnect_moments.append(at - self.started_at)
            client.down_since = None
        elif previous == OPEN and not (self.stopping or name in self._stopping_clients):
            client.down_since = at

    def served_by(self, name: str, node: str, at: float) -> None:
        """The client's current connection (opened at `at`) is served by `node`."""
        self.clients.setdefault(name, ClientBook()).nodes.append((at, node))

    def node_at(self, name: str, at: float) -> str | None:
        """The node that served `name` at time `at` (its last one before, while it was
        reconnecting), None before its first known node."""
        nodes = self.clients[name].nodes if name in self.clients else []
        index = bisect.bisect_right(nodes, (at, "\uffff")) - 1
        return nodes[index][1] if index >= 0 else None

    def begin_stop(self, names: Iterable[str] | None = None) -> None:
        """From now on, connections closing are the swarm stopping, not failures (only those
        of the clients `names`, when given: one worker's part of a swarm stops)."""
        if names is None:
            self.stopping = True
        else:
            self._stopping_clients.update(names)

    @property
    def connected(self) -> int:
        """Clients currently OPEN."""
        return sum(1 for c in self.clients.values() if c.state == OPEN)

    def down_clients(self) -> list[str]:
        """Clients that were connected once and are not connected now."""
        return [n for n, c in self.clients.items() if c.down_since is not None]

    def reconnect_times(self) -> list[float]:
        """Every measured time-to-reconnect, seconds, in the order they happened."""
        return list(self._reconnect_times)

    def reconnect_moments(self) -> list[float]:
        """When each reconnect completed, seconds since the swarm started."""
        return list(self._reconnect_moments)

    def summary(self) -> dict[str, object]:
        """Connection figures of a swarm summary: who got in, who is down, reconnects."""
        never = [n for n, c in self.clients.items() if not c.ever_open]
        connect_times = [c.first_open_at - self.started_at
                         for c in self.clients.values() if c.first_open_at is not None]
        times = self._reconnect_times
        p10, p90 = percentile(times, 10), percentile(times, 90)
        return {
            "clients": len(self.clients),
            "connected": self.connected,
            "never_connected": len(never),
            "disconnected_at_end": len(self.down_clients()),
            "reconnects": self.reconnects,
            "reconnect_p50_ms": ms(percentile(times, 50)),
            "reconnect_p90_ms": ms(p90),
            "reconnect_p99_ms": ms(percentile(times, 99)),
            "reconnect_max_ms": ms(max(times) if times else None),
            "reconnect_spread_ms": ms(None if p10 is None or p90 is None else p90 - p10),
            "connect_max_ms": ms(max(connect_times) if connect_times else None),
        }
