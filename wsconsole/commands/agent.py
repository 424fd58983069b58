"""`wsconsole agent`: run this host's nodes and swarm workers on the console's signed commands
(harness/agent.py; docs/scale-out.md "Agents")."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

import platformdirs

from wsconsole.commands.argtypes import one_line_errors
from wsconsole.commands.output import fail_usage
from wsconsole.core.signals import stop_on_signals
from wsconsole.harness.agent import Agent
from wsconsole.harness.agentwire import DEFAULT_WINDOW, check_name
from wsconsole.harness.brokeraddr import BrokerAddress
from wsconsole.logs import BACKUPS, FORMAT, MAX_BYTES

HELP = "run nodes and swarm workers on this host on the console's signed commands"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The agent's options."""
    one_line_errors(parser)
    add = parser.add_argument
    add("--broker", required=True, metavar="URL",
        help="the shared broker: redis://HOST:PORT, or a cluster's seeds HOST:PORT,HOST:PORT")
    add("--name", required=True, metavar="NAME",
        help="this agent's name (the console addresses it by it): letters, digits, . _ -")
    add("--secret-env", required=True, metavar="VAR",
        help="the environment variable holding the secret shared with the console")
    add("--state-dir", type=Path, metavar="DIR",
        help="where the agent keeps its state file and its processes' logs "
             "(default: the user state folder, agent-NAME)")
    add("--advertise", metavar="ADDR",
        help="the address the console shows for this host (default: the host name)")
    add("--window", type=float, default=DEFAULT_WINDOW, metavar="S",
        help="seconds a signed command stays valid either side of this host's clock "
             f"(default {DEFAULT_WINDOW:g}; keep the hosts' clocks in sync)")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT (exit 0, processes stopped); 2 on bad usage."""
    try:
        name = check_name(args.name)
        BrokerAddress.parse(args.broker)
    except ValueError as exc:
        return fail_usage(str(exc))
    secret = os.environ.get(args.secret_env, "")
    if not secret:
        return fail_usage(f"the environment variable {args.secret_env} (--secret-env) is not "
                          "set or empty: the agent needs the secret it shares with the console")
    if not args.window > 0:
        return fail_usage(f"--window must be > 0 seconds, not {args.window}")
    state_dir = args.state_dir or (
        Path(platformdirs.user_state_dir("wsconsole", appauthor=False)) / f"agent-{name}")
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return fail_usage(f"cannot use {state_dir} as the state dir: {exc}")
    _log_to(state_dir / "agent.log")
    agent = Agent(args.broker, name, secret, state_dir, advertise=args.advertise,
                  window=args.window)
    return asyncio.run(_serve(agent))


async def _serve(agent: Agent) -> int:
    with stop_on_signals(agent.request_stop):
        logging.getLogger(__name__).info("agent %s starting (pid %s), state in %s", agent.name,
                                         os.getpid(), agent.state_dir)
        return await agent.run()


def _log_to(path: Path) -> None:
    """The agent's log: its state dir's agent.log (rotated by size) and stderr."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    formatter = logging.Formatter(FORMAT)
    rotating = RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS,
                                   encoding="utf-8")
    for handler in (rotating, logging.StreamHandler(sys.stderr)):
        handler.setFormatter(formatter)
        root.addHandler(handler)
