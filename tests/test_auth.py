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
