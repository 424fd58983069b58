"""`wsconsole connect URL`: a terminal WebSocket client (like wscat) on the reconnecting core.

Lines typed on stdin are sent as text frames. With --harness, lines starting with "/" are
commands: /join ROOM, /leave ROOM, /publish ROOM TEXT, /rpc METHOD [JSON], /quit; other
lines go out untouched (type envelopes yourself). The heartbeat lab's commands work in
every mode: /ping [PAYLOAD] [xN] (N pings at once, their round trips printed), /pong
[PAYLOAD] (an unsolicited pong), /pongs auto|off|delay:MS|wrong[:TEXT] (how the server's
pings are answered from now on; --pongs sets it from the start; --ping and --pong send
them once the connection first opens); without --harness a line
starting with "//" is sent with one "/" less. The server's own heartbeat is measured: its
ping interval is printed once known, with a warning when it has none or one slower than
typical proxy idle timeouts (60 s), and the summary says what was seen. End of stdin stops
reading but keeps the connection; Ctrl-C (SIGINT) or SIGTERM closes with 1000 and exits 0,
as does --duration. Exit 1 when --max-attempts retries are used up or the server refused
in a way retrying cannot change (credentials refused and no fresh token from
--token-command / --token-url, a 4xx other than 408/429), 2 for bad usage.

Other targets (docs/targets.md): --socketio (Socket.IO v5; stdin lines are "/emit EVENT
[JSON]", "/call EVENT [JSON]" (waits for the ack), "/join ROOM", "/leave ROOM", "/quit"; a
plain line emits "message") and --sse (an event stream, read only). Without a flag the kind
is taken from the URL where that is unambiguous: ws(s):// is WebSocket, an http(s):// URL
whose path has /socket.io is Socket.IO; another http(s):// URL needs --socketio or --sse.
--har-out FILE writes the session as a HAR; --replay FILE.har re-sends a recorded
connection's sent messages once the first connection opens.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import orjson

from wsconsole.app import options
from wsconsole.app.options import ConnectionOptions, OptionsError
from wsconsole.app.targets import make_client
from wsconsole.commands import decoding
from wsconsole.commands.argtypes import one_line_errors, positive
from wsconsole.commands.decoding import FrameDecoder
from wsconsole.commands.output import Output, fail_usage
from wsconsole.core.backoff import BackoffError
from wsconsole.core.client import ClientError, ClientOptionsError, ReconnectingClient
from wsconsole.core.events import (
    DeliveryEvent,
    ErrorEvent,
    Event,
    FrameRecord,
    HeartbeatEvent,
    Opcode,
    describe_close,
)
from wsconsole.core.heartbeat import PongPolicy
from wsconsole.core.lifecycle import State, Transition
from wsconsole.core.signals import stop_on_signals
from wsconsole.har import HarConnection, HarError, dump_har, load_har, replay

if TYPE_CHECKING:  # imported when used: python-socketio and httpx take a second to load
    from wsconsole.core.targets.socketio import SocketIOClient

HELP = "Connect to a WebSocket URL, show every frame and state change, send stdin lines."

PREVIEW = 200  # characters of a payload shown in human output
LAB_WORDS = {"pong_withheld": "pong withheld", "pong_delayed": "pong delayed",
             "pong_altered": "pong sent with a wrong payload",
             "server_dropped": "the server dropped this client"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of `wsconsole connect` (the connection's from app/options.py)."""
    one_line_errors(parser)
    parser.add_argument("url", help="ws(s):// URL, or http(s):// with --socketio / --sse")
    options.add_arguments(parser, options.CONNECT)
    parser.add_argument("--send", action="append", default=[], metavar="TEXT",
                        help="message to send on the first open (repeatable, in order)")
    lab = parser.add_argument_group("heartbeat lab (WebSocket; after the first open, in order)")
    lab.add_argument("--ping", action="append", dest="lab", default=[], metavar="'[PAYLOAD] [xN]'",
                     type=lambda text: ("ping", text),
                     help="send a ping (N at once) and print the round trips, as /ping does")
    lab.add_argument("--pong", action="append", dest="lab", metavar="PAYLOAD",
                     type=lambda text: ("pong", text), help="send an unsolicited pong")
    parser.add_argument("--duration", type=positive, metavar="S",
                        help="close normally and exit 0 after S seconds")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    har = parser.add_argument_group("HAR")
    har.add_argument("--har-out", metavar="FILE", help="write the session as a HAR at exit")
    har.add_argument("--replay", metavar="FILE.har",
                     help="re-send a recorded connection's sent messages after the first open")
    har.add_argument("--replay-entry", type=int, default=0, metavar="N",
                     help="which WebSocket connection of the HAR (0 = the first)")
    har.add_argument("--replay-timing", choices=["fast", "original"], default="fast")
    decoding.add_arguments(parser)
    har.add_argument("--replay-speed", type=positive, default=1.0, metavar="X",
                     help="with original timing, X times faster")


