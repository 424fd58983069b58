"""Admission as pure decisions: the handshake checks in order, tokens, and the connection limits."""

from __future__ import annotations

import pytest
from websockets.datastructures import Headers

from wsconsole.harness.admission import DRAINING, Admission, Refusal, origin_allowed
from wsconsole.harness.auth import AuthError, Claims, issue_token, new_secret

SECRET = new_secret()
UPGRADE = [
    ("Host", "127.0.0.1:8000"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
]


def headers(*extra: tuple[str, str], drop: str = "") -> Headers:
    return Headers([(k, v) for k, v in UPGRADE if k != drop] + list(extra))


def admission(**kwargs: object) -> Admission:
    return Admission(**{"auth": True, "secret": SECRET, **kwargs})  # type: ignore[arg-type]


def test_a_plain_upgrade_without_token_is_let_in_to_authenticate_by_message() -> None:
    assert admission().handshake("/", headers()) is None


def test_a_good_token_in_the_query_or_the_header_gives_its_claims() -> None:
    token = issue_token(SECRET, "alice", rooms=["chat-*"])
    by_query = admission().handshake(f"/?token={token}", headers())
    by_header = admission().handshake("/", headers(("Authorization", f"Bearer {token}")))
    for claims in (by_query, by_header):
        assert isinstance(claims, Claims)
        assert (claims.user, claims.rooms) == ("alice", ("chat-*",))


@pytest.mark.parametrize(
    "token",
    ["garbage", issue_token(new_secret(), "mallory"), issue_token(SECRET, "old", ttl=-1)],
)
def test_a_bad_token_is_401_counted_as_auth(token: str) -> None:
    refusal = admission().handshake(f"/?token={token}", headers())
    assert isinstance(refusal, Refusal)
    assert (refusal.code, refusal.counts_as, refusal.auth) == (401, "auth", True)
    assert refusal.reason.startswith("unauthorized: ")


def test_without_auth_no_token_is_looked_at() -> None:
    assert admission(auth=False).handshake("/?token=garbage", headers()) is None


def test_draining_comes_first() -> None:
    refusal = admission().handshake("/", headers(drop="Host"), draining=True)
    assert refusal is DRAINING and (refusal.code, refusal.counts_as) == (503, None)


def test_no_host_is_400() -> None:
    refusal = admission().handshake("/", headers(drop="Host"))
    assert isinstance(refusal, Refusal) and (refusal.code, refusal.counts_as) == (400, "handshake")


@pytest.mark.parametrize("version", ["8", "14", "13, 8"])
def test_another_websocket_version_is_426_naming_13(version: str) -> None:
    refusal = admission().handshake(
        "/", headers(("Sec-WebSocket-Version", version), drop="Sec-WebSocket-Version")
    )
    assert isinstance(refusal, Refusal) and refusal.code == 426
    assert refusal.headers == (("Sec-WebSocket-Version", "13"),)


def test_a_missing_version_is_left_to_the_library() -> None:
    assert admission().handshake("/", headers(drop="Sec-WebSocket-Version")) is None


def test_origins_two_headers_are_400_a_foreign_one_403() -> None:
    policy = admission(origins=("https://app.example",))
    two = policy.handshake("/", headers(("Origin", "http://localhost"), ("Origin", "http://x")))
    foreign = policy.handshake("/", headers(("Origin", "https://evil.example")))
    allowed = policy.handshake("/", headers(("Origin", "https://app.example")))
    assert isinstance(two, Refusal) and (two.code, two.counts_as) == (400, "origin")
    assert isinstance(foreign, Refusal) and (foreign.code, foreign.counts_as) == (403, "origin")
    assert allowed is None


@pytest.mark.parametrize(
    ("origin", "extra", "allowed"),
    [
        (None, (), True),
        ("http://localhost", (), True),
        ("HTTPS://LOCALHOST:3000", (), True),
        ("http://127.0.0.1:8080/", (), True),
        ("http://localhost:99999999", (), False),
        ("ws://localhost", (), False),
        ("http://[::1]", (), False),
        ("https://app.example", (), False),
        ("https://app.example", ("https://app.example",), True),
        ("https://other.example", ("*",), True),
    ],
)
def test_origin_allow_list(origin: str | None, extra: tuple[str, ...], allowed: bool) -> None:
    assert origin_allowed(origin, extra) is allowed


def test_limits_once_open() -> None:
    policy = admission(soft_limit=2, per_user=5)
    assert policy.over_capacity(1) is None
    full = policy.over_capacity(2)
    assert isinstance(full, Refusal) and (full.code, full.counts_as) == (1013, "soft_limit")
    assert "2 connections" in full.reason
    user = policy.user_limit_reached()
    assert (user.code, user.counts_as) == (1013, "per_user_limit")
    assert "too many connections for this user (5)" in user.reason
    assert admission(soft_limit=None).over_capacity(10**9) is None


def test_verify_says_why_a_token_is_refused() -> None:
    assert admission().verify(issue_token(SECRET, "bob")).user == "bob"
    with pytest.raises(AuthError, match="bad signature"):
        admission().verify(issue_token(new_secret(), "bob"))


def test_token_of_a_socketio_request() -> None:
    policy = admission()
    assert policy.token_of("EIO=4&token=abc", {}) == "abc"
    assert policy.token_of("EIO=4", {"Authorization": "Bearer xyz"}) == "xyz"
    assert policy.token_of("EIO=4", {}) is None
