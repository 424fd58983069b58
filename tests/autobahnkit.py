"""Autobahn's case files, run with kosoku, against the harness and the console's client.

kosoku (PyPI) runs the Autobahn TestSuite's own Python case files with a runner in Rust:
`run_fuzzingclient(url)` drives a server under test (one connection per case, each
message expected back as an echo), `run_fuzzingserver()` serves the cases to a client
under test, which connects to `/getCaseCount`, then `/runCase?case=N&agent=A` for each case
and echoes every message until the server closes, then `/updateReports?agent=A`.

The subjects, each paired with the library it is built on, run the same way in the same
process so the figures compare: a harness node's echo endpoint (through the balancer) and
a plain `websockets` echo server; the console's `ReconnectingClient` (echoing with its
`on_message` hook) and a plain `websockets` client. Imported by tests/test_autobahn.py and
by tests/conformance_report.py (`make conformance`); it holds no tests of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import kosoku
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.client import ClientOptions, ReconnectingClient

# Groups 1-7 (framing, pings, reserved bits, opcodes, fragments, UTF-8, closing) and 10
# (a large fragmented message): the fast part, in `make test`.
FAST_GROUPS = ("1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*")
VERDICTS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "ERROR")
CASE_TIMEOUT = 60.0  # one case, client side: the longest of group 9 takes a few seconds

CaseRunner = Callable[[str], Awaitable[None]]  # runs one case given its URL


@dataclass
class Tally:
    """One subject's results: the verdict per case and the cases that were not OK."""

    subject: str
    results: list[kosoku.CaseResult] = field(default_factory=list)

    @staticmethod
    def verdict(result: kosoku.CaseResult) -> str:
        """The case's verdict as Autobahn's index shows it: its message-exchange verdict,
        FAILED when the closing handshake failed, and a close verdict that is merely
        informational (or not strict) carried over to an OK exchange."""
        behaviour, close = result.behavior.value, result.behavior_close.value
        if behaviour in ("UNIMPLEMENTED", "ERROR"):
            return behaviour
        if not result.passed:
            return "FAILED"
        if behaviour == "OK" and close != "OK":
            return "INFORMATIONAL" if close == "INFORMATIONAL" else "NON-STRICT"
        return behaviour

    @property
    def counts(self) -> Counter[str]:
        """How many cases got each verdict."""
        return Counter(self.verdict(r) for r in self.results)

    def verdict_of(self, case_id: str) -> str | None:
        """The verdict of one case (None when it was not run)."""
        for result in self.results:
            if result.case_id == case_id:
                return self.verdict(result)
        return None

    def not_ok(self) -> dict[str, str]:
        """Case id -> verdict of every case that was not OK."""
        return {r.case_id: self.verdict(r) for r in self.results if self.verdict(r) != "OK"}

    def line(self) -> str:
        """'232 OK / 12 NON-STRICT / ...' with only the verdicts that occur."""
        counts = self.counts
        return " / ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v])


async def run_server_suite(
    subject: str, url: str, cases: Sequence[str], concurrency: int = 2
) -> Tally:
    """Drive the server at `url` (an echo endpoint) through `cases`."""
    try:
        results = await kosoku.run_fuzzingclient(url, list(cases), None,
                                                 concurrency=concurrency)
    except kosoku.FailureError as failure:  # some case failed: its results are all there
        results = failure.results
    return Tally(subject, list(results))


async def run_client_suite(subject: str, run_case: CaseRunner, cases: Sequence[str]) -> Tally:
    """Serve `cases` to a client under test: `run_case(url)` connects to one case's URL and
    echoes until the server closes."""
    agent = subject.replace(" ", "-")
    async with kosoku.run_fuzzingserver(list(cases), None, host="127.0.0.1", port=0) as server:
        base = f"ws://{server.address}:{server.port}"
        async with connect(f"{base}/getCaseCount") as ws:
            count = int(await ws.recv())
        for number in range(1, count + 1):
            async with asyncio.timeout(CASE_TIMEOUT):
                await run_case(f"{base}/runCase?case={number}&agent={agent}")
        async with connect(f"{base}/updateReports?agent={agent}") as ws:
            with contextlib.suppress(ConnectionClosed):
                await ws.recv()
        try:
            results = await asyncio.wait_for(server.get_result(), CASE_TIMEOUT)
        except kosoku.FailureError as failure:
            results = failure.results
    return Tally(subject, list(results))


async def console_client_case(url: str) -> None:
    """The client under test: the console's ReconnectingClient (its defaults, no retry),
    sending every message back with `on_message` until the case ends."""
    options = ClientOptions(url=url, backoff=BackoffPolicy(max_attempts=0))
    client = ReconnectingClient(options, name="autobahn")

    async def echo(message: str | bytes) -> None:
        await client.send(message)

    client.on_message = echo
    await client.start()
    await client.wait_closed()


async def websockets_client_case(url: str) -> None:
    """The reference client: `websockets` connect() echoing every message."""
    with contextlib.suppress(ConnectionClosed, OSError):
        async with connect(url, max_size=None) as ws:
            async for message in ws:
                await ws.send(message)


@contextlib.asynccontextmanager
async def websockets_echo_server(**options: object) -> AsyncIterator[str]:
    """The reference server: a plain `websockets` echo server; yields its URL."""

    async def echo(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, **options) as server:  # type: ignore[arg-type]
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
