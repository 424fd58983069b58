"""`wsconsole diagnose URL`: check an endpoint step by step and write a support bundle.

DNS, TCP, TLS (wss://), the handshake, round-trip latency over `--pings` pings, a dropped
connection and the client's reconnect, and the production-safe security checks; each step
printed with a plain-language verdict (`--json`: one object per step and a summary).
`--out FILE.zip` writes the support bundle (report, frames, timeline, logs, versions and
settings, secrets redacted). Exit 0 when the endpoint works (warnings included), 1 when a
step found a problem, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from wsconsole.app import options
from wsconsole.app.options import OptionsError
from wsconsole.app.targets import current_token, diagnose_options
from wsconsole.commands.argtypes import int_between, one_line_errors, positive
from wsconsole.commands.output import Output, fail_usage
from wsconsole.core.errors import TokenError
from wsconsole.diagnostics.bundle import BundleInputs, write_bundle
from wsconsole.diagnostics.checks import diagnose
from wsconsole.diagnostics.model import DiagnoseError, DiagnoseOptions, StepResult, Verdict
from wsconsole.diagnostics.settings import app_settings_files
from wsconsole.diagnostics.versions import versions
from wsconsole.logs import log_files, setup_logging

HELP = "Diagnose a WebSocket endpoint (DNS, TCP, TLS, handshake, latency, reconnect, audit)."

MARKS = {Verdict.OK: "ok  ", Verdict.WARN: "WARN", Verdict.FAIL: "FAIL", Verdict.SKIP: "skip"}


COUNT = int_between(1, 1000, "count")

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of `wsconsole diagnose`."""
    one_line_errors(parser)
    parser.add_argument("url", help="ws:// or wss:// URL of the endpoint")
    options.add_arguments(parser, options.CREDENTIALS, help={
        "token": "auth token (redacted in every output)",
        "token_command": "run CMD once for the token (redacted in every output)",
        "token_url": "GET URL once for the token (redacted in every output)",
        "insecure": "continue past certificate errors (they are still reported)"})
    parser.add_argument("--timeout", type=positive, default=5.0, metavar="SECONDS",
                        help="limit for each network wait (default 5)")
    parser.add_argument("--pings", type=COUNT, default=5, help="pings for latency (default 5)")
    parser.add_argument("--no-reconnect", action="store_true", help="skip the reconnect cycle")
    parser.add_argument("--no-audit", action="store_true", help="skip the security checks")
    parser.add_argument("--out", metavar="FILE.zip", help="write a support bundle here")
    parser.add_argument("--settings", metavar="FILE",
                        help="settings file to include, redacted (default: the app's own)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def build_options(args: argparse.Namespace) -> DiagnoseOptions:
    """DiagnoseOptions from the command line, the token asked of --token-command or
    --token-url once; OptionsError / DiagnoseError / TokenError for bad input."""
    conn = options.from_args(args, options.CREDENTIALS, url=args.url)
    token = asyncio.run(current_token(conn))
    return diagnose_options(conn, token, timeout=args.timeout, pings=args.pings,
                            reconnect=not args.no_reconnect, audit=not args.no_audit)


def bundle_inputs(settings_file: str | None) -> BundleInputs:
    """Versions, the app's settings files and log files for the bundle."""
    files = app_settings_files(settings_file)
    return BundleInputs(versions=versions(), settings_files=files, log_files=log_files())


def run(args: argparse.Namespace) -> int:
    """Diagnose, print each step, optionally write the bundle; exit 0 / 1 / 2."""
    try:
        wanted = build_options(args)
    except OptionsError as exc:
        return fail_usage(exc.cli_line())
    except (DiagnoseError, TokenError) as exc:
        return fail_usage(str(exc))
    if args.out and not args.out.lower().endswith(".zip"):
        return fail_usage(f"--out must name a .zip file, not {args.out!r}")
    if args.settings and not Path(args.settings).is_file():
        return fail_usage(f"settings file not found: {args.settings}")
    setup_logging()
    out = Output(args.json)

    def show(step: StepResult) -> None:
        out.event("step", f"{MARKS[step.verdict]}  {step.title}: {step.summary}",
                  **step.as_dict())

    diagnosis = asyncio.run(diagnose(wanted, show))
    path = None
    if args.out:
        try:
            path = write_bundle(diagnosis, args.out, bundle_inputs(args.settings))
        except OSError as exc:
            return fail_usage(f"cannot write {args.out}: {exc}")
    out.event("result", diagnosis.headline() + (f"\nSupport bundle: {path}" if path else ""),
              verdict=diagnosis.verdict.value, headline=diagnosis.headline(),
              bundle=str(path) if path else None)
    return 1 if diagnosis.verdict is Verdict.FAIL else 0
