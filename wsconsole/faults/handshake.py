"""Handshake cases: send one opening-handshake request with one thing wrong, read the HTTP
answer, judge it against the case (`judge_handshake` is pure: tested without sockets).

A refusal passes with a 4xx (the case's preferred status, when it names one, and any
header it requires: 426's Sec-WebSocket-Version); another 4xx, a 5xx or a connection closed
without an answer is lenient; an upgrade, a refusal without the required header, or silence
fails. Offers a server must decline pass when the 101 leaves the extension out (or, for a
window size, names one small enough); refusing the whole handshake is lenient. The table
is in docs/faults.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from wsconsole.core.frames import Opcode, close_payload, encode_frame
from wsconsole.faults.case import DEFLATE, Case, Direction, Expectation, Reaction
from wsconsole.faults.handshakecases import UNOFFERED_SUBPROTOCOL
from wsconsole.faults.observe import Verdict
from wsconsole.faults.target import ProbeConfig, Target
from wsconsole.faults.wire import HandshakeError, Pipe, connect, new_key, read_response

SHOWN_HEADERS = ("sec-websocket-version", "sec-websocket-protocol", "sec-websocket-extensions",
                 "upgrade")


@dataclass
class HandshakeObservation:
    """The server's answer to a handshake case: a status and headers, or why there was none."""

    status: int | None = None
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    missing: str | None = None  # "closed", "timeout" or "not-http" when no response came
    detail: str = ""

    def describe(self) -> str:
        """One line, e.g. "HTTP 426 Upgrade Required; sec-websocket-version: 13"."""
        if self.status is None:
            return self.detail
        parts = [f"HTTP {self.status} {self.reason}".rstrip()]
        parts += [f"{name}: {self.headers[name]}" for name in SHOWN_HEADERS
                  if name in self.headers and not (name == "upgrade" and self.status == 101)]
        return "; ".join(parts)


def _no_answer(seen: HandshakeObservation) -> tuple[Verdict, str]:
    if seen.missing == "closed":
        return Verdict.LENIENT, "closed the connection without an HTTP answer"
    return Verdict.FAIL, seen.detail or "no HTTP answer"


def judge_handshake(expected: Expectation, seen: HandshakeObservation) -> tuple[Verdict, str]:
    """Verdict of the server's answer against the case's expectation (see the table above)."""
    status = seen.status
    reaction = expected.reaction
    if status is None:
        if reaction is Reaction.NOT_UPGRADED and seen.missing == "closed":
            return Verdict.PASS, "did not upgrade (closed the connection)"
        return _no_answer(seen)
    if reaction is Reaction.NOT_UPGRADED:
        if status == 101:
            return Verdict.FAIL, "upgraded a request that is not a WebSocket handshake"
        return Verdict.PASS, f"did not upgrade (HTTP {status})"
    if reaction is Reaction.REFUSE:
        return _refused(expected, seen)
    if 400 <= status < 500:
        return Verdict.LENIENT, f"refused the whole handshake with HTTP {status}"
    if status != 101:
        return Verdict.FAIL, f"answered HTTP {status} instead of 101 or a refusal"
    if reaction is Reaction.NO_UNOFFERED:
        chosen = seen.headers.get("sec-websocket-protocol")
        if chosen is not None and chosen != UNOFFERED_SUBPROTOCOL:
            return Verdict.FAIL, f"chose subprotocol {chosen!r}, which the client did not offer"
        return Verdict.PASS, "named no subprotocol the client did not offer"
    accepted = seen.headers.get("sec-websocket-extensions", "")
    params = _deflate_params(accepted)
    if params is None:
        return Verdict.PASS, f"declined the offer and upgraded without {DEFLATE}"
    if reaction is Reaction.DECLINE:
        return Verdict.FAIL, f"accepted an offer it must decline: {accepted!r}"
    window = params.get("server_max_window_bits")
    if window is None or not window.isdigit() or int(window) > (expected.window or 15):
        return Verdict.FAIL, (f"accepted with server_max_window_bits={window}, more than the "
                              f"{expected.window} asked for" if window else
                              "accepted without answering server_max_window_bits")
    return Verdict.PASS, f"accepted with server_max_window_bits={window}"


def _refused(expected: Expectation, seen: HandshakeObservation) -> tuple[Verdict, str]:
    status = seen.status or 0
    if status == 101:
        if 101 in expected.lenient:
            return Verdict.LENIENT, "upgraded (the RFC leaves this check to the server)"
        return Verdict.FAIL, "upgraded a request the RFC says to refuse"
    if expected.header is not None and 400 <= status < 500:
        name, value = expected.header
        values = [v.strip() for v in seen.headers.get(name, "").split(",")]
        if value not in values:
            return Verdict.FAIL, f"refused with {status} but without '{name}: {value}'"
    if 400 <= status < 500:
        if not expected.codes or status in expected.codes:
            return Verdict.PASS, f"refused with HTTP {status}"
        best = "/".join(map(str, expected.codes))
        return Verdict.LENIENT, f"refused with HTTP {status}; the best answer is {best}"
    if status in expected.codes:
        return Verdict.PASS, f"refused with HTTP {status}"
    if status >= 500:
        return Verdict.LENIENT, f"refused, but with a server error (HTTP {status})"
    return Verdict.LENIENT, f"answered HTTP {status} instead of an error (but did not upgrade)"


def _deflate_params(header: str) -> dict[str, str] | None:
    """The parameters of the permessage-deflate the server accepted, or None."""
    for offer in header.split(","):
        name, *params = [p.strip() for p in offer.split(";")]
        if name.lower() == DEFLATE:
            pairs = (p.partition("=") for p in params if p)
            return {k.strip().lower(): v.strip().strip('"') for k, _, v in pairs}
    return None


async def observe_handshake(case: Case, target: Target,
                            config: ProbeConfig) -> HandshakeObservation:
    """Send the case's request on a fresh connection and read the answer (bounded)."""
    pipe = await connect(target, config)
    seen = HandshakeObservation()
    try:
        request = target.request(new_key())
        for chunk in case.chunks(Direction.CLIENT_TO_SERVER, request=request):
            _write(pipe, chunk)
        try:
            response = await read_response(pipe, config)
        except HandshakeError as exc:
            seen.missing, seen.detail = exc.kind, exc.detail
            return seen
        seen.status, seen.reason, seen.headers = (response.status, response.reason,
                                                  response.headers)
        if response.status == 101:  # leave politely: a close frame, then the socket
            _write(pipe, encode_frame(Opcode.CLOSE, close_payload(1000), mask_key=os.urandom(4)))
        return seen
    finally:
        if pipe.transport is not None:
            pipe.transport.abort()


def _write(pipe: Pipe, data: bytes) -> None:
    transport = pipe.transport
    if transport is not None and not transport.is_closing() and not pipe.lost:
        transport.write(data)
