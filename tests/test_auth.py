"""Harness tokens: HS256 JWTs with per-room claims, accepted and refused."""

from __future__ import annotations

import time

import jwt
import pytest

from wsconsole.harness.auth import (
    AuthError,
    Claims,
    issue_token,
    new_secret,
    room_allowed,
    token_from_request,
    verify_token,
)

SECRET = new_secret()


def test_round_trip_keeps_user_rooms_and_expiry() -> None:
    now = time.time()
    claims = verify_token(SECRET, issue_token(SECRET, "alice", rooms=["chat-*", "ops"], ttl=60))
    assert claims.user == "alice"
    assert claims.rooms == ("chat-*", "ops")
    assert now + 55 < claims.exp < now + 65
    assert not claims.expired()


def test_default_rooms_allow_everything() -> None:
    claims = verify_token(SECRET, issue_token(SECRET, "bob"))
    assert room_allowed(claims, "anything") and room_allowed(claims, "x/y")


def test_wrong_secret_is_a_bad_signature() -> None:
    token = issue_token(new_secret(), "mallory")
    with pytest.raises(AuthError) as caught:
        verify_token(SECRET, token)
    assert caught.value.reason == "bad signature"


def test_expired_token_is_refused() -> None:
    token = issue_token(SECRET, "alice", ttl=10, now=time.time() - 60)
    with pytest.raises(AuthError) as caught:
        verify_token(SECRET, token)
    assert caught.value.reason == "token expired"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * 9000, "ey.ey.ey"])
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(AuthError) as caught:
        verify_token(SECRET, token)
    assert caught.value.reason in ("missing token", "malformed token")


def test_tampered_claims_are_refused() -> None:
    header, _, signature = issue_token(SECRET, "alice", rooms=["a"]).split(".")
    forged_body = jwt.utils.base64url_encode(
        b'{"sub":"alice","rooms":["*"],"exp":9999999999}'
    ).decode()
    with pytest.raises(AuthError, match="bad signature"):
        verify_token(SECRET, f"{header}.{forged_body}.{signature}")


def test_missing_sub_and_bad_rooms_claims_are_refused() -> None:
    no_sub = jwt.encode({"exp": time.time() + 60}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match="malformed token"):
        verify_token(SECRET, no_sub)
    bad_rooms = jwt.encode(
        {"sub": "a", "rooms": "*", "exp": time.time() + 60}, SECRET, algorithm="HS256"
    )
    with pytest.raises(AuthError, match="rooms must be a list"):
        verify_token(SECRET, bad_rooms)


def test_other_algorithms_are_refused() -> None:
    unsigned = jwt.encode({"sub": "a", "exp": time.time() + 60}, None, algorithm="none")
    with pytest.raises(AuthError):
        verify_token(SECRET, unsigned)


def test_room_patterns_are_case_sensitive_fnmatch() -> None:
    claims = Claims(user="u", rooms=("chat-*", "ops"), exp=time.time() + 60)
    assert room_allowed(claims, "chat-1")
    assert room_allowed(claims, "ops")
    assert not room_allowed(claims, "Chat-1")
    assert not room_allowed(claims, "ops2")
    assert not room_allowed(Claims(user="u", rooms=(), exp=0), "chat-1")


def test_token_from_query_then_bearer_header() -> None:
    assert token_from_request("/?token=abc&x=1", {}) == "abc"
    assert token_from_request("/", {"Authorization": "Bearer  xyz "}) == "xyz"
    assert token_from_request("/?token=q", {"Authorization": "Bearer h"}) == "q"
    assert token_from_request("/", {"Authorization": "Basic xyz"}) is None
    assert token_from_request("/", {}) is None


def test_a_token_seen_before_is_not_verified_again_but_its_expiry_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded = []
    decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: decoded.append(1) or decode(*a, **k))
    token = issue_token(SECRET, "carol", rooms=["r"], ttl=60)
    first = verify_token(SECRET, token)
    assert verify_token(SECRET, token) == first and len(decoded) == 1, "kept verified"
    with pytest.raises(AuthError) as caught:  # the same token once its time is over
        verify_token(SECRET, token, now=first.exp)
    assert caught.value.reason == "token expired"
    assert verify_token(SECRET, token, now=first.exp - 1) == first


def test_a_changed_secret_or_a_refused_token_is_verified_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rotating the secret revokes every token signed with the old one, kept or not."""
    old, new = new_secret(), new_secret()
    token = issue_token(old, "dave")
    assert verify_token(old, token).user == "dave"
    with pytest.raises(AuthError, match="bad signature"):
        verify_token(new, token)
    decoded = []
    decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: decoded.append(1) or decode(*a, **k))
    for _ in range(2):
        with pytest.raises(AuthError, match="bad signature"):
            verify_token(new, token)
    assert len(decoded) == 2, "a refusal is never kept"
