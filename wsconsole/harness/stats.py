"""Node stats, typed from the node to the plot: snapshots in, merged cluster samples out.

The path (docs/architecture.md, "node stats to plot"), one direction, no timer before the view:

1. a node builds a `NodeSnapshot` (cumulative counters and gauges) and pushes it over the
   control channel every few hundred ms (`NodeSnapshot.message()` is the wire form);
2. the supervisor parses it back (`NodeSnapshot.from_message`) and hands it to the
   `StatsMerger`, as it does the balancer's pushes;
3. the first push at least `interval` seconds after the previous sample closes a new
   `ClusterSample`: counters become per-second rates over the node's own clock, summed over
   the cluster; the supervisor emits it as the `stats` event;
4. the CLI prints the sample; the window records `ClusterSample.points()` into its one
   `core.metrics.TimeSeries`, which the plots read on their own timer.

Pure logic, no I/O and no clock of its own (every time is passed in), like websockets'
protocol objects: the tests feed it snapshots and times.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

TOTAL = "total"
RATES = ("msgs_in_per_s", "msgs_out_per_s", "bytes_in_per_s", "bytes_out_per_s")
STALE_AFTER = 1.5  # seconds without a push before a node's figures are flagged stale


def _floats(values: Any) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise ValueError(f"stats field 'extra' is not a mapping: {values!r}")
    out = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"stats field extra[{key!r}] is not a number: {value!r}")
        out[str(key)] = float(value)
    return out


def _int(message: Mapping[str, Any], key: str) -> int:
    value = message.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"stats field {key!r} is not a number: {value!r}")
    return int(value)


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """What a node pushes to the supervisor (and answers to the "stats" command)."""

    node: str
    t: float  # the node's wall clock when it took the snapshot
    connections: int
    msgs_in: int
    msgs_out: int
    bytes_in: int = 0
    bytes_out: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # by kind, cumulative
    rate_limited: int = 0
    auth_failures: int = 0
    broker: str = "unknown"  # the node's view of the broker: up / down / ...
    draining: bool = False
    rooms: int = 0
    flavour: str = "ws"
    extra: dict[str, float] = field(default_factory=dict)  # a user's node's /metrics series

    @property
    def errors_total(self) -> int:
        """Every error of every kind so far."""
        return sum(self.errors.values())

    def message(self) -> dict[str, Any]:
        """The JSON-ready control-channel line."""
        return {"type": "stats", **dataclasses.asdict(self)}

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> NodeSnapshot:
        """Parse a pushed line; ValueError naming the field that is wrong."""
        t = message.get("t")
        if isinstance(t, bool) or not isinstance(t, int | float):
            raise ValueError(f"stats field 't' is not a time: {t!r}")
        errors = message.get("errors") or {}
        if not isinstance(errors, Mapping):
            raise ValueError(f"stats field 'errors' is not a mapping: {errors!r}")
        return cls(
            node=str(message.get("node", "")),
            t=float(t),
            connections=_int(message, "connections"),
            msgs_in=_int(message, "msgs_in"),
            msgs_out=_int(message, "msgs_out"),
            bytes_in=_int(message, "bytes_in"),
            bytes_out=_int(message, "bytes_out"),
            errors={str(kind): _int(errors, kind) for kind in errors},
            rate_limited=_int(message, "rate_limited"),
            auth_failures=_int(message, "auth_failures"),
            broker=str(message.get("broker", "unknown")),
            draining=bool(message.get("draining", False)),
            rooms=_int(message, "rooms"),
            flavour=str(message.get("flavour", "ws")),
            extra=_floats(message.get("extra") or {}),
        )


@dataclass(frozen=True, slots=True)
class ShardSnapshot:
    """One shard of a local Valkey Cluster, read by the supervisor (shardkeeper.py): its
    primary's cumulative counters, who that primary is, and the shard's state."""

    shard: str
    t: float
    commands: int
    publishes: int  # frames fanned out (SPUBLISH calls, the scripts' included)
    primary: str = ""
    state: str = "ok"


@dataclass(frozen=True, slots=True)
class ShardFigures:
    """One shard in a merged sample: its rates over the supervisor's clock, its state."""

    commands_per_s: float = 0.0
    publishes_per_s: float = 0.0
    primary: str = ""
    state: str = "ok"


@dataclass(frozen=True, slots=True)
class NodeFigures:
    """One node in a merged sample: rates over the node's clock, its latest gauges."""

    connections: int = 0
    msgs_in_per_s: float = 0.0
    msgs_out_per_s: float = 0.0
    errors_per_s: float = 0.0
    msgs_in: int = 0
    msgs_out: int = 0
    errors: int = 0
    rate_limited: int = 0
    auth_failures: int = 0
    broker: str = "down"
    draining: bool = False
    rooms: int = 0
    up: bool = False  # its process runs and has pushed at least once
    stale: bool = False  # no push for longer than the merger's `stale_after` (paused?)
    bytes_in_per_s: float = 0.0
    bytes_out_per_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Totals:
    """The cluster's sums over its nodes."""

    connections: int = 0
    msgs_in_per_s: float = 0.0
    msgs_out_per_s: float = 0.0
    errors_per_s: float = 0.0
    bytes_in_per_s: float = 0.0
    bytes_out_per_s: float = 0.0


