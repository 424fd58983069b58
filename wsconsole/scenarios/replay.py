"""Replay scenarios: a recorded connection as a scenario file, run again and compared.

A recorded connection (a proxied one, the console's own, or any HAR entry) exports as a
scenario whose load is the recording instead of a swarm:

    name = "replay of ws://127.0.0.1:9000/chat"
    url = "ws://127.0.0.1:9000/chat"   # or a [cluster] table: the demo harness, started here
    [replay]
    timing = "original"        # the recorded spacing (divided by speed), or "fast"
    speed = 1.0
    wait = 2.0                 # keep listening this long after the last send (at most)
    reply_timeout = 5.0        # how long a send waits for the replies that preceded it
    compare = "json"           # JSON replies compared as values without the ignored fields
    ignore = ["id", "ts"]      # ... fields that change every run; "exact": byte for byte
    subprotocols = ["chat"]
    headers = [["Origin", "http://localhost:3000"]]
    [[replay.send]]            # what the client sent, at its offset from the first message,
    at = 0.0                   # once the replies recorded before it came back (after = N)
    after = 0
    text = "hello"             # or base64 = "..." for a binary message
    [[replay.expect]]          # what came back in the recording
    at = 0.004
    text = "hello"
    [[assertions]]
    expect = "diverged == 0"

Running it connects to the target with the recorded handshake headers (and the run's token,
as ?token=, when it has one), sends the messages with the chosen timing, each one only once
as many replies came back as had in the recording before it (or `reply_timeout` passed:
counted in `reply_timeouts`), collects what comes back (until as many replies as were
recorded, or `wait` seconds after the last send) and compares in order. Summary figures for
assertions: `connected` (0/1), `sent`, `received`, `expected` (recorded replies), `matched`
(replies equal to the recording at the same position), `diverged` (positions that differ,
plus replies missing or extra), `first_divergence` (its index, or none), `reply_timeouts`,
`reply_p50_ms` and `reply_max_ms` (from each send to the first reply after it). The
conversation itself, position by position with where it diverged, goes to the report.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from wsconsole.core.events import Direction, Opcode
from wsconsole.har import HarConnection, HarMessage
from wsconsole.tomlcheck import TomlReader

TIMINGS = frozenset({"original", "fast"})
COMPARES = frozenset({"json", "exact"})
CREDENTIAL_HEADERS = frozenset({"cookie", "authorization"})
_SKIPPED_HEADERS = frozenset({
    "host", "connection", "upgrade", "sec-websocket-key", "sec-websocket-version",
    "sec-websocket-extensions", "sec-websocket-protocol", "user-agent", "content-length",
})
# JSON fields that usually change from one run to the next; an export ignores those it sees
VOLATILE = frozenset({"id", "ts", "t", "time", "timestamp", "date", "seq", "epoch", "node",
                      "pub_node", "nonce", "uuid", "created", "updated", "expires", "sid"})
PREVIEW = 120  # characters of a message shown in the report


@dataclass(frozen=True, slots=True)
class ReplayMessage:
    """One recorded message: its offset in seconds, opcode and payload; a send also says how
    many replies had come back before it (`after`)."""

    at: float
    opcode: Opcode
    data: bytes
    after: int = 0


@dataclass
class ReplaySpec:
    """[replay]: the recorded conversation and how to play and judge it."""

    timing: str = "original"
    speed: float = 1.0
    wait: float = 2.0
    reply_timeout: float = 5.0
    compare: str = "json"
    ignore: list[str] = field(default_factory=list)
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

    def same(self, expected: ReplayMessage, opcode: Opcode, data: bytes) -> bool:
        """Whether a reply equals the recorded one: JSON values without the ignored fields
        (compare "json", for JSON text on both sides), else byte for byte."""
        if opcode is not expected.opcode:
            return False
        if self.compare == "exact" or opcode is not Opcode.TEXT:
            return data == expected.data
        try:
            recorded, got = orjson.loads(expected.data), orjson.loads(data)
        except orjson.JSONDecodeError:
            return data == expected.data
        ignored = frozenset(self.ignore)
        return _without(recorded, ignored) == _without(got, ignored)


def _without(value: Any, ignored: frozenset[str]) -> Any:
    """A JSON value with the ignored keys removed at every depth."""
    if isinstance(value, dict):
        return {k: _without(v, ignored) for k, v in value.items() if k not in ignored}
    if isinstance(value, list):
        return [_without(v, ignored) for v in value]
    return value


# -- reading ----------------------------------------------------------------------------------


def parse_replay(r: TomlReader, table: dict[str, Any]) -> ReplaySpec:
    """Validate the [replay] table (errors point at the line)."""
    where = ("replay",)
    r.check_keys(table, frozenset({"timing", "speed", "wait", "reply_timeout", "compare",
                                   "ignore", "subprotocols", "headers", "send", "expect"}),
                 *where)
    spec = ReplaySpec(
        timing=r.string(table, "timing", "original", *where, choices=TIMINGS),
        speed=r.number(table, "speed", 1.0, *where, positive=True),
        wait=r.number(table, "wait", 2.0, *where, minimum=0.0),
        reply_timeout=r.number(table, "reply_timeout", 5.0, *where, positive=True),
        compare=r.string(table, "compare", "json", *where, choices=COMPARES),
    )
    spec.ignore = _names(r, table, "ignore", "ignore must be a list of field names")
    spec.subprotocols = _names(r, table, "subprotocols", "subprotocols must be a list of names")
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
    for index, send in enumerate(spec.sends):
        if send.after > len(spec.expects):
            raise r.fail(f"replay.send {index + 1} waits for {send.after} replies but only "
                         f"{len(spec.expects)} were recorded", "replay", "send", index, "after")
    return spec


def _names(r: TomlReader, table: dict[str, Any], key: str, problem: str) -> list[str]:
    names = table.get(key, [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise r.fail(problem, "replay", key)
    return list(names)


def _messages(r: TomlReader, table: dict[str, Any], key: str) -> list[ReplayMessage]:
    items = table.get(key, [])
    if not isinstance(items, list):
        raise r.fail(f"{key} must be an array of tables ([[replay.{key}]])", "replay", key)
    result: list[ReplayMessage] = []
    allowed = frozenset({"at", "text", "base64", "after"} if key == "send" else
                        {"at", "text", "base64"})
    for index, item in enumerate(items):
        where = ("replay", key, index)
        if not isinstance(item, dict):
            raise r.fail(f"replay.{key} {index + 1} must be a table", *where)
        r.check_keys(item, allowed, *where)
        at = r.number(item, "at", 0.0, *where, minimum=0.0)
        after = int(r.number(item, "after", 0, *where, minimum=0, integer=True))
        if ("text" in item) == ("base64" in item):
            raise r.fail(f"replay.{key} {index + 1} needs either text or base64", *where)
        if "text" in item:
            if not isinstance(item["text"], str):
                raise r.fail("text must be a string", *where, "text")
            result.append(ReplayMessage(float(at), Opcode.TEXT, item["text"].encode(), after))
            continue
        try:
            data = base64.b64decode(str(item["base64"]), validate=True)
        except (binascii.Error, ValueError):
            raise r.fail("base64 is not valid base64", *where, "base64") from None
        result.append(ReplayMessage(float(at), Opcode.BINARY, data, after))
    if any(b.at < a.at for a, b in itertools.pairwise(result)):
        raise r.fail(f"replay.{key} must be in time order (at never decreasing)", "replay", key)
    if any(b.after < a.after for a, b in itertools.pairwise(result)):
        raise r.fail(f"replay.{key} must wait for a growing number of replies (after)",
                     "replay", key)
    return result


# -- writing ----------------------------------------------------------------------------------


def _string(text: str) -> str:
    return orjson.dumps(text).decode()  # a JSON string is a valid TOML basic string


def _message_lines(key: str, messages: list[HarMessage], start: float,
                   replies: list[HarMessage] | None = None) -> list[str]:
    lines = []
    for message in messages:
        lines += ["", f"[[replay.{key}]]", f"at = {max(0.0, message.time - start):.3f}"]
        if replies is not None:
            lines.append(f"after = {sum(1 for m in replies if m.time <= message.time)}")
        if message.opcode is Opcode.TEXT:
            lines.append(f"text = {_string(message.data.decode('utf-8', 'replace'))}")
        else:
            lines.append(f"base64 = {_string(base64.b64encode(message.data).decode())}")
    return lines


def volatile_fields(replies: Iterable[HarMessage]) -> list[str]:
    """The fields of the recorded JSON replies that usually change every run (VOLATILE)."""
    seen: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            seen.update(k for k in value if k in VOLATILE)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for message in replies:
        if message.opcode is Opcode.TEXT:
            try:
                walk(orjson.loads(message.data))
            except orjson.JSONDecodeError:
                continue
    return sorted(seen)


def scenario_text(conn: HarConnection, url: str | None = None, name: str | None = None,
                  timing: str = "original", wait: float = 2.0,
                  with_credentials: bool = False, cluster: bool = False) -> str:
    """A replay scenario (TOML) for a recorded connection, against its URL (or `url`), or
    against the demo harness started for the run (`cluster`).

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
    target_lines = (["", "[cluster]  # the demo harness, started for the run", "nodes = 2"]
                    if cluster else [f"url = {_string(target)}"])
    ignore = ", ".join(_string(f) for f in volatile_fields(got))
    lines = [
        f"name = {_string(name or f'replay of {conn.url}')}",
        f"description = {_string(description)}",
        *target_lines,
        "",
        "[replay]",
        f"timing = {_string(timing)}",
        "speed = 1.0",
        f"wait = {wait:g}",
        "reply_timeout = 5.0",
        "compare = \"json\"  # JSON replies as values; \"exact\": byte for byte",
        f"ignore = [{ignore}]  # fields that change every run; remove one to compare it too",
        f"subprotocols = [{', '.join(_string(p) for p in protocols)}]",
        "headers = [", *headers, "]",
        *_message_lines("send", sent, start, got),
        *_message_lines("expect", got, start),
        "",
        "[[assertions]]",
        'name = "every recorded reply came back, equal and in order"',
        'expect = "diverged == 0"',
        "",
        "[[assertions]]",
        'expect = "connected == 1"',
        "",
    ]
    return "\n".join(lines)


