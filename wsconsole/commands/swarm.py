"""`wsconsole swarm URL`: many simulated clients with loss, duplicate and order accounting.

`--stack FILE` puts the clients on the user's own app instead: they follow the stack file's
client recipe (auth, join, publish, how a delivery is recognised) and the summary counts
lost, duplicated and out-of-order messages and latency per client, per node and in total
with no sequence numbers of ours. Without a URL the stack is started under the harness for
the run (and stopped after); with one, the swarm loads the app there.

Prints a stats line every second and a summary at the end (`--json`: {"event": "stats", ...}
lines and one {"event": "summary", ...}). Exit 0 when every client got in, every publish was
acknowledged and reached every subscriber exactly once and in order; 1 otherwise; 2 for bad
usage. SIGINT/SIGTERM end the load early (a second one skips the settle phase) and the
summary is still printed: once the clients are stopped further signals are ignored while it
is written; nothing is left running.

The heartbeat lab: `--pongs-share S` runs that share (0..1) of the clients with `--pongs MODE`
(default off: they stop answering the server's pings), so the summary's `dead_*` figures say
how long the server keeps a client that went silent. For the window: `--fleet` adds a
`fleet` line every quarter second with the clients' state changes and heartbeat marks (one
line however many events), and `--control` reads JSON commands on stdin, one per line, each
answered by a `control` line: {"cmd": "pongs", "share": S, "pongs": MODE, "id": N} and
{"cmd": "frames", "clients": [...], "since": WALL, "until": WALL, "after": N, "id": N} (the
kept frames of those clients in that time numbered above `after`, a bounded page: `more`
says to ask again after the last number).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from wsconsole.app import options
from wsconsole.app.options import OptionsError
from wsconsole.commands.output import Output, fail_usage
from wsconsole.core.heartbeat import PongPolicy
from wsconsole.core.signals import stop_on_signals
from wsconsole.harness.clusterconfig import (
    DEMO_BACKOFF_CAP,
    DEMO_BACKOFF_INITIAL,
    DEMO_BACKOFF_JITTER,
    DEMO_PING_INTERVAL,
    DEMO_PING_TIMEOUT,
)

HELP = "Put many simulated clients on a server and account for every message."

# The connection flags the swarm shares with `connect` (declared in app/options.py) and its
# own defaults for them: the demo timings preset (DESIGN.md), so reconnects and heartbeats
# show in seconds, and the --pongs-share clients playing dead unless told otherwise.
CONNECTION = ("token", "backoff_initial", "backoff_factor", "backoff_cap", "backoff_jitter",
              "ping_interval", "ping_timeout", "pongs")
DEFAULTS: dict[str, Any] = {
    "backoff_initial": DEMO_BACKOFF_INITIAL, "backoff_cap": DEMO_BACKOFF_CAP,
    "backoff_jitter": DEMO_BACKOFF_JITTER, "ping_interval": DEMO_PING_INTERVAL,
    "ping_timeout": DEMO_PING_TIMEOUT, "pongs": PongPolicy("off")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the swarm's flags."""
    parser.add_argument("url", nargs="?",
                        help="ws:// or wss:// URL of a harness-protocol server (with --stack: "
                             "of the app; none: start the stack here for the run)")
    parser.add_argument("--stack", metavar="FILE",
                        help="a stack file: its clients follow its recipe (docs/stacks.md)")
    parser.add_argument("--join-grace", type=float, default=0.5, metavar="S",
                        help="with --stack: a join counts after S seconds (0.5)")
    parser.add_argument("--clients", type=int, default=10, help="simulated clients (10)")
    parser.add_argument("--rooms", type=int, default=1, help="rooms to spread them over (1)")
    parser.add_argument("--rate", type=float, default=10.0, help="publishes/s in total (10)")
    parser.add_argument("--duration", type=float, default=10.0, help="load seconds (10)")
    parser.add_argument("--ramp", type=float, default=0.0, help="seconds to start all clients")
    parser.add_argument(
        "--settle", type=float, default=5.0, help="max seconds to wait for acks after the load (5)"
    )
    parser.add_argument(
        "--wait-joined",
        type=float,
        metavar="S",
        help="start publishing once every client joined (wait at most S seconds)",
    )
    parser.add_argument(
        "--token-user", default="swarm", metavar="PREFIX", help="users PREFIX-0001, ... (swarm)"
    )
    auth = parser.add_mutually_exclusive_group()
    options.add_arguments(auth, ("token",), help={"token": "one token for every client"})
    auth.add_argument(
        "--secret-env",
        metavar="VAR",
        help="environment variable holding the JWT secret: one token per user",
    )
    parser.add_argument("--payload", type=int, default=0, help="padding bytes per message")
    parser.add_argument(
        "--same-address",
        action="store_true",
        help="connect every client from 127.0.0.1 (default: its own 127.x.y.z on Linux)",
    )
    options.add_arguments(parser, CONNECTION[1:], defaults=DEFAULTS, help={
        "pongs": "how the --pongs-share clients answer the server's pings: auto, off (play "
                 "dead), delay:MS or wrong[:TEXT]"})
    parser.add_argument("--pongs-share", type=float, default=0.0, metavar="S",
                        help="this share (0..1) of the clients answers pings per --pongs")
    parser.add_argument("--fleet", action="store_true",
                        help="with --json: the clients' state changes, batched, for the window")
    parser.add_argument("--control", action="store_true",
                        help="read JSON commands on stdin (pongs, frames), for the window")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    split = parser.add_argument_group(
        "swarm workers", "split the clients over worker processes, here or on agents' hosts; "
                         "the accounting merges exactly (docs/scale-out.md)")
    split.add_argument("--workers", type=int, metavar="N",
                       help="run the clients in N worker processes (with --agents: spread "
                            "round-robin over those agents; default one per agent)")
    split.add_argument("--agents", metavar="A,B",
                       help="run the workers on these agents (`wsconsole agent` names)")
    split.add_argument("--agents-broker", metavar="URL",
                       help="the broker the agents share (with --agents; without: a private "
                            "one is started for local workers)")
    split.add_argument("--agents-secret-env", metavar="VAR",
                       help="environment variable holding the agents' shared secret")


