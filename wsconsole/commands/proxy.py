"""`wsconsole proxy`: an intercepting WebSocket proxy between a real app and its server.

    wsconsole proxy --upstream ws(s)://HOST:PORT[/PATH] [--listen HOST:PORT] [--tls]
    wsconsole proxy --forward [--listen HOST:PORT]
        [--rules FILE.toml] [--json] [--har-out FILE] [--ca-file F | --insecure]
        [--replay FILE.har [--replay-entry N] [--replay-timing fast|original] ...]
    wsconsole proxy --print-ca

Every connection's handshake, frames both ways (pings, pongs and close codes included) and
every action of the rules are printed (JSON lines with --json). Lines on stdin control it
(`help` lists them: held frames, inject, close, pongs, network faults). Ctrl-C, SIGTERM,
`quit` or --duration stop it; --har-out then writes what was recorded.

With --replay, a recorded connection of a HAR is sent again through the proxy (so its new
run is shown, ruled and recorded like any other) and the proxy exits when it is done
(exit 1 if the replay could not connect). Exit 2 for bad usage, a bad rules file (with
FILE:LINE: reason) or a listen address that cannot be used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import ssl
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from wsconsole.app import options
from wsconsole.app.options import OptionsError
from wsconsole.commands.argtypes import int_between, non_negative, one_line_errors, positive
from wsconsole.commands.connect import Printer, clock, start_stdin_reader
from wsconsole.commands.output import Output, fail_usage
from wsconsole.core.localca import CAError, LocalCA
from wsconsole.core.signals import stop_on_signals
from wsconsole.har import HarConnection, HarError, load_har
from wsconsole.proxy.hub import ProxyEvent, ProxyHub, RelayLimits
from wsconsole.proxy.record import Recorder, replay_through
from wsconsole.proxy.rulesfile import RulesFile, RulesFileError, load_rules
from wsconsole.proxy.server import ProxyConfig, ProxyServer
from wsconsole.proxy.shell import CommandError, Quit, execute

HELP = "Intercepting proxy: watch, hold, edit and inject a real app's WebSocket traffic."
UPSTREAM_TLS = ("ca_file", "insecure")  # declared with every connection option (app/options.py)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of `wsconsole proxy`."""
    one_line_errors(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--upstream", metavar="URL",
                      help="reverse proxy to this ws:// or wss:// server (point the app at "
                      "the proxy instead)")
    mode.add_argument("--forward", action="store_true",
                      help="be an HTTP proxy for browsers (CONNECT and plain GET upgrades)")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="where the proxy listens (default 127.0.0.1:8080, with --replay "
                        "a free port; port 0: any free port)")
    parser.add_argument("--tls", action="store_true",
                        help="reverse mode: serve wss:// with a certificate from the local CA")
    parser.add_argument("--tls-host", action="append", default=[], metavar="NAME",
                        help="another name for the --tls certificate (repeatable)")
    options.add_arguments(parser, UPSTREAM_TLS, help={
        "ca_file": "trust this CA bundle (PEM) for wss:// upstreams",
        "insecure": "do not verify wss:// upstream certificates"})
    parser.add_argument("--ca-dir", metavar="DIR",
                        help="where the local CA lives (default: the user data folder)")
    parser.add_argument("--print-ca", action="store_true",
                        help="print the local CA certificate's path (made on first use), exit")
    parser.add_argument("--rules", metavar="FILE.toml", help="intercept rules and faults")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--quiet", action="store_true",
                        help="print connections and the proxy's actions, not every frame")
    parser.add_argument("--har-out", metavar="FILE", help="write the record as a HAR at exit")
    parser.add_argument("--duration", type=positive, metavar="S", help="stop after S seconds")
    parser.add_argument("--max-message", type=int_between(0, name="byte count"),
                        default=16 << 20, metavar="BYTES",
                        help="largest message from a peer (default 16 MiB; 0: no limit)")
    parser.add_argument("--close-timeout", type=positive, default=5.0, metavar="S")
    parser.add_argument("--handshake-timeout", type=positive, default=10.0, metavar="S")
    replay = parser.add_argument_group("replay")
    replay.add_argument("--replay", metavar="FILE.har",
                        help="send a recorded connection again through the proxy, then exit")
    replay.add_argument("--replay-entry", type=int_between(0, name="entry"), default=0,
                        metavar="N", help="which WebSocket connection of the HAR (0: first)")
    replay.add_argument("--replay-timing", choices=["fast", "original"], default="fast")
    replay.add_argument("--replay-speed", type=positive, default=1.0, metavar="X")
    replay.add_argument("--replay-wait", type=non_negative, default=1.0, metavar="S",
                        help="keep listening S seconds after the last message (default 1)")


