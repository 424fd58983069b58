"""Replay scenarios: a recorded connection as a scenario file, run again and compared.

A recorded connection (a proxied one, the console's own, or any HAR entry) exports as a
scenario whose load is the recording instead of a swarm:

    name = "replay of ws://127.0.0.1:9000/chat"
    url = "ws://127.0.0.1:9000/chat"
    [replay]
    timing = "original"        # the recorded spacing (divided by speed), or "fast"
    speed = 1.0
    wait = 2.0                 # keep listening this long after the last send (at most)
    subprotocols = ["chat"]
    headers = [["Origin", "http://localhost:3000"]]
    [[replay.send]]            # what the client sent, at its offset from the first message
    at = 0.0
    text = "hello"             # or base64 = "..." for a binary message
    [[replay.expect]]          # what came back in the recording
    at = 0.004
    text = "hello"
    [[assertions]]
    expect = "diverged == 0"

Running it connects to `url` with the recorded handshake headers, sends the messages with
the chosen timing, collects what comes back (until as many replies as were recorded, or
`wait` seconds after the last send) and compares in order. Summary figures for assertions:
`connected` (0/1), `sent`, `received`, `expected` (recorded replies), `matched` (replies
identical to the recording at the same position), `diverged` (positions that differ, plus
replies missing or extra), `first_divergence` (its index, or none), `reply_p50_ms` and
`reply_max_ms` (from each send to the first reply after it).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from wsconsole.core.events import Direction, Opcode
from wsconsole.har import HarConnection, HarMessage
from wsconsole.tomlcheck import TomlReader

TIMINGS = frozenset({"original", "fast"})
CREDENTIAL_HEADERS = frozenset({"cookie", "authorization"})
_SKIPPED_HEADERS = frozenset({
    "host", "connection", "upgrade", "sec-websocket-key", "sec-websocket-version",
    "sec-websocket-extensions", "sec-websocket-protocol", "user-agent", "content-length",
})


@dataclass(frozen=True, slots=True)
class ReplayMessage:
    """One recorded message: its offset in seconds, opcode and payload."""

    at: float
    opcode: Opcode
    data: bytes


@dataclass
class ReplaySpec:
    """[replay]: the recorded conversation and how to play it."""

    timing: str = "original"
    speed: float = 1.0
    wait: float = 2.0
    subprotocols: list[str] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    sends: list[ReplayMessage] = field(default_factory=list)
    expects: list[ReplayMessage] = field(default_factory=list)

    @property
    def duration(self) -> float:
        """Seconds from the first to the last send at the chosen timing."""
        if self.timing == "fast" or not self.sends:
            return 0.0
        return self.sends[-1].at / self.speed

    def connection(self, url: str) -> HarConnection:
        """The sends as a HAR connection (what the replay client plays)."""
        messages = [HarMessage(Direction.OUT, m.at, m.opcode, m.data) for m in self.sends]
        protocols = [("Sec-WebSocket-Protocol", ", ".join(self.subprotocols))] \
            if self.subprotocols else []
        return HarConnection(url=url, started=0.0, messages=messages,
                             request_headers=[*self.headers, *protocols])


# -- reading ----------------------------------------------------------------------------------


def parse_replay(r: TomlReader, table: dict[str, Any]) -> ReplaySpec:
    """Validate the [replay] table (errors point at the line)."""
    where = ("replay",)
    r.check_keys(table, frozenset({"timing", "speed", "wait", "subprotocols", "headers", "send",
                                   "expect"}), *where)
    spec = ReplaySpec(
        timing=r.string(table, "timing", "original", *where, choices=TIMINGS),
        speed=r.number(table, "speed", 1.0, *where, positive=True),
        wait=r.number(table, "wait", 2.0, *where, minimum=0.0),
    )
    protocols = table.get("subprotocols", [])
    if not isinstance(protocols, list) or not all(isinstance(p, str) and p for p in protocols):
        raise r.fail("subprotocols must be a list of names", *where, "subprotocols")
    spec.subprotocols = list(protocols)
    headers = table.get("headers", [])
    if not isinstance(headers, list) or not all(
            isinstance(h, list) and len(h) == 2 and all(isinstance(p, str) for p in h)
            for h in headers):
        raise r.fail('headers must be a list of ["Name", "value"] pairs', *where, "headers")
    spec.headers = [(name, value) for name, value in headers]
    spec.sends = _messages(r, table, "send")
    spec.expects = _messages(r, table, "expect")
    if not spec.sends:
        raise r.fail("a [replay] needs at least one [[replay.send]]", *where)
    return spec


def _messages(r: TomlReader, table: dict[str, Any], key: str) -> list[ReplayMessage]:
    items = table.get(key, [])
    if not isinstance(items, list):
        raise r.fail(f"{key} must be an array of tables ([[replay.{key}]])", "replay", key)
    result: list[ReplayMessage] = []
    for index, item in enumerate(items):
        where = ("replay", key, index)
        if not isinstance(item, dict):
            raise r.fail(f"replay.{key} {index + 1} must be a table", *where)
        r.check_keys(item, frozenset({"at", "text", "base64"}), *where)
        at = r.number(item, "at", 0.0, *where, minimum=0.0)
        if ("text" in item) == ("base64" in item):
            raise r.fail(f"replay.{key} {index + 1} needs either text or base64", *where)
        if "text" in item:
            if not isinstance(item["text"], str):
                raise r.fail("text must be a string", *where, "text")
            result.append(ReplayMessage(float(at), Opcode.TEXT, item["text"].encode()))
            continue
        try:
            data = base64.b64decode(str(item["base64"]), validate=True)
        except (binascii.Error, ValueError):
            raise r.fail("base64 is not valid base64", *where, "base64") from None
        result.append(ReplayMessage(float(at), Opcode.BINARY, data))
    if any(b.at < a.at for a, b in itertools.pairwise(result)):
        raise r.fail(f"replay.{key} must be in time order (at never decreasing)", "replay", key)
    return result


# -- writing ----------------------------------------------------------------------------------


def _string(text: str) -> str:
    return orjson.dumps(text).decode()  # a JSON string is a valid TOML basic string


def _message_lines(key: str, messages: list[HarMessage], start: float) -> list[str]:
    lines = []
    for message in messages:
        lines += ["", f"[[replay.{key}]]", f"at = {max(0.0, message.time - start):.3f}"]
        if message.opcode is Opcode.TEXT:
            lines.append(f"text = {_string(message.data.decode('utf-8', 'replace'))}")
        else:
            lines.append(f"base64 = {_string(base64.b64encode(message.data).decode())}")
    return lines


def scenario_text(conn: HarConnection, url: str | None = None, name: str | None = None,
                  timing: str = "original", wait: float = 2.0,
                  with_credentials: bool = False) -> str:
    """A replay scenario (TOML) for a recorded connection.

    Cookie and Authorization are left out unless `with_credentials` (a scenario file is
    shared more easily than a secret should be).
    """
    target = url or conn.url
    sent = [m for m in conn.messages if m.direction is Direction.OUT]
    got = [m for m in conn.messages if m.direction is Direction.IN]
    start = sent[0].time if sent else conn.started
    headers, protocols = [], []
    for header, value in conn.request_headers:
        lowered = header.lower()
        if lowered == "sec-websocket-protocol":
            protocols += [p.strip() for p in value.split(",") if p.strip()]
        elif lowered not in _SKIPPED_HEADERS and (
                with_credentials or lowered not in CREDENTIAL_HEADERS):
            headers.append(f"  [{_string(header)}, {_string(value)}],")
    when = datetime.fromtimestamp(conn.started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") \
        if conn.started else "an unknown time"
    description = f"Recorded {when} from {conn.url}: {len(sent)} sent, {len(got)} received."
    lines = [
        f"name = {_string(name or f'replay of {conn.url}')}",
        f"description = {_string(description)}",
        f"url = {_string(target)}",
        "",
        "[replay]",
        f"timing = {_string(timing)}",
        "speed = 1.0",
        f"wait = {wait:g}",
        f"subprotocols = [{', '.join(_string(p) for p in protocols)}]",
        "headers = [", *headers, "]",
        *_message_lines("send", sent, start),
        *_message_lines("expect", got, start),
        "",
        "[[assertions]]",
        'name = "every recorded reply came back, identical and in order"',
        'expect = "diverged == 0"',
        "",
        "[[assertions]]",
        'expect = "connected == 1"',
        "",
    ]
    return "\n".join(lines)


# -- judging ----------------------------------------------------------------------------------


def compare(spec: ReplaySpec, sent_at: list[float],
            received: list[tuple[float, Opcode, bytes]]) -> dict[str, Any]:
    """The summary figures of a replay run (see the module docstring)."""
    expected = [(m.opcode, m.data) for m in spec.expects]
    got = [(opcode, data) for _, opcode, data in received]
    matched = sum(1 for a, b in zip(expected, got, strict=False) if a == b)
    first = next((i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b),
                 None)
    if first is None and len(expected) != len(got):
        first = min(len(expected), len(got))
    latencies = _reply_latencies(sent_at, [t for t, _, _ in received])
    return {
        "sent": len(sent_at), "received": len(got), "expected": len(expected),
        "matched": matched, "diverged": max(len(expected), len(got)) - matched,
        "first_divergence": first,
        "reply_p50_ms": round(statistics.median(latencies) * 1000, 3) if latencies else None,
        "reply_max_ms": round(max(latencies) * 1000, 3) if latencies else None,
    }


def _reply_latencies(sent_at: list[float], received_at: list[float]) -> list[float]:
    latencies = []
    for index, sent in enumerate(sent_at):
        until = sent_at[index + 1] if index + 1 < len(sent_at) else float("inf")
        reply = next((t for t in received_at if sent <= t < until), None)
        if reply is not None:
            latencies.append(reply - sent)
    return latencies


async def run_replay(spec: ReplaySpec, url: str, scale: float,
                     emit: Callable[..., None]) -> dict[str, Any]:
    """Play `spec` against `url`; the summary (never raises for a failed connection)."""
    from wsconsole.proxy.record import replay_through

    emit("phase", phase="replay", url=url, sends=len(spec.sends), timing=spec.timing)
    result = await replay_through(
        spec.connection(url), url, timing=spec.timing, speed=spec.speed / scale,
        wait=spec.wait * scale, until=len(spec.expects) or None)
    summary = compare(spec, result.sent_at, result.received)
    summary["connected"] = 0 if result.error and not result.sent_at else 1
    summary["close_code"] = result.close_code
    if result.error:
        summary["error"] = result.error
    return summary
