"""Stack files (harness/stackfile.py), templates (core/templates.py) and `wsconsole stack check`:
every mistake refused with its file, line and reason; the shipped examples valid."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from wsconsole.core.templates import MISSING, Template, TemplateError
from wsconsole.core.templates import Path as MessagePath
from wsconsole.harness.stackfile import StackError, load_stack, node_cmd_stack, parse_stack

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*/stack*.toml"))

MINIMAL = """\
name = "app"
[node]
command = ["python", "server.py", "--port", "{port}"]
"""


def test_templates_render_typed_values_text_and_shell_quoting() -> None:
    allowed = frozenset({"id", "ts", "room", "port"})
    template = Template.parse({"id": "{id}", "ts": "{ts}", "text": "to {room}!",
                               "list": ["{ts}", 1]}, allowed)
    values = {"id": "c1-7", "ts": 1712.5, "room": "lobby"}
    assert template.render(values) == {"id": "c1-7", "ts": 1712.5, "text": "to lobby!",
                                       "list": [1712.5, 1]}
    assert template.text(values) == '{"id":"c1-7","ts":1712.5,"text":"to lobby!","list":[1712.5,1]}'
    assert template.names == {"id", "ts", "room"}
    raw = Template.parse('{"a": 1, "id": "{id}"}', allowed)  # JSON braces are left alone
    assert raw.text(values) == '{"a": 1, "id": "c1-7"}'
    shell = Template.parse("serve --room {room}", allowed)
    assert shell.shell({"room": "a b; rm -rf /"}) == "serve --room 'a b; rm -rf /'"
    with pytest.raises(TemplateError, match=r"unknown placeholder \{prot\}.*\{port\}"):
        Template.parse("--port {prot}", allowed)


def test_paths_read_nested_values_and_say_missing() -> None:
    message = {"data": {"items": [{"id": "x"}]}, "ts": 5}
    assert MessagePath.parse("data.items.0.id").get(message) == "x"
    assert MessagePath.parse("ts").get(message) == 5
    assert MessagePath.parse("data.items.3.id").get(message) is MISSING
    assert MessagePath.parse("nope.id").get(message) is MISSING
    with pytest.raises(TemplateError, match="empty part"):
        MessagePath.parse("data..id")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_example_is_valid(path: Path) -> None:
    stack = load_stack(path)
    assert stack.client is not None, "every example drives a swarm"
    assert stack.node.cwd == path.parent


def test_a_minimal_file_gets_the_defaults() -> None:
    stack = parse_stack(MINIMAL, None)
    assert stack.node.count == 2 and stack.node.stop_signal is signal.SIGTERM
    assert stack.node.ready.kind == "port" and stack.broker.kind == "harness"
    assert stack.protocol.kind == "websocket" and stack.protocol.path == "/"
    values = {"port": 4001, "id": "n1", "index": 1, "host": "127.0.0.1", "redis_url": "r://"}
    assert stack.node.argv(values) == ["python", "server.py", "--port", "4001"]
    assert stack.node.environment(values) == {"PORT": "4001", "NODE_ID": "n1",
                                              "REDIS_URL": "r://"}
    shell = node_cmd_stack("npm start -- --port {port}", count=3)
    assert shell.node.argv(values) == ["/bin/sh", "-c", "npm start -- --port 4001"]


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (MINIMAL + "colour = 1\n", 4, "unknown key 'colour'"),
        ("[node]\ncommand = 'x {prot}'\n", 2, r"unknown placeholder \{prot\}"),
        ("[node]\ncommand = []\n", 2, "non-empty array"),
        ("[node]\ncwd = '.'\n", 1, "needs a command"),
        (MINIMAL + "count = 0\n", 4, "count must be at least 1"),
        (MINIMAL + "stop_signal = 'SIGKILL'\n", 4, "stop_signal must be one of"),
        (MINIMAL + "[node.ready]\nhttp = '/h'\nlog = 'x'\n", 6, "one of port, http, log"),
        (MINIMAL + "[node.ready]\nhttp = 'healthz'\n", 5, "starting with /"),
        (MINIMAL + "[node.ready]\nlog = '(['\n", 5, "not a valid regular expression"),
        (MINIMAL + "[broker]\nkind = 'external'\n", 4, "needs url"),
        (MINIMAL + "[broker]\nkind = 'cloud'\n", 5, "kind must be one of"),
        ("[node]\ncommand = 'x --redis {redis_url}'\n[broker]\nkind = 'none'\n", 2,
         "needs a broker"),
        (MINIMAL + "[protocol]\nkind = 'mqtt'\n", 5, "kind must be one of"),
        (MINIMAL + "[metrics]\npath = '/metrics'\n", 4, "series must list"),
        (MINIMAL + "[client.publish]\nmessage = { text = 'hi' }\n[client.receive]\nid = 'id'\n",
         5, r"must carry \{id\}"),
        (MINIMAL + "[client.publish]\nmessage = { id = '{id}', at = '{tss}' }\n"
                   "[client.receive]\nid = 'id'\n", 5, r"unknown placeholder \{tss\}"),
        (MINIMAL + "[protocol]\nkind = 'socketio'\n[client.publish]\nevent = 'chat'\n"
                   "[client.receive]\nid = 'id'\n", 6, "needs args"),
        (MINIMAL + "[protocol]\nkind = 'socketio'\n[client.publish]\nevent = 'chat'\n"
                   "args = [{ id = '{id}' }]\n[client.receive]\nid = 'id'\n", 9, "needs event"),
        (MINIMAL + "[client.auth]\ntoken = 'abc'\n[client.publish]\n"
                   "message = { id = '{id}' }\n[client.receive]\nid = 'id'\n", 4,
         "where the token goes"),
        (MINIMAL + "[client.auth]\nheader = 'Authorization: Bearer {token}'\n[client.publish]\n"
                   "message = { id = '{id}' }\n[client.receive]\nid = 'id'\n", 5,
         r"unknown placeholder \{token\}"),
        (MINIMAL + "[client.receive]\nid = 'a..b'\n[client.publish]\n"
                   "message = { id = '{id}' }\n", 5, "empty part"),
        ("[node\ncommand = 'x'\n", 1, "not valid TOML"),
    ],
)
def test_mistakes_are_refused_with_their_line(text: str, line: int, reason: str) -> None:
    with pytest.raises(StackError, match=reason) as caught:
        parse_stack(text, "my.toml")
    assert caught.value.line == line, str(caught.value)
    assert str(caught.value).startswith(f"my.toml:{line}: ")


def test_stack_check_exit_codes(tmp_path: Path) -> None:
    good = subprocess.run([sys.executable, "-m", "wsconsole", "stack", "check",
                           str(EXAMPLES[0])], capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr
    assert "valid" in good.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL + "[node.ready]\nport = false\n")
    refused = subprocess.run([sys.executable, "-m", "wsconsole", "stack", "check", str(bad)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert f"{bad}:5: port = true is the only value" in refused.stderr
    assert "Traceback" not in refused.stderr
