"""`wsconsole harness`: run the local cluster in the foreground and break it from stdin.

`--stack FILE` runs the user's own nodes (a stack file, docs/stacks.md) instead of ours, and
`--node-cmd 'CMD'` the one-line case (CMD run by /bin/sh with `{port}` and friends, ready
when its port accepts); every operation works on them the same way.

Prints a ready event (the URL, every node's port/PID/metrics URL, the broker, a token for a
test user), then node and broker events as they happen and a stats line every
`--stats-interval` seconds. Commands are read from stdin, one per line (see harness/shell.py;
`help` lists them). SIGINT, SIGTERM or `quit` drain the nodes and stop every process started.

End of stdin: at a terminal (Ctrl-D) it means quit. On a pipe or /dev/null it only means no
more commands: the harness keeps running until SIGINT/SIGTERM, so `wsconsole harness &` or a
service manager does not stop it at once. `--exit-on-eof` makes any end of stdin a quit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
from typing import Any

from wsconsole.commands.output import Output, fail_usage
from wsconsole.core.signals import stop_on_signals
from wsconsole.harness.cluster import (
    DEMO_PING_INTERVAL,
    DEMO_PING_TIMEOUT,
    FLAVOURS,
    PING_INTERVAL,
    PING_TIMEOUT,
    STICKY_MODES,
    Cluster,
    ClusterConfig,
    ClusterError,
    Limits,
)
from wsconsole.harness.nodelog import stamped
from wsconsole.harness.shell import USAGE, CommandError, Quit, execute, help_event, parse
from wsconsole.harness.stackfile import Stack
from wsconsole.harness.stats import ClusterSample

HELP = "Run the local multi-node harness (broker, nodes, balancer) and control it from stdin."

TOKEN_USER = "tester"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The harness flags: cluster shape, timings, and every node limit."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "stdin commands, one per line:\n  " + "\n  ".join(USAGE.values())
    add = parser.add_argument
    own = parser.add_mutually_exclusive_group()
    own.add_argument("--stack", metavar="FILE",
                     help="run your own nodes as a stack file describes them (docs/stacks.md)")
    own.add_argument("--node-cmd", metavar="CMD",
                     help="run your own node: CMD with {port} {id} {redis_url}, via /bin/sh")
    add("--nodes", type=int, metavar="N",
        help="number of nodes (default 3; a stack's own count)")
    add("--port", type=int, default=0, metavar="P", help="public balancer port (default: free)")
    add("--redis", metavar="URL", help="use this Redis/Valkey instead of starting one")
    add("--data-dir", metavar="DIR",
        help="the broker's append-only file, kept across runs (default: a temporary directory)")
    add("--broker-ephemeral", action="store_true",
        help="keep the broker's state in memory only: a broker restart is a reset")
    add("--broker-cluster", type=int, default=0, metavar="N",
        help="run our own Valkey Cluster of N shards (a primary and a replica each) as the "
             "broker, with sharded pub/sub; `shard ...` commands break it")
    add("--sticky", choices=STICKY_MODES, default="ip", help="balancer affinity (default ip)")
    add("--flavour", choices=FLAVOURS, default="ws",
        help="node kind: ws (harness protocol) or socketio (python-socketio); default ws")
    add(
        "--demo-timings",
        action="store_true",
        help=f"ping every {DEMO_PING_INTERVAL:g} s, pong timeout {DEMO_PING_TIMEOUT:g} s",
    )
    add("--tls", action="store_true",
        help="serve wss:// (balancer and nodes) with certificates from wsconsole's local CA, "
             "made on first use in the user data folder; the ready event names its file")
    add("--json", action="store_true", help="one JSON object per line")
    add("--ping-interval", type=float, metavar="S", help=f"seconds (default {PING_INTERVAL:g})")
    add("--ping-timeout", type=float, metavar="S", help=f"seconds (default {PING_TIMEOUT:g})")
    add("--stats-interval", type=float, default=1.0, metavar="S",
        help="seconds between stats lines (default 1; 0: none)")  # fmt: skip
    add("--user", default=TOKEN_USER, help=f"user of the ready event's token ({TOKEN_USER})")
    add("--log-dir", metavar="DIR", help="children's logs (default: a temporary directory)")
    add("--exit-on-eof", action="store_true", help="stop when stdin ends even if not a tty")
    d = Limits()
    group = parser.add_argument_group("node limits (all on by default)")
    limit = group.add_argument
    limit("--max-size", type=int, default=d.max_size, metavar="BYTES",
          help=f"largest message, else close 1009 (default {d.max_size}; 0: none)")  # fmt: skip
    limit("--rate", type=float, default=d.rate, metavar="N",
          help=f"messages/s per connection (default {d.rate:g}; 0: none)")  # fmt: skip
    limit("--per-user", type=int, default=d.per_user, metavar="N",
          help=f"connections per user, cluster-wide (default {d.per_user}; 0: none)")  # fmt: skip
    limit("--soft-limit", type=int, default=d.soft_limit, metavar="N",
          help=f"connections per node, else 1013 (default {d.soft_limit}; 0: none)")  # fmt: skip
    limit("--history", type=int, default=d.history, metavar="N",
          help=f"messages kept per room for recovery (default {d.history})")  # fmt: skip
    limit("--auth-timeout", type=float, default=d.auth_timeout, metavar="S",
          help=f"time for a first auth message (default {d.auth_timeout:g})")  # fmt: skip
    limit("--drain-deadline", type=float, default=d.drain_deadline, metavar="S",
          help=f"a draining node exits by then (default {d.drain_deadline:g})")  # fmt: skip
    limit("--no-auth", action="store_true", help="accept clients without a token")
    limit("--origin", action="append", default=[], metavar="ORIGIN",
          help="also allow this browser Origin (repeatable)")  # fmt: skip
    limit("--compression", action="store_true", help="permessage-deflate on the nodes")


def _stack(args: argparse.Namespace) -> Stack | None:
    """The user's stack the flags name, if any (ValueError for a bad file or command)."""
    from wsconsole.harness.stackfile import StackError, load_stack, node_cmd_stack

    if args.stack is None and args.node_cmd is None:
        return None
    if args.flavour != "ws":
        raise ValueError("--flavour chooses our own nodes; a stack runs yours")
    try:
        if args.stack is not None:
            return load_stack(args.stack)
        count = args.nodes if args.nodes is not None else 2
        return node_cmd_stack(args.node_cmd, count=count, broker=args.redis)
    except StackError as exc:
        raise ValueError(str(exc)) from None


