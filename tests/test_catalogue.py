"""The catalogue: coverage of issue 5's list, well-formed entries, and - without sockets - every
case's bytes fed to the `websockets` sans-I/O protocol on the receiving side of each of its
directions, which must react as the case's expectation says (the bytes a node injects into a
client are checked here as much as those the probe sends)."""

from __future__ import annotations

import codecs
import re

import pytest
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Opcode as WsOpcode
from websockets.protocol import CLIENT, OPEN, SERVER, Protocol
from websockets.server import ServerProtocol

from wsconsole.core.frames import Opcode, parse_frame
from wsconsole.faults.catalogue import (
    CATALOGUE,
    NO_STATUS,
    Case,
    Direction,
    Group,
    Kind,
    Layer,
    Reaction,
    UnknownCase,
    case_ids,
    get_case,
    select,
    server_bytes,
)
from wsconsole.faults.handshake import HandshakeObservation, judge_handshake
from wsconsole.faults.observe import Verdict
from wsconsole.faults.wire import parse_response

SMALL_LIMIT = 4096  # a small size limit keeps the over-limit cases cheap to build and feed

# Issue 5's list, item -> the case(s) covering it.
REQUIRED = {
    "reserved bits": ["rsv1-set", "rsv2-set", "rsv3-set"],
    "reserved data opcode": ["opcode-3", "opcode-7"],
    "reserved control opcode": ["opcode-b", "opcode-f"],
    "unmasked client frame": ["unmasked-client-frame"],
    "masked server frame": ["masked-server-frame"],
    "control frame over 125 bytes": ["ping-too-long", "close-too-long"],
    "fragmented control frame": ["fragmented-ping", "fragmented-close"],
    "continuation with nothing to continue": ["continuation-first"],
    "new data frame inside a fragmented message": ["data-inside-fragmented"],
    "invalid UTF-8, whole": ["invalid-utf8-text"],
    "invalid UTF-8, split across fragments": ["invalid-utf8-fragmented"],
    "close payload of length 1": ["close-length-1"],
    "invalid close code": ["close-code-999", "close-code-1005", "close-code-5000"],
    "invalid UTF-8 close reason": ["close-reason-invalid-utf8"],
    "64-bit length with high bit": ["length-64bit-msb"],
    "payload over the size limit": ["payload-over-limit"],
    "truncated header then silence": ["truncated-header"],
    "ping whose payload must be echoed": ["ping-echo"],
    "unsolicited pong": ["unsolicited-pong"],
    "data after a close": ["data-after-close"],
    "invalid JSON": ["app-bad-json"],
    "unknown op": ["app-unknown-type"],
    "wrong types": ["app-join-room-number", "app-join-since-string"],
    "oversized fields": ["app-oversized-room", "app-oversized-id"],
    # issue 16: the handshake group
    "missing or duplicate key": ["hs-no-key", "hs-duplicate-key"],
    "bad key length": ["hs-key-short", "hs-key-long"],
    "wrong or missing version": ["hs-version-wrong", "hs-version-missing"],
    "missing Upgrade / Connection": ["hs-no-upgrade", "hs-no-connection"],
    "no Host, POST, HTTP/1.0": ["hs-no-host", "hs-post", "hs-http10"],
    "oversized headers, foreign Origin": ["hs-oversized-headers", "hs-foreign-origin"],
    "unrequested subprotocol": ["hs-unoffered-subprotocol"],
    # the compression group
    "RSV1 without negotiated deflate": ["rsv1-set"],
    "corrupt deflate data": ["deflate-corrupt-data"],
    "compressed control frame": ["deflate-compressed-ping"],
    "deflate window parameters": ["deflate-server-window-invalid", "deflate-client-window-invalid",
                                  "deflate-server-window-9"],
    # UTF-8 across fragments
    "UTF-8 split across fragments": ["valid-utf8-fragmented", "invalid-utf8-fragmented",
                                     "utf8-code-point-in-three-fragments",
                                     "utf8-truncated-at-end", "utf8-invalid-first-fragment"],
}


def test_catalogue_size_and_coverage() -> None:
    assert len(CATALOGUE) >= 30
    assert len(select(groups=[Group.HANDSHAKE])) >= 12
    ids = set(case_ids())
    for item, wanted in REQUIRED.items():
        missing = [case_id for case_id in wanted if case_id not in ids]
        assert not missing, f"{item}: {missing}"