# -- judging ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationRow:
    """One line of the report's conversation: a send, or a reply position with its verdict
    ("match", "diverged", "missing": recorded but not received, "extra": not recorded)."""

    kind: str  # "send" or "reply"
    index: int
    t: float | None
    status: str
    expected: str = ""
    received: str = ""


def _preview(opcode: Opcode, data: bytes) -> str:
    if opcode is Opcode.TEXT:
        text = data.decode("utf-8", "replace")
        return text if len(text) <= PREVIEW else text[:PREVIEW] + "\u2026"
    return f"[binary {len(data)} bytes] {data[:24].hex(' ')}"


def compare(spec: ReplaySpec, sent_at: list[float],
            received: list[tuple[float, Opcode, bytes]],
            timeouts: int = 0) -> tuple[dict[str, Any], list[ConversationRow]]:
    """The summary figures of a replay run (see the module docstring) and the conversation
    position by position, in time order, for the report."""
    matches = [spec.same(want, opcode, data)
               for want, (_, opcode, data) in zip(spec.expects, received, strict=False)]
    matched = sum(matches)
    first = next((i for i, ok in enumerate(matches) if not ok), None)
    if first is None and len(spec.expects) != len(received):
        first = min(len(spec.expects), len(received))
    latencies = _reply_latencies(sent_at, [t for t, _, _ in received])
    summary = {
        "sent": len(sent_at), "received": len(received), "expected": len(spec.expects),
        "matched": matched, "diverged": max(len(spec.expects), len(received)) - matched,
        "first_divergence": first, "reply_timeouts": timeouts,
        "reply_p50_ms": round(statistics.median(latencies) * 1000, 3) if latencies else None,
        "reply_max_ms": round(max(latencies) * 1000, 3) if latencies else None,
    }
    rows = [ConversationRow("send", i, t, "sent", received=_preview(m.opcode, m.data))
            for i, (t, m) in enumerate(zip(sent_at, spec.sends, strict=False))]
    for index in range(max(len(spec.expects), len(received))):
        want = spec.expects[index] if index < len(spec.expects) else None
        got = received[index] if index < len(received) else None
        status = "extra" if want is None else "missing" if got is None else \
            "match" if matches[index] else "diverged"
        rows.append(ConversationRow(
            "reply", index, got[0] if got else None, status,
            expected="" if want is None else _preview(want.opcode, want.data),
            received="" if got is None else _preview(got[1], got[2])))
    rows.sort(key=lambda row: (row.t is None, row.t or 0.0, row.kind == "reply"))
    return summary, rows