def config_from_args(args: argparse.Namespace) -> ClusterConfig:
    """The ClusterConfig the flags describe; raises ValueError for values that cannot work."""
    ping_interval = DEMO_PING_INTERVAL if args.demo_timings else PING_INTERVAL
    ping_timeout = DEMO_PING_TIMEOUT if args.demo_timings else PING_TIMEOUT
    if args.stats_interval < 0:
        raise ValueError("--stats-interval must be >= 0")
    stack = _stack(args)
    redis_url = args.redis
    if stack is not None and redis_url is None:
        redis_url = stack.broker.url
    config = ClusterConfig(
        nodes=args.nodes if args.nodes is not None else (
            stack.node.count if stack is not None else 3),
        stack=stack,
        port=args.port,
        redis_url=redis_url,
        data_dir=args.data_dir,
        broker_ephemeral=args.broker_ephemeral,
        broker_cluster=args.broker_cluster,
        sticky=args.sticky,
        ping_interval=args.ping_interval if args.ping_interval is not None else ping_interval,
        ping_timeout=args.ping_timeout if args.ping_timeout is not None else ping_timeout,
        limits=Limits(
            max_size=args.max_size,
            rate=args.rate,
            per_user=args.per_user,
            soft_limit=args.soft_limit,
            history=args.history,
            auth_timeout=args.auth_timeout,
            drain_deadline=args.drain_deadline,
            origins=tuple(args.origin),
            auth=not args.no_auth,
            compression=args.compression,
        ),
        stats_interval=args.stats_interval or 1.0,
        log_dir=args.log_dir,
        flavour=args.flavour,
        tls=args.tls,
    )
    config.validate()
    if not args.user:
        raise ValueError("--user must not be empty")
    return config


