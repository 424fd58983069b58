"""`wsconsole swarm-worker`: run one part of a swarm split over workers (started by
`wsconsole swarm --workers N` on this machine, or by an agent on another host).

It takes its config from the run's signed control stream on the broker, streams its
accounting journal back, and exits when its part is done, when told to stop, or on its own
when the coordinator is gone (docs/scale-out.md, "Swarm workers"). Exit 0 when the part ran to
its end, 1 when it stopped without its coordinator or could not send its summary, 2 for bad
usage or a config this host cannot run (a JWT secret variable not set here).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from wsconsole.commands.output import fail_usage
from wsconsole.core.signals import stop_on_signals

HELP = "Run one part of a swarm split over workers (started by `swarm --workers`)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the worker's flags."""
    from wsconsole.swarm.worker import ORPHAN_AFTER

    parser.add_argument("--broker", required=True, metavar="URL",
                        help="the shared broker (redis://, rediss://, or a cluster's seeds)")
    parser.add_argument("--secret-env", required=True, metavar="VAR",
                        help="environment variable holding the agents' shared secret")
    parser.add_argument("--run", required=True, metavar="ID", help="the run's id")
    parser.add_argument("--part", required=True, type=int, metavar="K",
                        help="which part of the run this worker runs (0-based)")
    parser.add_argument("--orphan-after", type=float, default=ORPHAN_AFTER, metavar="S",
                        help=f"stop when the coordinator is silent for S seconds "
                             f"({ORPHAN_AFTER:g})")


async def _work(args: argparse.Namespace, secret: str) -> int:
    from wsconsole.harness.brokeraddr import open_client
    from wsconsole.swarm.runwire import RunWire
    from wsconsole.swarm.worker import Worker

    try:
        client = await open_client(args.broker)
    except (OSError, ValueError) as exc:
        logging.getLogger(__name__).error("the broker at %s: %s", args.broker, exc)
        return 1
    worker = Worker(RunWire(client, secret, args.run, coordinator=False), args.part,
                    orphan_after=args.orphan_after)
    try:
        with stop_on_signals(worker.stop):
            return await worker.run()
    except TimeoutError:
        logging.getLogger(__name__).error("no config for run %s within the time allowed",
                                          args.run)
        return 1
    finally:
        await client.aclose()


def run(args: argparse.Namespace) -> int:
    """Run the part; see the module docstring for the exit codes."""
    from wsconsole.harness.agentwire import NAME_RE

    secret = os.environ.get(args.secret_env)
    if not secret:
        return fail_usage(f"environment variable {args.secret_env} is not set")
    if not NAME_RE.fullmatch(args.run) or args.part < 0 or not args.orphan_after > 0:
        return fail_usage("--run is the run's id (letters, digits), --part a number >= 0 "
                          "and --orphan-after a number of seconds > 0")
    logging.basicConfig(level=logging.WARNING, format="swarm-worker: %(message)s")
    return asyncio.run(_work(args, secret))