@dataclass(frozen=True, slots=True)
class BackendFigures:
    """One backend as the balancer counts it."""

    healthy: bool
    connections: int
    total: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    msgs_up: int = 0  # WebSocket messages (or SSE events) counted on the wire (observe mode)
    msgs_down: int = 0
    address: str = ""

    @classmethod
    def from_message(cls, entry: Mapping[str, Any]) -> BackendFigures:
        """Parse one entry of the balancer's pushed `backends`."""
        return cls(
            healthy=bool(entry.get("healthy", False)),
            connections=_int(entry, "connections"),
            total=_int(entry, "total"),
            bytes_up=_int(entry, "bytes_up"),
            bytes_down=_int(entry, "bytes_down"),
            msgs_up=_int(entry, "msgs_up"),
            msgs_down=_int(entry, "msgs_down"),
            address=str(entry.get("address", "")),
        )

    def snapshot(self, node: str, t: float, extra: Mapping[str, float] | None = None
                 ) -> NodeSnapshot:
        """This backend's traffic as the node's own snapshot (a user's node reports nothing
        itself): connections, messages and bytes as the balancer saw them."""
        return NodeSnapshot(
            node=node, t=t, connections=self.connections, msgs_in=self.msgs_up,
            msgs_out=self.msgs_down, bytes_in=self.bytes_up, bytes_out=self.bytes_down,
            flavour="stack", extra=dict(extra or {}),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class BalancerFigures:
    """The balancer's latest push: affinity mode, backends, active network faults."""

    t: float = 0.0  # the balancer's wall clock when it pushed
    sticky: str | None = None
    backends: dict[str, BackendFigures] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> BalancerFigures:
        """Parse the balancer's pushed stats; ValueError for a malformed one."""
        backends = message.get("backends") or {}
        faults = message.get("faults") or []
        if not isinstance(backends, Mapping) or not isinstance(faults, list):
            raise ValueError("balancer stats: 'backends' must map ids, 'faults' be a list")
        sticky = message.get("sticky")
        t = message.get("t", 0.0)
        return cls(
            t=float(t) if isinstance(t, int | float) and not isinstance(t, bool) else 0.0,
            sticky=None if sticky is None else str(sticky),
            backends={
                str(backend_id): BackendFigures.from_message(entry)
                for backend_id, entry in backends.items()
                if isinstance(entry, Mapping)
            },
            faults=[dict(f) for f in faults if isinstance(f, Mapping)],
        )


@dataclass(frozen=True, slots=True)
class ClusterSample:
    """One merged sample of the whole cluster at wall time `t`."""

    t: float = 0.0
    nodes: dict[str, NodeFigures] = field(default_factory=dict)
    total: Totals = field(default_factory=Totals)
    balancer: BalancerFigures = field(default_factory=BalancerFigures)
    shards: dict[str, ShardFigures] = field(default_factory=dict)

    def points(self) -> Iterator[tuple[str, float]]:
        """The plotted figures as (series name, value): per node and in total (`.total`),
        `connections.*`, `msgs_in_per_s.*`, `msgs_out_per_s.*`, `bytes_in_per_s.*`,
        `bytes_out_per_s.*`; a user's node's scraped series as `metric.<name>.<node>`; and
        with a cluster broker `publishes_per_s.<shard>`."""
        for node_id, figures in self.nodes.items():
            yield f"connections.{node_id}", figures.connections
            for rate in RATES:
                yield f"{rate}.{node_id}", getattr(figures, rate)
            for name, value in figures.extra.items():
                yield f"metric.{name}.{node_id}", value
        yield f"connections.{TOTAL}", self.total.connections
        for rate in RATES:
            yield f"{rate}.{TOTAL}", getattr(self.total, rate)
        for shard, figures in self.shards.items():
            yield f"publishes_per_s.{shard}", figures.publishes_per_s

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the same names as the attributes)."""
        return dataclasses.asdict(self)


def _rate(current: int, previous: int, dt: float) -> float:
    """Per-second rate of a cumulative counter; a counter that went down means a restart."""
    delta = current - previous if current >= previous else current
    return delta / dt if dt > 0 else 0.0


@dataclass
class _NodeTrack:
    """What the merger remembers of one node between samples."""

    snapshot: NodeSnapshot | None = None
    received: float = 0.0  # monotonic time the snapshot arrived
    gone: bool = False
    sampled: NodeSnapshot | None = None  # the snapshot the previous sample's rates ended at
    # msgs in, msgs out, errors, bytes in, bytes out: per second
    rates: tuple[float, ...] = (0.0,) * 5

    def figures(self, mono: float, stale_after: float) -> NodeFigures:
        """This node's part of a sample taken at monotonic time `mono`."""
        snap = self.snapshot
        if snap is None or self.gone:
            self.sampled, self.rates = None, (0.0,) * 5
            return NodeFigures()
        stale = mono - self.received > stale_after
        before = self.sampled
        if stale:
            self.rates = (0.0,) * 5
        elif before is not None and snap.t > before.t:
            dt = snap.t - before.t
            self.rates = (
                _rate(snap.msgs_in, before.msgs_in, dt),
                _rate(snap.msgs_out, before.msgs_out, dt),
                _rate(snap.errors_total, before.errors_total, dt),
                _rate(snap.bytes_in, before.bytes_in, dt),
                _rate(snap.bytes_out, before.bytes_out, dt),
            )
        self.sampled = snap
        return NodeFigures(
            connections=snap.connections,
            msgs_in_per_s=self.rates[0],
            msgs_out_per_s=self.rates[1],
            errors_per_s=self.rates[2],
            msgs_in=snap.msgs_in,
            msgs_out=snap.msgs_out,
            errors=snap.errors_total,
            rate_limited=snap.rate_limited,
            auth_failures=snap.auth_failures,
            broker=snap.broker,
            draining=snap.draining,
            rooms=snap.rooms,
            up=True,
            stale=stale,
            bytes_in_per_s=self.rates[3],
            bytes_out_per_s=self.rates[4],
            extra=snap.extra,
        )