def _config(args: argparse.Namespace) -> Any:
    """The SwarmConfig the command line asks for; SwarmConfigError or OptionsError."""
    from wsconsole.app.targets import backoff_policy
    from wsconsole.harness.stackfile import StackError, load_stack
    from wsconsole.swarm.config import SwarmConfig, SwarmConfigError

    stack = None
    if args.stack is not None:
        try:
            stack = load_stack(args.stack)
        except StackError as exc:
            raise SwarmConfigError(str(exc)) from None
    elif args.url is None:
        raise SwarmConfigError("a URL is needed (or --stack FILE)")
    secret = None
    if args.secret_env:
        secret = os.environ.get(args.secret_env)
        if not secret:
            raise SwarmConfigError(f"environment variable {args.secret_env} is not set")
    conn = options.from_args(args, CONNECTION)  # the URL is SwarmConfig's to check
    config = SwarmConfig(
        url=args.url or "ws://127.0.0.1:1/",  # the stack's own, once it runs
        stack=stack,
        join_grace=args.join_grace,
        clients=args.clients,
        rooms=args.rooms,
        rate=args.rate,
        duration=args.duration,
        ramp=args.ramp,
        settle=args.settle,
        token_user=args.token_user,
        token=conn.token,
        secret=secret,
        payload=args.payload,
        distinct_addresses=not args.same_address,
        backoff=backoff_policy(conn),
        ping_interval=conn.ping_interval,
        ping_timeout=conn.ping_timeout,
        wait_joined=args.wait_joined,
        pongs_share=args.pongs_share,
        pongs=conn.pongs,
    )
    config.validate()
    return config


