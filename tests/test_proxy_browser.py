"""A real browser through the proxy: headless Chromium on a page served here, which opens a
WebSocket to the proxy and writes everything it receives into the page.

Against a websockets upstream with an Origin allow-list (the page's origin only): the page's
frames are recorded with the right direction and order; a frame held and edited in the proxy
reaches the page edited; a dropped one never does; an injected one does; a close code chosen
in the proxy is the one the page's onclose reports; a page from a foreign origin is refused
by the upstream because the proxy passes its Origin on unchanged. Then the same page against
a Node `ws` server and a Socket.IO page against a Node socket.io server.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import trustme
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve

from tests import chromium
from tests.socketiokit import NODE_DIR, install_node_socketio, node_argv, wait_listening
from tests.support import ProcessRegistry, free_port, until
from wsconsole.core.events import Direction, FrameRecord, Opcode
from wsconsole.proxy.hub import ProxyEvent, ProxyHub
from wsconsole.proxy.relay import ProxiedConnection
from wsconsole.proxy.rules import Action, Rule
from wsconsole.proxy.server import ProxyConfig, ProxyServer

pytestmark = [
    pytest.mark.skipif(chromium.skip_reason() is not None, reason=str(chromium.skip_reason())),
    pytest.mark.asyncio(loop_scope="module"),
]

PAGE = """<!doctype html>
<html><head><title>echo page</title></head><body>
<h1>WebSocket echo</h1><ul id="got"></ul>
<script>
const q = new URLSearchParams(location.search);
const note = (entry) => report(JSON.stringify(entry));
const ws = new WebSocket(q.get("ws"));
ws.onopen = () => note({t: "open"});
ws.onmessage = (e) => {
  const li = document.createElement("li");
  li.textContent = e.data;
  document.getElementById("got").append(li);
  note({t: "message", data: e.data});
};
ws.onclose = (e) => note({t: "close", code: e.code, reason: e.reason});
ws.onerror = () => note({t: "error"});
window.send = (text) => ws.send(text);
</script></body></html>
"""

SOCKETIO_PAGE = """<!doctype html>
<html><body><ul id="got"></ul>
<script src="{proxy}/socket.io/socket.io.js"></script>
<script>
const note = (entry) => report(JSON.stringify(entry));
const socket = io("{proxy}", {{transports: ["websocket"]}});
socket.on("connect", () => note({{t: "open"}}));
window.echo = (text) => void socket.emit("echo", text, (answer) => {{
  const li = document.createElement("li");
  li.textContent = answer;
  document.getElementById("got").append(li);
  note({{t: "message", data: answer}});
}});
</script></body></html>
"""

NODE_WS_SERVER = r"""
const { WebSocketServer } = require("ws");
const [port, origin] = [parseInt(process.argv[2], 10), process.argv[3]];
const wss = new WebSocketServer({ port, verifyClient: (info) => info.origin === origin });
wss.on("connection", (ws) => {
  ws.on("message", (data, binary) => ws.send(binary ? data : "node: " + data.toString()));
});
console.log("listening " + port);
"""


@dataclass
class Stack:
    """The page server, the upstream, the proxy in front of it and the browser."""

    page_port: int
    proxy: ProxyServer
    hub: ProxyHub
    browser: chromium.Browser
    events: list[Any] = field(default_factory=list)
    origins: list[str | None] = field(default_factory=list)  # as the upstream saw them

    async def open_page(self, host: str = "127.0.0.1", page: str = "echo") -> chromium.Page:
        url = f"http://{host}:{self.page_port}/{page}?ws={self.proxy.url}/chat"
        return await self.browser.open(url)

    async def opened(self, page: chromium.Page) -> ProxiedConnection:
        await until(lambda: page.entries("open"), "the page's WebSocket to open",
                    detail=lambda: page.log)
        [conn] = self.hub.connections.values()
        return conn

    def frames(self, conn: str) -> list[tuple[Direction, bytes]]:
        return [(e.direction, e.payload) for e in self.events
                if isinstance(e, FrameRecord) and e.conn == conn and e.opcode is Opcode.TEXT]


async def upstream_echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(f"echo: {message}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[chromium.Browser]:
    started = await chromium.Browser.start(tmp_path_factory.mktemp("chromium"))
    try:
        yield started
    finally:
        await started.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def page_server() -> AsyncIterator[int]:
    async def echo_page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def socketio_page(request: web.Request) -> web.Response:
        text = SOCKETIO_PAGE.format(proxy=request.query["proxy"])
        return web.Response(text=text, content_type="text/html")

    app = web.Application()
    app.router.add_get("/echo", echo_page)
    app.router.add_get("/sio", socketio_page)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def proxy_in_front_of(upstream: str, browser: chromium.Browser,
                            page_port: int) -> AsyncIterator[Stack]:
    hub = ProxyHub()
    proxy = ProxyServer(ProxyConfig(port=0, upstream=upstream), hub)
    await proxy.start()
    stack = Stack(page_port, proxy, hub, browser)
    hub.subscribe(stack.events.append)
    try:
        yield stack
    finally:
        await proxy.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def stack(browser: chromium.Browser, page_server: int) -> AsyncIterator[Stack]:
    origins: list[str | None] = []

    def check_origin(conn: ServerConnection, request: Any) -> Any:
        origins.append(request.headers.get("Origin"))
        return None

    allowed = [f"http://127.0.0.1:{page_server}"]  # the upstream's CSWSH check
    async with serve(upstream_echo, "127.0.0.1", 0, origins=allowed,
                     process_request=check_origin) as upstream:
        url = f"ws://127.0.0.1:{upstream.sockets[0].getsockname()[1]}"
        async with proxy_in_front_of(url, browser, page_server) as built:
            built.origins = origins
            yield built


async def test_the_pages_frames_are_recorded_with_direction_and_order(stack: Stack) -> None:
    page = await stack.open_page()
    conn = await stack.opened(page)
    for text in ("one", "two", "three"):
        await page.evaluate(f"send({text!r})")
    await until(lambda: len(page.entries("message")) == 3, "three echoes in the page")
    assert [e["data"] for e in page.entries("message")] == ["echo: one", "echo: two",
                                                            "echo: three"]
    assert await page.evaluate("document.getElementById('got').innerText") == (
        "echo: one\necho: two\necho: three")
    frames = stack.frames(conn.id)
    assert [p for d, p in frames if d is Direction.OUT] == [b"one", b"two", b"three"]
    assert [p for d, p in frames if d is Direction.IN] == [b"echo: one", b"echo: two",
                                                           b"echo: three"]
    # each echo was delivered after the frame it answers
    assert frames.index((Direction.IN, b"echo: one")) > frames.index((Direction.OUT, b"one"))
    page_origin = f"http://127.0.0.1:{stack.page_port}"
    assert stack.origins == [page_origin]
    assert ("Origin", page_origin) in conn.info.request_headers
    assert any(name == "User-Agent" and "Chrome" in value
               for name, value in conn.info.request_headers)


async def test_a_frame_held_and_edited_in_the_proxy_reaches_the_page_edited(
        stack: Stack) -> None:
    stack.hub.rules.replace([Rule("review", Action.HOLD, direction="in", contains="price")])
    page = await stack.open_page()
    await stack.opened(page)
    await page.evaluate("send('price 10')")
    await until(lambda: stack.hub.pending(), "the server's answer to be held")
    [held] = stack.hub.pending()
    assert held.payload == b"echo: price 10" and held.direction is Direction.IN
    stack.hub.resolve(held.id, True, b"echo: price 0 (edited in the proxy)")
    await until(lambda: page.entries("message"), "the edited frame in the page")
    assert page.entries("message") == [{"t": "message",
                                        "data": "echo: price 0 (edited in the proxy)"}]


async def test_a_dropped_frame_never_reaches_the_page_and_an_injected_one_does(
        stack: Stack) -> None:
    stack.hub.rules.replace([Rule("drop", Action.DROP, direction="in", contains="drop me")])
    page = await stack.open_page()
    conn = await stack.opened(page)
    await page.evaluate("send('drop me')")
    await page.evaluate("send('keep me')")
    conn.inject("client", Opcode.TEXT, b"injected by the proxy")
    await until(lambda: len(page.entries("message")) == 2, "the kept and injected frames")
    # order holds per direction: "keep me" came after "drop me", so the drop is final
    assert sorted(e["data"] for e in page.entries("message")) == [
        "echo: keep me", "injected by the proxy"]
    [dropped] = [e for e in stack.events if isinstance(e, ProxyEvent) and e.kind == "dropped"]
    assert dropped.payload == b"echo: drop me"


async def test_the_close_code_chosen_in_the_proxy_is_what_onclose_reports(stack: Stack) -> None:
    page = await stack.open_page()
    conn = await stack.opened(page)
    conn.close("client", 4321, "closed in the proxy")
    await until(lambda: page.entries("close"), "the page's onclose")
    assert page.entries("close") == [{"t": "close", "code": 4321,
                                      "reason": "closed in the proxy"}]


async def test_a_foreign_origin_is_passed_on_and_still_refused_by_the_upstream(
        stack: Stack) -> None:
    page = await stack.open_page(host="localhost")  # same page, another origin
    await until(lambda: page.entries("close"), "the page's onclose")
    assert page.entries("close")[0]["code"] == 1006  # browsers hide the refusal's status
    assert stack.origins == [f"http://localhost:{stack.page_port}"]  # unchanged by the proxy
    [refused] = [e for e in stack.events if isinstance(e, ProxyEvent) and e.kind == "refused"]
    assert refused.detail.startswith("403")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node_modules() -> AsyncIterator[Path]:
    reason = await asyncio.to_thread(install_node_socketio)
    if reason:
        pytest.skip(reason)
    script = NODE_DIR / "ws_server.js"
    script.write_text(NODE_WS_SERVER)
    yield NODE_DIR


@contextlib.asynccontextmanager
async def node_process(argv: list[str], port: int) -> AsyncIterator[None]:
    registry = ProcessRegistry()
    registry.start(argv)
    try:
        await wait_listening(port)
        yield
    finally:
        registry.kill_all()


async def test_a_node_ws_upstream_through_the_proxy(browser: chromium.Browser,
                                                    page_server: int, node_modules: Path) -> None:
    port = free_port()
    origin = f"http://127.0.0.1:{page_server}"
    node = shutil.which("node") or "node"
    async with node_process([node, str(node_modules / "ws_server.js"), str(port), origin], port), \
            proxy_in_front_of(f"ws://127.0.0.1:{port}", browser, page_server) as built:
        built.hub.rules.replace([Rule("edit", Action.REWRITE, direction="out",
                                      regex="^hello$", template="{payload} (edited)")])
        page = await built.open_page()
        conn = await built.opened(page)
        await page.evaluate("send('hello')")
        await until(lambda: page.entries("message"), "node's answer in the page")
        assert page.entries("message")[0]["data"] == "node: hello (edited)"
        assert built.frames(conn.id)[:2] == [(Direction.OUT, b"hello (edited)"),
                                             (Direction.IN, b"node: hello (edited)")]


async def test_a_socketio_page_and_server_through_the_proxy(browser: chromium.Browser,
                                                            page_server: int,
                                                            node_modules: Path) -> None:
    port = free_port()
    async with node_process(node_argv(port), port), \
            proxy_in_front_of(f"ws://127.0.0.1:{port}", browser, page_server) as built:
        built.hub.rules.replace([Rule("hold echo", Action.HOLD, direction="out",
                                      regex=r'\["echo"')])
        page = await built.browser.open(
            f"http://127.0.0.1:{page_server}/sio?proxy=http://127.0.0.1:{built.proxy.port}")
        conn = await built.opened(page)
        await page.evaluate("echo('hello')")
        await until(lambda: built.hub.pending(), "the emit to be held")
        [held] = built.hub.pending()
        assert held.payload.endswith(b'["echo","hello"]')  # 42 + ack id + the event
        built.hub.resolve(held.id, True, held.payload.replace(b"hello", b"edited"))
        await until(lambda: page.entries("message"), "the acknowledgement in the page")
        assert page.entries("message")[0]["data"] == "edited"
        outgoing = [p for d, p in built.frames(conn.id) if d is Direction.OUT]
        assert outgoing[0].startswith(b"40") and outgoing[-1].endswith(b'["echo","edited"]')


async def test_a_browser_set_to_use_the_forward_proxy_is_captured_wss_included(
        tmp_path: Path, page_server: int) -> None:
    upstream_ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    upstream_ca.issue_cert("localhost").configure_cert(context)
    upstream_ca.cert_pem.write_to_path(str(tmp_path / "upstream-ca.pem"))
    hub = ProxyHub()
    events: list[Any] = []
    hub.subscribe(events.append)
    proxy = ProxyServer(ProxyConfig(port=0, forward=True, ca_dir=tmp_path / "ca",
                                    ca_file=str(tmp_path / "upstream-ca.pem")), hub)
    await proxy.start()
    reason = await asyncio.to_thread(chromium.trust_ca, tmp_path / "home", proxy.ca.cert_path)
    if reason:
        await proxy.stop()
        pytest.skip(reason)
    async with serve(upstream_echo, "127.0.0.1", 0) as plain, \
            serve(upstream_echo, "127.0.0.1", 0, ssl=context) as secure:
        browser = await chromium.Browser.start(
            tmp_path / "profile", f"--proxy-server={proxy.url}",
            "--proxy-bypass-list=<-loopback>", home=tmp_path / "home")  # loopback too
        try:
            urls = [f"ws://127.0.0.1:{plain.sockets[0].getsockname()[1]}/plain",
                    f"wss://localhost:{secure.sockets[0].getsockname()[1]}/secure"]
            for url in urls:
                page = await browser.open(f"http://127.0.0.1:{page_server}/echo?ws={url}")
                await until(lambda page=page: page.entries("open") or page.entries("close"),
                            f"{url} to open", detail=lambda page=page: page.log)
                await page.evaluate("send('through the forward proxy')")
                await until(lambda page=page: page.entries("message"), f"the echo on {url}")
                assert page.entries("message")[0]["data"] == "echo: through the forward proxy"
        finally:
            await browser.stop()
            await proxy.stop()
    opened = [e.detail.split(" ", 1)[1] for e in events
              if isinstance(e, ProxyEvent) and e.kind == "opened"]
    assert opened == urls
    payloads = [e.payload for e in events if isinstance(e, FrameRecord)
                and e.opcode is Opcode.TEXT]
    assert payloads.count(b"through the forward proxy") == 2
    assert hub.counters["http_passed"] >= 2  # the pages themselves came through the proxy
