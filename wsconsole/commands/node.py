"""`wsconsole node`: run one harness node in the foreground (what the supervisor starts)."""

from __future__ import annotations

import argparse

from wsconsole.harness import node as _node
from wsconsole.harness import nodeconfig

HELP = _node.HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Same options as `python -m wsconsole.harness.node`."""
    nodeconfig.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the node until it is drained; exit code 2 on bad usage."""
    return _node.run_from_args(args)
