"""`wsconsole agents`: list the agents on a broker and command their processes
(harness/agents.py; docs/scale-out.md "Agents").

    wsconsole agents --broker URL --secret-env VAR list
    wsconsole agents ... start AGENT PROC node -- --redis URL --port 8101
    wsconsole agents ... start AGENT PROC stack-node stack=app.toml node=n1 redis_url=URL
    wsconsole agents ... stop|kill|pause|resume|restart AGENT PROC
    wsconsole agents ... status AGENT

Exit codes: 0 done, 1 the agent refused or failed the command, did not answer, or the broker
is not reachable; 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import asdict
from typing import Any

from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from wsconsole.commands.argtypes import one_line_errors
from wsconsole.commands.output import Output, fail_usage
from wsconsole.harness.agentprocs import ROLES
from wsconsole.harness.agents import (
    COMMAND_TIMEOUT,
    PROC_COLUMNS,
    AgentError,
    AgentsClient,
    AgentView,
    ProcView,
)
from wsconsole.harness.brokeraddr import BrokerAddress
from wsconsole.logs import setup_logging

HELP = "list the agents on a broker and start, stop, pause or restart their processes"
PROC_ACTIONS = ("stop", "kill", "pause", "resume", "restart")
NUMERIC = ("PID", "Restarts", "CPU %", "RSS")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The shared options and one sub-command per action."""
    one_line_errors(parser)
    parser.add_argument("--broker", required=True, metavar="URL",
                        help="the broker the agents share (one server or a cluster's seeds)")
    parser.add_argument("--secret-env", required=True, metavar="VAR",
                        help="the environment variable holding the agents' shared secret")
    parser.add_argument("--timeout", type=float, default=COMMAND_TIMEOUT, metavar="S",
                        help=f"seconds to wait for an agent's answer (default {COMMAND_TIMEOUT:g})")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of tables")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    one_line_errors(sub.add_parser("list", help="every agent heard of and its processes"))
    start = sub.add_parser("start", help="start a process on an agent")
    one_line_errors(start)
    start.add_argument("agent")
    start.add_argument("proc", help="the process's name on that agent")
    start.add_argument("role", choices=ROLES)
    start.add_argument("args", nargs=argparse.REMAINDER,
                       help="node/worker: its arguments (after --); stack-node: KEY=VALUE "
                            "(stack=FILE node=nN [port=N host=H redis_url=URL])")
    for action in PROC_ACTIONS:
        one = sub.add_parser(action, help=f"{action} a process on an agent")
        one_line_errors(one)
        one.add_argument("agent")
        one.add_argument("proc")
    status = sub.add_parser("status", help="ask an agent for its process table now")
    one_line_errors(status)
    status.add_argument("agent")


def _role_args(role: str, args: list[str]) -> Any:
    """The role's arguments: a list for node/worker, a table from KEY=VALUE for stack-node."""
    args = args[1:] if args[:1] == ["--"] else args
    if role != "stack-node":
        return args
    table: dict[str, Any] = {}
    for item in args:
        key, sep, value = item.partition("=")
        if not sep or key not in ("stack", "node", "port", "host", "redis_url"):
            raise ValueError(f"stack-node takes stack=FILE node=nN [port= host= redis_url=], "
                             f"not {item!r}")
        table[key] = int(value) if key == "port" and value.isdigit() else value
    if "stack" not in table:
        raise ValueError("stack-node needs stack=FILE")
    return table


def run(args: argparse.Namespace) -> int:
    """Carry out one action; see the module docstring for the exit codes."""
    secret = os.environ.get(args.secret_env, "")
    if not secret:
        return fail_usage(f"the environment variable {args.secret_env} (--secret-env) is not "
                          "set or empty")
    try:
        BrokerAddress.parse(args.broker)
        role_args = _role_args(args.role, args.args) if args.action == "start" else None
    except ValueError as exc:
        return fail_usage(str(exc))
    if not args.timeout > 0:
        return fail_usage(f"--timeout must be > 0 seconds, not {args.timeout}")
    setup_logging()  # results and refusals go to the user log; the terminal gets the outcome
    return asyncio.run(_run(args, secret, role_args))


async def _run(args: argparse.Namespace, secret: str, role_args: Any) -> int:
    out = Output(args.json)
    client = AgentsClient(args.broker, secret, timeout=args.timeout)
    try:
        await client.open()
        await client.caught_up()
    except (OSError, RedisError, TimeoutError) as exc:
        sys.stderr.write(f"wsconsole: the broker at {args.broker} is not reachable: {exc}\n")
        return 1
    try:
        if args.action == "list":
            _show_agents(out, client.agents())
            return 0
        if args.action == "status":
            _show_procs(out, args.agent, await client.status(args.agent))
            return 0
        if args.action == "start":
            view = await client.start(args.agent, args.proc, args.role, role_args)
        else:
            view = await getattr(client, args.action)(args.agent, args.proc)
        out.event(args.action, f"{args.agent}: {args.action} {args.proc}: "
                               f"{view.describe_state} (pid {view.pid})",
                  agent=args.agent, proc=asdict(view))
        return 0
    except AgentError as exc:
        if args.json:
            out.event("failed", agent=exc.agent, error=str(exc))
        sys.stderr.write(f"wsconsole: {exc}\n")
        return 1
    finally:
        await client.close()


def _show_agents(out: Output, agents: dict[str, AgentView]) -> None:
    if out.json_mode:
        for view in agents.values():
            out.event("agent", name=view.name, host=view.host, address=view.address,
                      pid=view.pid, version=view.version, state=view.state,
                      last_seen=view.last_seen, procs=[asdict(p) for p in view.procs])
        return
    if not agents:
        out.stream.write("no agent has reported on this broker in the last few seconds\n")
        return
    table = Table(title="agents")
    table.add_column("Agent / process")
    for column in PROC_COLUMNS[1:]:
        table.add_column(column, justify="right" if column in NUMERIC else "left")
    now = time.time()
    for view in agents.values():
        table.add_row(*view.cells(now))
        for proc in view.procs:
            table.add_row("  " + proc.proc, *proc.cells()[1:])
    Console(file=out.stream, width=140).print(table)


def _show_procs(out: Output, agent: str, procs: list[ProcView]) -> None:
    if out.json_mode:
        for proc in procs:
            out.event("proc", agent=agent, **asdict(proc))
        return
    table = Table(title=f"processes on {agent}")
    for column in PROC_COLUMNS:
        table.add_column(column, justify="right" if column in NUMERIC else "left")
    for proc in procs:
        table.add_row(*proc.cells())
    Console(file=out.stream, width=140).print(table)
