"""What the peer did with a frame case, and the verdict: `Observation`, `Watcher` (reads
the peer's frames into an observation, answering its pings), `observe` (sends the case and
waits as its expected reaction requires) and `judge`, a pure function of an observation.

Verdicts (docs/faults.md):
- `pass`: the peer reacted as the catalogue expects (e.g. closed with 1002);
- `pass (lenient)`: a reaction the RFC tolerates but that is not the best one: a TCP drop
  without a close frame where a failure was due (RFC 6455 7.1.7 says SHOULD send a close
  frame), a documented alternative close code (1002 for invalid UTF-8, 1009 for a 64-bit
  length with its top bit set), a failure only after the last fragment where one was due
  after the first, a different `error` code for a harness-protocol mistake, or a close
  (e.g. an idle timeout) while the probe waited on an incomplete frame;
- `fail`: anything else (an echo of a malformed frame, silence where a failure was due, the
  wrong close code, a connection that died where it should have stayed open);
- `error`: the case could not be run (the handshake failed);
- `n/a`: the case does not apply (a server-to-client case seen from a client, a harness
  case on a server that does not speak the harness protocol, a compression case on a
  server without permessage-deflate).
"""

from __future__ import annotations

import asyncio
import enum
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from wsconsole.core.envelope import EnvelopeError, parse_server
from wsconsole.core.frames import Opcode, ParsedFrame, parse_frame
from wsconsole.faults.case import NO_STATUS, Case, Direction, Expectation, Reaction
from wsconsole.faults.target import ProbeConfig
from wsconsole.faults.wire import RawConnection

ALIVE_PREFIX = b"wsconsole-alive-"


class Verdict(enum.StrEnum):
    """Outcome of one case."""

    PASS = "pass"
    LENIENT = "pass (lenient)"
    FAIL = "fail"
    ERROR = "error"
    NOT_APPLICABLE = "n/a"

    @property
    def ok(self) -> bool:
        """True for outcomes that do not fail a run."""
        return self in (Verdict.PASS, Verdict.LENIENT, Verdict.NOT_APPLICABLE)


@dataclass
class Observation:
    """What the peer did after the case was sent."""

    close_code: int | None = None  # NO_STATUS (1005) for an empty close frame
    close_reason: str = ""
    closed: bool = False  # a close frame arrived
    ended: str | None = None  # "eof", "reset" or None (still open)
    data: list[tuple[int, bytes]] = field(default_factory=list)  # data frames (opcode, payload)
    pongs: list[bytes] = field(default_factory=list)
    app_errors: list[str] = field(default_factory=list)  # `error` envelope codes received
    alive: bool | None = None  # answered a follow-up ping (None: not asked)
    waited: float = 0.0  # seconds spent waiting on a WAIT case
    timed_out: bool = False  # the primary wait reached its deadline
    write_error: str | None = None
    peer_violation: str | None = None  # the peer sent a frame a client must reject
    echoed: bool = False  # a data frame came back identical to the one sent
    fast: bool | None = None  # failed before the last write (None: not a fail-fast case)

    def describe(self) -> str:
        """One line, e.g. "close 1002 'reserved bits must be 0'" or 'no reaction in 5 s'."""
        parts = []
        if self.closed:
            code = "no code" if self.close_code == NO_STATUS else str(self.close_code)
            parts.append(f"close {code}" + (f" {self.close_reason!r}" if self.close_reason else ""))
        if self.app_errors:
            parts.append("error reply " + ", ".join(self.app_errors))
        others = len(self.data) - len(self.app_errors) - int(self.echoed)
        if self.echoed:
            parts.append("echoed the frame back")
        if others > 0:
            parts.append(f"{others} data frame(s)")
        if self.pongs:
            shown = [p[:20] for p in self.pongs if not p.startswith(ALIVE_PREFIX)]
            if shown:
                parts.append("pong " + ", ".join(repr(p) for p in shown))
        if self.peer_violation:
            parts.append(f"peer sent {self.peer_violation}")
        if self.ended and not self.closed:
            parts.append("TCP dropped without a close frame" if self.ended == "reset"
                         else "TCP closed without a close frame")
        if self.alive:
            parts.append("still open")
        elif self.alive is False and not self.ended and not self.closed:
            parts.append("no answer to a ping")
        if self.timed_out and not parts:
            parts.append("no reaction")
        if self.waited and not (self.closed or self.ended or self.data):
            parts.append(f"silent for {self.waited:.1f} s")
        if self.write_error:
            parts.append(f"write failed ({self.write_error})")
        return "; ".join(parts) or "nothing"


