"""`wsconsole probe URL`: send catalogue cases over a raw socket and judge each reaction.

Runs every case (or `--case ID ...`, or one `--suite`), one fresh connection each, with every
step bounded by `--timeout`. `--audit` adds the security checklist (`--audit-safe`: only the
checks that send no flood). `--json` prints one line per case / finding and a summary line;
`--junit FILE` writes JUnit XML. Harness-protocol cases run only on a target that answers
the harness protocol (or with `--harness`); elsewhere they are n/a. Exit 0 when every case
that applies passed, 1 when a case or check failed, 2 for bad usage or a target that cannot
be probed at all (unreachable, not a WebSocket server, silent).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from wsconsole.app import options
from wsconsole.app.options import OptionsError
from wsconsole.app.targets import current_token, probe_target
from wsconsole.commands.argtypes import int_between, one_line_errors, positive
from wsconsole.commands.output import Output, fail_usage
from wsconsole.core.errors import TokenError
from wsconsole.faults.audit import AuditConfig, Finding, Status, run_audit
from wsconsole.faults.catalogue import CATALOGUE, Case, Direction, Group, UnknownCase, select
from wsconsole.faults.junit import write_junit
from wsconsole.faults.probe import (
    CaseResult,
    ProbeConfig,
    Target,
    TargetError,
    Verdict,
    preflight,
    run_cases,
    summarize,
)

HELP = "Send malformed frames to a WebSocket endpoint and judge its reactions; audit it."

SUITES: dict[str, tuple[Group, ...]] = {
    "all": tuple(Group),
    "rfc": (Group.FRAMING, Group.FRAGMENTS, Group.COMPRESSION, Group.HANDSHAKE),
    **{group.value: (group,) for group in Group},
    "none": (),
}


SIZE = int_between(1, name="size in bytes")

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of `wsconsole probe`."""
    one_line_errors(parser)
    parser.add_argument("url", nargs="?", help="ws:// or wss:// URL to probe")
    parser.add_argument("--case", action="append", default=[], metavar="ID",
                        help="run this catalogue case (repeatable; default: every case)")
    parser.add_argument("--suite", choices=list(SUITES), default="all",
                        help="which cases when no --case: all, rfc (every RFC group), one group"
                        " (framing, fragments, compression, handshake, harness), or none (with"
                        " --audit)")
    parser.add_argument("--harness", action="store_true",
                        help="run the harness-protocol cases even if the target does not answer"
                        " the protocol's detection rpc (they are n/a otherwise)")
    parser.add_argument("--list", action="store_true", help="list the catalogue and exit")
    parser.add_argument("--audit", action="store_true", help="also run the security audit")
    parser.add_argument("--audit-safe", action="store_true",
                        help="audit with the production-safe checks only (no flood)")
    parser.add_argument("--expect-tls", action="store_true",
                        help="audit: plain ws:// is a finding even on loopback")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--junit", metavar="FILE", help="write JUnit XML to FILE")
    options.add_arguments(parser, options.CREDENTIALS, help={
        "token": "auth token",
        "token_command": "run CMD once, before the first case; the line it prints is the token",
        "token_url": "GET URL once, before the first case; the token is the JSON body's token "
                     "(or access_token), else the text"})
    parser.add_argument("--timeout", type=positive, default=5.0, metavar="S",
                        help="bound on connecting, the handshake and each wait (default 5)")
    parser.add_argument("--silence", type=positive, default=1.0, metavar="S",
                        help="how long a peer must stay quiet on an incomplete frame (default 1)")
    parser.add_argument("--max-size", type=SIZE, default=1024 * 1024, metavar="BYTES",
                        help="the peer's message size limit (default 1 MiB)")


def _list(out: Output, cases: list[Case]) -> int:
    for case in cases:
        directions = ",".join(
            "c2s" if d is Direction.CLIENT_TO_SERVER else "s2c" for d in case.directions
        )
        out.event(
            "case",
            f"{case.id:<34} {case.group.value:<11} {case.reference:<13} {directions:<8}"
            f" {case.expected.describe()}",
            id=case.id, rfc=case.reference, group=case.group.value, title=case.title,
            construction=case.construction, directions=[d.value for d in case.directions],
            layer=case.layer.value,
            expected=case.expected.describe(),
        )
    return 0


