"""`make conformance`: the whole Autobahn suite (every group) for the harness and the
console's client, next to `websockets`, with the table written into docs/conformance.md.

    python -m tests.conformance_report [--write docs/conformance.md] [--cases 9.*]

The harness runs as `wsconsole harness --compression` would (one node behind the balancer,
every other limit at its default: 1 MiB messages, 100 messages/s), so group 9 meets the
harness's own limits and groups 12 and 13 have permessage-deflate to test; the cases that
send 1000 messages back to back run a second time with `--rate 0`; the console's
client runs with its defaults (1 MiB messages, deflate offered). The reference server and
client are `websockets` with its defaults. The table replaces what lies between the
`<!-- conformance:begin -->` and `<!-- conformance:end -->` markers of the doc.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
import time
from collections import defaultdict
from pathlib import Path

import websockets

from tests.autobahnkit import (
    VERDICTS,
    Tally,
    console_client_case,
    run_client_suite,
    run_server_suite,
    websockets_client_case,
    websockets_echo_server,
)
from wsconsole.harness.cluster import Cluster, ClusterConfig, Limits

BEGIN, END = "<!-- conformance:begin -->", "<!-- conformance:end -->"
# The cases that send 1000 messages back to back (round trips, compression): the harness's
# 100 messages/s refuses most of them on purpose; run again without that limit to show
# what lies beneath it.
RATE_BOUND = ("9.7.*", "9.8.*", "12.*", "13.*")


async def run_all(cases: list[str]) -> list[Tally]:
    """Every subject through `cases`, one after another (they share two cores)."""
    tallies = []
    started = time.monotonic()
    for subject, rate, selection in (("wsconsole harness", Limits.rate, cases),
                                     ("harness, no rate limit", 0.0, _rate_bound(cases))):
        if not selection:
            continue
        config = ClusterConfig(nodes=1, limits=Limits(compression=True, rate=rate))
        async with Cluster(config) as cluster:
            url = f"{cluster.url}/echo?token={cluster.token('autobahn', ttl=24 * 3600)}"
            tallies.append(await run_server_suite(subject, url, selection))
        _progress(tallies[-1], started)
    async with websockets_echo_server() as url:
        tallies.append(await run_server_suite("websockets server", url, cases))
    _progress(tallies[-1], started)
    tallies.append(await run_client_suite("wsconsole client", console_client_case, cases))
    _progress(tallies[-1], started)
    tallies.append(await run_client_suite("websockets client", websockets_client_case, cases))
    _progress(tallies[-1], started)
    return tallies


def _rate_bound(cases: list[str]) -> list[str]:
    """The rate-bound globs among `cases` (all of them for the whole suite)."""
    if cases == ["*"]:
        return list(RATE_BOUND)
    return [case for case in cases if any(case.startswith(b.rstrip("*")) for b in RATE_BOUND)]


def _progress(tally: Tally, started: float) -> None:
    print(f"{time.monotonic() - started:7.0f} s  {tally.subject}: {tally.line()}",
          file=sys.stderr, flush=True)


def table(tallies: list[Tally]) -> str:
    """Markdown: verdict counts per group and subject, then the cases that were not OK."""
    groups = sorted({r.case_id.split(".")[0] for t in tallies for r in t.results}, key=int)
    lines = [
        f"Measured {datetime.date.today().isoformat()} with `make conformance` "
        f"(websockets {websockets.__version__}): OK / NON-STRICT / INFORMATIONAL / "
        "UNIMPLEMENTED / FAILED per group.",
        "",
        "| group | " + " | ".join(t.subject for t in tallies) + " |",
        "|---|" + "---|" * len(tallies),
    ]
    for group in groups:
        cells = []
        for tally in tallies:
            counts: dict[str, int] = defaultdict(int)
            for result in tally.results:
                if result.case_id.split(".")[0] == group:
                    counts[Tally.verdict(result)] += 1
            cells.append(" / ".join(str(counts[v]) for v in VERDICTS[:5])
                         + (f" (+{counts['ERROR']} error)" if counts["ERROR"] else ""))
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    lines.append("| all | " + " | ".join(t.line() for t in tallies) + " |")
    lines += ["", "Not OK, by subject (case: verdict):", ""]
    for tally in tallies:
        missed = ", ".join(f"{case} {verdict}" for case, verdict in tally.not_ok().items())
        lines.append(f"- **{tally.subject}**: {missed or 'none'}")
    return "\n".join(lines)


def write(doc: Path, text: str) -> None:
    """Replace the marked section of `doc` with `text`."""
    content = doc.read_text()
    head, _, rest = content.partition(BEGIN)
    _, _, tail = rest.partition(END)
    if not rest:
        raise SystemExit(f"{doc} has no {BEGIN} ... {END} section")
    doc.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main() -> int:
    """Run, print the table, and write it into the doc when asked."""
    parser = argparse.ArgumentParser(prog="python -m tests.conformance_report")
    parser.add_argument("--write", metavar="DOC", type=Path, help="update this document")
    parser.add_argument("--cases", action="append", metavar="GLOB",
                        help="case ids or globs (default: every case)")
    args = parser.parse_args()
    tallies = asyncio.run(run_all(args.cases or ["*"]))
    text = table(tallies)
    print(text)
    if args.write is not None:
        write(args.write, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