def judge(expected: Expectation, seen: Observation) -> tuple[Verdict, str]:
    """Verdict of an observation against an expectation, with the reason in plain words."""
    reaction = expected.reaction
    if seen.peer_violation:
        return Verdict.FAIL, f"the peer itself sent {seen.peer_violation}"
    if reaction is Reaction.FAIL:
        if expected.fast and seen.fast is False and (seen.closed or seen.ended):
            return Verdict.LENIENT, "failed the connection only after the last fragment"
        if seen.closed:
            if seen.close_code in expected.codes:
                return Verdict.PASS, "failed the connection with the expected code"
            if seen.close_code in expected.lenient:
                return Verdict.LENIENT, f"closed with {seen.close_code}, an accepted alternative"
            return Verdict.FAIL, f"closed with {seen.close_code}, expected {expected.describe()}"
        if seen.ended:
            return Verdict.LENIENT, "dropped TCP without a close frame"
        return Verdict.FAIL, "did not fail the connection"
    if reaction is Reaction.CLOSE:
        if not seen.closed:
            return Verdict.FAIL, "no close frame in reply"
        if seen.data:
            return Verdict.FAIL, "sent data after the close"
        if seen.close_code in expected.codes:
            return Verdict.PASS, "completed the closing handshake"
        return Verdict.FAIL, f"answered with close {seen.close_code}"
    if reaction is Reaction.WAIT:
        if seen.data:
            return Verdict.FAIL, "acted on an incomplete frame"
        if seen.closed or seen.ended:
            return Verdict.LENIENT, "closed the connection while the frame was incomplete"
        return Verdict.PASS, "waited for the rest of the frame"
    if seen.closed or seen.ended:
        return Verdict.FAIL, "closed a connection that should have stayed open"
    if reaction is Reaction.ECHO:
        if expected.echo not in seen.pongs:
            wrong = [p for p in seen.pongs if not p.startswith(ALIVE_PREFIX)]
            return Verdict.FAIL, "pong payload differs" if wrong else "no pong"
        if not seen.alive:
            return Verdict.FAIL, "stopped answering after the pong"
        return Verdict.PASS, "echoed the ping payload"
    if not seen.alive:
        return Verdict.FAIL, "stopped answering pings"
    if reaction is Reaction.IGNORE:
        if seen.data:
            return Verdict.FAIL, "replied to a frame it should ignore"
        return Verdict.PASS, "ignored it and stayed open"
    if reaction is Reaction.APP_ERROR:
        if expected.error_code in seen.app_errors:
            return Verdict.PASS, "error reply with the expected code"
        if seen.app_errors:
            return Verdict.LENIENT, f"error reply {seen.app_errors[0]}, not {expected.error_code}"
        if seen.echoed:
            return Verdict.FAIL, "echoed invalid input instead of an error reply"
        return Verdict.FAIL, "no error reply"
    return Verdict.PASS, "accepted it and stayed open"


def _error_code(frame: ParsedFrame) -> str | None:
    """The code of an `error` envelope in a text frame, else None."""
    if frame.opcode != Opcode.TEXT:
        return None
    try:
        envelope = parse_server(frame.payload)
    except EnvelopeError:
        return None
    return str(envelope["code"]) if envelope["type"] == "error" else None