def _listen(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--listen must be HOST:PORT, not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _config(args: argparse.Namespace) -> ProxyConfig:
    if args.listen is None:
        args.listen = "127.0.0.1:0" if args.replay else "127.0.0.1:8080"
    host, port = _listen(args.listen)
    upstream = options.from_args(args, UPSTREAM_TLS)
    return ProxyConfig(host=host, port=port, upstream=args.upstream, forward=args.forward,
                       tls=args.tls, tls_hosts=list(args.tls_host), ca_file=upstream.ca_file,
                       insecure=upstream.insecure,
                       ca_dir=Path(args.ca_dir) if args.ca_dir else None)


def _replay_source(args: argparse.Namespace) -> HarConnection | None:
    if not args.replay:
        return None
    conns = load_har(args.replay)
    if args.replay_entry >= len(conns):
        raise HarError(f"--replay-entry {args.replay_entry}: {args.replay} has {len(conns)} "
                       f"WebSocket connection(s), numbered 0..{len(conns) - 1}")
    return conns[args.replay_entry]


class ProxyPrinter(Printer):
    """The client printer with each line's connection, plus the proxy's own events."""

    def __init__(self, out: Output) -> None:
        super().__init__(out, with_conn=True)

    def _print(self, event: Any) -> None:
        if isinstance(event, ProxyEvent):
            fields: dict[str, Any] = {"kind": event.kind, "t": event.wall}
            if event.direction is not None:
                fields["direction"] = event.direction.value
            for name in ("detail", "rule"):
                if getattr(event, name):
                    fields[name] = getattr(event, name)
            if event.payload is not None:
                fields["data"] = event.payload.decode("utf-8", "replace")
            words = [event.kind, f"[{event.rule}]" if event.rule else "", event.detail]
            self.emit(event.conn, "proxy", f"{clock(event.wall)} ~ "
                      + " ".join(w for w in words if w), **fields)
        else:
            super()._print(event)


async def _replay(server: ProxyServer, conn: HarConnection, args: argparse.Namespace,
                  out: Output) -> int:
    parts = urllib.parse.urlsplit(conn.url)
    resource = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    tls = None
    if server.config.forward:
        url, proxy = conn.url, server.url
        tls = ssl.create_default_context(cafile=str(server.ca.cert_path))
    else:
        url, proxy = server.url + resource, None
        if server.config.tls:
            tls = ssl.create_default_context(cafile=str(server.ca.cert_path))
    result = await replay_through(conn, url, timing=args.replay_timing, speed=args.replay_speed,
                                  wait=args.replay_wait, proxy=proxy, tls=tls)
    out.event("replayed", f"replayed {result.sent} message(s), {len(result.received)} came "
              f"back{', ' + result.error if result.error else ''}", sent=result.sent,
              received=len(result.received), close_code=result.close_code, error=result.error)
    return 1 if result.error else 0


async def _serve(args: argparse.Namespace, config: ProxyConfig, rules: RulesFile,
                 source: HarConnection | None) -> int:
    out = Output(args.json)
    limits = RelayLimits(max_message=args.max_message or None, close_timeout=args.close_timeout,
                         handshake_timeout=args.handshake_timeout)
    hub = ProxyHub(rules.rules, limits)
    for fault in rules.faults:
        hub.set_fault("all", fault)
    printer = ProxyPrinter(out)
    hub.subscribe(printer, frames=not args.quiet)
    recorder = Recorder(hub) if args.har_out else None
    server = ProxyServer(config, hub)
    try:
        await server.start()
    except (OSError, CAError) as exc:
        return fail_usage(f"cannot listen on {args.listen}: {exc}")
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    printer.on_broken = done.set
    with stop_on_signals(done.set):
        target = config.upstream or "forward proxy"
        out.event("listening", f"{clock(time.time())} listening on {server.url} -> {target}"
                  f"{' (' + str(len(rules.rules)) + ' rules)' if rules.rules else ''}",
                  url=server.url, port=server.port, upstream=config.upstream,
                  forward=config.forward,
                  rules=len(rules.rules), ca=str(server.ca.cert_path) if config.tls else None)
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        start_stdin_reader(loop, lines)
        status = {"code": 0}

        async def commands() -> None:
            while (line := await lines.get()) is not None:
                try:
                    reply = execute(hub, line)
                except CommandError as exc:
                    out.event("error", f"! {exc}", kind="input", detail=str(exc))
                    continue
                except Quit:
                    done.set()
                    return
                if reply is not None:
                    name, human, fields = reply
                    out.event(name, human, **fields)

        async def replay() -> None:
            assert source is not None
            status["code"] = await _replay(server, source, args, out)
            done.set()

        tasks = [hub.tasks.spawn(commands(), "stdin")]
        if source is not None:
            tasks.append(hub.tasks.spawn(replay(), "replay"))
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), args.duration)
        finally:
            await server.stop()
    summary: dict[str, Any] = dict(sorted(hub.counters.items()))
    if recorder is not None:
        try:
            summary["har"] = recorder.write_har(args.har_out)
        except OSError as exc:
            out.event("error", f"! cannot write {args.har_out}: {exc}", kind="har",
                      detail=str(exc))
            status["code"] = 1
    out.event("summary", "summary " + (", ".join(f"{k} {v}" for k, v in summary.items())
                                       or "no traffic"), **summary)
    return status["code"]


def _print_ca(args: argparse.Namespace) -> int:
    try:
        ca = LocalCA(Path(args.ca_dir) if args.ca_dir else None)
    except CAError as exc:
        return fail_usage(str(exc))
    out = Output(args.json)
    made = " (made now)" if ca.created else ""
    out.event("ca", f"{ca.cert_path}{made}\nSHA-256 {ca.fingerprint()}", path=str(ca.cert_path),
              fingerprint=ca.fingerprint(), created=ca.created)
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point of `wsconsole proxy`."""
    if args.print_ca:
        return _print_ca(args)
    try:
        config = _config(args)
        config.check()
        rules = load_rules(args.rules) if args.rules else RulesFile()
        source = _replay_source(args)
    except OptionsError as exc:
        return fail_usage(exc.cli_line())
    except (ValueError, RulesFileError, HarError) as exc:
        return fail_usage(str(exc))
    try:
        try:  # uvloop where installed: the relay's hot path is the event loop's (DESIGN.md)
            import uvloop
        except ImportError:
            return asyncio.run(_serve(args, config, rules, source))
        return uvloop.run(_serve(args, config, rules, source))
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