def test_entries_are_complete() -> None:
    seen = set()
    for case in CATALOGUE:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", case.id), case.id
        assert case.id not in seen
        seen.add(case.id)
        assert case.title and case.construction and case.directions
        if case.layer is Layer.RFC:
            assert re.fullmatch(r"\d+(\.\d+)*", case.section), case.section
            assert case.rfc in (6455, 7692) and case.reference.endswith(case.section)
        exp = case.expected
        if exp.reaction in (Reaction.FAIL, Reaction.CLOSE):
            assert exp.codes, case.id
        if exp.reaction is Reaction.FAIL:
            assert set(exp.codes) <= {1002, 1007, 1009}, case.id
        handshake_reactions = (Reaction.REFUSE, Reaction.NOT_UPGRADED, Reaction.NO_UNOFFERED,
                               Reaction.DECLINE, Reaction.WINDOW)
        assert (case.kind is Kind.HANDSHAKE) == (exp.reaction in handshake_reactions), case.id
        if case.kind is Kind.HANDSHAKE or case.extension:
            assert case.directions == (Direction.CLIENT_TO_SERVER,), case.id
        if exp.reaction is Reaction.ECHO:
            assert exp.echo is not None
        if exp.reaction is Reaction.APP_ERROR:
            assert exp.error_code and case.directions == (Direction.CLIENT_TO_SERVER,)
        assert exp.describe()


def test_lookup_and_selection() -> None:
    assert get_case("ping-echo").section == "5.5.2"
    with pytest.raises(UnknownCase, match="unknown case id 'nope'"):
        get_case("nope")
    assert [c.id for c in select(["close-normal", "rsv1-set"])] == ["close-normal", "rsv1-set"]
    harness = select(layers=[Layer.HARNESS])
    assert harness and all(c.id.startswith("app-") for c in harness)
    s2c = select(direction=Direction.SERVER_TO_CLIENT)
    assert "masked-server-frame" in [c.id for c in s2c]
    assert "unmasked-client-frame" not in [c.id for c in s2c]
    with pytest.raises(ValueError, match="not defined"):
        get_case("unmasked-client-frame").wire(Direction.SERVER_TO_CLIENT)


def frames_of(data: bytes) -> list:
    """Every complete frame in data (the over-limit cases stop at the header)."""
    frames = []
    while True:
        parsed = parse_frame(data)
        if parsed is None:
            return frames
        frame, used = parsed
        frames.append(frame)
        data = data[used:]


@pytest.mark.parametrize("case", select(layers=None), ids=lambda c: c.id)
def test_masking_follows_the_direction(case: Case) -> None:
    if case.kind is Kind.HANDSHAKE:
        assert case.wire(Direction.CLIENT_TO_SERVER).endswith(b"\r\n\r\n")
        return
    for direction in case.directions:
        frames = frames_of(case.wire(direction, max_size=SMALL_LIMIT))
        should_mask = direction is Direction.CLIENT_TO_SERVER
        if case.id in ("unmasked-client-frame", "masked-server-frame"):
            should_mask = not should_mask
        assert all(f.masked == should_mask for f in frames), (case.id, direction)


def test_server_bytes_are_unmasked_frames() -> None:
    assert server_bytes("ping-echo") == b"\x89\x0ewsconsole-ping"
    assert server_bytes("close-length-1") == b"\x88\x01\x03"
    assert server_bytes("truncated-header") == b"\x81"
    assert len(server_bytes("payload-over-limit", max_size=100)) == 2 + 101


