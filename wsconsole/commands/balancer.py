"""`wsconsole balancer`: the harness's sticky load balancer, in the foreground.

The supervisor starts it through `harness.procs.child_argv("balancer", ...)`; it prints one JSON
line `{"event": "listening", "port", "pid"}` on stdout and logs to stderr.
"""

from __future__ import annotations

import argparse

from wsconsole.harness import balancer

HELP = "Run the sticky TCP/HTTP-upgrade load balancer with health checks and network faults."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The balancer's options."""
    balancer.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the balancer until SIGTERM/SIGINT or its control channel closes."""
    return balancer.run(args)