def _human_stats(s: dict[str, Any]) -> str:
    p99 = s.get("p99_latency_ms")
    latency = f"p99 {p99:.1f} ms" if p99 is not None else "p99 -"
    errors = sum(s.get("errors", {}).values())
    return (
        f"[{s['t']:6.1f}s {s.get('phase', '')}] connected {s['connected']}/{s['clients']}"
        f"  sent {s['sent']}  acked {s['acknowledged']}  delivered {s['delivered']}"
        f"  dup {s['duplicated']}  ooo {s['out_of_order']}  {latency}"
        f"  reconnects {s['reconnects']}  errors {errors}"
    )


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def slice_lines(s: dict[str, Any]) -> list[str]:
    """A stack swarm's figures per node and per fault window, one line each."""
    lines = []
    for title, rows in (("node", s.get("per_node", {}).items()),
                        ("window", ((f"{w['from_s']:g}s {w['label']}", w)
                                    for w in s.get("per_window", [])))):
        for name, row in rows:
            lines.append(
                f"  {title} {name}: owed {row['owed']}  delivered {row['delivered']}"
                f"  lost {row['lost']} (missed {row['missed']})  dup {row['duplicated']}"
                f"  ooo {row['out_of_order']}"
                f"  p50 {_ms(row['p50_latency_ms'])}  p99 {_ms(row['p99_latency_ms'])} ms")
    return lines


def _human_summary(s: dict[str, Any]) -> str:
    def ms(key: str) -> str:
        return _ms(s.get(key))

    errors = ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items())) or "none"
    if "acknowledged" in s:
        sent = (f"  sent {s['sent']}  acknowledged {s['acknowledged']}"
                f"  unacknowledged {s['unacknowledged']}")
    else:  # a user's app: no acks, but what could not be sent and what reached nobody
        sent = (f"  sent {s['sent']}  unsent (client away) {s['unsent']}"
                f"  reached nobody {s['undelivered']}"
                + (f"  sessions recovered {s['recovered_sessions']}"
                   if s.get("recovered_sessions") else ""))
    return "\n".join(
        [
            f"summary after {s['t']:.1f} s, {s['clients']} clients"
            f" ({s['never_connected']} never connected, {s['disconnected_at_end']} down at end)",
            sent,
            f"  delivered {s['delivered']} of {s['expected']} owed  lost {s['lost']}"
            + (f" (and {s['announced_lost']} the server said would not come)"
               if s.get("announced_lost") else "")
            + f"  duplicated {s['duplicated']}  out of order {s['out_of_order']}",
            f"  latency ms p50 {ms('p50_latency_ms')}  p95 {ms('p95_latency_ms')}"
            f"  p99 {ms('p99_latency_ms')}  max {ms('max_latency_ms')}",
            f"  reconnects {s['reconnects']}  time-to-reconnect ms p50 {ms('reconnect_p50_ms')}"
            f"  p99 {ms('reconnect_p99_ms')}  max {ms('reconnect_max_ms')}"
            f"  spread {ms('reconnect_spread_ms')}",
            f"  errors: {errors}",
            *_lab_lines(s),
            *slice_lines(s),
            *worker_lines(s),
        ]
    )


def worker_lines(s: dict[str, Any]) -> list[str]:
    """A split swarm's workers, one line each, and which parts are incomplete."""
    lines = [f"  worker {w['part']} on {w['host'] or '?'} ({w['where']}): clients "
             f"{w['first'] + 1}-{w['first'] + w['clients']}  sent {w['sent']}  delivered "
             f"{w['delivered']}  {w['state']}"
             + (f"  ({w['missing_batches']} batches missing)" if w["missing_batches"] else "")
             + (f"  {w['problem']}" if w["problem"] else "")
             for w in s.get("workers", [])]
    if s.get("incomplete"):
        lines.append(f"  INCOMPLETE: {', '.join(s['incomplete'])}: their clients' records "
                     "up to then are counted, the rest is missing")
    return lines


