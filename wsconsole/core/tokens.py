"""Where a connection's token comes from: a fixed string, a callback, a command or a URL.

A driver asks its provider for a token before every connect (re-authentication on each
reconnect, DESIGN.md). A provider that can hand out a *fresh* token (anything but a fixed
string: `can_refresh`) also lets the driver retry once at once after the server refused
the credentials (HTTP 401/403, close 1008 for auth; see `reconnect.py`); with a fixed
string the refusal stops the client, since the same token would be refused again.

    token="abc"                          a fixed token
    token=lambda: cluster.token("me")     a callback (may be async), e.g. the harness's tokens
    token=CommandToken("vault read ...")  a shell command printing the token
    token=UrlToken("https://auth/token")  a GET answering the token (text or JSON)
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Literal

import orjson

from wsconsole.core.errors import ClientOptionsError, TokenError

TokenProvider = str | Callable[[], str | Awaitable[str]]
TokenMode = Literal["query", "header", "message"]
TOKEN_MODES = ("query", "header", "message")
PROVIDER_TIMEOUT = 10.0  # seconds a command or URL may take to answer


def can_refresh(provider: TokenProvider | None) -> bool:
    """True when asking the provider again may give another token (not a fixed string)."""
    return provider is not None and callable(provider)


def check_provider(provider: object) -> None:
    """Raise ClientOptionsError unless `provider` is None, a string or a callable."""
    if provider is not None and not (isinstance(provider, str) or callable(provider)):
        raise ClientOptionsError("token must be a string or a callable")


async def fetch_token(provider: TokenProvider | None) -> str | None:
    """The provider's current token (None without a provider); TokenError when it fails or
    gives none (a failing callback's exception is kept as the cause)."""
    if provider is None:
        return None
    try:
        value = provider() if callable(provider) else provider
        if inspect.isawaitable(value):
            value = await value
    except TokenError:
        raise
    except Exception as exc:
        raise TokenError(f"the token provider failed: {exc}") from exc
    if not isinstance(value, str) or not value:
        raise TokenError("the token provider returned no token")
    return value


def place_token(
    url: str, headers: list[tuple[str, str]], token: str | None, mode: TokenMode
) -> tuple[str, list[tuple[str, str]]]:
    """The URL and headers carrying `token`: the `token` query parameter (replacing one
    already there) or `Authorization: Bearer`; "message" mode leaves both untouched."""
    if token is None or mode == "message":
        return url, headers
    if mode == "header":
        return url, [*headers, ("Authorization", f"Bearer {token}")]
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "token"]
    query.append(("token", token))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query))), headers


def _one_line(text: str, what: str) -> str:
    token = text.strip()
    if not token:
        raise TokenError(f"{what} gave an empty token")
    if any(c in token for c in "\r\n\0"):
        raise TokenError(f"{what} gave more than one line; a token is one line")
    return token


class CommandToken:
    """Runs a shell command for each token; its standard output (one line) is the token."""

    def __init__(self, command: str, timeout: float = PROVIDER_TIMEOUT) -> None:
        if not command.strip():
            raise ClientOptionsError("the token command is empty")
        self.command = command
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"CommandToken({self.command!r})"

    async def __call__(self) -> str:
        """Run the command (bounded by `timeout`) and return the line it printed."""
        proc = await asyncio.create_subprocess_shell(
            self.command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await proc.communicate()
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            raise TokenError(f"the token command did not finish within {self.timeout:g} s") \
                from None
        except asyncio.CancelledError:  # the driver stopped: leave nothing running
            _kill_group(proc.pid)
            raise
        if proc.returncode != 0:
            last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise TokenError(f"the token command exited with {proc.returncode}"
                             + (f": {last[0][:200]}" if last[0] else ""))
        return _one_line(out.decode("utf-8", "replace"), "the token command")


def _kill_group(pid: int) -> None:
    """End a token command and whatever it started (it runs in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError, AttributeError):
        os.killpg(pid, signal.SIGKILL)


class UrlToken:
    """GETs a URL for each token: a JSON body's `token` (or `access_token`), else the text."""

    def __init__(self, url: str, timeout: float = PROVIDER_TIMEOUT, verify: bool = True) -> None:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise ClientOptionsError(f"the token URL must be http(s)://, got {url!r}")
        self.url = url
        self.timeout = timeout
        self.verify = verify

    def __repr__(self) -> str:
        return f"UrlToken({self.url!r})"

    async def __call__(self) -> str:
        """Fetch one token; TokenError naming the URL's answer when there is none."""
        import httpx  # here: it costs ~7 MB (and rich, click) that only a token URL needs

        try:
            async with httpx.AsyncClient(timeout=self.timeout, verify=self.verify) as http:
                reply = await http.get(self.url, headers={"Accept": "application/json, text/plain"})
        except httpx.HTTPError as exc:
            raise TokenError(f"the token URL failed: {type(exc).__name__}: {exc}") from None
        if reply.status_code != 200:
            raise TokenError(f"the token URL answered HTTP {reply.status_code}")
        if "json" in reply.headers.get("content-type", ""):
            try:
                body = orjson.loads(reply.content)
            except orjson.JSONDecodeError:
                raise TokenError("the token URL answered JSON that does not parse") from None
            value = next((body[k] for k in ("token", "access_token")
                          if isinstance(body, dict) and isinstance(body.get(k), str)), None)
            if value is None:
                raise TokenError('the token URL answered JSON without a "token" string')
            return _one_line(value, "the token URL")
        return _one_line(reply.text, "the token URL")
