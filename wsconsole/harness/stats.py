"""Merging the children's stats snapshots into one cluster view and bounded time series.

Pure logic, no I/O (like websockets' protocol objects): the supervisor feeds it the snapshots
its nodes and balancer push over the control channel, then calls `sample(now)` on a timer;
each sample turns cumulative counters into per-second rates, sums them over the cluster and
appends one point to every series. The GUI plots the series, the CLI prints the samples.

Series names (`StatsMerger.series(metric, key)`):
- "connections", "msgs_in_per_s", "msgs_out_per_s", "errors_per_s": key = a node id or "total";
- "balancer_connections": key = a backend id.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsconsole.core.metrics import RingSeries

NODE_METRICS = ("connections", "msgs_in_per_s", "msgs_out_per_s", "errors_per_s")
TOTAL = "total"


@dataclass
class _NodeTrack:
    """What the merger remembers about one node between samples."""

    snapshot: dict[str, Any] | None = None
    received: float = 0.0  # monotonic time the snapshot arrived
    gone: bool = False
    # cumulative counters and the node's own clock at the previous sample
    prev_t: float | None = None
    prev_in: int = 0
    prev_out: int = 0
    prev_errors: int = 0


def _errors_total(snapshot: dict[str, Any]) -> int:
    errors = snapshot.get("errors") or {}
    if isinstance(errors, dict):
        return int(sum(v for v in errors.values() if isinstance(v, int | float)))
    return int(errors) if isinstance(errors, int | float) else 0


def _rate(current: int, previous: int, dt: float) -> float:
    """Per-second rate of a cumulative counter; a counter that went down means a restart."""
    delta = current - previous if current >= previous else current
    return delta / dt if dt > 0 else 0.0


class StatsMerger:
    """Latest snapshots of every node and the balancer, merged into samples and series."""

    def __init__(self, capacity: int = 7200, stale_after: float = 1.5) -> None:
        self.capacity = capacity
        self.stale_after = stale_after
        self._nodes: dict[str, _NodeTrack] = {}
        self._balancer: dict[str, Any] | None = None
        self._series: dict[tuple[str, str], RingSeries] = {}
        self.latest: dict[str, Any] = {}

    def node_snapshot(
        self, node_id: str, snapshot: dict[str, Any], now: float | None = None
    ) -> None:
        """Record a node's pushed stats (cumulative counters plus gauges)."""
        track = self._nodes.setdefault(node_id, _NodeTrack())
        track.snapshot = snapshot
        track.received = time.monotonic() if now is None else now
        track.gone = False

    def node_gone(self, node_id: str) -> None:
        """The node's process ended: its connections count as 0 until it comes back."""
        track = self._nodes.setdefault(node_id, _NodeTrack())
        track.gone = True

    def balancer_snapshot(self, snapshot: dict[str, Any]) -> None:
        """Record the balancer's pushed stats."""
        self._balancer = snapshot

    def _node_sample(self, track: _NodeTrack, mono: float) -> dict[str, Any]:
        snap = track.snapshot
        if snap is None or track.gone:
            track.prev_t = None
            return {
                "connections": 0,
                "msgs_in_per_s": 0.0,
                "msgs_out_per_s": 0.0,
                "errors_per_s": 0.0,
                "up": False,
                "stale": False,
            }
        t = float(snap.get("t", 0.0))
        msgs_in = int(snap.get("msgs_in", 0))
        msgs_out = int(snap.get("msgs_out", 0))
        errors = _errors_total(snap)
        rates = (0.0, 0.0, 0.0)
        if track.prev_t is not None and t > track.prev_t:
            dt = t - track.prev_t
            rates = (
                _rate(msgs_in, track.prev_in, dt),
                _rate(msgs_out, track.prev_out, dt),
                _rate(errors, track.prev_errors, dt),
            )
        track.prev_t, track.prev_in, track.prev_out, track.prev_errors = (
            t,
            msgs_in,
            msgs_out,
            errors,
        )
        return {
            "connections": int(snap.get("connections", 0)),
            "msgs_in_per_s": rates[0],
            "msgs_out_per_s": rates[1],
            "errors_per_s": rates[2],
            "msgs_in": msgs_in,
            "msgs_out": msgs_out,
            "errors": errors,
            "rate_limited": int(snap.get("rate_limited", 0)),
            "auth_failures": int(snap.get("auth_failures", 0)),
            "broker": snap.get("broker", "unknown"),
            "draining": bool(snap.get("draining", False)),
            "rooms": int(snap.get("rooms", 0)),
            "up": True,
            "stale": mono - track.received > self.stale_after,
        }

    def sample(self, now: float | None = None, mono: float | None = None) -> dict[str, Any]:
        """Merge the latest snapshots into one sample and append it to every series."""
        now = time.time() if now is None else now
        mono = time.monotonic() if mono is None else mono
        nodes = {node_id: self._node_sample(track, mono) for node_id, track in self._nodes.items()}
        total = {metric: sum(n[metric] for n in nodes.values()) for metric in NODE_METRICS}
        for node_id, values in nodes.items():
            for metric in NODE_METRICS:
                self._append(metric, node_id, now, values[metric])
        for metric in NODE_METRICS:
            self._append(metric, TOTAL, now, total[metric])
        balancer: dict[str, Any] = {}
        if self._balancer is not None:
            backends = self._balancer.get("backends") or {}
            balancer = {
                "sticky": self._balancer.get("sticky"),
                "backends": backends,
                "faults": self._balancer.get("faults", []),
            }
            for backend_id, counts in backends.items():
                if isinstance(counts, dict):
                    value = float(counts.get("connections", 0))
                    self._append("balancer_connections", backend_id, now, value)
        self.latest = {"t": now, "nodes": nodes, "total": total, "balancer": balancer}
        return self.latest

    def _append(self, metric: str, key: str, t: float, value: float) -> None:
        ring = self._series.get((metric, key))
        if ring is None:
            ring = self._series[(metric, key)] = RingSeries(self.capacity)
        ring.append(t, float(value))

    def series(self, metric: str, key: str = TOTAL) -> tuple[np.ndarray, np.ndarray]:
        """(times, values) of one series, oldest first; empty arrays if never sampled."""
        ring = self._series.get((metric, key))
        if ring is None:
            return np.zeros(0), np.zeros(0)
        return ring.arrays()

    def keys(self, metric: str) -> list[str]:
        """The keys (node ids, "total", backend ids) that have a series for `metric`."""
        return sorted(key for m, key in self._series if m == metric)
