"""Reading and parsing the request head the balancer routes by (pure, plus one bounded read)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsconsole.harness.httphead import (
    HeadError,
    find_head_end,
    http_response,
    parse_request_head,
    read_head,
    with_header,
)

HEAD = (
    b"GET /chat?sid=abc&x=1 HTTP/1.1\r\nHost: example\r\nCookie: a=1; wsc_node=n2\r\n"
    b"Upgrade: websocket\r\n\r\n"
)


def test_parse_request_head_reads_target_headers_cookie_and_sid():
    request = parse_request_head(HEAD)
    assert (request.method, request.target, request.version) == (
        "GET",
        "/chat?sid=abc&x=1",
        "HTTP/1.1",
    )
    assert request.header("upgrade") == "websocket"
    assert request.header("missing") is None
    assert request.cookie("wsc_node") == "n2" and request.cookie("a") == "1"
    assert request.cookie("b") is None
    assert request.query("sid") == "abc" and request.query("nope") is None


@given(st.binary(max_size=300))
def test_parse_request_head_never_raises_anything_but_head_error(data):
    try:
        parse_request_head(data + b"\r\n\r\n")
    except HeadError:
        pass


def test_head_helpers():
    assert find_head_end(b"GET / HTTP/1.1\r\n") == -1
    assert find_head_end(HEAD + b"rest") == len(HEAD)
    forwarded = with_header(HEAD, "X-Forwarded-For", "127.0.0.9")
    assert parse_request_head(forwarded).header("x-forwarded-for") == "127.0.0.9"
    reply = http_response(503, "no healthy backend")
    assert reply.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert reply.endswith(b"\r\n\r\nno healthy backend\n")


def feed(*chunks: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    if eof:
        reader.feed_eof()
    return reader


async def test_read_head_returns_the_head_and_what_followed_it() -> None:
    head, rest = await read_head(feed(HEAD[:10], HEAD[10:] + b"\x81\x00"))
    assert (head, rest) == (HEAD, b"\x81\x00")


async def test_read_head_refuses_oversize_early_end_and_slowness() -> None:
    with pytest.raises(HeadError, match="too large"):
        await read_head(feed(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 100), max_head=64)
    with pytest.raises(HeadError, match="closed before"):
        await read_head(feed(b"GET / HTTP/1.1\r\n"))
    with pytest.raises(TimeoutError):
        await read_head(feed(b"GET / HTTP/1.1\r\n", eof=False), timeout=0.05)
