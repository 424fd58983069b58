"""core.tokens: where a token comes from (a real shell command, a real HTTP endpoint on
127.0.0.1, a callback) and where it goes (query or header)."""

from __future__ import annotations

import shlex
import sys
import time

import pytest
from aiohttp import web

from tests.servers import aiohttp_site
from wsconsole.core.errors import ClientOptionsError, TokenError
from wsconsole.core.tokens import (
    CommandToken,
    UrlToken,
    can_refresh,
    fetch_token,
    place_token,
)


def python(code: str) -> str:
    """A shell command running `code` with this interpreter."""
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


async def test_command_token_output_errors_and_timeout() -> None:
    """The printed line is the token; a failing, silent, chatty or slow command is a
    TokenError saying which (the slow one is killed at the timeout)."""
    assert await CommandToken(python("print('  abc.def  ')"))() == "abc.def"
    with pytest.raises(TokenError, match="exited with 3: no vault"):
        await CommandToken(python("import sys; print('no vault', file=sys.stderr); "
                                  "sys.exit(3)"))()
    with pytest.raises(TokenError, match="empty token"):
        await CommandToken(python("pass"))()
    with pytest.raises(TokenError, match="more than one line"):
        await CommandToken(python("print('a'); print('b')"))()
    started = time.monotonic()
    with pytest.raises(TokenError, match=r"did not finish within 0\.5 s"):
        await CommandToken(python("import time; time.sleep(30)"), timeout=0.5)()
    assert time.monotonic() - started < 5
    with pytest.raises(ClientOptionsError):
        CommandToken("  ")


async def test_url_token_text_json_and_refusals() -> None:
    """A text body or JSON `token` / `access_token` is the token; a non-200 answer or JSON
    without one is a TokenError; only http(s) URLs are accepted."""
    async def text(request: web.Request) -> web.Response:
        return web.Response(text="tok-text\n")

    async def json_token(request: web.Request) -> web.Response:
        return web.json_response({"access_token": "tok-json", "expires_in": 60})

    async def no_token(request: web.Request) -> web.Response:
        return web.json_response({"error": "nope"})

    async def denied(request: web.Request) -> web.Response:
        return web.Response(status=403)

    app = web.Application()
    for path, handler in (("/text", text), ("/json", json_token), ("/none", no_token),
                          ("/denied", denied)):
        app.router.add_get(path, handler)
    async with aiohttp_site(app) as base:
        assert await UrlToken(base + "/text")() == "tok-text"
        assert await UrlToken(base + "/json")() == "tok-json"
        with pytest.raises(TokenError, match='without a "token"'):
            await UrlToken(base + "/none")()
        with pytest.raises(TokenError, match="HTTP 403"):
            await UrlToken(base + "/denied")()
    with pytest.raises(ClientOptionsError, match="http"):
        UrlToken("ftp://tokens/")


async def test_fetch_place_and_refresh() -> None:
    """Callbacks may be async; a failing one is a TokenError; fixed strings cannot refresh;
    the query parameter replaces one already in the URL."""
    async def provider() -> str:
        return "async-tok"

    def broken() -> str:
        raise RuntimeError("vault sealed")

    assert await fetch_token(provider) == "async-tok"
    assert await fetch_token(None) is None
    with pytest.raises(TokenError, match="vault sealed"):
        await fetch_token(broken)
    assert can_refresh(provider) and can_refresh(CommandToken("true"))
    assert not can_refresh("fixed") and not can_refresh(None)
    url, headers = place_token("ws://h/p?token=old&x=1", [("A", "b")], "new", "query")
    assert url == "ws://h/p?x=1&token=new" and headers == [("A", "b")]
    assert place_token("ws://h/", [], "t", "header") == (
        "ws://h/", [("Authorization", "Bearer t")])
    assert place_token("ws://h/", [], "t", "message") == ("ws://h/", [])
