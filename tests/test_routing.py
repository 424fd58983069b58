"""Sticky routing as a pure function: affinity by ip, sid or cookie, over healthy backends."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from wsconsole.harness.httphead import parse_request_head
from wsconsole.harness.routing import choose, cookie_to_set, inject_cookie, rendezvous


@dataclass
class Node:
    id: str
    connections: int = 0


def request(target: str = "/", cookie: str | None = None):  # type: ignore[no-untyped-def]
    lines = [f"GET {target} HTTP/1.1", "Host: x"] + ([f"Cookie: {cookie}"] if cookie else [])
    return parse_request_head(("\r\n".join(lines) + "\r\n\r\n").encode())


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


def test_ip_and_sid_hash_the_key_the_mode_names() -> None:
    nodes = [Node("n1"), Node("n2"), Node("n3")]
    ids = [n.id for n in nodes]
    by_ip = choose("ip", request("/?sid=abc"), "127.0.0.9", nodes)
    assert by_ip is not None and by_ip.id == rendezvous("127.0.0.9", ids)
    by_sid = choose("sid", request("/?sid=abc"), "127.0.0.9", nodes)
    assert by_sid is not None and by_sid.id == rendezvous("sid:abc", ids)
    no_sid = choose("sid", request("/"), "127.0.0.9", nodes)
    assert no_sid is by_ip, "sid mode without a sid routes by ip"
    assert choose("ip", request(), "127.0.0.9", []) is None


def test_cookie_mode_follows_a_healthy_cookie_else_the_least_loaded() -> None:
    nodes = [Node("n1", 5), Node("n2", 1), Node("n3", 3)]
    chosen = choose("cookie", request(cookie="a=1; wsc_node=n3"), "127.0.0.9", nodes)
    assert chosen is not None and chosen.id == "n3"
    gone = choose("cookie", request(cookie="wsc_node=n9"), "127.0.0.9", nodes)
    assert gone is not None and gone.id == "n2", "the named node is not healthy: least loaded"
    assert cookie_to_set("cookie", request(cookie="wsc_node=n2"), "n2") is None
    assert cookie_to_set("cookie", request(cookie="wsc_node=n9"), "n2") == "n2"
    assert cookie_to_set("ip", request(), "n2") is None


@given(
    ids=st.lists(st.sampled_from([f"n{i}" for i in range(8)]), min_size=1, unique=True),
    mode=st.sampled_from(["ip", "sid", "cookie"]),
    client=st.integers(0, 255),
    sid=st.text(alphabet="abcdef0123456789", max_size=8),
)
def test_the_choice_is_always_a_healthy_backend(
    ids: list[str], mode: str, client: int, sid: str
) -> None:
    nodes = [Node(i, connections=len(i)) for i in ids]
    chosen = choose(mode, request(f"/?sid={sid}"), f"127.0.0.{client}", nodes)
    assert chosen in nodes


def test_the_affinity_cookie_goes_after_the_status_line() -> None:
    response = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    injected = inject_cookie(response, "n3")
    assert injected.startswith(b"HTTP/1.1 101 Switching Protocols\r\nSet-Cookie: wsc_node=n3;")
    assert injected.endswith(b"Upgrade: websocket\r\n\r\n")
    assert inject_cookie(b"garbage\r\n\r\n", "n3") == b"garbage\r\n\r\n"
