"""`wsconsole scenario run|check|list|export`: scenarios from TOML files, with a verdict.

run FILE [--junit FILE] [--report FILE.html] [--json] [--scale F]: starts the cluster the file
describes, puts the swarm on it, performs the timed steps and judges the assertions. Exit 0
when every assertion holds and every step was carried out, 1 otherwise, 2 when the file is
invalid (the message names the line). FILE may also be the name of a shipped scenario
(`wsconsole scenario list`). SIGINT stops the run early (the cluster is still stopped).

export FILE.har [--entry N] [--url URL | --cluster] [-o OUT.toml]: a recorded connection
(from `wsconsole proxy --har-out`, `connect --har-out`, the window or a browser's DevTools)
as a replay scenario that `run` plays against its server (or the demo harness started for
the run) and compares with the recording, waiting for the replies each send waited for.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from wsconsole.app import options
from wsconsole.app.options import OptionsError
from wsconsole.commands.output import Output, fail_usage
from wsconsole.core.signals import stop_on_signals

HELP = "Run chaos scenarios (TOML): cluster, swarm, timed faults, assertions, reports."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare `scenario run`, `scenario check` and `scenario list`."""
    sub = parser.add_subparsers(dest="scenario_command", metavar="ACTION")
    run_p = sub.add_parser("run", help="run a scenario and judge it")
    run_p.add_argument("file", help="scenario TOML file, or the name of a shipped scenario")
    run_p.add_argument("--junit", metavar="FILE", help="write a JUnit XML report")
    run_p.add_argument("--report", metavar="FILE", help="write a self-contained HTML report")
    run_p.add_argument(
        "--scale",
        type=float,
        help="multiply every scheduled time (default: $WSCONSOLE_SCENARIO_SCALE or 1)",
    )
    run_p.add_argument("--json", action="store_true", help="one JSON object per line")
    auth = run_p.add_mutually_exclusive_group()
    options.add_arguments(auth, ("token",), help={
        "token": "for a scenario with url =: one token for every client"})
    auth.add_argument(
        "--secret-env",
        metavar="VAR",
        help="for a scenario with url =: variable holding the server's JWT secret",
    )
    check_p = sub.add_parser("check", help="validate a scenario file without running it")
    check_p.add_argument("file")
    check_p.add_argument("--json", action="store_true")
    list_p = sub.add_parser("list", help="the scenarios shipped with wsconsole")
    list_p.add_argument("--json", action="store_true")
    export_p = sub.add_parser("export", help="a recorded connection (HAR) as a replay scenario")
    export_p.add_argument("har", metavar="FILE.har")
    export_p.add_argument("--entry", type=int, default=0, metavar="N",
                          help="which WebSocket connection of the HAR (0: the first)")
    target = export_p.add_mutually_exclusive_group()
    target.add_argument("--url", help="replay against this URL (default: the recorded one)")
    target.add_argument("--cluster", action="store_true",
                        help="replay against the demo harness, started for the run")
    export_p.add_argument("--timing", choices=["original", "fast"], default="original")
    export_p.add_argument("--wait", type=float, default=2.0, metavar="S",
                          help="how long the replay waits for replies after its last send")
    export_p.add_argument("--with-credentials", action="store_true",
                          help="keep the Cookie and Authorization headers in the file")
    export_p.add_argument("-o", "--output", metavar="FILE.toml", help="write here, not stdout")
    export_p.add_argument("--json", action="store_true")


def _resolve(name: str) -> Path:
    from wsconsole.scenarios.model import shipped_scenarios

    path = Path(name)
    if path.exists() or path.suffix == ".toml" or "/" in name:
        return path
    shipped = shipped_scenarios()
    return shipped.get(name, path)


