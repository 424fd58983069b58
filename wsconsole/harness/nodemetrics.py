"""A node's `GET /metrics`: Prometheus text built from its counters at scrape time.

Both node flavours share the families of what they both count and add their own as
(name, help, value) rows; nothing is
recorded on the hot path, the counters are read when a scraper asks. Every family has
the label `node`, so one Prometheus can scrape the whole cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Row", "exposition"]

Row = tuple[str, str, float]  # (metric name, help text, value)


class _Families:
    """A collector answering with families built before the scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        """The families, as prometheus_client's registry asks for them."""
        return self.families


class Counted(Protocol):
    """The counters both node flavours keep."""

    accepted: int
    msgs_in: int
    msgs_out: int
    auth_failures: int


def exposition(
    node_id: str,
    stats: Counted,
    *,
    connections: int,
    draining: bool,
    gauges: Iterable[Row] = (),
    counters: Iterable[Row] = (),
    errors: Mapping[str, int] | None = None,
) -> bytes:
    """The Prometheus text of one node: the families every flavour has, then its own
    `gauges` and `counters`, and errors by kind if given."""
    gauges = [
        ("wsconsole_connections", "Open client connections", connections),
        ("wsconsole_draining", "1 while the node drains", draining),
        *gauges,
    ]
    counters = [
        ("wsconsole_connections_accepted", "Connections accepted", stats.accepted),
        ("wsconsole_messages_in", "Messages received from clients", stats.msgs_in),
        ("wsconsole_messages_out", "Messages sent to clients", stats.msgs_out),
        ("wsconsole_auth_failures", "Refused authentications", stats.auth_failures),
        *counters,
    ]
    families: list[Metric] = []
    for name, doc, value in gauges:
        gauge = GaugeMetricFamily(name, doc, labels=["node"])
        gauge.add_metric([node_id], value)
        families.append(gauge)
    for name, doc, value in counters:
        counter = CounterMetricFamily(name, doc, labels=["node"])
        counter.add_metric([node_id], value)
        families.append(counter)
    if errors is not None:
        by_kind = CounterMetricFamily("wsconsole_errors", "Errors by kind", labels=["node", "kind"])
        for kind, count in sorted(errors.items()):
            by_kind.add_metric([node_id, kind], count)
        families.append(by_kind)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))  # type: ignore[arg-type]
    return generate_latest(registry)
