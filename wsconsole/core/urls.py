"""One check of a target URL, shared by the client, the probe, diagnostics and the window."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

WS_SCHEMES = ("ws", "wss")


def url_problem(
    url: str, schemes: tuple[str, ...] = WS_SCHEMES, expected: str = "ws:// or wss://"
) -> str | None:
    """None if `url` can be connected to with one of `schemes`, else what is wrong with it."""
    url = url.strip() if isinstance(url, str) else ""
    if not url:
        return "the URL is empty"
    if any(c.isspace() for c in url):
        return f"the URL contains whitespace: {url!r}"
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"malformed URL {url!r}: {exc}"
    if parts.scheme.lower() not in schemes:
        given = f"{parts.scheme}://" if parts.scheme else "none"
        return f"not a {expected} URL: {url!r} (URL scheme {given})"
    if not parts.hostname:
        return f"malformed URL {url!r}: no host"
    try:
        port = parts.port
    except ValueError as exc:
        return f"invalid port in URL {url!r}: {exc}"
    if port == 0:
        return f"invalid port in URL {url!r}: port 0 is not a port to connect to"
    return None


def is_loopback(host: str | None) -> bool:
    """True when `host` (a name or an address, IPv6 with or without brackets) is this
    machine: localhost or a loopback address."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
