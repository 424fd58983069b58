"""A user node's own Prometheus figures, scraped and added to its stats as extra series.

When a stack names `[metrics] path` and `series` (names or globs), the supervisor GETs that
path on every running node each `interval` seconds, parses the text exposition format with
prometheus-client's parser, and keeps per node, for each matching metric family, the sum of
its samples over every label set: a gauge as it is, a counter as its rate per second
(`<name>_per_s`). The values ride on the node's next snapshot (`NodeSnapshot.extra`) and
reach the plots as `metric.<name>.<node>`. A node that does not answer, or answers with
something that is not the format, keeps its previous values and is logged once per state
change, never failing the cluster.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from wsconsole.harness.clusterconfig import LOOPBACK
from wsconsole.harness.stackfile import MetricsSpec
from wsconsole.harness.stacknodes import http_get

log = logging.getLogger(__name__)

BODY_LIMIT = 4 << 20  # the most of one /metrics answer that is read


def select(text: str, patterns: tuple[str, ...]) -> tuple[dict[str, float], dict[str, float]]:
    """(gauges, counters) of the families matching `patterns`, summed over label sets
    (ValueError for text that is not the exposition format). The `<name>_created` time
    stamps the Python client writes beside a counter, histogram or summary are not series."""
    gauges: dict[str, float] = {}
    counters: dict[str, float] = {}
    families = list(text_string_to_metric_families(text))
    stamped = {f"{f.name}_created" for f in families
               if f.type in ("counter", "histogram", "summary")}
    for family in families:
        if family.name in stamped or \
                not any(fnmatch.fnmatchcase(family.name, pattern) for pattern in patterns):
            continue
        if family.type == "counter":  # `x_total` samples; prom-client's plain `x` too
            names = (family.name + "_total", family.name)
            counters[family.name] = sum(s.value for s in family.samples if s.name in names)
        elif family.type in ("gauge", "unknown", "untyped"):
            gauges[family.name] = sum(s.value for s in family.samples if s.name == family.name)
    return gauges, counters


class MetricsScraper:
    """Scrapes the nodes of one stack; `values(node)` is what the last scrapes found."""

    def __init__(self, spec: MetricsSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.clock = clock
        self._values: dict[str, dict[str, float]] = {}
        self._counters: dict[str, tuple[float, dict[str, float]]] = {}
        self._failing: set[str] = set()

    def values(self, node_id: str) -> dict[str, float]:
        """The node's latest scraped series (empty before the first good scrape)."""
        return self._values.get(node_id, {})

    def forget(self, node_id: str) -> None:
        """The node's process is gone: its counters start again with the next one."""
        self._values.pop(node_id, None)
        self._counters.pop(node_id, None)

    def take(self, node_id: str, text: str) -> None:
        """Record one scrape of node `node_id` (ValueError for text that is not the format)."""
        gauges, counters = select(text, self.spec.series)
        now = self.clock()
        values = dict(gauges)
        previous = self._counters.get(node_id)
        for name, total in counters.items():
            rate = 0.0
            if previous is not None and name in previous[1] and now > previous[0]:
                delta = total - previous[1][name]
                rate = (delta if delta >= 0 else total) / (now - previous[0])
            values[f"{name}_per_s"] = rate
        self._counters[node_id] = (now, counters)
        self._values[node_id] = values

    async def scrape(self, node_id: str, port: int) -> None:
        """GET the node's metrics path once and record what it says."""
        try:
            status, body = await http_get(LOOPBACK, port, self.spec.path, body_limit=BODY_LIMIT)
            if status != 200:
                raise ValueError(f"HTTP {status}")
            self.take(node_id, body.decode("utf-8", "replace"))
        except (OSError, TimeoutError, ValueError) as exc:
            if node_id not in self._failing:
                log.warning("metrics of %s at %s: %s", node_id, self.spec.path, exc)
            self._failing.add(node_id)
            return
        self._failing.discard(node_id)

    async def run(self, ports: Callable[[], dict[str, int]]) -> None:
        """Forever: scrape every running node (id -> port) each interval."""
        while True:
            started = self.clock()
            await asyncio.gather(*(self.scrape(n, p) for n, p in ports().items()))
            await asyncio.sleep(max(0.05, self.spec.interval - (self.clock() - started)))
