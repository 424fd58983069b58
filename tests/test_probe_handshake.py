"""The probe's handshake and compression groups against real servers on 127.0.0.1: a plain
`websockets` server (reported as it is: lenient on a wrong version and a missing Host), the
same made to follow RFC 6455 (every case passes), and a broken server that upgrades
anything (the cases fail). The verdict rules themselves are checked without sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import serve

from tests.probe_support import broken_server, echo, rfc_strict
from tests.support import MS
from wsconsole.faults.catalogue import Group, Kind, get_case, select
from wsconsole.faults.handshake import HandshakeObservation, judge_handshake
from wsconsole.faults.observe import Observation, Verdict
from wsconsole.faults.probe import run_case, run_cases
from wsconsole.faults.target import ProbeConfig, Target

CONFIG = ProbeConfig(timeout=5000 * MS, silence=300 * MS)
HANDSHAKE = select(groups=[Group.HANDSHAKE])
COMPRESSION = select(groups=[Group.COMPRESSION])


@pytest.fixture
async def plain_url() -> AsyncIterator[str]:
    async with serve(echo, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


@pytest.fixture
async def strict_url() -> AsyncIterator[str]:
    async with serve(echo, "127.0.0.1", 0, process_request=rfc_strict) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


# ---------------------------------------------------------------- verdict rules (pure)

@pytest.mark.parametrize(("case_id", "seen", "verdict"), [
    ("hs-version-wrong", HandshakeObservation(426, headers={"sec-websocket-version": "13"}),
     Verdict.PASS),
    ("hs-version-wrong", HandshakeObservation(400, headers={"sec-websocket-version": "13, 8"}),
     Verdict.LENIENT),
    ("hs-version-wrong", HandshakeObservation(400), Verdict.FAIL),  # the header is a MUST
    ("hs-no-key", HandshakeObservation(400), Verdict.PASS),
    ("hs-no-key", HandshakeObservation(500), Verdict.LENIENT),
    ("hs-no-key", HandshakeObservation(missing="closed", detail="closed"), Verdict.LENIENT),
    ("hs-no-key", HandshakeObservation(missing="timeout", detail="silent"), Verdict.FAIL),
    ("hs-no-key", HandshakeObservation(101), Verdict.FAIL),
    ("hs-no-host", HandshakeObservation(403), Verdict.LENIENT),
    ("hs-foreign-origin", HandshakeObservation(101), Verdict.LENIENT),
    ("hs-foreign-origin", HandshakeObservation(403), Verdict.PASS),
    ("hs-no-upgrade", HandshakeObservation(200), Verdict.PASS),
    ("hs-no-upgrade", HandshakeObservation(101), Verdict.FAIL),
    ("hs-unoffered-subprotocol", HandshakeObservation(101), Verdict.PASS),
    ("hs-unoffered-subprotocol",
     HandshakeObservation(101, headers={"sec-websocket-protocol": "chat"}), Verdict.FAIL),
    ("hs-unoffered-subprotocol", HandshakeObservation(400), Verdict.LENIENT),
    ("deflate-unknown-parameter", HandshakeObservation(101), Verdict.PASS),
    ("deflate-unknown-parameter",
     HandshakeObservation(101, headers={"sec-websocket-extensions": "permessage-deflate"}),
     Verdict.FAIL),
    ("deflate-server-window-9", HandshakeObservation(101, headers={
        "sec-websocket-extensions": "permessage-deflate; server_max_window_bits=9"}),
     Verdict.PASS),
    ("deflate-server-window-9", HandshakeObservation(101, headers={
        "sec-websocket-extensions": "permessage-deflate; server_max_window_bits=12"}),
     Verdict.FAIL),
    ("deflate-server-window-9", HandshakeObservation(101, headers={
        "sec-websocket-extensions": "permessage-deflate"}), Verdict.FAIL),
])
def test_judge_handshake(case_id: str, seen: HandshakeObservation, verdict: Verdict) -> None:
    got, reason = judge_handshake(get_case(case_id).expected, seen)
    assert got is verdict, reason
    assert reason and (seen.describe() or seen.missing)


# ---------------------------------------------------------------- real servers

# websockets 17 departs from RFC 6455 here (what the probe must report, not hide): a wrong
# version is refused with 400 but without Sec-WebSocket-Version (4.4 requires it), and a
# request without Host is upgraded. It takes any Origin unless told which (10.2 allows).
PLAIN_WEBSOCKETS = {"hs-version-wrong": Verdict.FAIL, "hs-no-host": Verdict.FAIL,
                    "hs-foreign-origin": Verdict.LENIENT}


async def test_handshake_group_against_plain_websockets(plain_url: str) -> None:
    results = await run_cases(HANDSHAKE, Target(plain_url), CONFIG)
    verdicts = {r.case.id: r.verdict for r in results}
    expected = {c.id: PLAIN_WEBSOCKETS.get(c.id, Verdict.PASS) for c in HANDSHAKE}
    assert verdicts == expected, {r.case.id: r.observed for r in results}
    observed = {r.case.id: r.observed for r in results}
    assert observed["hs-version-wrong"].startswith("HTTP 400")
    assert observed["hs-no-host"].startswith("HTTP 101")
    assert observed["hs-oversized-headers"].startswith("HTTP 431")
    assert observed["hs-post"].startswith("HTTP 405")
    assert observed["hs-http10"].startswith("HTTP 505")
    assert observed["hs-no-upgrade"].startswith("HTTP 426")


async def test_every_rfc_handshake_rule_passes_on_a_strict_server(strict_url: str) -> None:
    results = await run_cases([*HANDSHAKE, *COMPRESSION], Target(strict_url), CONFIG)
    verdicts = {r.case.id: r.verdict for r in results}
    expected = {c.id: Verdict.PASS for c in [*HANDSHAKE, *COMPRESSION]}
    expected["hs-foreign-origin"] = Verdict.LENIENT  # no origins= given: any Origin is taken
    assert verdicts == expected, {r.case.id: (r.observed, r.reason) for r in results}
    version = next(r for r in results if r.case.id == "hs-version-wrong")
    assert version.observed == "HTTP 426 Upgrade Required; sec-websocket-version: 13"
    window = next(r for r in results if r.case.id == "deflate-server-window-9")
    assert "server_max_window_bits=9" in window.observed


async def test_a_server_that_upgrades_anything_fails_the_groups() -> None:
    server = await broken_server()
    async with server:
        target = Target(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/")
        # It never reacts to a bad frame: every wait for a failure runs out, so keep them short.
        quick = ProbeConfig(timeout=1000 * MS, silence=300 * MS)
        results = await run_cases([*HANDSHAKE, *COMPRESSION], target, quick)
    verdicts = {r.case.id: r.verdict for r in results}
    tolerated = {"hs-foreign-origin": Verdict.LENIENT,  # accepting any Origin is allowed
                 "deflate-valid-message": Verdict.PASS}  # it answers pings, so it stays open
    assert verdicts == {c.id: tolerated.get(c.id, Verdict.FAIL)
                        for c in [*HANDSHAKE, *COMPRESSION]}, {
        r.case.id: (r.observed, r.reason) for r in results}
    by_id = {r.case.id: r for r in results}
    assert by_id["hs-unoffered-subprotocol"].reason == (
        "chose subprotocol 'chat', which the client did not offer")
    assert "server_max_window_bits=15" in by_id["deflate-server-window-9"].reason
    assert by_id["deflate-corrupt-data"].reason == "did not fail the connection"


async def test_compression_cases_need_deflate_and_say_so() -> None:
    async with serve(echo, "127.0.0.1", 0, compression=None) as server:
        target = Target(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/")
        frames = [c for c in COMPRESSION if c.kind is Kind.FRAMES and c.extension]
        results = await run_cases(frames, target, CONFIG)
        rsv1 = await run_case(get_case("rsv1-set"), target, CONFIG)
    assert {r.verdict for r in results} == {Verdict.NOT_APPLICABLE}
    assert all(r.reason == "the server did not accept permessage-deflate" for r in results)
    assert rsv1.verdict is Verdict.PASS  # RSV1 without deflate: still a protocol error


async def test_compressed_frames_on_websockets_with_deflate(plain_url: str) -> None:
    frames = [c for c in COMPRESSION if c.kind is Kind.FRAMES]
    results = {r.case.id: r for r in await run_cases(frames, Target(plain_url), CONFIG)}
    assert all(r.verdict is Verdict.PASS for r in results.values()), {
        i: r.observed for i, r in results.items()}
    corrupt = results["deflate-corrupt-data"].observation
    assert isinstance(corrupt, Observation) and corrupt.close_code == 1002
