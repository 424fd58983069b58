"""`wsconsole connect URL`: a terminal WebSocket client (like wscat) on the reconnecting core.

Lines typed on stdin are sent as text frames. With --harness, lines starting with "/" are
commands: /join ROOM, /leave ROOM, /publish ROOM TEXT, /rpc METHOD [JSON], /ping, /quit;
other lines go out untouched (type envelopes yourself). End of stdin stops reading but
keeps the connection; Ctrl-C (SIGINT) or SIGTERM closes with 1000 and exits 0, as does
--duration. Exit 1 when --max-attempts retries are used up, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import signal
import sys
import threading
import time
from typing import Any, NoReturn

import orjson

from wsconsole.commands.output import Output, fail_usage
from wsconsole.core.backoff import BackoffError, BackoffPolicy
from wsconsole.core.client import (
    ClientError,
    ClientOptions,
    ClientOptionsError,
    ReconnectingClient,
    parse_header,
)
from wsconsole.core.events import (
    DeliveryEvent,
    ErrorEvent,
    Event,
    FrameRecord,
    HeartbeatEvent,
    Opcode,
)
from wsconsole.core.lifecycle import State, Transition

HELP = "Connect to a WebSocket URL, show every frame and state change, send stdin lines."

PREVIEW = 200  # characters of a payload shown in human output


def _error(message: str) -> NoReturn:
    """argparse's error hook: one line on stderr and exit code 2 (no usage dump)."""
    sys.exit(fail_usage(message))


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


_positive.__name__ = "positive number"
_non_negative.__name__ = "number >= 0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of `wsconsole connect`."""
    parser.error = _error  # type: ignore[method-assign]
    parser.add_argument("url", help="ws:// or wss:// URL")
    parser.add_argument("-H", "--header", action="append", default=[], metavar="'K: V'",
                        help="extra handshake header (repeatable)")
    parser.add_argument("-s", "--subprotocol", action="append", default=[],
                        help="subprotocol to offer (repeatable)")
    parser.add_argument("--origin", help="Origin header, e.g. http://localhost")
    parser.add_argument("--token", help="auth token, sent again on every reconnect")
    parser.add_argument("--token-mode", choices=["query", "header", "message"], default="query",
                        help="token as ?token=, Authorization: Bearer, or a first auth message")
    parser.add_argument("--ca-file", help="trust this CA bundle for wss://")
    parser.add_argument("--insecure", action="store_true",
                        help="do not verify the server certificate (wss://)")
    parser.add_argument("--harness", action="store_true",
                        help="speak the harness protocol (rooms, publish, rpc, recovery)")
    parser.add_argument("--room", action="append", default=[],
                        help="room to join and re-join (repeatable, implies --harness)")
    parser.add_argument("--send", action="append", default=[], metavar="TEXT",
                        help="message to send on the first open (repeatable, in order)")
    parser.add_argument("--backoff-initial", type=_non_negative, default=1.0, metavar="S")
    parser.add_argument("--backoff-factor", type=_positive, default=2.0)
    parser.add_argument("--backoff-cap", type=_non_negative, default=30.0, metavar="S")
    parser.add_argument("--backoff-jitter", type=_non_negative, default=1.0, metavar="S")
    parser.add_argument("--max-attempts", type=int, default=None, metavar="N",
                        help="give up (exit 1) after N failed retries; default unlimited")
    parser.add_argument("--ping-interval", type=_non_negative, default=25.0, metavar="S",
                        help="client ping interval; 0 turns pings and liveness off")
    parser.add_argument("--ping-timeout", type=_positive, default=10.0, metavar="S")
    parser.add_argument("--connect-timeout", type=_positive, default=10.0, metavar="S")
    parser.add_argument("--close-timeout", type=_positive, default=2.0, metavar="S")
    parser.add_argument("--max-size", type=int, default=2**20, metavar="BYTES",
                        help="largest incoming message; 0 means no limit")
    parser.add_argument("--queue-limit", type=int, default=10_000, metavar="N",
                        help="messages kept while offline")
    parser.add_argument("--no-compression", action="store_true",
                        help="do not offer permessage-deflate")
    parser.add_argument("--duration", type=_positive, metavar="S",
                        help="close normally and exit 0 after S seconds")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def build_options(args: argparse.Namespace) -> ClientOptions:
    """ClientOptions from the parsed arguments (ClientOptionsError / BackoffError if bad)."""
    headers = [parse_header(line) for line in args.header]
    if args.max_attempts is not None and args.max_attempts < 0:
        raise ClientOptionsError("--max-attempts must be >= 0")
    policy = BackoffPolicy(
        initial=args.backoff_initial,
        factor=args.backoff_factor,
        cap=max(args.backoff_cap, args.backoff_initial),
        jitter=args.backoff_jitter,
        max_attempts=args.max_attempts,
    )
    return ClientOptions(
        url=args.url,
        headers=headers,
        subprotocols=list(args.subprotocol),
        origin=args.origin,
        ca_file=args.ca_file,
        insecure=args.insecure,
        connect_timeout=args.connect_timeout,
        max_size=args.max_size or None,
        token=args.token,
        token_mode=args.token_mode,
        harness=args.harness or bool(args.room),
        rooms=list(args.room),
        backoff=policy,
        ping_interval=args.ping_interval or None,
        ping_timeout=args.ping_timeout,
        close_timeout=args.close_timeout,
        queue_limit=args.queue_limit,
        compression=not args.no_compression,
    )