def _lab_lines(s: dict[str, Any]) -> list[str]:
    """The heartbeat lab's figures, when some clients' pongs were shaped."""
    if not s.get("dead_drops") and s.get("dead_kept_max_ms") is None:
        return []

    def ms(key: str) -> str:
        value = s.get(key)
        return "-" if value is None else f"{value:.0f}"

    return [f"  heartbeat lab: the server dropped silent clients {s['dead_drops']} time(s),"
            f" after ms p50 {ms('dead_drop_p50_ms')} max {ms('dead_drop_max_ms')};"
            f" the longest one stayed connected {ms('dead_kept_max_ms')} ms"]


def clean(summary: dict[str, Any]) -> bool:
    """The swarm's own verdict: every client got in, every publish was acknowledged, every
    acknowledged message reached every subscriber once and in order (and, split over
    workers, every worker's records arrived)."""
    return not (
        summary.get("incomplete")
        or summary["never_connected"]
        or summary["lost"]
        or summary["duplicated"]
        or summary["out_of_order"]
        or summary.get("unacknowledged", 0)
    )


def _human_stats_app(s: dict[str, Any]) -> str:
    p99 = s.get("p99_latency_ms")
    latency = f"p99 {p99:.1f} ms" if p99 is not None else "p99 -"
    return (
        f"[{s['t']:6.1f}s {s.get('phase', '')}] connected {s['connected']}/{s['clients']}"
        f"  sent {s['sent']}  delivered {s['delivered']}  dup {s['duplicated']}"
        f"  ooo {s['out_of_order']}  {latency}  reconnects {s['reconnects']}"
    )


async def _run(config: Any, out: Output, own_stack: bool = False, fleet: bool = False,
               control: bool = False) -> dict[str, Any]:
    """Run the swarm (on a stack started here for the run when `own_stack`)."""
    from wsconsole.harness.cluster import Cluster, ClusterConfig, ClusterError

    if not own_stack:
        return await _swarm(config, out, fleet, control)
    cluster = Cluster(ClusterConfig.for_stack(config.stack))
    out.event("stack", f"starting the stack {config.stack.name}...", name=config.stack.name)
    try:
        await cluster.start()
    except ClusterError as exc:
        await cluster.stop()
        raise SystemExit(f"wsconsole swarm: the stack did not start: {exc}") from None
    try:
        config.url = cluster.app_url
        out.event("stack_ready", f"stack ready at {config.url} (logs {cluster.log_dir})",
                  url=config.url, log_dir=str(cluster.log_dir))
        return await _swarm(config, out, fleet, control)
    finally:
        await cluster.stop()


async def _swarm(config: Any, out: Output, fleet: bool, control: bool) -> dict[str, Any]:
    from wsconsole.swarm.appswarm import AppSwarm
    from wsconsole.swarm.swarm import Swarm

    app = config.stack is not None

    def on_stats(stats: dict[str, Any]) -> None:
        out.event("stats", (_human_stats_app if app else _human_stats)(stats), **stats)

    def on_fleet(batch: dict[str, Any]) -> None:
        out.event("fleet", None, **batch)

    swarm = (AppSwarm if app else Swarm)(
        config, on_stats=on_stats, on_fleet=on_fleet if fleet and out.json_mode else None)
    loop = asyncio.get_running_loop()
    reader = loop.create_task(_controls(swarm, out), name="wsconsole-swarm-control") \
        if control else None
    try:
        with stop_on_signals(swarm.stop):
            return await swarm.run()
    finally:
        if reader is not None:
            reader.cancel()


async def _controls(swarm: Any, out: Output) -> None:
    """Answer the JSON commands read on stdin, one `control` line each (errors included)."""
    import orjson

    from wsconsole.commands.connect import start_stdin_reader
    from wsconsole.swarm.config import SwarmConfigError

    lines: asyncio.Queue[str | None] = asyncio.Queue()
    start_stdin_reader(asyncio.get_running_loop(), lines)
    while (line := await lines.get()) is not None:
        if not line.strip():
            continue
        ident = None
        try:
            command = orjson.loads(line)
            if not isinstance(command, dict):
                raise SwarmConfigError("a command is a JSON object")
            ident = command.get("id")
            reply = swarm.control(command)
            out.event("control", f"control {command.get('cmd')}: done", id=ident, ok=True,
                      **reply)
        except (orjson.JSONDecodeError, SwarmConfigError) as exc:
            out.event("control", f"control: {exc}", id=ident, ok=False, error=str(exc))