def _reply_latencies(sent_at: list[float], received_at: list[float]) -> list[float]:
    latencies = []
    for index, sent in enumerate(sent_at):
        until = sent_at[index + 1] if index + 1 < len(sent_at) else float("inf")
        reply = next((t for t in received_at if sent <= t < until), None)
        if reply is not None:
            latencies.append(reply - sent)
    return latencies


async def run_replay(spec: ReplaySpec, url: str, scale: float, emit: Callable[..., None],
                     token: str | None = None) -> tuple[dict[str, Any], list[ConversationRow]]:
    """Play `spec` against `url` (with `token` as ?token=); the summary and the conversation
    (never raises for a failed connection)."""
    from wsconsole.core.tokens import place_token
    from wsconsole.proxy.record import replay_through

    target = place_token(url, [], token, "query")[0] if token else url
    emit("phase", phase="replay", url=url, sends=len(spec.sends), timing=spec.timing)
    result = await replay_through(
        spec.connection(target), target, timing=spec.timing, speed=spec.speed / scale,
        wait=spec.wait * scale, until=len(spec.expects) or None,
        after=[m.after for m in spec.sends], reply_timeout=spec.reply_timeout * scale)
    summary, rows = compare(spec, result.sent_at, result.received, result.reply_timeouts)
    summary["connected"] = 0 if result.error and not result.sent_at else 1
    summary["close_code"] = result.close_code
    if result.error:
        summary["error"] = result.error
    return summary, rows


__all__ = ["COMPARES", "TIMINGS", "VOLATILE", "ConversationRow", "ReplayMessage", "ReplaySpec",
           "compare", "parse_replay", "run_replay", "scenario_text", "volatile_fields"]