def run(args: argparse.Namespace) -> int:
    """Run the cluster until quit / SIGINT / SIGTERM; 1 if it could not start, 2 bad usage."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        return fail_usage(str(exc))
    out = Output(args.json)
    return asyncio.run(_main(config, args, out))


# ---------------------------------------------------------------- printing


def _compact_stats(sample: ClusterSample) -> dict[str, Any]:
    """The merged sample cut down to one readable line."""
    nodes, total = sample.nodes, sample.total
    line: dict[str, Any] = {"t": round(sample.t, 3)}
    line["connections"] = {
        **{node: figures.connections for node, figures in nodes.items()},
        "total": total.connections,
    }
    for metric in ("msgs_in_per_s", "msgs_out_per_s", "errors_per_s"):
        line[metric] = {
            **{node: round(getattr(figures, metric), 1) for node, figures in nodes.items()},
            "total": round(getattr(total, metric), 1),
        }
    line["node_broker"] = {node: f.broker for node, f in nodes.items() if f.up}
    scraped = {node: {k: round(v, 3) for k, v in f.extra.items()}
               for node, f in nodes.items() if f.extra}
    if scraped:  # a stack's own /metrics series
        line["metrics"] = scraped
    line["backends"] = {
        backend: {"healthy": b.healthy, "connections": b.connections}
        for backend, b in sample.balancer.backends.items()
    }
    return line


def _human_stats(line: dict[str, Any]) -> str:
    conns = line["connections"]
    per_node = " ".join(f"{k}={v}" for k, v in conns.items() if k != "total")
    return (
        f"stats connections {conns['total']} ({per_node}) "
        f"in {line['msgs_in_per_s']['total']}/s out {line['msgs_out_per_s']['total']}/s "
        f"errors {line['errors_per_s']['total']}/s"
    )


def _human(event: dict[str, Any]) -> str | None:
    kind = event.get("event")
    if kind == "node":
        text = f"node {event['id']} {event['state']}"
        if event.get("pid") is not None:
            text += f" pid={event['pid']} port={event.get('port')}"
        if "exit_code" in event:
            text += f" exit_code={event['exit_code']}"
        if event.get("expected") is False:
            text += " (unexpected)"
            if event.get("log_tail"):
                text += f" log: {event['log_tail']}"
        return text
    if kind == "broker":
        reason = f" ({event['reason']})" if event.get("reason") else ""
        return f"broker {event['state']}{reason} {event.get('url')} pid={event.get('pid')}"
    if kind == "shards":
        return "shards: " + "; ".join(_human_shard(s) for s in event["shards"])
    if kind == "shard":
        details = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("event", "action"))
        return f"shard {event['action']} {details}".rstrip()
    if kind in ("node_event", "balancer_event"):
        details = " ".join(
            f"{k}={v}" for k, v in event.items() if k not in ("event", "id", "kind", "node", "t")
        )
        return f"{event.get('id')}: {event.get('kind')} {details}".rstrip()
    if kind == "done":
        details = " ".join(
            f"{k}={v}" for k, v in event.items()
            if k not in ("event", "command", "id", "reply", "shards")
        )
        reply = event.get("reply")
        if isinstance(reply, dict) and "faults" in reply:
            active = [
                f"{f.get('target')}:{f.get('kind')}" for f in reply["faults"] if isinstance(f, dict)
            ]
            details = f"{details} faults now: {', '.join(active) or 'none'}".strip()
        return f"ok: {event['command']} {details}".rstrip()
    if kind == "balancer":
        return f"balancer {event['state']} port={event.get('port')} sticky={event.get('sticky')}"
    return None


class _Printer:
    """Turns cluster events and command results into output lines."""

    def __init__(self, out: Output, stats: bool) -> None:
        self.out = out
        self.stats = stats

    def cluster_event(self, event: dict[str, Any]) -> None:
        """Subscriber: node/broker/balancer events and (if enabled) stats lines."""
        kind = event.get("event")
        if kind == "stats":
            if self.stats:
                line = _compact_stats(event["sample"])
                self.out.event("stats", _human_stats(line), **line)
        elif kind in ("node", "broker", "balancer", "node_event", "balancer_event", "shards",
                      "shard"):
            fields = {k: v for k, v in event.items() if k != "event"}
            self.out.event(kind, _human(event), **fields)

    def result(self, event: dict[str, Any]) -> None:
        """A command's result event."""
        fields = {k: v for k, v in event.items() if k != "event"}
        kind = event["event"]
        human = None
        if kind == "help":
            human = "commands:\n  " + "\n  ".join(event["commands"])
        elif kind == "token":
            human = (
                f"token for {event['user']} (rooms {' '.join(event['rooms'])}): {event['token']}"
            )
        elif kind == "status":
            human = _human_status(event)
        elif kind == "log":
            human = "\n".join(
                f"{event['id']} {stamped(line['wall'], line['stream'], line['text'], date=False)}"
                for line in event["lines"]) or f"{event['id']}: no output yet"
        elif kind == "done":
            human = _human(event)
        self.out.event(kind, human, **fields)

    def error(self, message: str, line: str | None = None) -> None:
        """An error line (bad command, failed operation): the harness carries on."""
        fields: dict[str, Any] = {"error": message}
        if line is not None:
            fields["line"] = line
        self.out.event("error", f"error: {message}", **fields)


