"""Scenario reports: JUnit XML for CI and one self-contained HTML page for people.

The HTML page needs nothing but a browser: inline CSS and inline SVG plots (clients
connected, publishes and deliveries per second, p99 latency, connections per node) with the
steps drawn as markers on every plot, a timeline of steps and cluster events, and a table of
every assertion with its measured value and verdict.
"""

from __future__ import annotations

import html
import math
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wsconsole.scenarios.runner import ScenarioResult

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")


# ---------------------------------------------------------------------------------- JUnit


def junit_xml(result: ScenarioResult) -> str:
    """One <testsuite>: a test case per assertion and per step (a step that failed = error)."""
    scenario = result.scenario
    suite = ET.Element("testsuite", name=f"scenario: {scenario.name}")
    failures = errors = 0
    classname = f"scenario.{_slug(scenario.name)}"
    if result.error is not None:
        case = ET.SubElement(suite, "testcase", classname=classname, name="run", time="0")
        ET.SubElement(case, "error", message=result.error).text = result.error
        errors += 1
    for record in result.steps:
        name = f"step at {record.step.at:g}s: {record.step.describe()}"
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"{classname}.steps",
            name=name,
            time=f"{record.duration:.3f}",
        )
        if not record.ok:
            ET.SubElement(case, "error", message=record.detail).text = record.detail
            errors += 1
        else:
            ET.SubElement(case, "system-out").text = record.detail
    if not result.assertions and result.scenario.assertions:
        for assertion in result.scenario.assertions:
            case = ET.SubElement(
                suite, "testcase", classname=f"{classname}.assertions", name=assertion.label
            )
            ET.SubElement(case, "skipped", message="the run produced no measurements")
    for outcome in result.assertions:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"{classname}.assertions",
            name=outcome.assertion.label,
            time="0",
        )
        if not outcome.passed:
            message = f"{outcome.assertion.expect}: measured {outcome.measured} ({outcome.detail})"
            ET.SubElement(case, "failure", message=message).text = message
            failures += 1
        else:
            ET.SubElement(case, "system-out").text = f"measured {outcome.measured}"
    suite.set("tests", str(len(suite.findall("testcase"))))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(len(suite.findall("testcase/skipped"))))
    suite.set("time", f"{result.elapsed:.3f}")
    suite.set("timestamp", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(result.started_wall)))
    ET.indent(suite)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
    )


def write_junit(result: ScenarioResult, path: str | Path) -> None:
    """Write the JUnit XML report."""
    Path(path).write_text(junit_xml(result), encoding="utf-8")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_") or "scenario"


# ---------------------------------------------------------------------------------- SVG


def svg_plot(
    title: str,
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    markers: Sequence[tuple[float, str]] = (),
    unit: str = "",
    width: int = 760,
    height: int = 200,
    t_range: tuple[float, float] | None = None,
    label_markers: bool = False,
) -> str:
    """An inline SVG line chart of (t, value) series with vertical step markers."""
    left, right, top, bottom = 56, 12, 26, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [p for _, data in series for p in data if _finite(p[1])]
    times = [p[0] for p in points] + [m[0] for m in markers]
    t_min = min(times, default=0.0)
    t_max = max(times, default=1.0)
    if t_range is not None:
        t_min, t_max = t_range
    if t_max - t_min < 1e-9:
        t_max = t_min + 1.0
    v_max = max((p[1] for p in points), default=1.0)
    v_max = _nice_ceiling(v_max if v_max > 0 else 1.0)

    def x(t: float) -> float:
        return left + (t - t_min) / (t_max - t_min) * plot_w

    def y(v: float) -> float:
        return top + plot_h - v / v_max * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="16" class="title">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>',
    ]
    for i in range(5):
        value = v_max * i / 4
        yy = y(value)
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{yy:.1f}" y2="{yy:.1f}" class="grid"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{yy + 4:.1f}" class="axis" text-anchor="end">'
            f"{_fmt(value, unit)}{unit}</text>"
        )
    for i in range(6):
        t = t_min + (t_max - t_min) * i / 5
        parts.append(
            f'<text x="{x(t):.1f}" y="{height - 10}" class="axis" text-anchor="middle">'
            f"{t:.1f}s</text>"
        )
    for t, label in markers:
        xx = x(t)
        parts.append(
            f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{top}" y2="{top + plot_h}" class="marker">'
            f"<title>{html.escape(label)} at {t:.2f} s</title></line>"
        )
        if label_markers:
            short = label if len(label) <= 14 else label[:13] + "…"
            parts.append(
                f'<text x="{xx + 3:.1f}" y="{top + plot_h - 4}" class="axis">'
                f"{html.escape(short)}</text>"
            )
    legend_x = left + 8
    for index, (name, data) in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        good = [(t, v) for t, v in data if _finite(v)]
        if good:
            path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in good)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.6"/>'
            )
        parts.append(
            f'<text x="{legend_x}" y="{top + 14}" class="legend" fill="{color}">'
            f"{html.escape(name)}</text>"
        )
        legend_x += 10 * len(name) + 28
    parts.append("</svg>")
    return "".join(parts)