def _clock(wall: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall)) + f".{int(wall % 1 * 1000):03d}"


def _preview(payload: bytes, opcode: Opcode) -> str:
    if opcode is Opcode.TEXT:
        text = payload.decode("utf-8", "replace")
        return text if len(text) <= PREVIEW else text[:PREVIEW] + f"... ({len(payload)} bytes)"
    head = payload[:32].hex(" ")
    return f"[{opcode.name.lower()} {len(payload)} bytes] {head}" + (
        " ..." if len(payload) > 32 else ""
    )


class Printer:
    """Observer turning client events into --json lines or readable terminal lines."""

    def __init__(self, out: Output) -> None:
        self.out = out

    def __call__(self, event: Event) -> None:
        if isinstance(event, Transition):
            self._state(event)
        elif isinstance(event, FrameRecord):
            self._frame(event)
        elif isinstance(event, HeartbeatEvent):
            self._heartbeat(event)
        elif isinstance(event, ErrorEvent):
            self.out.event("error", f"{_clock(event.wall)} ! {event.kind}: {event.detail}",
                           kind=event.kind, detail=event.detail, t=event.wall)
        elif isinstance(event, DeliveryEvent):
            fields = {k: v for k, v in (("room", event.room), ("seq", event.seq),
                                        ("id", event.id), ("detail", event.detail)) if v}
            text = " ".join(f"{k}={v}" for k, v in fields.items())
            self.out.event("delivery", f"{_clock(event.wall)} ~ {event.kind} {text}".rstrip(),
                           kind=event.kind, t=event.wall, **fields)

    def _state(self, tr: Transition) -> None:
        parts = [tr.state.value]
        if tr.state is State.RECONNECTING and tr.delay is not None:
            parts.append(f"attempt {tr.attempt} in {tr.delay:.2f} s")
        elif tr.state is State.CONNECTING and tr.attempt:
            parts.append(f"attempt {tr.attempt}")
        if tr.code is not None:
            parts.append(f"code {tr.code}" + (f" {tr.reason!r}" if tr.reason else ""))
        if tr.error:
            parts.append(f"({tr.error})")
        fields = tr.as_dict()
        fields.pop("conn", None)
        fields["t"] = fields.pop("wall")
        fields.pop("at", None)
        self.out.event("state", f"{_clock(tr.wall)} * " + " ".join(parts), **fields)

    def _frame(self, fr: FrameRecord) -> None:
        if fr.opcode in (Opcode.PING, Opcode.PONG):
            return  # shown as heartbeat events
        direction = fr.direction.value
        arrow = "<" if direction == "in" else ">"
        if fr.opcode is Opcode.CLOSE:
            human = f"{_clock(fr.wall)} {arrow} close {fr.close_code} {fr.close_reason or ''}"
            self.out.event("close", human.rstrip(), direction=direction, code=fr.close_code,
                           reason=fr.close_reason, t=fr.wall)
            return
        fields: dict[str, Any] = {
            "direction": direction,
            "opcode": fr.opcode.name.lower(),
            "size": fr.size,
            "fin": fr.fin,
            "t": fr.wall,
        }
        if fr.opcode is Opcode.TEXT:
            fields["data"] = fr.payload.decode("utf-8", "replace")
        else:
            fields["b64"] = base64.b64encode(fr.payload).decode()
        self.out.event("message", f"{_clock(fr.wall)} {arrow} {_preview(fr.payload, fr.opcode)}",
                       **fields)

    def _heartbeat(self, hb: HeartbeatEvent) -> None:
        clock = _clock(hb.wall)
        if hb.kind == "ping_sent":
            self.out.event("ping", f"{clock} > ping", direction="out", t=hb.wall)
        elif hb.kind == "ping_received":
            self.out.event("ping", f"{clock} < ping", direction="in", t=hb.wall)
        elif hb.kind == "pong_received":
            rtt = f" {hb.rtt * 1000:.1f} ms" if hb.rtt is not None else ""
            self.out.event("pong", f"{clock} < pong{rtt}", direction="in", rtt=hb.rtt, t=hb.wall)