def _split_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the swarm-workers flags, before anything starts."""
    if args.workers is None and args.agents is None:
        if args.agents_broker or args.agents_secret_env:
            return "--agents-broker and --agents-secret-env go with --workers or --agents"
        return None
    if args.workers is not None and args.workers < 1:
        return f"--workers must be at least 1, not {args.workers}"
    if args.stack is not None:
        return "--workers/--agents run harness-protocol clients; a --stack swarm runs here"
    if args.fleet or args.control:
        return "--fleet and --control are the window's, for a swarm in one process"
    if args.agents is not None and not [n for n in args.agents.split(",") if n.strip()]:
        return "--agents names one agent or more: --agents A,B"
    if args.agents and not (args.agents_broker and args.agents_secret_env):
        return "--agents needs --agents-broker URL and --agents-secret-env VAR"
    if args.agents_broker and not args.agents_secret_env:
        return "--agents-broker needs --agents-secret-env VAR (the agents' shared secret)"
    if args.agents_secret_env and not os.environ.get(args.agents_secret_env):
        return f"environment variable {args.agents_secret_env} is not set"
    return None


async def _run_split(config: Any, args: argparse.Namespace, out: Output) -> dict[str, Any]:
    """Run the swarm over workers: local processes, or agents' (see swarm/launchers.py)."""
    from wsconsole.swarm.launchers import AgentLauncher, SplitSwarm

    def on_stats(stats: dict[str, Any]) -> None:
        states = [w["state"] for w in stats["workers"]]
        line = f"{_human_stats(stats)}  workers {states.count('running')}/{len(states)}"
        out.event("stats", line, **stats)

    async def split(workers: int, launcher: Any = None) -> dict[str, Any]:
        swarm = SplitSwarm(config, workers, jwt_secret_env=args.secret_env,
                           broker_url=args.agents_broker, secret_env=args.agents_secret_env,
                           launcher=launcher, on_stats=on_stats)
        with stop_on_signals(swarm.stop):
            return await swarm.run()

    if args.agents is None:
        return await split(args.workers)
    from wsconsole.harness.agents import AgentsClient

    names = [name.strip() for name in args.agents.split(",") if name.strip()]
    agents = AgentsClient(args.agents_broker, os.environ[args.agents_secret_env])
    await agents.open()
    try:
        launcher = AgentLauncher(agents, names)
        await launcher.check()
        return await split(args.workers or len(names), launcher)
    finally:
        await agents.close()


def run(args: argparse.Namespace) -> int:
    """Run the swarm; 0 if every message was accounted for, 1 if not, 2 for bad usage."""
    from redis.exceptions import RedisError

    from wsconsole.harness.broker import BrokerError
    from wsconsole.swarm.config import SwarmConfigError

    problem = _split_problem(args)
    if problem:
        return fail_usage(problem)
    try:
        config = _config(args)
    except OptionsError as exc:
        return fail_usage(exc.cli_line())
    except SwarmConfigError as exc:
        return fail_usage(str(exc))
    out = Output(args.json)
    if args.workers is not None or args.agents is not None:
        try:
            summary = asyncio.run(_run_split(config, args, out))
        except SwarmConfigError as exc:
            return fail_usage(str(exc))
        except (OSError, RedisError, TimeoutError, BrokerError) as exc:
            raise SystemExit(f"wsconsole swarm: the broker: {exc or 'no answer'}") from None
    else:
        own_stack = args.stack is not None and not args.url
        summary = asyncio.run(_run(config, out, own_stack, args.fleet, args.control))
    out.event("summary", _human_summary(summary), ok=clean(summary), **summary)
    return 0 if clean(summary) else 1