def _human_shard(shard: dict[str, Any]) -> str:
    slots = ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in shard["slots"])
    replicas = ",".join(shard["replicas"]) or "-"
    cut = " partitioned" if shard.get("partitioned") else ""
    return (f"{shard['name']} {shard['state']}{cut} primary {shard['primary'] or '-'} "
            f"replicas {replicas} slots {slots}")


def _human_status(status: dict[str, Any]) -> str:
    lines = [f"url {status.get('app_url') or status['url']}"]
    for node in status["nodes"]:
        extra = f"  {node['command_line']}" if node.get("command_line") else ""
        metrics = f" metrics {node['metrics_url']}" if node["metrics_url"] else ""
        lines.append(
            f"  node {node['id']} {node['state']} port={node['port']} pid={node['pid']}"
            f"{metrics}{extra}"
        )
    broker = status["broker"]
    lines.append(f"  broker {broker['state']} {broker['url']} pid={broker['pid']}")
    lines += [f"    shard {_human_shard(shard)}" for shard in status.get("shards", [])]
    balancer = status["balancer"]
    lines.append(
        f"  balancer {balancer['state']} port={balancer['port']} sticky={balancer['sticky']}"
    )
    return "\n".join(lines)


def _ready_event(cluster: Cluster, user: str) -> dict[str, Any]:
    flavour = cluster.config.flavour
    ca_file = cluster.ca_file
    stack = cluster.config.stack
    ready: dict[str, Any] = {
        "url": cluster.url if flavour == "ws" else "http" + cluster.url.removeprefix("ws"),
        "tls": ca_file is not None,
        "ca_file": str(ca_file) if ca_file is not None else None,
        "flavour": flavour,
        "nodes": [
            {"id": n.id, "port": n.port, "pid": n.pid, "metrics_url": n.metrics_url,
             **({"command_line": n.command} if n.command else {})}
            for n in cluster.nodes.values()
        ],
        "broker": {"url": cluster.broker.url, "pid": cluster.broker.pid},
        "balancer": {"port": cluster.balancer.port, "pid": cluster.balancer.pid},
        "ready_s": round(cluster.ready_seconds or 0.0, 3),
        "log_dir": str(cluster.log_dir),
    }
    if stack is None:
        ready.update(user=user, token=cluster.token(user))
    else:
        ready.update(url=cluster.app_url, stack=stack.name, protocol=stack.protocol.kind)
    return ready


