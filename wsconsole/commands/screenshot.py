"""`wsconsole screenshot OUT.png`: render the main window offscreen with the demo running."""

from __future__ import annotations

import argparse
import os
import tempfile

from wsconsole.commands.gui import add_arguments as add_gui_arguments
from wsconsole.commands.gui import options_from
from wsconsole.commands.output import fail_usage

HELP = "save a PNG of the console window with the demo cluster running (offscreen)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """OUT.png, how long to let the demo run, and the window's own options."""
    parser.add_argument("out", metavar="OUT.png", help="where to write the PNG")
    parser.add_argument("--after", type=float, default=8.0, metavar="SECONDS",
                        help="let the demo run this long before grabbing (default 8)")
    parser.add_argument("--kill-after", type=float, metavar="SECONDS",
                        help="SIGKILL the node serving the console's client this long after "
                             "start-up, so the Timeline shows the reconnect")
    parser.add_argument("--pongs-off-after", type=float, metavar="SECONDS",
                        help="the console's connection stops answering the server's pings "
                             "this long after start-up (the heartbeat lab)")
    parser.add_argument("--swarm-dead", type=int, metavar="PERCENT",
                        help="with --pongs-off-after: that share of the swarm's clients "
                             "stops answering too")
    parser.add_argument("--expand", action="append", default=[], metavar="GROUP",
                        help="expand a Timeline group: own, swarm, proxy or all (repeatable)")
    parser.add_argument("--fault", action="store_true",
                        help="open the side panel of the last fault on the Timeline")
    parser.add_argument("--show", action="append", default=[], metavar="DOCK",
                        help="raise this dock, e.g. 'Heartbeat lab' (repeatable)")
    parser.add_argument("--grab", action="append", default=[], metavar="DOCK",
                        help="save only this dock (e.g. Timeline), not the whole window; "
                             "repeated: the docks one above the other")
    parser.add_argument("--size", default="1600x1000", metavar="WxH",
                        help="window size in pixels (default 1600x1000)")
    add_gui_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Check the arguments, then render and save the window."""
    if not args.out.lower().endswith(".png"):
        return fail_usage(f"{args.out}: the output file must end in .png")
    directory = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(directory):
        return fail_usage(f"{directory} does not exist")
    if not 0 <= args.after <= 600:
        return fail_usage("--after must be between 0 and 600 seconds")
    from wsconsole.gui.shots import Shot

    shot = Shot(after=args.after, kill_after=args.kill_after,
                pongs_off_after=args.pongs_off_after, swarm_dead=args.swarm_dead,
                expand=args.expand, fault=args.fault,
                show=args.show, grab=args.grab)
    problems = shot.problems()  # the dock names are checked once the window exists
    if problems:
        return fail_usage("; ".join(problems))
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
        if not (320 <= width <= 8000 and 240 <= height <= 8000):
            raise ValueError
    except ValueError:
        return fail_usage(f"--size {args.size!r}: expected WxH like 1600x1000")
    try:
        options = options_from(args)
    except ValueError as exc:
        return fail_usage(str(exc))
    options.width, options.height = width, height  # type: ignore[attr-defined]
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from wsconsole.gui.app import run as run_gui

    if options.settings_path is not None:
        return run_gui(options, screenshot=args.out, shot=shot)  # type: ignore[arg-type]
    # the user's saved layout would make the picture depend on the last session (and the
    # shot would overwrite it): a fresh settings file unless --settings names one
    with tempfile.TemporaryDirectory(prefix="wsconsole-shot-") as scratch:
        options.settings_path = os.path.join(scratch, "settings.ini")
        return run_gui(options, screenshot=args.out, shot=shot)  # type: ignore[arg-type]
