"""The proxy's local CA, wss:// in reverse mode, and forward mode (CONNECT, TLS interception,
absolute-form GET upgrades) with real sockets and real certificate checks."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from tests.support import until
from wsconsole.cli import main
from wsconsole.core.events import FrameRecord
from wsconsole.core.localca import LocalCA
from wsconsole.proxy.hub import ProxyEvent, ProxyHub
from wsconsole.proxy.server import ProxyConfig, ProxyServer

TIMEOUT = 5.0


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(f"echo {message}")


@pytest.fixture(scope="module")
def upstream_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    return tmp_path / "ca"


@pytest.fixture
async def tls_upstream(upstream_ca: trustme.CA) -> AsyncIterator[int]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    upstream_ca.issue_cert("localhost").configure_cert(context)
    async with serve(echo, "127.0.0.1", 0, ssl=context) as server:
        yield server.sockets[0].getsockname()[1]


@pytest.fixture
def upstream_ca_file(upstream_ca: trustme.CA, tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "upstream-ca.pem"
    upstream_ca.cert_pem.write_to_path(str(path))
    yield str(path)


def data_frames(events: list[Any]) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, FrameRecord) and e.opcode in (1, 2)]


def opened(events: list[Any]) -> list[str]:
    """The upstream URL of every connection that opened."""
    return [e.detail.split(" ", 1)[1] for e in events
            if isinstance(e, ProxyEvent) and e.kind == "opened"]


def trusting(ca: LocalCA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.cert_path))


async def test_the_local_ca_is_made_once_and_issues_verifiable_host_certificates(
        ca_dir: Path) -> None:
    ca = LocalCA(ca_dir)
    assert ca.created and (ca_dir / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    again = LocalCA(ca_dir)
    assert not again.created and again.fingerprint() == ca.fingerprint()
    chain, _key = ca.issue(["app.test", "127.0.0.1"])
    leaf = x509.load_pem_x509_certificates(chain)[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["app.test"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    leaf.verify_directly_issued_by(ca.certificate)


def test_print_ca_shows_where_the_certificate_is(ca_dir: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["proxy", "--print-ca", "--ca-dir", str(ca_dir)]) == 0
    out = capsys.readouterr().out
    assert str(ca_dir / "ca-cert.pem") in out and "(made now)" in out and "SHA-256 " in out


async def test_reverse_mode_serves_wss_with_a_certificate_from_the_local_ca(
        ca_dir: Path, tls_upstream: int, upstream_ca_file: str) -> None:
    proxy = ProxyServer(ProxyConfig(port=0, upstream=f"wss://localhost:{tls_upstream}", tls=True,
                                    ca_dir=ca_dir, ca_file=upstream_ca_file))
    await proxy.start()
    try:
        url = f"wss://localhost:{proxy.port}/"
        async with connect(url, ssl=trusting(proxy.ca), open_timeout=TIMEOUT) as ws:
            await ws.send("over tls twice")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "echo over tls twice"
    finally:
        await proxy.stop()


async def test_an_unverifiable_upstream_is_refused_unless_insecure(
        ca_dir: Path, tls_upstream: int) -> None:
    for insecure, expected in ((False, 502), (True, None)):
        proxy = ProxyServer(ProxyConfig(port=0, upstream=f"wss://localhost:{tls_upstream}",
                                        insecure=insecure))
        await proxy.start()
        try:
            if expected is None:
                async with connect(proxy.url, open_timeout=TIMEOUT) as ws:
                    await ws.send("x")
                    assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "echo x"
            else:
                with pytest.raises(Exception, match="HTTP 502"):
                    async with connect(proxy.url, open_timeout=TIMEOUT):
                        pass
        finally:
            await proxy.stop()


@pytest.fixture
async def forward(ca_dir: Path, upstream_ca_file: str) -> AsyncIterator[tuple[ProxyServer, list]]:
    hub = ProxyHub()
    events: list[Any] = []
    hub.subscribe(events.append)
    proxy = ProxyServer(ProxyConfig(port=0, forward=True, ca_dir=ca_dir,
                                    ca_file=upstream_ca_file), hub)
    await proxy.start()
    try:
        yield proxy, events
    finally:
        await proxy.stop()


async def test_forward_mode_intercepts_a_wss_tunnel_with_a_certificate_for_its_host(
        forward: tuple[ProxyServer, list], tls_upstream: int) -> None:
    proxy, events = forward
    url = f"wss://localhost:{tls_upstream}/feed"
    async with connect(url, proxy=proxy.url, ssl=trusting(proxy.ca),
                       open_timeout=TIMEOUT) as ws:
        await ws.send("secret")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "echo secret"
    # the proxy saw the plain payloads inside the TLS tunnel
    await until(lambda: len(data_frames(events)) >= 2, "the frames to be recorded")
    assert data_frames(events)[:2] == [b"secret", b"echo secret"]
    assert opened(events) == [url]


async def test_forward_mode_handles_a_plain_connect_tunnel_and_an_absolute_get(
        forward: tuple[ProxyServer, list]) -> None:
    proxy, events = forward
    async with serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/a", proxy=proxy.url,
                           open_timeout=TIMEOUT) as ws:
            await ws.send("via connect")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "echo via connect"
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(f"GET http://127.0.0.1:{port}/b HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        writer.close()
        assert head.startswith(b"HTTP/1.1 101")
        assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # accept computed for the client's key
    assert data_frames(events)[:2] == [b"via connect", b"echo via connect"]
    assert opened(events) == [f"ws://127.0.0.1:{port}/a", f"ws://127.0.0.1:{port}/b"]


@pytest.mark.parametrize(("request_head", "reason"), [
    (b"CONNECT no-port HTTP/1.1\r\n\r\n", b"CONNECT needs host:port"),
    (b"GET /chat HTTP/1.1\r\nHost: x\r\n\r\n", b"a forward proxy needs CONNECT or an absolute"),
    (b"\x16\x03\x01 tls to a plain proxy\r\n\r\n", b"control characters in request head"),
])
async def test_forward_mode_refuses_what_it_cannot_route_with_400(
        forward: tuple[ProxyServer, list], request_head: bytes, reason: bytes) -> None:
    proxy, _ = forward
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(request_head)
    answer = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 Bad Request") and reason in answer
