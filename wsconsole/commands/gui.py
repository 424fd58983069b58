"""`wsconsole gui`: open the console window (the default when no sub-command is given)."""

from __future__ import annotations

import argparse
import os
import sys

from wsconsole.commands.output import fail_usage

HELP = "open the console window (default: a local 3-node demo cluster with live plots)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the window: what to start, and where settings live."""
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--url", help="debug an external ws:// or wss:// server (no harness)")
    target.add_argument("--no-harness", action="store_true",
                        help="start empty: no cluster, no swarm, no connection")
    target.add_argument("--stack", metavar="FILE",
                        help="run your own nodes as a stack file describes (docs/stacks.md)")
    parser.add_argument("--swarm", type=int, default=20, metavar="N",
                        help="simulated clients in the demo (default 20; 0 = none)")
    parser.add_argument("--tls", action="store_true",
                        help="the demo cluster serves wss:// (certificates of the local CA)")
    parser.add_argument("--broker-cluster", type=int, default=0, metavar="N",
                        help="the demo's broker is a Valkey Cluster of N shards (a primary "
                             "and a replica each), shown and broken in the Cluster panel")
    parser.add_argument("--settings", metavar="FILE",
                        help="keep window layout, profiles and templates in this .ini file")
    parser.add_argument("--frames", type=int, default=1_000_000, metavar="N",
                        help="frames kept in the Frames view before the oldest drop")
    parser.add_argument("--agents-broker", metavar="URL",
                        help="show the agents of other hosts on this broker in the Cluster "
                             "panel, grouped by host, with buttons for their processes")
    parser.add_argument("--agents-secret-env", metavar="VAR",
                        help="the environment variable holding the agents' shared secret")


def options_from(args: argparse.Namespace) -> object:
    """GuiOptions from parsed arguments; raises ValueError with a usage message."""
    from wsconsole.core.urls import url_problem

    if args.url is not None:
        problem = url_problem(args.url)
        if problem:
            raise ValueError(f"--url: {problem}")
    if args.swarm < 0:
        raise ValueError("--swarm must be 0 or more")
    if args.stack is not None:
        from wsconsole.harness.stackfile import StackError, load_stack

        try:
            load_stack(args.stack)
        except StackError as exc:
            raise ValueError(str(exc)) from None
    if not 0 <= args.broker_cluster <= 16:
        raise ValueError("--broker-cluster takes 1 to 16 shards")
    if args.frames < 1000:
        raise ValueError("--frames must be at least 1000")
    agents_secret = None
    if args.agents_broker is not None or args.agents_secret_env is not None:
        if args.agents_broker is None or args.agents_secret_env is None:
            raise ValueError("--agents-broker and --agents-secret-env go together")
        from wsconsole.harness.brokeraddr import BrokerAddress

        BrokerAddress.parse(args.agents_broker)  # ValueError saying what is wrong
        agents_secret = os.environ.get(args.agents_secret_env, "")
        if not agents_secret:
            raise ValueError(f"the environment variable {args.agents_secret_env} "
                             "(--agents-secret-env) is not set or empty")
    from wsconsole.gui.app import GuiOptions

    return GuiOptions(
        url=args.url,
        harness=not args.no_harness and args.url is None,
        stack=args.stack,
        swarm_clients=args.swarm,
        tls=args.tls,
        broker_cluster=args.broker_cluster,
        settings_path=args.settings,
        frame_capacity=args.frames,
        agents_broker=args.agents_broker,
        agents_secret=agents_secret,
    )


def no_display() -> bool:
    """True on Linux/BSD when neither X11 nor Wayland nor a Qt platform was chosen."""
    if not sys.platform.startswith(("linux", "freebsd", "openbsd")):
        return False
    return not any(os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))


def run(args: argparse.Namespace) -> int:
    """Validate the options, then hand over to the Qt application."""
    try:
        options = options_from(args)
    except ValueError as exc:
        return fail_usage(str(exc))
    if no_display():
        return fail_usage("no display to open the window on (DISPLAY is not set); "
                          "`wsconsole screenshot OUT.png` renders it offscreen")
    from wsconsole.gui.app import run as run_gui

    return run_gui(options)  # type: ignore[arg-type]
