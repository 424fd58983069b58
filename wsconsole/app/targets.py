"""The kind of target a connection profile points at, and the client for it (no Qt here).

`Profile.kind` is "ws" (the reconnecting WebSocket client), "socketio" or "sse"
(`core.targets`). Every client reports the same core events, so the Console wires any of
them to the Frames store, the Timeline and the plots the same way; this module is the one
place that turns a profile into one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.client import ClientOptionsError, ReconnectingClient
from wsconsole.core.events import Observer
from wsconsole.core.urls import url_problem

if TYPE_CHECKING:
    from wsconsole.app.ports import SessionClient
    from wsconsole.app.profiles import Profile
    from wsconsole.core.client import ClientOptions
    from wsconsole.core.targets.socketio import SocketIOOptions
    from wsconsole.core.targets.sse import SSEOptions

KINDS = {"ws": "WebSocket", "socketio": "Socket.IO", "sse": "Server-Sent Events"}
SIO_TRANSPORTS = {"upgrade": ["polling", "websocket"], "websocket": ["websocket"],
                  "polling": ["polling"]}


def check_http_url(url: str) -> str | None:
    """None if `url` suits a Socket.IO or SSE target, else what is wrong with it."""
    return url_problem(
        url, ("http", "https", "ws", "wss"), "http(s):// (or ws(s):// for Socket.IO)"
    )


def problems(profile: Profile) -> dict[str, str]:
    """Field -> message for the kind-specific fields of a profile (empty when fine)."""
    found: dict[str, str] = {}
    kind = getattr(profile, "kind", "ws")
    if kind not in KINDS:
        found["kind"] = f"kind must be one of {', '.join(KINDS)}"
        return found
    if kind == "ws":
        return found
    url_problem = check_http_url(profile.url)
    if url_problem:
        found["url"] = url_problem
    elif kind == "sse" and urlsplit(profile.url.strip()).scheme not in ("http", "https"):
        found["url"] = "an event stream URL is http(s)://"
    if kind == "socketio":
        if profile.sio_auth.strip():
            try:
                auth = orjson.loads(profile.sio_auth)
            except orjson.JSONDecodeError as exc:
                found["sio_auth"] = f"auth payload is not JSON: {exc}"
            else:
                if not isinstance(auth, dict):
                    found["sio_auth"] = "auth payload must be a JSON object"
        if profile.sio_transport not in SIO_TRANSPORTS:
            found["sio_transport"] = f"transport must be one of {', '.join(SIO_TRANSPORTS)}"
    return found


def _policy(profile: Profile) -> BackoffPolicy:
    return BackoffPolicy(initial=profile.backoff_initial, factor=profile.backoff_factor,
                         cap=profile.backoff_cap, jitter=profile.backoff_jitter,
                         max_attempts=profile.max_attempts or None)


def options_for(profile: Profile) -> ClientOptions | SocketIOOptions | SSEOptions:
    """The options object for the profile's kind (ClientOptionsError / ValueError if bad)."""
    kind = getattr(profile, "kind", "ws")
    if kind == "ws":
        return profile.to_options()
    found = problems(profile)
    if found:
        raise ClientOptionsError("; ".join(found.values()))
    from wsconsole.app.profiles import parse_headers, parse_list

    headers = parse_headers(profile.headers)
    if kind == "sse":
        from wsconsole.core.targets.sse import SSEOptions

        return SSEOptions(url=profile.url.strip(), headers=headers, backoff=_policy(profile),
                          insecure=profile.insecure)
    from wsconsole.core.targets.socketio import options_from_url

    extra: dict[str, Any] = {}
    if profile.sio_namespaces.strip():
        extra["namespaces"] = parse_list(profile.sio_namespaces)
    if profile.sio_path.strip():
        extra["path"] = profile.sio_path.strip()
    auth = orjson.loads(profile.sio_auth) if profile.sio_auth.strip() else None
    if auth is None and profile.token:
        auth = {"token": profile.token}  # the harness's Socket.IO nodes read it there
    return options_from_url(profile.url.strip(), headers=headers, auth=auth,
                            transports=SIO_TRANSPORTS[profile.sio_transport],
                            backoff=_policy(profile), insecure=profile.insecure,
                            rooms=parse_list(profile.rooms), **extra)


def make_client(profile: Profile, name: str, observers: Iterable[Observer]) -> SessionClient:
    """A (not started) client of the profile's kind reporting to `observers`."""
    options = options_for(profile)
    kind = getattr(profile, "kind", "ws")
    if kind == "socketio":
        from wsconsole.core.targets.socketio import SocketIOClient

        return SocketIOClient(options, name=name, observers=observers)
    if kind == "sse":
        from wsconsole.core.targets.sse import SSEClient

        return SSEClient(options, name=name, observers=observers)
    return ReconnectingClient(options, name=name, observers=observers)