def receive(direction: Direction, data: bytes, deflate: bool = False) -> dict[str, object]:
    """Feed bytes to websockets' receiving side; report its reaction like the probe would.

    Text messages are decoded as websockets' connection layer does (that is where it checks
    UTF-8), so the reaction matches a websockets peer that reads its messages. `deflate`:
    the connection negotiated permessage-deflate.
    """
    side = SERVER if direction is Direction.CLIENT_TO_SERVER else CLIENT
    proto = Protocol(side, state=OPEN, max_size=SMALL_LIMIT)
    if deflate:
        proto.extensions = [PerMessageDeflate(False, False, 15, 15)]
    proto.receive_data(data)
    sent: list = []
    for chunk in proto.data_to_send():
        sent.extend(frames_of(chunk))
    close = next((f for f in sent if f.opcode == Opcode.CLOSE), None)
    if close is None:
        decoder = None
        for event in proto.events_received():
            try:
                if event.opcode is WsOpcode.TEXT:
                    decoder = codecs.getincrementaldecoder("utf-8")()
                    decoder.decode(event.data, event.fin)
                elif event.opcode is WsOpcode.CONT and decoder is not None:
                    decoder.decode(event.data, event.fin)
            except UnicodeDecodeError:
                return {"close": 1007, "pongs": []}
    code = None
    if close is not None:
        code = close.close_code if close.payload else NO_STATUS
    return {
        "close": code,
        "pongs": [f.payload for f in sent if f.opcode == Opcode.PONG],
        "messages": [e for e in proto.events_received() if e.opcode is not WsOpcode.CLOSE],
    }


# websockets reads the 64-bit length as unsigned and refuses it as too big (1009), which the
# catalogue documents as its lenient alternative; nothing else departs from the catalogue.
WEBSOCKETS_DEPARTS = {"length-64bit-msb": 1009}


FRAME_CASES = [c for c in select(layers=[Layer.RFC]) if c.kind is Kind.FRAMES]


@pytest.mark.parametrize("case", FRAME_CASES, ids=lambda c: c.id)
def test_websockets_reacts_as_catalogued(case: Case) -> None:
    for direction in case.directions:
        seen = receive(direction, case.wire(direction, max_size=SMALL_LIMIT),
                       deflate=case.extension is not None)
        exp = case.expected
        if exp.reaction is Reaction.FAIL:
            wanted = WEBSOCKETS_DEPARTS.get(case.id, exp.codes[0])
            assert seen["close"] == wanted, (case.id, direction, seen)
        elif exp.reaction is Reaction.CLOSE:
            assert seen["close"] in exp.codes, (case.id, direction, seen)
        elif exp.reaction is Reaction.ECHO:
            assert seen["close"] is None and seen["pongs"] == [exp.echo], (case.id, seen)
        elif exp.reaction is Reaction.WAIT:
            assert seen["close"] is None and seen["pongs"] == [] and not seen["messages"]
        else:  # ACCEPT / IGNORE
            assert seen["close"] is None and seen["pongs"] == [], (case.id, seen)


# websockets 17 departs from RFC 6455 on two handshake checks: a wrong version gets 400
# without Sec-WebSocket-Version (4.4 requires the header), and a request without Host is
# upgraded; it accepts any Origin unless told which to allow (10.2 leaves that to it).
WEBSOCKETS_HANDSHAKE = {"hs-version-wrong": Verdict.FAIL, "hs-no-host": Verdict.FAIL,
                        "hs-foreign-origin": Verdict.LENIENT}


@pytest.mark.parametrize("case", [c for c in CATALOGUE if c.kind is Kind.HANDSHAKE],
                         ids=lambda c: c.id)
def test_websockets_answers_handshakes_as_judged(case: Case) -> None:
    """The request of every handshake case, fed to websockets' sans-I/O server."""
    server = ServerProtocol(extensions=[ServerPerMessageDeflateFactory()])
    server.receive_data(case.wire(Direction.CLIENT_TO_SERVER))
    requests = server.events_received()
    if requests:  # else websockets already wrote its refusal (e.g. 431 for the long header)
        server.send_response(server.accept(requests[0]))
    head = b"".join(server.data_to_send()).split(b"\r\n\r\n", 1)[0]
    seen = HandshakeObservation(*parse_response(head))
    verdict, reason = judge_handshake(case.expected, seen)
    assert verdict is WEBSOCKETS_HANDSHAKE.get(case.id, Verdict.PASS), (case.id, reason,
                                                                        seen.describe())


def test_docs_table_lists_every_case() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "faults.md").read_text()
    doc = doc.split("## The catalogue", 1)[1]
    rows = re.findall(r"^\| `([a-z0-9-]+)` \| ([^|]+) \|", doc, re.MULTILINE)
    assert [case_id for case_id, _ in rows] == case_ids()
    for case_id, reference in rows:
        assert get_case(case_id).reference == reference.strip()