class Watcher:
    """Reads the peer's frames into an Observation, answering the peer's own pings."""

    def __init__(self, conn: RawConnection, seen: Observation, answer_pings: bool = True) -> None:
        self.conn = conn
        self.seen = seen
        # False while the peer is inside an incomplete frame: a pong would become its payload.
        self.answer_pings = answer_pings

    def _take(self, frame: ParsedFrame) -> None:
        seen = self.seen
        if frame.masked and seen.peer_violation is None:
            seen.peer_violation = "a masked frame"
        if frame.opcode == Opcode.CLOSE:
            if not seen.closed:
                seen.closed = True
                seen.close_code = frame.close_code if frame.payload else NO_STATUS
                seen.close_reason = frame.close_reason
                # Complete the closing handshake as a client does (RFC 6455 5.5.1).
                if len(frame.payload) >= 2:
                    self.conn.send_close(frame.close_code, "")
                else:
                    self.conn.send_close(None)
        elif frame.opcode == Opcode.PING:
            if self.answer_pings and not self.conn.close_sent:
                self.conn.send_frame(Opcode.PONG, frame.payload)
        elif frame.opcode == Opcode.PONG:
            seen.pongs.append(frame.payload)
        else:  # data frames count even after a close: a peer must not send them then either
            seen.data.append((frame.opcode, frame.payload))
            code = _error_code(frame)
            if code is not None:
                seen.app_errors.append(code)

    async def until(self, stop: Callable[[], bool], deadline: float) -> bool:
        """Read frames until `stop()` holds, the stream ends, or the deadline; True if stopped.

        A peer caught sending a frame no server may send ends the wait too: the verdict is
        already a failure.
        """
        while not stop():
            if self.seen.peer_violation:
                return False
            item = await self.conn.next_frame(deadline)
            if item == "timeout":
                self.seen.timed_out = True
                return False
            if item == "end":
                if self.seen.ended is None:
                    self.seen.ended = "reset" if self.conn.pipe.error else "eof"
                return stop()
            self._take(item)
        return True

    async def ping_alive(self, timeout: float) -> bool:
        """Send a marked ping and wait for its pong: proof the peer still serves us."""
        marker = ALIVE_PREFIX + os.urandom(4).hex().encode()
        if self.seen.closed or self.seen.ended or not self.conn.send_frame(Opcode.PING, marker):
            self.seen.alive = False
            return False
        deadline = self.conn.loop_time + timeout
        await self.until(lambda: marker in self.seen.pongs or self.seen.closed, deadline)
        self.seen.alive = marker in self.seen.pongs and not self.seen.closed
        return self.seen.alive


async def observe(conn: RawConnection, case: Case, config: ProbeConfig) -> Observation:
    """Send the case's bytes and watch the peer react, each wait bounded by the config."""
    seen = Observation()
    expected = case.expected
    reaction = expected.reaction
    watcher = Watcher(conn, seen, answer_pings=reaction is not Reaction.WAIT)
    chunks = case.chunks(Direction.CLIENT_TO_SERVER, mask_key=os.urandom(4),
                         max_size=config.max_size)

    def ended() -> bool:
        return seen.closed or seen.ended is not None

    if expected.fast and len(chunks) > 1:
        # Fail fast: give the peer `silence` after the first write before sending the rest.
        conn.send(chunks[0])
        await watcher.until(ended, conn.loop_time + min(config.silence, config.timeout))
        seen.timed_out = False
        seen.fast = ended()
        chunks = [] if seen.fast else chunks[1:]
    for chunk in chunks:
        if not conn.send(chunk):
            seen.write_error = "connection already closed"
            break
        await asyncio.sleep(0)  # let a reaction to an earlier chunk arrive in between
    deadline = conn.loop_time + config.timeout

    if reaction in (Reaction.FAIL, Reaction.CLOSE):
        await watcher.until(ended, deadline)
        if seen.closed and not seen.ended:
            # Give the peer a moment to close TCP after its close frame (and catch late data).
            await watcher.until(lambda: seen.ended is not None,
                                conn.loop_time + min(config.timeout, config.close_timeout))
            seen.timed_out = False
    elif reaction is Reaction.WAIT:
        start = conn.loop_time
        await watcher.until(lambda: ended() or bool(seen.data),
                            start + min(config.silence, config.timeout))
        seen.waited = conn.loop_time - start
        seen.timed_out = False
    elif reaction is Reaction.ECHO:
        await watcher.until(lambda: ended() or expected.echo in seen.pongs, deadline)
    elif reaction is Reaction.APP_ERROR:
        first = parse_frame(b"".join(chunks))
        sent = first[0].payload if first else None

        def answered() -> bool:
            seen.echoed = any(payload == sent for _, payload in seen.data)
            return ended() or bool(seen.app_errors) or seen.echoed

        await watcher.until(answered, deadline)
    if reaction in (Reaction.ECHO, Reaction.ACCEPT, Reaction.IGNORE, Reaction.APP_ERROR):
        await watcher.ping_alive(config.timeout)
    return seen

