"""Autobahn groups 1-7 and 10, with kosoku: the harness's echo endpoint and the console's
client, each next to the `websockets` it is built on, run the same way in the same test.

Neither may do worse than the library (fewer OK, more FAILED), each improvement the
harness claims holds (fail-fast UTF-8 in fragments, a close between fragments), and every
case that is not OK is one docs/conformance.md explains. The whole suite, group 9 and the
compression groups included, is `make conformance`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.autobahnkit import (
    FAST_GROUPS,
    Tally,
    console_client_case,
    run_client_suite,
    run_server_suite,
    websockets_client_case,
    websockets_echo_server,
)
from wsconsole.harness.cluster import Cluster, ClusterConfig

DOC = Path(__file__).resolve().parent.parent / "docs" / "conformance.md"
IMPROVED = ("6.4.1", "6.4.2", "7.1.5")  # non-strict or failed with websockets alone

pytestmark = pytest.mark.timeout(300)


def explained_cases() -> set[str]:
    """Case ids the doc explains: the first column of its "Cases that are not OK" table."""
    text = DOC.read_text()
    section = text.split("## Cases that are not OK", 1)[1].split("\n## ", 1)[0]
    found: set[str] = set()
    for cell in re.findall(r"^\| ([0-9][^|]*) \|", section, re.MULTILINE):
        found.update(re.findall(r"\d+(?:\.\d+)+", cell))
    return found


def assert_no_worse(subject: Tally, library: Tally) -> None:
    """At least as good as the library it is built on, and every miss explained."""
    ours, theirs = subject.counts, library.counts
    summary = f"{subject.subject}: {subject.line()}; {library.subject}: {library.line()}"
    assert len(subject.results) == len(library.results) > 200, summary
    assert ours["FAILED"] + ours["ERROR"] <= theirs["FAILED"] + theirs["ERROR"], summary
    assert ours["OK"] >= theirs["OK"], summary
    for case in IMPROVED:
        assert subject.verdict_of(case) == "OK", (case, summary)
    unexplained = set(subject.not_ok()) - explained_cases()
    assert not unexplained, f"not OK and not in docs/conformance.md: {unexplained}; {summary}"


async def test_harness_echo_endpoint_through_the_balancer() -> None:
    async with Cluster(ClusterConfig(nodes=1)) as cluster:
        url = f"{cluster.url}/echo?token={cluster.token('autobahn')}"
        harness = await run_server_suite("wsconsole harness", url, FAST_GROUPS)
    async with websockets_echo_server() as url:
        library = await run_server_suite("websockets server", url, FAST_GROUPS)
    assert_no_worse(harness, library)


async def test_console_client() -> None:
    client = await run_client_suite("wsconsole client", console_client_case, FAST_GROUPS)
    library = await run_client_suite("websockets client", websockets_client_case, FAST_GROUPS)
    assert_no_worse(client, library)
