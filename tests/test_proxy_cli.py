"""`wsconsole proxy` as a user runs it: a rules file, --json lines, stdin commands, --har-out,
and --replay of the HAR it wrote."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from tests.support import SCALE
from wsconsole.har import load_har

TIMEOUT = 10.0 * SCALE

RULES = """\
[[rule]]
name = "review orders"
direction = "out"
contains = "order"
action = "hold"
"""


class ProxyProcess:
    """`wsconsole proxy --json` as a child: its JSON events, and a pipe to its stdin."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []

    async def next(self, event: str, **match: Any) -> dict[str, Any]:
        """The next line of this event (and these fields) on stdout."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            while True:
                line = await self.proc.stdout.readline()
                assert line, f"the proxy exited before {event} {match}: {self.events[-5:]}"
                record = orjson.loads(line)
                self.events.append(record)
                if record["event"] == event and all(record.get(k) == v for k, v in match.items()):
                    return record

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")


@contextlib.asynccontextmanager
async def proxy_process(*args: str) -> AsyncIterator[ProxyProcess]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wsconsole", "proxy", "--listen", "127.0.0.1:0", "--json", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    try:
        yield ProxyProcess(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async with serve(echo, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_hold_from_a_rules_file_decided_on_stdin_then_recorded_and_replayed(
        upstream: str, tmp_path: Path) -> None:
    rules, har = tmp_path / "rules.toml", tmp_path / "session.har"
    rules.write_text(RULES)
    async with proxy_process("--upstream", upstream, "--rules", str(rules),
                             "--har-out", str(har)) as proxy:
        listening = await proxy.next("listening")
        assert listening["rules"] == 1
        async with connect(listening["url"] + "/shop", open_timeout=TIMEOUT) as ws:
            await ws.send("order 42")
            held = await proxy.next("proxy", kind="held")
            assert (held["conn"], held["rule"], held["data"]) == (
                "proxy-1", "review orders", "order 42")
            proxy.send("held")
            [frame] = (await proxy.next("held"))["frames"]
            proxy.send(f"forward {frame['id']} order 43 (edited on stdin)")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "order 43 (edited on stdin)"
            proxy.send("inject proxy-1 client json {\"note\": 1}")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == '{"note":1}'
            proxy.send("close proxy-1 nowhere 1000")
            error = await proxy.next("error")
            assert "client or server" in error["detail"]
        await proxy.next("proxy", kind="ended")
        proxy.send("quit")
        summary = await proxy.next("summary")
        assert await asyncio.wait_for(proxy.proc.wait(), TIMEOUT) == 0
    assert (summary["held"], summary["edited"], summary["injected"], summary["har"]) == (
        1, 1, 1, 3)
    [recorded] = load_har(har)
    assert [m.data for m in recorded.sent] == [b"order 43 (edited on stdin)"]
    async with proxy_process("--upstream", upstream, "--replay", str(har)) as replay:
        replayed = await replay.next("replayed")
        assert await asyncio.wait_for(replay.proc.wait(), TIMEOUT) == 0
    assert (replayed["sent"], replayed["received"], replayed["error"]) == (1, 1, None)


async def test_a_listen_address_in_use_is_bad_input(upstream: str) -> None:
    async with serve(echo, "127.0.0.1", 0) as taken:
        port = taken.sockets[0].getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wsconsole", "proxy", "--upstream", upstream,
            "--listen", f"127.0.0.1:{port}", stderr=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL)
        _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in err.decode()


async def test_an_upstream_ca_file_is_checked_like_every_ca_file(tmp_path: Path) -> None:
    """--ca-file is the connection option of app/options.py: a file without a certificate
    is bad input, said at once, not at the first wss:// upstream."""
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wsconsole", "proxy", "--upstream", "wss://127.0.0.1:9/",
        "--ca-file", str(not_pem), stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL)
    _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode == 2
    assert err.decode().strip() == f"wsconsole: error: CA file {not_pem} holds no PEM " \
        "certificate (-----BEGIN CERTIFICATE-----)"