class StatsMerger:
    """The latest snapshots of every node and the balancer, merged into `ClusterSample`s.

    Driven by the pushes themselves: `node_pushed` and `balancer_pushed` return a new sample
    when `interval` seconds have passed since the previous one (else None), so samples come
    no more often than the interval and never wait for a timer.
    """

    def __init__(self, interval: float = 0.5, stale_after: float = STALE_AFTER) -> None:
        self.interval = interval
        self.stale_after = stale_after
        self.latest = ClusterSample()
        self._nodes: dict[str, _NodeTrack] = {}
        self._balancer = BalancerFigures()
        self._shards: dict[str, tuple[ShardSnapshot, ShardFigures]] = {}
        self._sampled_at: float | None = None  # monotonic time of the latest sample

    def node_pushed(self, snapshot: NodeSnapshot, now: float, mono: float) -> ClusterSample | None:
        """Record a node's push; the new sample if one is due."""
        self.record(snapshot, mono)
        return self._sample_if_due(now, mono)

    def record(self, snapshot: NodeSnapshot, mono: float) -> None:
        """Record a node's snapshot without sampling (the balancer's push that carried it,
        for a user's node, samples next)."""
        track = self._nodes.setdefault(snapshot.node, _NodeTrack())
        track.snapshot = snapshot
        track.received = mono
        track.gone = False

    def balancer_pushed(
        self, figures: BalancerFigures, now: float, mono: float
    ) -> ClusterSample | None:
        """Record the balancer's push ({} figures once it is gone); the new sample if due."""
        self._balancer = figures
        return self._sample_if_due(now, mono)

    def shard_pushed(
        self, snapshot: ShardSnapshot, now: float, mono: float
    ) -> ClusterSample | None:
        """Record a shard's counters (rates since its previous reading; none across a change
        of primary, whose counters are another server's); the new sample if one is due."""
        before = self._shards.get(snapshot.shard)
        figures = ShardFigures(primary=snapshot.primary, state=snapshot.state)
        if before is not None and before[0].primary == snapshot.primary:
            dt = snapshot.t - before[0].t
            if dt <= 0:
                return self._sample_if_due(now, mono)
            figures = ShardFigures(
                _rate(snapshot.commands, before[0].commands, dt),
                _rate(snapshot.publishes, before[0].publishes, dt),
                snapshot.primary, snapshot.state,
            )
        self._shards[snapshot.shard] = (snapshot, figures)
        return self._sample_if_due(now, mono)

    def node_gone(self, node_id: str) -> None:
        """The node's process ended: it counts as down, with no connections, until it is back."""
        self._nodes.setdefault(node_id, _NodeTrack()).gone = True

    def _sample_if_due(self, now: float, mono: float) -> ClusterSample | None:
        if self._sampled_at is not None and mono - self._sampled_at < self.interval:
            return None
        return self.sample(now, mono)

    def sample(self, now: float, mono: float) -> ClusterSample:
        """Merge the latest snapshots into a sample at wall time `now` (kept in `latest`)."""
        self._sampled_at = mono
        nodes = {
            node_id: track.figures(mono, self.stale_after)
            for node_id, track in self._nodes.items()
        }
        total = Totals(
            connections=sum(n.connections for n in nodes.values()),
            msgs_in_per_s=sum(n.msgs_in_per_s for n in nodes.values()),
            msgs_out_per_s=sum(n.msgs_out_per_s for n in nodes.values()),
            errors_per_s=sum(n.errors_per_s for n in nodes.values()),
            bytes_in_per_s=sum(n.bytes_in_per_s for n in nodes.values()),
            bytes_out_per_s=sum(n.bytes_out_per_s for n in nodes.values()),
        )
        shards = {name: figures for name, (_, figures) in sorted(self._shards.items())}
        self.latest = ClusterSample(now, nodes, total, self._balancer, shards)
        return self.latest
