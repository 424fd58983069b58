"""`wsconsole screenshot OUT.png`: render the main window offscreen with the demo running."""

from __future__ import annotations

import argparse
import os

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
    if args.kill_after is not None and not 0 <= args.kill_after <= args.after:
        return fail_usage("--kill-after must be between 0 and --after")
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

    return run_gui(options, screenshot=args.out, after=args.after,  # type: ignore[arg-type]
                   kill_after=args.kill_after)
