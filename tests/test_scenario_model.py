"""Scenario files: the schema, line-numbered errors, the assertion language, shipped files."""

from __future__ import annotations

import pytest

from wsconsole.scenarios.assertions import AssertionSyntaxError, parse_assertion
from wsconsole.scenarios.model import (
    ScenarioError,
    load_scenario,
    parse_scenario,
    shipped_scenarios,
)

GOOD = """\
name = "demo"

[cluster]
nodes = 2
sticky = "cookie"

[swarm]
clients = 10
rooms = 2
rate = 20
duration = 8

[swarm.backoff]
jitter = 0

[[steps]]
at = 5
action = "net"
kind = "latency"
params = { ms = 100 }

[[steps]]
at = 2
action = "kill"
node = "n1"

[[assertions]]
expect = "lost == 0"

[[assertions]]
name = "fast"
expect = "reconnected_within 800ms"
"""


def _error(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "x.toml")
    return info.value


def test_a_valid_file_is_read_with_defaults_and_sorted_steps() -> None:
    sc = parse_scenario(GOOD, "x.toml")
    assert sc.name == "demo"
    assert sc.cluster is not None and sc.cluster.nodes == 2 and sc.cluster.sticky == "cookie"
    assert sc.cluster.broker is None and sc.cluster.timings == "demo"
    assert not sc.cluster.tls
    assert parse_scenario(GOOD.replace("nodes = 2", "nodes = 2\ntls = true"), "x.toml").cluster.tls
    assert sc.swarm.clients == 10 and sc.swarm.backoff.jitter == 0
    assert sc.swarm.backoff.initial == 0.5
    assert [s.action for s in sc.steps] == ["kill", "net"]
    assert sc.steps[0].line == 22 and sc.steps[0].describe() == "kill n1"
    assert sc.steps[1].params["target"] == "all"
    assert [a.label for a in sc.assertions] == ["lost == 0", "fast"]
    assert sc.assertions[1].value == pytest.approx(0.8)
    assert sc.assertions[0].line == 28


@pytest.mark.parametrize(
    ("old", "new", "line", "words"),
    [
        ('nodes = 2', 'nodes = "two"', 4, "nodes must be an integer"),
        ('nodes = 2', "nodes = 0", 4, "at least 1"),
        ('sticky = "cookie"', 'sticky = "round-robin"', 5, "sticky must be one of"),
        ('sticky = "cookie"', 'sticky = "cookie"\ntls = "yes"', 6, "tls must be"),
        ("rooms = 2", "rooms = 20", 9, "cannot exceed clients"),
        ("duration = 8", "duration = -1", 11, "greater than 0"),
        ("jitter = 0", "jitter = -1", 14, "jitter must be at least 0"),
        ("jitter = 0", "jitter = 0\ninitial = 9", 13, "cap (5.0) is below initial (9)"),
        ('sticky = "cookie"', 'sticky = "cookie"\n[cluster.limits]\nhistory = 0', 7, "history"),
        ('action = "kill"', 'action = "explode"', 24, "action must be one of"),
        ('node = "n1"', 'nodes = "n1"', 25, "unknown key 'nodes'"),
        ("at = 2", "at = 60", 23, "after the swarm ends"),
        ("params = { ms = 100 }", "params = { speed = 100 }", 20, "net latency"),
        ('expect = "lost == 0"', 'expect = "lost = 0"', 28, "cannot read"),
        ('expect = "lost == 0"', 'expect = "lots == 0"', 28, "unknown metric"),
        ("rate = 20", "rate = 20\ncolor = 1", 11, "unknown key 'color'"),
        ('name = "demo"', 'name = "demo"\n[[steps]]\naction = "kill"\nnode = "n1"', 2, "no 'at'"),
    ],
)
def test_mistakes_are_reported_with_their_line(old: str, new: str, line: int, words: str) -> None:
    assert old in GOOD
    error = _error(GOOD.replace(old, new, 1))
    assert error.line == line, str(error)
    assert words in error.reason
    assert str(error).startswith(f"x.toml:{line}: ")


def test_toml_syntax_errors_carry_tomllib_position() -> None:
    error = _error(GOOD.replace("rate = 20", "rate = = 20"))
    assert error.line == 10
    assert "not valid TOML" in error.reason


def test_missing_swarm_and_unknown_fault_case() -> None:
    assert "[swarm]" in _error('name = "x"\n').reason
    text = GOOD.replace('kind = "latency"\nparams = { ms = 100 }', 'case = "no-such-case"')
    text = text.replace('action = "net"', 'action = "inject"')
    error = _error(text)
    assert error.line == 19 and "unknown fault case" in error.reason


def test_server_only_case_needs_the_server_direction() -> None:
    text = GOOD.replace('kind = "latency"\nparams = { ms = 100 }', 'case = "masked-server-frame"')
    text = text.replace('action = "net"', 'action = "inject"')
    assert "does not apply in the client direction" in _error(text).reason
    sc = parse_scenario(text.replace('case = "masked', 'direction = "server"\ncase = "masked'))
    assert sc.steps[1].params["direction"] == "server"


def test_a_broker_restart_may_be_fresh() -> None:
    text = GOOD.replace('action = "kill"\nnode = "n1"', 'action = "broker_restart"\nfresh = true')
    [restart] = [s for s in parse_scenario(text).steps if s.action == "broker_restart"]
    assert restart.params == {"fresh": True}
    with pytest.raises(ScenarioError, match="fresh"):
        parse_scenario(text.replace("fresh = true", 'fresh = "yes"'))


def test_a_url_scenario_only_allows_client_side_steps() -> None:
    text = GOOD.replace("[cluster]\nnodes = 2\nsticky = \"cookie\"\n", 'url = "ws://127.0.0.1:9"\n')
    text = text.replace('name = "demo"\n', "")
    error = _error(text)
    assert "needs a [cluster]" in error.reason


