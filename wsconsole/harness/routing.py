"""Sticky routing: which healthy backend a request goes to, as a pure function.

Affinity, always over healthy backends only, by rendezvous (highest random weight)
hashing, so a dead backend's clients spread over the others while everyone else keeps
their node (adding it back moves only its own clients back):

- `ip`: the client's source address (clients may come from distinct 127.x.y.z addresses);
- `sid`: the `sid` query parameter of the request target (no `sid`: as `ip`);
- `cookie`: a `wsc_node=ID` cookie naming a healthy backend wins; otherwise the backend
  with the fewest open connections is chosen and `Set-Cookie: wsc_node=ID` is added to
  its response head (the 101), so the client's later requests come back to it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol, TypeVar

from wsconsole.harness.httphead import RequestHead, add_response_header

STICKY_MODES = ("ip", "cookie", "sid")
COOKIE_NAME = "wsc_node"


class Candidate(Protocol):
    """What routing needs to know of a backend."""

    id: str
    connections: int


B = TypeVar("B", bound=Candidate)


def rendezvous_score(key: str, backend_id: str) -> int:
    """Highest-random-weight score of (key, backend): a stable 64-bit hash."""
    digest = hashlib.blake2b(f"{key}\x00{backend_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous(key: str, backend_ids: Sequence[str]) -> str | None:
    """The backend with the highest score for `key`; removing one moves only its own keys."""
    if not backend_ids:
        return None
    return max(backend_ids, key=lambda backend_id: rendezvous_score(key, backend_id))


def choose(mode: str, request: RequestHead, client_ip: str, healthy: Sequence[B]) -> B | None:
    """The backend for this request under sticky `mode`, among the `healthy` ones."""
    if not healthy:
        return None
    by_id = {b.id: b for b in healthy}
    if mode == "cookie":
        wanted = request.cookie(COOKIE_NAME)
        if wanted in by_id:
            return by_id[wanted]
        return min(healthy, key=lambda b: (b.connections, -rendezvous_score(client_ip, b.id)))
    key = client_ip
    if mode == "sid":
        sid = request.query("sid")
        if sid:
            key = "sid:" + sid
    chosen = rendezvous(key, list(by_id))
    return by_id[chosen] if chosen is not None else None


def cookie_to_set(mode: str, request: RequestHead, backend_id: str) -> str | None:
    """The backend id to put in the affinity cookie of the response, if one must be set."""
    if mode == "cookie" and request.cookie(COOKIE_NAME) != backend_id:
        return backend_id
    return None


def inject_cookie(response_head: bytes, backend_id: str) -> bytes:
    """A backend's response head with `Set-Cookie: wsc_node=ID` added after the status line."""
    cookie = f"{COOKIE_NAME}={backend_id}; Path=/; HttpOnly; SameSite=Lax"
    return add_response_header(response_head, "Set-Cookie", cookie)
