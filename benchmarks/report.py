"""docs/benchmarks.md from the results document: tables, ratios, targets met or missed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HISTORY = Path(__file__).with_name("history.json")

TARGETS = (
    "latency-bounded fan-out (>= 99.9 % delivered in the step, p99 < 50 ms) >= 3x Node "
    "socket.io's, same run",
    "server CPU per delivery <= 0.5x Node socket.io's at equal load (50,000 deliveries/s)",
    "at 4x the latency-bounded rate: node RSS < 150 MB, p99 of the clients that keep up "
    "< 100 ms",
    "a deliberately slow subscriber does not raise the others' latency",
    "handshakes with auth and a room join >= 2,500/s on one node, 10,000 connections",
    "<= 10 KiB per idle connection",
    "the window keeps up with >= 0.8x the frames/s of a plain asyncio websockets client, "
    "same run",
    "window lag p99 < 30 ms at 40,000 frames/s, every repeat",
    "1,000,000 frames held in < 250 MB",
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
        "One room, 500 subscribers spread round-robin over the nodes; the same independent "
        "load generator (Node.js `ws` clients) for every contender, repeats interleaved. "
        "**Latency-bounded rate** = the highest step of a publish-rate ramp with >= 99.9 % of "
        "its deliveries in time and p99 < 50 ms. CPU = nodes and broker (psutil), per "
        "delivery. Saturation = the most delivered per second in any step, with the latency "
        "it came with (a backlog, not a rate to run at).",
        "",
        "| contender | nodes | latency-bounded deliveries/s (median) | spread "
        "| CPU µs/delivery at 50k/s | p50 / p99 ms at 50k/s | CPU µs/delivery at the bound "
        "| saturation deliveries/s | its p50 / p99 ms | load generator CPU (busiest) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in fan.items():
        if "not_run" in r:
            lines.append(f"| {name} | - | not run: {r['not_run']} | | | | | | | |")
            continue
        sp = r["spread"]
        lines.append(
            f"| {name} | {r['nodes']} | {_n(r['bounded_per_s'])} "
            f"| {_spread(sp['bounded_per_s'], 0)} | {_n(r['equal_cpu_us'], 2)} "
            f"| {_n(r['equal_p50_ms'])} / {_n(r['equal_p99_ms'])} "
            f"| {_n(r['bounded_cpu_us'], 2)} | {_n(r['saturation_per_s'])} "
            f"| {_n(r['saturation_p50_ms'])} / {_n(r['saturation_p99_ms'])} "
            f"| {_n(r['loadgen_cpu_max_pct'])} % |"
        )
    ours = fan.get("wsconsole", {})
    if ours.get("bounded_per_s") is not None:
        lines += ["", "wsconsole against each contender, same run (latency-bounded rate; CPU per "
                      "delivery at 50k/s):", ""]  # fmt: skip
        for name, r in fan.items():
            if name == "wsconsole" or "not_run" in r:
                continue
            lines.append(f"- vs {name}: {_ratio(ours['bounded_per_s'], r['bounded_per_s'])} the "
                         f"rate, {_ratio(ours['equal_cpu_us'], r['equal_cpu_us'])} the CPU")
    lines += ["", "Every step of every repeat (offered and delivered per second, in-time ratio, "
                  "p50/p99/p99.9, CPU of the servers and of the load generator) is in "
                  "benchmarks.json.", ""]  # fmt: skip
    return lines


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or not b:
        return "-"
    return f"{a / b:.2f}x"


def _capacity(cap: dict[str, Any]) -> list[str]:
    lines = ["## Handshakes and idle connections (one node, heartbeats on)", ""]
    if "not_run" in cap:
        return [*lines, "Not run: " + cap["not_run"].replace("\n", " / "), ""]
    ping = cap["runs"][0].get("ping_interval_s") if cap.get("runs") else None
    lines += [
        f"{_n(cap['connections'])} connections opened by the load generator (2 processes), "
        "each its own user (a token in the URL) and source address 127.x.y.z, each joining a "
        f"room (counted when `joined` arrives); held through pings every {_n(ping)} s.",
        "",
        "| held open after the hold | handshakes/s (median) | spread | time to open all "
        "| node CPU µs per handshake | node RSS | RSS per connection | spread |",
        "|---|---|---|---|---|---|---|---|",
        f"| {_n(cap['held'])} | {_n(cap['opened_per_s'])} "
        f"| {_spread(cap['opened_per_s_spread'], 0)} | {_n(cap['open_s'], 2)} s "
        f"| {_n(cap.get('handshake_cpu_us'))} "
        f"| {_n(cap['node_rss_mb'])} MB "
        f"| {_n(cap['rss_per_conn_kib'], 2)} KiB | {_spread(cap['rss_per_conn_kib_spread'], 2)} |",
        "",
    ]
    failed = [r for r in cap.get("runs", []) if r.get("failed")]
    if failed:
        lines += [f"Failed to open (median): {_n(cap.get('failed'))}; joins retried after "
                  f"`broker_unavailable`: {_n(cap.get('join_retries'))}; first error: "
                  + str(failed[0]["first_error"]).replace("\n", " / "), ""]  # fmt: skip
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
    if win.get("most_frames_per_s") is not None:
        lines += [
            "",
            f"The most it takes: {_n(win['most_frames_per_s'])} frames/s (lag p99 "
            f"{_n(win['most_lag_p99_ms'])} ms) with {_n(win.get('most'))} frames sent as fast as "
            f"it reads them; a plain asyncio `websockets` client reading and parsing the same "
            f"frames from the same server, same run: {_n(win['plain_client_frames_per_s'])} "
            f"frames/s ({_n(win['of_plain_client'], 2)}x). CPU per frame meanwhile (the whole "
            f"process, the window's painting included): {_n(win.get('most_cpu_us_per_frame'))} "
            f"µs, the plain client's {_n(win.get('plain_client_cpu_us_per_frame'))} µs.",
        ]
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


def _verdict(ok: bool, detail: str) -> str:
    return f"{'met' if ok else 'missed'}: {detail}"


def _profiles(profiles: dict[str, Any], title: str) -> list[str]:
    lines = [f"## {title}", "",
             "py-spy samples of one process on each hot path (samples holding the GIL only: a loop "
             "waiting for I/O is not counted); the share of the samples in which a function "
             "was on the stack (inclusive) and at the top (self).", ""]  # fmt: skip
    for name, prof in profiles.items():
        if "not_run" in prof:
            lines += [f"- {name}: not run: {prof['not_run']}"]
            continue
        inclusive = ", ".join(f"{name} {pct:g} %" for pct, name in prof["inclusive"][:8])
        own = ", ".join(f"{name} {pct:g} %" for pct, name in prof["self"][:6])
        lines += [f"- **{name}** ({prof.get('load')}; {_n(prof['samples'])} samples): "
                  f"inclusive: {inclusive}; self: {own}."]  # fmt: skip
    lines.append("")
    return lines


def _pressure_verdicts(pr: dict[str, Any]) -> list[tuple[str, str]]:
    """TARGETS[2] (4x the bounded rate) and [3] (a slow subscriber) from `pressure`."""
    over, slow, base = pr.get("overload_step"), pr.get("slow_step"), pr.get("baseline_step")
    out = []
    if over:
        rss, p99 = over["node_rss_peak_mb"], over["p99_ms"]
        ok = rss < 150 and p99 is not None and p99 < 100
        delivered = over.get("delivered_of_acked", over["delivered_ratio"])
        out.append((TARGETS[2], _verdict(ok, f"node RSS peak {rss:.0f} MB, p99 {_n(p99)} ms "
                                             f"at {_n(over['offered_per_s'])} deliveries/s "
                                             f"offered, {_refused(over)} publishes refused, "
                                             f"{_n(delivered, 3)} of the acknowledged "
                                             "delivered")))  # fmt: skip
    else:
        out.append((TARGETS[2], "not measured"))
    if slow and base and slow["p99_ms"] is not None and base["p99_ms"] is not None:
        ok = slow["p99_ms"] <= 1.2 * base["p99_ms"] and (slow["delivered_ratio"] or 0) >= 0.999
        rounds = len(pr.get("rounds", ())) or 1
        out.append((TARGETS[3], _verdict(ok, f"the others' p99 {_n(slow['p99_ms'])} ms with "
                                             f"{pr['slow_subscribers']} paused vs "
                                             f"{_n(base['p99_ms'])} ms with every subscriber "
                                             f"reading (same cluster, median of {rounds} "
                                             "interleaved rounds), "
                                             f"{_n(slow['delivered_ratio'], 4)} delivered")))
    else:
        out.append((TARGETS[3], "not measured"))
    return out


def _refused(step: dict[str, Any]) -> str:
    """The refused publishes of a step, by error code ("0" when none)."""
    refused = step.get("refused") or {}
    return ", ".join(f"{_n(v)} {k}" for k, v in refused.items()) or "0"


def _pressure(pr: dict[str, Any]) -> list[str]:
    lines = ["## Backpressure (wsconsole)", ""]
    if "not_run" in pr:
        return [*lines, f"Not run: {pr['not_run']}", ""]
    cap = pr.get("max_buffered", 1 << 20)
    lines += [
        "The fan-out setup in one cluster: the step of equal load (the CPU comparison's) "
        f"with every one of the {_n(pr['subscribers'])} subscribers reading, then with "
        f"{pr['slow_subscribers']} of them paused (the load generator stops reading their "
        f"sockets; other ones each round), {len(pr.get('rounds', ())) or 1} rounds "
        "interleaved (medians of the rounds by p99 below; every round in benchmarks.json), "
        "then 4x the latency-bounded rate. The nodes cap each connection's send buffer "
        f"at {cap // 1024:,} KiB here (the default is 1 MiB: a paused reader would take "
        "minutes to fill it at these rates); a client over it gets `lagging` and a 1013 "
        "close. A node whose deliveries run more than `--max-delay` (0.5 s, the default) "
        "behind refuses publishes with `broker_busy` (docs/protocol.md \"Backpressure\"); "
        "the load generator does not re-send them. Delivered = the share of the acknowledged "
        "publishes' deliveries that arrived at all the subscribers, the paused ones and those "
        "cut as lagging included (told so, not silent losses: they would recover from history "
        "on a rejoin, which the load generator does not make); p50/p99 = the subscribers that "
        "kept up (not told `lagging`); lagging = the nodes' count of `lagging` notices (a "
        "paused client cannot read its own).",
        "",
        "| step | offered deliveries/s | delivered | p50 ms | p99 ms | node RSS peak MB "
        "| lagging | refused publishes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = (("every subscriber reading (the step before each paused one)",
             pr.get("baseline_step")),
            (f"{pr['slow_subscribers']} paused subscribers (the others)", pr.get("slow_step")),
            ("the ramp's step of that load (another cluster, for reference)",
             pr.get("ramp_step")),
            (f"4x the {'bounded rate' if pr['bounded_rate'] else 'first step (none in bound)'}"
             f" ({_n(pr['overload_rate'])} publishes/s)",
             pr.get("overload_step")))  # fmt: skip
    for label, st in rows:
        if not st:
            continue
        delivered = st.get("delivered_of_acked", st["delivered_ratio"])
        lagging = st.get("node_lagging", st.get("lagging"))
        lines.append(f"| {label} | {_n(st['offered_per_s'])} | {_n(delivered, 4)} "
                     f"| {_n(st['p50_ms'])} | {_n(st['p99_ms'])} "
                     f"| {_n(st.get('node_rss_peak_mb'))} | {_n(lagging)} "
                     f"| {_refused(st)} |")  # fmt: skip
    lines.append("")
    return lines


def verdicts(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """Each target with "met: ...", "missed: ..." (the gap in figures) or "not measured"."""
    out: list[tuple[str, str]] = []
    fan = doc.get("fanout", {})
    ours, node = fan.get("wsconsole", {}), fan.get("node-socketio", {})
    rate, node_rate = ours.get("bounded_per_s"), node.get("bounded_per_s")
    if rate is not None and node_rate is not None:
        detail = f"{_n(rate)} vs {_n(node_rate)} deliveries/s"
        if node_rate:
            detail += f" ({rate / node_rate:.2f}x)"
        out.append((TARGETS[0], _verdict(rate >= 3 * node_rate and rate > 0, detail)))
    else:
        out.append((TARGETS[0], "not measured"))
    cpu, node_cpu = ours.get("equal_cpu_us"), node.get("equal_cpu_us")
    if cpu is not None and node_cpu:
        out.append((TARGETS[1], _verdict(cpu <= 0.5 * node_cpu, f"{cpu:.2f} vs {node_cpu:.2f} "
                                         f"µs ({cpu / node_cpu:.2f}x)")))  # fmt: skip
    else:
        out.append((TARGETS[1], "not measured"))
    out += _pressure_verdicts(doc.get("pressure", {}))
    cap = doc.get("capacity", {})
    per_s, held = cap.get("opened_per_s"), cap.get("held")
    if per_s is not None and held is not None:
        detail = f"{_n(per_s)}/s, {_n(held)} of {_n(cap.get('connections'))} held"
        ok = per_s >= 2500 and held >= 10_000
        out.append((TARGETS[4], _verdict(ok, detail)))
    else:
        out.append((TARGETS[4], "not measured"))
    kib = cap.get("rss_per_conn_kib")
    out.append((TARGETS[5], "not measured" if kib is None else
                _verdict(kib <= 10, f"{kib:.2f} KiB")))  # fmt: skip
    win = doc.get("window", {})
    share = win.get("of_plain_client")
    out.append((TARGETS[6], "not measured" if share is None else _verdict(
        share >= 0.8, f"{_n(win['most_frames_per_s'])} vs {_n(win['plain_client_frames_per_s'])}"
                      f" frames/s ({share:.2f}x)")))  # fmt: skip
    step = win.get("rates", {}).get("40000")
    if step:
        worst = step["lag_p99_ms_spread"]["max"]
        ok = step["kept_up"] and worst is not None and worst < 30
        out.append((TARGETS[7], _verdict(ok, f"lag p99 {_n(worst)} ms in the worst repeat, "
                                             f"kept up: {step['kept_up']}")))  # fmt: skip
    else:
        out.append((TARGETS[7], "not measured"))
    rss = win.get("rss_mb")
    held_frames = win.get("frames_held")
    if rss is not None and held_frames and held_frames >= 1_000_000:
        out.append((TARGETS[8], _verdict(rss < 250, f"{rss:.0f} MB process RSS, of which "
                                          f"{win['rss_delta_mb']:.0f} MB for the frames")))
    else:
        out.append((TARGETS[8], "not measured"))
    added = (doc.get("proxy", {}).get("added_p50_ms") or {}).get("median")
    out.append((TARGETS[9], "not measured" if added is None else
                _verdict(added <= 1.0, f"+{added:.3f} ms p50")))  # fmt: skip
    return out


def _timeline(tl: dict[str, Any]) -> list[str]:
    lines = ["## Timeline scroll (offscreen Qt, the real panel)", ""]
    if "not_run" in tl:
        return [*lines, f"Not run: {tl['not_run']}", ""]
    lines += [
        f"{_n(tl['lanes'])} swarm clients with {tl['minutes']:g} minutes of history "
        f"({_n(tl['events'])} state changes and pongs, fed as the swarm's batches), every "
        "group expanded; one repaint of the viewport at each scroll position from the top "
        "lane to the bottom one (the cost of a frame while scrolling).",
        "",
        "| window | repaint p50 ms | p99 ms | max ms | p50 spread |",
        "|---|---|---|---|---|",
    ]
    for label, key in (("30 s", "paint_30s"), ("15 min", "paint_15min")):
        r = tl[key]
        lines.append(f"| {label} | {_n(r['p50_ms']['median'], 2)} | {_n(r['p99_ms']['median'], 2)}"
                     f" | {_n(r['max_ms']['median'], 2)} | {_spread(r['p50_ms'], 2)} |")
    lines += [
        "",
        f"Every group collapsed to its band: {_n(tl['paint_bands_ms']['median'], 2)} ms. "
        f"One batch in which every client changes state at once (a node kill) is applied in "
        f"{_n(tl['kill_batch_ms']['median'], 1)} ms.",
        "",
    ]
    return lines


def _history(doc: dict[str, Any]) -> list[str]:
    """The figures before issue 18's changes (history.json) next to this run's."""
    try:
        before = json.loads(HISTORY.read_text())["before_issue_18"]
    except (OSError, ValueError, KeyError):
        return []
    lines = [
        "## Before and after (issue 18)",
        "",
        f"Before: {before['when']}, load average {before['loadavg']}, the same benchmarks and "
        f"load generator with the code as it was ({before['code']}).",
        "",
        "| figure | before | after |",
        "|---|---|---|",
    ]
    fan = doc.get("fanout", {})
    for name, figures in before["fanout"].items():
        after = fan.get(name, {})
        for key, label in (("bounded_per_s", "latency-bounded deliveries/s"),
                           ("equal_cpu_us", "CPU µs per delivery at 50k/s"),
                           ("equal_p99_ms", "p99 ms at 50k/s"),
                           ("saturation_per_s", "saturation deliveries/s")):  # fmt: skip
            lines.append(f"| {name}: {label} | {_n(figures.get(key))} | {_n(after.get(key))} |")
    cap = doc.get("capacity", {})
    for key, label in (("opened_per_s", "handshakes/s"), ("handshake_cpu_us",
                       "node CPU µs per handshake"), ("rss_per_conn_kib", "KiB per idle "
                       "connection")):  # fmt: skip
        lines.append(f"| {label} | {_n(before['capacity'].get(key))} | {_n(cap.get(key))} |")
    win = doc.get("window", {})
    for key, label in (("max_frames_per_s", "window: most frames/s kept up with"),
                       ("rss_mb", "window: RSS with 1,000,000 frames, MB")):  # fmt: skip
        lines.append(f"| {label} | {_n(before['window'].get(key))} | {_n(win.get(key))} |")
    lines += ["", *before.get("notes", []), ""]
    if before.get("profiles"):
        lines += _profiles(before["profiles"], "Profiles before issue 18")
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
        f"{mach.get('loadavg_at_start')}"
        + (f" (each command's: {'; '.join(map(str, meta['loadavg_per_run']))})"
           if meta.get("loadavg_per_run") else ""),
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
    if "pressure" in doc:
        lines += _pressure(doc["pressure"])
    if "capacity" in doc:
        lines += _capacity(doc["capacity"])
    if "storm" in doc:
        lines += _storm(doc["storm"])
    if "window" in doc:
        lines += _window(doc["window"])
    if "timeline" in doc:
        lines += _timeline(doc["timeline"])
    if "proxy" in doc:
        lines += _proxy(doc["proxy"])
    if "persistence" in doc:
        lines += _persistence(doc["persistence"])
    if "profiles" in doc:
        lines += _profiles(doc["profiles"], "Profiles of the hot paths")
    lines += _history(doc)
    notes = Path(__file__).with_name("NOTES.md")
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    return "\n".join(lines) + "\n"
