"""Scenario reports: JUnit XML counts and a self-contained HTML page with plots and verdicts."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

from wsconsole.scenarios.model import parse_scenario
from wsconsole.scenarios.report import html_report, junit_xml, svg_plot
from wsconsole.scenarios.runner import ScenarioResult, StepRecord

TEXT = """\
name = "report <demo>"
description = "checks & balances"
[cluster]
nodes = 2
[swarm]
duration = 5
[[steps]]
at = 1
action = "kill"
node = "n1"
[[steps]]
at = 2
action = "inject"
direction = "server"
case = "masked-server-frame"
[[assertions]]
expect = "lost == 0"
[[assertions]]
name = "quick"
expect = "p99_latency_ms < 10"
"""


def _result() -> ScenarioResult:
    scenario = parse_scenario(TEXT, "demo.toml")
    summary = {"lost": 0, "p99_latency_ms": 42.0, "delivered": 10}
    result = ScenarioResult(scenario=scenario, scale=0.5, started_wall=1_700_000_000.0)
    result.summary = summary
    result.assertions = [a.evaluate(summary) for a in scenario.assertions]
    result.steps = [
        StepRecord(scenario.steps[0], 1.01, 0.02, True, "node n1 kill"),
        StepRecord(scenario.steps[1], 2.0, 0.01, False, "not available: no inject on n2"),
    ]
    result.series = [
        {"t": float(t), "connected": 10 - (t == 2), "sent_delta": 20, "acknowledged_delta": 20,
         "delivered_delta": 200, "p50_latency_ms": 3.0, "p99_latency_ms": 40.0 + t}
        for t in range(1, 6)
    ]
    result.cluster_series = [{"t": 0.5 * i, "nodes": {"n1": 5.0, "n2": 5.0}} for i in range(8)]
    result.events = [{"event": "node", "t": 1.02, "id": "n1", "state": "killed"}]
    result.elapsed = 7.5
    return result


def test_junit_counts_failed_assertions_and_failed_steps() -> None:
    root = ET.fromstring(junit_xml(_result()))
    assert root.tag == "testsuite"
    assert root.get("tests") == "4"
    assert root.get("failures") == "1"  # quick: 42 ms is not < 10
    assert root.get("errors") == "1"  # the inject step
    failure = root.find("testcase/failure")
    assert failure is not None and "measured 42.0" in (failure.get("message") or "")
    error = root.find("testcase/error")
    assert error is not None and "not available" in (error.get("message") or "")


def test_junit_marks_unmeasured_assertions_skipped_after_a_run_error() -> None:
    result = _result()
    result.assertions, result.summary, result.error = [], {}, "ClusterError: boom"
    root = ET.fromstring(junit_xml(result))
    assert root.get("errors") == "2" and root.get("skipped") == "2"


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.links.append(value)


def test_html_report_is_self_contained_with_plots_timeline_and_verdicts() -> None:
    page = html_report(_result())
    parsed = _Collect()
    parsed.feed(page)
    assert parsed.links == []  # nothing loaded from anywhere
    assert parsed.tags.count("svg") == 4  # connected, rates, latency, per node
    assert "report &lt;demo&gt;" in page and "checks &amp; balances" in page
    assert "FAIL" in page
    # every assertion with its measured value and verdict
    assert re.search(r"quick</td><td><code>p99_latency_ms &lt; 10</code></td>"
                     r"<td class='num'>42.0</td><td class='bad'>fail", page)
    assert "<td class='ok'>pass</td>" in page
    # the timeline lists steps and cluster events in time order
    kill = page.index("step: kill n1")
    killed = page.index("node n1 killed")
    inject = page.index("step: inject masked-server-frame")
    assert kill < killed < inject
    assert page.count("class=\"marker\"") == 2 * 4  # both steps marked on every plot


def test_svg_plot_handles_no_data_and_flat_lines() -> None:
    empty = svg_plot("nothing", [("a", [])])
    assert empty.startswith("<svg") and "polyline" not in empty
    flat = svg_plot("flat", [("a", [(0.0, 0.0), (1.0, 0.0)])], markers=[(0.5, "x")])
    assert "polyline" in flat and "marker" in flat


def test_reconnect_histogram_appears_when_there_were_reconnects() -> None:
    result = _result()
    result.reconnect_times = [0.5, 0.51, 0.52, 1.4]
    result.summary["reconnect_spread_ms"] = 600.0
    page = html_report(result)
    assert "time to reconnect, 4 reconnects — spread p90-p10 600 ms" in page
    assert page.count("<svg") == 5
