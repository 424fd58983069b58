"""`wsconsole stack check FILE`: validate a stack file without starting anything.

Exit 0 with a summary of what `wsconsole harness --stack FILE` would run (the command of node
n1 with its placeholders filled in as an example, readiness, broker, protocol, client recipe);
exit 2 with `FILE:LINE: reason` on stderr for an invalid file (docs/stacks.md).
"""

from __future__ import annotations

import argparse
import shlex

from wsconsole.commands.output import Output, fail_usage

HELP = "Check a stack file (your own server under the harness) without starting it."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare `stack check FILE`."""
    sub = parser.add_subparsers(dest="stack_command", metavar="ACTION")
    check = sub.add_parser("check", help="validate a stack file; exit 2 with FILE:LINE: reason")
    check.add_argument("file", help="the stack TOML file")
    check.add_argument("--json", action="store_true", help="one JSON object per line")


def run(args: argparse.Namespace) -> int:
    """Validate the file: 0 valid, 2 invalid or bad usage."""
    from wsconsole.harness.stackfile import StackError, load_stack

    if getattr(args, "stack_command", None) != "check":
        return fail_usage("stack needs an action: check FILE")
    out = Output(args.json)
    try:
        stack = load_stack(args.file)
    except StackError as exc:
        if args.json:
            out.event("invalid", None, path=exc.path, line=exc.line, reason=exc.reason)
        return fail_usage(str(exc))
    example = {"port": 40001, "id": "n1", "index": 1, "host": "127.0.0.1",
               "redis_url": "redis://127.0.0.1:6390"}
    argv = stack.node.argv(example)
    summary = stack.summary()
    lines = [
        f"{stack.path}: valid — {stack.name}",
        f"  {summary['nodes']} node(s), e.g. n1: {shlex.join(argv)}  (in {summary['cwd']})",
        f"  ready: {summary['ready']}, stop: {summary['stop_signal']} then SIGKILL after "
        f"{summary['drain_deadline']:g} s",
        f"  broker: {summary['broker']}, protocol: {summary['protocol']} on "
        f"{summary['path_on_node']}",
        f"  client recipe: {'yes' if stack.client else 'none (harness only, no swarm)'}"
        + (f", metrics: {summary['metrics']}" if summary["metrics"] else ""),
    ]
    out.event("valid", "\n".join(lines), example_argv=argv, **summary)
    return 0
