"""The one declaration of connection options (wsconsole/app/options.py): defaults, checks,
the command line and saved profiles all read it, and the core objects built from it."""

from __future__ import annotations

import argparse
import dataclasses

import orjson
import pytest

from wsconsole.app import options
from wsconsole.app.options import OPTIONS, ConnectionOptions, OptionsError
from wsconsole.app.profiles import Profile
from wsconsole.app.targets import core_options, make_client, probe_target, websocket_options
from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.client import ClientOptions, ReconnectingClient
from wsconsole.core.heartbeat import PongPolicy
from wsconsole.core.targets.socketio import SocketIOClient
from wsconsole.core.targets.sse import SSEClient


def refused(**values: object) -> dict[str, str]:
    """The problems (by option, worded for the window) of options built from `values`."""
    with pytest.raises(OptionsError) as caught:
        ConnectionOptions(**values)
    return caught.value.messages(cli=False)


def test_defaults_are_the_designs_and_the_cores() -> None:
    conn = ConnectionOptions()
    # DESIGN.md: ping every 25 s, 10 s to answer; 1 s doubling to 30 s, 0-1 s jitter, no limit
    assert (conn.ping_interval, conn.ping_timeout) == (25.0, 10.0)
    assert (conn.backoff_initial, conn.backoff_factor, conn.backoff_cap, conn.backoff_jitter,
            conn.max_attempts) == (1.0, 2.0, 30.0, 1.0, None)
    core = {f.name: f.default for f in dataclasses.fields(ClientOptions)}
    shared = [name for name in OPTIONS if name in core and core[name] is not dataclasses.MISSING]
    assert len(shared) >= 12
    for name in shared:
        assert getattr(conn, name) == core[name], name
    policy = BackoffPolicy()
    assert websocket_options(conn).backoff.__dict__ | {"rand": None} == \
        policy.__dict__ | {"rand": None}


def test_every_option_is_declared_with_words_and_a_way_in() -> None:
    flags = [o.flag for o in OPTIONS.values() if o.flag]
    assert len(flags) == len(set(flags))
    for option in OPTIONS.values():
        assert option.label and option.help, option.name
        assert option.flag or option.switches or option.name == "url", option.name


@pytest.mark.parametrize(("values", "field", "words"), [
    ({"url": "http://x/"}, "url", "not a ws:// or wss:// URL"),
    ({"url": "ws://h/", "kind": "sse"}, "url", "http(s)://"),
    ({"url": "ftp://h/", "kind": "socketio"}, "url", "http(s)://"),
    ({"kind": "mqtt"}, "kind", "kind must be one of ws, socketio, sse"),
    ({"ping_timeout": 0}, "ping_timeout", "ping timeout must be > 0, got 0"),
    ({"ping_interval": "soon"}, "ping_interval", "ping interval must be a number"),
    ({"backoff_factor": 0.5}, "backoff_factor", "backoff factor must be >= 1"),
    ({"backoff_initial": 40}, "backoff_cap", "must not be below the initial delay (40 s)"),
    ({"max_attempts": 1.5}, "max_attempts", "max attempts must be an integer"),
    ({"max_attempts": -1}, "max_attempts", ">= 0"),
    ({"token_mode": "cookie"}, "token_mode", "token mode must be one of query, header"),
    ({"headers": "no colon here"}, "headers", "Name: value"),
    ({"headers": "Bad Name: x"}, "headers", "invalid header name"),
    ({"subprotocols": "chat v1/x"}, "subprotocols", "invalid subprotocol 'v1/x'"),
    ({"origin": "example.com"}, "origin", "http(s)://host"),
    ({"ca_file": "/nonexistent/ca.pem"}, "ca_file", "does not exist"),
    ({"rooms": ["x" * 200]}, "rooms", "invalid room name"),
    ({"sio_auth": "{nope"}, "sio_auth", "auth payload is not JSON"),
    ({"sio_auth": "[1]"}, "sio_auth", "must be a JSON object"),
    ({"sio_transport": "carrier pigeon"}, "sio_transport", "transport must be one of"),
    ({"insecure": "yes"}, "insecure", "must be true or false"),
    ({"token": "a\nb"}, "token", "one line"),
    ({"pongs": "sometimes"}, "pongs", "pongs must be one of auto, off, delay, wrong"),
    ({"pongs": "delay:x"}, "pongs", "milliseconds"),
])
def test_a_value_that_cannot_work_is_named(values: dict[str, object], field: str,
                                           words: str) -> None:
    problems = refused(**values)
    assert list(problems) == [field] and words in problems[field], problems