def _human_ready(ready: dict[str, Any]) -> str:
    what = f" (stack {ready['stack']}, {ready['protocol']})" if "stack" in ready else ""
    lines = [f"ready in {ready['ready_s']:.2f} s: {ready['url']}{what}"]
    for node in ready["nodes"]:
        extra = f"  {node['command_line']}" if node.get("command_line") \
            else f" {node['metrics_url']}"
        lines.append(f"  node {node['id']} port={node['port']} pid={node['pid']}{extra}")
    if ready["broker"]["url"]:
        lines.append(f"  broker {ready['broker']['url']} pid={ready['broker']['pid']}")
    if "token" in ready:
        lines.append(f"  token for {ready['user']}: {ready['token']}")
    if ready["ca_file"]:
        lines.append(f"  TLS: certificates from the local CA {ready['ca_file']} "
                     "(wsconsole trusts it; for a browser see docs/harness.md)")
    lines.append(f"  logs in {ready['log_dir']}")
    lines.append("type `help` for commands, `quit` or Ctrl-C to stop")
    return "\n".join(lines)


# ---------------------------------------------------------------- stdin


def _read_stdin(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    """Thread body: hand every stdin line to the loop; None marks the end of input."""

    def put(item: str | None) -> bool:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: we are exiting
            return False
        return True

    try:
        for line in sys.stdin:
            if not put(line):
                return
    except (OSError, ValueError):
        pass
    put(None)


async def _main(config: ClusterConfig, args: argparse.Namespace, out: Output) -> int:
    stop = asyncio.Event()
    printer = _Printer(out, stats=args.stats_interval > 0)
    cluster = Cluster(config)
    cluster.subscribe(printer.cluster_event)
    with stop_on_signals(stop.set):
        starting = asyncio.ensure_future(cluster.start())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError, ClusterError):
                    await starting
                await cluster.stop()
                return 0
            try:
                starting.result()
            except (ClusterError, OSError) as exc:
                sys.stderr.write(f"wsconsole harness: could not start the cluster: {exc}\n")
                return 1
            ready = _ready_event(cluster, args.user)
            out.event("ready", _human_ready(ready), **ready)
            await _command_loop(cluster, printer, stop, args.exit_on_eof or sys.stdin.isatty())
        finally:
            stopping.cancel()
            await cluster.stop()
            out.event("stopped", "stopped: every process the harness started is gone")
    return 0


async def _command_loop(
    cluster: Cluster, printer: _Printer, stop: asyncio.Event, quit_on_eof: bool
) -> None:
    """Run stdin commands one at a time until quit, a signal, or (maybe) end of input."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    reader = threading.Thread(
        target=_read_stdin, args=(asyncio.get_running_loop(), queue), daemon=True
    )
    reader.start()
    stop_wait = asyncio.ensure_future(stop.wait())
    eof = False
    try:
        while not stop.is_set():
            if eof:
                await stop_wait
                break
            next_line = asyncio.ensure_future(queue.get())
            await asyncio.wait({next_line, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not next_line.done():
                next_line.cancel()
                break
            line = next_line.result()
            if line is None:
                if quit_on_eof:
                    break
                eof = True
                printer.out.event(
                    "stdin_closed",
                    "stdin closed: no more commands; running until SIGINT/SIGTERM",
                )
                continue
            try:
                command = parse(line)
                if command is None:
                    continue
                if command.name == "help":
                    printer.result(help_event())
                    continue
                running = asyncio.ensure_future(execute(cluster, command))
                await asyncio.wait({running, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not running.done():  # a signal while a command runs: stop now
                    running.cancel()
                    with contextlib.suppress(asyncio.CancelledError, CommandError, Quit):
                        await running
                    break
                printer.result(running.result())
            except Quit:
                break
            except CommandError as exc:
                printer.error(str(exc), line.strip())
    finally:
        stop_wait.cancel()