def test_unreadable_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.toml")


def test_every_shipped_scenario_is_valid() -> None:
    shipped = shipped_scenarios()
    wanted = {
        "node-kill",
        "broker-outage",
        "herd-jitter",
        "herd-no-jitter",
        "slow-network",
        "malformed-storm",
        "rolling-restart",
        "heartbeat-loss",
        "dead-clients",
    }
    assert wanted <= set(shipped)
    for path in shipped.values():
        scenario = load_scenario(path)
        assert scenario.assertions and scenario.cluster is not None


SUMMARY = {
    "lost": 0,
    "duplicated": 2,
    "out_of_order": 0,
    "p99_latency_ms": 120.5,
    "reconnects": 3,
    "reconnect_max_ms": 1500.0,
    "disconnected_at_end": 0,
    "never_connected": 0,
    "errors": {"closed": 3},
}


@pytest.mark.parametrize(
    ("text", "passed", "measured"),
    [
        ("lost == 0", True, 0),
        ("duplicated == 0", False, 2),
        ("duplicated <= 2", True, 2),
        ("p99_latency_ms < 100", False, 120.5),
        ("p99_latency_ms < 200", True, 120.5),
        ("errors[closed] <= 3", True, 3),
        ("errors[refused] == 0", True, 0),
        ("order_kept", True, 0),
        ("reconnected_within 2", True, 1.5),
        ("reconnected_within 1s", False, 1.5),
        ("reconnect_spread_ms < 10", False, None),  # no data: fails, never passes by default
    ],
)
def test_assertions_evaluate_against_a_summary(text: str, passed: bool, measured: object) -> None:
    outcome = parse_assertion(text).evaluate(SUMMARY)
    assert outcome.passed is passed
    assert outcome.measured == measured


def test_reconnected_within_fails_while_someone_is_still_down() -> None:
    outcome = parse_assertion("reconnected_within 10").evaluate(
        {**SUMMARY, "disconnected_at_end": 2}
    )
    assert not outcome.passed and "2 still disconnected" in outcome.detail


@pytest.mark.parametrize(
    "text", ["", "lost", "lost == zero", "p99[x] < 3", "reconnected_within -1", "lost === 0"]
)
def test_bad_assertions_are_refused(text: str) -> None:
    with pytest.raises(AssertionSyntaxError):
        parse_assertion(text)


def test_the_heartbeat_lab_in_a_scenario() -> None:
    """[swarm] pongs_share / pongs and a `pongs` step (also against a url), judged by
    dead_dropped_within."""
    text = GOOD.replace("duration = 8", 'duration = 8\npongs_share = 0.25\npongs = "delay:1500"')
    text += '\n[[steps]]\nat = 6\naction = "pongs"\nshare = 0.5\n'
    sc = parse_scenario(text)
    assert sc.swarm is not None and sc.swarm.pongs_share == 0.25
    assert sc.swarm.pongs.text() == "delay:1500"
    step = sc.steps[-1]
    assert step.params["policy"].text() == "off" and step.describe() == "pongs off 0.5"
    assert "must be at most 1" in _error(text.replace("share = 0.5", "share = 2")).reason
    assert "needs share" in _error(text.replace("share = 0.5\n", "")).reason
    error = _error(text.replace('pongs = "delay:1500"', 'pongs = "sometimes"'))
    assert error.line == 13 and "pongs must be one of" in error.reason
    url = text.replace("[cluster]\nnodes = 2\nsticky = \"cookie\"\n", 'url = "ws://127.0.0.1:9"\n')
    url = url.replace('[[steps]]\nat = 5\naction = "net"\nkind = "latency"\n'
                      'params = { ms = 100 }\n\n[[steps]]\nat = 2\naction = "kill"\nnode = "n1"\n',
                      "")
    assert [s.action for s in parse_scenario(url).steps] == ["pongs"]
    # pings in bursts and unsolicited pongs: checked where they are written
    probes = text + ('\n[[steps]]\nat = 7\naction = "ping"\ncount = 5\npayload = "p"\n'
                     '\n[[steps]]\nat = 7\naction = "pong"\nshare = 0.5\n')
    ping, pong = parse_scenario(probes).steps[-2:]
    assert ping.params == {"share": 1.0, "count": 5, "payload": "p"}
    assert ping.describe() == "ping 1.0 x5" and pong.describe() == "pong 0.5"
    assert "at most 1000" in _error(probes.replace("count = 5", "count = 5000")).reason
    too_long = _error(probes.replace('payload = "p"', f'payload = "{"x" * 126}"'))
    assert "at most 125 bytes" in too_long.reason and too_long.line == 45


@pytest.mark.parametrize(
    ("summary", "passed", "words"),
    [({"dead_drops": 4, "dead_kept_max_ms": 2900.0}, True, "4 drop(s)"),
     ({"dead_drops": 4, "dead_kept_max_ms": 3100.0}, False, "3.100 s"),
     ({"dead_drops": 0, "dead_kept_max_ms": 9000.0}, False, "0 drop(s)"),
     ({"dead_drops": 0, "dead_kept_max_ms": None}, False, "no client stopped answering")],
)
def test_dead_dropped_within(summary: dict[str, object], passed: bool, words: str) -> None:
    outcome = parse_assertion("dead_dropped_within 3s").evaluate(summary)
    assert outcome.passed is passed and words in outcome.detail
    assert parse_assertion("dead_dropped_within 800ms").value == pytest.approx(0.8)
    assert parse_assertion("dead_kept_max_ms < 5000").evaluate(summary).passed is (
        summary["dead_kept_max_ms"] is not None and summary["dead_kept_max_ms"] < 5000)
