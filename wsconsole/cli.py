"""The `wsconsole` command line: one sub-command per module in `wsconsole.commands`.

Exit codes (DESIGN.md): 0 success, 1 a check or assertion failed, 2 bad usage or input.
With no sub-command the console window opens, as `wsconsole gui` does.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Iterable, Sequence

from wsconsole import __version__

# Sub-command name -> module exposing HELP, add_arguments(parser) and run(args) -> int.
COMMANDS: dict[str, str] = {
    "gui": "wsconsole.commands.gui",
    "connect": "wsconsole.commands.connect",
    "harness": "wsconsole.commands.harness",
    "node": "wsconsole.commands.node",
    "sionode": "wsconsole.harness.sionode",
    "relay": "wsconsole.harness.relay",
    "balancer": "wsconsole.commands.balancer",
    "probe": "wsconsole.commands.probe",
    "proxy": "wsconsole.commands.proxy",
    "swarm": "wsconsole.commands.swarm",
    "swarm-worker": "wsconsole.commands.swarm_worker",
    "scenario": "wsconsole.commands.scenario",
    "stack": "wsconsole.commands.stack",
    "screenshot": "wsconsole.commands.screenshot",
    "selftest": "wsconsole.commands.selftest",
    "diagnose": "wsconsole.commands.diagnose",
    "agent": "wsconsole.commands.agent",
    "agents": "wsconsole.commands.agents",
}


def _available_commands(names: Iterable[str]) -> dict[str, object]:
    """Import those command modules that exist (a feature lands with its module)."""
    found = {}
    for name in names:
        module_name = COMMANDS[name]
        try:
            found[name] = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
    return found


def build_parser(
    names: Iterable[str] = tuple(COMMANDS),
) -> tuple[argparse.ArgumentParser, dict[str, object]]:
    """The top-level parser with the named sub-commands that are available (all of them by
    default). Naming one spares a process the import of every other command: a harness
    node, balancer or swarm worker starts in about a third of the time."""
    parser = argparse.ArgumentParser(
        prog="wsconsole",
        description="Monitor, debug and break WebSocket and real-time systems.",
        epilog="With no COMMAND the console window opens. `wsconsole --self-test` is "
        "`wsconsole selftest`: broker, nodes, balancer and a client, end to end.",
    )
    parser.add_argument("--version", action="version", version=f"wsconsole {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = _available_commands(names)
    for name, module in modules.items():
        sub_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub_parser)
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen sub-command; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["keeper"]:  # a bundle's keeper of a user's node: start fast
        from wsconsole.harness.keeper import main as keep

        return keep(args_list[1:])
    if args_list[:1] == ["--self-test"]:
        args_list[0] = "selftest"
    starts_with_option = bool(args_list) and args_list[0].startswith("-")
    if not args_list or (starts_with_option and args_list[0] not in ("-h", "--help", "--version")):
        args_list.insert(0, "gui")
    parser, modules = build_parser([args_list[0]] if args_list[0] in COMMANDS else COMMANDS)
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(modules[args.command].run(args) or 0)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # The reader went away (`wsconsole ... | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def gui_main() -> int:
    """Entry point of the gui-script: the window, whatever the arguments."""
    return main(["gui", *sys.argv[1:]])