def build_options(args: argparse.Namespace) -> ConnectionOptions:
    """The connection the arguments describe; the kind is --socketio / --sse, else what the
    URL says (ValueError when it cannot tell); OptionsError for a value that cannot work."""
    kind = args.kind or options.infer_kind(args.url)
    return options.from_args(args, options.CONNECT, url=args.url, kind=kind)


def clock(wall: float) -> str:
    """A wall-clock time as HH:MM:SS.mmm for terminal lines."""
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
    """Observer turning client events into --json lines or readable terminal lines.

    `with_conn` (the proxy, which prints many connections) adds each event's connection to
    the JSON fields and in front of the human line, and shows ping and pong frames too.
    """

    def __init__(self, out: Output, kind: str = "ws", with_conn: bool = False,
                 decoder: FrameDecoder | None = None) -> None:
        self.out = out
        self.kind = kind
        self.with_conn = with_conn
        self.decoder = decoder  # --decode: data frames shown decoded too
        self.broken = False  # stdout went away (`| head`): stop printing, end the session
        self.on_broken: Any = None

    def __call__(self, event: Event) -> None:
        if self.broken:
            return
        try:
            self._print(event)
        except BrokenPipeError:
            self.broken = True
            if self.on_broken is not None:
                self.on_broken()

    def emit(self, conn: str, name: str, human: str, **fields: Any) -> None:
        """One output event, with its connection when `with_conn`."""
        if self.with_conn:
            stamp, _, rest = human.partition(" ")
            self.out.event(name, f"{stamp} {conn} {rest}", conn=conn, **fields)
        else:
            self.out.event(name, human, **fields)

    def _print(self, event: Event) -> None:
        if isinstance(event, Transition):
            self._state(event)
        elif isinstance(event, FrameRecord):
            self._frame(event)
        elif isinstance(event, HeartbeatEvent):
            self._heartbeat(event)
        elif isinstance(event, ErrorEvent):
            self.emit(event.conn, "error", f"{clock(event.wall)} ! {event.kind}: {event.detail}",
                      kind=event.kind, detail=event.detail, t=event.wall)
        elif isinstance(event, DeliveryEvent):
            fields = {k: v for k, v in (("room", event.room), ("seq", event.seq),
                                        ("epoch", event.epoch), ("id", event.id),
                                        ("detail", event.detail)) if v is not None and v != ""}
            text = " ".join(f"{k}={v}" for k, v in fields.items())
            self.emit(event.conn, "delivery",
                      f"{clock(event.wall)} ~ {event.kind} {text}".rstrip(),
                      kind=event.kind, t=event.wall, **fields)

    def _state(self, tr: Transition) -> None:
        if self.decoder is not None:
            self.decoder.transition(tr)
        parts = [tr.state.value]
        if tr.state is State.RECONNECTING and tr.delay is not None:
            parts.append(f"attempt {tr.attempt} in {tr.delay:.2f} s")
        elif tr.state is State.CONNECTING and tr.attempt:
            parts.append(f"attempt {tr.attempt}")
        if tr.code is not None:
            parts.append(f"code {describe_close(tr.code, tr.reason)}")
        if tr.error:
            parts.append(f"({tr.error})")
        if tr.decision:
            parts.append(f"[{tr.decision}]")
        fields = tr.as_dict()
        fields.pop("conn", None)
        fields["t"] = fields.pop("wall")
        fields.pop("at", None)
        self.emit(tr.conn, "state", f"{clock(tr.wall)} * " + " ".join(parts), **fields)

    def _frame(self, fr: FrameRecord) -> None:
        if fr.opcode in (Opcode.PING, Opcode.PONG) and not self.with_conn:
            return  # shown as heartbeat events
        direction = fr.direction.value
        arrow = "<" if direction == "in" else ">"
        if self.kind == "sse" and fr.opcode is Opcode.TEXT:
            self._sse(fr)
            return
        mark = " (injected)" if fr.injected else ""
        if fr.opcode is Opcode.CLOSE:
            close = describe_close(fr.close_code, fr.close_reason)
            self.emit(fr.conn, "close", f"{clock(fr.wall)} {arrow} close {close}{mark}",
                      direction=direction,
                      code=fr.close_code, reason=fr.close_reason, t=fr.wall)
            return
        fields: dict[str, Any] = {
            "direction": direction,
            "opcode": fr.opcode.name.lower(),
            "size": fr.size,
            "fin": fr.fin,
            "t": fr.wall,
        }
        if fr.injected:
            fields["injected"] = True
        if fr.opcode is Opcode.TEXT:
            fields["data"] = fr.payload.decode("utf-8", "replace")
        else:
            fields["b64"] = base64.b64encode(fr.payload).decode()
        shown = None
        if self.decoder is not None:
            shown, decoded = self.decoder.describe(fr)
            fields.update(decoded)
        shown = shown[:PREVIEW] if shown else _preview(fr.payload, fr.opcode)
        self.emit(fr.conn, "message", f"{clock(fr.wall)} {arrow} {shown}{mark}", **fields)

    def _sse(self, fr: FrameRecord) -> None:
        fields = orjson.loads(fr.payload)
        fields["type"] = fields.pop("event", "message")  # "event" is the line's own key
        head = " ".join(f"{k}={fields[k]}" for k in ("type", "id", "retry") if k in fields)
        data = str(fields.get("data", "")).replace("\r", "\\r").replace("\n", "\\n")
        shown = data if len(data) <= PREVIEW else data[:PREVIEW] + "..."
        self.emit(fr.conn, "sse", f"{clock(fr.wall)} < {head} {shown}", t=fr.wall, **fields)

    def _heartbeat(self, hb: HeartbeatEvent) -> None:
        stamp = clock(hb.wall)
        shaped = LAB_WORDS.get(hb.kind)
        if shaped is not None:
            if hb.kind == "pong_delayed" and hb.delay is not None:
                shaped += f" by {hb.delay * 1000:.0f} ms"
            elif hb.kind == "server_dropped" and hb.delay is not None:
                shaped += f" {hb.delay:.2f} s after its pongs stopped"
            self.emit(hb.conn, "heartbeat", f"{stamp} ! {shaped}", kind=hb.kind, t=hb.wall,
                      **({"delay": hb.delay} if hb.delay is not None else {}))
        elif hb.kind == "ping_sent":
            self.emit(hb.conn, "ping", f"{stamp} > ping", direction="out", t=hb.wall)
        elif hb.kind == "ping_received":
            self.emit(hb.conn, "ping", f"{stamp} < ping", direction="in", t=hb.wall)
        elif hb.kind == "pong_received":
            rtt = f" {hb.rtt * 1000:.1f} ms" if hb.rtt is not None else ""
            self.emit(hb.conn, "pong", f"{stamp} < pong{rtt}", direction="in", rtt=hb.rtt,
                      t=hb.wall)