def _show_result(out: Output, result: CaseResult) -> None:
    case = result.case
    human = (
        f"{result.verdict.value.upper():<15} {case.id:<34} [{case.reference}] expected:"
        f" {case.expected.describe()} | observed: {result.observed}"
    )
    out.event("case", human, **result.as_dict())


def _show_finding(out: Output, finding: Finding) -> None:
    safe = "" if finding.safe_for_production else " [floods]"
    human = f"AUDIT {finding.status.value.upper():<5} {finding.check:<18}{safe} {finding.detail}"
    out.event("finding", human, **finding.as_dict())


def run(args: argparse.Namespace) -> int:
    """Run `wsconsole probe`; returns the exit code."""
    out = Output(args.json)
    try:
        groups = SUITES[args.suite]
        cases = select(args.case) if args.case else select(groups=groups)
    except UnknownCase as exc:
        return fail_usage(str(exc))
    if args.list:
        try:
            return _list(out, cases if args.case else list(CATALOGUE))
        except BrokenPipeError:
            return 0
    if not args.url:
        return fail_usage("probe needs a URL (or --list)")
    try:
        conn = options.from_args(args, options.CREDENTIALS, url=args.url)
        target = probe_target(conn, asyncio.run(current_token(conn)))
    except OptionsError as exc:
        return fail_usage(exc.cli_line())
    except (TargetError, TokenError) as exc:
        return fail_usage(str(exc))
    if args.junit and not Path(args.junit).resolve().parent.is_dir():
        return fail_usage(f"--junit {args.junit}: directory does not exist")
    config = ProbeConfig(timeout=args.timeout, silence=args.silence, max_size=args.max_size)
    audit = args.audit or args.audit_safe
    audit_config = AuditConfig(message_limit=args.max_size, expect_tls=args.expect_tls or None)
    try:
        return asyncio.run(_probe(out, args, target, cases, config, audit, audit_config))
    except BrokenPipeError:  # output piped into `head` and the like
        return 1


async def _probe(out: Output, args: argparse.Namespace, target: Target, cases: list[Case],
                 config: ProbeConfig, audit: bool, audit_config: AuditConfig) -> int:
    problem = await preflight(target, config)
    if problem is not None:
        if args.json:
            out.event("target-error", url=target.url, error=problem)
        return fail_usage(f"cannot probe {target.url}: {problem}")
    results = await run_cases(cases, target, config, lambda r: _show_result(out, r),
                              harness=True if args.harness else None)
    findings: list[Finding] = []
    if audit:
        findings = await run_audit(target, config, audit_config, safe_only=args.audit_safe)
        for finding in findings:
            _show_finding(out, finding)
    policy = [r for r in results if r.close_code == 1008]
    if policy and not target.has_credentials:
        sys.stderr.write(
            f"wsconsole: note: {len(policy)} case(s) were closed with 1008 (policy violation);"
            " if the endpoint needs credentials, pass --token\n"
        )
    counts = summarize(results)
    failed_checks = sum(1 for f in findings if f.status is Status.FAIL)
    ok = all(r.verdict.ok for r in results) and failed_checks == 0
    human = (
        f"{counts['total']} cases: {counts['passed']} passed, {counts['lenient']} lenient,"
        f" {counts['failed']} failed, {counts['errors']} errors, {counts['skipped']} n/a"
    )
    if findings:
        human += f"; audit: {failed_checks} of {len(findings)} checks failed"
    out.event("summary", human, **counts, audit_failed=failed_checks,
              audit_checks=len(findings), verdict="pass" if ok else "fail")
    if args.junit:
        write_junit(args.junit, results, findings)
    return 0 if ok else 1


__all__ = ["HELP", "Verdict", "add_arguments", "run"]