def _human(event: dict[str, Any]) -> str | None:
    kind = event["event"]
    if kind == "phase":
        phase = event["phase"]
        if phase == "starting":
            return f"scenario {event['name']!r} (time scale {event['scale']:g})"
        if phase == "cluster_ready":
            return f"cluster ready in {event.get('ready_s') or 0:.1f} s at {event['url']}"
        if phase == "replay":
            return f"replay: {event['sends']} message(s) to {event['url']} ({event['timing']})"
        if phase == "swarm":
            return (
                f"swarm: {event['clients']} clients, {event['rooms']} rooms, "
                f"{event['rate']:g} msg/s for {event['duration']:g} s"
            )
        return None
    if kind == "step":
        status = "ok" if event["ok"] else "FAILED"
        return f"[{event['t']:6.1f}s] step {event['label']}: {status} — {event['detail']}"
    if kind == "cluster_event":
        from wsconsole.scenarios.report import _event_label

        label = _event_label({**event, "event": event.get("source")})
        return f"[{event['t']:6.1f}s] {label}" if label else None
    if kind == "stats":
        p99 = event.get("p99_latency_ms")
        return (
            f"[{event['t']:6.1f}s] connected {event['connected']}/{event['clients']}"
            f"  sent {event['sent']}  delivered {event['delivered']}"
            f"  reconnects {event['reconnects']}"
            f"  p99 {'-' if p99 is None else f'{p99:.1f} ms'}"
        )
    if kind == "summary" and "matched" in event:
        first = event.get("first_divergence")
        where = "none" if first is None else f"at reply {first}"
        late = event.get("reply_timeouts")
        return (f"replay: sent {event['sent']}, received {event['received']} of "
                f"{event['expected']} recorded, {event['matched']} equal, divergence {where}"
                + (f", {late} send(s) went out without their replies" if late else "")
                + (f", {event['error']}" if event.get("error") else ""))
    if kind == "summary" and "per_window" in event:  # a stack's swarm: where losses were
        from wsconsole.commands.swarm import slice_lines

        return "\n".join([f"messages: sent {event['sent']}  owed {event['expected']}  "
                           f"lost {event['lost']}  missed {event['missed']}  "
                           f"duplicated {event['duplicated']}", *slice_lines(event)])
    if kind == "assertion":
        word = "PASS" if event["passed"] else "FAIL"
        return f"{word} {event['name']}  (expect {event['expect']}; {event['detail']})"
    if kind == "error":
        return f"error: {event['detail']}"
    if kind == "result":
        failed = sum(1 for a in event["assertions"] if not a["passed"])
        bad_steps = sum(1 for s in event["steps"] if not s["ok"])
        word = "PASS" if event["passed"] else "FAIL"
        total = len(event["assertions"]) + event.get("not_measured", 0)
        unmeasured = f" ({event['not_measured']} not measured)" if event.get("not_measured") else ""
        return (
            f"result: {word} — {len(event['assertions']) - failed}/{total} assertions held"
            f"{unmeasured}, {bad_steps} step(s) failed, {event['elapsed']:.1f} s"
        )
    return None


async def _run(scenario: Any, scale: float, out: Output, auth: dict[str, Any]) -> Any:
    from wsconsole.scenarios.runner import ScenarioRunner

    def on_event(event: dict[str, Any]) -> None:
        fields = {k: v for k, v in event.items() if k != "event"}
        if event["event"] == "summary" and not out.json_mode and \
                "matched" not in event and "per_window" not in event:
            return  # the harness swarm's summary is in the assertions and the report
        if event["event"] == "result" and out.json_mode:
            fields.pop("summary", None)
        human = _human(event)
        if human is None and not out.json_mode:
            return
        out.event(event["event"], human, **fields)

    runner = ScenarioRunner(scenario, scale=scale, on_event=on_event, **auth)
    # Ignored once the run is over: a window's second Stop must not kill the child before it
    # writes its reports.
    with stop_on_signals(runner.stop):
        return await runner.run()


