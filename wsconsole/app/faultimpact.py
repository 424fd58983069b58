"""Which clients a fault affected and how long each took to come back (no Qt).

A fault marker on the Timeline (node killed, broker down, network fault ...) is judged by
what the lanes did after it: a client is affected when it left OPEN within
[fault - `lead`, end of the fault's window), the window ending at the next fault or
`horizon` seconds after, whichever comes first; it came back at its next OPEN. Judging by
behaviour rather than by the node a client was on also catches what a fault did to clients
of other nodes (a broker restart touches everyone, a dying node's neighbours take the herd).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsconsole.app.fleetbands import bucket
from wsconsole.app.timelinemodel import Lane, Marker, TimelineModel
from wsconsole.core.lifecycle import State
from wsconsole.core.metrics import percentile


@dataclass(frozen=True, slots=True)
class Hit:
    """One affected client: when it left OPEN and when it was OPEN again (None: not yet)."""

    lane: str
    label: str
    left: float
    back: float | None

    @property
    def down(self) -> float | None:
        """Seconds it was away, None while it is still away."""
        return None if self.back is None else self.back - self.left


@dataclass
class FaultImpact:
    """What one fault did to the fleet."""

    fault: Marker
    until: float
    hits: list[Hit]
    open_at_fault: int

    @property
    def downtimes(self) -> list[float]:
        """Seconds away of the clients that came back."""
        return [hit.down for hit in self.hits if hit.down is not None]

    @property
    def still_down(self) -> int:
        """Affected clients not back (yet, or within the fault's window)."""
        return sum(1 for hit in self.hits if hit.back is None)

    def histogram(self, bins: int = 12) -> tuple[np.ndarray, np.ndarray]:
        """(edges in seconds, counts) of the time to come back."""
        values = self.downtimes
        if not values:
            return np.array([0.0, 1.0]), np.zeros(1, np.int64)
        top = max(values) or 1.0
        counts, edges = np.histogram(values, bins=bins, range=(0.0, top * 1.0001))
        return edges, counts

    def summary(self) -> str:
        """One line in plain words."""
        if not self.hits:
            return (f"{self.fault.label}: no client left OPEN "
                    f"({self.open_at_fault} were open)")
        text = f"{self.fault.label}: {len(self.hits)} of {self.open_at_fault} open clients dropped"
        downs = self.downtimes
        if downs:
            text += (f"; back after p50 {percentile(downs, 50):.2f} s, "
                     f"max {max(downs):.2f} s")
        if self.still_down:
            text += f"; {self.still_down} not back"
        return text

    def span(self) -> tuple[float, float]:
        """(start, end) monotonic times that cover the fault and every recovery."""
        end = max([self.fault.at + 1.0, *(h.back for h in self.hits if h.back is not None)])
        return self.fault.at - 1.0, (end if not self.still_down else self.until) + 0.5


def impact(model: TimelineModel, fault: Marker, horizon: float = 60.0,
           lead: float = 0.5) -> FaultImpact:
    """The clients `fault` affected (see the module docstring)."""
    later = [m.at for m in model.faults if m.at > fault.at + 0.05]
    until = min([fault.at + horizon, *later])
    hits: list[Hit] = []
    open_at = 0
    for lane in list(model.lanes.values()):
        if _state_at(lane, fault.at - lead) is State.OPEN:
            open_at += 1
        hit = _hit(lane, fault.at - lead, until)
        if hit is not None:
            hits.append(hit)
    hits.sort(key=lambda h: (h.down is None, h.down or 0.0))
    return FaultImpact(fault, until, hits, open_at)


def _state_at(lane: Lane, at: float) -> State | None:
    found = None
    for span in lane.spans:
        if span.start > at:
            break
        found = span.state
    return found


def _hit(lane: Lane, start: float, until: float) -> Hit | None:
    spans = list(lane.spans)
    for index in range(1, len(spans)):
        span = spans[index]
        if span.start < start:
            continue
        if span.start >= until:
            return None
        if bucket(spans[index - 1].state) == "OPEN" and bucket(span.state) != "OPEN":
            back = next((s.start for s in spans[index + 1:] if s.state is State.OPEN), None)
            return Hit(lane.name, lane.label, span.start, back)
    return None


__all__ = ["FaultImpact", "Hit", "impact"]