def test_every_problem_is_reported_at_once_by_flag_or_label() -> None:
    with pytest.raises(OptionsError) as caught:
        ConnectionOptions(ping_timeout=-1, sio_ack_timeout="x", url="")
    assert set(caught.value.problems) == {"ping_timeout", "sio_ack_timeout", "url"}
    line = caught.value.cli_line()
    assert "--ping-timeout must be > 0" in line and "--ack-timeout must be a number" in line
    assert "\n" not in line
    assert "ping timeout must be > 0" in str(caught.value)


def test_text_forms_parse_and_print_back() -> None:
    conn = ConnectionOptions(headers="A: 1\n\n B-c : two words ", rooms="lobby, news  x",
                             ping_interval="0", max_size=0, max_attempts="3",
                             sio_auth='{"user": "me"}', token="  spaced  ")
    assert conn.headers == [("A", "1"), ("B-c", "two words")]
    assert conn.rooms == ["lobby", "news", "x"]
    assert conn.ping_interval is None and conn.max_size is None  # 0: off / no limit
    assert conn.max_attempts == 3 and conn.sio_auth == {"user": "me"}
    assert conn.token == "  spaced  "  # secrets are kept as given
    again = ConnectionOptions(**{name: conn.text(name) for name in OPTIONS
                                 if name not in ("insecure", "harness", "compression")})
    assert again == conn


def test_header_values_follow_the_strict_rule() -> None:
    """RFC 9110 field values: visible characters, spaces and tabs; any other control
    character is refused (a server or h11 would refuse it later, with a worse message)."""
    assert ConnectionOptions(headers=[("X-Tab", "a\tb")]).headers == [("X-Tab", "a\tb")]
    for bad in ("a\x01b", "a\x7fb", "a\rb", "a\x00b"):
        assert "headers" in refused(headers=[("X-Bad", bad)])


