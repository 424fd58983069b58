"""`wsconsole harness`: stdin command parsing, usage errors, and the real thing as a subprocess."""

from __future__ import annotations

import subprocess
import sys

import pytest

from wsconsole.harness.shell import Command, CommandError, help_event, parse


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("kill n2", Command("kill", ("n2",))),
        ("  PAUSE n1  ", Command("pause", ("n1",))),
        ("resume n1 # after the pause", Command("resume", ("n1",))),
        ("drain n3", Command("drain", ("n3",))),
        ("restart n1", Command("restart", ("n1",))),
        ("add", Command("add")),
        ("broker kill", Command("broker", ("kill",))),
        ("broker restart", Command("broker", ("restart",))),
        ("status", Command("status")),
        ("token alice", Command("token", ("alice",))),
        ("token bob lobby ops-*", Command("token", ("bob", "lobby", "ops-*"))),
        ("sticky cookie", Command("sticky", ("cookie",))),
        ("exit", Command("quit")),
        ("quit", Command("quit")),
        (
            "net n1 latency ms=200 jitter_ms=20.5",
            Command("net", ("n1", "latency"), (("ms", 200), ("jitter_ms", 20.5))),
        ),
        ("net all clear", Command("net", ("all", "clear"))),
        ("net n2 clear latency", Command("net", ("n2", "clear", "latency"))),
        (
            "inject n1 bad-utf8 repeat=2",
            Command("inject", ("n1", "bad-utf8"), (("repeat", 2),)),
        ),
    ],
)
def test_parse_accepts_every_documented_command(line: str, expected: Command) -> None:
    assert parse(line) == expected


@pytest.mark.parametrize("line", ["", "   ", "# just a comment"])
def test_blank_lines_and_comments_are_skipped(line: str) -> None:
    assert parse(line) is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("explode n1", "unknown command 'explode'"),
        ("kill", "usage: kill ID"),
        ("kill n1 n2", "usage: kill ID"),
        ("add n4", "usage: add"),
        ("broker pause", "usage: broker kill|restart"),
        ("broker", "usage: broker"),
        ("token", "usage: token USER"),
        ("sticky round-robin", "usage: sticky"),
        ("net n1", "usage: net"),
        ("net n1 latency 200", "expected key=value"),
        ("net n1 clear latency extra", "usage: net"),
        ("inject n1", "usage: inject"),
        ("status now", "usage: status"),
    ],
)
def test_bad_lines_get_a_plain_message(line: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse(line)


def test_help_lists_every_command() -> None:
    listed = " ".join(help_event()["commands"])
    for word in ("kill", "pause", "resume", "drain", "restart", "add", "broker", "token", "quit"):
        assert word in listed


@pytest.mark.parametrize(
    "args",
    [
        ["--nodes", "0"],
        ["--nodes", "three"],
        ["--port", "99999"],
        ["--sticky", "random"],
        ["--redis", "http://localhost:6379"],
        ["--rate", "-1"],
        ["--ping-interval", "-1"],
        ["--stats-interval", "-2"],
    ],
)
def test_bad_flags_exit_2_with_one_line_and_no_traceback(args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wsconsole", "harness", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "error" in proc.stderr
    assert proc.stdout == ""
