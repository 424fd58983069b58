"""docs/benchmarks.md from the results document: tables, ratios, targets met or missed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HISTORY = Path(__file__).with_name("history.json")

TARGETS = (
    "fan-out delivered/s at saturation >= 5x python-socketio and >= Node socket.io (same run)",
    "publish-to-deliver p99 < 50 ms at 50,000 deliveries/s (500 subscribers x 100 publishes/s)",
    "10,000 idle connections on one node",
    "window lag p99 < 50 ms at 20,000 frames/s",
    "1,000,000 frames held in < 500 MB",
    "the proxy adds <= 1 ms p50 to a round trip at 1,000 messages/s (issue 15)",
)


def _n(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _spread(block: dict[str, Any] | None, digits: int = 1) -> str:
    if not block or block.get("min") is None:
        return "-"
    return f"{_n(block['min'], digits)}-{_n(block['max'], digits)}"


def _fanout(fan: dict[str, Any]) -> list[str]:
    lines = [
        "## Fan-out through the broker",
        "",
        "One room; subscribers spread round-robin over the nodes by the load generator; "
        "saturation = the best step of a publish-rate ramp (stops when < 70 % of the offered "
        "deliveries arrive or the median latency passes 1 s); latency at 100 publishes/s "
        "(50,000 deliveries/s with 500 "
        "subscribers), from the send time carried in each message.",
        "",
        "| contender | nodes | delivered/s at saturation (median) | spread | p50 ms | p99 ms "
        "| p99 spread | delivered at the latency rate | deliveries per server CPU-s "
        "| load-generator CPU (busiest process) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in fan.items():
        if "not_run" in r:
            lines.append(f"| {name} | - | not run: {r['not_run']} | | | | | | | |")
            continue
        ratio = r.get("latency_delivered_ratio")
        lines.append(
            f"| {name} | {r['nodes']} | {_n(r['delivered_per_s'])} "
            f"| {_spread(r['delivered_per_s_spread'], 0)} | {_n(r['p50_ms'])} "
            f"| {_n(r['p99_ms'])} | {_spread(r['p99_ms_spread'])} "
            f"| {_n(ratio * 100 if ratio is not None else None)} % "
            f"| {_n(r.get('delivered_per_server_cpu_s'))} "
            f"| {_n(r['loadgen_cpu_max_pct_at_best'])} % |"
        )
    ours = fan.get("wsconsole", {}).get("delivered_per_s")
    lines.append("")
    if ours:
        lines.append("Ratios (wsconsole delivered/s at saturation / contender's, same run):")
        lines.append("")
        for name, r in fan.items():
            if name != "wsconsole" and r.get("delivered_per_s"):
                lines.append(f"- vs {name}: {ours / r['delivered_per_s']:.2f}x")
        lines.append("")
    lines.append("Every ramp step of every repeat (offered and delivered per second, CPU of the "
                 "servers and of the load generator) is in benchmarks.json.")  # fmt: skip
    lines.append("")
    return lines


def _capacity(cap: dict[str, Any]) -> list[str]:
    lines = ["## Connection capacity (one node, heartbeats on)", ""]
    if "not_run" in cap:
        return [*lines, f"Not run: {cap['not_run']}", ""]
    ping = cap["runs"][0].get("ping_interval_s") if cap.get("runs") else None
    lines += [
        f"{_n(cap['connections'])} connections, each its own user (auth on) and source address "
        f"127.x.y.z, each joined to a room; held through pings every {_n(ping)} s.",
        "",
        "| held open after the hold | time to open all (median) | spread | node RSS | "
        "RSS per connection |",
        "|---|---|---|---|---|",
        f"| {_n(cap['held'])} | {_n(cap['open_s'], 2)} s | {_spread(cap['open_s_spread'], 2)} s "
        f"| {_n(cap['node_rss_mb'])} MB | {_n(cap['rss_per_conn_kib'], 2)} KiB |",
        "",
    ]
    return lines


def _storm(st: dict[str, Any]) -> list[str]:
    lines = [
        "## Reconnect storm",
        "",
        f"{_n(st.get('clients'))} clients on n1 (through the balancer); n2 is added, n1 is "
        "SIGKILLed; clients reconnect with the product's BackoffPolicy (1 s doubling, cap 30 s).",
        "",
        "| backoff | all back after (median) | spread | per-client p50 | per-client p99 |",
        "|---|---|---|---|---|",
    ]
    for label in ("jitter", "no_jitter"):
        r = st.get(label) or {}
        name = "with jitter 0-1 s" if label == "jitter" else "without jitter"
        lines.append(
            f"| {name} | {_n(r.get('all_back_s'), 2)} s | {_spread(r.get('all_back_s_spread'), 2)}"
            f" s | {_n(r.get('p50_s'), 2)} s | {_n(r.get('p99_s'), 2)} s |"
        )
    lines.append("")
    return lines


def _window(win: dict[str, Any]) -> list[str]:
    lines = ["## Window ingest (offscreen Qt, the real window)", ""]
    if "not_run" in win:
        return [*lines, f"Not run: {win['not_run']}", ""]
    lines += [
        "A flood server sends harness frames at a fixed rate to one session; a 20 ms timer "
        "measures event-loop lag while the Frames view follows.",
        "",
        "| offered frames/s | received frames/s | view frames/s | lag p50 ms | lag p99 ms "
        "| p99 spread | kept up |",
        "|---|---|---|---|---|---|---|",
    ]
    for rate, r in win["rates"].items():
        lines.append(
            f"| {_n(int(rate))} | {_n(r['frames_per_s'])} | {_n(r['view_frames_per_s'])} "
            f"| {_n(r['lag_p50_ms'])} | {_n(r['lag_p99_ms'])} "
            f"| {_spread(r['lag_p99_ms_spread'])} | {'yes' if r['kept_up'] else 'no'} |"
        )
    lines += [
        "",
        f"Memory: {_n(win['frames_held'])} frames held in the FrameStore and shown by the "
        f"Frames view: process RSS {_n(win['rss_mb'])} MB, of which {_n(win['rss_delta_mb'])} "
        f"MB for the frames ({_n(win['bytes_per_frame'])} bytes per frame).",
        "",
    ]
    return lines


def _proxy(px: dict[str, Any]) -> list[str]:
    added = px.get("added_p50_ms") or {}
    return [
        "## Proxy overhead",
        "",
        f"Round trip of small text messages at {px.get('rate')} messages/s, "
        f"{px.get('rounds')} alternating rounds of {px.get('seconds_per_phase')} s per path: "
        "straight to a websockets echo server, and through `wsconsole proxy --quiet` in front "
        "of it (both in their own processes).",
        "",
        "| path | p50 ms | p99 ms |",
        "|---|---|---|",
        f"| direct | {_n(px.get('direct_p50_ms'), 3)} | {_n(px.get('direct_p99_ms'), 3)} |",
        f"| through the proxy | {_n(px.get('proxy_p50_ms'), 3)} | "
        f"{_n(px.get('proxy_p99_ms'), 3)} |",
        "",
        f"The proxy adds {_n(added.get('median'), 3)} ms p50 (spread {_spread(added, 3)} ms "
        f"over the repeats) and uses {_n(px.get('proxy_cpu_us_per_message'))} µs of CPU per "
        f"round trip; every message came back: {px.get('received_ratio') == 1.0}. The added "
        "time is mostly the operating system waking a third process twice per round trip, so "
        "it grows with the machine's load average (noted at the top).",
        "",
    ]


def _persistence(per: dict[str, Any]) -> list[str]:
    lines = [
        "## Broker persistence (the publish path)",
        "",
        "The nodes' publish path (`RedisAdapter`: Lua script with idempotency key, sequence, "
        f"history and PUBLISH) against the harness broker: {_n(per.get('burst'))} publishes "
        f"queued at once over 4 rooms (pipelined as a busy node does), then "
        f"{_n(per.get('single'))} publishes one at a time, each awaited.",
        "",
        "| broker | pipelined publishes/s (median) | spread | one at a time p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    names = {
        "ephemeral": "in memory (`--broker-ephemeral`)",
        "aof_everysec": "AOF, appendfsync everysec",
        "aof_always": "AOF, appendfsync always (default)",
    }
    for label, name in names.items():
        r = per.get(label) or {}
        lines.append(
            f"| {name} | {_n(r.get('burst_per_s'), 0)} | {_spread(r.get('burst_per_s_spread'), 0)}"
            f" | {_n(r.get('single_p50_ms'), 3)} | {_n(r.get('single_p99_ms'), 3)} |"
        )
    lines.append("")
    return lines


def verdicts(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """Each target with "met", "missed (...)" or "not measured"."""
    out: list[tuple[str, str]] = []
    fan = doc.get("fanout", {})
    ours = fan.get("wsconsole", {}).get("delivered_per_s")
    pysio = fan.get("python-socketio", {}).get("delivered_per_s")
    nodesio = fan.get("node-socketio", {}).get("delivered_per_s")
    if ours and pysio:
        ok = ours >= 5 * pysio and (nodesio is None or ours >= nodesio)
        detail = f"{ours / pysio:.2f}x python-socketio"
        if nodesio:
            detail += f", {ours / nodesio:.2f}x Node socket.io"
        out.append((TARGETS[0], ("met: " if ok else "missed: ") + detail))
    else:
        out.append((TARGETS[0], "not measured"))
    p99 = fan.get("wsconsole", {}).get("p99_ms")
    out.append((TARGETS[1], "not measured" if p99 is None else
                f"{'met' if p99 < 50 else 'missed'}: p99 {p99:.1f} ms"))  # fmt: skip
    cap = doc.get("capacity", {})
    held = cap.get("held")
    out.append((TARGETS[2], "not measured" if held is None else
                f"{'met' if held >= 10_000 else 'missed'}: {held:,} held"))  # fmt: skip
    win = doc.get("window", {})
    step = win.get("rates", {}).get("20000")
    if step:
        lag = step["lag_p99_ms"]
        ok = step["kept_up"] and lag is not None and lag < 50
        out.append((TARGETS[3], f"{'met' if ok else 'missed'}: lag p99 {_n(lag)} ms, "
                                f"kept up: {step['kept_up']}"))  # fmt: skip
    else:
        out.append((TARGETS[3], "not measured"))
    rss = win.get("rss_mb")
    held_frames = win.get("frames_held")
    if rss is not None and held_frames and held_frames >= 1_000_000:
        out.append((TARGETS[4], f"{'met' if rss < 500 else 'missed'}: {rss:.0f} MB RSS"))
    else:
        out.append((TARGETS[4], "not measured"))
    added = (doc.get("proxy", {}).get("added_p50_ms") or {}).get("median")
    out.append((TARGETS[5], "not measured" if added is None else
                f"{'met' if added <= 1.0 else 'missed'}: +{added:.3f} ms p50"))  # fmt: skip
    return out


def _history(doc: dict[str, Any]) -> list[str]:
    try:
        hist = json.loads(HISTORY.read_text())["before_node_fixes"]
    except (OSError, ValueError, KeyError):
        return []
    lines = [
        "## Before and after the node fixes",
        "",
        f"Before ({hist['when']}): {hist['node']}.",
        "",
        "| contender | delivered/s before | after | p99 ms before | after |",
        "|---|---|---|---|---|",
    ]
    for name, before in hist["fanout"].items():
        after = doc.get("fanout", {}).get(name, {})
        lines.append(
            f"| {name} | {_n(before['delivered_per_s'])} | {_n(after.get('delivered_per_s'))} "
            f"| {_n(before['p99_ms'])} | {_n(after.get('p99_ms'))} |"
        )
    lines += ["", f"Capacity before: {hist['capacity']['note']}.", ""]
    return lines


def markdown(doc: dict[str, Any]) -> str:
    """The whole report."""
    meta = doc.get("meta", {})
    mach = meta.get("machine", {})
    versions = ", ".join(f"{k} {v}" for k, v in mach.get("versions", {}).items())
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m benchmarks`); raw figures in benchmarks.json.",
        "",
        f"- Run: {meta.get('started')}, {meta.get('duration_s')} s, repeats: "
        f"{meta.get('repeat')}{' (quick sizes: not a measurement)' if meta.get('quick') else ''}",
        f"- Command: `{meta.get('command')}`",
        f"- Machine: {mach.get('cores')} cores, {mach.get('ram_gb')} GB RAM, "
        f"{mach.get('cpu_model')}, {mach.get('os')}; load average at start "
        f"{mach.get('loadavg_at_start')}",
        f"- Versions: {versions}",
        "- Medians over the repeats; spreads are min-max.",
        "",
        "## Targets",
        "",
        "| target | result |",
        "|---|---|",
    ]
    lines += [f"| {target} | {result} |" for target, result in verdicts(doc)]
    lines.append("")
    if "fanout" in doc:
        lines += _fanout(doc["fanout"])
    if "capacity" in doc:
        lines += _capacity(doc["capacity"])
    if "storm" in doc:
        lines += _storm(doc["storm"])
    if "window" in doc:
        lines += _window(doc["window"])
    if "proxy" in doc:
        lines += _proxy(doc["proxy"])
    if "persistence" in doc:
        lines += _persistence(doc["persistence"])
    lines += _history(doc)
    notes = Path(__file__).with_name("NOTES.md")
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    return "\n".join(lines) + "\n"