def _parser(names: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    options.add_arguments(parser, names)
    return parser


def test_the_command_line_round_trip() -> None:
    parser = _parser(options.CONNECT)
    args = parser.parse_args(["http://h:1/socket.io/", "--socketio", "-H", "A: 1", "-H", "B: 2",
                              "--room", "r1", "--room", "r2", "--ping-interval", "0",
                              "--no-compression", "--insecure", "--auth", '{"k": 1}'])
    conn = options.from_args(args, options.CONNECT, url=args.url)
    assert conn.kind == "socketio" and conn.headers == [("A", "1"), ("B", "2")]
    assert conn.rooms == ["r1", "r2"] and conn.ping_interval is None
    assert conn.compression is False and conn.insecure is True and conn.sio_auth == {"k": 1}
    untouched = options.from_args(parser.parse_args(["ws://h/"]), options.CONNECT, url="ws://h/")
    assert untouched == ConnectionOptions(url="ws://h/")  # a flag not given: the default
    with pytest.raises(SystemExit):
        parser.parse_args(["ws://h/", "--socketio", "--sse"])  # one kind at a time
    bad = parser.parse_args(["ws://h/", "--backoff-cap", "x"])
    with pytest.raises(OptionsError) as caught:
        options.from_args(bad, options.CONNECT, url="ws://h/")
    assert caught.value.cli_line() == "--backoff-cap must be a number, got 'x'"


def test_a_command_declares_only_its_own_options() -> None:
    parser = _parser(options.CREDENTIALS)
    flags = {a for action in parser._actions for a in action.option_strings}
    assert {"--header", "-H", "--token", "--token-mode", "--ca-file", "--insecure"} <= flags
    assert "--ping-interval" not in flags and "--socketio" not in flags


def test_a_command_preset_is_a_default_shown_and_checked_like_a_given_value() -> None:
    parser = argparse.ArgumentParser()
    names = ("backoff_initial", "backoff_cap", "ping_interval")
    options.add_arguments(parser, names, defaults={"backoff_cap": 5.0, "ping_interval": 0})
    assert "(default 5)" in parser.format_help() and "(default 0)" in parser.format_help()
    conn = options.from_args(parser.parse_args([]), names)
    assert (conn.backoff_initial, conn.backoff_cap, conn.ping_interval) == (1.0, 5.0, None)
    with pytest.raises(OptionsError, match="must not be below"):
        options.from_args(parser.parse_args(["--backoff-initial", "9"]), names)
    with pytest.raises(ValueError, match="no command default: insecure"):
        options.add_arguments(argparse.ArgumentParser(), ("insecure",),
                              defaults={"insecure": True})


def test_infer_kind_from_the_url() -> None:
    assert options.infer_kind("wss://h/x") == "ws"
    assert options.infer_kind("https://h/socket.io/?EIO=4") == "socketio"
    with pytest.raises(ValueError, match="--socketio or --sse"):
        options.infer_kind("https://h/events")


def test_profile_round_trip_through_saved_json() -> None:
    profile = Profile(name="mine", url="wss://h:8443/x", headers="A: 1", rooms=["a", "b"],
                      sio_auth={"t": 1}, max_attempts=4, ping_interval=0)
    saved = orjson.loads(orjson.dumps(profile.as_dict()))
    assert saved["headers"] == "A: 1" and saved["rooms"] == "a b"  # as typed in the form
    assert Profile.from_dict(saved) == profile


def test_old_and_broken_saved_profiles_still_load() -> None:
    old = Profile.from_dict({"name": "legacy", "url": "ws://h/", "max_attempts": 0,
                             "ping_interval": 20.0, "ping_timeout": 20.0, "extra": {}})
    assert old.max_attempts is None  # the window saved "unlimited" as 0
    assert (old.ping_interval, old.ping_timeout) == (20.0, 20.0)  # a saved choice stays
    gone = Profile.from_dict({"name": "ca", "url": "wss://h/", "ca_file": "/gone/ca.pem",
                              "backoff_initial": 50.0})
    assert gone.ca_file is None and gone.url == "wss://h/" and gone.name == "ca"
    assert (gone.backoff_initial, gone.backoff_cap) == (1.0, 30.0)
    with pytest.raises(OptionsError, match="needs a name"):
        Profile(name=" ")


def test_one_make_client_for_every_kind() -> None:
    ws = make_client(ConnectionOptions(url="ws://h:1/", rooms="lobby"), "a")
    assert isinstance(ws, ReconnectingClient) and ws.options.harness  # rooms imply harness
    sio = make_client(ConnectionOptions(url="http://h:1/chat", kind="socketio", token="t"), "b")
    assert isinstance(sio, SocketIOClient)
    assert sio.options.namespaces == ["/chat"] and sio.options.token == "t"  # in the auth
    sse = make_client(ConnectionOptions(url="http://h:1/events", kind="sse",
                                        sse_read_timeout=5), "c")
    assert isinstance(sse, SSEClient) and sse.options.read_timeout == 5
    target = probe_target(ConnectionOptions(url="ws://h:1/", token_mode="header",
                                            subprotocols="chat"), "t")
    assert target.token == "t" and target.token_via == "header"
    assert target.subprotocols == ("chat",)
    assert isinstance(core_options(ConnectionOptions(url="ws://h:1/")), ClientOptions)


def test_the_token_comes_from_one_source() -> None:
    from wsconsole.app.targets import token_provider
    from wsconsole.core.tokens import CommandToken, UrlToken

    assert isinstance(token_provider(ConnectionOptions(token_command="vault read x")),
                      CommandToken)
    fetched = token_provider(ConnectionOptions(token_url="https://auth/t", insecure=True))
    assert isinstance(fetched, UrlToken) and fetched.verify is False
    assert token_provider(ConnectionOptions(token="fixed")) == "fixed"
    # the application's provider (the demo cluster's) only where the user named none
    def minted() -> str:
        return "fresh"

    assert token_provider(ConnectionOptions(), minted) is minted
    assert token_provider(ConnectionOptions(token="fixed"), minted) == "fixed"
    client = make_client(ConnectionOptions(), "d", token=minted)
    assert isinstance(client, ReconnectingClient) and client.options.token is minted
    assert "cannot be combined" in refused(token="a", token_url="http://auth/t")["token_url"]
    sse = ConnectionOptions(url="http://h/e", kind="sse", token_command="x")
    assert isinstance(token_provider(sse), CommandToken)  # every kind takes a provider
    assert "cannot send one" in refused(url="http://h/e", kind="sse",
                                        token_mode="message")["token_mode"]
    assert "http(s)://" in refused(token_url="file:///t")["token_url"]
    args = _parser(options.CONNECT).parse_args(["ws://h/", "--token-command", "pass show ws"])
    assert options.from_args(args, options.CONNECT, url="ws://h/").token_command == \
        "pass show ws"


def test_pongs_are_one_option_for_the_cli_the_form_and_the_client() -> None:
    """The heartbeat lab's pong policy: --pongs, a profile's saved text, the core's option."""
    args = _parser(options.CONNECT).parse_args(["ws://h/", "--pongs", "delay:1500"])
    conn = options.from_args(args, options.CONNECT, url="ws://h/")
    assert conn.pongs == PongPolicy("delay", delay=1.5)
    assert websocket_options(conn).pongs == PongPolicy("delay", delay=1.5)
    assert ConnectionOptions().pongs == PongPolicy() and ConnectionOptions(pongs="").pongs.answers
    saved = orjson.loads(orjson.dumps(Profile(name="lab", pongs="wrong:xyz").as_dict()))
    assert saved["pongs"] == "wrong:xyz"
    assert Profile.from_dict(saved).pongs == PongPolicy("wrong", payload=b"xyz")
    problems = refused(url="http://h/events", kind="sse", pongs="off")
    assert "only a WebSocket target answers pings" in problems["pongs"]
