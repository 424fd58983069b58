"""Pure balancer logic: request heads, cookies, rendezvous hashing, argument parsing."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsconsole.harness.balancer import (
    HeadError,
    add_arguments,
    config_from_args,
    find_head_end,
    http_response,
    inject_cookie,
    parse_backend,
    parse_request_head,
    rendezvous,
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
    response = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    injected = inject_cookie(response, "n3")
    assert injected.startswith(b"HTTP/1.1 101 Switching Protocols\r\nSet-Cookie: wsc_node=n3;")
    assert injected.endswith(b"Upgrade: websocket\r\n\r\n")
    assert inject_cookie(b"garbage\r\n\r\n", "n3") == b"garbage\r\n\r\n"
    reply = http_response(503, "no healthy backend")
    assert reply.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert reply.endswith(b"\r\n\r\nno healthy backend\n")


def test_rendezvous_moves_only_the_removed_backends_keys():
    nodes = ["n1", "n2", "n3", "n4"]
    keys = [f"127.0.{a}.{b}" for a in range(4) for b in range(50)]
    before = {key: rendezvous(key, nodes) for key in keys}
    counts = {node: list(before.values()).count(node) for node in nodes}
    assert min(counts.values()) > len(keys) / len(nodes) / 2, counts  # roughly even
    after = {key: rendezvous(key, ["n1", "n2", "n4"]) for key in keys}
    for key in keys:
        if before[key] != "n3":
            assert after[key] == before[key]
    assert len({after[key] for key in keys if before[key] == "n3"}) == 3  # spread, not dumped
    assert rendezvous("k", []) is None


def test_parse_backend_and_options():
    assert parse_backend("n1=127.0.0.1:8001") == ("n1", "127.0.0.1", 8001)
    for bad in ("n1", "=127.0.0.1:1", "n1=127.0.0.1", "n1=127.0.0.1:0", "n1=h:99999", "n1=:5"):
        with pytest.raises(ValueError):
            parse_backend(bad)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(
        parser.parse_args(["--backend", "a=h:1", "--sticky", "sid", "--control", "127.0.0.1:9"])
    )
    assert config.backends == [("a", "h", 1)] and config.control == ("127.0.0.1", 9)
    for argv in (
        ["--backend", "a=h:1", "--backend", "a=h:2"],
        ["--backend", "all=h:1"],
        ["--health-interval", "0"],
        ["--control", "nowhere"],
        ["--sticky", "least-conn"],
    ):
        with pytest.raises(ValueError):
            config_from_args(parser.parse_args(argv))