def run(args: argparse.Namespace) -> int:
    """Dispatch run / check / list."""
    from wsconsole.scenarios.model import ScenarioError, load_scenario, shipped_scenarios
    from wsconsole.scenarios.runner import scale_from_env

    action = getattr(args, "scenario_command", None)
    if action is None:
        return fail_usage("scenario needs an action: run FILE, check FILE or list")
    out = Output(args.json)
    if action == "export":
        return _export(args, out)
    if action == "list":
        for name, path in sorted(shipped_scenarios().items()):
            try:
                title = load_scenario(path).name
            except ScenarioError as exc:
                title = f"(invalid: {exc.reason})"
            out.event("scenario", f"{name:28} {title}", name=name, path=str(path), title=title)
        return 0
    try:
        scenario = load_scenario(_resolve(args.file))
    except ScenarioError as exc:
        if args.json:
            out.event("invalid", None, path=exc.path, line=exc.line, reason=exc.reason)
        return fail_usage(str(exc))
    if action == "check":
        out.event(
            "valid",
            f"{scenario.path}: valid — {len(scenario.steps)} steps, "
            f"{len(scenario.assertions)} assertions",
            path=scenario.path,
            name=scenario.name,
            steps=len(scenario.steps),
            assertions=len(scenario.assertions),
        )
        return 0
    try:
        scale = args.scale if args.scale is not None else scale_from_env()
    except ValueError as exc:
        return fail_usage(str(exc))
    if not scale > 0:
        return fail_usage(f"--scale must be a positive number, not {scale}")
    for target in (args.junit, args.report):
        if target is not None and not Path(target).resolve().parent.is_dir():
            return fail_usage(f"cannot write {target}: its directory does not exist")
    try:
        auth: dict[str, Any] = {"token": options.from_args(args, ("token",)).token}
    except OptionsError as exc:
        return fail_usage(exc.cli_line())
    if args.secret_env:
        secret = os.environ.get(args.secret_env)
        if not secret:
            return fail_usage(f"environment variable {args.secret_env} is not set")
        auth["secret"] = secret
    result = asyncio.run(_run(scenario, scale, out, auth))
    from wsconsole.scenarios.report import write_html, write_junit

    try:
        if args.junit:
            write_junit(result, args.junit)
        if args.report:
            write_html(result, args.report)
    except OSError as exc:
        sys.stderr.write(f"wsconsole: cannot write a report: {exc}\n")
        return 1
    return 0 if result.passed else 1


def _export(args: argparse.Namespace, out: Output) -> int:
    """`scenario export`: write a replay scenario for one connection of a HAR."""
    from wsconsole.har import HarError, load_har
    from wsconsole.scenarios.model import ScenarioError, parse_scenario
    from wsconsole.scenarios.replay import scenario_text

    try:
        conns = load_har(args.har)
    except HarError as exc:
        return fail_usage(str(exc))
    if not 0 <= args.entry < len(conns):
        return fail_usage(f"--entry {args.entry}: {args.har} has {len(conns)} WebSocket "
                          f"connection(s), numbered 0..{len(conns) - 1}")
    conn = conns[args.entry]
    if not conn.sent:
        return fail_usage(f"connection {args.entry} of {args.har} sent nothing to replay")
    text = scenario_text(conn, url=args.url, timing=args.timing, wait=args.wait,
                         with_credentials=args.with_credentials, cluster=args.cluster)
    try:
        scenario = parse_scenario(text, args.output or "the exported scenario")
    except ScenarioError as exc:
        return fail_usage(f"cannot export {conn.url}: {exc.reason}")
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        return fail_usage(f"cannot write {args.output}: {exc}")
    assert scenario.replay is not None
    out.event("exported", f"{args.output}: {scenario.load_text()}, "
              f"{len(scenario.replay.expects)} recorded replies", path=args.output,
              url=scenario.url, sends=len(scenario.replay.sends),
              expects=len(scenario.replay.expects))
    return 0