def start_stdin_reader(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
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


async def _heartbeat_command(client: ReconnectingClient, verb: str, rest: str,
                             out: Output) -> bool:
    """The heartbeat lab's /ping, /pong and /pongs; False for another verb."""
    if verb == "ping":
        words = rest.split()
        count = 1
        if words and words[-1][:1] == "x" and words[-1][1:].isdigit():
            count = int(words.pop()[1:])
        payload = " ".join(words).encode() if words else None
        rtts = await client.send_ping(payload, count)
        shown = ", ".join("lost" if r is None else f"{r * 1000:.1f} ms" for r in rtts)
        out.event("pong", f"pong {shown}", direction="in", rtt=rtts[0] if count == 1 else None,
                  rtts=rtts)
    elif verb == "pong":
        await client.send_pong(rest.encode())
        out.event("pong_sent", f"unsolicited pong sent ({len(rest.encode())} bytes)",
                  size=len(rest.encode()))
    elif verb == "pongs":
        policy = PongPolicy.parse(rest or "auto")
        client.set_pongs(policy)
        out.event("pongs", f"from now on: {policy.describe()}", pongs=policy.text())
    else:
        return False
    return True


async def _command(client: ReconnectingClient, line: str, out: Output, done: asyncio.Event) -> None:
    """Run one stdin line: a /command (the heartbeat lab's in every mode, the others with
    --harness), else send it as a text frame ("//" sends one "/" less without --harness)."""
    if not line.startswith("/"):
        await client.send(line)
        return
    if line.startswith("//") and not client.options.harness:
        await client.send(line[1:])
        return
    verb, _, rest = line[1:].partition(" ")
    rest = rest.strip()
    if await _heartbeat_command(client, verb, rest, out):
        return
    if not client.options.harness:
        await client.send(line)
        return
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
    elif verb == "quit":
        done.set()
    else:
        raise ClientError(
            f"unknown command {line!r} (/join R, /leave R, /publish R TEXT, /rpc M [JSON], "
            "/ping [PAYLOAD] [xN], /pong [PAYLOAD], /pongs MODE, /quit)"
        )


async def _watch_heartbeat(client: ReconnectingClient, out: Output,
                           every: float = 1.0) -> None:
    """Say once what the server's heartbeat is (its interval, once two pings came) and
    each new warning about it (none at all, or slower than proxy idle timeouts)."""
    told_interval = False
    warned: set[str] = set()
    while True:
        await asyncio.sleep(every)
        beat = client.server_heartbeat
        text, warning = beat.verdict(time.monotonic())
        if beat.interval is not None and not told_interval:
            told_interval = True
            out.event("server_heartbeat", f"{clock(time.time())} ~ {text}",
                      interval=round(beat.interval, 3))
        if warning is not None and warning.split(":")[0] not in warned:
            warned.add(warning.split(":")[0])
            out.event("warning", f"{clock(time.time())} ! heartbeat: {warning}",
                      kind="heartbeat", detail=warning)


def _json_args(text: str) -> list[Any]:
    """Arguments of /emit and /call: a JSON array is the argument list, another JSON value
    one argument, anything else one string; nothing means no arguments."""
    text = text.strip()
    if not text:
        return []
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return [text]
    return value if isinstance(value, list) else [value]


async def _sio_command(client: SocketIOClient, line: str, out: Output,
                       done: asyncio.Event) -> None:
    """Run one stdin line against a Socket.IO target."""
    if not line.startswith("/"):
        await client.emit("message", line)
        return
    verb, _, rest = line[1:].partition(" ")
    event, _, raw = rest.strip().partition(" ")
    if verb in ("emit", "call") and event:
        reply = await client.emit(event, *_json_args(raw), ack=verb == "call")
        if verb == "call":
            out.event("ack", f"ack {event} {orjson.dumps(reply).decode()}", name=event,
                      args=reply)
    elif verb in ("join", "leave") and event:
        await (client.join(event) if verb == "join" else client.leave(event))
    elif verb == "quit":
        done.set()
    else:
        raise ClientError(f"unknown command {line!r} (/emit EVENT [JSON], /call EVENT [JSON], "
                          "/join ROOM, /leave ROOM, /quit)")


class MismatchWatch:
    """Observer of a WebSocket client: the first rejected handshake is followed by a sniff
    of the URL, and a Socket.IO or SSE server there is reported as a protocol mismatch."""

    def __init__(self, url: str, out: Output, insecure: bool) -> None:
        self.url = url
        self.out = out
        self.insecure = insecure
        self.task: asyncio.Task[None] | None = None

    def __call__(self, event: Event) -> None:
        if (self.task is None and isinstance(event, ErrorEvent)
                and event.kind in ("handshake_rejected", "protocol")):
            self.task = asyncio.get_running_loop().create_task(
                self._check(), name="wsconsole-connect-sniff")

    async def _check(self) -> None:
        from wsconsole.core.targets.detect import mismatch_text, sniff

        with contextlib.suppress(Exception):
            text = mismatch_text("websocket", await sniff(self.url, verify=not self.insecure))
            if text:
                self.out.event("error", f"! protocol_mismatch: {text}",
                               kind="protocol_mismatch", detail=text, t=time.time())


def _pick_replay(args: argparse.Namespace) -> HarConnection | None:
    """The HAR connection to replay (HarError / ClientOptionsError when it cannot be)."""
    if not args.replay:
        return None
    conns = load_har(args.replay)
    if not 0 <= args.replay_entry < len(conns):
        raise ClientOptionsError(
            f"--replay-entry {args.replay_entry}: {args.replay} has {len(conns)} WebSocket "
            f"connection(s), numbered 0..{len(conns) - 1}")
    return conns[args.replay_entry]


async def _replay_after_open(client: Any, conn: HarConnection, args: argparse.Namespace,
                             out: Output, send: Any) -> None:
    await client.wait_state(State.OPEN)
    count = await replay(conn, send, timing=args.replay_timing, speed=args.replay_speed)
    out.event("replayed", f"replayed {count} message(s) from {conn.url}", count=count,
              source=conn.url, timing=args.replay_timing)


async def _lab_after_open(client: ReconnectingClient, args: argparse.Namespace,
                          out: Output) -> None:
    """--ping and --pong, in the order given, once the connection first opens."""
    await client.wait_state(State.OPEN)
    for verb, rest in args.lab:
        try:
            await _heartbeat_command(client, verb, rest, out)
        except ClientError as exc:
            out.event("error", f"! --{verb}: {exc}", kind="input", detail=str(exc))


async def _main(args: argparse.Namespace, client: Any, kind: str, out: Output,
                command: Any, conn: HarConnection | None = None,
                watch: MismatchWatch | None = None) -> int:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for observer in getattr(client, "_observers", []):
        if isinstance(observer, Printer):
            observer.on_broken = done.set
    frames: list[FrameRecord] = []
    if args.har_out:
        client.subscribe(lambda e: frames.append(e) if isinstance(e, FrameRecord) else None)
    with stop_on_signals(done.set):
        if kind == "ws":
            for text in args.send:
                await client.send(text)
        started = time.monotonic()
        await client.start()
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        if kind != "ws":
            for text in args.send:
                lines.put_nowait(text)
        if kind != "sse":
            start_stdin_reader(loop, lines)

        async def pump() -> None:
            if kind != "ws":
                await client.wait_state(State.OPEN)
            while True:
                line = await lines.get()
                if line is None:
                    return
                try:
                    await command(client, line, out, done)
                except (ClientError, TimeoutError, ValueError, orjson.JSONDecodeError) as exc:
                    out.event("error", f"! {type(exc).__name__}: {exc}", kind="input",
                              detail=f"{type(exc).__name__}: {exc}")

        tasks = [] if command is None else [
            loop.create_task(pump(), name="wsconsole-connect-stdin")]
        if kind == "ws":
            tasks.append(loop.create_task(_watch_heartbeat(client, out),
                                          name="wsconsole-connect-heartbeat"))
        if args.lab:
            tasks.append(loop.create_task(_lab_after_open(client, args, out),
                                          name="wsconsole-connect-lab"))
        if conn is not None:
            send = client.send_recorded if kind == "socketio" else client.send
            tasks.append(loop.create_task(_replay_after_open(client, conn, args, out, send),
                                          name="wsconsole-connect-replay"))
        ended = loop.create_task(client.wait_closed(), name="wsconsole-connect-wait")
        stop_wait = loop.create_task(done.wait(), name="wsconsole-connect-signal")
        try:
            await asyncio.wait([ended, stop_wait], timeout=args.duration,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            gave_up = ended.done() and client.final_error is not None
            await client.stop(1000, "")
            for task in (*tasks, ended, stop_wait):
                task.cancel()
            if watch is not None and watch.task is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    async with asyncio.timeout(10):
                        await watch.task
    code = 1 if gave_up else 0
    summary = {**client.stats.as_dict(), "state": client.state.value,
               "duration": round(time.monotonic() - started, 3), "exit": code}
    if kind != "ws":
        summary["target"] = kind
    if client.final_error:
        summary["error"] = client.final_error
    if kind == "ws":
        summary["server_heartbeat"] = client.server_heartbeat.verdict(time.monotonic())[0]
    if args.har_out:
        try:
            summary["har"] = dump_har(frames, args.har_out, urls={client.name: args.url})
        except OSError as exc:
            out.event("error", f"! cannot write {args.har_out}: {exc}", kind="har",
                      detail=str(exc))
    out.event("summary", "summary " + ", ".join(f"{k} {v}" for k, v in summary.items()),
              **summary)
    return code


def _make_client(conn: ConnectionOptions, out: Output, decoder: FrameDecoder | None = None
                 ) -> tuple[Any, Any, MismatchWatch | None]:
    """The client for the target kind, its stdin command runner, its mismatch watch."""
    printer = Printer(out, conn.kind, decoder=decoder)
    if conn.kind == "socketio":
        return make_client(conn, "connect", [printer]), _sio_command, None
    if conn.kind == "sse":
        return make_client(conn, "connect", [printer]), None, None
    watch = MismatchWatch(conn.url, out, conn.insecure)
    client = make_client(conn, "connect", [printer, watch])
    if decoder is not None:
        decoder.subprotocol_of = lambda: getattr(client, "subprotocol", None)
    return client, _command, watch


async def _run(args: argparse.Namespace, conn: ConnectionOptions,
               har: HarConnection | None) -> int:
    out = Output(args.json)
    try:
        wanted = decoding.decoding_from(args)
        decoder = None if wanted is None else decoding.FrameDecoder(
            wanted, conn.url, target=None if conn.kind == "ws" else conn.kind)
        client, command, watch = _make_client(conn, out, decoder)
    except (ClientOptionsError, BackoffError, ValueError) as exc:
        return fail_usage(str(exc))
    return await _main(args, client, conn.kind, out, command, har, watch)


def run(args: argparse.Namespace) -> int:
    """Entry point of `wsconsole connect`."""
    try:
        conn = build_options(args)
        har = _pick_replay(args)
    except OptionsError as exc:
        return fail_usage(exc.cli_line())
    except (ValueError, HarError) as exc:
        return fail_usage(str(exc))
    if args.lab and conn.kind != "ws":
        return fail_usage("--ping and --pong need a WebSocket target")
    if har is not None and conn.kind == "sse":
        return fail_usage("--replay needs a target that can send (WebSocket or Socket.IO)")
    try:
        return asyncio.run(_run(args, conn, har))
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # the reader of stdout left (`| head`): end quietly
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