def svg_histogram(
    title: str, values: Sequence[float], bins: int = 30, width: int = 760, height: int = 180
) -> str:
    """An inline SVG histogram of `values` (seconds, shown in ms), e.g. time-to-reconnect."""
    left, right, top, bottom = 56, 28, 26, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    low = 0.0  # from zero, so a tight herd and a jittered spread look as different as they are
    high = max(values, default=1.0) * 1.05
    if high - low < 1e-9:
        high = low + 0.001
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, int((value - low) / (high - low) * bins))] += 1
    peak = _nice_ceiling(max(max(counts, default=1), 1))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="16" class="title">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>',
    ]
    bar_w = plot_w / bins
    for index, count in enumerate(counts):
        if not count:
            continue
        bar_h = count / peak * plot_h
        x = left + index * bar_w
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{top + plot_h - bar_h:.1f}" width="{bar_w - 2:.1f}"'
            f' height="{bar_h:.1f}" fill="{PALETTE[0]}"><title>{count}</title></rect>'
        )
    for i in range(3):
        value = peak * i / 2
        yy = top + plot_h - value / peak * plot_h
        parts.append(
            f'<text x="{left - 6}" y="{yy + 4:.1f}" class="axis" text-anchor="end">{value:g}</text>'
        )
    for i in range(6):
        value = low + (high - low) * i / 5
        xx = left + plot_w * i / 5
        parts.append(
            f'<text x="{xx:.1f}" y="{height - 10}" class="axis" text-anchor="middle">'
            f"{value * 1000:.0f}ms</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _nice_ceiling(value: float) -> float:
    exponent = math.floor(math.log10(value))
    base = 10**exponent
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * base:
            return step * base
    return 10 * base


def _fmt(value: float, unit: str = "") -> str:
    if unit:
        return f"{value:g}"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


# ---------------------------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#111827;
background:#fff}h1{margin:0 0 4px}h2{margin:28px 0 8px;font-size:18px}
.verdict{display:inline-block;padding:3px 10px;border-radius:4px;color:#fff;font-weight:600}
.pass{background:#16a34a}.fail{background:#dc2626}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #d1d5db;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f3f4f6}td.num{text-align:right}
.ok{color:#16a34a;font-weight:600}.bad{color:#dc2626;font-weight:600}
svg{display:block;margin:10px 0}svg .title{font-size:13px;font-weight:600;fill:#111827}
svg .axis{font-size:10px;fill:#6b7280}svg .legend{font-size:11px;font-weight:600}
svg .frame{fill:#fafafa;stroke:#d1d5db}svg .grid{stroke:#e5e7eb}
svg .marker{stroke:#f59e0b;stroke-width:1.5;stroke-dasharray:4 3}
.muted{color:#6b7280}code{background:#f3f4f6;padding:1px 4px;border-radius:3px}
"""


def _series(result: ScenarioResult, key: str) -> list[tuple[float, float]]:
    return [(float(s["t"]), float(s[key])) for s in result.series if _finite(s.get(key))]


def _node_series(result: ScenarioResult) -> list[tuple[str, list[tuple[float, float]]]]:
    ids: list[str] = []
    for sample in result.cluster_series:
        for node_id in sample["nodes"]:
            if node_id not in ids:
                ids.append(node_id)
    return [
        (
            node_id,
            [(s["t"], s["nodes"][node_id]) for s in result.cluster_series if node_id in s["nodes"]],
        )
        for node_id in ids
    ]


def _event_label(event: dict[str, Any]) -> str | None:
    kind = event.get("event")
    if kind == "node":
        extra = f" (exit {event['exit_code']})" if event.get("exit_code") is not None else ""
        return f"node {event.get('id')} {event.get('state')}{extra}"
    if kind == "broker":
        return f"broker {event.get('state')}" + (
            f" ({event['reason']})" if event.get("reason") else ""
        )
    if kind == "node_event":
        return f"node {event.get('id')}: {event.get('kind')}"
    if kind == "balancer":
        return f"balancer {event.get('state')}"
    if kind == "cluster":
        return f"cluster {event.get('state')}"
    return None


SLICES = {"per_window": "by fault window (a message belongs to the window it was sent in)",
          "per_node": "by node (sent: published into it; a loss: the node its subscriber was "
                      "on when it was sent; a latency: the node that delivered it)",
          "per_client": "by client (sent: what it published; the rest: what it was owed)"}
SLICE_COLUMNS = ("sent", "owed", "delivered", "lost", "missed", "duplicated", "out_of_order",
                 "p50_latency_ms", "p99_latency_ms", "max_latency_ms")


def _slices(summary: dict[str, Any]) -> list[str]:
    """Tables of a stack swarm's figures per fault window, node and client."""
    out: list[str] = []
    for key, title in SLICES.items():
        rows = summary.get(key)
        if not rows:
            continue
        items = [(f"{row['from_s']:g} s: {row['label']}", row) for row in rows] \
            if isinstance(rows, list) else list(rows.items())
        out.append(f"<h2>Messages {html.escape(title)}</h2><table><tr><th></th>"
                   + "".join(f"<th>{c.replace('_', ' ')}</th>" for c in SLICE_COLUMNS)
                   + "</tr>")
        for name, row in items:
            cells = []
            for column in SLICE_COLUMNS:
                value = row.get(column)
                bad = column in ("lost", "missed", "duplicated", "out_of_order") and value
                cells.append(f"<td class='num{' bad' if bad else ''}'>"
                             f"{'-' if value is None else html.escape(str(value))}</td>")
            out.append(f"<tr><th>{html.escape(str(name))}</th>{''.join(cells)}</tr>")
        out.append("</table>")
    return out


WORKER_COLUMNS = ("where", "host", "clients", "sent", "delivered", "state", "missing_batches",
                  "problem")


def _workers(summary: dict[str, Any]) -> list[str]:
    """A swarm split over workers: one row per worker, an incomplete one in red."""
    rows = summary.get("workers")
    if not rows:
        return []
    out = ["<h2>Swarm workers</h2><table><tr><th>part</th>"
           + "".join(f"<th>{c.replace('_', ' ')}</th>" for c in WORKER_COLUMNS) + "</tr>"]
    for row in rows:
        bad = row.get("state") != "done" or row.get("missing_batches")
        cells = "".join(f"<td{' class=bad' if bad and c == 'state' else ''}>"
                        f"{html.escape('-' if row.get(c) is None else str(row.get(c)))}</td>"
                        for c in WORKER_COLUMNS)
        out.append(f"<tr><th>{row.get('part')}</th>{cells}</tr>")
    out.append("</table>")
    return out


def _plots(result: ScenarioResult, markers: list[tuple[float, str]]) -> list[str]:
    """The swarm's figures over time, the reconnect histogram, connections per node."""
    out: list[str] = []
    out.append("<h2>Plots</h2>")
    times = [s["t"] for s in result.series] + [s["t"] for s in result.cluster_series]
    times += [m[0] for m in markers]
    span = (0.0, max(max(times, default=1.0), 1.0))
    out.append(
        svg_plot(
            "clients connected (and reconnects per second)",
            [
                ("connected", _series(result, "connected")),
                ("reconnects/s", _series(result, "reconnects_delta")),
            ],
            markers,
            t_range=span,
            label_markers=True,
        )
    )
    out.append(
        svg_plot(
            "messages per second",
            [
                (name, points)
                for name, points in (
                    ("sent", _series(result, "sent_delta")),
                    ("acknowledged", _series(result, "acknowledged_delta")),
                    ("delivered", _series(result, "delivered_delta")),
                )
                if points or name != "acknowledged"  # a user's app has no acks
            ],
            markers,
            t_range=span,
        )
    )
    out.append(
        svg_plot(
            "publish-to-deliver latency (per second)",
            [
                ("p50", _series(result, "p50_latency_ms")),
                ("p99", _series(result, "p99_latency_ms")),
            ],
            markers,
            unit="ms",
            t_range=span,
        )
    )
    if result.reconnect_times:
        spread = result.summary.get("reconnect_spread_ms")
        label = f" — spread p90-p10 {spread:.0f} ms" if isinstance(spread, int | float) else ""
        out.append(
            svg_histogram(
                f"time to reconnect, {len(result.reconnect_times)} reconnects{label}",
                result.reconnect_times,
            )
        )
    nodes = _node_series(result)
    if nodes:
        out.append(svg_plot("connections per node (server side)", nodes, markers, t_range=span))
    lost = result.summary.get("lost_by_second")
    if isinstance(lost, dict) and lost:
        points = [(float(t) + 0.5, float(n)) for t, n in sorted(lost.items(), key=lambda i:
                                                               float(i[0]))]
        out.append(svg_plot("messages lost, by the second they were sent", [("lost", points)],
                            markers, t_range=span, label_markers=True))

    return out


def html_report(result: ScenarioResult) -> str:
    """The whole report as one HTML string (no external resources)."""
    sc = result.scenario
    esc = html.escape
    markers = [(r.t, r.step.describe()) for r in result.steps]
    verdict = "PASS" if result.passed else "FAIL"
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(sc.name)} — {verdict}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(sc.name)} <span class='verdict {verdict.lower()}'>{verdict}</span></h1>",
    ]
    if sc.description:
        out.append(f"<p>{esc(sc.description)}</p>")
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(result.started_wall))
    out.append(
        f"<p class='muted'>{esc(sc.path or '')} · started {started} · ran {result.elapsed:.1f} s"
        f" · time scale {result.scale:g}" + (" · stopped early" if result.stopped else "") + "</p>"
    )
    if result.error:
        out.append(f"<p class='bad'>Run error: {esc(result.error)}</p>")

    out.append(
        "<h2>Assertions</h2><table><tr><th>assertion</th><th>expect</th>"
        "<th>measured</th><th>verdict</th><th>detail</th></tr>"
    )
    if not result.assertions:
        for assertion in sc.assertions:
            out.append(
                f"<tr><td>{esc(assertion.label)}</td><td><code>{esc(assertion.expect)}</code></td>"
                "<td>-</td><td class='bad'>not measured</td>"
                "<td>the run produced no summary</td></tr>"
            )
    for outcome in result.assertions:
        cls, word = ("ok", "pass") if outcome.passed else ("bad", "fail")
        out.append(
            f"<tr><td>{esc(outcome.assertion.label)}</td>"
            f"<td><code>{esc(outcome.assertion.expect)}</code></td>"
            f"<td class='num'>{esc(str(outcome.measured))}</td>"
            f"<td class='{cls}'>{word}</td><td>{esc(outcome.detail)}</td></tr>"
        )
    out.append("</table>")

    if sc.replay is None:  # a replay has no swarm to plot
        out += _plots(result, markers)
    out.append("<h2>Timeline</h2><table><tr><th>t (s)</th><th>what</th><th>detail</th></tr>")
    rows: list[tuple[float, str, str, str]] = []
    for record in result.steps:
        cls = "ok" if record.ok else "bad"
        rows.append((record.t, f"step: {record.step.describe()}", record.detail, cls))
    for event in result.events:
        label = _event_label(event)
        if label is not None:
            rows.append((float(event.get("t", 0.0)), label, "", ""))
    for t, what, detail, cls in sorted(rows, key=lambda r: r[0]):
        out.append(
            f"<tr><td class='num'>{t:.2f}</td><td class='{cls}'>{esc(what)}</td>"
            f"<td>{esc(detail)}</td></tr>"
        )
    out.append("</table>")

    if sc.replay is not None:
        out += _conversation(result)
    if result.summary:
        out.extend(_slices(result.summary))
        out.extend(_workers(result.summary))
        out.append(f"<h2>{'Replay' if sc.replay is not None else 'Swarm'} summary</h2><table>")
        for key, value in result.summary.items():
            if key not in SLICES and key not in ("lost_by_second", "workers"):
                out.append(f"<tr><th>{esc(key)}</th><td>{esc(str(value))}</td></tr>")
        out.append("</table>")
    out.append("</body></html>\n")
    return "\n".join(out)


def _conversation(result: ScenarioResult) -> list[str]:
    """The replay's conversation, sends and replies in time order; the first divergence is
    marked, every reply that differs from the recording shows both."""
    esc = html.escape
    first = result.summary.get("first_divergence")
    out = ["<h2>Replay: where it diverged</h2>",
           "<p class='muted'>" + (f"first divergence at reply {first}" if first is not None
                                  else "every recorded reply came back equal, in order")
           + "</p>",
           "<table><tr><th>t (s)</th><th></th><th>#</th><th>recorded</th><th>this run</th>"
           "<th>verdict</th></tr>"]
    for row in result.conversation:
        t = "-" if row.t is None else f"{row.t:.3f}"
        if row.kind == "send":
            out.append(f"<tr><td class='num'>{t}</td><td>\u2192 sent</td>"
                       f"<td class='num'>{row.index}</td><td colspan='2'><code>"
                       f"{esc(row.received)}</code></td><td></td></tr>")
            continue
        cls = "ok" if row.status == "match" else "bad"
        mark = " \u2190 first divergence" if row.index == first else ""
        out.append(f"<tr id='reply-{row.index}'><td class='num'>{t}</td><td>\u2190 reply</td>"
                   f"<td class='num'>{row.index}</td><td><code>{esc(row.expected)}</code></td>"
                   f"<td><code>{esc(row.received)}</code></td>"
                   f"<td class='{cls}'>{row.status}{mark}</td></tr>")
    out.append("</table>")
    return out


def write_html(result: ScenarioResult, path: str | Path) -> None:
    """Write the self-contained HTML report."""
    Path(path).write_text(html_report(result), encoding="utf-8")
