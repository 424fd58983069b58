"""Delivery accounting on the user's own app: no sequence numbers, no acks, only what was sent
and what arrived. A plain object fed events and times (seconds since the swarm started),
no I/O, like accounting.py for the harness protocol.

Every publish carries a unique id (the stack's `{id}`); a delivery is recognised by that id
(and read for its timestamp) wherever the stack's recipe says it is. From that:

- sent: publishes written to an open connection (a client that is not connected does not
  publish: nothing is queued behind the app's back);
- owed: a message sent to a room after a subscriber first joined it (once the app confirmed
  the join, or `join_grace` after it was sent when the app confirms nothing) is owed to that
  subscriber, whatever happened to its connection afterwards; its own messages too, unless
  the app does not echo them (`receive_own = false`);
- lost: owed and never received; of those, `missed` when other subscribers did get the
  message (lost on its way out to this one: what a recovery mechanism is for), else the
  message reached nobody (`undelivered`: lost on its way in, e.g. sent into a dying node);
- duplicated: an id received twice by one subscriber; out of order: a publisher's counter
  going backwards at one subscriber;
- latency: receive time minus the send time (the message's own timestamp when the recipe
  names one, else ours).

Each figure is given in total, per client, per node (for a send: the node the publisher was
on; for a loss: the node the subscriber was on, or had last been on, when the message was
sent; for a latency: the node that delivered it) and per fault window (each fault a
scenario's step makes opens a window at the moment it happens, `begin_window`; a message
belongs to the window it was sent in), with losses per second of sending for plots.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from wsconsole.core.metrics import LatencyHistogram
from wsconsole.swarm.connbook import ConnectionBook, ms

UNKNOWN_NODE = "?"


@dataclass(slots=True)
class _Message:
    """One publish: who sent it where, when (seconds since start), in which window, into
    which node (the publisher's then)."""

    publisher: str
    room: str
    counter: int
    sent: float
    window: int
    node: str


@dataclass(slots=True)
class _Subscription:
    """One client in one room: when its duty started and what it got."""

    joined: float
    got: set[str] = field(default_factory=set)
    last: dict[str, int] = field(default_factory=dict)  # publisher -> highest counter seen


@dataclass
class Tally:
    """Counts of one slice of the run (the total, a client, a node or a window)."""

    sent: int = 0
    owed: int = 0
    delivered: int = 0
    lost: int = 0
    missed: int = 0  # of `lost`: messages other subscribers did get (lost on the way out)
    duplicated: int = 0
    out_of_order: int = 0
    latencies: LatencyHistogram = field(default_factory=LatencyHistogram)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counts with latency percentiles in milliseconds."""
        lat = self.latencies
        return {
            "sent": self.sent, "owed": self.owed, "delivered": self.delivered,
            "lost": self.lost, "missed": self.missed, "duplicated": self.duplicated,
            "out_of_order": self.out_of_order,
            "p50_latency_ms": ms(lat.percentile(50)), "p95_latency_ms": ms(lat.percentile(95)),
            "p99_latency_ms": ms(lat.percentile(99)),
            "max_latency_ms": ms(lat.max if lat.count else None),
        }  # fmt: skip


class AppAccounting:
    """Counts and cross-checks everything a swarm sent to the user's app and got back."""

    def __init__(self, started_at: float = 0.0, join_grace: float = 0.5,
                 receive_own: bool = True) -> None:
        self.started_at = started_at  # monotonic time of the start (times below are relative)
        self.join_grace = join_grace
        # fault windows: (start, label) in time order; the first: before any fault
        self.windows: list[tuple[float, str]] = [(0.0, "before faults")]
        self.receive_own = receive_own
        self.book = ConnectionBook(started_at)
        self.messages: dict[str, _Message] = {}
        self.subs: dict[tuple[str, str], _Subscription] = {}
        self.received_total = 0
        self.foreign = 0  # deliveries whose id this swarm never sent
        self.unsent = 0  # publishes skipped: the client was not connected
        self.recovered_sessions = 0  # Socket.IO connection state recovery that worked
        self.errors: Counter[str] = Counter()
        self.total = Tally()
        self.per_client: dict[str, Tally] = defaultdict(Tally)
        self.per_node: dict[str, Tally] = defaultdict(Tally)
        self.per_window: list[Tally] = [Tally() for _ in self.windows]
        self._interval = LatencyHistogram()
        self._last: dict[str, int] = {}

    # ---- feeding (times are monotonic, like the swarm's clock) ---------------------------

    def _at(self, at: float) -> float:
        return at - self.started_at

    def _window(self, t: float) -> int:
        return max(0, bisect.bisect_right([w[0] for w in self.windows], t) - 1)

    def begin_window(self, label: str, at: float) -> None:
        """A fault happens now (a scenario step): messages sent from `at` on belong to a new
        window named `label` (windows only follow each other: an earlier `at` than the last
        window's start counts from that start)."""
        self.windows.append((max(self._at(at), self.windows[-1][0]), label))
        self.per_window.append(Tally())
    def client_added(self, name: str) -> None:
        """Register a simulated client (before it connects)."""
        self.book.client_added(name)

    def transition(self, name: str, state: str, at: float) -> None:
        """A client's connection changed state (see connbook.py)."""
        self.book.transition(name, state, at)

    def served_by(self, name: str, node: str, at: float) -> None:
        """The client's new connection is served by `node`."""
        self.book.served_by(name, node, self._at(at))

    def joined(self, name: str, room: str, at: float, confirmed: bool = False) -> None:
        """The client joined (the first join fixes when its duty starts: at once when the app
        confirmed it, else `join_grace` after it was sent)."""
        grace = 0.0 if confirmed else self.join_grace
        self.subs.setdefault((name, room), _Subscription(self._at(at) + grace))

    def published(self, name: str, room: str, ident: str, counter: int, at: float) -> None:
        """A publish with this id was written to the client's open connection."""
        t = self._at(at)
        window = self._window(t)
        node = self.book.node_at(name, t) or UNKNOWN_NODE
        self.messages[ident] = _Message(name, room, counter, t, window, node)
        for tally in (self.total, self.per_client[name], self.per_window[window],
                      self.per_node[node]):
            tally.sent += 1

    def unpublished(self, ident: str) -> None:
        """The publish with this id could not be written after all: forget it."""
        message = self.messages.pop(ident, None)
        if message is not None:
            for tally in (self.total, self.per_client[message.publisher],
                          self.per_window[message.window], self.per_node[message.node]):
                tally.sent -= 1

    def skipped(self) -> None:
        """A publish was due while its client was not connected: not sent, not owed."""
        self.unsent += 1

    def delivered(self, name: str, room: str | None, ident: str, latency: float | None,
                  node: str | None) -> None:
        """A message with id `ident` reached client `name` (`room`: where it was joined;
        None: wherever the message was published)."""
        self.received_total += 1
        message = self.messages.get(ident)
        if message is None:
            self.foreign += 1
            return
        key = (name, room or message.room)
        sub = self.subs.get(key)
        if sub is None:  # a room it never joined: nothing there is owed to it
            sub = self.subs[key] = _Subscription(joined=math.inf)
        window = self.per_window[message.window]
        slices = (self.total, self.per_client[name], window)
        if ident in sub.got:
            for tally in slices:
                tally.duplicated += 1
            return
        sub.got.add(ident)
        if message.counter < sub.last.get(message.publisher, 0):
            for tally in slices:
                tally.out_of_order += 1
        else:
            sub.last[message.publisher] = message.counter
        if latency is not None and latency >= 0:
            by_node = self.per_node[node or UNKNOWN_NODE]
            for tally in (*slices, by_node):
                tally.latencies.record(latency)
            self._interval.record(latency)

    def recovered(self) -> None:
        """A reconnect resumed the client's session (the server said so)."""
        self.recovered_sessions += 1

    def error(self, kind: str) -> None:
        """Count one error of `kind`."""
        self.errors[kind] += 1

    def begin_stop(self) -> None:
        """From now on, connections closing are the swarm stopping, not failures."""
        self.book.begin_stop()

    # ---- judging ---------------------------------------------------------------------------

    def _owed(self) -> Iterator[tuple[str, _Message, str, _Subscription]]:
        """(id, message, subscriber, its subscription) for every delivery owed so far."""
        by_room: dict[str, list[tuple[str, _Subscription]]] = defaultdict(list)
        for (name, room), sub in self.subs.items():
            by_room[room].append((name, sub))
        for ident, message in self.messages.items():
            for name, sub in by_room.get(message.room, ()):
                if message.sent < sub.joined:
                    continue
                if name == message.publisher and not self.receive_own:
                    continue
                yield ident, message, name, sub

    def judge(self) -> dict[str, Any]:
        """Owed, delivered, lost and missed in every slice; losses per second of sending."""
        for tally in (self.total, *self.per_client.values(), *self.per_node.values(),
                      *self.per_window):
            tally.owed = tally.delivered = tally.lost = tally.missed = 0
        lost_by_second: Counter[int] = Counter()
        reached: set[str] = set().union(*(sub.got for sub in self.subs.values()))
        owed_ids: set[str] = set()
        for ident, message, name, sub in self._owed():
            owed_ids.add(ident)
            node = self.book.node_at(name, message.sent) or UNKNOWN_NODE
            got = ident in sub.got
            for tally in (self.total, self.per_client[name], self.per_node[node],
                          self.per_window[message.window]):
                tally.owed += 1
                if got:
                    tally.delivered += 1
                else:
                    tally.lost += 1
                    tally.missed += ident in reached
            if not got:
                lost_by_second[int(message.sent)] += 1
        return {"undelivered": len(owed_ids - reached),
                "lost_by_second": dict(sorted(lost_by_second.items()))}

    # ---- reading ---------------------------------------------------------------------------

    @property
    def clients(self) -> dict[str, Any]:
        """Every simulated client's connection bookkeeping, by name."""
        return self.book.clients

    @property
    def connected(self) -> int:
        """Clients currently OPEN."""
        return self.book.connected

    def lost(self) -> int:
        """Owed deliveries not received (so far)."""
        self.judge()
        return self.total.lost

    def settled(self) -> bool:
        """Every owed delivery received."""
        return self.lost() == 0

    def reconnect_times(self) -> list[float]:
        """Every measured time-to-reconnect, seconds."""
        return self.book.reconnect_times()

    def snapshot(self, now: float) -> dict[str, Any]:
        """Live figures: totals so far, deltas since the last snapshot, interval latency."""
        totals = {
            "clients": len(self.book.clients),
            "connected": self.book.connected,
            "sent": self.total.sent,
            "delivered": self.received_total - self.foreign - self.total.duplicated,
            "duplicated": self.total.duplicated,
            "out_of_order": self.total.out_of_order,
            "reconnects": self.book.reconnects,
            "errors": dict(self.errors),
        }
        deltas = {f"{key}_delta": int(totals[key]) - self._last.get(key, 0)
                  for key in ("sent", "delivered", "reconnects")}
        for key in ("sent", "delivered", "reconnects"):
            self._last[key] = int(totals[key])
        interval = {f"p{p}_latency_ms": ms(self._interval.percentile(p)) for p in (50, 95, 99)}
        self._interval.reset()
        return {"t": round(self._at(now), 3), **totals, **deltas, **interval}

    def summary(self, now: float) -> dict[str, Any]:
        """Final figures: totals (the names scenario assertions use), then per client, per
        node and per fault window, and the losses per second of sending."""
        judged = self.judge()
        total = self.total.as_dict()
        book = self.book.summary()
        return {
            "t": round(self._at(now), 3),
            **book,
            "subscriptions": len(self.subs),
            "sent": total["sent"],
            "unsent": self.unsent,
            "expected": total["owed"],
            "delivered": total["delivered"],
            "lost": total["lost"],
            "missed": total["missed"],
            "undelivered": judged["undelivered"],
            "duplicated": total["duplicated"],
            "out_of_order": total["out_of_order"],
            "foreign": self.foreign,
            "recovered_sessions": self.recovered_sessions,
            **{k: v for k, v in total.items() if k.endswith("_latency_ms")},
            "errors": dict(self.errors),
            "errors_total": sum(self.errors.values()),
            "per_client": {name: {**tally.as_dict(),
                                  "reconnects": self.book.clients[name].reconnects}
                           for name, tally in sorted(self.per_client.items())
                           if name in self.book.clients},
            "per_node": {node: tally.as_dict() for node, tally in sorted(self.per_node.items())},
            "per_window": [{"from_s": round(start, 3), "label": label,
                            **self.per_window[i].as_dict()}
                           for i, (start, label) in enumerate(self.windows)],
            "lost_by_second": judged["lost_by_second"],
        }