def _start_stdin_reader(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    """Read stdin lines in a daemon thread (works for ttys, pipes and files alike)."""

    def read() -> None:
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\r\n"))
        except (OSError, ValueError, RuntimeError):
            pass
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="wsconsole-stdin", daemon=True).start()


async def _command(client: ReconnectingClient, line: str, out: Output, done: asyncio.Event) -> None:
    """Run one stdin line: a /command in harness mode, else send it as a text frame."""
    if not (client.options.harness and line.startswith("/")):
        await client.send(line)
        return
    verb, _, rest = line[1:].partition(" ")
    rest = rest.strip()
    if verb == "join" and rest:
        await client.join(rest)
    elif verb == "leave" and rest:
        await client.leave(rest)
    elif verb == "publish" and rest:
        room, _, text = rest.partition(" ")
        ident = await client.publish(room, text)
        out.event("published", f"published id={ident} to {room}", id=ident, room=room)
    elif verb == "rpc" and rest:
        method, _, raw = rest.partition(" ")
        params = orjson.loads(raw) if raw.strip() else None
        result = await client.rpc(method, params)
        out.event("result", f"result {orjson.dumps(result).decode()}", result=result)
    elif verb == "ping":
        rtt = await client.ping()
        out.event("pong", f"pong {rtt * 1000:.1f} ms", direction="in", rtt=rtt)
    elif verb == "quit":
        done.set()
    else:
        raise ClientError(
            f"unknown command {line!r} (/join R, /leave R, /publish R TEXT, /rpc M [JSON], "
            "/ping, /quit)"
        )


async def _main(args: argparse.Namespace, options: ClientOptions) -> int:
    out = Output(args.json)
    client = ReconnectingClient(options, name="connect", observers=[Printer(out)])
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    for text in args.send:
        await client.send(text)
    started = time.monotonic()
    await client.start()
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    _start_stdin_reader(loop, lines)

    async def pump() -> None:
        while True:
            line = await lines.get()
            if line is None:
                return
            try:
                await _command(client, line, out, done)
            except (ClientError, TimeoutError, ValueError, orjson.JSONDecodeError) as exc:
                out.event("error", f"! {type(exc).__name__}: {exc}", kind="input",
                          detail=f"{type(exc).__name__}: {exc}")

    pump_task = loop.create_task(pump(), name="wsconsole-connect-stdin")
    ended = loop.create_task(client.wait_closed(), name="wsconsole-connect-wait")
    stop_wait = loop.create_task(done.wait(), name="wsconsole-connect-signal")
    try:
        await asyncio.wait([ended, stop_wait], timeout=args.duration,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        gave_up = ended.done() and client.final_error is not None
        await client.stop(1000, "")
        for task in (pump_task, ended, stop_wait):
            task.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    code = 1 if gave_up else 0
    summary = {**client.stats.as_dict(), "state": client.state.value,
               "duration": round(time.monotonic() - started, 3), "exit": code}
    if client.final_error:
        summary["error"] = client.final_error
    out.event("summary", "summary " + ", ".join(f"{k} {v}" for k, v in summary.items()),
              **summary)
    return code


def run(args: argparse.Namespace) -> int:
    """Entry point of `wsconsole connect`."""
    try:
        options = build_options(args)
    except (ClientOptionsError, BackoffError) as exc:
        return fail_usage(str(exc))
    try:
        return asyncio.run(_main(args, options))
    except KeyboardInterrupt:
        return 0
